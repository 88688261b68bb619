"""lexfast: the tokens of Pygments' RegexLexer loop with each state's rules joined into one regex."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from pygments.lexer import RegexLexer
from pygments.lexers import get_lexer_by_name

from bench.site_corpus import CODE
from cernvm_build.paths import data_dir
from cernvm_build.site import lexfast
from cernvm_build.site import markdown as md_mod

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
    if lang in ("python", "bash"):
        assert joined["root"] is not None


def test_states_are_joined_only_after_many_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexfast, "_JOINED", {})
    monkeypatch.setattr(lexfast, "JOIN_AFTER", 50)
    lexer = get_lexer_by_name("bash", stripnl=False, ensurenl=False)
    list(lexfast.tokens(lexer, "echo hi\n"))  # a handful of tokens: too few to pay for a join
    joined, uses = lexfast._JOINED[type(lexer)]
    assert "root" not in joined and 0 < uses["root"] < 50
    text = "export A=1 B=2 && echo $A $B | grep x\n" * 10
    assert list(lexfast.tokens(lexer, text)) == list(RegexLexer.get_tokens_unprocessed(lexer, text))
    assert joined["root"] is not None


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
