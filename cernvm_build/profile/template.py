"""jinja2 templates in string values, over the profile itself: ``path: /cvm{{ os.release }}``.

Rendering runs on the merged tree, so a child's value is visible to a template written in a parent.
Templates may refer to values that are templates themselves: rendering repeats until nothing changes.
Undefined names are errors (StrictUndefined) that point at the value's file:line:column. The sandbox
keeps templates to expressions over data.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2

from ..errors import ProfileError
from .sandbox import MAX_SIZE, MAX_STEPS, LimitedSandbox, TemplateLimitError, budget
from .settings import BY_KEY, REQUIRED, SETTINGS, default_of
from .yamlnodes import Node, location

_ENV = LimitedSandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
MAX_PASSES = 8


@functools.lru_cache(maxsize=512)
def _compile(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _loose(node: Node, key: str) -> Any:
    """A node as templates see it: text for string settings, YAML values otherwise; no checks."""
    if node.kind == "map":
        return {k: _loose(v, f"{key}.{k}" if key else k) for k, v in node.value.items()}
    if node.kind == "seq":
        return [_loose(v, key) for v in node.value]
    setting = BY_KEY.get(key)
    if setting is not None and setting.kind.is_text and node.value is not None and node.text is not None:
        return node.value if isinstance(node.value, str) else node.text
    return node.value


def context(tree: Node, name: str) -> dict[str, Any]:
    """Defaults from the table, overlaid with the tree's values; ``name`` defaults to the file's stem."""
    ctx: dict[str, Any] = {}
    for s in SETTINGS:
        if s.default is REQUIRED:
            continue
        *parents, last = s.key.split(".")
        d = ctx
        for p in parents:
            d = d.setdefault(p, {})
        d[last] = default_of(s)
    ctx["name"] = name

    def overlay(d: dict[str, Any], values: dict[str, Any]) -> None:
        for k, v in values.items():
            if isinstance(v, dict) and isinstance(d.get(k), dict):
                overlay(d[k], v)
            elif v is not None or k not in d:
                d[k] = v

    overlay(ctx, _loose(tree, ""))
    return ctx


def _scalars(node: Node, key: str) -> list[tuple[Node, str]]:
    if node.kind == "map":
        return [x for k, v in node.value.items() for x in _scalars(v, f"{key}.{k}" if key else k)]
    if node.kind == "seq":
        return [x for v in node.value for x in _scalars(v, key)]
    return [(node, key)]


def has_template(node: Node) -> bool:
    """Whether a value (or any item of it) is a template: its text is not the setting's value yet."""
    return any(_is_template(n.value) for n, _ in _scalars(node, ""))


def syntax_errors(tree: Node) -> list[ProfileError]:
    """Templates that do not parse (for abstract profiles, which are never rendered on their own)."""
    errors: list[ProfileError] = []
    for node, key in _scalars(tree, ""):
        if _is_template(node.value):
            try:
                _compile(node.value)
            except jinja2.TemplateSyntaxError as e:
                errors.append(
                    ProfileError(
                        f"template syntax error: {e.message}",
                        where=location(node.pos, key),
                        hint="templates are jinja2 expressions like '{{ os.release }}'",
                    )
                )
    return errors


def render(tree: Node, name: str) -> None:
    """Render every templated string of ``tree`` in place (the merged tree is private to one load)."""
    targets = [(n, k, n.value) for n, k in _scalars(tree, "") if _is_template(n.value)]
    if not targets:
        return
    with budget():
        _render(targets, tree, name)


def _short(source: str) -> str:
    """A template as messages quote it: long ones cut, so that the error stays one readable line."""
    return repr(source if len(source) <= 80 else source[:77] + "...")


def _render(targets: list[tuple[Node, str, str]], tree: Node, name: str) -> None:
    for _ in range(MAX_PASSES):
        ctx = context(tree, name)
        changed = False
        for node, key, source in targets:
            try:
                result = _compile(source).render(ctx)
            except jinja2.TemplateSyntaxError as e:
                raise ProfileError(
                    f"template syntax error: {e.message}",
                    where=location(node.pos, key),
                    hint="templates are jinja2 expressions like '{{ os.release }}'",
                ) from None
            except jinja2.UndefinedError as e:
                raise ProfileError(
                    f"undefined name in template {source!r}: {e.message}",
                    where=location(node.pos, key),
                    hint="templates see the profile's own settings, e.g. {{ name }}, {{ os.release }}, "
                    "{{ cvmfs.repository }}",
                ) from None
            except TemplateLimitError as e:
                raise ProfileError(
                    f"template {_short(source)} is too costly: {e}",
                    where=location(node.pos, key),
                    hint=f"templates make values of at most {MAX_SIZE} characters in at most {MAX_STEPS} "
                    "steps; write the value out instead",
                ) from None
            except RecursionError:
                raise ProfileError(
                    f"template {_short(source)} recurses too deeply",
                    where=location(node.pos, key),
                    hint="a macro that calls itself needs a condition that ends the recursion",
                ) from None
            except MemoryError:
                raise ProfileError(
                    f"template {_short(source)} ran out of memory",
                    where=location(node.pos, key),
                    hint=f"templates make values of at most {MAX_SIZE} characters; write the value out",
                ) from None
            except jinja2.TemplateError as e:
                raise ProfileError(
                    f"template error in {source!r}: {e}",
                    where=location(node.pos, key),
                    hint="templates are jinja2 expressions over the profile's settings",
                ) from None
            except Exception as e:  # whatever a user's expression raises is their error
                raise ProfileError(
                    f"template {source!r} failed: {type(e).__name__}: {e}",
                    where=location(node.pos, key),
                    hint="templates are jinja2 expressions over the profile's settings",
                ) from None
            if result != node.value:
                node.value, node.text, node.templated = result, result, True
                changed = True
        if not changed:
            return
    node, key, source = targets[0]
    raise ProfileError(
        f"templates do not settle (a value refers to itself?): {source!r}",
        where=location(node.pos, key),
        hint="make sure no template depends, directly or not, on its own value",
    )
