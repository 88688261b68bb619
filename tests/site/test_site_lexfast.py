"""lexfast: the tokens of Pygments' RegexLexer loop with each state's rules joined into one regex."""

from __future__ import annotations

import contextlib
import gc
import itertools
import random
import re
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pygments.lexer import ExtendedRegexLexer, RegexLexer, bygroups, using
from pygments.lexers import get_lexer_by_name
from pygments.lexers.shell import BashLexer
from pygments.token import Generic, Keyword, Name, String, Text

from bench.site_corpus import CODE, MORE_CODE
from cernvm_build.paths import data_dir
from cernvm_build.site import lexfast, refirst
from cernvm_build.site import markdown as md_mod
from cernvm_build.site.refirst import first_chars

#: the site's languages and others whose rules have what joining must keep: leading flags (Python's
#: "(?i)" prefixes), numbered backreferences (bash heredocs, Perl's quote operators past group 99),
#: callbacks (bygroups, using), states left rule by rule
LANGUAGES = (
    *("python", "bash", "sh", "ini", "toml", "perl", "rust", "javascript", "html", "nginx", "diff", "sql"),
)
ODD = (
    "",
    "\n",
    "a\rb\n\n\tx = 'unterminated\n\"q\\\n",
    "\x00\x01 ``` }}} {{{ <<< >>> $(( ${x:-y} `cmd`",
    "#!/bin/sh\ncat <<EOF\nhi $USER\nEOF\necho q{a} qq(b) m/x/ s/a/b/g\n",
    'f"{x!r:>{w}}" rb"""\\d""" @dec\ndef f(*a, **k) -> None: ...\n',
    "ünïcödé = 'ß' # — “quotes”\n",
)


def _samples() -> list[str]:
    texts = list(ODD) + [code.format(n=7) for code in CODE.values()]
    fence = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
    for path in sorted((data_dir("site") / "content").rglob("*.md")):
        texts += fence.findall(path.read_text(encoding="utf-8"))
    rng = random.Random(5)
    pieces = "".join(texts)
    texts += ["".join(rng.choice(pieces) for _ in range(200)) for _ in range(10)]  # shuffled characters
    return texts


@pytest.fixture
def join_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # every state joined from its first token (a build joins only states it matched many tokens in)
    monkeypatch.setattr(lexfast, "JOIN_AFTER", 1)
    monkeypatch.setattr(lexfast, "_JOINED", {})


@pytest.mark.parametrize("lang", LANGUAGES)
def test_tokens_are_pygments_own(lang: str, join_at_once: None) -> None:
    lexer = get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    assert lexfast.supports(lexer)
    for text in _samples():
        assert list(lexfast.tokens(lexer, text)) == list(RegexLexer.get_tokens_unprocessed(lexer, text)), text
    joined, _uses = lexfast._JOINED[type(lexer)]
    assert any(j is not None for j in joined.values())  # the joined path ran, not only the loop
    # and so did the alternations of only the rules a position's character can start
    assert any(j is not None and j.by_rules for j in joined.values())
    if lang in ("python", "bash"):
        root = joined["root"]
        assert root is not None and root.by_rules


#: ``ExtendedRegexLexer``s (their loop keeps position and stack in a context its callbacks move): the
#: site's YAML (callbacks keeping indentation), Ruby (heredocs), Terraform, Sass
EXTENDED = ("yaml", "ruby", "terraform", "sass")
YAML_ODD = (
    "a: |\n  x\n\n   y\n b\n",
    "a: >-\n    folded\n  less\nb: |2+\n   keep\n\n",
    "- - a\n  - b: [1, {c: d, 'e': \"f\\n\"}]\n? k\n: v\n--- !tag &a *b\n...\n%YAML 1.2\n%TAG ! x\n",
    "\t\x00é: 'x\n  # c\nk:   v # c\n   bad\n",
)


@pytest.mark.parametrize("lang", EXTENDED)
@pytest.mark.parametrize("join_after", [1, 10**9])
def test_extended_lexers_tokens_are_pygments_own(
    lang: str, join_after: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lexfast, "JOIN_AFTER", join_after)
    monkeypatch.setattr(lexfast, "_JOINED", {})
    ours = lexfast.speed_up(get_lexer_by_name(lang, stripnl=False, ensurenl=False))
    theirs = get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    assert lexfast.supports(theirs) and ours.get_tokens_unprocessed.__qualname__.startswith("speed_up")
    for text in [*_samples(), *YAML_ODD]:
        assert list(ours.get_tokens_unprocessed(text)) == list(theirs.get_tokens_unprocessed(text)), text
    joined, _uses = lexfast._JOINED[type(theirs)]
    # joined from the first token, or never (rule by rule): both loops ran
    assert any(j is not None for j in joined.values()) == (join_after == 1)
    # a context that ends before its text's end: Pygments' loop
    text = "a: 1\nb: [2]\n"
    make = lexfast._context(theirs)  # (YAML's keeps the indentation too)
    early = list(ours.get_tokens_unprocessed(context=make(text, 0, end=6)))
    assert early == list(theirs.get_tokens_unprocessed(context=make(text, 0, end=6))) and early


#: lexers whose own loops wrap the ``RegexLexer`` loop (C family: names of types retyped; shell
#: sessions: the commands lexed by an inner Bash lexer) or that call another lexer (``using``:
#: Dockerfile's shell lines, HTML's scripts)
WRAPPED = ("c", "cpp", "console", "make", "dockerfile", "html")
C_TYPES = "size_t n; int32_t x; pid_t y; atomic_int z; FILE *f; bool b; _Bool c; my_t d;\n"
MAKEFILE = ".PHONY: all\n# c\nall: a.o \\\n\tb.o\n\t$(CC) -o $@ $^ # x\nifeq ($(X),1)\nY ?= 2\nendif\n"
SESSION = "$ echo a \\\n> b\nout\n(venv) $ ls\n# id -u\n0\n"


@pytest.mark.parametrize("lang", WRAPPED)
@pytest.mark.parametrize("join_after", [1, 10**9])
def test_wrapped_lexers_tokens_are_pygments_own(
    lang: str, join_after: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lexfast, "JOIN_AFTER", join_after)
    monkeypatch.setattr(lexfast, "_JOINED", {})
    ours = lexfast.speed_up(get_lexer_by_name(lang, stripnl=False, ensurenl=False))
    theirs = get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    assert lexfast.supports(theirs)
    more = [code.replace("{n}", "3") for code in MORE_CODE.values()]
    texts = [*_samples(), *more, C_TYPES, SESSION, MAKEFILE]
    for text in texts:
        assert list(ours.get_tokens_unprocessed(text)) == list(theirs.get_tokens_unprocessed(text)), text


def test_c_type_names_are_retyped_as_pygments_does() -> None:
    ours = lexfast.speed_up(get_lexer_by_name("c", stripnl=False, ensurenl=False))
    assert ours.get_tokens_unprocessed.__qualname__.startswith("speed_up")
    kinds = {v: t for _i, t, v in ours.get_tokens_unprocessed(C_TYPES)}
    assert kinds["size_t"] is kinds["int32_t"] is kinds["pid_t"] is kinds["atomic_int"] is Keyword.Type
    assert kinds["my_t"] is Name
    plain = lexfast.speed_up(get_lexer_by_name("c", stdlibhighlighting=False, c99highlighting=False))
    assert {v: t for _i, t, v in plain.get_tokens_unprocessed(C_TYPES)}["size_t"] is Name


def test_a_shell_session_lexes_its_commands_with_one_sped_up_lexer() -> None:
    ours = lexfast.speed_up(get_lexer_by_name("console", stripnl=False, ensurenl=False))
    inner = ours._innerLexerCls(**ours.options)
    assert inner is ours._innerLexerCls() and inner.get_tokens_unprocessed.__qualname__.startswith("speed_up")
    assert any(t is Generic.Prompt for _i, t, _v in ours.get_tokens_unprocessed(SESSION))


def test_a_makefile_is_lexed_by_its_own_loop_with_one_sped_up_inner_lexer() -> None:
    ours = lexfast.speed_up(get_lexer_by_name("make", stripnl=False, ensurenl=False))
    inner = ours.get_tokens_unprocessed.__func__.__globals__["BaseMakefileLexer"]()
    assert inner is ours.get_tokens_unprocessed.__func__.__globals__["BaseMakefileLexer"]()
    assert inner.get_tokens_unprocessed.__qualname__.startswith("speed_up")
    assert list(ours.get_tokens_unprocessed(MAKEFILE))  # (its tokens: the test above)


def test_using_another_lexer_keeps_one_sped_up_instance_per_lexer() -> None:
    docker = get_lexer_by_name("dockerfile", stripnl=False, ensurenl=False)
    calls = [a for rules in docker._tokens.values() for _m, a, _n in rules if callable(a)]
    used = [a for a in calls if lexfast._groups(a) is None and lexfast._CALLBACK[a] is not a]
    assert used  # Dockerfile's shell lines: ``using(BashLexer)``, replaced
    made = []
    real = lexfast.speed_up
    try:
        lexfast.speed_up = lambda lx: made.append(lx) or real(lx)  # type: ignore[assignment]
        lexer = lexfast.speed_up(get_lexer_by_name("dockerfile", stripnl=False, ensurenl=False))
        made.clear()
        list(lexer.get_tokens_unprocessed("RUN a\nRUN b\nCMD c\n"))
    finally:
        lexfast.speed_up = real  # type: ignore[assignment]
    assert len(made) <= 1  # one Bash lexer for the three lines (none: made for this lexer before)
    gone = weakref.ref(lexer)  # (review r10c, 4) and it is not kept alive by its Bash lexer's cache
    del lexer
    gc.collect()
    assert gone() is None
    # a ``using`` of a lexer with a loop of its own: Pygments' callback, a new instance each match
    from pygments.lexers.data import JsonLexer

    class Wrap(RegexLexer):
        tokens: ClassVar = {"root": [(r"[^\n]+", using(JsonLexer)), (r"\n", Text)]}

    text = '{"a": 1}\n[2]\n'
    ours = lexfast.speed_up(Wrap()).get_tokens_unprocessed(text)
    assert list(ours) == list(Wrap().get_tokens_unprocessed(text))
    # from an ``ExtendedRegexLexer``'s loop: the callback moves the context's position past the match

    class Extended(ExtendedRegexLexer):
        tokens: ClassVar = {"root": [(r"[^\n]+", using(BashLexer)), (r"\n", Text)]}

    text = "echo $A\nls -l\n"
    ours = itertools.islice(lexfast.speed_up(Extended()).get_tokens_unprocessed(text), 50)
    assert list(ours) == list(Extended().get_tokens_unprocessed(text))


def test_a_group_lexed_by_another_lexer_uses_one_sped_up_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bygroups(Keyword, Whitespace, using(BashLexer))`` (Dockerfile's ENV, LABEL, ARG, ONBUILD,
    HEALTHCHECK and CMD lines): Pygments' callback made a Bash lexer per line and tried its rules one by
    one; here the group goes to ``_using``'s one sped-up instance, with Pygments' tokens."""
    text = 'ENV A=1\nLABEL b=2 \\\n  c=3\nARG d\nONBUILD RUN x\nCMD ["a", "b"]\nHEALTHCHECK --i=5 CMD y\n'
    theirs = list(
        get_lexer_by_name("dockerfile", stripnl=False, ensurenl=False).get_tokens_unprocessed(text * 3)
    )
    lexer = lexfast.speed_up(get_lexer_by_name("dockerfile", stripnl=False, ensurenl=False))
    made: list[object] = []
    init = BashLexer.__init__
    monkeypatch.setattr(
        BashLexer, "__init__", lambda self, **options: made.append(self) or init(self, **options)
    )
    assert list(lexer.get_tokens_unprocessed(text * 3)) == theirs
    assert len(made) <= 5  # one per rule (each ``using`` keeps its own), not one per line (18 here)
    # from an ``ExtendedRegexLexer``'s loop too: Pygments' ``bygroups`` moves the context's position
    # to each group before its callback and past the match after

    class Extended(ExtendedRegexLexer):
        tokens: ClassVar = {
            "root": [
                (r"(run)( +)([^\n]*)", bygroups(Keyword, Text, using(BashLexer, state="math"))),
                (r"(env)( +)([^\n]*)", bygroups(Keyword, Text, using(BashLexer)), "after"),
                (r"\n", Text),
            ],
            "after": [(r"\n", Text, "#pop")],
        }

    extended = "run 1 + $x\nenv A=1 b\nrun\nenv \n"
    ours = list(itertools.islice(lexfast.speed_up(Extended()).get_tokens_unprocessed(extended), 100))
    assert ours == list(Extended().get_tokens_unprocessed(extended))
    assert any(t is Keyword for _i, t, _v in ours)


def _headed(lexer: Any, match: Any, ctx: Any = None) -> Iterator[tuple[int, Any, str]]:
    yield match.start(), Name.Label, match.group(2)  # a callback of its own: its rule's group numbers
    if ctx:
        ctx.pos = match.end()


@pytest.mark.parametrize("base", [RegexLexer, ExtendedRegexLexer])
def test_callbacks_among_nested_states_give_pygments_tokens(base: type, join_at_once: None) -> None:
    """Callbacks in joined states (``bygroups`` with ``using`` groups, ``using(this)`` with a state,
    ``using(OtherLexer)``, a callback of its own reading its rule's group numbers) among nested
    states, pops, pushes and empty matches (``default``): Pygments' tokens, joined or not."""
    from pygments.lexer import default, this

    # (``using(this, state=...)`` is for ``RegexLexer``s only)
    this_name = using(this, state="name") if base is RegexLexer else Name.Function
    this_ys = using(this, state="ys") if base is RegexLexer else using(this)

    class Lexer(base):  # type: ignore[misc,valid-type]
        tokens: ClassVar = {
            "root": [
                (r"(def)( +)(\w*)( *)(\()", bygroups(Keyword, Text, this_name, Text, Text), "args"),
                (r"(run)( +)([^\n]*)", bygroups(Keyword, Text, using(BashLexer))),
                (r"(x)(y+)?", bygroups(Name, this_ys)),
                (r"(#)(\w+)", _headed),
                (r"=[^\n]*", using(BashLexer)),
                (r"[^\n]", Text),
                (r"\n", Text),
            ],
            "name": [(r"\w+", Name.Function, "#pop"), default("#pop")],
            "ys": [(r"y", Name.Other)],
            "args": [(r"\)", Text, "#pop"), (r"[a-z]+", Name.Variable), (r",", Text, "#push"), (r" ", Text)],
        }

    text = "def f(a, b)\ndef (c)\nrun echo $A\nxyy x #top #\n= ls -l\n@@ def g(\n"
    lexer = Lexer()
    theirs = list(itertools.islice(Lexer().get_tokens_unprocessed(text), 200))
    ours = lexfast.speed_up(lexer)
    for _joined in range(2):  # the states are joined at their first token (``join_at_once``)
        assert list(itertools.islice(ours.get_tokens_unprocessed(text), 200)) == theirs
    assert any(t is Name.Label for _i, t, _v in theirs)  # (the own callback's token)


def test_an_empty_rule_joins_whatever_its_flags() -> None:
    rust = get_lexer_by_name("rust")
    flags = {m.__self__.flags for m, _a, _n in rust._tokens["root"]}
    assert len(flags) > 1 and lexfast._joinable(rust._tokens["root"])  # ``default`` rules compile with none


def test_bygroups_of_token_types_are_read_from_the_match() -> None:
    assert lexfast._groups(bygroups(Name, None, String)) == ((1, Name), (3, String))
    assert lexfast._groups(bygroups(Name, using(RegexLexer))) is None  # a callback in it: Pygments'
    assert lexfast._groups(lambda lexer, m: iter(())) is None
    # and the site's lexers have such rules (tests above compare their tokens with Pygments')
    python = get_lexer_by_name("python")
    assert any(lexfast._groups(a) for rules in python._tokens.values() for _m, a, _n in rules if callable(a))


def test_states_are_joined_only_after_many_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexfast, "_JOINED", {})
    monkeypatch.setattr(lexfast, "JOIN_AFTER", 50)
    # a lexer an earlier test's early lexer lexes with (a Dockerfile's Bash) is marked to join at once
    monkeypatch.setattr(lexfast, "_EARLY", set())
    lexer = get_lexer_by_name("bash", stripnl=False, ensurenl=False)
    list(lexfast.tokens(lexer, "echo hi\n"))  # a handful of tokens: too few to pay for a join
    joined, uses = lexfast._JOINED[type(lexer)]
    assert "root" not in joined and 0 < uses["root"] < 50
    text = "export A=1 B=2 && echo $A $B | grep x\n" * 10
    assert list(lexfast.tokens(lexer, text)) == list(RegexLexer.get_tokens_unprocessed(lexer, text))
    assert joined["root"] is not None


def test_a_lexer_joined_early_joins_each_state_before_its_first_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lexfast, "_JOINED", {})
    monkeypatch.setattr(lexfast, "_EARLY", set())
    lexer = get_lexer_by_name("bash", stripnl=False, ensurenl=False)
    lexfast.join_early(lexer)
    text = "echo hi\n"
    assert list(lexfast.tokens(lexer, text)) == list(RegexLexer.get_tokens_unprocessed(lexer, text))
    joined, uses = lexfast._JOINED[type(lexer)]
    # no token matched rule by rule (which would compile each rule tried, ``lazy_rules``)
    assert joined["root"] is not None and "root" not in uses
    other = get_lexer_by_name("python", stripnl=False, ensurenl=False)
    list(lexfast.tokens(other, "x = 1\n"))  # another class: still after JOIN_AFTER tokens
    assert "root" not in lexfast._JOINED[type(other)][0]


@pytest.mark.parametrize(
    ("lang", "text", "inner"),
    [
        ("make", MAKEFILE, "BaseMakefileLexer"),  # its own loop's inner lexer
        ("console", SESSION, "BashLexer"),  # a shell session's commands
        ("dockerfile", "ENV A=1\nRUN echo $A\n", "BashLexer"),  # a ``using(BashLexer)`` rule
    ],
)
def test_the_lexers_an_early_lexer_lexes_with_join_early_too(
    lang: str, text: str, inner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lexfast, "_JOINED", {})
    monkeypatch.setattr(lexfast, "_EARLY", set())
    theirs = list(get_lexer_by_name(lang, stripnl=False, ensurenl=False).get_tokens_unprocessed(text))
    lexer = lexfast.speed_up(get_lexer_by_name(lang, stripnl=False, ensurenl=False))
    lexfast.join_early(lexer)
    assert list(lexer.get_tokens_unprocessed(text)) == theirs
    joined = {cls.__name__: states for cls, (states, _uses) in lexfast._JOINED.items()}
    assert joined[inner].get("root") is not None  # joined at its first token, not after JOIN_AFTER


def test_warming_joins_early_the_languages_of_many_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cernvm_build.site import sources

    monkeypatch.setattr(lexfast, "_EARLY", set())
    monkeypatch.setattr(sources, "MANY_BLOCKS", 2)
    a, b = tmp_path / "a.md", tmp_path / "b.md"
    a.write_text("```Python\nx = 1\n```\n\n```bash\necho\n```\n")  # a fence on the first line counts
    b.write_text("text\n\n  ~~~ python\ny = 2\n~~~\n")
    todo = [sources.Source(k, f.name, str(f), "/", "") for k, f in (("a", a), ("b", b))]
    sources.warm_highlighting(todo)
    early = {type(md_mod._lexer("python"))}
    assert set(lexfast._EARLY) == early


def test_highlighting_uses_it_and_keeps_pygments_html(monkeypatch: pytest.MonkeyPatch) -> None:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter

    lexer = md_mod._lexer("python")
    assert lexer is not None and lexer.get_tokens_unprocessed.__qualname__.startswith("speed_up")
    monkeypatch.setattr(lexfast, "JOIN_AFTER", 1)
    code = CODE["python"].format(n=3)
    plain = get_lexer_by_name("python", stripnl=False, ensurenl=False)
    assert list(lexer.get_tokens(code)) == list(plain.get_tokens(code))
    # the spans carry Pygments' own classes: its formatter's text, tag for tag
    ours = re.sub(r"<[^>]+>", "", md_mod._spans(lexer, code))
    theirs = re.sub(r"<[^>]+>", "", highlight(code, plain, HtmlFormatter(nowrap=True)))
    assert ours == theirs


@pytest.mark.parametrize("lang", ["python", "bash", "yaml", "html", "c"])
def test_a_block_escaped_at_once_is_the_runs_escaped_one_by_one(lang: str) -> None:
    """``_spans`` marks the runs and escapes the block in one pass: the same HTML as escaping each run
    (``_spans_escaped``, which code holding one of the marks gets)."""
    lexer = md_mod._lexer(lang)
    assert lexer is not None
    codes = [*_samples(), "a < b && c > d; echo '<x>' \"&amp;\"\n", 'if x<y:\n  print("&lt;")\n']
    for code in codes:
        got = md_mod._spans(lexer, code)
        assert got == md_mod._spans_escaped(lexer, code), code
        assert all((mark in got) == (mark in code) for mark in "\x00\x01\x02")
    marked = "x = '\x01<b>'\n"
    assert md_mod._spans(lexer, marked) == md_mod._spans_escaped(lexer, marked)
    got = md_mod._spans(lexer, marked)
    assert "\x01" in got and "<b>" not in got and "&lt;" in got


def test_the_render_workers_get_the_lexers_made_before_they_fork(tmp_path: Path) -> None:
    from cernvm_build.site import sources

    page = tmp_path / "a.md"
    page.write_text("# A\n\n```python\nx = 1\n```\n\n   ~~~ Bash extra\necho\n~~~\n\n```\nplain\n```\n")
    md_mod._lexer.cache_clear()
    sources.warm_highlighting([sources.Source("k", "a.md", str(page), "/", "")])
    made = md_mod._lexer.cache_info()
    assert made.currsize == 2  # python and bash, each once
    md_mod._lexer("python")
    md_mod._lexer("bash")
    assert md_mod._lexer.cache_info().hits == made.hits + 2


def test_a_rule_matches_only_where_its_first_characters_say(join_at_once: None) -> None:
    # every rule of the site's languages at every position of the samples: a match that starts with
    # an ASCII character is one of its first characters, an empty match only for a rule that has none
    texts = [*ODD, *(code.format(n=7) for code in CODE.values()), *_samples()[-4:]]
    checked = 0
    for lang in LANGUAGES:
        lexer = get_lexer_by_name(lang)
        for rules in lexer._tokens.values():
            for match, _action, _new in rules:
                pattern = match.__self__
                first = first_chars(pattern)
                if first is None:
                    continue
                checked += 1
                for text in texts:
                    for pos in range(len(text) + 1):  # the end too: where only empty matches can be
                        m = pattern.match(text, pos)
                        if m is not None:
                            assert m.end() > pos, pattern.pattern
                            assert not text[pos].isascii() or text[pos] in first, (pattern.pattern, text[pos])
    assert checked > 500


@pytest.mark.parametrize(
    ("source", "flags", "can", "cannot"),
    [
        (r"(?i)ſ", 0, "sS", ""),  # ignoring case, the long s matches "s": never left out there
        (r"\u212a", re.I, "kK", ""),  # the Kelvin sign and "k"
        ("é", 0, "", "eE"),  # without IGNORECASE a non-ASCII letter starts with no ASCII character
        (r"[^\S\n]+", 0, " \t\x0b\x1f", "\na"),  # \s has \x1c-\x1f for text patterns
        (r"(?<!\.)\b(def|class)\b", 0, "dc", ".e_ "),  # zero-width parts add no character
        (r"(a?)\1x", 0, "ax", ""),  # a backreference may be empty: what follows it counts
        (r"(?:ab)*c|d", 0, "acd", "b"),
        (r"x{0}y", 0, "xy", "z"),
        (r"\d+|[A-F]", re.A, "09AF", "aG"),
    ],
)
def test_first_characters_are_never_too_few(source: str, flags: int, can: str, cannot: str) -> None:
    pattern = re.compile(source, flags)
    first = first_chars(pattern)
    assert first is not None
    assert set(can) <= first
    assert not set(cannot) & first


@pytest.mark.parametrize("source", [r"x*", r"(?=a)", r"\b", r"a|", r"(a?)\1"])
def test_a_rule_that_can_match_nothing_is_tried_at_every_character(source: str) -> None:
    assert first_chars(re.compile(source)) is None


def test_the_whole_alternation_is_compiled_only_for_a_non_ascii_character(join_at_once: None) -> None:
    lexer = get_lexer_by_name("python", stripnl=False, ensurenl=False)
    text = "x = 1\ny = 2\n"
    assert list(lexfast.tokens(lexer, text)) == list(RegexLexer.get_tokens_unprocessed(lexer, text))
    root = lexfast._JOINED[type(lexer)][0]["root"]
    assert root is not None and "" in root.by_char and "y" in root.by_char
    every = tuple(range(len(root.rules)))
    assert every not in root.by_rules  # the text's end tried only the rules that can match empty
    text = "ü = 1\n"
    assert list(lexfast.tokens(lexer, text)) == list(RegexLexer.get_tokens_unprocessed(lexer, text))
    assert every in root.by_rules


class _SameName(RegexLexer):
    """Two rules with one group name: each compiles, their alternation does not."""

    tokens = {"root": [(r"(?P<a>x)", Name), (r"(?P<a>y)", String), (r".", Text), (r"\n", Text)]}  # noqa: RUF012


def test_rules_whose_alternation_does_not_compile_are_not_joined(join_at_once: None) -> None:
    lexer = _SameName()
    text = "xyü\nyx\n"
    assert list(lexfast.tokens(lexer, text)) == list(RegexLexer.get_tokens_unprocessed(lexer, text))
    assert lexfast._JOINED[_SameName][0]["root"] is None  # tried rule by rule, as Pygments does


def test_rules_whose_alternation_fails_anyway_are_tried_one_by_one(
    join_at_once: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    lexer = get_lexer_by_name("ini", stripnl=False, ensurenl=False)
    monkeypatch.setattr(lexfast, "_join", lambda rules: None)  # every alternation fails to compile
    text = "[s]\nk = v ü\n; c\n"
    assert list(lexfast.tokens(lexer, text)) == list(RegexLexer.get_tokens_unprocessed(lexer, text))
    root = lexfast._JOINED[type(lexer)][0]["root"]
    assert root is not None and root.by_rules


def test_the_tokens_highlighted_are_get_tokens() -> None:
    """``markdown._tokens`` reads a plain lexer's tokens directly: the input cleaned up as
    ``get_tokens`` does (line ends, tabs, a BOM); a lexer with filters (or its own ``get_tokens``)
    goes through ``get_tokens``, filters applied."""
    code = "\ufeffdef f():\r\n\treturn 1\rx = 2"
    for lang in ("python", "yaml", "bash"):
        lexer = get_lexer_by_name(lang, stripnl=False, ensurenl=False, tabsize=4)
        assert [(t, v) for _p, t, v in md_mod._tokens(lexer, code)] == list(lexer.get_tokens(code))
    lexer = get_lexer_by_name("python", stripnl=False, ensurenl=False)
    lexer.add_filter("keywordcase", case="upper")
    assert ">DEF<" in md_mod._spans(lexer, "def f(): pass\n")


def test_warming_takes_the_languages_the_scan_found_without_reading_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file ``scan`` read has its fenced blocks' languages found there; the warm-up before the render
    fork reads only the others."""
    from cernvm_build.site import sources

    content = tmp_path / "content"
    content.mkdir()
    (content / "a.md").write_text("# A\n\n```python\nx = 1\n```\n\n~~~ Bash\necho\n~~~\n")
    found = sources.scan(tmp_path)
    a = str(content / "a.md")
    assert found.fences == {a: [b"python", b"Bash"]}
    other = tmp_path / "b.md"  # not scanned: read by the warm-up
    other.write_text("```yaml\nx: 1\n```\n")
    (content / "a.md").write_text("")  # not read again: the scan's languages are used
    warmed: list[str] = []
    monkeypatch.setattr(md_mod, "warm_lexer", lambda lang, many=False, samples=(): warmed.append(lang))
    todo = [sources.Source("k", "a.md", a, "/", ""), sources.Source("l", "b.md", str(other), "/", "")]
    sources.warm_highlighting(todo, found.fences)
    assert warmed == ["python", "bash", "yaml"]  # (the costliest first: ``lexers_order``)


def test_the_sample_scan_is_linear_and_stops_at_an_unclosed_fence(tmp_path: Path) -> None:
    """(review r10c, 3) An unclosed fence swallows the rest (no later block, in markdown-it too) and
    ends the scan (the old scan walked to the end from each: 2,000 openings 2.3 CPU-s, 8,000 37 s);
    a CRLF file's blocks are found, as markdown-it's input (CRLF made LF) has them."""
    from markdown_it import MarkdownIt

    from cernvm_build.site import sources

    many = tmp_path / "many.md"
    many.write_bytes(b"```python\nx = 1\n" * 2000)
    swallowed = tmp_path / "swallowed.md"
    swallowed.write_text("~~~ python\nx\n```python\ny = 2\n```\n")
    crlf = tmp_path / "crlf.md"
    crlf.write_bytes(b"a\r\n\r\n```Python\r\ndef f():\r\n    pass\r\n```\r\n")
    todo = [sources.Source(f.name, f.name, str(f), "/", "") for f in (many, swallowed, crlf)]
    assert sources._samples(todo[:2], {}, {"python"}) == {}
    assert not [t for t in MarkdownIt("commonmark").parse(swallowed.read_text()) if t.info == "python"]
    rendered = [t.content for t in MarkdownIt("commonmark").parse(crlf.read_text()) if t.type == "fence"]
    assert rendered == ["def f():\n    pass\n"]
    assert sources._samples(todo, {}, {"python"}) == {"python": rendered}


def test_warming_lexes_a_block_of_each_language_of_many_blocks_as_the_renderer_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the render workers fork, the first block of each language of ``MANY_BLOCKS`` blocks is
    highlighted (the states and alternations its code meets made once, not in each worker), the same
    text the renderer hands the highlighter (so a worker finds it kept)."""
    from markdown_it import MarkdownIt

    from cernvm_build.site import sources

    monkeypatch.setattr(lexfast, "_EARLY", set())
    monkeypatch.setattr(sources, "MANY_BLOCKS", 2)
    a, b, c = tmp_path / "a.md", tmp_path / "b.md", tmp_path / "c.md"
    a.write_text("intro\n\n```bash\necho\n```\n")
    b.write_text("x\n```Python title='t'\ndef f():\n    return {1: [2]}\n\n```\n\n~~~~ python\ny = 2\n~~~~\n")
    c.write_text("```python\nz = 3\n```\n")
    todo = [sources.Source(k, f.name, str(f), "/", "") for k, f in (("a", a), ("b", b), ("c", c))]
    fences = {str(a): [b"bash"], str(c): [b"python"]}  # b: not scanned, read here
    got = sources._samples(todo, fences, {"python"})
    rendered = [t.content for t in MarkdownIt("commonmark").parse(b.read_text()) if t.type == "fence"]
    assert got == {"python": [rendered[0]]} and rendered[0] == "def f():\n    return {1: [2]}\n\n"
    opened: list[str] = []
    real = sources.open_regular
    monkeypatch.setattr(sources, "open_regular", lambda f: opened.append(str(f)) or real(f))
    assert sources._samples(todo, fences, {"python"}) == got and opened == [str(b)]  # a: no python
    monkeypatch.undo()
    monkeypatch.setattr(lexfast, "_EARLY", set())
    monkeypatch.setattr(sources, "MANY_BLOCKS", 2)
    md_mod._highlighted.cache_clear()
    sources.warm_highlighting(todo, fences)
    hits = md_mod._highlighted.cache_info().hits
    md_mod._highlighted("python", rendered[0])
    assert md_mod._highlighted.cache_info().hits == hits + 1  # lexed by the warm-up
    assert type(md_mod._lexer("python")) in lexfast._EARLY


@pytest.mark.parametrize("lang", ("python", "bash", "yaml", "sql", "cpp"))
def test_first_characters_noted_while_compiling_are_those_a_parse_of_their_own_gives(
    lang: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a lexer made under ``noting`` (as ``markdown._lexer`` makes them): each rule's first characters
    # are read from the parse its compile made, and are the ones ``first_chars`` reads from a parse
    monkeypatch.setattr(refirst, "_NOTED", {})
    fresh = type("Fresh", (type(get_lexer_by_name(lang)),), {})  # its rules compiled again
    re.purge()  # (and parsed again: not from re's cache)
    with refirst.noting():
        lexer = fresh()
    noted = dict(refirst._NOTED)
    monkeypatch.setattr(refirst, "_NOTED", {})
    checked = 0
    for rules in lexer._tokens.values():
        for match, _action, _new in rules:
            pattern = match.__self__
            assert (pattern.pattern, pattern.flags) in noted, pattern.pattern  # no second parse
            assert noted[(pattern.pattern, pattern.flags)] == refirst._first_chars(pattern), pattern.pattern
            checked += 1
    assert checked > 10


def test_a_lexer_is_made_noting_its_patterns_first_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    entered: list[bool] = []
    real = refirst.noting

    @contextlib.contextmanager
    def noting() -> Iterator[None]:
        with real():
            entered.append(True)
            yield

    monkeypatch.setattr(refirst, "noting", noting)
    md_mod._lexer.cache_clear()
    assert md_mod._lexer("python") is not None
    assert entered == [True]


def _regex_lexer_classes() -> list[type]:
    seen: list[type] = []
    todo: list[type] = [RegexLexer]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo += cls.__subclasses__()
    return seen


@pytest.mark.parametrize("lang", sorted({*MORE_CODE, *LANGUAGES, *EXTENDED, *WRAPPED}))
def test_a_lexer_made_with_lazy_rules_gives_pygments_tokens_and_compiles_few(
    lang: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [*_samples(), *MORE_CODE.values()]
    plain = get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    want = [list(plain.get_tokens_unprocessed(text)) for text in texts]
    # the classes made again (Pygments makes a class's rules at its first instance) in a fresh process's
    # state: none joined, none early
    for cls in _regex_lexer_classes():
        if "_tokens" in cls.__dict__:
            monkeypatch.delattr(cls, "_tokens")
    monkeypatch.setattr(lexfast, "_JOINED", {})
    monkeypatch.setattr(lexfast, "_EARLY", set())
    made: list[Any] = []
    real = lexfast._Lazy.__init__

    def note(self: Any, *args: Any) -> None:
        real(self, *args)
        made.append(self)

    monkeypatch.setattr(lexfast._Lazy, "__init__", note)
    with lexfast.lazy_rules():
        lexer = lexfast.speed_up(get_lexer_by_name(lang, stripnl=False, ensurenl=False))
        lexfast.join_early(lexer)
    assert made or lang == "json"  # its rules (or its inner lexer's) were made lazily (JSON's lexer has none)
    assert [list(lexer.get_tokens_unprocessed(text)) for text in texts] == want
    # only the rules a callback reads the groups of are compiled alone, or those of states left rule by
    # rule (then compiled on leaving, as those of any class made whose states are not joined early)
    compiled = [lazy for lazy in made if lazy._compiled is not None]
    assert len(compiled) <= len(made) / (1 if lang == "perl" else 2)  # (Perl's states mostly unjoinable)
    for cls in _regex_lexer_classes():
        for rules in cls.__dict__.get("_tokens", {}).values():
            if cls not in lexfast._EARLY or cls not in lexfast._LOOPED:
                assert not any(type(getattr(m, "__self__", None)) is lexfast._Lazy for m, _a, _n in rules)


def test_lazy_rules_leave_no_lazy_rule_to_a_lexer_not_joined_early(monkeypatch: pytest.MonkeyPatch) -> None:
    # a class made while active but not joined early (its rules tried one by one for many tokens, and by
    # Pygments' own loop) has its patterns compiled on leaving
    monkeypatch.delattr(BashLexer, "_tokens")
    monkeypatch.setattr(lexfast, "_EARLY", set())
    with lexfast.lazy_rules():
        lexer = get_lexer_by_name("bash", stripnl=False, ensurenl=False)
        assert any(
            type(getattr(m, "__self__", None)) is lexfast._Lazy for m, _a, _n in BashLexer._tokens["root"]
        )
    for rules in BashLexer._tokens.values():
        assert all(isinstance(getattr(m, "__self__", None), re.Pattern) for m, _a, _n in rules)
    text = "echo $HOME | grep x\n"
    assert next(iter(lexer.get_tokens_unprocessed(text))) == (0, Name.Builtin, "echo")


def test_a_state_left_rule_by_rule_matches_with_its_rules_own_patterns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Conditional(RegexLexer):
        tokens: ClassVar[dict[str, Any]] = {
            # a conditional: the rules cannot be joined (``_renumbered``)
            "root": [(r"(a)?(?(1)b|c)", Keyword), (r"d", Name), (r"\s+", Text)],
        }

    monkeypatch.setattr(lexfast, "_EARLY", set())
    with lexfast.lazy_rules():
        lexer = lexfast.speed_up(Conditional(stripnl=False, ensurenl=False))
        lexfast.join_early(lexer)
    assert type(Conditional._tokens["root"][0][0].__self__) is lexfast._Lazy
    assert list(lexer.get_tokens_unprocessed("ab d\n")) == [
        (0, Keyword, "ab"),
        (2, Text, " "),
        (3, Name, "d"),
        (4, Text, "\n"),
    ]
    assert lexfast._JOINED[Conditional][0]["root"] is None
    assert all(isinstance(m.__self__, re.Pattern) for m, _a, _n in Conditional._tokens["root"])


def test_the_costliest_lexer_is_handed_out_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(sp34e) The forked lexers' step gives its first language to the forked process while the builder
    does its own work: Python (the costliest lexer) first, not by name after bash, where the builder
    made it last and the forked process waited for it; languages of few blocks after those of many."""
    from cernvm_build.site import sources

    monkeypatch.setattr(sources, "MANY_BLOCKS", 2)
    page = tmp_path / "a.md"
    blocks = ("bash", "python", "yaml", "bash", "python", "yaml", "ini")
    page.write_text("".join(f"```{lang}\nx\n```\n\n" for lang in blocks))
    got: list[list[tuple[str, bool]]] = []

    def warm_lexers(langs: list[tuple[str, bool, object]], jobs: int, meanwhile: object) -> bool:
        got.append([(lang, many) for lang, many, _samples in langs])
        return False

    monkeypatch.setattr(md_mod, "warm_lexers", warm_lexers)
    sources.warm_highlighting([sources.Source("k", page.name, str(page), "/", "")], None, 2)
    assert got == [[("python", True), ("bash", True), ("yaml", True), ("ini", False)]]
