"""The Rust renderer's path (``mdfast``: markdown-it-pyrs writes the HTML, regex passes add ids, links,
highlighting, the search text and the excerpt) takes plain pages and gives what the tree writer
(``mdhtml``) gives: the same HTML, parts and links with their lines, and search text ``search.sections``
reads the same. What it cannot tell from its HTML it leaves to the tree (test_site_mdhtml.py compares
every path with markdown-it-py's on the shipped content, the bench corpus and hostile input)."""

from __future__ import annotations

import html
import random
import re

import pytest
from sitehelpers import same_on_bench_corpus, same_on_shipped_content

from bench.site_corpus import page_text
from cernvm_build.site import markdown, mdfast, mdhtml, mdtree, search
from cernvm_build.site.markdown import Rendered
from cernvm_build.site.model import ContentText

#: plain pages: taken
PLAIN = (
    "# T [a](a.md)\n\n## `c` [b](b.md#x) ![i](i.png)\n\n## T a\n\ntext *em* **strong** ~~s~~\n",
    "Intro [l](l.md) `c` *e*\nsoft ![i](i.png) and a hard  \nbreak\n\n## h\n\n- a\n- b\n\n1. x\n2. y\n",
    "Setext *t*\n===\n\n#### h4 [x](#h4)\n\n> quoted [q](q.md)\n>\n> more\n\n"
    "| a | b |\n|:-|-:|\n| [1](1.md) | `2` |\n",
    '- item\n\n  loose [a](<a.md>)\n\n- next\n\n***\n\n```sh\nls -l && echo "x" <in\n```\n\ntail\n',
    # (headings whose titles span lines)
    "Two *lines* of\n `a` title\n---\n\ntext [a](a.md)\n\nTwo *lines* of\n`a` title\n===\n",
    # a highlighted fence naming the permalink's class: as written (``model.permalink`` is the headings')
    '## H [a](a.md)\n\n```sh\necho \'<a class="header-anchor" href="#h">#</a>\'\n```\n',
    # a ``<`` in a code span and lines an HTML block may start on only inside fences (in a list, a quote)
    "Run `mkfs <repo>` [a](a.md)\n\n```xml\n<VirtualHost *:80>\n</VirtualHost>\n```\n",
    "- `<r>`\n\n  ```html\n  <div>\n  ```\n\n> ```xml\n> <?xml?>\n> ```\n\n`a <b` [a](a.md)\n",
    # autolinks (http(s), shown as written) among links, in a heading, a list, a table
    "see <https://a.b/c?d=1&e=2> and [a](a.md), <http://x.y/z>\n\n## <https://h.i> head\n\n"
    "- <https://l.i>\n\n| <https://t.d> | [b](b.md) |\n|-|-|\n",
)
#: admonitions (markdown-it-py's plugin; the Rust parser has none): taken at a line's start after a blank
#: line, outside fences, with type words and a title it can read (none, bare words or quoted, markup)
ADMONITIONS = (
    "!!! note\n    body *x* [a](a.md)\n\nafter [b](b.md)\n",
    '# T\n\n!!! warning "Be *careful* [l](l.md)"\n    - a\n    - b\n\n    ```sh\n    ls\n    ```\n\n\ntext\n',
    '!!! note ""\n',
    '!!! note ""\n    x\n',
    "!!! note\n\ntext\n",
    "!!! note\n    \n    \n",
    '???+ tip "T"\n    x\n\n    !!! danger\n        inner\n\n        ??? info\n            deep\n',
    '!!! note inline end "T `c` &amp; \\*"\n    x\n',
    "!!! Note Some *Title*\n    x\n\n!!! NOTE\n      indented more\n\n\ntext after two blank lines\n",
    "!!!  note\n     five\n\n   three\n\n!!!note\n   x\n",
    "Intro para.\n\n!!! note\n    ## Head\n\n    > q\n    lazy\n\n## Head\n\n!!! a\n    1. x\n\n       y\n",
    "```md\n!!! note\n    in a fence\n```\n\n!!! note\n    ```md\n    !!! note\n    ```\n",
    "- item\n\n!!! note\n    x\n\n> q\n\n!!! note\n    y\n\n!!! note\n    z\n",
    "!!! note\n    | a |\n    |-|\n    | b |\n\n!!! note\n    z\n",
    "!!! note\n    para\n\n    \n    more\n\n    ---\n    setext?\n    ===\n",
    # (tabs outside what it reads, a fence closed by a line with a tab after its run)
    "```go\nfunc f() {\n\treturn\n}\n```\t\n\n!!! note\n    x\ty\n\n```md\n!!! in a fence\n```\n",
)
#: admonitions left to markdown-it-py: in a paragraph, a list item, a quote, indented, after a fence
#: that may be a list item's, ended by a line a quote would take, a title or type it does not read
#: (and pages it cannot take for other reasons)
ADMONITIONS_LEFT = (
    "para\n!!! note\n    x\n",
    "- item\n\n    !!! note\n        x\n",
    "  !!! note\n      x\n",
    "- a\n\n  ```sh\n!!! note\n    x\n",
    "!!! note\n    x\nlazy\n",
    "!!! note\n    ```sh\n    x\n\n> q\n",
    "!!! note\n    five\n   three\n",
    '!!! note " t"\n    x\n',
    '!!! note "a" "b"\n    x\n',
    "!!! no&te\n    x\n",
    "!!! note # h\n    x\n",
    "!!! note - item\n    x\n",
    "!!!\n    x\n",
    "!!!!\n    x\n",
    "??? + x\n",
    "!!! note\n\tx\n",
    "!!! note\n    ```go\n    \tx\n    ```\n",
    "!!!\tnote\n    x\n",
    "!!! note\r\n    x\r\n",
    "!!! note\n    <b>x</b>\n",
    '!!! note "<i>"\n    x\n',
    "!!! note\n    [r]\n\n[r]: r.md\n",
    # (after a list or quote marker: an item or a quote holding one, which the Rust parser reads as text)
    "- ??? tip\n\ntext\n",
    "1. !!! note\n",
    # (where the Rust parser differs from markdown-it-py: a table after a quote's lazy line, a code span
    # of spaces only)
    "!!! note\n    x\n\n> q\n| a |\n|-|\n",
    "!!! note\n    ```   ```\n",
    "!!! note\n\n``      `` x\n",
    "```md\n!!! note\n```\n\n> q\n| a |\n|-|\n",
    "!!! note\n    x\n\n- !!! note\n",
)
#: what it leaves to the tree: raw HTML (a ``<`` outside code), an autolink other than http(s) shown as
#: written or with one written in code too, reference definitions,
#: <!--more-->, a code block it cannot tell from a fence without a language, a fence straight after a
#: tight item's text, an empty quote, nesting, a link with a title, a link URL written otherwise than
#: its href, an image in a link, a ``](`` that is no link, a recoded host name, an image's alt with an
#: escape, an entity or a hard break (the Rust renderer's alt drops them), a line an HTML block starts
#: on inside a code span (the full parser ends the paragraph there), a link marker written with an entity
LEFT = (
    "a <b>x</b>\n",
    "see <ftp://a.b>\n",
    "<https://x.y/%41>\n",
    "<https://ex\u00e4mple.com>\n",
    "<a@b.c>\n",
    "`<https://x.y>` <https://x.y>\n",
    "<javascript:alert(1)>\n",
    "a < b\n",
    "[r]\n\n[r]: r.md\n",
    "intro\n\n<!--more-->\n\nrest\n",
    "    indented\n",
    "```\nno language\n```\n",
    "- item\n  ```sh\n  ls\n  ```\n",
    "- `c`\n  ```sh\n  ls\n  ```\n",
    ">\n",
    "- " * 6 + "deep\n",
    "- - - *a **b [c *d*](x.md)** e*\n",  # (lists' and inlines' depth together)
    '[a](a.md "title")\n',
    "[a](<b c.md>)\n",
    "[![i](a.png)](b.md)\n",
    "[![x\\*](a.png) `![`](a.png)\n",  # (the same URL: the link and the image would swap their ](s)
    "[![x&amp;y](a.png) `![`](a.png)\n",
    "`a](b` [c](c.md)\n",
    "[x](http://x.y/%E4%BE%8B)\n",
    "![C\\+\\+ logo](cpp.png)\n",
    "![R&amp;D](i.png)\n",
    "[a](a.md) ![foo\\_bar](i.png)\n",
    "![a  \nb](i.png)\n",
    "![a  \r\nb](i.png)\n",
    "`a\n<div>\nb`\n",
    "`a\r<?php ?>\rb`\n",
    "- `a\n  <details>\n  b`\n",
    "> `a\n> <script>\n> b`\n",
    # (the same line in a fence and in a code span: more of it in the page than in its fences)
    "`a\n<div>\nb`\n\n```xml\n<div>\n```\n",
    "a &#64;@L:x.md@@ b\n",
)


def _parts(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[bool, Rendered, Rendered]:
    """(whether ``mdfast`` took it, the render, the tree writer's), the search texts as
    ``search.sections`` reads them (``_clean``: whitespace runs and entities)."""
    taken = (
        mdfast.render_parts(
            text, slugify=markdown.slugify, highlight=lambda c, lang: "", resolve=lambda h: (h, "")
        )
        is not None
    )
    if taken:
        _block_tags_stand_apart(text)
    fast = markdown.render(text, src_path="docs/a/b.md", first_line=3, base_path="/base/")
    with monkeypatch.context() as m:
        m.setattr(mdfast, "render_parts", lambda *_a, **_k: None)
        tree = markdown.render(text, src_path="docs/a/b.md", first_line=3, base_path="/base/")
    if tree.search is None and fast.search is not None:
        # markdown-it-py's page (an admonition's): the search reads its HTML; the same as mdfast's text
        assert search.sections(fast.html, (fast.html, fast.search)) == search.sections(fast.html)
        fast = fast._replace(search=None)
    return taken, fast._replace(search=_clean(fast.search)), tree._replace(search=_clean(tree.search))


#: ``search.BLOCK``'s tags (the words around them are apart in the search text)
_BLOCK_TAG = re.compile(rf"</?(?:{'|'.join(sorted(search.BLOCK))})\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")


def _block_tags_stand_apart(text: str) -> None:
    """mdfast drops every tag of the render for its search text, block tags too: the words around a
    block tag must be apart by the renderer's white space alone."""
    out = mdtree.parse(text, mdfast._parser(), render=True)
    spaced = _TAG.sub("", _BLOCK_TAG.sub(" ", out)).split()
    assert _TAG.sub("", out).split() == spaced, out


def _clean(text: ContentText | None) -> object:
    def c(t: str) -> str:
        return " ".join(html.unescape(t).split())

    if text is None:
        return None
    return c(text.lead), [(hid, head, c(t)) for hid, head, t in text.sections], text.title


@pytest.mark.parametrize("text", PLAIN, ids=range(len(PLAIN)))
def test_plain_pages_are_taken_and_render_as_the_tree_does(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken, fast, tree = _parts(text, monkeypatch)
    assert taken and fast == tree
    assert fast.search is not None and fast.links


@pytest.mark.parametrize("text", LEFT, ids=range(len(LEFT)))
def test_what_it_cannot_tell_is_left_to_the_tree(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    taken, fast, tree = _parts(text, monkeypatch)
    assert not taken and fast == tree


@pytest.mark.parametrize("text", ADMONITIONS, ids=range(len(ADMONITIONS)))
def test_admonitions_are_taken_and_render_as_markdown_it_py_does(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken, fast, slow = _parts(text, monkeypatch)
    assert taken and fast == slow


@pytest.mark.parametrize("text", ADMONITIONS_LEFT, ids=range(len(ADMONITIONS_LEFT)))
def test_admonitions_it_cannot_tell_are_left_to_markdown_it_py(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken, fast, slow = _parts(text, monkeypatch)
    assert not taken and fast == slow


#: where the Rust parser differs from markdown-it-py (any page, not only admonition pages): a line holding
#: ``|`` a quote takes in lazily (markdown-it-py: quote text; the Rust parser: a table or a paragraph
#: after the quote), an empty list item or one numbered other than 1 after a quote's or a table's line
#: (markdown-it-py: a list; the Rust parser: quote text, a table row), a code span of three or more
#: spaces (the Rust parser strips one at each end)
RUST_DIFFERS = (
    "> q\n| a |\n|-|\n| b |\n",
    "Intro.\n\n> > q\n> | a |\n> |-|\n",
    "- > q\n  | a |\n  |-|\n",
    "> - q\n| a |\n|-|\n",
    "- > q\n| a |\n  |-|\n",
    "> > q\n| a |\n> |-|\n> | b |\n",
    "> q\n-\n",
    "> q\n  1. \n",
    "> > q\n> *\n\ntext\n",
    "- > q\n  2)\n",
    "> q\nlazy\n-\n",
    "> q\nlazy\n| a |\n|-|\n",
    "> q\n2. x\n",
    "| a |\n|-|\n| b |\n-\n",
    "| a |\n|-|\n10) x\n",
    "> | a |\n> |-|\n> 2. x\n",
    "# T\n\nx `   ` y\n",
    "x ``    `` y and `` \n `` z\n",
    "| a |\n|-|\n| `   ` |\n",
)


@pytest.mark.parametrize("text", RUST_DIFFERS, ids=range(len(RUST_DIFFERS)))
def test_where_the_rust_parser_differs_markdown_it_py_renders(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw = {"slugify": markdown.slugify, "highlight": lambda c, lang: "", "resolve": lambda h: (h, "")}
    assert mdfast.render_parts(text, **kw) is None  # type: ignore[arg-type]
    assert mdhtml.render_parts(text, **kw) is None  # type: ignore[arg-type]
    assert mdtree.tokens(text) is None
    got = markdown.render(text, src_path="docs/a/b.md", first_line=3, base_path="/base/")
    with monkeypatch.context() as m:
        m.setattr(mdtree, "tokens", lambda _t: None)  # markdown-it-py's own parse
        ref = markdown.render(text, src_path="docs/a/b.md", first_line=3, base_path="/base/")
    assert got == ref


def test_shipped_content_and_bench_corpus_render_as_the_tree_does(monkeypatch: pytest.MonkeyPatch) -> None:
    pages = same_on_shipped_content(lambda text: _parts(text, monkeypatch))
    assert sum(taken for *_, taken in pages) >= len(pages) // 2
    same_on_bench_corpus(lambda text: _parts(text, monkeypatch))


def test_hostile_pages_render_as_the_tree_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random pieces of Markdown syntax run together: taken or not, the same render."""
    rng = random.Random(5)
    bits = ["[a](a.md)", "`c`", "*e*", "**s**", "~~x~~", "\n", "\n\n", "- ", "> ", "# ", "## ", "1. "]
    bits += ["```py\nx\n```\n", "](", "![i](i.png)", "&amp;", "\\*", "  \n", "| a |\n|-|\n| b |\n", "text "]
    assert _hostile(rng, bits, 300, monkeypatch) > 100
    # with pieces that make a page skip (an alt the renderer writes otherwise, an HTML block's line in a
    # code span, a link marker from an entity): fewer taken, the same render
    bits += ["![a \\* &amp; b](i.png)", "`a\n<div>\n", "&#64;@L:x.md@@", "```xml\n<div>\n```\n", "`<r>`"]
    assert _hostile(rng, bits, 200, monkeypatch) > 20


def _hostile(rng: random.Random, bits: list[str], pages: int, monkeypatch: pytest.MonkeyPatch) -> int:
    taken = 0
    for _ in range(pages):
        text = "".join(rng.choice(bits) for _ in range(rng.randint(1, 25)))
        took, fast, tree = _parts(text, monkeypatch)
        taken += took
        assert fast == tree, text
    return taken


def test_the_bench_corpus_is_taken() -> None:
    rng = random.Random(3)
    for i in range(20):
        text = page_text(i, 20, rng)
        parts = mdfast.render_parts(
            text, slugify=markdown.slugify, highlight=lambda c, lang: "", resolve=lambda h: (h, "")
        )
        assert parts is not None, i


def html_line(text: str) -> bool:
    """Whether a line of ``text`` may start an HTML block (``mdfast.html_lines`` finds one)."""
    return next(mdfast.html_lines(text), None) is not None


#: what ``html_line`` answers, as one regex (a line's start, quote and list markers, ``<`` and a
#: letter, ``?``, ``!`` or ``/``): its definition, kept here to compare with
HTML_LINE = re.compile(r"(?:^|[\r\n])(?:[ \t>]|(?:[-+*]|\d{1,9}[.)])[ \t])*<[?!/A-Za-z]")


def test_a_line_an_html_block_may_start_on_is_found_as_the_one_regex_finds_it() -> None:
    rng = random.Random(11)
    bits = ["<", "<a", "</", "<?", "<!", "<1", "a", " ", "\t", ">", "- ", "+\t", "* ", "-", "1.", "12)"]
    bits += ["123456789.", "1234567890.", ".", ")", "\n", "\r", "\r\n", "x", "> ", "`"]
    texts = ["", "<a", "x\n<a", "x\r<!", " > - 1. <a", "a <b", "<1\n<b", "1234567890. <a", "<x" * 500]
    texts += ["".join(rng.choice(bits) for _ in range(rng.randrange(1, 16))) for _ in range(30_000)]
    for text in texts:
        assert html_line(text) == bool(HTML_LINE.search(text)), repr(text)
    assert sum(map(html_line, texts)) > 1_000


#: the autolink pattern with its look behind first: its definition, kept here to compare with
AUTOLINK_BEHIND_FIRST = re.compile(r"(?<!\]\()<([A-Za-z][A-Za-z0-9+.-]{1,31}:[^<>\x00-\x20]*)>")


def test_autolinks_are_found_as_with_the_look_behind_first_and_searched_for_their_lt() -> None:
    from re import _parser as sre_parse  # type: ignore[attr-defined]

    # a literal first: the engine looks for the "<" (a look behind first was tried at every character)
    assert sre_parse.parse(mdfast._AUTOLINK.pattern)[0] == (sre_parse.LITERAL, ord("<"))
    rng = random.Random(12)
    bits = ["<", ">", "](", "](<", "]", "(", "<ab:", "<https:", "//a", "x>", "A1+.-", "x" * 31, " ", "\n"]
    bits.append("\0")
    texts = ["](<https://a.b>)", "<https://a> ](<http://b>) x](<c", "<ab:c><de:f>", "]( <ab:c>", "<a:b>"]
    texts += ["".join(rng.choice(bits) for _ in range(rng.randrange(1, 16))) for _ in range(30_000)]
    found = 0
    for text in texts:
        want = [(m.start(1), m.group(1)) for m in AUTOLINK_BEHIND_FIRST.finditer(text)]
        assert [(m.start(1), m.group(1)) for m in mdfast._AUTOLINK.finditer(text)] == want, repr(text)
        found += len(want)
    assert found > 1_000


class _Counted:
    """A compiled pattern whose ``sub`` calls are counted."""

    def __init__(self, pattern: re.Pattern[str]):
        self.pattern = pattern
        self.subs = 0

    def sub(self, repl: str, text: str) -> str:
        self.subs += 1
        return self.pattern.sub(repl, text)


def test_a_lt_only_in_fences_needs_no_code_span_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = _Counted(mdfast._CODE)
    monkeypatch.setattr(mdfast, "_CODE", counted)
    fenced = "Intro [a](a.md)\n\n```xml\n<VirtualHost *:80>\n</VirtualHost>\n```\n\n`plain` code\n"
    assert _fast(fenced) is not None
    assert counted.subs == 0
    # a ``<`` in a code span: the pass looks for one outside code, as before (none: taken)
    assert _fast("Run `mkfs <repo>` [a](a.md)\n\n```xml\n<a/>\n```\n") is not None
    assert counted.subs == 1


def _fast(text: str) -> object:
    return mdfast.render_parts(
        text,
        slugify=markdown.slugify,
        highlight=lambda code, lang: "<pre></pre>",
        resolve=lambda u: (u, "page"),
    )
