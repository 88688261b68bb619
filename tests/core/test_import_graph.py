"""The packages of ``cernvm_build`` import each other without a cycle.

Every import counts, also one written inside a function and ``importlib.import_module("…")`` with a
literal name: a lazy import does not make a cycle between two areas go away, it only hides it. A
top-level module (``fsutil``, ``proc``, ``releaseindex`` …) is a node of its own.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

import cernvm_build

ROOT = Path(cernvm_build.__file__).parent

Edges = dict[str, dict[str, str]]  # area -> imported area -> first place (file:line)


def _module_name(path: Path, root: Path) -> tuple[str, str]:
    """(module, package it resolves relative imports against)."""
    parts = ("cernvm_build", *path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        name = ".".join(parts[:-1])
        return name, name
    return ".".join(parts), ".".join(parts[:-1])


def _imported(node: ast.AST, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        if node.module:
            return [module]
        return [f"{module}.{a.name}" for a in node.names]  # "from .. import proc" names a module
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def _area(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "cernvm_build" or len(parts) < 2:
        return None
    return parts[1]


def package_graph(root: Path = ROOT) -> Edges:
    edges: Edges = defaultdict(dict)
    for path in sorted(root.rglob("*.py")):
        module, package = _module_name(path, root)
        src = _area(module)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _imported(node, package):
                dst = _area(target)
                if src and dst and dst != src:
                    where = f"{path.relative_to(root.parent)}:{getattr(node, 'lineno', 0)}"
                    edges[src].setdefault(dst, where)
    return edges


def find_cycle(edges: Edges) -> list[str] | None:
    """One cycle as a list of areas (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(edges.get(v, {})):
            if state.get(w) == 1:
                return [*path[path.index(w) :], w]
            if w not in state and (found := visit(w)):
                return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(edges):
        if v not in state and (found := visit(v)):
            return found
    return None


def describe(cycle: list[str], edges: Edges) -> str:
    return "; ".join(f"{a} → {b} ({edges[a][b]})" for a, b in itertools.pairwise(cycle))


def test_no_cycle_between_packages() -> None:
    edges = package_graph()
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle between packages: " + describe(cycle, edges)


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    """A cycle closed only by an import inside a function, or by importlib, is still found."""
    pkg = tmp_path / "cernvm_build"
    for area in ("a", "b", "c"):
        (pkg / area).mkdir(parents=True)
        (pkg / area / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from ..b import y\n")
    (pkg / "b" / "y.py").write_text("def f():\n    from cernvm_build.c import z\n")
    (pkg / "c" / "z.py").write_text("import importlib\nimportlib.import_module('cernvm_build.a.x')\n")
    edges = package_graph(pkg)
    cycle = find_cycle(edges)
    assert cycle == ["a", "b", "c", "a"]
    assert describe(cycle, edges) == (
        "a → b (cernvm_build/a/x.py:1); b → c (cernvm_build/b/y.py:2); c → a (cernvm_build/c/z.py:2)"
    )
    (pkg / "c" / "z.py").write_text("")
    assert find_cycle(package_graph(pkg)) is None


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements run when the module is imported: not function bodies, not ``if TYPE_CHECKING``."""
    out: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out += _top_level(node.orelse)
        elif isinstance(node, ast.If | ast.Try):
            out += _top_level(node.body) + _top_level(getattr(node, "orelse", []))
            for handler in getattr(node, "handlers", []):
                out += _top_level(handler.body)
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.append(node)
    return out


def module_graph(root: Path = ROOT) -> Edges:
    """Module -> module imported while it is being imported (both inside ``cernvm_build``)."""
    names = {_module_name(p, root)[0] for p in root.rglob("*.py")}
    edges: Edges = defaultdict(dict)
    for path in sorted(root.rglob("*.py")):
        module, package = _module_name(path, root)
        for node in _top_level(ast.parse(path.read_text(), str(path)).body):
            targets = _imported(node, package)
            if isinstance(node, ast.ImportFrom) and node.module:  # "from .m import sub" names a module
                targets += [f"{targets[0]}.{a.name}" for a in node.names]
            for target in targets:
                if target in names and target != module and not module.startswith(target + "."):
                    edges[module].setdefault(target, f"{path.relative_to(root.parent)}:{node.lineno}")
    return edges


def test_no_module_imports_itself_through_others() -> None:
    """A cycle of module-level imports works or breaks by which module a process imports first:
    ``site.model`` <-> ``site.markdown`` broke ``import cernvm_build.site.search`` in a fresh process."""
    edges = module_graph()
    cycle = find_cycle(edges)
    assert cycle is None, "module-level import cycle: " + describe(cycle, edges)
