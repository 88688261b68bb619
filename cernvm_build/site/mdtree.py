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

A page's excerpt (a few top-level blocks) is flattened into ``Tok``s instead and rendered by
``render_light``, which writes what markdown-it-py's renderer writes for them: importing markdown-it-py
was ~15 ms of a one-page rebuild, whose page the Rust renderer renders. Excerpts with a code block or an
image (renderer rules with options and hooks) still go through markdown-it-py.
"""

from __future__ import annotations

import html
import os
import re
import sys
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import markdown_it_pyrs

if TYPE_CHECKING:
    from markdown_it.token import Token

#: lines markdown-it-py's admonition plugin would claim (the Rust parser has no such plugin): also
#: after quote and list markers (``- !!! note`` is an item holding one)
ADMONITION = re.compile(r"^(?:[ \t>]|[-+*][ \t]|\d{1,9}[.)][ \t])*(?:!!!|\?\?\?)", re.M)
#: autolink text markdown-it-py shows as is (it decodes %-escapes and punycode for display)
PLAIN_AUTOLINK = re.compile(r"[\x21-\x24\x26-\x7e]*")
#: an absolute or protocol-relative URL with a %-escape: markdown-it-py writes a non-ASCII host name
#: in punycode, the Rust parser %-escapes it
RECODED_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//).*%", re.I | re.S)

#: a list item markdown-it-py starts where the Rust parser reads the line as a quote's lazy text or a
#: table's row: an empty one, or one numbered other than 1 (those may not interrupt a paragraph, and
#: the Rust parser applies that rule to lazy lines and table rows too)
_ITEM_THERE = r"(?:(?:[-+*]|\d{1,9}[.)])[ \t]*$|(?!0*1[.)])\d{1,9}[.)][ \t])"
#: for ``_quotes_then_lazy``: a quote line with text, after indent and list markers (group: its lead),
#: a line it may run on over (not blank), and a line holding ``|`` or such an item (group: its lead),
#: each matched at a line's start
_QUOTE_LINE = re.compile(r"([ \t>]*(?:(?:[-+*]|\d{1,9}[.)])[ \t][ \t>]*)*)>[ \t]*[^ \t\n].*\n", re.M)
_RUN_ON = re.compile(r"[ \t>]*[^ \t>\n].*\n", re.M)
_LAZY_THERE = re.compile(rf"([ \t>]*)(?:.*\||{_ITEM_THERE})", re.M)
#: a line holding ``|`` (a table's row) and then such an item
_ROW_THEN_ITEM = re.compile(rf"\|[^|\n]*\n[ \t>]*{_ITEM_THERE}", re.M)

INLINE_TAGS = {"em": ("em", "em"), "strong": ("strong", "strong"), "strikethrough": ("s", "s")}
INLINE = {"text", "text_special", "link", "image", "autolink", "code_inline", "html_inline"}
INLINE |= {"softbreak", "hardbreak", *INLINE_TAGS}


#: markdown-it-py stops nesting at 20 levels (its ``maxNesting``), the Rust parser does not: deeper
#: documents are left to markdown-it-py (the margin keeps clear of where exactly it stops)
MAX_DEPTH = 16


#: Text the Rust parser does not get, because one call into it cannot be interrupted (a SIGTERM or
#: Ctrl-C is acted on when it returns) and its emphasis is superlinear within one paragraph ("word *em* "
#: 10k times: 0.22 s, 20k: 1.3 s, 40k: 7.6 s; markdown-it-py, which a signal stops at once: 40k 1.2 s):
#: a page over ``LONG_TEXT`` characters, or one over ``LONG_BLOCK`` with a block (lines between blank
#: lines) holding more than ``MANY_DELIMITERS`` of ``*_[~`` and backticks (``~~`` strikethrough pairs cost the
#: Rust parser as much as emphasis: 40k pairs, 8.5 CPU-s). A long code block has few and
#: stays (markdown-it-py takes twice as long on it). Worst case left: 512 KiB of paragraphs of 4,700
#: emphasis pairs each, ~2 CPU-s in one call. Pages are at most ``sources.MAX_PAGE_BYTES``.
LONG_TEXT = 512 * 1024
LONG_BLOCK = 20_000
MANY_DELIMITERS = 2_000
_BLANK_LINE = re.compile(r"\n[ \t]*(?:\r?\n|$)")
#: A line starting with more than this many characters that can open a quote or list (``>``, list
#: markers, indentation): the Rust parser recurses once per level and overflows the C stack (a
#: segfault: '- ' or '>' 50k times); a block can nest no deeper than its line's prefix is long, and a
#: page ``LONG_BLOCK`` long or shorter stays clear of it (20k levels measured fine)
_DEEP_PREFIX = r"[ \t>*+\-0-9.)]{2000}"


#: a line opening ``MAX_DEPTH`` quotes or list items (a level each, a list item two): nested past what
#: the Rust paths take, which each found only after its parse: a long page was parsed three times
#: before markdown-it-py took it (~0.35 CPU-s each at 250 KB). (In a code block it is code: such a page
#: goes to markdown-it-py, whose output is the same.)
_DEEP_LINE = rf"(?:[ \t]*(?:>|[-*+][ \t]|[0-9]{{1,9}}[.)][ \t])){{{MAX_DEPTH}}}"


def _line_starting(body: str) -> Callable[[str], bool]:
    """Whether a line of a text starts with the pattern ``body``: searched for after a newline, a
    literal the engine scans for (``^`` with MULTILINE was tried at every character: ~5x the time,
    ~4.5 ms at 210 KB), and at the text's start."""
    first, later = re.compile(body), re.compile("\n" + body)
    return lambda text: first.match(text) is not None or later.search(text) is not None


_deep_prefix = _line_starting(_DEEP_PREFIX)
_deep_line = _line_starting(_DEEP_LINE)
#: the last text a Rust path found nested past ``MAX_DEPTH`` (``refused_deep``): the next path does not
#: parse it again (one text held: the page being rendered)
_deep: list[str | None] = [None]


def refused_deep(text: str) -> None:
    """``text`` is nested past ``MAX_DEPTH`` (a Rust path's walk found it): ``parse`` gives None for it."""
    _deep[0] = text


def too_long_for_rust(text: str) -> bool:
    if len(text) <= LONG_BLOCK:
        return False
    if len(text) > LONG_TEXT or _deep_prefix(text) or _deep_line(text):
        return True
    start = 0
    for m in (*_BLANK_LINE.finditer(text), None):
        end = m.start() if m is not None else len(text)
        if end - start > MANY_DELIMITERS:
            block = text[start:end]
            if sum(block.count(c) for c in "*_[`~") > MANY_DELIMITERS:
                return True
        start = m.end() if m is not None else end
    return False


class Unsupported(Exception):
    """A construct this module has no rule for: the caller parses with markdown-it-py instead."""


#: markdown-it-py's ``maxNesting``: a block at this level or deeper is dropped without a word
MAX_NESTING = 20
#: the blocks that hold blocks (their children are a level deeper)
_CONTAINERS = frozenset(
    f"{name}_open" for name in ("blockquote", "bullet_list", "ordered_list", "list_item", "admonition")
)


class TooDeep(Exception):
    """Blocks nested ``MAX_NESTING`` levels deep, which markdown-it-py (the parser that takes such a
    page: this module stops at ``MAX_DEPTH``) drops silently. ``line``: 0-based in the text."""

    def __init__(self, line: int):
        super().__init__(f"nested deeper than {MAX_NESTING} levels")
        self.line = line


def check_depth(tokens: Sequence[Token]) -> None:
    """Raise ``TooDeep`` where markdown-it-py's ``tokens`` lost blocks: a block that holds blocks, one
    level above the limit (its children would be at it)."""
    for t in tokens:
        if t.level >= MAX_NESTING - 1 and t.type in _CONTAINERS:
            raise TooDeep(t.map[0] if t.map else 0)


@lru_cache(maxsize=1)
def _parser() -> markdown_it_pyrs.MarkdownIt:
    return markdown_it_pyrs.MarkdownIt("commonmark").enable_many(["table", "strikethrough"])


def tokens(text: str) -> list[Token] | None:
    """markdown-it-py's block tokens for ``text`` (commonmark + table + strikethrough), or None."""
    # (a NUL markdown-it-py turns into U+FFFD before it parses)
    if has_admonition(text) or "\0" in text:
        return None
    tree = parse(text)
    if tree is None:
        return None
    conv = _Flatten(text)
    try:
        conv.blocks(tree.children, 0)
    except Unsupported:
        return None
    if lazy_line(text, quoted=conv.quoted):
        return None
    return conv.out


def parse(text: str, parser: Any = None, *, render: bool = False) -> Any:
    """markdown-it-pyrs' syntax tree of ``text`` (``render``: its HTML) by ``parser`` (default: this
    module's), or None where the Rust parser panics: markdown-it 0.6
    indexes past a code span's end when a link label holds an unmatched backtick run (``[a`b]``, an
    unclosed ``[` ``), a typo a page may well have; the page then goes through markdown-it-py. Rust's
    panic hook would print the panic (and with ``RUST_BACKTRACE`` a backtrace) on stderr for every such
    page of a build that succeeds; it cannot be told not to, so fd 2 is sent to /dev/null around a parse
    that could panic (a ``[`` and a backtick: two ``dup2`` calls, microseconds)."""
    if too_long_for_rust(text) or text is _deep[0]:
        return None
    parser = parser or _parser()
    call = parser.render if render else parser.tree
    try:
        if "`" in text and "[" in text:
            with _stderr_silenced():
                return call(text)
        return call(text)
    except BaseException as e:  # pyo3's PanicException derives from BaseException, not Exception
        if type(e).__name__ != "PanicException":
            raise
        return None


_SILENCING = threading.Lock()


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 on /dev/null meanwhile (the Rust panic hook writes there, not to sys.stderr).
    One at a time: two threads' saves and restores interleaved could leave it on /dev/null. With fd 2
    closed (a daemon's ``2>&-``; ``sys.stderr`` is then None) nothing can be printed: left as it is."""
    with _SILENCING:
        if sys.stderr is not None:
            sys.stderr.flush()  # what Python already wrote goes out first
        try:
            saved = os.dup(2)
        except OSError:
            yield
            return
        try:
            os.dup2(_devnull(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@lru_cache(maxsize=1)
def _devnull() -> int:
    # opened once per process: an open and a close per page were a third of the silencing's time
    return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)


def lazy_line(text: str, *, quoted: bool = True) -> bool:
    """Whether a line after a quote or a table row is one the Rust parser reads otherwise than
    markdown-it-py: after a quote line, a lazy line (fewer ``>`` before its text) holding ``|`` is the
    quote's text to markdown-it-py and starts a table or a paragraph after the quote in the Rust
    parser; an empty list item or one numbered other than 1 (``-``, ``2. x``) after a quote's or a
    table's line starts a list in markdown-it-py and is quote text or a row in the Rust parser.
    Conservative (a line of a fence counts too: such a page goes to markdown-it-py); ``quoted``:
    the page holds a quote (the quote pattern is tried only then; the row pattern starts with ``|``)."""
    if "|" in text and _ROW_THEN_ITEM.search(text):
        return True
    return quoted and any(lazy.count(">") <= lead.count(">") for lead, lazy in _quotes_then_lazy(text))


def _quotes_then_lazy(text: str) -> Iterator[tuple[str, str]]:
    """Each quote line, the lines after it up to a blank one, then a line holding ``|`` or such an
    item: (the quote line's lead, that line's), in one pass over the lines. One regex did it, and tried
    every quote line again over the same lines that follow it: quadratic, 8,000 lines of ``> a`` took
    18 CPU-s (a 500 KiB page, which the Rust path takes: hours). A line ends the search from a quote
    line whatever quote line it began at, and so does a line it cannot run on over: the first quote
    line of a stretch decides for all of them (as the regex's later tries found; the test keeps it)."""
    lead: str | None = None  # the quote line's lead whose lazy search is on
    pos, end = 0, len(text)
    while pos < end:
        if lead is not None:
            m = _LAZY_THERE.match(text, pos)
            if m is not None:
                yield lead, m.group(1)
                lead = None
            elif _RUN_ON.match(text, pos) is None:
                lead = None
        if lead is None:
            m = _QUOTE_LINE.match(text, pos)
            if m is not None:
                lead = m.group(1)
        nl = text.find("\n", pos)
        if nl < 0:
            break
        pos = nl + 1


def code_text(node: Any) -> str:
    """A code span's text, or ``Unsupported`` for one of spaces only, three or more (its source's
    line ends as spaces): the Rust parser strips one space at each end of it, markdown-it-py none."""
    content = "".join([c.meta.get("content", "") for c in node.children])
    if content.startswith(" ") and not content.strip(" "):
        raise Unsupported("a code span of spaces only")
    return content


def has_admonition(text: str) -> bool:
    """Whether a line of ``text`` starts an admonition (``ADMONITION``). The pattern starts with no
    literal, so the engine tries it at every character (~25 us a bench page); the markers' substring
    search first is a third of that."""
    return ("!!!" in text or "???" in text) and ADMONITION.search(text) is not None


class _Flatten:
    def __init__(self, text: str, make: Callable[..., Any] | None = None):
        # the tree's source map counts bytes; token maps count lines
        self.data = text.encode()
        #: (byte offset, its line): a line asked for at or past it is counted on from there (the tree
        #: writer asks in document order: one pass over the text, no table of every line's start)
        self.at = (0, 0)
        self._starts: list[int] | None = None
        self.out: list[Token] = []
        self.quoted = False  # whether it holds a quote (``lazy_line`` asked then)
        #: the token class: markdown-it-py's ``Token`` (imported at the first token), or ``Tok``
        self.make = make

    def token(self, *args: Any, **kw: Any) -> Token:
        if self.make is None:
            from markdown_it.token import Token

            self.make = Token
        return self.make(*args, **kw)  # type: ignore[no-any-return]

    def line(self, offset: int) -> int:
        """The 0-based line of a byte offset (-1 before the text)."""
        at, line = self.at
        if offset >= at:
            line += self.data.count(b"\n", at, offset)
            self.at = (offset, line)
            return line
        if self._starts is None:  # (flattening asks for a block's end, then its children's starts)
            self._starts = [0] + [m.end() for m in re.finditer(b"\n", self.data)]
        return bisect_right(self._starts, offset) - 1

    def lines(self, node: Any) -> list[int]:
        start, end = node.srcmap
        return [self.line(start), self.line(max(start, end - 1)) + 1]

    def push(self, type_: str, tag: str, nesting: Literal[-1, 0, 1], level: int, **kw: Any) -> Token:
        tok = self.token(type_, tag, nesting, level=level, block=True, **kw)
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
            self.quoted = True
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
        elif name == "definition":
            pass  # a link reference definition: markdown-it-py makes no token of it
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
                out.append(self.token("text", "", 0, content=meta["content"]))
            elif name in INLINE_TAGS:
                tag = INLINE_TAGS[name][0]
                open_type = "s_open" if name == "strikethrough" else f"{name}_open"
                out.append(self.token(open_type, tag, 1))
                self.inlines(node.children, out, depth + 1)
                out.append(self.token(open_type.replace("_open", "_close"), tag, -1))
            elif name == "link":
                attrs: dict[str, str | int | float] = {"href": check_url(meta["url"])}
                if meta.get("title"):
                    attrs["title"] = meta["title"]
                out.append(self.token("link_open", "a", 1, attrs=attrs))
                self.inlines(node.children, out, depth + 1)
                out.append(self.token("link_close", "a", -1))
            elif name == "image":
                img: dict[str, str | int | float] = {"src": check_url(meta["url"]), "alt": ""}
                if meta.get("title"):
                    img["title"] = meta["title"]
                alt: list[Token] = []
                self.inlines(node.children, alt, depth + 1)
                out.append(self.token("image", "img", 0, attrs=img, children=alt))
            elif name == "autolink":
                shown = "".join(c.meta.get("content", "") for c in node.children)
                if not PLAIN_AUTOLINK.fullmatch(shown):
                    raise Unsupported("autolink")
                href = check_url(meta["url"])
                link = {"attrs": {"href": href}, "markup": "autolink", "info": "auto"}
                out.append(self.token("link_open", "a", 1, **link))
                out.append(self.token("text", "", 0, content=shown))
                out.append(self.token("link_close", "a", -1, markup="autolink", info="auto"))
            elif name == "code_inline":
                out.append(self.token("code_inline", "code", 0, content=code_text(node)))
            elif name == "html_inline":
                out.append(self.token("html_inline", "", 0, content=meta["content"]))
            elif name == "softbreak":
                out.append(self.token("softbreak", "br", 0))
            elif name == "hardbreak":
                out.append(self.token("hardbreak", "br", 0))
            else:
                raise Unsupported(name)


def check_url(url: str) -> str:
    """``url`` as markdown-it-py writes it, or ``Unsupported`` where it would recode it (a host name
    in punycode): the page is then left to markdown-it-py."""
    if RECODED_URL.match(url):
        raise Unsupported(url)
    return url


class Tok:
    """The fields of markdown-it-py's ``Token`` that flattening, link resolution and ``render_light``
    use, without importing markdown-it-py."""

    __slots__ = (
        *("attrs", "block", "children", "content", "hidden", "info"),
        *("level", "map", "markup", "nesting", "tag", "type"),
    )

    def __init__(
        self,
        type_: str,
        tag: str,
        nesting: int,
        *,
        level: int = 0,
        block: bool = False,
        hidden: bool = False,
        attrs: dict[str, str | int | float] | None = None,
        map: list[int] | None = None,  # markdown-it-py's names, here and in attrGet/attrSet
        children: list[Tok] | None = None,
        content: str = "",
        info: str = "",
        markup: str = "",
    ):
        self.type, self.tag, self.nesting, self.level = type_, tag, nesting, level
        self.block, self.hidden, self.attrs, self.map = block, hidden, attrs or {}, map
        self.children, self.content, self.info, self.markup = children, content, info, markup

    def attrGet(self, name: str) -> str | int | float | None:
        return self.attrs.get(name)

    def attrSet(self, name: str, value: str | int | float) -> None:
        self.attrs[name] = value


def escape(text: str) -> str:
    """HTML-escaped as markdown-it-py escapes text and attribute values (``&<>"``, not ``'``)."""
    if "&" not in text and "<" not in text and ">" not in text and '"' not in text:
        return text  # (most ids, URLs and words: four scans in C instead of four new strings)
    return html.escape(text, quote=False).replace('"', "&quot;")


def unescape(text: str) -> str:
    """``escape`` undone (markdown-it's renderers escape ``&<>"`` only)."""
    if "&" not in text:
        return text
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")


#: token types whose markdown-it-py renderer rules depend on options or hooks (``highlight``) or render
#: children as text (an image's alt): ``render_light`` leaves them to markdown-it-py
HEAVY_RULES = frozenset(("fence", "code_block", "image"))


def render_light(tokens: Sequence[Tok]) -> str | None:
    """The HTML markdown-it-py's renderer (commonmark options: XHTML tags, soft breaks as newlines)
    makes of ``tokens``, or None if one of them is of a ``HEAVY_RULES`` type."""
    out: list[str] = []
    for i, tok in enumerate(tokens):
        got = _inlines(tok.children or ()) if tok.type == "inline" else _one(tokens, i)
        if got is None:
            return None
        out.append(got)
    return "".join(out)


def _inlines(children: Sequence[Tok]) -> str | None:
    out: list[str] = []
    for i in range(len(children)):
        got = _one(children, i)
        if got is None:
            return None
        out.append(got)
    return "".join(out)


def _one(tokens: Sequence[Tok], i: int) -> str | None:
    tok = tokens[i]
    kind = tok.type
    if kind == "text":
        return escape(tok.content)
    if kind in ("html_inline", "html_block"):
        return tok.content
    if kind == "softbreak":
        return "\n"
    if kind == "hardbreak":
        return "<br />\n"
    if kind == "code_inline":
        return f"<code{_attrs(tok)}>{escape(tok.content)}</code>"
    if kind in HEAVY_RULES:
        return None
    # any other tag: markdown-it-py's default (``renderToken``)
    if tok.hidden:
        return ""
    lead = "\n" if tok.block and tok.nesting != -1 and i and tokens[i - 1].hidden else ""
    opened = "</" if tok.nesting == -1 else "<"
    slash = " /" if tok.nesting == 0 else ""
    newline = tok.block
    if tok.block and tok.nesting == 1 and i + 1 < len(tokens):
        after = tokens[i + 1]
        if after.type == "inline" or after.hidden or (after.nesting == -1 and after.tag == tok.tag):
            newline = False
    return f"{lead}{opened}{tok.tag}{_attrs(tok)}{slash}>{chr(10) if newline else ''}"


def _attrs(tok: Tok) -> str:
    return "".join(f' {escape(k)}="{escape(str(v))}"' for k, v in tok.attrs.items())
