"""Parse Markdown with markdown-it-pyrs (markdown-it ported to Rust) and hand back the token stream
markdown-it-py's own parser makes, so everything after parsing stays the one implementation it is:
heading anchors, link resolution, excerpts and the renderer with its Pygments hook (``markdown``).

Parsing is most of markdown-it-py's time and the Rust parser does it ~10x faster, but it only gives a
syntax tree (no renderer hooks, no plugins of ours). The tree is flattened here into
``markdown_it.token.Token``s, rule by rule as markdown-it-py's block and inline rules push them
(tight-list paragraphs hidden, table cells as inline tokens, autolinks as links, source lines as
``map``). What this module has no rule for is not guessed at: ``tokens()`` returns None and the caller
parses with markdown-it-py — an admonition (``!!! note``, a plugin the Rust parser lacks), a node type
without a rule, an autolink whose text markdown-it-py would re-decode. The equivalence is tested on the
shipped content, the bench corpus and hostile input (tests/site/test_site_mdtree.py).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

import markdown_it_pyrs
from markdown_it.token import Token

#: lines markdown-it-py's admonition plugin would claim (the Rust parser has no such plugin)
ADMONITION = re.compile(r"^[ \t]*(?:!!!|\?\?\?\+?)", re.M)
#: autolink text markdown-it-py shows as is (it decodes %-escapes and punycode for display)
PLAIN_AUTOLINK = re.compile(r"[\x21-\x24\x26-\x7e]*")
#: an absolute or protocol-relative URL with a %-escape: markdown-it-py writes a non-ASCII host name
#: in punycode, the Rust parser %-escapes it
RECODED_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//).*%", re.I | re.S)

INLINE_TAGS = {"em": ("em", "em"), "strong": ("strong", "strong"), "strikethrough": ("s", "s")}
INLINE = {"text", "text_special", "link", "image", "autolink", "code_inline", "html_inline"}
INLINE |= {"softbreak", "hardbreak", *INLINE_TAGS}


#: markdown-it-py stops nesting at 20 levels (its ``maxNesting``), the Rust parser does not: deeper
#: documents are left to markdown-it-py (the margin keeps clear of where exactly it stops)
MAX_DEPTH = 16


class Unsupported(Exception):
    """A construct this module has no rule for: the caller parses with markdown-it-py instead."""


@lru_cache(maxsize=1)
def _parser() -> markdown_it_pyrs.MarkdownIt:
    return markdown_it_pyrs.MarkdownIt("commonmark").enable_many(["table", "strikethrough"])


def tokens(text: str) -> list[Token] | None:
    """markdown-it-py's block tokens for ``text`` (commonmark + table + strikethrough), or None."""
    # (a NUL markdown-it-py turns into U+FFFD before it parses)
    if ADMONITION.search(text) or "\0" in text:
        return None
    tree = _parser().tree(text)
    conv = _Flatten(text)
    try:
        conv.blocks(tree.children, 0)
    except Unsupported:
        return None
    return conv.out


class _Flatten:
    def __init__(self, text: str):
        data = text.encode()
        # the tree's source map counts bytes; token maps count lines
        self.starts = [0] + [m.end() for m in re.finditer(b"\n", data)]
        self.out: list[Token] = []

    def line(self, offset: int) -> int:
        return bisect_right(self.starts, offset) - 1

    def lines(self, node: Any) -> list[int]:
        start, end = node.srcmap
        return [self.line(start), self.line(max(start, end - 1)) + 1]

    def push(self, type_: str, tag: str, nesting: Literal[-1, 0, 1], level: int, **kw: Any) -> Token:
        tok = Token(type_, tag, nesting, level=level, block=True, **kw)
        self.out.append(tok)
        return tok

    def blocks(self, nodes: Sequence[Any], level: int) -> None:
        if level >= MAX_DEPTH:
            raise Unsupported("nesting")
        run: list[Any] = []
        for node in nodes:
            if node.name in INLINE:
                run.append(node)
                continue
            if run:
                self.hidden_paragraph(run, level)
                run = []
            self.block(node, level)
        if run:
            self.hidden_paragraph(run, level)

    def hidden_paragraph(self, run: list[Any], level: int) -> None:
        # a tight list item's paragraph: the tree keeps its inline nodes, markdown-it-py a hidden <p>
        span = [self.line(run[0].srcmap[0]), self.lines(run[-1])[1]]
        self.push("paragraph_open", "p", 1, level, map=span, hidden=True)
        self.inline(run, level + 1, span)
        self.push("paragraph_close", "p", -1, level, hidden=True)

    def inline(self, nodes: Sequence[Any], level: int, span: list[int]) -> None:
        children: list[Token] = []
        self.inlines(nodes, children, 0)
        self.push("inline", "", 0, level, map=span, children=children)

    def block(self, node: Any, level: int) -> None:
        name = node.name
        meta = node.meta
        if name == "paragraph":
            span = self.lines(node)
            self.push("paragraph_open", "p", 1, level, map=span)
            self.inline(node.children, level + 1, span)
            self.push("paragraph_close", "p", -1, level)
        elif name in ("heading", "lheading"):
            tag = f"h{meta['level']}"
            span = self.lines(node)
            self.push("heading_open", tag, 1, level, map=span)
            self.inline(node.children, level + 1, span)
            self.push("heading_close", tag, -1, level)
        elif name == "blockquote":
            self.push("blockquote_open", "blockquote", 1, level, map=self.lines(node))
            self.blocks(node.children, level + 1)
            self.push("blockquote_close", "blockquote", -1, level)
        elif name in ("bullet_list", "ordered_list"):
            tag = "ul" if name == "bullet_list" else "ol"
            attrs = {"start": meta["start"]} if name == "ordered_list" and meta.get("start", 1) != 1 else {}
            self.push(f"{name}_open", tag, 1, level, map=self.lines(node), attrs=attrs)
            for item in node.children:
                if item.name != "list_item":
                    raise Unsupported(item.name)
                self.push("list_item_open", "li", 1, level + 1, map=self.lines(item))
                self.blocks(item.children, level + 2)
                self.push("list_item_close", "li", -1, level + 1)
            self.push(f"{name}_close", tag, -1, level)
        elif name == "fence":
            info = meta.get("info") or ""
            self.push("fence", "code", 0, level, map=self.lines(node), content=meta["content"], info=info)
        elif name == "code_block":
            self.push("code_block", "code", 0, level, map=self.lines(node), content=meta["content"])
        elif name == "html_block":
            self.push("html_block", "", 0, level, map=self.lines(node), content=meta["content"])
        elif name == "hr":
            self.push("hr", "hr", 0, level, map=self.lines(node))
        elif name == "table":
            self.table(node, level)
        else:
            raise Unsupported(name)

    def table(self, node: Any, level: int) -> None:
        aligns = node.meta.get("alignments") or []
        self.push("table_open", "table", 1, level, map=self.lines(node))
        for part in node.children:
            if part.name not in ("thead", "tbody"):
                raise Unsupported(part.name)
            cell = "th" if part.name == "thead" else "td"
            self.push(f"{part.name}_open", part.name, 1, level + 1, map=self.lines(part))
            for row in part.children:
                span = self.lines(row)
                self.push("tr_open", "tr", 1, level + 2, map=span)
                for i, td in enumerate(row.children):
                    align = aligns[i] if i < len(aligns) else "none"
                    attrs = {"style": f"text-align:{align}"} if align in ("left", "right", "center") else {}
                    self.push(f"{cell}_open", cell, 1, level + 3, map=span, attrs=attrs)
                    self.inline(td.children, level + 4, [span[0], span[0] + 1])
                    self.push(f"{cell}_close", cell, -1, level + 3)
                self.push("tr_close", "tr", -1, level + 2)
            self.push(f"{part.name}_close", part.name, -1, level + 1)
        self.push("table_close", "table", -1, level)

    def inlines(self, nodes: Sequence[Any], out: list[Token], depth: int) -> None:
        if depth >= MAX_DEPTH:
            raise Unsupported("nesting")
        for node in nodes:
            name = node.name
            meta = node.meta
            if name in ("text", "text_special"):
                out.append(Token("text", "", 0, content=meta["content"]))
            elif name in INLINE_TAGS:
                tag = INLINE_TAGS[name][0]
                open_type = "s_open" if name == "strikethrough" else f"{name}_open"
                out.append(Token(open_type, tag, 1))
                self.inlines(node.children, out, depth + 1)
                out.append(Token(open_type.replace("_open", "_close"), tag, -1))
            elif name == "link":
                attrs: dict[str, str | int | float] = {"href": _url(meta["url"])}
                if meta.get("title"):
                    attrs["title"] = meta["title"]
                out.append(Token("link_open", "a", 1, attrs=attrs))
                self.inlines(node.children, out, depth + 1)
                out.append(Token("link_close", "a", -1))
            elif name == "image":
                img: dict[str, str | int | float] = {"src": _url(meta["url"]), "alt": ""}
                if meta.get("title"):
                    img["title"] = meta["title"]
                alt: list[Token] = []
                self.inlines(node.children, alt, depth + 1)
                out.append(Token("image", "img", 0, attrs=img, children=alt))
            elif name == "autolink":
                shown = "".join(c.meta.get("content", "") for c in node.children)
                if not PLAIN_AUTOLINK.fullmatch(shown):
                    raise Unsupported("autolink")
                href = _url(meta["url"])
                out.append(Token("link_open", "a", 1, attrs={"href": href}, markup="autolink", info="auto"))
                out.append(Token("text", "", 0, content=shown))
                out.append(Token("link_close", "a", -1, markup="autolink", info="auto"))
            elif name == "code_inline":
                content = "".join(c.meta.get("content", "") for c in node.children)
                out.append(Token("code_inline", "code", 0, content=content))
            elif name == "html_inline":
                out.append(Token("html_inline", "", 0, content=meta["content"]))
            elif name == "softbreak":
                out.append(Token("softbreak", "br", 0))
            elif name == "hardbreak":
                out.append(Token("hardbreak", "br", 0))
            else:
                raise Unsupported(name)


def _url(url: str) -> str:
    if RECODED_URL.match(url):
        raise Unsupported(url)
    return url
