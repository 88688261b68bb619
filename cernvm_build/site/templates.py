"""jinja2 templates with autoescaping, and the hash of each template plus what it includes/extends."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from ..errors import BuildError, Location, utf8_text
from ..fsutil import read_capped

if TYPE_CHECKING:
    import jinja2

    from .renderchild import RenderChild

__all__ = ["LAYOUT_DATA", "Environment", "Markup", "environment"]

#: data files each layout receives (pages can ask for more with ``data: [name]``)
LAYOUT_DATA: dict[str, tuple[str, ...]] = {
    "home": ("releases",),
    "downloads": ("releases",),
    "repositories": ("repositories",),
}


#: what makes a template depend on another (a regex: parsing every template on each build costs more)
REFERENCE = re.compile(r"""\{%-?\s*(?:extends|include|import|from)\s+["']([^"']+)["']""")


#: the compiled templates' bytecode files (``jinja2.FileSystemBytecodeCache``): named for the code
#: generator, so a cache that holds another one's code (it calls other names) is never loaded
BYTECODE_PATTERN = "__jinja2_out1_%s.cache"


def _bytecode_cache(folder: Path) -> Any:
    """jinja2's ``FileSystemBytecodeCache`` in ``folder``, whose writes may fail: a full disk or quota, a
    read-only cache was an OSError naming no file from inside a template's render (a forked worker's:
    "a site build worker failed"); the cache only saves the next build a compile, so that one is not
    kept (jinja2 removes its temporary) and the build goes on."""
    import jinja2

    class Cache(jinja2.FileSystemBytecodeCache):
        def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            with contextlib.suppress(OSError):
                super().dump_bytecode(bucket)

    return Cache(str(folder), BYTECODE_PATTERN)


def _escape_out() -> Any:
    """What a template's ``{{ value }}`` calls where it autoescapes: a plain string's escaped text as a
    ``str``. jinja2 joins the pieces it outputs into a ``str`` anyway (a macro's, a block's, the page's),
    so the ``Markup`` that ``markupsafe.escape`` wraps each in (a Python ``__new__``: two calls a value,
    ~64 values a docs page) is never seen; a ``Markup`` is output as it is (what ``escape`` makes of
    it, in three Python calls); anything else (numbers, subclasses, undefined) goes through ``escape``."""
    from markupsafe import escape

    try:  # markupsafe's C escaping of a str; without it (a pure-Python build), escape's own text
        from markupsafe._speedups import _escape_inner
    except ImportError:  # pragma: no cover - markupsafe is installed with its C speedups here
        return escape

    def escape_out(value: Any) -> Any:
        if type(value) is str:
            return _escape_inner(value)
        if type(value) is Markup:  # safe already (page content, sidebar, a macro's output): as it is
            return value
        return escape(value)

    return escape_out


@functools.lru_cache(maxsize=1)
def _dict_first() -> type[jinja2.Environment]:
    import jinja2
    from jinja2.compiler import CodeGenerator

    dict_attributes = frozenset(dir(dict))

    class OutEscape(CodeGenerator):
        """Autoescaped output through the environment's ``escape_out`` (``_escape_out``), not
        ``markupsafe.escape``; where autoescaping is decided while rendering, jinja2's own code."""

        def _output_child_pre(self, node: Any, frame: Any, finalize: Any) -> None:
            if frame.eval_ctx.volatile or not frame.eval_ctx.autoescape:
                super()._output_child_pre(node, frame, finalize)
                return
            self.write("environment.escape_out(")
            if finalize.src is not None:
                self.write(finalize.src)

    class DictFirst(jinja2.Environment):
        """``page.title`` on a dict without the failed attribute lookup jinja2 tries first (an exception
        per access, ~80 per page): a plain dict has no attributes but its methods, so the result is the
        same. Autoescaped output made by ``OutEscape``."""

        code_generator_class = OutEscape
        escape_out = staticmethod(_escape_out())

        def getattr(self, obj: Any, attribute: str) -> Any:
            if type(obj) is dict and attribute not in dict_attributes:
                try:
                    return obj[attribute]
                except KeyError:
                    return self.undefined(obj=obj, name=attribute)
            return super().getattr(obj, attribute)

    return DictFirst


#: the largest template read (the shipped ones are a few KB)
MAX_TEMPLATE = 16 << 20


class Environment:
    """The site's templates. jinja2 is imported when a template is first rendered (deliberate lazy
    import): a build that renders nothing (no change) only hashes the templates' sources."""

    def __init__(self, folder: Path, bytecode_cache: Path | None = None):
        if not folder.is_dir():
            raise BuildError(f"no templates/ folder in {folder.parent}", hint="the site needs templates/")
        self.folder = folder
        self.bytecode_cache = bytecode_cache
        self._hash: dict[str, str] = {}
        self._refs: dict[str, set[str]] = {}
        self._exists: dict[str, bool] = {}
        self._early: list[jinja2.Template] = []  # compiled by ``compile``, before the build hashed sources
        # renders in a forked process that imported jinja2 there (``renderchild``; a one-shot build's few
        # pages): this one then never imports it
        self.child: RenderChild | None = None

    @functools.cached_property
    def env(self) -> jinja2.Environment:
        import jinja2

        cache = self.bytecode_cache
        return _dict_first()(
            loader=jinja2.FileSystemLoader(str(self.folder)),
            autoescape=jinja2.select_autoescape(["html", "xml", "htm"], default_for_string=True),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            # compiled templates survive between builds (jinja2 checks each against its source)
            bytecode_cache=_bytecode_cache(cache) if cache else None,
            # one Environment per build (``site serve`` makes a new one for each): a template loaded
            # once is current for the whole build, without a stat of its file per page and include
            auto_reload=False,
        )

    def warm(self) -> None:
        """Import jinja2 and make the environment now (the builder does it while the Markdown renders)."""
        _ = self.env

    def compile(self, names: Iterable[str]) -> None:
        """Compile now these templates that exist and what they extend, include or import (the builder
        does it while the Markdown renders, for the templates it expects the pages to use). One that
        fails is left: the page that uses it reports the error."""
        try:
            closure = self._closure(names, only_existing=True)
        except BuildError:  # one went away while read: the page that uses it reports it
            return
        for name in sorted(closure):
            try:
                self._early.append(self.get(name))
            except Exception:  # raised again where a page uses the template, with its place
                continue

    def forget_changed(self) -> None:
        """Forget every compiled template and what was read of the sources if one ``compile`` made has
        changed on disk since (an edit while the Markdown rendered): the build then hashes and renders
        the same, new sources; else a page would be written with the old template under the new
        source's hash, and the next build would keep it. One stat per template compiled early."""
        if not self._early:
            return
        if all(template.is_up_to_date for template in self._early):
            return
        self._early = []
        if self.env.cache is not None:
            self.env.cache.clear()
        self._hash.clear()
        self._refs.clear()
        self._exists.clear()

    def folder_hash(self) -> str:
        """Hash of every file in the templates folder (a plan made with other templates is not reused)."""
        h = hashlib.sha256()
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            rel = os.fsencode(path.relative_to(self.folder).as_posix())  # (a name's bytes: not UTF-8?)
            h.update(rel + b"\0" + path.read_bytes() + b"\0")
        return h.hexdigest()

    def exists(self, name: str) -> bool:
        if name not in self._exists:
            self._exists[name] = (self.folder / name).is_file()
        return self._exists[name]

    def _source(self, name: str) -> str:
        # jinja2 loads no name outside the folder (TemplateNotFound): neither is it read here (an
        # include of '/etc/passwd' was read and hashed, of a FIFO's path waited on for ever)
        if name.startswith("/") or ".." in name.replace("\\", "/").split("/"):
            raise BuildError(
                f"template '{name}' is not a path inside templates/",
                where=str(self.folder),
                hint="name templates by their path under templates/, e.g. 'partials/macros.html'",
            )
        try:
            # (read_regular without its length check took MAX_TEMPLATE + 1 bytes of a larger one as it)
            data = read_capped(self.folder / name, MAX_TEMPLATE)
        except FileNotFoundError:
            raise BuildError(
                f"template '{name}' does not exist", where=str(self.folder), hint="add it"
            ) from None
        except OSError as e:  # a FIFO, a folder: not a template; one past MAX_TEMPLATE (TooLarge)
            raise BuildError(
                f"template '{name}' cannot be read: {e.strerror}", where=str(self.folder / name)
            ) from None
        return utf8_text(data, str(self.folder / name), "save the template as UTF-8")

    def _referenced(self, name: str) -> set[str]:
        if name not in self._refs:
            self._refs[name] = set(REFERENCE.findall(self._source(name)))
        return self._refs[name]

    def _closure(self, names: Iterable[str], *, only_existing: bool = False) -> set[str]:
        """These templates and every one they extend, include or import (``only_existing``: those whose
        file is there; otherwise a missing one is a BuildError)."""
        seen: set[str] = set()
        stack = list(names)
        while stack:
            n = stack.pop()
            if n in seen or (only_existing and not self.exists(n)):
                continue
            seen.add(n)
            stack.extend(self._referenced(n))
        return seen

    def closure_hash(self, name: str) -> str:
        """Hash of a template and every template it extends, includes or imports."""
        if name not in self._hash:
            h = hashlib.sha256()
            for n in sorted(self._closure([name])):
                h.update(n.encode() + b"\0" + self._source(n).encode() + b"\0")
            self._hash[name] = h.hexdigest()
        return self._hash[name]

    def get(self, name: str) -> jinja2.Template:
        import jinja2

        try:
            return self.env.get_template(name)
        except jinja2.TemplateSyntaxError as e:
            raise BuildError(
                f"template syntax error: {e.message}",
                where=Location(file=str(self.folder / name), line=e.lineno),
                hint="see the jinja2 template documentation",
            ) from None
        except jinja2.TemplateNotFound as e:  # (an include outside the folder: the closure's check)
            raise BuildError(
                f"template '{e.name}' does not exist", where=str(self.folder), hint="add it"
            ) from None
        except UnicodeDecodeError:  # one of its templates: ``_source`` names which, and its line
            self._closure([name])
            raise

    def use(self, child: RenderChild | None) -> None:
        """Render in this forked child from now on (``renderchild``: it imports jinja2), until
        ``close``; None (not forked): render here."""
        self.child = child

    def close(self) -> None:
        """End the child, if any (this environment renders in-process after that)."""
        if self.child is not None:
            self.child.close()
            self.child = None

    def render(self, name: str, ctx: dict[str, Any]) -> str:
        if self.child is not None:
            got = self.child.render(name, ctx)
            if got is not None:
                return got
        import jinja2

        try:
            return self.get(name).render(ctx)
        except jinja2.TemplateSyntaxError as e:  # in a template it extends, includes or imports
            raise BuildError(
                f"template syntax error: {e.message}",
                where=Location(file=e.filename or str(self.folder / (e.name or name)), line=e.lineno),
                hint="see the jinja2 template documentation",
            ) from None
        except jinja2.TemplateNotFound as e:  # an include or import found while rendering
            raise BuildError(
                f"template '{e.name}' does not exist", where=str(self.folder / name), hint="add it"
            ) from None
        except jinja2.UndefinedError as e:
            raise BuildError(
                f"template uses an undefined value: {e.message}",
                where=str(self.folder / name),
                hint="check the variable names the template uses",
            ) from None
        except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as e:
            raise self._failed(e) from None
        except MemoryError as e:  # "x" * 10**10
            raise self._failed(e) from None
        except RecursionError as e:  # a template that includes, imports or calls itself without end
            raise self._failed(e) from None

    def _failed(self, e: BaseException) -> BaseException:
        """An error the template's own code raised ({{ 1/0 }}, {{ 1 + "a" }}, {{ [][1] }}):
        one line naming the innermost template line it was raised at; the error itself where no
        template's code is in its traceback (a bug of the build, not of a template)."""
        where = None
        tb = e.__traceback__
        folder = str(self.folder) + os.sep
        while tb is not None:
            file = tb.tb_frame.f_code.co_filename
            if file.startswith(folder):
                where = Location(file=file, line=tb.tb_lineno)
            tb = tb.tb_next
        if where is None:
            return e
        if isinstance(e, RecursionError):
            return BuildError(
                "template error: it includes, imports or calls itself without end (RecursionError)",
                where=where,
                hint="an include, import or macro call at that line leads back to it: break the loop",
            )
        text = str(e) or type(e).__name__
        return BuildError(
            f"template error: {type(e).__name__}: {text}"[:500],
            where=where,
            hint="fix the template at that line",
        )


def environment(folder: Path, bytecode_cache: Path | None = None) -> Environment:
    return Environment(folder, bytecode_cache)
