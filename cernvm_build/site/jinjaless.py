"""The site's templates rendered from jinja2's bytecode cache without jinja2's package ``__init__``.

jinja2 compiles a template to a Python module; its ``FileSystemBytecodeCache`` (``templates``) keeps
that module's code, checked by the source's checksum and jinja2's own magic (its bytecode format and
the Python version). The render child (``renderchild``) of a one-page rebuild runs that code here with
the runtime the code calls (``jinja2.runtime``, the default filters and tests, markupsafe) and a small
environment of ours, so it never imports jinja2's compiler, lexer, parser and ``Environment`` (callgrind:
~44M instructions of the child's ~208M in a one-page rebuild of 1,000 pages).

The package's module is put in ``sys.modules`` unexecuted (``_bare``), so its submodules import without
its ``__init__``; ``complete`` runs the ``__init__`` in that same module object before anything needs
the whole of jinja2. ``Fast.render`` returns None where it cannot do what jinja2's ``Environment``
would (a template, or one it extends, includes or imports, missing from the cache or stale; an
attribute of the environment this one lacks; any error): the caller then renders through jinja2, which
meets the error in the usual way. The code run is the code jinja2 itself would run for the same source
(the same cache entries, the same ``Undefined``: ``StrictUndefined``); the site's environment is not
sandboxed, and neither is this one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import pickle
import posixpath
import sys
from collections import ChainMap
from pathlib import Path
from typing import Any

from .templates import BYTECODE_PATTERN, _escape_out

__all__ = ["MAGIC", "Fast", "complete"]

#: the head of jinja2's bytecode files (``jinja2.bccache.bc_magic``: its format 5, jinja2 3.x, and the
#: Python version), read here without ``jinja2.bccache`` (it imports tempfile, shutil, bz2 and lzma:
#: ~4 ms); another jinja2's or Python's files do not match and are rendered through jinja2 (a test
#: compares it with jinja2's own)
MAGIC = b"j2" + pickle.dumps(5, 2) + pickle.dumps((sys.version_info[0] << 24) | sys.version_info[1], 2)


class _Miss(Exception):
    """A template this module cannot run: render through jinja2."""


def _bare() -> None:
    """jinja2's package module, its ``__init__`` not run, unless jinja2 is imported already."""
    if "jinja2" in sys.modules:
        return
    spec = importlib.util.find_spec("jinja2")
    if spec is None or spec.loader is None:  # pragma: no cover - jinja2 is a dependency
        raise _Miss
    sys.modules["jinja2"] = importlib.util.module_from_spec(spec)


def complete() -> None:
    """Run jinja2's package ``__init__`` where ``_bare`` left it out (before jinja2 is used whole)."""
    module = sys.modules.get("jinja2")
    if module is None or hasattr(module, "Environment"):
        return
    spec = module.__spec__
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(module)


class _Module:
    """What ``{% from %}``/``{% import %}`` get (jinja2's ``TemplateModule``): the exported names."""

    def __init__(self, template: _Template, context: Any):
        self._body_stream = list(template.root_render_func(context))
        self.__dict__.update(context.get_exported())
        self.__name__ = template.name


class _Template:
    """The parts of ``jinja2.Template`` the compiled code uses (``Template.from_code``)."""

    def __init__(self, env: _Env, code: Any):
        namespace: dict[str, Any] = {"environment": env, "__file__": code.co_filename}
        exec(code, namespace)  # jinja2's compiled template, as ``Template.from_code`` runs it
        self.environment = env
        self.globals = ChainMap({}, env.globals)
        self.name: str = namespace["name"]
        self.blocks = namespace["blocks"]
        self.root_render_func = namespace["root"]
        self._module: _Module | None = None
        namespace["__jinja_template__"] = self

    def new_context(self, vars: Any = None, shared: bool = False, locals: Any = None) -> Any:
        from jinja2.runtime import new_context

        env: Any = self.environment  # (the runtime reads only what ``_Env`` has)
        return new_context(env, self.name, self.blocks, vars, shared, self.globals, locals)

    def make_module(self, vars: Any = None, shared: bool = False, locals: Any = None) -> _Module:
        return _Module(self, self.new_context(vars, shared, locals))

    def _get_default_module(self, ctx: Any = None) -> _Module:
        # (jinja2's Template._get_default_module, sync only)
        if ctx is not None:
            keys = ctx.globals_keys - self.globals.keys()
            if keys:
                return self.make_module({k: ctx.parent[k] for k in keys})
        if self._module is None:
            self._module = self.make_module()
        return self._module


class _Env:
    """The environment attributes the compiled templates and the runtime read, with the site's
    options (``templates.Environment.env``, ``_dict_first``)."""

    sandboxed = False
    is_async = False
    finalize = None
    shared = False
    concat = "".join
    escape_out = staticmethod(_escape_out())

    def __init__(self, folder: Path, cache: Path):
        from jinja2 import defaults, runtime, utils

        self.undefined = runtime.StrictUndefined
        self.context_class = runtime.Context
        self.autoescape = utils.select_autoescape(["html", "xml", "htm"], default_for_string=True)
        self.filters = dict(defaults.DEFAULT_FILTERS)  # type: ignore[attr-defined]
        self.tests = dict(defaults.DEFAULT_TESTS)  # type: ignore[attr-defined]
        self.globals = dict(defaults.DEFAULT_NAMESPACE)
        self.policies = dict(defaults.DEFAULT_POLICIES)
        self.folder = str(folder)
        self.cache = str(cache)
        self.loaded: dict[str, _Template] = {}
        self._dict_attributes = frozenset(dir(dict))

    def get_template(self, name: Any, parent: Any = None, globals: Any = None) -> _Template:
        if type(name) is not str or globals is not None:
            raise _Miss
        got = self.loaded.get(name)
        if got is None:
            got = self.loaded[name] = self._load(name)
        return got

    def _load(self, name: str) -> _Template:
        """The entry jinja2's ``FileSystemLoader`` and ``FileSystemBytecodeCache`` would find: the same
        file name and text (a name with an empty, ``.`` or ``..`` part or a backslash is left to
        jinja2), so the same key and checksum."""
        parts = name.split("/")
        if "\\" in name or any(part in ("", ".", "..") for part in parts):
            raise _Miss
        filename = os.path.normpath(posixpath.join(self.folder, *parts))
        if not os.path.isfile(filename):  # (as jinja2's loader: a FIFO named by an include is not opened)
            raise _Miss
        try:
            with open(filename, encoding="utf-8") as f:  # (text mode: jinja2 reads it so)
                source = f.read()
            key = hashlib.sha1(f"{name}|{filename}".encode()).hexdigest()
            with open(os.path.join(self.cache, BYTECODE_PATTERN % key), "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise _Miss
                if pickle.load(f) != hashlib.sha1(source.encode()).hexdigest():
                    raise _Miss
                code = marshal.load(f)
        except Exception:  # missing, unreadable, stale, another format: jinja2's path
            raise _Miss from None
        return _Template(self, code)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # (``_dict_first``'s, then jinja2's ``Environment.getattr``)
        if type(obj) is dict and attribute not in self._dict_attributes:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        try:
            return getattr(obj, attribute)
        except AttributeError:
            pass
        try:
            return obj[attribute]
        except (TypeError, LookupError, AttributeError):
            return self.undefined(obj=obj, name=attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        # (jinja2's ``Environment.getitem``)
        try:
            return obj[argument]
        except (AttributeError, TypeError, LookupError):
            if isinstance(argument, str):
                try:
                    return getattr(obj, argument)
                except AttributeError:
                    pass
            return self.undefined(obj=obj, name=argument)


class Fast:
    """Renders from the bytecode cache ``cache`` the templates of ``folder`` (``warm`` first)."""

    def __init__(self, folder: Path, cache: Path | None):
        self.folder = folder
        self.cache = cache
        self.env: _Env | None = None

    def warm(self) -> None:
        """Import the runtime (without jinja2's ``__init__`` if it is not imported yet)."""
        if self.cache is None:
            return
        try:
            _bare()
            self.env = _Env(self.folder, self.cache)
        except Exception:  # another jinja2 (other names): the caller's jinja2 path
            self.env = None

    def render(self, name: str, ctx: dict[str, Any]) -> str | None:
        """The page, or None: render it through jinja2 (see the module's doc)."""
        if self.env is None:
            return None
        try:
            template = self.env.get_template(name)
            return "".join(template.root_render_func(template.new_context(dict(ctx))))
        except Exception:
            return None
