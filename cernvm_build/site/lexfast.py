"""Pygments' ``RegexLexer`` tokens, with each lexer state's rules tried by one regular expression.

Pygments tries a state's rules one by one at each position (``rule.match(text, pos)``), so a token
costs a Python-level call for every rule that fails before one matches: ~30 in Python code, where
highlighting was a fifth of a page's build. Here a state's rules are joined into one alternation
``(rule0)|(rule1)|…``, which the regex engine tries in the same order; the match's ``lastindex`` (the
outermost group, closed last) says which rule it is. An alternation takes the first alternative that
matches at the position, with the match that alternative makes on its own (nothing follows it), so the
rule, its text and its end are the ones Pygments finds. A rule whose action is a callback
(``bygroups``, ``using``) is matched again with its own pattern, for its own group numbers.

Around the match, the lexer's state machine is Pygments' own, as its ``RegexLexer`` documents it: an
action that is a token type yields the matched text, a callback yields its tokens; the new state
pushes states (``'#push'`` the current one again, ``'#pop'`` pops one, never the last), or an integer
pops that many; where no rule matches, a newline yields a ``Whitespace`` token and resets the stack to
``root``, any other character yields an ``Error`` token. tests/site/test_site_lexfast.py compares the
tokens with Pygments' for the site's languages and a set of others, on the shipped pages' code blocks
and odd input.

A state is joined once the process has matched ``JOIN_AFTER`` tokens in it rule by rule (joining
compiles its patterns again, which only pays off over many tokens), and stays rule by rule where its
patterns cannot share one expression: different flags, verbose patterns, a backreference the joined
numbering cannot express (in a class, a conditional, past group 99), or an alternation that does not
compile.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from pygments.lexer import Lexer, RegexLexer
from pygments.token import Error, Whitespace, _TokenType

#: a rule's flags set at its start (``(?i)…``), kept for that rule only in the joined pattern
_LEADING = re.compile(r"\(\?([imsx]+)\)")
_FLAGS = {"i": re.I, "m": re.M, "s": re.S, "x": re.X}
#: what renumbering a rule's backreferences looks at: escapes (``\2``), class brackets, conditionals
_PIECE = re.compile(r"\\(?:([1-9][0-9]?)|.)|\[|\]|\(\?\(", re.S)

#: a compiled rule: (its pattern's ``match``, token type or callback or None, new state or None)
Rule = tuple[Callable[[str, int], Any], Any, Any]
#: a state's joined ``match`` and, by group number, the index of the rule that group wraps
Joined = tuple[Callable[[str, int], Any], dict[int, int]]

#: a state's rules are joined once this process matched this many tokens in it rule by rule: joining
#: compiles the rules again (~25 ms for Python's "root", ~1.5 us saved a token), which a one-page
#: rebuild's few blocks would not win back
JOIN_AFTER = 5000

#: by lexer class: the states decided (joined, or None: left rule by rule), and the tokens matched
#: rule by rule in each state not decided yet
_JOINED: dict[type, tuple[dict[str, Joined | None], dict[str, int]]] = {}


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
    parts: list[str] = []
    index: dict[int, int] = {}
    flags: set[int] = set()
    group = 0
    for i, (match, _action, _new_state) in enumerate(rules):
        pattern = getattr(match, "__self__", None)
        if not isinstance(pattern, re.Pattern):
            return None
        src, own = pattern.pattern, pattern.flags
        lead = _LEADING.match(src)
        if lead:  # "(?i)x" as "(?i:x)": global flags must start the whole pattern
            for c in lead.group(1):
                own &= ~_FLAGS[c]
            src = f"(?{lead.group(1)}:{src[lead.end() :]})"
        if own & re.X:
            return None  # a comment in the pattern would swallow the closing parenthesis
        flags.add(own)
        group += 1
        index[group] = i
        renumbered = _renumbered(src, group, pattern.groups)
        if renumbered is None:
            return None
        parts.append(f"({renumbered})")
        group += pattern.groups
    if len(flags) != 1:
        return None
    try:
        return re.compile("|".join(parts), flags.pop()).match, index
    except re.error:
        return None


def _joined(lexer: RegexLexer) -> tuple[dict[str, Joined | None], dict[str, int]]:
    cls = type(lexer)
    got = _JOINED.get(cls)
    if got is None:
        got = _JOINED[cls] = ({}, {})
    return got


def supports(lexer: Lexer) -> bool:
    """Whether ``lexer`` runs the plain ``RegexLexer`` loop (other lexers have loops of their own)."""
    return isinstance(lexer, RegexLexer) and (
        type(lexer).get_tokens_unprocessed is RegexLexer.get_tokens_unprocessed
    )


def speed_up(lexer: Lexer) -> Lexer:
    """``lexer``, finding its tokens with ``tokens`` where it runs the plain ``RegexLexer`` loop; its
    ``get_tokens`` (input clean-up, filters) stays Pygments'."""
    if supports(lexer):
        regex_lexer: RegexLexer = lexer  # type: ignore[assignment]

        def unprocessed(text: str, stack: tuple[str, ...] = ("root",)) -> Iterator[tuple[int, Any, str]]:
            return tokens(regex_lexer, text, stack)

        lexer.get_tokens_unprocessed = unprocessed  # type: ignore[method-assign]
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
    states = list(stack)
    state = states[-1]
    rules = tokendefs[state]
    one = joined.get(state)
    pos = 0
    end = len(text)
    while True:
        m = None
        if one is not None:
            m = one[0](text, pos)
            if m is not None:
                match, action, new_state = rules[one[1][m.lastindex]]
                if action is not None and type(action) is not _TokenType:
                    m = match(text, pos)  # the callback reads the rule's own groups
        else:
            for rule in rules:
                m = rule[0](text, pos)
                if m is not None:
                    _match, action, new_state = rule
                    break
            if m is not None and state not in joined:
                n = uses[state] = uses.get(state, 0) + 1
                if n >= JOIN_AFTER:
                    one = joined[state] = _join(rules)
        if m is not None:
            if action is not None:
                if type(action) is _TokenType:
                    yield pos, action, m.group()
                else:
                    yield from action(lexer, m)
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
