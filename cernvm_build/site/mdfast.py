"""A plain page's HTML and parts from markdown-it-pyrs' own renderer, edited in a few regex passes:
heading ids and permalinks, resolved links, highlighted fences, the search text and the excerpt. The
Rust renderer writes a page in one call, with no Python object per node: the tree writer (``mdhtml``)
spent most of its time building the tree's Python nodes and reading their fields.

Only pages whose HTML can be told apart from its source are taken (else None, and ``mdhtml`` walks the
tree): the parser here has no raw HTML rules, so a ``<`` the full parser would read as HTML stays
text, and a page with ``&lt;`` outside code is left to the tree; so are pages with link reference
definitions (``]:``), ``<!--more-->``, a BOM, a link marker, a link whose URL is not found after its
``](`` (an autolink: its ``<``) in the source in order (the line each link is reported at), an autolink
other than http(s) or shown otherwise than written (markdown-it-py decodes %-escapes and punycode for
display), a fence with no language
or one straight after a tight list item's text, an indented code block, nesting near ``mdtree``'s
limit, an image's alt with an escape, an entity or a hard break (the renderer's alt drops them), a
``<`` in a code span with a line an HTML block may start on outside the fences (the full parser ends
the paragraph there), or a link marker written with entities. tests/site/test_site_mdfast.py compares
this render with the tree's (``mdhtml``) and tests/site/test_site_mdhtml.py every path with
markdown-it-py's, byte for byte.

Admonitions (``!!! note "Title"``, markdown-it-py's plugin; neither Rust path has one) are rendered here
too, where written plainly (``admonitions_as_quotes``): each becomes a quote marked by a heading, line
for line, and the marked quotes' tags become the plugin's ``div`` and title. Such a page went to
markdown-it-py, ~4x this path's CPU per KB; anything else goes there still (tests/site/test_site_mdfast.py
compares both on admonition pages).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from functools import lru_cache
from itertools import accumulate
from typing import Any

from . import mdhtml, mdtree
from .mdhtml import Heading, Parts
from .model import SECTION, TITLE, ContentText, heading_role, permalink
from .ntuple import NamedTuple

#: a fenced block as the Rust renderer writes it (its language's first word in the class)
_FENCE = re.compile(r'<pre><code class="language-([^"]*)">([^<]*)</code></pre>\n')
_HEADING = re.compile(r"<h([1-6])>(.*?)</h\1>\n", re.S)
_LINK = re.compile(r'<(a href|img src)="([^"]*)"([^>]*)>')
_LINK_START = re.compile(r"\]\(")
#: an autolink's URL (group 1) as the source may hold one (not a link's ``](<url>)``): taken only with an
#: http(s) URL whose text is shown as written. The ``<`` first, then the look behind (at the ``<``: not
#: after ``](``): a pattern that starts with a literal is searched for it, one that starts with the
#: look behind was tried at every character of every page holding a ``<`` (~30 µs a page of prose,
#: ~0.03 CPU-s of its 1,000 pages)
_AUTOLINK = re.compile(r"<(?<!\]\(<)([A-Za-z][A-Za-z0-9+.-]{1,31}:[^<>\x00-\x20]*)>")
_TAG = re.compile(r"<[^>]*>")
_IMG = re.compile(r"<img [^>]*>")
#: tags that nest (the depth check)
_NESTING = ("ul", "ol", "li", "blockquote", "div", "em", "strong", "s", "a")
_NEST = re.compile(rf"</?(?:{'|'.join(_NESTING)})[ >]")
#: each of those tags' step in depth (a sum and a maximum in C: no Python step per tag)
_STEP = {
    f"<{close}{name}{end}": -1 if close else 1 for close in ("", "/") for name in _NESTING for end in " >"
}
#: the blocks that hold paragraphs (an admonition's ``div`` too), and the paragraph (the excerpt is the
#: first top-level one)
_OUTER_OR_P = re.compile(r"<(/?)(ul|ol|blockquote|div|p)[ >]")
#: an inline code span or a code block before highlighting (its text is escaped: no tag inside)
_CODE = re.compile(r"<code[^>]*>[^<]*</code>")
#: a line an HTML block may start on (after quote and list markers): in the full parser it ends a
#: paragraph, so a code span the zero parser runs across it is none there (the ``<`` shows as ``&lt;``
#: inside the code)
#: (``html_lines``: a ``<`` and its next character, each line's start before it, the line breaks)
_HTML_OPEN = re.compile(r"<[?!/A-Za-z]")
_LINE_LEAD = re.compile(r"(?:[ \t>]|(?:[-+*]|\d{1,9}[.)])[ \t])*")
_LINE_BREAK = re.compile(r"[\r\n]")
#: ``search.BLOCK``'s tags separate words, other tags do not; the renderer writes a new line after each
#: block tag or before each that text follows (``<p>``, ``<li>``, ``<td>``), so all tags are dropped
#: in one pass and the words stay apart (``search`` reads any whitespace as one space;
#: tests/site/test_site_mdfast.py checks this on every page it renders)
_SECTION = re.compile(r'<h[1-6] id="[^"]*">.*?</h[1-6]>\n', re.S)
#: a language word the class attribute holds as is (no escapes, no entities to decode)
_LANG = re.compile(r"[\w.+#-]+")
#: closing tags text may end on, with the new line the renderer writes after
_AFTER_TEXT_NL = ("</code>\n", "</em>\n", "</strong>\n", "</s>\n", "</a>\n")


#: an admonition's marker line as taken here (at a line's start): the marker, the spaces after it (its
#: body's indent is 3 and their number), its parameters
_MARK = re.compile(r"(\?\?\?\+|!!!|\?\?\?)( *)(.*)")
#: a fence's opening line (its indent, its run; a backtick run's info holds no backtick) and a closing one
_FENCE_OPEN = re.compile(r"( {0,3})(?:(`{3,})[^`]*|(~{3,}).*)")
_FENCE_CLOSE = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")
#: the parameters taken: type words then a quoted title, or one type word and the title's words
_TYPE_WORD = re.compile(r"[A-Za-z0-9_-]+")
_TYPES_TITLE = re.compile(r'([A-Za-z0-9_-]+(?: [A-Za-z0-9_-]+)*) +"([^"]*)"')
#: a quote as the Rust renderer writes it, with the mark of an admonition's (group 1: its number)
_QUOTE_TAG = re.compile("<blockquote>\n(?:<h1>\ue000(\\d+)</h1>\n)?|</blockquote>\n")
_MARK_CHAR = "\ue000"
#: a code span of spaces only (the Rust parser strips one space at each end, markdown-it-py none)
_BLANK_CODE = re.compile("<code> +</code>")


class Admonition(NamedTuple):
    classes: str  # its div's class attribute
    title: str | None  # its title's HTML, or None: no title


class Skip(Exception):
    """Something this module does not edit: the tree writer takes the page."""


@lru_cache(maxsize=1)
def _parser() -> Any:
    import markdown_it_pyrs

    # commonmark's rules without raw HTML and autolinks, with tables and strikethrough
    return markdown_it_pyrs.MarkdownIt("zero").enable_many(
        [
            *("blockquote", "code", "fence", "heading", "hr", "lheading", "list", "paragraph"),
            *("reference", "backticks", "emphasis", "entity", "escape", "image", "link", "newline"),
            *("autolink", "table", "strikethrough"),
        ]
    )


def render_parts(
    text: str,
    *,
    slugify: Callable[[str], str],
    highlight: Callable[[str, str], str],
    resolve: Callable[[str], tuple[str, str]],
) -> Parts | None:
    """``mdhtml.render_parts`` for a plain page, or None (see the module's docstring)."""
    if "]:" in text or "<!--" in text or "\ufeff" in text or "@@L:" in text or "\0" in text:
        return None
    admonitions: list[Admonition] = []
    source = text
    marked = mdtree.has_admonition(text)  # (a marker in a fence too: the page went to markdown-it-py)
    if marked:
        made = admonitions_as_quotes(text, admonitions)
        if made is None:
            return None
        source = made
    html = mdtree.parse(source, _parser(), render=True)
    if html is None:
        return None
    # where the Rust parser is known to differ from markdown-it-py (``mdtree.lazy_line``, a code span of
    # spaces only: ``mdtree.code_text``): left to the tree writer, which leaves them to markdown-it-py
    if mdtree.lazy_line(source, quoted="<blockquote>" in html):
        return None
    if _BLANK_CODE.search(html):  # (its literal start searched for: cheaper than '<code> ' in html)
        return None
    if marked:
        html = _quotes_as_admonitions(html, admonitions) if admonitions else html
        # (the page went to markdown-it-py before: left to it where a table and a quote meet, as fuzzed)
        if html is None or ("<table>" in html and "<blockquote>" in html):
            return None
    try:
        return _edit(text, html, slugify, highlight, resolve)
    except (Skip, mdtree.Unsupported):
        return None


def _edit(
    text: str,
    html: str,
    slugify: Callable[[str], str],
    highlight: Callable[[str, str], str],
    resolve: Callable[[str], tuple[str, str]],
) -> Parts:
    if "&lt;" in html:
        # the page without its fences first: a ``<`` only in code blocks (most pages of a manual that
        # has one) needs no pass for code spans (a code span pass over the whole page: ~0.007 CPU-s of
        # 1,000 pages of prose); the fences' code elements are code the code span pattern takes too
        outside = _FENCE.sub("", html)
        if "&lt;" in outside:
            if "&lt;" in _CODE.sub("", outside):
                raise Skip("< outside code: raw HTML or an autolink for the full parser")
            if _html_line_outside_fences(text, html):
                raise Skip("a line an HTML block may start on inside a code span")
    if "@@L:" in html:
        raise Skip("a link marker written with entities or escapes (the tree gives no search text)")
    if "<blockquote>\n</blockquote>" in html:
        raise Skip("an empty quote (markdown-it-py writes no new line in it)")
    if "<pre><code>" in html:
        raise Skip("indented code or a fence without a language")
    # the nesting depth (``mdtree.MAX_DEPTH``, with a margin for the tree's own counting) and the
    # first top-level paragraph
    deepest = max(accumulate(map(_STEP.__getitem__, _NEST.findall(html))), default=0)
    if deepest + 6 >= mdtree.MAX_DEPTH:  # (a paragraph, a table's four levels)
        raise Skip("nesting")
    first_p = _first_paragraph(html)
    excerpt_at = -1 if first_p < 0 else html.index("</p>\n", first_p) + 5

    # links: each one's URL follows its ``](`` in the source, in order (the line it is reported at)
    links: list[tuple[str, str, int]] = []
    # (where its URL starts, whether an autolink's)
    starts = [(m.end(), False) for m in _LINK_START.finditer(text)]
    if "<" in text:
        autolinks = [(m.start(1), True) for m in _AUTOLINK.finditer(text)]
        if autolinks:
            starts = sorted(starts + autolinks)
    line_at = [0, 0]  # (character offset, its line): counted on, in document order

    def link(m: re.Match[str]) -> str:
        n = len(links)
        kind_attr, raw, rest = m.group(1, 2, 3)
        url = mdtree.unescape(raw)
        if n >= len(starts) or "title=" in rest:
            raise Skip("a link without ]( or with a title")
        at, auto = starts[n]
        if auto:
            # ``<https://…>``: its text is its URL as written (markdown-it-py decodes %-escapes and
            # punycode for display: those are left to the tree)
            if (
                kind_attr != "a href"
                or rest
                or not url.startswith(("http://", "https://"))
                or not mdtree.PLAIN_AUTOLINK.fullmatch(url)
                or not text.startswith(f"{url}>", at)
                or not m.string.startswith(f"{mdtree.escape(url)}</a>", m.end())
            ):
                raise Skip("an autolink not written as is")
        elif kind_attr == "a href":
            # an image inside a link: the link comes first here but its ``](`` after the image's, so
            # the two would take each other's (and the image's alt be checked against the wrong label);
            # links do not nest, and one never spans the excerpt's segments
            close = m.string.find("</a>", m.end())
            if m.string.find("<img", m.end(), len(m.string) if close < 0 else close) >= 0:
                raise Skip("an image inside a link")
        elif kind_attr == "img src":
            # the renderer's alt drops escapes, entities and hard breaks: this image's label starts at
            # or after the first ``![`` since the last link's ``](`` (a taken page's ``](`` are its
            # links'; a ``![`` in the label, in code say, may not be its start)
            begin = text.find("![", starts[n - 1][0] if n else 0, at)
            label = text[begin:at]
            if begin < 0 or "\\" in label or "&" in label or "  \n" in label or "  \r" in label:
                raise Skip("an image's alt with an escape, entity or hard break")
        if auto:
            after = at + len(url) - 1  # (no ``)`` after it: checked above)
        elif text.startswith(url, at):
            after = at + len(url)
        elif text.startswith(f"<{url}>", at):
            after = at + len(url) + 2
        else:
            raise Skip("a link's URL is not its source's")
        if not auto and not text.startswith(")", after):
            raise Skip("a link's URL is not its source's")
        mdtree.check_url(url)  # raises for a recoded host name (markdown-it-py writes punycode)
        new, kind = resolve(url)
        line_at[1] += text.count("\n", line_at[0], at)
        line_at[0] = at
        links.append((new, kind, line_at[1]))
        return f'<{kind_attr}="{mdtree.escape(new)}"{rest}>'

    excerpt = None
    if first_p >= 0:
        # the excerpt is the page's first paragraph as edited here
        before = _LINK.sub(link, html[:first_p])
        para = _LINK.sub(link, html[first_p:excerpt_at])
        excerpt = (para, mdtree.unescape(_TAG.sub("", _IMG.sub("", para))))
        html = before + para + _LINK.sub(link, html[excerpt_at:])
    else:
        html = _LINK.sub(link, html)
    if len(links) != len(starts):
        raise Skip("a ]( that is no link")

    headings: list[Heading] = []
    ids: list[str] = []
    taken = mdhtml.Ids()

    def heading(m: re.Match[str]) -> str:
        digit, inner = m.group(1, 2)
        bare = mdtree.unescape(_TAG.sub("", _IMG.sub("", inner))) if "<" in inner or "&" in inner else inner
        if "\n" in bare:
            flat, title = bare.replace("\n", ""), bare.replace("\n", " ").strip()
        else:
            flat, title = bare, bare.strip()
        headings.append(Heading(int(digit), flat, title))
        hid = taken.take(slugify(flat))
        ids.append(hid)
        sid = mdtree.escape(hid)
        return f'<h{digit} id="{sid}">{inner} {permalink(sid)}</h{digit}>\n'

    if "<h" in html:
        html = _HEADING.sub(heading, html)
    # the text before the code is highlighted (its spans are no text: fewer tags to strip)
    search = _search(html, headings, ids)

    def fence(m: re.Match[str]) -> str:
        lang = m.group(1)
        if not _LANG.fullmatch(lang):
            raise Skip("a language word with escapes")
        before = html[max(0, m.start() - 8) : m.start()]
        if m.start() and (
            not before.endswith(">\n") or before.endswith(_AFTER_TEXT_NL) or _ends_in_img(html, m.start())
        ):
            raise Skip("a fence after a tight list item's text")
        return highlight(mdtree.unescape(m.group(2)), lang) + "\n"

    if "<pre>" in html:
        html = _FENCE.sub(fence, html)
        if "<pre><code" in html:
            raise Skip("a block the fence pattern missed")
    return Parts(html, headings, ids, links, excerpt_nodes=[], excerpt=excerpt, flat=None, search=search)


def _html_line_outside_fences(text: str, html: str) -> bool:
    """Whether a line of the source that may start an HTML block (``html_lines``) is outside the
    fenced blocks of its render: ``<VirtualHost>`` in an XML fence ends no paragraph, for either
    parser. Each line inside a fence is one of the fence's lines in the HTML (its container's prefix
    of spaces and ``>`` removed, which leaves its ``<`` and what follows as they are), so the lines
    from their ``<`` on are counted: a source that has no more of one such rest than its fences have
    has none outside them (a fence the pattern misses counts none: the page is left to the tree)."""
    rests = Counter(html_lines(text))
    if not rests:
        return False
    for m in _FENCE.finditer(html):
        rests.subtract(html_lines(mdtree.unescape(m.group(2))))
    return max(rests.values()) > 0


def html_lines(text: str) -> Iterator[str]:
    """Each line of ``text`` that may start an HTML block (after quote and list markers, ``<`` and a
    letter, ``?``, ``!`` or ``/``), from its ``<`` on. Each ``<`` so followed is looked for as a literal
    (a fast scan) and only its line's start checked, then the rest of its line is passed over (a later
    ``<`` has this one before it, which no marker is). The one regex ``(?:^|[\r\n])(?:…)*<[?!/A-Za-z]``
    this replaced tried a match at every character: ~13 ns a character of every page with a ``<`` in
    its code spans (most of a real manual's: ``<repository>``)."""
    pos = 0
    while (m := _HTML_OPEN.search(text, pos)) is not None:
        at = m.start()
        start = max(text.rfind("\n", pos, at), text.rfind("\r", pos, at)) + 1
        brk = _LINE_BREAK.search(text, at)
        if _LINE_LEAD.fullmatch(text, max(start, pos), at):
            yield text[at : brk.start() if brk is not None else len(text)]
        if brk is None:
            return
        pos = brk.end()


def _ends_in_img(html: str, at: int) -> bool:
    # an image's `` />`` before the new line (an <hr /> is a block)
    return html.endswith(" />\n", 0, at) and not html.endswith("<hr />\n", 0, at)


def _first_paragraph(html: str) -> int:
    """Where the first top-level ``<p>`` starts, or -1 (a list's or a quote's are not top-level)."""
    depth = 0
    for m in _OUTER_OR_P.finditer(html):
        if m.group(2) != "p":
            depth += -1 if m.group(1) else 1
        elif depth == 0 and not m.group(1):
            return m.start()
    return -1


def _search(body: str, headings: list[Heading], ids: list[str]) -> ContentText:
    """What ``search.sections`` reads of ``body``: block tags separate words, other tags do not, the
    permalinks are not text; sections and title by ``model.heading_role``."""
    # the headings as marks, then the text of every section in two passes over the page (a block tag
    # needs no space for its words: see the comment above ``_SECTION``)
    chunks = _TAG.sub("", _SECTION.sub("\0", body)).split("\0")
    title = ""
    lead: list[str] = [" ", chunks[0]]
    sections: list[tuple[str, str, list[str]]] = []
    current = lead
    for k, head in enumerate(headings):
        shown = " ".join(head.title.split())
        after = chunks[k + 1]
        role = heading_role(f"h{head.level}", ids[k])
        if role == SECTION:
            current = [" ", after]
            sections.append((ids[k], shown, current))
        elif role == TITLE:
            title = title or shown
            current += (" ", after)
        else:
            current += (" ", mdtree.escape(shown), " ", after)
    secs = [(hid, head, "".join(parts) + " ") for hid, head, parts in sections]
    return ContentText("".join(lead) + " ", secs, title)


def admonitions_as_quotes(text: str, found: list[Admonition]) -> str | None:
    """``text`` with each admonition (``!!! note "Title"``, the admonition plugin markdown-it-py uses) as a
    quote the Rust parser reads, for ``_quotes_as_admonitions`` to write as the plugin's ``div``; its
    marker line a heading marked ``\\ue000`` and its number in ``found`` (line for line: links keep
    their lines), or None where one is written in a way not taken here (the page then goes to
    markdown-it-py): only an admonition at the start of a line after a blank one (or the page's start)
    outside a fence, in a page with no CR, no tab in the indent of its lines (columns as characters),
    and one whose body is followed by the page's end or a blank line then no quote (the quote would
    take it in). Its body (the plugin's: lines indented by 3 and the spaces after the marker, up to
    two blank lines or a line indented less; ``mdit_py_plugins.admon``) is the quote's, admonitions
    in it taken the same way."""
    if "\r" in text or _MARK_CHAR in text:
        return None
    if not text.endswith("\n"):
        return None  # (an unclosed fence's last line: markdown-it-py ends it with no new line)
    lines = text.split("\n")
    lines.pop()
    out = _as_quotes(lines, found)
    if out is None:
        return None
    return "\n".join(out) + "\n"


def _as_quotes(lines: list[str], found: list[Admonition]) -> list[str] | None:
    out: list[str] = []
    fence: str | None = None  # the open fence's run
    sure = True  # whether it is one of the page's own (at the line's start), not a list item's maybe
    after_blank = True
    i = 0
    while i < len(lines):
        line = lines[i]
        bare = line.lstrip(" ")
        if mdtree.ADMONITION.match(line):
            if fence is None or not sure:
                if fence is not None or not after_blank or line is not bare or bare[0] not in "!?":
                    # in a fence that may be a list item's, in a paragraph, indented, in a container
                    return None
                end = _admonition(lines, i, out, found)
                if end is None:
                    return None
                i, after_blank = end, True
                continue
        elif fence is not None:
            close = _FENCE_CLOSE.fullmatch(line)
            if close is not None and close.group(1).startswith(fence):
                fence = None
        else:
            opened = _FENCE_OPEN.fullmatch(line)
            if opened is not None:
                # an indented fence may be a list item's, which a line at the start ends
                fence, sure = opened.group(2) or opened.group(3), not opened.group(1)
        out.append(line)
        after_blank = not bare
        i += 1
    return out


def _admonition(lines: list[str], at: int, out: list[str], found: list[Admonition]) -> int | None:
    """The admonition whose marker is ``lines[at]`` written to ``out`` as a quote; the line after it."""
    m = _MARK.fullmatch(lines[at])
    if m is None or "\t" in lines[at]:
        return None
    marker, spaces, params = m.groups()
    params = params.strip()
    if '"' in params:
        quoted = _TYPES_TITLE.fullmatch(params)
        if quoted is None:
            return None
        types = quoted.group(1).split(" ")
        title = quoted.group(2)
    else:
        kind, _, title = params.partition(" ")
        if not _TYPE_WORD.fullmatch(kind):
            return None
        types = [kind]
        title = title or kind.title()
    shown = None
    if title:
        if title != title.strip():
            return None
        para = mdtree.parse(title, _parser(), render=True)
        # the title is parsed as inlines: taken where as a paragraph it is one
        if para is None or not para.startswith("<p>") or para.find("</p>\n") != len(para) - 5:
            return None
        shown = para[3:-5]
    classes = " ".join(["admonition", *(t.lower() for t in types)])
    if marker.startswith("?"):
        classes += " is-collapsible collapsible-" + ("open" if marker.endswith("+") else "closed")
    # its body: as the plugin finds it
    indent = 3 + len(spaces)
    end = at + 1
    was_empty = False
    while end < len(lines):
        line = lines[end]
        lead = len(line) - len(line.lstrip(" "))
        if line.startswith("\t", lead):
            return None  # a tab in its indent: columns, not characters
        empty = lead < indent
        if empty and was_empty:
            break
        was_empty = empty
        if empty and lead < len(line):
            break
        end += 1
    inside = end  # the quote's lines end here
    if end < len(lines):
        if lines[end - 1].strip(" "):
            return None  # the quote would take the next line in (a paragraph's lazy line)
        if lines[end].lstrip(" ").startswith((">", "!!!", "???")):
            # a quote right after: the blank line between is left out of this one (else it goes on),
            # which changes nothing in the body but an unclosed fence's text
            if any("```" in line or "~~~" in line for line in lines[at + 1 : end]):
                return None
            inside = end - 1
    number = len(found)
    found.append(Admonition(classes, shown))
    body = _as_quotes([line[indent:] for line in lines[at + 1 : inside]], found)
    if body is None:
        return None
    out.append(f"> # {_MARK_CHAR}{number}")
    out.extend(f"> {line}" if line else ">" for line in body)
    out.extend(lines[inside:end])
    return end


def _quotes_as_admonitions(html: str, found: list[Admonition]) -> str | None:
    """The Rust renderer's HTML of ``admonitions_as_quotes``' text with each marked quote written as the
    plugin's ``div`` (its title a paragraph of class ``admonition-title``), or None where a mark is not
    where it was put."""
    stack: list[Admonition | None] = []
    seen = 0

    def tag(m: re.Match[str]) -> str:
        nonlocal seen
        if m.group(0).startswith("</"):
            if not stack:
                raise Skip("unbalanced quotes")
            opened = stack.pop()
            return "</div>\n" if opened is not None else m.group(0)
        if m.group(1) is None:
            stack.append(None)
            return m.group(0)
        number = int(m.group(1))
        if number != seen:
            raise Skip("marks out of order")
        seen += 1
        adm = found[number]
        stack.append(adm)
        if adm.title is None:
            return f'<div class="{adm.classes}">\n'
        return f'<div class="{adm.classes}">\n<p class="admonition-title">{adm.title}</p>\n'

    try:
        out = _QUOTE_TAG.sub(tag, html)
    except Skip:
        return None
    if stack or seen != len(found) or _MARK_CHAR in out:
        return None
    # an admonition with neither title nor body: markdown-it-py writes no new line in it (only such a
    # ``div`` ends its start tag's line right before ``</div>``)
    return out.replace('">\n</div>\n', '"></div>\n')
