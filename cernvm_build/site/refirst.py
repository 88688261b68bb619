"""The ASCII characters a compiled regular expression's match can start with, read from its parsed form.

``lexfast`` tries a lexer state's rules as one alternation; at a position, only the rules whose match
can start with the character there need to be in it (an identifier in Python code is matched by the
30th rule after 29 that cannot start with a letter, or with that letter). The answer must never be
too small: every construct this module does not know, and every one it cannot read exactly (a
backreference, a character class of non-ASCII members under IGNORECASE, where "ſ" matches "s"),
counts as "any character", and a zero-width assertion (``^``, ``\\b``, lookarounds) as nothing, so
the characters after it count too. Only ASCII characters are answered for: at any other character
every rule is tried.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from functools import cache
from re import _constants as C  # type: ignore[attr-defined]  # the parser's opcodes (stdlib)
from re import _parser  # type: ignore[attr-defined]  # what re.compile parses a pattern into (stdlib)
from typing import Any

from . import recache

ASCII = frozenset(map(chr, range(128)))

_REPEATS = tuple(op for op in (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", None)) if op)
_ZERO_WIDTH = (C.AT, C.ASSERT, C.ASSERT_NOT)


@cache
def _category(cat: Any, flags: int) -> frozenset[str]:
    # the ASCII members of \d, \s, \w and their complements, as the engine itself tells them
    source = {
        C.CATEGORY_DIGIT: r"\d",
        C.CATEGORY_NOT_DIGIT: r"\D",
        C.CATEGORY_SPACE: r"\s",
        C.CATEGORY_NOT_SPACE: r"\S",
        C.CATEGORY_WORD: r"\w",
        C.CATEGORY_NOT_WORD: r"\W",
    }.get(cat)
    if source is None:
        return ASCII
    pattern = re.compile(source, flags & re.ASCII)
    return frozenset(c for c in ASCII if pattern.match(c))


def _class(items: list[tuple[Any, Any]], flags: int) -> frozenset[str]:
    members: set[str] = set()
    negate = False
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            if av >= 128 and flags & re.I:
                return ASCII  # a non-ASCII letter may match an ASCII one ignoring case
            members.add(chr(av))
        elif op is C.RANGE:
            low, high = av
            if high >= 128 and flags & re.I:
                return ASCII
            members.update(map(chr, range(low, min(high, 127) + 1)))
        elif op is C.CATEGORY:
            members |= _category(av, flags)
        else:
            return ASCII
    if flags & re.I:
        members |= {c.swapcase() for c in members}
    members &= ASCII
    return ASCII - members if negate else frozenset(members)


def _sequence(items: Any, flags: int) -> tuple[frozenset[str], bool]:
    """(the characters a match of the items in a row can start with, whether it can be empty)"""
    first: set[str] = set()
    for op, av in items:
        chars, empty = _item(op, av, flags)
        first |= chars
        if not empty:
            return frozenset(first), False
    return frozenset(first), True


def _item(op: Any, av: Any, flags: int) -> tuple[frozenset[str], bool]:
    if op is C.LITERAL:
        return _class([(op, av)], flags), False
    if op is C.IN:
        return _class(av, flags), False
    if op is C.SUBPATTERN:
        _group, add, delete, sub = av
        return _sequence(sub, (flags | add) & ~delete)
    if op is C.BRANCH:
        first: set[str] = set()
        empty = False
        for branch in av[1]:
            chars, can = _sequence(branch, flags)
            first |= chars
            empty = empty or can
        return frozenset(first), empty
    if op in _REPEATS:
        low, _high, sub = av
        chars, empty = _sequence(sub, flags)
        return chars, empty or low == 0
    if op is getattr(C, "ATOMIC_GROUP", None):
        return _sequence(av, flags)
    if op in _ZERO_WIDTH:
        return frozenset(), True
    if op is C.CATEGORY:
        return _category(av, flags), False
    return ASCII, True  # ANY, NOT_LITERAL, a backreference (may be empty), anything else


def first_chars(pattern: re.Pattern[str]) -> frozenset[str] | None:
    """The ASCII characters a match of ``pattern`` can start with; None if it can match the empty
    string (then it can match anywhere) or is not a text pattern."""
    if not isinstance(pattern.pattern, str) or pattern.flags & re.LOCALE:
        return None
    # kept between builds with the compiled patterns (``recache``): reading a pattern's parse is most of
    # a lexer's making once its patterns are no longer compiled. An edit of this file starts a new memo
    # (``recache._MADE_BY``), so the old code's answers are never read.
    return recache.remembered("refirst", pattern.pattern, pattern.flags, lambda: _first_chars(pattern))


def _first_chars(pattern: re.Pattern[str]) -> frozenset[str] | None:
    key = (pattern.pattern, pattern.flags)
    if key in _NOTED:
        return _NOTED[key]
    try:
        return _answer(_parser.parse(pattern.pattern, pattern.flags), pattern.flags)
    except Exception:  # a pattern the running parser reads otherwise: no claim
        return None


def _answer(tree: Any, flags: int) -> frozenset[str] | None:
    chars, empty = _sequence(tree, flags)
    return None if empty else chars


#: answers read from the parses ``re`` made while ``noting`` was active, by the compiled pattern's
#: (pattern, flags): the patterns of the lexers made then, which a fresh process would otherwise parse a
#: second time here (~0.03 CPU-s for the prose corpus's 18 languages; -4% of the instructions of a
#: fresh process that highlights its 3,000 blocks)
_NOTED: dict[tuple[str, int], frozenset[str] | None] = {}


@contextlib.contextmanager
def noting() -> Iterator[None]:
    """While active, each text pattern ``re`` parses to compile has its answer noted for
    ``first_chars``. A compiled pattern's flags are the parse's final ones (those passed, the pattern's
    global inline ones and UNICODE), and the parse with those flags is the same tree, so the answer is
    the one ``first_chars`` would read. The tree is read before ``re`` generates its code. Other
    threads' compiles are noted too, which is harmless (the same answers); the parser is wrapped by
    the first of overlapping callers and given back by the last."""
    with _LOCK:
        if not _USERS:
            _parser.parse = _noting_parse
        _USERS.append(True)
    try:
        yield
    finally:
        with _LOCK:
            _USERS.pop()
            if not _USERS:
                _parser.parse = _PARSE


_PARSE = _parser.parse
_LOCK = threading.Lock()
_USERS: list[bool] = []


def _noting_parse(source: Any, flags: int = 0, state: Any = None) -> Any:
    tree = _PARSE(source, flags, state)
    if type(source) is str and state is None:
        final = tree.state.flags
        if not final & re.LOCALE:
            try:
                _NOTED[(source, final)] = _answer(tree, final)
            except Exception:  # no claim: ``first_chars`` parses it again (and answers None)
                pass
    return tree
