"""The Rust parser path (``mdtree``) gives the very output markdown-it-py's own parser gives: on the
shipped content, on the bench corpus and on hostile or odd Markdown; what it cannot do the same it
leaves to markdown-it-py."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys

import pytest
from sitehelpers import same_on_bench_corpus, same_on_shipped_content, same_unless_too_deep

from cernvm_build.site import markdown, mdtree
from cernvm_build.site.markdown import Rendered

ODD = (
    "# A\n\n## A\n\n## A\n\n### `code` and *em* [l](x.md)\n",
    "Setext\n======\n\nTwo\n---\n",
    "- a\n- b\n  - c\n  - d\n\n- e\n",
    "- a\n\n  b\n- c\n",
    "1. one\n2. two\n\n3) three\n",
    "7. seven\n8. eight\n",
    "- a\n  ```\n  code\n  ```\n- b\n  > quote\n",
    "- # heading in item\n- ---\n",
    "-\n- x\n",
    "> a\n> - b\n> - c\n>\n> d\n",
    "```\nno lang\n```\n\n~~~ python {.x}\ntilde\n~~~\n\n```js\nunclosed\n",
    "    indented\n    code\n\n\tand tab\n",
    "<div>\n*raw*\n</div>\n\n<script>alert(1)</script>\n\n<!-- comment -->\n\n<!--more-->\n\nAfter more.\n",
    "Intro para.\n\n<!--more-->\n\nRest.\n",
    "## Heading\n\nIntro para with [link](a.md).\n\n<!--more-->\n\n# after\n",
    'text <b onclick="x()">bold</b> and <a href="javascript:alert(1)">j</a> '
    "<a href='../up.md#f'>up</a> <img src=\"p.png\">\n",
    "[j](javascript:alert(1)) [J](JAVASCRIPT:alert(1)) [v](vbscript:x) [f](file:///etc/passwd) "
    "[d](data:text/html;base64,PHNjcmlwdD4=)\n",
    '![ok](data:image/png;base64,AAAA) ![svg](data:image/svg+xml,<svg>) ![alt *em* `c`](i.png "title")\n',
    "[a](<with space.md>) [b](ü.md) [c](a%20b.md) [d](a%zz.md) [e](http://例え.jp/x) [f](https://EXAMPLE.com/A?b=c&d=e#F)\n",
    "<http://example.com/%C3%BC> <https://例え.jp> <me@example.org> <mailto:x@y.z> <http://a.b/c?d=e&f=g>\n",
    "&copy; &amp; &lt;tag&gt; &#35; &#x22; &#0; &nosuch; \\* \\_ \\\\ \\` \\<\n",
    "*a **b** c* _d_ __e__ ~~s~~ ~single~ ***x***\n",
    "`` a ` b `` ` c ` `  ` ```\ntriple inline?\n",
    "line one  \nline two\\\nline three\nline four\n",
    "| a | b |\n|---|:-:|\n| `x\\|y` | **b** |\n| only |\n| 1 | 2 | 3 |\n",
    "| h |\n|---|\n",
    "a | b\n--|--\n1 | 2\n",
    '[ref] and [other][ref] and [ref][]\n\n[ref]: http://x.y/z "T"\n',
    "[ref]: http://x.y\n\n# only a definition above\n",
    "Line\r\nwith CRLF\r\n\r\n# Heading\r\n\r\n- a\r\n- b\r\n",
    "nul \x00 char\n",
    "é ü ñ 😀 in text\n\n## Ünïcödé heading 😀\n\n[link é](é.md)\n",
    "***\n---\n___\n",
    "<details><summary>x</summary>\n\nbody\n\n</details>\n",
    "> ```\n> code in quote\n> ```\n",
    "1. a\n   1. b\n      - c\n",
    "Text with <span>inline html</span> and <!-- c --> and <?pi?> and <![CDATA[x]]>.\n",
    "[link with `code` and *em*](x.md \"t 'q'\")\n",
    "[](empty.md) [x]() ![](noalt.png)\n",
    "# Title with trailing #s ##\n\n#5 not heading\n\n####### seven\n",
    "* * *\n\n+ plus\n+ list\n",
    "Paragraph\n- list right after\n",
    "> quote\nlazy continuation\n",
    '!!! note "Title"\n    Admonition body.\n',
    "Here is a [link](#local) and [site](/docs/x/) and [ext](https://x.y/).\n",
    '<a href="docs/a.md">a</a>\n\n<img src="../b.png">\n',
    "```python\ndef f():\n    return '<b>&amp;</b>'\n```\n",
    '```Python title="x"\nprint(1)\n```\n\n```nosuchlang\nx < y\n```\n',
    "```py\\x &amp; y\nz\n```\n",
    "",
    "\n\n\n",
    "   \n",
    '[x](foo\\)bar.md) [y](a.md#frag%20x) [z]("q".md)\n',
    "http://bare.url/ www.bare.url\n",
    "* a\n\n* b\n",
    "- [ ] task\n- [x] done\n",
    "<pre>\n*x*\n</pre>\n\n<style>\np{}\n</style>\n\n<textarea>\n\nx\n</textarea>\n",
    '<?php echo 1; ?>\n\n<!DOCTYPE html>\n\n<![CDATA[\nx\n]]>\n\n<custom-el attr="1">\n\n</custom-el>\n',
    "<table><tr><td>\n\n*md*\n\n</td></tr></table>\n",
    '[a](x.md "&amp; &quot;") [b](x&amp;y.md) [c](x\\_y.md) [d](<>) [e](<a<b>)\n',
    "foo_bar_baz _foo_bar_ *foo*bar **foo**bar __a__b\n",
    "[a [b] c](x.md) [![img](i.png)](l.md) ![a [link](l.md) b](i.png)\n",
    "0. zero\n1. one\n\n10. ten\n11. eleven\n",
    "#\n\n# #\n\n## `` ` ``\n",
    "- a\n\n\t- tab\n\n- b\n",
    'text <span\nclass="x">multi\nline</span> end\n',
    "- | a | b |\n  |---|---|\n  | 1 | 2 |\n",
    "> a | b\n> --|--\n> 1 | 2\n",
    ">>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>> deep\n",
    "************************************************************************************************************************************************************************************************************************************************************************************************************\n",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
    "````````````````````````````````````````````````````````````````````````````````````````````````````x\n",
    "- - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - nested\n",
    "<!-- unclosed comment\n\nstill in it\n",
    "Para\n<!--more-->\nsame para?\n",
    "- item\n\n  <!--more-->\n\n- more\n",
    "Text.\n\n    <!--more-->\n",
    "[foo]: /url 'title\nwith newline'\n\n[foo]\n",
    "[Foo Bar]: /x\n\n[foo bar] [FOO BAR][] [ẞ]\n\n[SS]: /ss\n",
    "\\# not heading\n\n\\- not list\n\n1\\. not ordered\n",
    "http://x.y/<b> <http://x.y/a b> <http://x.y/a\"b> <http://x.y/a'b>\n",
    "[x](http://x.y/%E4%BE%8B) [y](//host/p) [z](mailto:a@例え.jp)\n",
    "Line with trailing backslash\\\n\n## H \\\n",
    "| a |\n| - |\n| <b>x</b> |\n| &amp; |\n| [l](x.md) |\n",
    "||\n|-|\n||\n",
    "| a | b |\n| --- | --- |\n| 1 | 2 |\nlazy row\n\npara\n",
    "~~~\n```\n~~~\n",
    "```\n~~~\n```\n\n````\n```\n````\n",
    " ```\n code\n ```\n\n   ```\n   three\n  ```\n",
    "```   \nempty info\n```\n\n``` \\`\nx\n```\n",
    "1. a\n\n   ```\n   code\n   ```\n2. b\n",
    "- a\n-\n  b\n- c\n",
    "Hard<br>break<br/> and <BR />\n",
    "![x](javascript:alert(1)) ![y](DATA:image/gif;base64,R0l) <javascript:alert(1)>\n",
    "[x]: javascript:alert(1)\n\n[x]\n",
    ">>>>>>>>>>>>>>> fifteen\n",
    ">>>>>>>>>>>>>>>>>>> nineteen\n",
    ">>>>>>>>>>>>>>>>>>>>> x\n",
    "***************a***************\n",
    "[[[[[[[[[[[[[[[[[[a](x.md)](x.md)](x.md)](x.md)](x.md)](x.md)](x.md)](x.md)](x.md)](x.md)](x.md)](x.md)](x.md)](x.md)](x.md)](x.md)](x.md)](x.md)\n",
    "- - - - - - - - - - ten\n",
    "- - - - - - - - - - - eleven\n",
    "*a _b *c _d *e _f *g _h *i _j *k _l *m _n *o _p *q _r *s _t *u _v *w _x*_*_*_*_*_*_*_*_*_*_*_*\n",
    ">" * 60 + " deep\n",
    "*" * 300 + "\n",
    "[" * 300 + "\n",
    "a" + " *b" * 200 + "\n",
    "- " * 40 + "nested\n",
)


def both(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[bool, Rendered, Rendered]:
    """(whether the Rust parser's tokens took it, their render, markdown-it-py's render); the Rust
    renderer (``mdhtml``, tested in test_site_mdhtml.py) is off, so these are the tokens' renders."""
    taken = mdtree.tokens(text) is not None
    with monkeypatch.context() as m:
        m.setattr(markdown, "_render_rust", lambda *_a: None)
        fast = markdown.render(text, src_path="docs/a/b.md", first_line=3, base_path="/base/")
        m.setattr(mdtree, "tokens", lambda _text: None)
        slow = markdown.render(text, src_path="docs/a/b.md", first_line=3, base_path="/base/")
    return taken, fast, slow


def test_shipped_content_renders_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    for path, body, taken in same_on_shipped_content(lambda text: both(text, monkeypatch)):
        assert taken or mdtree.ADMONITION.search(body), path


def test_bench_corpus_renders_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    same_on_bench_corpus(lambda text: both(text, monkeypatch))


@pytest.mark.parametrize("text", ODD, ids=range(len(ODD)))
def test_odd_and_hostile_markdown_renders_the_same(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    same_unless_too_deep(lambda t: both(t, monkeypatch), text, monkeypatch)


def test_the_rust_path_is_taken_for_ordinary_markdown_and_left_where_it_differs() -> None:
    assert mdtree.tokens("# T\n\n- a\n- b\n\n| x |\n|---|\n| 1 |\n\n```py\nx\n```\n") is not None
    assert mdtree.tokens('!!! note "T"\n    body\n') is None  # admonitions: markdown-it-py's plugin
    assert mdtree.tokens("[x](http://例え.jp/)\n") is None  # punycode host names
    assert mdtree.tokens("a \0 b\n") is None
    assert mdtree.tokens(">" * 30 + " deep\n") is None  # markdown-it-py stops nesting at 20
    # an unmatched backtick run in a link label: markdown-it-pyrs panics (a BaseException)
    assert mdtree.tokens("See [a`b] here\n") is None
    assert mdtree.tokens("An unclosed [` here\n") is None


def test_a_page_the_rust_parser_panics_on_prints_nothing(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rust's panic hook writes the panic (a backtrace with RUST_BACKTRACE) to fd 2: a build that
    succeeds must not print what looks like a crash; stderr works again after."""
    monkeypatch.setenv("RUST_BACKTRACE", "1")
    capfd.readouterr()
    assert mdtree.parse("See [a`b] here\n") is None
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_a_build_with_stderr_closed_parses_such_a_page() -> None:
    """A daemon or cron job may run the build with ``2>&-``: no stderr to silence is no crash."""
    code = "from cernvm_build.site import mdtree; print(mdtree.parse('See [a`b] here\\n'))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=lambda: os.close(2),
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    assert (run.returncode, run.stdout) == (0, "None\n")


def test_unsafe_links_stay_text_and_raw_html_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    # the policy either parser keeps: Markdown links to javascript:/vbscript:/file:/data: (but images)
    # are not links; raw HTML written in the page is the author's (site content is trusted) and passes
    text = (
        "[j](javascript:alert(1)) [v](VBSCRIPT:x) [f](file:///etc/passwd) ![i](data:image/png;base64,AA)"
        "\n\n<b>raw</b>\n"
    )
    taken, fast, slow = both(text, monkeypatch)
    assert taken and fast == slow
    assert "href=" not in fast.html and "[j](javascript:alert(1))" in fast.html
    assert '<img src="data:image/png;base64,AA" alt="i" />' in fast.html and "<b>raw</b>" in fast.html


def test_the_light_renderer_writes_what_markdown_it_pys_renderer_writes() -> None:
    # excerpts are rendered by ``render_light`` (no markdown-it-py import on a one-page rebuild): over
    # every construct flattened here, it must give markdown-it-py's bytes or leave the tokens to it
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark").renderer
    options = MarkdownIt("commonmark").options
    rendered = 0
    for text in ODD:
        if mdtree.tokens(text) is None:
            continue
        tree = mdtree._parser().tree(text)
        light, real = mdtree._Flatten(text, mdtree.Tok), mdtree._Flatten(text)
        light.blocks(tree.children, 0)
        real.blocks(tree.children, 0)
        heavy = {t.type for t in real.out} | {c.type for t in real.out for c in t.children or ()}
        got = mdtree.render_light(light.out)
        assert (got is None) == bool(heavy & mdtree.HEAVY_RULES), text
        if got is not None:
            assert got == renderer.render(real.out, options, {}), text
            rendered += 1
    assert rendered >= 60


def test_a_byte_offsets_line_is_the_same_asked_in_any_order() -> None:
    """``_Flatten.line`` counts on from the last offset asked (the tree writer's document order) and
    looks earlier ones up in a table: both give the newlines before the offset (-1 before the text)."""
    text = "a\n\nbé\n" * 5 + "tail"
    data = text.encode()
    offsets = [3, 3, 9, 40, 2, 0, -1, len(data), 17, 4, len(data) + 5]
    flat = mdtree._Flatten(text)
    assert [flat.line(o) for o in offsets] == [data.count(b"\n", 0, max(o, 0)) - (o < 0) for o in offsets]


@pytest.mark.parametrize("text", ["plain ids-and_words", "", "a&b", "a<b", "a>b", 'a"b', "'", '&<>"x'])
def test_escape_writes_what_markdown_it_py_writes(text: str) -> None:
    from markdown_it.common.utils import escapeHtml

    assert mdtree.escape(text) == escapeHtml(text)


#: the one regex ``mdtree._quotes_then_lazy`` replaces (quadratic: it tried every quote line again over
#: the same lines), the reference its groups are compared with
_QUOTE_THEN_LAZY = re.compile(
    r"^([ \t>]*(?:(?:[-+*]|\d{1,9}[.)])[ \t][ \t>]*)*)>[ \t]*[^ \t\n].*\n(?:[ \t>]*[^ \t>\n].*\n)*?"
    rf"(?=([ \t>]*)(?:.*\||{mdtree._ITEM_THERE}))",
    re.M,
)


def test_the_lazy_line_search_finds_what_the_regex_found() -> None:
    rnd = random.Random(17)
    pieces = [">", "> ", ">>", " ", "a", "|", "-", "- ", "1.", "2. ", "1) ", "\t", "* ", "x", "3)", "+ "]
    pieces += ["\n"] * 3
    for _ in range(20_000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 40)))
        want = [(m.group(1), m.group(2)) for m in _QUOTE_THEN_LAZY.finditer(text)]
        assert list(mdtree._quotes_then_lazy(text)) == want, text


def test_the_lazy_line_search_looks_at_each_line_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A quote of 100,000 one-word lines (400 KB: a page the Rust path takes) took the regex hours
    (8,000 lines: 18 CPU-s); counted here: each line is tried once as the line that ends a quote."""
    tried = [0]
    there = mdtree._LAZY_THERE

    class Counted:
        def match(self, text: str, pos: int) -> re.Match[str] | None:
            tried[0] += 1
            return there.match(text, pos)

    monkeypatch.setattr(mdtree, "_LAZY_THERE", Counted())
    text = "> a\n" * 100_000
    assert not mdtree.lazy_line(text)
    assert tried[0] == 100_000 - 1
    assert mdtree.lazy_line(text + "x | y\n")
