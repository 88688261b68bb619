"""Compiled regular expressions kept in the build state between builds.

Making the lexers before the render workers fork (``sources.warm_highlighting``) is serial work, most
of it Python's ``re`` parsing Pygments' patterns and generating their code in pure Python (~0.16 CPU-s
of the 0.21 s warm-up on the prose corpus); ``_sre.compile``, which makes the pattern object from that
code, is cheap. What ``re`` hands ``_sre.compile`` for a (pattern, flags) is a function of them and the
Python build alone, so ``kept`` records those arguments while it is active and, where the state holds
them from an earlier build on the same Python, calls ``_sre.compile`` with them instead of compiling.

Everything is checked, nothing trusted: an entry is keyed by the Python build (version string,
``_sre``'s magic number, code size and ``compile`` signature) and holds the pattern and flags it was
made for, compared on use; an entry that does not load or that ``_sre.compile`` refuses is compiled
again the ordinary way. A Python whose ``re`` does not call ``_sre.compile`` through its compiler
module's ``_sre`` (as 3.11 does: the only one checked) leaves nothing recorded, and then this does
nothing. The entries of patterns a site no longer uses stay (a few hundred KB for all the lexers of
the prose corpus's 18 languages); another Python's, and those made before a Pygments upgrade or an
edit of lexfast or refirst, are dropped (``_generation``).
"""

from __future__ import annotations

import _sre  # type: ignore[import-not-found]  # re's C engine (stdlib, no stubs)
import array
import contextlib
import hashlib
import importlib.util
import pickle
import re
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_compiler: Any = getattr(re, "_compiler", None)  # re's pure-Python compiler (stdlib internals)

#: the Python build the entries were made by: another one's are never used (nor kept)
TAG = repr(
    (
        sys.version,
        sys.implementation.cache_tag,
        _sre.MAGIC,
        _sre.CODESIZE,
        getattr(_sre.compile, "__text_signature__", None),
    )
)
#: an array type code of ``_sre``'s code word size (None: there is none, and nothing is kept)
_CODE = next((c for c in "IL" if array.array(c).itemsize == _sre.CODESIZE), None)
_TAG_KEY = ""  # the memo's entry naming what its other entries were made by (``_generation``)
#: the code whose patterns and answers fill the memo besides Pygments' (read, not imported: a build
#: whose code blocks are all known does not load Pygments)
_MADE_BY = (Path(__file__).with_name("lexfast.py"), Path(__file__).with_name("refirst.py"))
_GENERATION: list[bytes] = []


def _generation() -> bytes:
    """The memo's tag: the Python build and the code that filled it (the Pygments package, by its
    ``__init__``, which names its version; lexfast, whose alternations are compiled; refirst). An
    upgrade or an edit starts a new memo instead of adding entries to the old one without bound."""
    if not _GENERATION:
        spec = importlib.util.find_spec("pygments")
        h = hashlib.blake2b(TAG.encode(), digest_size=16)
        for path in (spec.origin if spec else None, *_MADE_BY):
            try:
                h.update(Path(path).read_bytes() if path else b"-")  # type: ignore[arg-type]
            except OSError:
                h.update(b"-")
        _GENERATION.append(h.hexdigest().encode())
    return _GENERATION[0]


#: what the state's memo of compiled patterns is called (``cache.State.memo``)
MEMO = "re"


def key(pattern: str | bytes, flags: int, what: str = "") -> str:
    """An entry's key: the compiled (pattern, flags), or ``what`` (``remembered``) of them."""
    h = hashlib.blake2b(TAG.encode(), digest_size=16)
    h.update(what.encode() + b"\0")
    h.update(b"b%d:" % flags if isinstance(pattern, bytes) else b"s%d:" % flags)
    h.update(pattern if isinstance(pattern, bytes) else pattern.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


class Patterns:
    """The compiled patterns an earlier build kept (``known``, as read from the state) and those made
    since (``made``: (what, pattern, flags, what the entry holds), made into entries by ``entries``,
    after the serial part of the build: a cold build's compiles pay no key, array or pickle)."""

    def __init__(self, known: MutableMapping[str, bytes]):
        self.known = known if known.get(_TAG_KEY) == _generation() else {}
        self.made: list[tuple[str, Any, int, tuple[Any, ...]]] = []
        self.hits = 0
        self.added = False  # ``add`` brought entries the state does not hold

    def entries(self) -> dict[str, bytes] | None:
        """What the state should hold now (the known and the new entries), or None when it holds them
        already (nothing was compiled that it did not have)."""
        if not self.made and not self.added:
            return None
        return {**self.known, **self.made_since(0), _TAG_KEY: _generation()}

    def made_since(self, n: int) -> dict[str, bytes]:
        """The entries of what was compiled (and ``remembered``) since ``made`` held ``n`` items: what
        a forked process hands back to the one that forked it (``markdown.warm_lexers``)."""
        made = {}
        for what, p, flags, held in self.made[n:]:
            try:
                made[key(p, flags, what)] = _blob(what, p, flags, held)
            except Exception:  # an entry that does not pickle is only not kept: never a failed build
                continue
        return made

    def add(self, entries: Mapping[str, bytes]) -> None:
        """Entries another process of this build made (``made_since``): used as known ones from now
        on, and kept in the state as this process's own would be."""
        if entries:
            self.known = {**self.known, **entries}
            self.added = True


_recorded = threading.local()
_active: list[Patterns] = []  # the patterns ``kept`` uses now


def active() -> Patterns | None:
    """The patterns ``kept`` uses now: None outside it, or where this Python's ``re`` cannot be
    hooked (``kept`` then does nothing)."""
    return _active[-1] if _active else None


def remembered(what: str, pattern: str, flags: int, compute: Callable[[], T]) -> T:
    """``compute()``, a fact about the pattern (pattern, flags) that the code ``what`` names tells
    (that code is one of ``_MADE_BY``: changed code starts a new memo, never answered for by the old); kept
    with the compiled patterns while ``kept`` is active, and read from them where they hold it."""
    if not _active:
        return compute()
    patterns = _active[-1]
    blob = patterns.known.get(key(pattern, flags, what)) if patterns.known else None
    if blob is not None:
        try:
            made_for, made_flags, value = pickle.loads(blob)
            if made_for == pattern and made_flags == flags:
                patterns.hits += 1
                return value  # type: ignore[no-any-return]
        except Exception:  # anything wrong with an entry: computed again
            pass
    value = compute()
    patterns.made.append((what, pattern, flags, (value,)))
    return value


def _recording_compile(*args: Any) -> Any:
    """``_sre.compile`` as ``re`` calls it while ``kept`` is active: the arguments noted for the
    caller (``kept``'s compile, which made them)."""
    _recorded.args = args
    return _sre.compile(*args)


def _blob(what: str, pattern: Any, flags: int, held: tuple[Any, ...]) -> bytes:
    if not what:  # compiled: the code's opcodes are ints of re's own (named) class, kept as code words
        held = (held[0], array.array(_CODE or "I", held[1]), *held[2:])  # (kept needs a _CODE)
    return pickle.dumps((pattern, flags, *held), protocol=pickle.HIGHEST_PROTOCOL)


def _from_blob(pattern: str | bytes, flags: int, blob: bytes) -> Any:
    """The pattern an entry describes, or None when it is not one for (pattern, flags) or does not load."""
    try:
        made_for, made_flags, sre_flags, code, *rest = pickle.loads(blob)
        if made_for != pattern or made_flags != flags or type(made_for) is not type(pattern):
            return None
        return _sre.compile(pattern, sre_flags, code.tolist(), *rest)
    except Exception:  # anything wrong with an entry: compiled again
        return None


@contextlib.contextmanager
def kept(patterns: Patterns) -> Iterator[None]:
    """While active, ``re.compile`` (and everything using ``re``) in this process makes a pattern from
    ``patterns`` where it holds one, and records those it compiles. Not reentrant; other threads'
    compiles go through it too, which is harmless (same patterns either way). A pattern made from an
    entry is not parsed, so the parser's warnings (``FutureWarning: Possible nested set``) are not
    repeated on a hit; ``re.DEBUG`` compiles and ``str``/``bytes`` subclasses go to ``re`` as they
    are. Forked processes (``--jobs 2``'s render workers) record into their own copy, which dies with
    them: only what this process compiles is kept."""
    usable = _compiler is not None and callable(getattr(_compiler, "compile", None))
    if _CODE is None or not usable or getattr(_compiler, "_sre", None) is not _sre:
        yield
        return
    original = _compiler.compile
    recorder = types.SimpleNamespace(**{n: getattr(_sre, n) for n in dir(_sre) if not n.startswith("__")})
    recorder.compile = _recording_compile

    def compile(p: Any, flags: int = 0) -> Any:
        # only plain str/bytes (a subclass is refused on use, and may not pickle); DEBUG prints the
        # code as it compiles, which a pattern made from an entry would not (re never caches them)
        if type(p) not in (str, bytes) or flags & re.DEBUG:
            return original(p, flags)
        blob = patterns.known.get(key(p, flags)) if patterns.known else None
        if blob is not None:
            made = _from_blob(p, flags, blob)
            if made is not None:
                patterns.hits += 1
                return made
        _recorded.args = None
        made = original(p, flags)
        args = _recorded.args
        _recorded.args = None
        if args is not None and args[0] is p:
            patterns.made.append(("", p, flags, args[1:]))
        return made

    _compiler.compile = compile
    _compiler._sre = recorder
    _active.append(patterns)
    try:
        yield
    finally:
        _active.pop()
        _compiler.compile = original
        _compiler._sre = _sre
