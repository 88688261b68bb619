"""A page's HTML from markdown-it-pyrs' own renderer (Rust), with Python only for what the site adds:
heading ids and permalinks, highlighted fenced code, link resolution and the links' source lines.

The Rust renderer has no hooks, so its output is edited in one pass: every ``<hN>``, every
``<pre><code>`` block and every ``href``/``src`` attribute in it is matched, in document order, to the
syntax tree's headings, code blocks, links and raw HTML (parsed from the same text by the same
parser). The match is checked, not assumed: raw HTML that holds a heading or ``<pre>`` tag, an
attribute-like text outside raw HTML (``src='x'`` in inline code), a count or URL that differs from the
tree's — any of these and ``render_parts`` returns None, and the page goes through markdown-it-py
(``markdown.render``), as do the pages ``mdtree`` cannot take (admonitions, NUL, deep nesting, recoded
host names). Both paths give the same HTML in meaning; tests/site/test_site_mdhtml.py compares them.

The same walk of the tree collects the text ``search.sections`` would read of the page's HTML
(``model.ContentText``), so the write step's search extract does not scan the Markdown's HTML again.

Excerpts stay markdown-it-py's renderer over ``mdtree`` tokens of the few blocks they show.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import markdown_it_pyrs

from . import mdtree
from .model import PERMALINK, PERMALINK_IGNORED, ContentText

#: what the renderer emits for a heading and a code block, and any quoted attribute value (``=``
#: first: a pattern that starts with a literal is scanned for fast; ``ATTR_NAME`` checks the name)
EDIT = re.compile(
    r"<(?:h([1-6])>(.*?)</h\1>|pre><code(?: class=\"[^\"]*\")?>.*?</code></pre>\n)"
    r"""|=\s*(["'])([^"'<>]*)\3""",
    re.S,
)
#: the attribute name before a value: ``markdown.RAW_LINK``'s, within 64 characters
ATTR_NAME = re.compile(r"\b(?:href|src)\s*\Z", re.I)
#: raw HTML that would make the renderer's own tags ambiguous in its output
AMBIGUOUS_RAW = re.compile(r"</?(?:h[1-6]|pre)\b", re.I)
#: the same attribute pattern as ``markdown.RAW_LINK`` (raw HTML links are resolved and checked too)
RAW_LINK = re.compile(r"""(\b(?:href|src)\s*=\s*)(["'])([^"'<>]*)\2""", re.I)
MORE = "<!--more-->"
#: raw HTML that is one comment (``<!--more-->``): ``search.sections`` reads no text in it
COMMENT = re.compile(r"<!--(?:(?!-->).)*-->", re.S)
#: block nodes whose HTML the renderer makes from their children alone
CONTAINERS = {"paragraph", "blockquote", "bullet_list", "ordered_list", "list_item", "hr"}
CONTAINERS |= {"table", "thead", "tbody", "trow", "tcell"}
SKIPPED_SCHEMES = ("mailto:", "tel:", "data:", "javascript:")


class Mismatch(Exception):
    """The output and the tree do not line up as expected: the caller renders with markdown-it-py."""


@lru_cache(maxsize=1)
def _parser() -> markdown_it_pyrs.MarkdownIt:
    return markdown_it_pyrs.MarkdownIt("commonmark").enable_many(["table", "strikethrough"])


class Heading(NamedTuple):
    level: int
    slug_title: str  # text and inline code, as the anchors plugin reads it
    title: str  # also line breaks as spaces, stripped (toc, h1)


class Parts(NamedTuple):
    """What ``markdown.render`` needs from a page besides its HTML."""

    html: str
    headings: list[Heading]
    ids: list[str]
    links: list[tuple[str, str, int]]  # (resolved target, kind, line 0-based)
    excerpt_nodes: list[Any]  # top-level tree nodes the excerpt shows
    flat: mdtree._Flatten  # the page's line map, for flattening the excerpt's blocks
    search: ContentText | None  # what the search index reads of the HTML, None where raw HTML is


class _Walk:
    """The tree in document order: headings, code blocks, link targets (a Markdown link's URL, or
    each ``href``/``src`` match in raw HTML) with their source lines; and the text the search index
    reads of the HTML (``search.sections``): a block element's tags separate words, inline ones do
    not, an image's alt text and the permalink sign are not text, a code block is its code."""

    def __init__(self, text: str):
        self.flat = mdtree._Flatten(text)  # its byte-offset -> line map
        self.headings: list[Heading] = []
        self.code: list[tuple[str, str] | None] = []  # (info, content) of a fence, None for indented code
        self.links: list[tuple[str, str, str, int]] = []  # ("md" | "raw", href, quote, line)
        self.text: list[str] = []  # the current section's text (decoded)
        self.sections: list[tuple[int, str, list[str]]] = []  # (heading number, heading, text) per h2/h3
        self.lead = self.text  # the text before the first h2/h3
        self.title = ""  # the first non-empty h1's
        self.searchable = True  # False: raw HTML, whose text only the HTML has

    def search(self, ids: list[str]) -> ContentText | None:
        if not self.searchable:
            return None
        secs = [(ids[k], head, _raw("".join(text))) for k, head, text in self.sections]
        lead = _raw("".join(self.lead))
        if any("@@L:" in t for t in (lead, self.title, *(h + t for _k, h, t in secs))):
            return None  # the link markers' pattern: the builder's link resolution would edit it
        return ContentText(lead, secs, self.title)

    def line(self, node: Any) -> int:
        return self.flat.line(node.srcmap[0])

    def blocks(self, nodes: Sequence[Any], depth: int) -> None:
        if depth >= mdtree.MAX_DEPTH:
            raise Mismatch("nesting")
        after_text = False
        for node in nodes:
            name = node.name
            if name == "text":
                self.text.append(node.meta["content"])
                after_text = True
                continue
            if name in mdtree.INLINE:
                self.inline(node, depth, into=self.text)
                after_text = True
                continue
            if after_text and name not in ("bullet_list", "ordered_list"):
                # a block right after a tight list item's text: the Rust renderer starts it on a new
                # line, markdown-it-py does not (a fence: ``<li>text<pre>``); not the same bytes
                raise Mismatch("block after a tight item's text")
            after_text = False
            text = self.text
            text.append(" ")
            if name in ("heading", "lheading"):
                slug: list[str] = []
                shown: list[str] = []
                for child in node.children:
                    self.inline(child, depth, slug, shown)
                level = node.meta["level"]
                self.headings.append(Heading(level, "".join(slug), "".join(shown).strip()))
                if level in (2, 3):  # a section of its own
                    self.text = [" "]
                    self.sections.append(
                        (len(self.headings) - 1, " ".join("".join(shown).split()), self.text)
                    )
                    continue
                if level == 1:
                    self.title = self.title or " ".join("".join(shown).split())
                else:
                    text += shown
            elif name == "fence":
                content = node.meta["content"]
                self.code.append((node.meta.get("info") or "", content))
                text.append(content)
                if "\ufeff" in content:
                    self.searchable = False  # (Pygments drops a leading one)
            elif name == "code_block":
                self.code.append(None)
                text.append(node.meta["content"])
            elif name == "html_block":
                content = node.meta["content"]
                if depth and content.strip() == MORE:
                    raise Mismatch("nested <!--more-->")  # markdown-it-py would cut the page inside a block
                self.raw(content, self.line(node))
                if not COMMENT.fullmatch(content.strip()):
                    self.searchable = False
            elif name in CONTAINERS:
                self.blocks(node.children, depth + 1)
            else:
                raise Mismatch(name)
            self.text.append(" ")

    def inline(
        self,
        node: Any,
        depth: int,
        slug: list[str] | None = None,
        shown: list[str] | None = None,
        into: list[str] | None = None,
    ) -> None:
        """``slug``, ``shown``: a heading's text as the anchors plugin reads it and as shown; ``into``:
        the text outside headings (``search``)."""
        if depth >= mdtree.MAX_DEPTH:
            raise Mismatch("nesting")
        name = node.name
        if name in ("text", "text_special"):
            if slug is not None and shown is not None:
                content = node.meta["content"]  # (a node's meta is a dict made at each access)
                slug.append(content)
                shown.append(content)
            elif into is not None:
                into.append(node.meta["content"])
        elif name == "code_inline":
            content = "".join(c.meta.get("content", "") for c in node.children)
            if slug is not None and shown is not None:
                slug.append(content)
                shown.append(content)
            elif into is not None:
                into.append(content)
        elif name in ("softbreak", "hardbreak"):
            if shown is not None:
                shown.append(" ")
            elif into is not None:
                into.append(" ")
        elif name == "html_inline":
            self.raw(node.meta["content"], self.line(node))
            self.searchable = False
        elif name in ("link", "image", "autolink"):
            url = mdtree._url(node.meta["url"])  # raises for a recoded host name
            if name == "autolink":
                text = "".join(c.meta.get("content", "") for c in node.children)
                if not mdtree.PLAIN_AUTOLINK.fullmatch(text):
                    raise Mismatch("autolink")
            self.links.append(("md", url, '"', self.line(node)))
            # an image's alt text is not heading text (markdown-it-py keeps it in the image token), nor
            # text of the page (an attribute)
            if name != "image":
                for child in node.children:
                    self.inline(child, depth + 1, slug, shown, into)
            else:
                for child in node.children:
                    self.inline(child, depth + 1)
        elif name in mdtree.INLINE_TAGS:
            for child in node.children:
                self.inline(child, depth + 1, slug, shown, into)
        else:
            raise Mismatch(name)

    def raw(self, content: str, line: int) -> None:
        if AMBIGUOUS_RAW.search(content):
            raise Mismatch("raw html heading or pre")
        for m in RAW_LINK.finditer(content):
            at = line + content.count("\n", 0, m.start())
            self.links.append(("raw", m.group(3), m.group(2), at))


def render_parts(
    text: str,
    *,
    slugify: Callable[[str], str],
    highlight: Callable[[str, str], str],
    resolve: Callable[[str], tuple[str, str]],
) -> Parts | None:
    """The page's HTML and parts, or None where the Rust path cannot be matched to the tree (the caller
    renders with markdown-it-py). ``highlight(content, lang)`` gives a fenced block's HTML,
    ``resolve(href)`` a link's new href and kind (``markdown._resolve``)."""
    if mdtree.ADMONITION.search(text) or "\0" in text:
        return None
    parser = _parser()
    tree = parser.tree(text)
    walk = _Walk(text)
    try:
        walk.blocks(tree.children, 0)
    except (Mismatch, mdtree.Unsupported):
        return None
    out = parser.render(text)

    # heading ids as the anchors plugin makes them: unique in the page, in order
    slugs: set[str] = set()
    ids: list[str] = []
    for h in walk.headings:
        base = slugify(h.slug_title)
        slug, i = base, 1
        while slug in slugs:
            slug, i = f"{base}-{i}", i + 1
        slugs.add(slug)
        ids.append(slug)

    counts = [0, 0, 0]  # headings, code blocks, links seen
    links: list[tuple[str, str, int]] = []

    def link(m: re.Match[str]) -> str:
        if not ATTR_NAME.search(m.string, max(0, m.start() - 64), m.start()):
            return m.group(0)
        k = counts[2]
        counts[2] += 1
        if k >= len(walk.links):
            raise Mismatch("extra link attribute")
        kind, expected, quote, line = walk.links[k]
        value = m.group(4)
        if m.group(3) != quote:
            raise Mismatch("quote")
        keep = m.group(0)[: m.start(4) - m.start()]  # "=" and the quote
        if kind == "raw":
            if value != expected:
                raise Mismatch("raw link")
            if not value or value.startswith(SKIPPED_SCHEMES):
                return m.group(0)
            new, how = resolve(value)
            links.append((new, how, line))
            return f"{keep}{new}{quote}"
        if html.unescape(value) != expected:
            raise Mismatch("link url")
        new, how = resolve(expected)
        links.append((new, how, line))
        return f"{keep}{mdtree.escape(new)}{quote}"

    def edit(m: re.Match[str]) -> str:
        if m.group(3) is not None:
            return link(m)
        if m.group(1) is not None:
            k = counts[0]
            counts[0] += 1
            if k >= len(ids) or walk.headings[k].level != int(m.group(1)):
                raise Mismatch("heading")
            inner = EDIT.sub(edit, m.group(2))
            slug = mdtree.escape(ids[k])
            tag = f"h{m.group(1)}"
            return f'<{tag} id="{slug}">{inner} <a class="header-anchor" href="#{slug}">#</a></{tag}>'
        k = counts[1]
        counts[1] += 1
        if k >= len(walk.code):
            raise Mismatch("code block")
        block = walk.code[k]
        if block is None:
            return m.group(0)
        info = block[0]
        if "\\" in info or "&" in info:  # escapes or entities: markdown-it-py's own unescaping
            from markdown_it.common.utils import unescapeAll

            info = unescapeAll(info)
        info = info.strip()
        return highlight(block[1], info.split(maxsplit=1)[0] if info else "") + "\n"

    try:
        body = EDIT.sub(edit, out)
        if counts != [len(ids), len(walk.code), len(walk.links)]:
            raise Mismatch("counts")
    except Mismatch:
        return None
    # the permalink sign is not part of the heading's text (search titles, excerpts); a plain replace,
    # as on markdown-it-py's output, so raw HTML naming the class gets the mark too
    body = body.replace(PERMALINK, PERMALINK_IGNORED)
    return Parts(body, walk.headings, ids, links, _excerpt_nodes(tree.children), walk.flat, walk.search(ids))


def _raw(text: str) -> str:
    # text as ``search.sections`` joins it with the HTML's raw text (which it unescapes after)
    return text.replace("&", "&amp;") if "&" in text else text


def _excerpt_nodes(nodes: Sequence[Any]) -> list[Any]:
    """The top-level blocks before ``<!--more-->`` (headings left out: their ids would collide on list
    pages), else the first top-level paragraph."""
    for i, node in enumerate(nodes):
        if node.name == "html_block" and node.meta["content"].strip() == MORE:
            return [n for n in nodes[:i] if n.name not in ("heading", "lheading")]
    for node in nodes:
        if node.name == "paragraph":
            return [node]
    return []
