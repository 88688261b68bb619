"""A page's HTML written from markdown-it-pyrs' syntax tree (the Rust parser), in Python, with what the
site adds in the same walk: heading ids and permalinks (the anchors plugin's), highlighted fenced code
(``markdown.Code``), resolved links (a Markdown link's URL, a raw-HTML ``href``/``src``) with their source
lines, and the text ``search.sections`` would read of the HTML (``model.ContentText``, so the write
step's search extract does not scan the Markdown's HTML again).

The bytes are markdown-it-py's renderer's for the tokens ``mdtree`` would make of the tree (XHTML tags,
a tight list's hidden paragraphs and the new line ``renderToken`` puts after them): the page is parsed
once. (markdown-it-pyrs' tree has no renderer; rendering the text again with the Rust renderer and
editing its output to match the tree was a second parse and a regex pass, ~0.15 CPU-s of a 1,000-page
build.) A node without a rule here — an admonition (``!!! note``, a plugin the Rust parser lacks), NUL,
nesting past ``mdtree.MAX_DEPTH``, a recoded host name, a ``<!--more-->`` inside a block, text the Rust
parser panics on (``mdtree.parse``) — and
``render_parts`` returns None: the page goes through markdown-it-py (``markdown.render``). A link
reference definition writes nothing, as in markdown-it-py.
tests/site/test_site_mdhtml.py compares both paths byte for byte; only a link's source line may differ
(here the node's own, there the paragraph's line holding the href, see that test's docstring).

An excerpt that is the page's first paragraph (most pages: no ``<!--more-->``) is that paragraph's HTML
and text as the walk wrote them; the blocks before a ``<!--more-->`` are flattened into ``mdtree`` tokens
and rendered apart (``markdown._rust_excerpt``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from . import mdtree
from .markdown import raw_links
from .model import SECTION, TITLE, ContentText, heading_role, permalink
from .ntuple import NamedTuple

MORE = "<!--more-->"
#: raw HTML that is one comment (``<!--more-->``): ``search.sections`` reads no text in it
COMMENT = re.compile(r"<!--(?:(?!-->).)*-->", re.S)


class Mismatch(Exception):
    """A node this module has no rule for: the caller renders with markdown-it-py."""


class Nesting(Mismatch):
    """Nodes past ``mdtree.MAX_DEPTH``: no Rust path takes the page (``mdtree.refused_deep``)."""


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
    #: the excerpt's HTML and text where it is the page's first paragraph, as the walk wrote it (the
    #: bytes markdown-it-py's renderer writes for it, as for the page), else None: ``excerpt_nodes`` are
    #: rendered apart
    excerpt: tuple[str, str] | None
    #: the page's line map, for flattening the excerpt's blocks; None from ``mdfast`` (no excerpt nodes)
    flat: mdtree._Flatten | None
    search: ContentText | None  # what the search index reads of the HTML, None where raw HTML is


class _Walk:
    """The tree in document order, written as HTML (markdown-it-py's renderer's bytes for the tokens
    ``mdtree`` would make of it, with the anchors plugin's ids and permalinks, highlighted fences and
    resolved links), with its headings, links (new target, kind, source line) and the text the search
    index reads of the HTML (``search.sections``): a block element's tags separate words, inline ones do
    not, an image's alt text and the permalink sign are not text, a code block is its code."""

    def __init__(
        self,
        text: str,
        slugify: Callable[[str], str],
        highlight: Callable[[str, str], str],
        resolve: Callable[[str], tuple[str, str]],
    ):
        self.flat = mdtree._Flatten(text)  # its byte-offset -> line map
        self.slugify, self.highlight, self.resolve = slugify, highlight, resolve
        self.out: list[str] = []  # the HTML
        #: the last token written was a tight list item's (hidden) paragraph: markdown-it-py's renderer
        #: starts the next opening block tag on a new line
        self.after_hidden = False
        self.headings: list[Heading] = []
        self.ids: list[str] = []
        self.taken = Ids()
        self.links: list[tuple[str, str, int]] = []  # (resolved target, kind, line 0-based)
        self.text: list[str] = []  # the current section's text (decoded)
        #: (heading number, heading, text) per section (``model.heading_role``)
        self.sections: list[tuple[int, str, list[str]]] = []
        self.lead = self.text  # the text before the first section
        self.title = ""  # the page's title (``model.heading_role``)
        self.searchable = True  # False: raw HTML, whose text only the HTML has
        self.quoted = False  # whether it holds a quote (``mdtree.lazy_line`` asked then)
        #: the first top-level paragraph, its HTML and text
        self.first_para: tuple[Any, str, str] | None = None

    def search(self) -> ContentText | None:
        if not self.searchable:
            return None
        ids = self.ids
        secs = [(ids[k], head, _raw("".join(text))) for k, head, text in self.sections]
        lead = _raw("".join(self.lead))
        if any("@@L:" in t for t in (lead, self.title, *(h + t for _k, h, t in secs))):
            return None  # the link markers' pattern: the builder's link resolution would edit it
        return ContentText(lead, secs, self.title)

    def line(self, node: Any) -> int:
        return self.flat.line(node.srcmap[0])

    def open(self, tag: str) -> str:
        # an opening block tag as ``renderToken`` writes it after the token before
        if self.after_hidden:
            self.after_hidden = False
            return f"\n<{tag}"
        return f"<{tag}"

    def blocks(self, nodes: Sequence[Any], depth: int, *, item: bool = False) -> None:
        """``item``: a list item's children, whose inline nodes are a tight list's hidden paragraph."""
        if depth >= mdtree.MAX_DEPTH:
            raise Nesting("nesting")
        out = self.out
        in_text = False
        for node in nodes:
            name = node.name
            if name == "definition":
                continue  # a link reference definition: no HTML, no text (its links carry its URL)
            if name in mdtree.INLINE:
                if not item:
                    raise Mismatch("inline node outside a list item")
                if name == "text":
                    content = node.meta["content"]
                    self.text.append(content)
                    out.append(mdtree.escape(content))
                else:
                    self.inline(node, depth, into=self.text)
                in_text = True
                continue
            if in_text:
                in_text = False
                self.after_hidden = True
            text = self.text
            text.append(" ")
            if name == "paragraph":
                at, text_at = len(out), len(text)
                out.append(self.open("p") + ">")
                self.inlines(node.children, depth + 1, text)
                out.append("</p>\n")
                if not depth and self.first_para is None:
                    self.first_para = (node, "".join(out[at:]), "".join(text[text_at:]))
            elif name in ("heading", "lheading"):
                if self.heading(node, depth, text):
                    continue  # a section of its own, whose text starts there
            elif name == "fence":
                self.after_hidden = False
                meta = node.meta
                content = meta["content"]
                text.append(content)
                if "\ufeff" in content:
                    self.searchable = False  # (Pygments drops a leading one)
                info = meta.get("info") or ""
                if "\\" in info or "&" in info:  # escapes or entities: markdown-it-py's own unescaping
                    from markdown_it.common.utils import unescapeAll

                    info = unescapeAll(info)
                info = info.strip()
                out.append(self.highlight(content, info.split(maxsplit=1)[0] if info else "") + "\n")
            elif name == "code_block":
                self.after_hidden = False
                content = node.meta["content"]
                text.append(content)
                out.append(f"<pre><code>{mdtree.escape(content)}</code></pre>\n")
            elif name == "html_block":
                self.after_hidden = False
                content = node.meta["content"]
                if depth and content.strip() == MORE:
                    raise Mismatch("nested <!--more-->")  # markdown-it-py would cut the page inside a block
                out.append(self.raw(content, self.line(node)))
                if not COMMENT.fullmatch(content.strip()):
                    self.searchable = False
            elif name == "blockquote":
                self.quoted = True
                children = node.children
                out.append(self.open("blockquote") + (">\n" if _first(children) is not None else ">"))
                self.blocks(children, depth + 1)
                out.append("</blockquote>\n")
            elif name in ("bullet_list", "ordered_list"):
                self.lists(node, name, depth)
            elif name == "hr":
                out.append(self.open("hr") + " />\n")
            elif name == "table":
                self.table(node, depth)
            else:
                raise Mismatch(name)
            self.text.append(" ")
        if in_text:
            self.after_hidden = True

    def heading(self, node: Any, depth: int, text: list[str]) -> bool:
        """Write a heading; True where it starts a search section (``model.heading_role``)."""
        out = self.out
        start = self.open("h")
        inner: list[str] = []
        self.out = inner
        slug: list[str] = []
        shown: list[str] = []
        for child in node.children:
            self.inline(child, depth, slug, shown)
        self.out = out
        level = node.meta["level"]
        self.headings.append(Heading(level, "".join(slug), "".join(shown).strip()))
        hid = self.taken.take(self.slugify("".join(slug)))
        self.ids.append(hid)
        sid = mdtree.escape(hid)
        out.append(f'{start}{level} id="{sid}">{"".join(inner)} {permalink(sid)}</h{level}>\n')
        role = heading_role(f"h{level}", hid)
        if role == SECTION:
            self.text = [" "]
            self.sections.append((len(self.headings) - 1, " ".join("".join(shown).split()), self.text))
            return True
        if role == TITLE:
            self.title = self.title or " ".join("".join(shown).split())
        else:
            text += shown
        return False

    def lists(self, node: Any, name: str, depth: int) -> None:
        out = self.out
        if name == "bullet_list":
            tag = "ul"
            out.append(self.open("ul") + ">\n")
        else:
            tag = "ol"
            start = node.meta.get("start", 1)
            out.append(self.open("ol") + (f' start="{start}">\n' if start != 1 else ">\n"))
        for item in node.children:
            if item.name != "list_item":
                raise Mismatch(item.name)
            children = item.children
            # no new line after <li> where a hidden paragraph or </li> follows
            first = _first(children)
            out.append("<li>\n" if first is not None and first.name not in mdtree.INLINE else "<li>")
            self.text.append(" ")
            self.blocks(children, depth + 2, item=True)  # (the depths ``mdtree``'s checks count)
            self.text.append(" ")
            self.after_hidden = False
            out.append("</li>\n")
        out.append(f"</{tag}>\n")

    def table(self, node: Any, depth: int) -> None:
        out = self.out
        aligns = node.meta.get("alignments") or []
        out.append(self.open("table") + ">\n")
        for part in node.children:
            pname = part.name
            if pname not in ("thead", "tbody"):
                raise Mismatch(pname)
            cell = "th" if pname == "thead" else "td"
            out.append(f"<{pname}>\n")
            self.text.append(" ")
            for row in part.children:
                out.append("<tr>\n")
                self.text.append(" ")
                for i, td in enumerate(row.children):
                    align = aligns[i] if i < len(aligns) else "none"
                    if align in ("left", "right", "center"):
                        out.append(f'<{cell} style="text-align:{align}">')
                    else:
                        out.append(f"<{cell}>")
                    text = self.text
                    text.append(" ")
                    self.inlines(td.children, depth + 4, text)
                    text.append(" ")
                    out.append(f"</{cell}>\n")
                self.text.append(" ")
                out.append("</tr>\n")
            self.text.append(" ")
            out.append(f"</{pname}>\n")
        out.append("</table>\n")

    def inlines(self, nodes: Sequence[Any], depth: int, into: list[str]) -> None:
        """``inline`` over a block's inline nodes outside headings, the commonest ones (text, soft
        breaks, inline code: nine in ten of a page's nodes) written here, without a call each."""
        if not nodes:
            return
        if depth >= mdtree.MAX_DEPTH:
            raise Nesting("nesting")
        out = self.out
        add, keep = out.append, into.append
        for node in nodes:
            name = node.name
            if name == "text" or name == "text_special":
                content = node.meta["content"]  # (a node's meta is a dict made at each access)
                keep(content)
                add(mdtree.escape(content))
            elif name == "softbreak":
                add("\n")
                keep(" ")
            elif name == "code_inline":
                content = mdtree.code_text(node)
                keep(content)
                add(f"<code>{mdtree.escape(content)}</code>")
            else:
                self.inline(node, depth, into=into)

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
            raise Nesting("nesting")
        name = node.name
        out = self.out
        if name in ("text", "text_special"):
            content = node.meta["content"]  # (a node's meta is a dict made at each access)
            out.append(mdtree.escape(content))
            _keep(content, slug, shown, into)
        elif name == "code_inline":
            content = mdtree.code_text(node)
            out.append(f"<code>{mdtree.escape(content)}</code>")
            _keep(content, slug, shown, into)
        elif name in ("softbreak", "hardbreak"):
            out.append("\n" if name == "softbreak" else "<br />\n")
            if shown is not None:
                shown.append(" ")
            elif into is not None:
                into.append(" ")
        elif name == "html_inline":
            out.append(self.raw(node.meta["content"], self.line(node)))
            self.searchable = False
        elif name in mdtree.INLINE_TAGS:
            tag = mdtree.INLINE_TAGS[name][0]
            out.append(f"<{tag}>")
            self.children(node, depth + 1, slug, shown, into)
            out.append(f"</{tag}>")
        elif name in ("link", "image", "autolink"):
            meta = node.meta
            url = mdtree.check_url(meta["url"])  # raises for a recoded host name
            new, kind = self.resolve(url)
            # the line of the node's end, where its URL is (its text may take lines before it)
            self.links.append((new, kind, self.flat.line(node.srcmap[1] - 1)))
            href = mdtree.escape(new)
            title = meta.get("title")
            title = f' title="{mdtree.escape(title)}"' if title else ""
            if name == "image":
                # the alt text is not heading text (markdown-it-py keeps it in the image token), nor
                # text of the page (an attribute); links in it are not resolved (nor by markdown-it-py's
                # path, which reads the inline tokens' own children only)
                alt: list[str] = []
                _alt_text(node.children, alt, depth + 1)
                out.append(f'<img src="{href}" alt="{mdtree.escape("".join(alt))}"{title} />')
            elif name == "autolink":
                shown_url = "".join(c.meta.get("content", "") for c in node.children)
                if not mdtree.PLAIN_AUTOLINK.fullmatch(shown_url):
                    raise Mismatch("autolink")
                out.append(f'<a href="{href}">{mdtree.escape(shown_url)}</a>')
                _keep(shown_url, slug, shown, into)
            else:
                out.append(f'<a href="{href}"{title}>')
                self.children(node, depth + 1, slug, shown, into)
                out.append("</a>")
        else:
            raise Mismatch(name)

    def children(
        self, node: Any, depth: int, slug: list[str] | None, shown: list[str] | None, into: list[str] | None
    ) -> None:
        if slug is None and into is not None:
            self.inlines(node.children, depth, into)
            return
        for child in node.children:
            self.inline(child, depth, slug, shown, into)

    def raw(self, content: str, line: int) -> str:
        """Raw HTML with its ``href``/``src`` values resolved (``markdown.raw_links``)."""
        return raw_links(content, line, self.resolve, self.record)

    def record(self, new: str, kind: str, line: int) -> None:
        self.links.append((new, kind, line))


def _keep(content: str, slug: list[str] | None, shown: list[str] | None, into: list[str] | None) -> None:
    # an inline node's text: the heading's (as the anchors plugin reads it and as shown), else the page's
    if slug is not None and shown is not None:
        slug.append(content)
        shown.append(content)
    elif into is not None:
        into.append(content)


class Ids:
    """A page's heading ids as the anchors plugin makes them: unique in the page, in order (the first
    free of base, base-1, base-2 ...); the search for a base resumes after its last suffix, taken for
    good as the set only grows (n identical headings: O(n), not n²/2 tries)."""

    def __init__(self) -> None:
        self.slugs: set[str] = set()
        self.suffix: dict[str, int] = {}  # a heading id's base -> the next suffix to try

    def take(self, base: str) -> str:
        hid = base
        if hid in self.slugs:
            i = self.suffix.get(base, 1)
            hid = f"{base}-{i}"
            while hid in self.slugs:
                i += 1
                hid = f"{base}-{i}"
            self.suffix[base] = i + 1
        self.slugs.add(hid)
        return hid


def _first(nodes: Sequence[Any]) -> Any:
    # the first node that has HTML (markdown-it-py makes no token of a reference definition)
    return next((n for n in nodes if n.name != "definition"), None)


def _alt_text(nodes: Sequence[Any], out: list[str], depth: int) -> None:
    # markdown-it-py's ``renderInlineAsText`` over the image's child tokens
    if depth >= mdtree.MAX_DEPTH:
        raise Nesting("nesting")
    for node in nodes:
        name = node.name
        if name in ("text", "text_special", "html_inline"):
            out.append(node.meta["content"])
        elif name == "code_inline":
            out.append(mdtree.code_text(node))
        elif name in ("softbreak", "hardbreak"):
            out.append("\n")
        elif name == "autolink":
            shown = "".join(c.meta.get("content", "") for c in node.children)
            if not mdtree.PLAIN_AUTOLINK.fullmatch(shown):
                raise Mismatch("autolink")
            out.append(shown)
        elif name in ("link", "image") or name in mdtree.INLINE_TAGS:
            if name in ("link", "image"):
                mdtree.check_url(
                    node.meta["url"]
                )  # raises where ``mdtree`` leaves the page to markdown-it-py
            _alt_text(node.children, out, depth + 1)
        else:
            raise Mismatch(name)


def render_parts(
    text: str,
    *,
    slugify: Callable[[str], str],
    highlight: Callable[[str, str], str],
    resolve: Callable[[str], tuple[str, str]],
) -> Parts | None:
    """The page's HTML and parts, or None where the tree holds what this module has no rule for (the
    caller renders with markdown-it-py). ``highlight(content, lang)`` gives a fenced block's HTML,
    ``resolve(href)`` a link's new href and kind (``markdown._resolve``)."""
    if mdtree.has_admonition(text) or "\0" in text:
        return None
    tree = mdtree.parse(text)
    if tree is None:
        return None
    nodes = tree.children
    walk = _Walk(text, slugify, highlight, resolve)
    try:
        walk.blocks(nodes, 0)
    except Nesting:
        mdtree.refused_deep(text)  # (markdown.parse's tokens would parse it again to find the same)
        return None
    except (Mismatch, mdtree.Unsupported):
        return None
    if mdtree.lazy_line(text, quoted=walk.quoted):
        return None  # a line after a quote the Rust parser reads otherwise (``mdtree.lazy_line``)
    body = "".join(walk.out)
    shown = _excerpt_nodes(nodes)
    first = walk.first_para
    # the excerpt is the first paragraph (no ``<!--more-->``): its HTML as written above, not flattened
    # and rendered a second time
    excerpt = first[1:] if first is not None and len(shown) == 1 and shown[0] is first[0] else None
    return Parts(body, walk.headings, walk.ids, walk.links, shown, excerpt, walk.flat, walk.search())


def _raw(text: str) -> str:
    # text as ``search.sections`` joins it with the HTML's raw text (which it unescapes after)
    return text.replace("&", "&amp;") if "&" in text else text


def _excerpt_nodes(nodes: Sequence[Any]) -> list[Any]:
    """The top-level blocks before ``<!--more-->`` (headings left out: their ids would collide on list
    pages), else the first top-level paragraph."""
    for i, node in enumerate(nodes):
        if node.name == "html_block" and node.meta["content"].strip() == MORE:
            return [n for n in nodes[:i] if n.name not in ("heading", "lheading", "definition")]
    for node in nodes:
        if node.name == "paragraph":
            return [node]
    return []
