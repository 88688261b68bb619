"""Pygments' ``RegexLexer`` tokens, with each lexer state's rules tried by one regular expression.

Pygments tries a state's rules one by one at each position (``rule.match(text, pos)``), so a token
costs a Python-level call for every rule that fails before one matches: ~30 in Python code, where
highlighting was a fifth of a page's build. Here a state's rules are joined into one alternation
``(rule0)|(rule1)|…``, which the regex engine tries in the same order; the match's ``lastindex`` (the
outermost group, closed last) says which rule it is. An alternation takes the first alternative that
matches at the position, with the match that alternative makes on its own (nothing follows it), so the
rule, its text and its end are the ones Pygments finds. A rule whose action is a ``bygroups`` of
token types has its tokens read here from the alternation's groups (the rule's follow its own group);
any other callback (``using``, a lexer's own) gets the rule matched again with its own pattern, for its
own group numbers.

The engine still tries every alternative at a position: Python's root state has 56 rules and an
identifier is matched by the last, ~6 us a token. So at an ASCII character only the rules whose match
can start with it (``refirst``; letters share one set, digits another) are joined, in their order;
the others cannot match there, so the first that matches is the same rule. Python's tokens ~3x faster.

Around the match, the lexer's state machine is Pygments' own, as its ``RegexLexer`` documents it: an
action that is a token type yields the matched text, a callback yields its tokens; the new state
pushes states (``'#push'`` the current one again, ``'#pop'`` pops one, never the last), or an integer
pops that many; where no rule matches, a newline yields a ``Whitespace`` token and resets the stack to
``root``, any other character yields an ``Error`` token. ``ExtendedRegexLexer``'s loop (YAML's, whose
callbacks keep the indentation in the context; Ruby's, Terraform's...) is the same around a
``LexerContext`` that holds the position and stack (``context_tokens``). A few of
Pygments' own loops wrap that one and are kept, with their inner lexer sped up: the C family's
(``Name`` tokens that are type names retyped), shell sessions' (``console``: its commands' lexer) and
Makefiles' (the lines other than special and comment ones); a ``using(OtherLexer)`` callback
(Dockerfile's shell lines, HTML's scripts), also as a group of a ``bygroups``, lexes with one sped-up
instance a lexer keeps, not a new one per match (``_using``). tests/site/test_site_lexfast.py
compares the tokens with Pygments' for the site's languages and a set of others, on the shipped pages'
code blocks, the bench corpora's and odd input.

A state is joined once the process has matched ``JOIN_AFTER`` tokens in it rule by rule (joining
compiles its patterns again, which only pays off over many tokens), or at its first token for a lexer
a full build will use much (``join_early``); it stays rule by rule where its patterns cannot share one
expression: different flags, verbose patterns, a backreference the joined numbering cannot express
(in a class, a conditional, past group 99), or an alternation that does not compile.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterator
from re import _parser  # type: ignore[attr-defined]  # what re.compile parses a pattern into (stdlib)
from typing import Any

from pygments.lexer import (
    ExtendedRegexLexer,
    Lexer,
    LexerContext,
    RegexLexer,
    RegexLexerMeta,
    bygroups,
    using,
)
from pygments.token import Error, Keyword, Name, Text, Whitespace, _TokenType
from pygments.util import Future

from . import recache
from .refirst import ASCII, first_chars

#: a rule's flags set at its start (``(?i)…``), kept for that rule only in the joined pattern
_LEADING = re.compile(r"\(\?([imsx]+)\)")
_FLAGS = {"i": re.I, "m": re.M, "s": re.S, "x": re.X}
#: what renumbering a rule's backreferences looks at: escapes (``\2``), class brackets, conditionals
_PIECE = re.compile(r"\\(?:([1-9][0-9]?)|.)|\[|\]|\(\?\(", re.S)

#: a compiled rule: (its pattern's ``match``, token type or callback or None, new state or None)
Rule = tuple[Callable[[str, int], Any], Any, Any]
#: a state's joined ``match`` and, by group number, the index of the rule that group wraps
Joined = tuple[Callable[[str, int], Any], dict[int, int]]


_WORDISH = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_DIGITS = frozenset("0123456789")
_GROUP = {**dict.fromkeys(_WORDISH, _WORDISH), **dict.fromkeys(_DIGITS, _DIGITS)}


class _Lazy:
    """A rule's pattern as ``lazy_rules`` leaves it: compiled at its first own match. What the joined
    states read of it (``_source``, ``first_chars``: its source, final flags, groups and their names) is
    read from its parse, which ``refirst.noting`` notes the first characters of as for a compile."""

    __slots__ = ("_compiled", "flags", "given", "groupindex", "groups", "pattern")

    def __init__(self, pattern: str, given: int, facts: tuple[int, int, dict[str, int]]):
        self.pattern, self.given = pattern, given
        self.flags, self.groups, self.groupindex = facts
        self._compiled: Any = None

    def compiled(self) -> re.Pattern[str]:
        if self._compiled is None:
            self._compiled = re.compile(self.pattern, self.given)
        return self._compiled  # type: ignore[no-any-return]

    def match(self, text: str, pos: int = 0, endpos: int = sys.maxsize) -> re.Match[str] | None:
        return self.compiled().match(text, pos, endpos)


def _facts(pattern: str, flags: int) -> tuple[int, int, dict[str, int]]:
    """What ``re.compile(pattern, flags)`` would say of its final flags, groups and group names: its
    parse's (the parser looked up at the call, so that ``refirst.noting`` notes it). Kept by pattern,
    as ``re`` keeps compiled ones: lexers share many rules (a third of the prose corpus's 701)."""
    got = _FACTS.get((pattern, flags))
    if got is None:
        tree = _parser.parse(pattern, flags)
        got = _FACTS[(pattern, flags)] = (
            int(tree.state.flags),
            tree.state.groups - 1,
            dict(tree.state.groupdict),
        )
    return got


#: ``_facts`` by (pattern, flags): bounded by the rules of the lexers a process makes
_FACTS: dict[tuple[str, int], tuple[int, int, dict[str, int]]] = {}


def _lazy_regex(cls: Any, regex: Any, rflags: int, state: str) -> Callable[..., Any]:
    """``RegexLexerMeta._process_regex`` while ``lazy_rules`` is active: the rule's ``match``, of a
    pattern compiled at its first own match (``_Lazy``); the facts of it a joined state reads are kept
    with the compiled patterns (``recache.remembered``: a lexer made from another process's patterns
    parses none of its rules). A pattern ``re`` does not parse here is compiled at once, as Pygments
    does (its error is then Pygments' own)."""
    if isinstance(regex, Future):
        regex = regex.get()
    if type(regex) is not str:
        return _PROCESS_REGEX(cls, regex, rflags, state)  # type: ignore[no-any-return]
    flags = int(rflags)
    try:
        facts = recache.remembered("lexfast", regex, flags, lambda: _facts(regex, flags))
    except Exception:
        return _PROCESS_REGEX(cls, regex, rflags, state)  # type: ignore[no-any-return]
    _MADE_LAZY.append(cls)
    return _Lazy(regex, flags, facts).match


_PROCESS_REGEX = RegexLexerMeta._process_regex
_LAZY_LOCK = threading.Lock()
_LAZY_USERS: list[bool] = []
#: the lexer classes whose rules were made lazily while ``lazy_rules`` is active
_MADE_LAZY: list[type] = []


@contextlib.contextmanager
def lazy_rules() -> Iterator[None]:
    """While active, the lexer classes Pygments makes (their rules: at a class's first instance) have
    their rules' patterns compiled at their first own match, not all at once: in a state joined at its
    first token (``join_early``) a rule's own pattern is matched only for a callback that reads its
    groups, so most are never compiled (~0.03 CPU-s of the prose corpus's 18 languages, a third of
    their making). On leaving, the rules of every class made then whose instances are not lexed by
    this module's loops with their states joined early (``_EARLY``) are compiled, so that Pygments'
    loops, and ours rule by rule, match with the patterns' own ``match`` as before."""
    with _LAZY_LOCK:
        if not _LAZY_USERS:
            RegexLexerMeta._process_regex = _lazy_regex  # type: ignore[method-assign,assignment]
        _LAZY_USERS.append(True)
    try:
        yield
    finally:
        with _LAZY_LOCK:
            _LAZY_USERS.pop()
            if not _LAZY_USERS:
                RegexLexerMeta._process_regex = _PROCESS_REGEX  # type: ignore[method-assign]
                made = set(_MADE_LAZY)
                _MADE_LAZY.clear()
                for cls in made:
                    if cls not in _EARLY or cls not in _LOOPED:
                        for rules in cls.__dict__.get("_tokens", {}).values():
                            _compiled(rules)


def _compiled(rules: list[Rule]) -> None:
    """Each rule of ``rules`` made lazily (``lazy_rules``) with its pattern's own ``match`` instead."""
    for i, (match, action, new_state) in enumerate(rules):
        lazy = getattr(match, "__self__", None)
        if type(lazy) is _Lazy:
            rules[i] = (lazy.compiled().match, action, new_state)


def _decided(rules: list[Rule]) -> _State | None:
    """A state's rules joined (``_State``), or None where they cannot be: then tried one by one, each
    with its pattern's own ``match``."""
    if _joinable(rules):
        return _State(rules)
    _compiled(rules)
    return None


def _never(text: str, pos: int) -> None:
    return None  # no rule of the state can match at this character


#: Pygments' ``bygroups`` callbacks share this code object (each holds its own ``args``)
_BYGROUPS_CODE = bygroups(Text).__code__
#: by callback: its groups and their token types where it is a ``bygroups`` of token types only (its
#: tokens are then read from the match here, without its generator, and in a joined state without
#: matching the rule again), else None
_GROUPS: dict[Any, tuple[tuple[int, _TokenType], ...] | None] = {}


#: Pygments' ``using(OtherLexer)`` callbacks share this code object (``using(this)`` has another)
_USING_CODE = using(Text).__code__
#: by callback that is not a ``bygroups`` of token types: what the loops call instead (``_using``'s
#: for a ``using(OtherLexer)``, a ``bygroups`` of the same actions with ``_using``'s for those among
#: them, else the callback itself)
_CALLBACK: dict[Any, Any] = {}


def _groups(action: Any) -> tuple[tuple[int, _TokenType], ...] | None:
    got = None
    callback = action
    code = getattr(action, "__code__", None)
    if code is _BYGROUPS_CODE:
        cells = dict(zip(action.__code__.co_freevars, action.__closure__, strict=True))
        args = cells["args"].cell_contents
        if all(a is None or type(a) is _TokenType for a in args):
            got = tuple((i, a) for i, a in enumerate(args, 1) if a is not None)
        elif any(getattr(a, "__code__", None) is _USING_CODE for a in args):
            # a group lexed by another lexer (Dockerfile's ENV, LABEL, CMD... lines: Bash): Pygments'
            # made a new one per match, whose rules were tried one by one (12 matches a token)
            callback = bygroups(
                *(_using(a) if getattr(a, "__code__", None) is _USING_CODE else a for a in args)
            )
    elif code is _USING_CODE:
        callback = _using(action)
    _GROUPS[action] = got
    if got is None:
        _CALLBACK[action] = callback
    return got


def _using(action: Any) -> Any:
    """What the ``using(OtherLexer, **kwargs)`` callback ``action`` yields, from one instance of that
    lexer a lexer keeps, sped up: Pygments' makes a new instance at every match (its "XXX: cache
    that somehow"), whose rules are tried one by one (Dockerfile's shell lines are Bash's). Only for
    a lexer ``speed_up`` takes (its tokens depend on its options and the text, not on an earlier
    call); any other stays Pygments' callback."""
    cells = dict(zip(action.__code__.co_freevars, action.__closure__, strict=True))
    other, kwargs, gt_kwargs = (cells[n].cell_contents for n in ("_other", "kwargs", "gt_kwargs"))
    # by calling lexer, weakly: ``markdown._lexer``'s cache makes evicted lexers again, for a long serve
    inner: weakref.WeakKeyDictionary[Lexer, Lexer | None] = weakref.WeakKeyDictionary()

    def callback(lexer: Lexer, match: Any, ctx: LexerContext | None = None) -> Iterator[tuple[int, Any, str]]:
        if lexer in inner:
            lx = inner[lexer]
        else:
            lx = other(**{**lexer.options, **kwargs})
            if type(lexer) in _EARLY:  # (``join_early``)
                _EARLY.add(type(lx))
            lx = inner[lexer] = speed_up(lx) if supports(lx) else None
        if lx is None:
            yield from action(lexer, match, ctx)
            return
        s = match.start()
        for i, t, v in lx.get_tokens_unprocessed(match.group(), **gt_kwargs):
            yield i + s, t, v
        if ctx:
            ctx.pos = match.end()

    return callback


class _State:
    """A state's rules joined, and by the character at a position the alternation of only the rules
    whose match can start with it (``refirst``), in the same order: the rules left out cannot match
    there, so the first that matches is the one the whole alternation finds. Made per character when
    first met (characters with the same rules share one pattern). At the text's end only the rules
    that can match the empty string are tried; the whole alternation (~20 ms to compile for Python's
    root state, serial time of every full build) is compiled only for a non-ASCII character."""

    __slots__ = ("by_char", "by_rules", "first", "rules")

    def __init__(self, rules: list[Rule]):
        self.rules = rules
        self.first = [first_chars(match.__self__) for match, _action, _new in rules]  # type: ignore[attr-defined]
        self.by_char: dict[str, Joined] = {}
        self.by_rules: dict[tuple[int, ...], Joined] = {}

    def at(self, c: str) -> Joined:
        """The alternation for a position whose character is ``c`` ("" at the text's end)."""
        if not c:
            some = tuple(i for i, f in enumerate(self.first) if f is None)
        elif c in ASCII:
            # letters (and "_") share one alternation, digits another: each distinct set of rules is
            # a pattern to compile (~5 ms where it holds the long keyword lists), and the rules' own
            # prefixes (keywords, builtins) fail fast at a letter they do not start with
            group = _GROUP.get(c, c)
            some = tuple(i for i, f in enumerate(self.first) if f is None or not f.isdisjoint(group))
        else:
            some = tuple(range(len(self.rules)))
        got = self.by_rules.get(some)
        if got is None:
            got = self.by_rules[some] = self._subset(some)
        self.by_char[c] = got
        return got

    def _subset(self, some: tuple[int, ...]) -> Joined:
        if not some:
            return _never, {}
        sub = _join([self.rules[i] for i in some])
        if sub is None:  # cannot happen (``_joinable`` said these rules join), but never guess
            return _one_by_one([self.rules[i] for i in some], some)
        match, index = sub
        return match, {group: some[k] for group, k in index.items()}


class _Hit:
    """A rule's match standing for the alternation's (``lastindex``: the group of that rule; the rule's
    own groups follow it, as in the alternation)."""

    __slots__ = ("lastindex", "m")

    def __init__(self, m: re.Match[str], lastindex: int):
        self.m, self.lastindex = m, lastindex

    def group(self, n: int = 0) -> str | Any:
        return self.m.group(n - self.lastindex if n else 0)

    def start(self, n: int = 0) -> int:
        return self.m.start(n - self.lastindex if n else 0)

    def end(self) -> int:
        return self.m.end()


def _one_by_one(rules: list[Rule], some: tuple[int, ...]) -> Joined:
    """The rules tried one by one, as an alternation of them answers (where theirs did not compile)."""

    def match(text: str, pos: int) -> _Hit | None:
        for k, (rule_match, _action, _new) in enumerate(rules):
            m = rule_match(text, pos)
            if m is not None:
                return _Hit(m, k + 1)
        return None

    return match, {k + 1: some[k] for k in range(len(rules))}


#: a state's rules are joined once this process matched this many tokens in it rule by rule: joining
#: compiles the rules again (~25 ms for Python's "root", ~1.5 us saved a token), which a one-page
#: rebuild's few blocks would not win back
JOIN_AFTER = 5000

#: by lexer class: the states decided (joined, or None: left rule by rule), and the tokens matched
#: rule by rule in each state not decided yet
_JOINED: dict[type, tuple[dict[str, _State | None], dict[str, int]]] = {}
#: lexer classes whose states are joined at their first token (``join_early``)
_EARLY: set[type] = set()
#: lexer classes whose instances ``speed_up`` gave this module's loops (``tokens``, ``context_tokens``)
_LOOPED: set[type] = set()


def join_early(lexer: Lexer) -> None:
    """Join each state of ``lexer``'s class at its first token from now on, not after ``JOIN_AFTER``:
    for a process that will lex many blocks in its language (a full build), where the tokens matched
    rule by rule before the join cost more than the join (~0.05 CPU-s of the bench corpus's 3,000
    blocks); made before the render workers fork, the joined states are made once. The lexers its
    own loop lexes with (a Makefile's lines, a shell session's commands) and those its ``using``
    rules call (``_using``) lex its blocks too: theirs join early as well (a Makefile's inner lexer
    had matched 3.9 rules a token, one by one)."""
    _EARLY.add(type(lexer))
    for inner in (_session_inner(lexer), _make_base(lexer)):
        if inner is not None:
            _EARLY.add(type(inner))


def _renumbered(src: str, outer: int, groups: int) -> str | None:
    """``src`` with its backreferences ``\\N`` moved past ``outer`` (its groups follow that one in the
    joined pattern); None where that cannot be written (inside a class, conditionals, past 99)."""
    out: list[str] = []
    last = 0
    in_class = False
    for m in _PIECE.finditer(src):
        piece = m.group(0)
        if piece == "[":
            in_class = True
        elif piece == "]":
            in_class = False
        elif piece == "(?(":
            return None
        elif m.group(1):
            n = int(m.group(1))
            if in_class or n > groups or outer + n > 99:  # "\100" would be an octal escape
                return None
            out += (src[last : m.start()], f"\\{outer + n}")
            last = m.end()
    out.append(src[last:])
    return "".join(out)


def _join(rules: list[Rule]) -> Joined | None:
    source = _source(rules)
    if source is None:
        return None
    try:
        return re.compile(source[0], source[1]).match, source[2]
    except re.error:
        return None


def _joinable(rules: list[Rule]) -> bool:
    """Whether the rules can be joined: what ``_join`` checks before it compiles, and no group name
    twice (the one error compiling the alternation of patterns that compile alone can meet)."""
    if _source(rules) is None:
        return False
    names = [name for match, _a, _n in rules for name in match.__self__.groupindex]  # type: ignore[attr-defined]
    return len(names) == len(set(names))


def _source(rules: list[Rule]) -> tuple[str, int, dict[int, int]] | None:
    """The alternation of the rules, its flags and, by group number, the rule each group wraps (None
    where they cannot share one expression)."""
    parts: list[str] = []
    index: dict[int, int] = {}
    flags: set[int] = set()
    empty = 0
    group = 0
    for i, (match, _action, _new_state) in enumerate(rules):
        pattern = getattr(match, "__self__", None)
        if not isinstance(pattern, (re.Pattern, _Lazy)):
            return None
        src, own = pattern.pattern, pattern.flags
        lead = _LEADING.match(src)
        if lead:  # "(?i)x" as "(?i:x)": global flags must start the whole pattern
            for c in lead.group(1):
                own &= ~_FLAGS[c]
            src = f"(?{lead.group(1)}:{src[lead.end() :]})"
        if own & re.X:
            return None  # a comment in the pattern would swallow the closing parenthesis
        if src:  # an empty pattern (Pygments' ``default(state)``, compiled without the lexer's flags)
            flags.add(own)  # matches the empty string under any flags
        else:
            empty = own
        group += 1
        index[group] = i
        renumbered = _renumbered(src, group, pattern.groups)
        if renumbered is None:
            return None
        parts.append(f"({renumbered})")
        group += pattern.groups
    if len(flags) > 1:
        return None
    return "|".join(parts), flags.pop() if flags else empty, index


def _joined(lexer: RegexLexer) -> tuple[dict[str, _State | None], dict[str, int]]:
    cls = type(lexer)
    got = _JOINED.get(cls)
    if got is None:
        got = _JOINED[cls] = ({}, {})
    return got


def supports(lexer: Lexer) -> bool:
    """Whether ``lexer`` runs the plain ``RegexLexer`` loop, or ``ExtendedRegexLexer``'s, or one of
    the loops of Pygments' own around the first that ``speed_up`` knows (``_c_types``,
    ``_session_inner``); other lexers have loops of their own."""
    if isinstance(lexer, ExtendedRegexLexer):
        return _context(lexer) is not None
    if _c_types(lexer) is not None:
        return True
    if _session_inner(lexer) is not None or _make_base(lexer) is not None:
        return True
    return isinstance(lexer, RegexLexer) and (
        type(lexer).get_tokens_unprocessed is RegexLexer.get_tokens_unprocessed
    )


def _pygments_class(lexer: Lexer, module: str, name: str) -> Any:
    """The class ``module.name`` of Pygments where ``lexer``'s class has that one's
    ``get_tokens_unprocessed`` (without importing the module: a lexer of it was made)."""
    klass: Any
    for klass in type(lexer).__mro__:
        if klass.__name__ == name and klass.__module__ == module:
            return klass if type(lexer).get_tokens_unprocessed is klass.get_tokens_unprocessed else None
    return None


def _c_types(lexer: Lexer) -> frozenset[str] | None:
    """For a lexer that runs Pygments' C family loop (C, C++...: the ``RegexLexer`` loop, then each
    ``Name`` that is one of the type names its options highlight becomes ``Keyword.Type``), those
    names; else None."""
    klass = _pygments_class(lexer, "pygments.lexers.c_cpp", "CFamilyLexer")
    if klass is None:
        return None
    names: set[str] = set()
    for flag, attr in (
        ("stdlibhighlighting", "stdlib_types"),
        ("c99highlighting", "c99_types"),
        ("c11highlighting", "c11_atomic_types"),
        ("platformhighlighting", "linux_types"),
    ):
        if getattr(lexer, flag):
            names.update(getattr(lexer, attr))
    return frozenset(names)


def _make_base(lexer: Lexer) -> Lexer | None:
    """For a Makefile lexer (its loop sets the special and comment lines apart, then lexes the rest
    with a new ``BaseMakefileLexer``, a ``RegexLexer``), such an inner lexer; else None."""
    klass = _pygments_class(lexer, "pygments.lexers.make", "MakefileLexer")
    if klass is None:
        return None
    inner = klass.get_tokens_unprocessed.__globals__["BaseMakefileLexer"](**lexer.options)
    return inner if supports(inner) else None


def _session_inner(lexer: Lexer) -> Lexer | None:
    """For a shell session lexer (``console``: prompts, then the commands lexed by an inner lexer,
    a new one each block) whose inner lexer ``speed_up`` takes, that inner lexer; else None."""
    klass = _pygments_class(lexer, "pygments.lexers.shell", "ShellSessionBaseLexer")
    if klass is None:
        return None
    inner = lexer._innerLexerCls(**lexer.options)  # type: ignore[attr-defined]
    return inner if supports(inner) else None


def _context(lexer: ExtendedRegexLexer) -> Any:
    """The context class ``lexer``'s own ``get_tokens_unprocessed`` starts ``ExtendedRegexLexer``'s
    loop with (a ``LexerContext`` class): Pygments' plain one, or YAML's (whose method only makes its
    context first); None for a lexer whose method does more."""
    method = type(lexer).get_tokens_unprocessed
    if method is ExtendedRegexLexer.get_tokens_unprocessed:
        return LexerContext
    if type(lexer).__module__ == "pygments.lexers.data":
        from pygments.lexers.data import YamlLexer, YamlLexerContext

        if method is YamlLexer.get_tokens_unprocessed:
            return YamlLexerContext
    return None


def speed_up(lexer: Lexer) -> Lexer:
    """``lexer``, finding its tokens with ``tokens`` (``context_tokens``) where it runs the plain
    ``RegexLexer`` (``ExtendedRegexLexer``) loop; its ``get_tokens`` (input clean-up, filters) stays
    Pygments'."""
    if not supports(lexer):
        return lexer
    inner = _session_inner(lexer)
    if inner is not None:  # its loop makes the inner lexer from this attribute: one, sped up
        fast = speed_up(inner)
        lexer._innerLexerCls = lambda **_options: fast  # type: ignore[attr-defined]
        return lexer
    base = _make_base(lexer)
    if base is not None:  # its own loop, run with its global inner lexer class making this one
        fast_base = speed_up(base)
        own = type(lexer).get_tokens_unprocessed
        names = {**own.__globals__, "BaseMakefileLexer": lambda **_options: fast_base}
        loop = types.FunctionType(own.__code__, names, own.__name__, own.__defaults__, own.__closure__)
        lexer.get_tokens_unprocessed = types.MethodType(loop, lexer)  # type: ignore[method-assign]
        return lexer
    if isinstance(lexer, ExtendedRegexLexer):
        extended = lexer
        make = _context(lexer)
        assert make is not None

        def in_context(
            text: str | None = None, context: LexerContext | None = None
        ) -> Iterator[tuple[int, Any, str]]:
            ctx = context if context is not None else make(text, 0)
            if ctx.end != len(ctx.text):  # a context ending early (not the site's): Pygments' loop
                return iter(ExtendedRegexLexer.get_tokens_unprocessed(extended, ctx.text, ctx))
            return context_tokens(extended, ctx)

        lexer.get_tokens_unprocessed = in_context  # type: ignore[method-assign]
        _LOOPED.add(type(lexer))
        return lexer
    regex_lexer: RegexLexer = lexer  # type: ignore[assignment]
    type_names = _c_types(lexer)
    if type_names is not None:

        def retyped(text: str, stack: tuple[str, ...] = ("root",)) -> Iterator[tuple[int, Any, str]]:
            for index, token, value in tokens(regex_lexer, text, stack):
                yield index, Keyword.Type if token is Name and value in type_names else token, value

        lexer.get_tokens_unprocessed = retyped  # type: ignore[method-assign]
        _LOOPED.add(type(lexer))
        return lexer

    def unprocessed(text: str, stack: tuple[str, ...] = ("root",)) -> Iterator[tuple[int, Any, str]]:
        return tokens(regex_lexer, text, stack)

    lexer.get_tokens_unprocessed = unprocessed  # type: ignore[method-assign]
    _LOOPED.add(type(lexer))
    return lexer


def _move(stack: list[str], new_state: Any) -> None:
    """Apply a rule's new state to the state stack."""
    if isinstance(new_state, tuple):
        for state in new_state:
            if state == "#pop":
                if len(stack) > 1:
                    stack.pop()
            elif state == "#push":
                stack.append(stack[-1])
            else:
                stack.append(state)
    elif isinstance(new_state, int):  # pop that many (a negative number), the first state stays
        del stack[new_state if abs(new_state) < len(stack) else 1 :]
    elif new_state == "#push":
        stack.append(stack[-1])
    else:
        raise AssertionError(f"wrong state definition: {new_state!r}")


def tokens(
    lexer: RegexLexer, text: str, stack: tuple[str, ...] = ("root",)
) -> Iterator[tuple[int, Any, str]]:
    """What ``RegexLexer.get_tokens_unprocessed(lexer, text, stack)`` yields: (offset, type, text)."""
    tokendefs: dict[str, list[Rule]] = lexer._tokens  # type: ignore[attr-defined]
    joined, uses = _joined(lexer)
    early = type(lexer) in _EARLY
    join_after = 1 if early else JOIN_AFTER
    states = list(stack)
    state = states[-1]
    rules = tokendefs[state]
    one = joined.get(state)
    pos = 0
    end = len(text)
    while True:
        m = None
        groups = None
        base = 0
        if one is not None:
            c = text[pos : pos + 1]
            here = one.by_char.get(c) or one.at(c)
            m = here[0](text, pos)
            if m is not None:
                match, action, new_state = rules[here[1][m.lastindex]]
                if action is not None and type(action) is not _TokenType:
                    groups = _GROUPS[action] if action in _GROUPS else _groups(action)
                    if groups is None:
                        m = match(text, pos)  # the callback reads the rule's own groups
                    else:
                        base = m.lastindex  # the rule's groups follow its own in the alternation
        else:
            if early and state not in joined:  # joined before its first token: no rule compiled alone
                one = joined[state] = _decided(rules)
                if one is not None:
                    continue
            for rule in rules:
                m = rule[0](text, pos)
                if m is not None:
                    _match, action, new_state = rule
                    if action is not None and type(action) is not _TokenType:
                        groups = _GROUPS[action] if action in _GROUPS else _groups(action)
                        base = 0
                    break
            if m is not None and state not in joined:
                n = uses[state] = uses.get(state, 0) + 1
                if n >= join_after:
                    one = joined[state] = _decided(rules)
        if m is not None:
            if action is not None:
                if type(action) is _TokenType:
                    yield pos, action, m.group()
                elif groups is not None:  # what the ``bygroups`` callback yields
                    for group, ttype in groups:
                        data = m.group(base + group)
                        if data:
                            yield m.start(base + group), ttype, data
                else:
                    yield from _CALLBACK[action](lexer, m)
            pos = m.end()
            if new_state is not None:
                _move(states, new_state)
                state = states[-1]
                rules = tokendefs[state]
                one = joined.get(state)
        elif pos >= end:
            return
        elif text[pos] == "\n":  # no rule matched at a line's end: back to the root state
            states = ["root"]
            state = "root"
            rules = tokendefs[state]
            one = joined.get(state)
            yield pos, Whitespace, "\n"
            pos += 1
        else:
            yield pos, Error, text[pos]
            pos += 1


def context_tokens(lexer: ExtendedRegexLexer, ctx: LexerContext) -> Iterator[tuple[int, Any, str]]:
    """What ``ExtendedRegexLexer.get_tokens_unprocessed(lexer, context=ctx)`` yields, for a context
    that ends at its text's end. Its loop differs from ``RegexLexer``'s (``tokens``): the position and
    the state stack are the context's, which a callback moves (``callback(lexer, match, ctx)``; after
    one without a new state, the state is read again from the stack); a rule without an action does
    not move the position; where no rule matches at a newline, it is a ``Text`` token.

    Its matching step (joined state or rule by rule, then the action's groups) is ``tokens``' own,
    written out again rather than shared, so that neither hot loop pays a function call per token."""
    tokendefs: dict[str, list[Rule]] = lexer._tokens  # type: ignore[attr-defined]
    joined, uses = _joined(lexer)
    early = type(lexer) in _EARLY
    join_after = 1 if early else JOIN_AFTER
    text = ctx.text
    end = ctx.end
    state = ctx.stack[-1]
    rules = tokendefs[state]
    one = joined.get(state)
    while True:
        pos = ctx.pos
        m = None
        groups = None
        base = 0
        if one is not None:
            c = text[pos : pos + 1]
            here = one.by_char.get(c) or one.at(c)
            m = here[0](text, pos)
            if m is not None:
                match, action, new_state = rules[here[1][m.lastindex]]
                if action is not None and type(action) is not _TokenType:
                    groups = _GROUPS[action] if action in _GROUPS else _groups(action)
                    if groups is None:
                        m = match(text, pos)  # the callback reads the rule's own groups
                    else:
                        base = m.lastindex  # the rule's groups follow its own in the alternation
        else:
            if early and state not in joined:  # joined before its first token: no rule compiled alone
                one = joined[state] = _decided(rules)
                if one is not None:
                    continue
            for rule in rules:
                m = rule[0](text, pos)
                if m is not None:
                    _match, action, new_state = rule
                    if action is not None and type(action) is not _TokenType:
                        groups = _GROUPS[action] if action in _GROUPS else _groups(action)
                        base = 0
                    break
            if m is not None and state not in joined:
                n = uses[state] = uses.get(state, 0) + 1
                if n >= join_after:
                    one = joined[state] = _decided(rules)
        if m is not None:
            if action is not None:
                if type(action) is _TokenType:
                    yield pos, action, m.group()
                    ctx.pos = m.end()
                elif groups is not None:  # what the ``bygroups`` callback yields
                    for group, ttype in groups:
                        data = m.group(base + group)
                        if data:
                            yield m.start(base + group), ttype, data
                    ctx.pos = m.end()
                else:
                    yield from _CALLBACK[action](lexer, m, ctx)
                    if not new_state:  # the callback may have moved the stack
                        state = ctx.stack[-1]
                        rules = tokendefs[state]
                        one = joined.get(state)
            if new_state is not None:
                _move(ctx.stack, new_state)
                state = ctx.stack[-1]
                rules = tokendefs[state]
                one = joined.get(state)
        elif pos >= end:
            return
        elif text[pos] == "\n":  # no rule matched at a line's end: back to the root state
            ctx.stack = ["root"]
            state = "root"
            rules = tokendefs[state]
            one = joined.get(state)
            yield pos, Text, "\n"
            ctx.pos = pos + 1
        else:
            yield pos, Error, text[pos]
            ctx.pos = pos + 1
