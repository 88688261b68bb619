"""The Rust tree path (``mdhtml``: markdown-it-pyrs parses, Python writes the HTML from its tree with ids,
highlighting and links) gives the HTML markdown-it-py's path gives, byte for byte, with the same toc, ids,
links and excerpts: on the shipped content, the bench corpus and odd or hostile Markdown; a page holding
what it has no rule for goes through markdown-it-py. One exception: a link's source line. The tree path
has each node's own (a Markdown link's end, where its URL is, or for a reference link where ``[ref]`` is
used; a raw-HTML link's line in its HTML); the token path has the first line of the paragraph holding the
href's text, else the paragraph's first (``markdown._line_of``). The cases compared have their links on
a paragraph's first line; ``test_the_tree_path_gives_each_link_its_own_line`` pins the tree path's."""

from __future__ import annotations

import pytest
from sitehelpers import same_on_bench_corpus, same_on_shipped_content, same_unless_too_deep
from test_site_mdtree import ODD

from cernvm_build.site import markdown, mdfast, mdhtml
from cernvm_build.site.markdown import Rendered

MORE_CASES = (
    # attribute-like text outside raw HTML: not a link (the edited Rust output could not tell)
    "inline `<a href='x.md'>` code and text src='y.md' here\n\n<a href=\"z.md\">z</a>\n",
    # raw HTML with a heading or pre tag
    "<h2>raw heading</h2>\n\n## md heading\n\n<pre><code>raw</code></pre>\n\n```\nx\n```\n",
    "# T [a](a.md)\n\n## `c` [b](b.md#x) ![i](i.png)\n\n## T a\n\n"
    "<div><a href=\"c.md\">c</a>\n<img src='d.png'></div>\n",
    'para <a title="href=\'x.md\'" href="y.md">y</a> and <b data-src="no.md">b</b>\n',
    "<a href=\"mailto:x@y.z\">m</a> <a href=''>e</a> [l](mailto:a@b.c)\n",
    # blocks right after a tight list item's text: markdown-it-py starts an opening tag on a new line,
    # a fence, raw HTML or code right there
    "- item\n  ```sh\n  ls\n  ```\n- b\n",
    "- a\n  <div>x</div>\n- b\n  ***\n- c\n  # h\n- d\n  > q\n",
    "- a\n  - b\n    1. c\n- d\n",
    "- a\n  >\n- b\n  | x |\n  |---|\n  | 1 |\n- c\n\n      code\n",
    # empty blocks, and an image's alt text (code, raw HTML, a nested image and a link, a soft break)
    ">\n\n-\n\n1.\n\n> - \n",
    '![a `c` <b>x</b> ![n](n.png) [l](l.md) *e*\nsoft](i.png "t") [![alt](a.png)](b.md)\n',
    "## [link](a.md) in `h` <b>raw</b>\n\n#### h4 *em*\n\ntext\n",
    # raw HTML naming the permalink's class: as written, in the page and in its excerpt (the first
    # paragraph); a highlighted fence holding it too (``model.permalink`` writes the headings' only)
    'Intro <a class="header-anchor" href="#x">#</a> [l](l.md "T") `c` *e*\nsoft ![i](i.png) <https://a.b>\n',
    '# H\n\n```sh\necho \'<a class="header-anchor" href="#h">#</a>\'\n```\n\n<i class="header-anchor">x</i>',
    # link reference definitions: no HTML of their own, also where they are a list item's or a quote's
    # only or first block, or before <!--more--> (the excerpt)
    '[ref] and [other][ref]\n\n[ref]: http://x.y/z "T"\n',
    "- [a]: a.md\n- [b]: b.md\n  text [a] [b]\n\n> [c]: c.md\n\n>\n> [d]: /d\n> [d]\n",
    "Intro [x].\n\n[x]: x.md\n\n<!--more-->\n\nRest.\n",
    # headings inside a list item or a quote before <!--more-->: not in the excerpt
    "- one\n  # Heading in item\n\n<!--more-->\n\nrest\n",
    "> ## quoted heading\n\n<!--more-->\n",
    # repeated headings and headings named like another's suffixed id: the anchors plugin's ids
    "# a\n\n# a\n\n## a-1\n\n# a\n\n### a-3\n\n# a-1\n\n# a\n\n# a\n\n# a-1-1\n\n# a-1\n",
)
#: what the tree's writer has no rule for (or where the Rust parser and markdown-it-py differ): the page
#: goes through markdown-it-py
LEFT = (
    '!!! note "Title"\n    Admonition body.\n',
    "nul \x00 char\n",
    "- " * 9 + "deep\n",  # past MAX_DEPTH, within markdown-it-py's 20 levels
    "<https://例え.jp>\n",
    "- item\n\n  <!--more-->\n\n- more\n",
    # an unmatched backtick run in a link label: the Rust parser panics (markdown-it 0.6)
    "See [a`b] here.\n",
    "An unclosed [` here.\n",
    "# [``\n\n- [x `y\n",
    # repeated headings on a page markdown-it-py parses (an admonition): the anchors plugin's ids too
    "!!! note\n    x\n\n# a\n\n# a\n\n## a-1\n\n# a\n\n### a-3\n\n# a-1\n\n# a `b`\n\n# a b\n\n# a-1-1\n",
)


def both(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[bool, Rendered, Rendered]:
    """(whether the Rust renderer took it, the render, markdown-it-py's path's render), without the
    search text only the Rust path gives (``test_site_search.py`` checks it)."""
    taken = (
        mdhtml.render_parts(
            text, slugify=markdown.slugify, highlight=lambda c, lang: "", resolve=lambda h: (h, "")
        )
        is not None
    )
    fast = markdown.render(text, src_path="docs/a/b.md", first_line=3, base_path="/base/")
    with monkeypatch.context() as m:
        m.setattr(markdown, "_render_rust", lambda *_a: None)
        slow = markdown.render(text, src_path="docs/a/b.md", first_line=3, base_path="/base/")
    return taken, fast._replace(search=None), slow


def test_shipped_content_renders_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    same_on_shipped_content(lambda text: both(text, monkeypatch))


def test_bench_corpus_renders_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    same_on_bench_corpus(lambda text: both(text, monkeypatch))


CASES = ODD + MORE_CASES + LEFT


@pytest.mark.parametrize("text", CASES, ids=range(len(CASES)))
def test_odd_and_hostile_markdown_renders_the_same(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    same_unless_too_deep(lambda t: both(t, monkeypatch), text, monkeypatch)


def test_what_the_tree_writer_has_no_rule_for_is_left_to_markdown_it_py(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert [both(text, monkeypatch)[0] for text in MORE_CASES] == [True] * len(MORE_CASES)
    assert [both(text, monkeypatch)[0] for text in LEFT] == [False] * len(LEFT)
    _t, page, _s = both(MORE_CASES[2], monkeypatch)
    assert page.ids == ["t-a", "c-b", "t-a-1"]
    assert [(link.target, link.line) for link in page.links] == [
        ("docs/a/a.md", 3),
        ("docs/a/b.md#x", 5),
        ("docs/a/i.png", 5),
        ("docs/a/c.md", 9),
        ("docs/a/d.png", 10),
    ]
    assert '<a class="header-anchor" data-search-ignore href="#c-b">#</a></h2>' in page.html
    assert 'href="@@L:docs/a/c.md@@"' in page.html and "src='@@L:docs/a/d.png@@'" in page.html
    # only the heading's permalink is marked: the page's code and raw HTML naming the class are as written
    _t, page, _s = both(next(c for c in MORE_CASES if c.startswith("# H\n\n```sh")), monkeypatch)
    assert page.html.count("data-search-ignore") == 1 and page.html.count('class="header-anchor"') == 3


@pytest.mark.parametrize("path", ["render", "tree", "tokens", "markdown-it-py"])
def test_unique_heading_ids_take_linear_work(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """n identical headings: the ids a, a-1 ... a-(n-1) with O(n) lookups of the ids taken, not the
    n²/2 of trying every suffix from 1 again for each; on both Rust paths (``mdfast``, ``mdhtml``) and
    the token path (``mdtree``'s tokens, or markdown-it-py's for a page with an admonition: the anchors
    plugin's search took 14 CPU-s for 10,000; pr17a finding 8)."""
    looked: list[int] = [0]

    class Taken(set[str]):
        def __contains__(self, item: object) -> bool:
            looked[0] += 1
            return super().__contains__(item)

    class Ids(mdhtml.Ids):
        def __init__(self) -> None:
            super().__init__()
            self.slugs = Taken()

    monkeypatch.setattr(mdhtml, "Ids", Ids)
    if path == "tree":
        monkeypatch.setattr(mdfast, "render_parts", lambda *_a, **_k: None)
    if path in ("tokens", "markdown-it-py"):
        monkeypatch.setattr(markdown, "_render_rust", lambda *_a: None)
    n = 400
    head = "!!! note\n    x\n\n" if path == "markdown-it-py" else ""
    page = markdown.render(head + "# a\n\n" * n, src_path="a.md", first_line=1, base_path="/")
    assert page.ids == ["a", *(f"a-{i}" for i in range(1, n))]
    assert n <= looked[0] <= 3 * n


@pytest.mark.parametrize("text", [t for t in CASES if t.count("# a") > 1])
def test_the_token_paths_heading_ids_are_the_anchors_plugins(text: str) -> None:
    """The token path makes its ids with ``mdhtml.Ids`` (linear), not the anchors plugin (quadratic in
    identical headings): the same ids as the plugin, whichever parser made the tokens."""
    from markdown_it import MarkdownIt
    from mdit_py_plugins.admon import admon_plugin
    from mdit_py_plugins.anchors import anchors_plugin

    plugin = MarkdownIt("commonmark").enable(["table", "strikethrough"]).use(admon_plugin)
    plugin.use(anchors_plugin, min_level=1, max_level=6, slug_func=markdown.slugify)
    want = [t.attrGet("id") for t in plugin.parse(text, {}) if t.type == "heading_open"]
    got = [t.attrGet("id") for t in markdown.parse(text, {})[0] if t.type == "heading_open"]
    assert got == want and len(want) >= 6


@pytest.mark.timeout(30)  # the anchors plugin's search: ~1 CPU-min (here ~3 s): a regression fails, not hangs
def test_many_identical_headings_on_the_token_path_render() -> None:
    n = 20_000
    page = markdown.render(
        "!!! note\n    x\n\n" + "## h\n\n" * n, src_path="a.md", first_line=1, base_path="/"
    )
    assert page.ids[-1] == f"h-{n - 1}" and len(set(page.ids)) == n


def test_raw_html_links_have_one_rule_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Raw HTML's links are resolved by ``markdown.raw_links`` on both paths: a scheme added to the
    skipped ones is left as it is on the tree path too."""
    text = 'a <a href="vbscript:x">v</a> <a href="y.md">y</a>\n'
    monkeypatch.setattr(markdown, "SKIPPED_SCHEMES", (*markdown.SKIPPED_SCHEMES, "vbscript:"))
    taken, fast, slow = both(text, monkeypatch)
    assert taken and fast == slow
    assert 'href="vbscript:x"' in fast.html and [link.target for link in fast.links] == ["docs/a/y.md"]


@pytest.mark.parametrize(
    "text",
    [
        '<!-- <a href="{gone[">x</a> -->\n\n<a href="y.md">y</a>\n',  # an HTML block that is a comment
        'a <!-- src="gone.png" --> <a href="y.md">y</a>\n',  # an inline comment
        '<div>\n<!-- href="gone.md" -->\n<a href="y.md">y</a>\n</div>\n',  # a comment inside a block
        '<a href="y.md">y</a>\n\n<!-- unclosed href="gone.md"\n',  # an unclosed one runs to the end
    ],
)
def test_links_in_html_comments_are_not_links(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A README's commented-out template (``<!-- ... href="{x[" ... -->``) is neither resolved nor
    checked, on both paths; the link outside the comment still is."""
    taken, fast, slow = both(text, monkeypatch)
    assert taken and fast == slow
    assert [link.target for link in fast.links] == ["docs/a/y.md"]
    assert "gone" in fast.html  # the comment is left as it was written


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ('x <img alt="<!--" src="y.png"> y\n', "docs/a/y.png"),
        ('<div title="a <!-- b">\n<a href="y.md">p</a>\n</div>\n', "docs/a/y.md"),
    ],
)
def test_a_comment_opener_in_an_attribute_value_is_no_comment(
    text: str, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(review r10c, 1) A ``<!--`` in a quoted attribute value hid the links after it."""
    taken, fast, slow = both(text, monkeypatch)
    assert taken and fast == slow and [link.target for link in fast.links] == [target]


@pytest.mark.parametrize(
    ("text", "tree", "token"),
    [
        ("See x.md below\n[the page](x.md)\n", 4, 3),  # a link on a paragraph's second line
        ("Mail\n<a@b.c>\n", 4, 3),  # an autolink
        ("line one\nsee [r] here\n\n[r]: r.md\n", 4, 3),  # a reference link: where it is used
        ('text\n<a href="x.md">x</a>\n', 4, 3),  # raw HTML
        ('[multi\nline](m.md "t\nx")\n', 5, 4),  # its end: the title's line
    ],
)
def test_the_tree_path_gives_each_link_its_own_line(
    text: str, tree: int, token: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(first_line 3) The token path's lines differ (``markdown._line_of``): the one difference between
    the two paths (this module's docstring)."""
    taken, fast, slow = both(text, monkeypatch)
    assert taken and [link.line for link in fast.links] == [tree]
    assert [link.line for link in slow.links] == [token]
    assert fast._replace(links=[]) == slow._replace(links=[])
