"""Markdown to HTML: CommonMark, tables, strikethrough, admonitions, heading anchors, fenced code
highlighted by Pygments. Plain pages are rendered by markdown-it-pyrs' renderer, ids, highlighting and
links added to its HTML (``mdfast``); most others parsed by markdown-it-pyrs and their HTML written from
its tree (``mdhtml``); the rest by markdown-it-py's renderer over tokens (``mdtree``'s, or
markdown-it-py's own parse). All give the same HTML.

Relative links are resolved against the source file and left as markers (``@@L:path#frag@@``) that the
build replaces with the target's URL: a page's rendered Markdown then depends only on its own text, so
it can be cached by content hash even when other pages move.
"""

from __future__ import annotations

import hashlib
import html
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlsplit

from .model import ContentText, code_sha, permalink, slugify
from .ntuple import NamedTuple

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.rules_core import StateCore
    from markdown_it.token import Token
    from pygments.lexer import Lexer
    from pygments.token import _TokenType

    from . import mdhtml

# The Markdown libraries (and ``mdhtml``/``mdtree``, which import them) are imported where a page is
# rendered: a rebuild that renders no page (nothing changed) never loads them.

# Pygments is imported where a block is highlighted, not here: a rebuild whose code blocks are all
# known from the state (``Code``) never lexes, and importing Pygments' lexer tables and styles was a
# fifth of a one-page rebuild's imports (the stylesheet comes from the state too, ``build``).

#: bump when the HTML this module produces changes, so cached renders are redone
VERSION = "10"
MORE = "<!--more-->"
MARKER = re.compile(r"@@L:([^@]*)@@")
#: links in raw HTML written in the Markdown (quoted or unquoted values): checked and resolved like
#: Markdown links
RAW_LINK = re.compile(
    r"""(\b(?:href|src)\s*=\s*)(?:(["'])([^"'<>]*)\2|([^\s"'<>=`]+))|(\bsrcset\s*=\s*)(["'])([^"'<>]*)\6""",
    re.I,
)
#: the same, or an HTML comment (group 1; an unclosed one runs to the end of this piece of HTML, as
#: it does in a browser), or any other quoted attribute value (its ``<!--`` is no comment): a link in
#: a comment is not a link (a README's commented-out template code is not checked)
RAW_LINK_OR_COMMENT = re.compile(
    r"""(<!--[\s\S]*?(?:-->|\Z))|(\b(?:href|src)\s*=\s*)(?:(["'])([^"'<>]*)\3|([^\s"'<>=`]+))"""
    r"""|(\bsrcset\s*=\s*)(["'])([^"'<>]*)\7|=\s*(?:"[^"]*"|'[^']*')""",
    re.I,
)
#: a srcset candidate's URL (group 2), after the start or a comma and white space (group 1)
_SPACES = re.compile(r"\s+")
SRCSET_URL = re.compile(r"((?:^|,)\s*)([^\s,]+)")
#: raw HTML links left as they are (neither resolved nor checked)
SKIPPED_SCHEMES = ("mailto:", "tel:", "data:", "javascript:")


class Link(NamedTuple):
    target: str  # marker path ("docs/a.md#x"), site path ("/docs/"), "#frag", or absolute URL
    line: int  # line in the source file (1-based)
    kind: str  # "content" | "site" | "anchor" | "external" | "invalid" (not a URL: urlsplit refuses it)


class Rendered(NamedTuple):
    html: str
    excerpt_html: str
    excerpt_text: str
    h1: str | None
    toc: list[tuple[int, str, str]]  # (level, id, text) for h2/h3
    ids: list[str]  # every heading id, for anchor checks
    links: list[Link]
    code: dict[str, str]  # its highlighted blocks by code_key
    search: ContentText | None = None  # what the search index reads of ``html`` (``mdfast``/``mdhtml`` pages)


@lru_cache(maxsize=256)
def _lexer(lang: str) -> Lexer | None:
    # Pygments looks lexers up by scanning its tables; a site uses a handful of languages thousands of
    # times, so keep the instances.
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    from . import lexfast, refirst  # import Pygments' lexer module: here, where a block is lexed

    try:
        # lexfast: the same tokens, each state's rules tried by one regex (a third of the time); the
        # lexer's patterns are compiled here, at its class's first instance, and their parses read
        # for lexfast's rule filter then (``refirst.noting``), not parsed again when a state is joined
        with refirst.noting():
            return lexfast.speed_up(get_lexer_by_name(lang, stripnl=False, ensurenl=False))
    except ClassNotFound:
        return None


def warm_lexer(lang: str, *, many: bool = False, samples: Iterable[str] = ()) -> None:
    """Make (and keep) the lexer of ``lang`` now, with what its first block would import; ``many``:
    this process will highlight many blocks in it (``lexfast.join_early``); ``samples``: blocks in it
    to highlight now (kept by ``_highlighted``), which make the states and alternations real code
    meets, not only those of a word."""
    if many:
        from . import lexfast

        # its rules' patterns compiled as its states need them: joined at once, most never alone
        with lexfast.lazy_rules():
            lexer = _lexer(lang)
            if lexer is not None:
                lexfast.join_early(lexer)
    else:
        lexer = _lexer(lang)
    if lexer is not None:
        _spans(lexer, "x\n")
        for code in samples:
            _highlighted(lang, code)


def warm_lexers(
    langs: Sequence[tuple[str, bool, Sequence[str]]],
    jobs: int = 1,
    meanwhile: Callable[[], object] | None = None,
) -> bool:
    """``warm_lexer`` of each (language, many, samples), the costliest first. With more than one job,
    while ``recache.kept`` records the compiled patterns and holds none from an earlier build (a cold
    build: the lexers were the longest serial step before the render workers fork, ~0.07 CPU-s for
    the synthetic corpus's Python, bash and YAML, ~0.17 for the prose corpus's 18 languages), a forked
    process makes them while this one does ``meanwhile`` (the builder's own work; and makes the
    Markdown parser, ``mdfast._parser``), then both take the
    next language until none is left (``parallel.fork_map``); the forked one hands back the patterns
    it compiled (``recache.Patterns.made_since``), from which this process makes those languages'
    lexers as they come without parsing a pattern again (a fifth of the cost). The render workers fork
    after this: every lexer is made here once, as without the fork. A language the forked process
    fails on is made here as it would be without it (its error, if any, is this process's). Returns
    whether ``meanwhile`` was done (only where the work was forked)."""
    from . import recache
    from .parallel import fork_map

    patterns = recache.active()
    if jobs <= 1 or len(langs) < 2 or patterns is None or patterns.known:
        for lang, many, samples in langs:
            warm_lexer(lang, many=many, samples=samples)
        return False

    def mine() -> None:
        if meanwhile is not None:
            meanwhile()
        # the Rust parser made now, not by the render step's first page before the render workers
        # fork (~4 ms of serial time: importing markdown_it_pyrs)
        from . import mdfast

        mdfast._parser()

    # Pygments is imported by each process, not before the fork: here after ``meanwhile``, while the
    # forked one makes the first lexers (serial time no more)
    def arrived(run: int, results: list[Any]) -> None:
        # a language the forked process made, made here from its patterns as soon as they come
        # (``size=1``, ``first=False``: run n is language n), while it makes the next; every run of
        # the child's comes through here (``fork_map`` raises for one that did not come)
        (entries,) = results
        if entries is not None:
            lang, many, samples = langs[run]
            patterns.add(entries)
            warm_lexer(lang, many=many, samples=samples)

    shared = (os.getpid(), patterns)
    fork_map(_warm_forked, shared, langs, 2, 2, mine, size=1, first=False, arrived=arrived)
    return True


def _warm_forked(shared: tuple[int, Any], item: tuple[str, bool, Sequence[str]]) -> dict[str, bytes] | None:
    """``warm_lexers``' work on a language: in the process that forked, the lexer made (None back);
    in the forked one, the entries of the patterns it compiled for it (None: it failed)."""
    parent, patterns = shared
    lang, many, samples = item
    if os.getpid() == parent:
        warm_lexer(lang, many=many, samples=samples)
        return None
    before = len(patterns.made)
    try:
        warm_lexer(lang, many=many, samples=samples)
    except Exception:  # made again by the process that forked this one, which reports what is wrong
        return None
    return patterns.made_since(before)  # type: ignore[no-any-return]


_CLASS: dict[_TokenType, str] = {}


def _css_class(ttype: _TokenType) -> str:
    cls = _CLASS.get(ttype)
    if cls is None:
        from pygments.token import STANDARD_TYPES

        t = ttype
        while t not in STANDARD_TYPES:
            t = t.parent
        cls = STANDARD_TYPES[t]
        cls = "" if cls == "w" else cls
        _CLASS[ttype] = cls
    return cls


def _tokens(lexer: Lexer, code: str) -> Iterator[tuple[int, _TokenType, str]]:
    """What ``lexer.get_tokens(code)`` yields, as ``get_tokens_unprocessed``'s (offset, type, text):
    where the lexer has Pygments' own ``get_tokens`` and no filters, that method only cleans the
    input up and drops the offset in a generator of its own, one more resume per token (~0.01 CPU-s
    of the bench corpus's 120,000); the lexer's own tokens are read directly then."""
    from pygments.lexer import Lexer as Base

    if lexer.filters or type(lexer).get_tokens is not Base.get_tokens:
        return ((0, ttype, value) for ttype, value in lexer.get_tokens(code))
    return iter(lexer.get_tokens_unprocessed(lexer._preprocess_lexer_input(code)))


def _spans(lexer: Lexer, code: str) -> str:
    """Pygments tokens as ``<span class="…">`` runs with the standard short class names (the ones
    ``HtmlFormatter.get_style_defs`` styles). Pygments' own HtmlFormatter does the same with line
    bookkeeping we do not use and costs more than the lexing; runs of one class are merged.

    The runs are marked with control characters the code does not hold and the block is escaped in
    one pass, then the marks become tags: an ``html.escape`` call per run (~100,000 in the 1,000-page
    bench corpus) cost a quarter of this function's time after the lexing."""
    if "\x00" in code or "\x01" in code or "\x02" in code:
        return _spans_escaped(lexer, code)
    out: list[str] = []
    run: list[str] = []
    current = ""
    known = _CLASS  # a token type's class without a call per token (most of a block's tokens)
    for _pos, ttype, value in _tokens(lexer, code):
        cls = known.get(ttype)
        if cls is None:
            cls = _css_class(ttype)
        if cls != current and run:
            out.append(f"\x00{current}\x01{''.join(run)}\x02" if current else "".join(run))
            run = []
        current = cls
        run.append(value)
    if run:
        out.append(f"\x00{current}\x01{''.join(run)}\x02" if current else "".join(run))
    text = html.escape("".join(out), quote=False)
    return text.replace("\x00", '<span class="').replace("\x01", '">').replace("\x02", "</span>")


def _spans_escaped(lexer: Lexer, code: str) -> str:
    # ``_spans`` for code holding one of its marks: each run escaped on its own
    out: list[str] = []
    run: list[str] = []
    current = ""
    for _pos, ttype, value in _tokens(lexer, code):
        cls = _css_class(ttype)
        if cls != current and run:
            text = html.escape("".join(run), quote=False)
            out.append(f'<span class="{current}">{text}</span>' if current else text)
            run = []
        current = cls
        run.append(value)
    if run:
        text = html.escape("".join(run), quote=False)
        out.append(f'<span class="{current}">{text}</span>' if current else text)
    return "".join(out)


@lru_cache(maxsize=8192)
def _highlighted(lang: str, code: str) -> str:
    # Keyed by the block's content: the same snippet on many pages (install commands, config
    # excerpts) is lexed once per process; across builds, ``Code`` finds it in the state.
    lexer = _lexer(lang) if lang else None
    body = _spans(lexer, code) if lexer is not None else html.escape(code, quote=False)
    cls = f' class="language-{html.escape(lang)}"' if lang else ""
    return f'<pre class="highlight"><code{cls}>{body}</code></pre>\n'


@lru_cache(maxsize=1)
def code_salt() -> bytes:
    # what a highlighted block depends on besides its language and text: this code, lexfast's (and
    # the rule filter it uses) and Pygments'
    import pygments  # its package module only: no lexer tables

    code = hashlib.sha256()
    for name in ("markdown.py", "lexfast.py", "refirst.py"):
        code.update(code_sha(name).encode())
    return f"{VERSION}\0{pygments.__version__}\0".encode() + code.digest()


def code_key(lang: str, code: str) -> str:
    """sha256 of the salt, the language, a NUL and the code: the salt's part hashed once (a copy of it
    updated with the block's, not the three joined and hashed whole: ~1/3 of the time, ~3,000 blocks
    at 1,000 pages)."""
    h = _salted(code_salt()).copy()
    h.update(f"{lang}\0{code}".encode())
    return h.hexdigest()


@lru_cache(maxsize=1)
def _salted(salt: bytes) -> hashlib._Hash:
    # by the salt's value: a new salt (``code_salt.cache_clear``, the code edited) is hashed anew
    return hashlib.sha256(salt)


class Code:
    """The highlight hook for one page: each fenced block's HTML from ``known`` (blocks highlighted by
    earlier builds, by ``code_key``; lexing is most of a page's render, and a fresh process also builds
    every lexer's regexes first), else made now. ``used`` collects the page's blocks."""

    def __init__(self, known: Mapping[str, str]):
        self.known = known
        self.used: dict[str, str] = {}

    def __call__(self, code: str, lang: str, attrs: Any) -> str:
        lang = (lang or "").strip().split()[0].lower() if lang else ""
        key = code_key(lang, code)
        out = self.known.get(key)
        if out is None:
            out = _highlighted(lang, code)
        self.used[key] = out
        return out


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    from markdown_it import MarkdownIt
    from mdit_py_plugins.admon import admon_plugin  # only pages the Rust parser cannot take need it

    from . import mdbudget

    md = MarkdownIt("commonmark")
    md.enable(["table", "strikethrough"])
    md.use(admon_plugin)
    mdbudget.hold_to_budget(md)  # a page that would cost it too much: one line, early
    # ``_heading_ids`` makes the ids; ``render`` adds the permalinks (``model.permalink``, as the Rust paths)
    md.core.ruler.push("anchor", _heading_ids)
    # this parser's own copy of the helpers (the rules call ``state.md.helpers.parseLinkLabel``): the
    # module itself stays markdown-it-py's for any other parser
    helpers = ModuleType(md.helpers.__name__)
    helpers.__dict__.update(vars(md.helpers), parseLinkLabel=_link_label(md.helpers.parseLinkLabel))
    md.helpers = helpers
    return md


def _link_label(parse_label: Callable[..., int]) -> Callable[..., int]:
    """markdown-it-py's ``parseLinkLabel`` that answers "no label" at once where no ``]`` follows the
    ``[``. The link and image rules call it at every ``[`` and it walks on to the paragraph's end,
    each step a ``skipToken`` that tries every inline rule, nested up to ``maxNesting`` labels deep:
    a 200 KB paragraph of ``![`` took 3 CPU-s (~40 ``skipToken`` calls a character; 1 MiB: ~15 s).
    Without a ``]`` after it the walk finds none (same answer; the ``skipToken`` positions it would
    have cached all lie past a ``[`` with no ``]`` after it either, whose label this answers too)."""

    def label(state: Any, start: int, disableNested: bool = False) -> int:
        # kept in the state's own cache of skipped positions (ints): a new attribute on the state
        # would unshare its __dict__'s keys and slow every attribute read of the parse (~60% measured)
        cache = state.cache
        last = cache.get("]")
        if last is None:
            last = cache["]"] = state.src.rfind("]")
        if last <= start:
            return -1
        return parse_label(state, start, disableNested)

    return label


@lru_cache(maxsize=1)
def _after_parse() -> MarkdownIt:
    """The core rules that run after block and inline parsing (text_join, heading anchors), for tokens
    the Rust parser made (``mdtree``)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark")
    md.core.ruler.push("anchor", _heading_ids)
    md.disable(["normalize", "block", "inline"])
    return md


def _heading_ids(state: StateCore) -> None:
    """A core rule: every heading's id, the one the anchors plugin (``mdit_py_plugins.anchors``, at
    every level, ``slugify``) gives and the Rust paths give (their title: the text and inline code of
    the heading), made by the Rust paths' ``mdhtml.Ids``. The plugin tried every suffix from 1 again
    for each heading: n identical headings took n²/2 tries (10,000: 14 CPU-s; pr17a finding 8)."""
    from . import mdhtml

    ids = mdhtml.Ids()
    tokens = state.tokens
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and not tok.attrGet("id"):
            children = tokens[i + 1].children or ()
            title = "".join(c.content for c in children if c.type in ("text", "code_inline"))
            tok.attrSet("id", ids.take(slugify(title)))


def parse(text: str, env: dict[str, Any]) -> tuple[list[Token], MarkdownIt]:
    """markdown-it-py's tokens for ``text``: from the Rust parser when ``mdtree`` has a rule for every
    construct in it (much faster), else from markdown-it-py itself; the same tokens either way. With
    the parser whose renderer renders them (the Rust path's has no admonition rules: it has none of
    their tokens, and the plugin is then not even imported)."""
    from markdown_it.rules_core import StateCore

    from . import mdtree

    tokens = mdtree.tokens(text)
    if tokens is None:
        md = _parser()
        tokens = md.parse(text, env)
        mdtree.check_depth(tokens)  # nesting it would drop: one line, not lost content
        return tokens, md
    post = _after_parse()
    post.core.process(StateCore(text, post, env, tokens))
    return tokens, post


def _inline_text(tok: Token) -> str:
    parts = []
    for c in tok.children or ():
        if c.type in ("text", "code_inline"):
            parts.append(c.content)
        elif c.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return "".join(parts).strip()


@lru_cache(maxsize=8192)  # (pure; a directory's pages link to the same targets)
def _resolve(href: str, src_dir: str, base_path: str) -> tuple[str, str]:
    """(new href, kind) for a link written in a source file in ``src_dir`` (content-relative)."""
    if href.startswith("#"):  # (no scheme: ``urlsplit``, a fifth of a link's time, not needed)
        return href, "anchor"
    try:
        parts = urlsplit(href)
    except ValueError:  # ``http://[oops/``: the link check reports it with its file:line
        return href, "invalid"
    if parts.scheme or href.startswith("//"):
        return href, "external"
    if href.startswith("/"):
        return base_path.rstrip("/") + href, "site"
    path = posixpath.normpath(posixpath.join(src_dir, unquote(parts.path)))
    frag = f"#{parts.fragment}" if parts.fragment else ""
    return f"@@L:{path}{frag}@@", "content"


def _target(new: str, kind: str) -> str:
    """A resolved link's target for the link check: a content link's marker path (``MARKER``'s group),
    sliced where the marker is the whole of ``new`` (``MARKER.sub`` cost ~2.5 us a link)."""
    if kind != "content":
        return new
    inner = new[4:-2]
    return inner if "@" not in inner else MARKER.sub(r"\1", new)


def raw_links(
    html_text: str,
    line: int,
    resolve: Callable[[str], tuple[str, str]],
    record: Callable[[str, str, int], None],
) -> str:
    """Raw HTML with its ``href``/``src`` values resolved like Markdown links (``resolve(href)``: the new
    href and its kind), each recorded for the check as ``record(new, kind, its line)``, ``line`` being
    the HTML's first. Both paths' one rule (this module's tokens, ``mdhtml``'s tree)."""

    # groups 2-4 of RAW_LINK_OR_COMMENT are RAW_LINK's 1-3; without a comment in the text, RAW_LINK alone
    base = 1 if "<!--" in html_text else 0

    def one(m: re.Match[str]) -> str:
        if m.group(base + 5) is not None:  # a quoted srcset: each candidate's URL (before its descriptor)
            at = line + html_text.count("\n", 0, m.start())

            def candidate(c: re.Match[str]) -> str:
                url = c.group(2)
                if url.startswith(SKIPPED_SCHEMES):
                    return c.group(0)
                new, kind = resolve(url)
                record(new, kind, at)
                return c.group(1) + new

            value = SRCSET_URL.sub(candidate, m.group(base + 7))
            return f"{m.group(base + 5)}{m.group(base + 6)}{value}{m.group(base + 6)}"
        # quoted (groups base + 2, 3) or unquoted (base + 4: written back quoted)
        href = m.group(base + 3) or m.group(base + 4)
        if not href or href.startswith(SKIPPED_SCHEMES):  # (a comment has neither group)
            return m.group(0)
        new, kind = resolve(href)
        record(new, kind, line + html_text.count("\n", 0, m.start()))
        quote = m.group(base + 2) or '"'
        return f"{m.group(base + 1)}{quote}{new}{quote}"

    return (RAW_LINK_OR_COMMENT if base else RAW_LINK).sub(one, html_text)


def _raw_links(
    html_text: str, line: int, src_dir: str, base_path: str, first_line: int, out: list[Link]
) -> str:
    """``raw_links`` on markdown-it-py's path: links recorded in ``out`` (file lines)."""

    def record(new: str, kind: str, at: int) -> None:
        out.append(Link(_target(new, kind), first_line + at, kind))

    return raw_links(html_text, line, lambda href: _resolve(href, src_dir, base_path), record)


#: characters after the last link found that the next one is looked for in first
_NEAR = 4096


class _LineFinder:
    """The line of each link of one block, the links taken in order: the search starts where the last
    one was found (each link from the block's first line made a paragraph of 20k links 20k² line
    tests: 13 s). An href not written as is ('<a b>' -> 'a%20b') is not found: the link is given the
    line of the last one found. Past ``_NEAR`` characters on, a block searches at most a few times its
    length in all (a link not found is searched for to the block's end)."""

    def __init__(self, lines: list[str], start: int, end: int):
        self.start = start
        self.block = "\n".join(lines[start:end])
        self.pos = 0
        self.line = start
        self.budget = 4 * len(self.block) + 4096

    def __call__(self, href: str) -> int:
        if not href:
            return self.line
        at = self.block.find(href, self.pos, self.pos + _NEAR + len(href))
        if at < 0 and self.budget > 0:
            at = self.block.find(href, self.pos)
            self.budget -= (at if at >= 0 else len(self.block)) - self.pos
        if at >= 0:
            self.line += self.block.count("\n", self.pos, at)
            self.pos = at + len(href)  # (the next link is further on: one of the same href too)
        return self.line


def render(
    text: str, *, src_path: str, first_line: int, base_path: str, known_code: Mapping[str, str] | None = None
) -> Rendered:
    """Render a page body. ``src_path`` is content-relative ('docs/a.md'); lines are file lines;
    ``known_code``: highlighted blocks by ``code_key`` (``Rendered.code`` of earlier renders)."""
    code = Code(known_code or {})
    src_dir = posixpath.dirname(src_path)
    fast = _render_rust(text, code, src_dir, first_line, base_path)
    if fast is not None:
        return fast
    from markdown_it.utils import OptionsDict, OptionsType

    env: dict[str, Any] = {}
    tokens, md = parse(text, env)
    options = OptionsDict(cast(OptionsType, dict(md.options)))
    options["highlight"] = code
    lines = text.splitlines()
    links: list[Link] = []
    ids: list[str] = []
    toc: list[tuple[int, str, str]] = []
    h1: str | None = None
    more_at: int | None = None
    first_para: tuple[int, int] | None = None
    headings: list[tuple[Token, str]] = []  # (inline token, id): their permalinks added below
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            hid = str(tok.attrGet("id") or "")
            title = _inline_text(tokens[i + 1])
            ids.append(hid)
            headings.append((tokens[i + 1], hid))
            level = int(tok.tag[1])
            if level == 1 and h1 is None:
                h1 = title
            elif level in (2, 3):
                toc.append((level, hid, title))
        elif tok.type == "html_block" and tok.content.strip() == MORE and more_at is None:
            more_at = i
        elif tok.type == "paragraph_open" and first_para is None and tok.level == 0:
            first_para = (i, i + 3)
        elif tok.type == "html_block":
            tok.content = _raw_links(
                tok.content, tok.map[0] if tok.map else 0, src_dir, base_path, first_line, links
            )
        elif tok.type == "inline":
            start = tok.map[0] if tok.map else 0
            end = tok.map[1] if tok.map else start + 1
            line_of = _LineFinder(lines, start, end)
            for child in tok.children or ():
                if child.type == "html_inline":
                    child.content = _raw_links(child.content, start, src_dir, base_path, first_line, links)
                attr = "href" if child.type == "link_open" else "src" if child.type == "image" else None
                if attr is None:
                    continue
                href = str(child.attrGet(attr) or "")
                new, kind = _resolve(href, src_dir, base_path)
                child.attrSet(attr, new)
                target = _target(new, kind)
                links.append(Link(target, first_line + line_of(href), kind))
    # each heading's permalink, after the links were resolved (it is none of the page's)
    from markdown_it.token import Token as MdToken

    from . import mdtree

    for inline, hid in headings:
        anchor = MdToken("html_inline", "", 0, content=" " + permalink(mdtree.escape(hid)))
        inline.children = [*(inline.children or ()), anchor]
    body = md.renderer.render(tokens, options, env)
    if more_at is not None:
        excerpt_tokens = _without_headings(tokens[:more_at])
    elif first_para is not None:
        excerpt_tokens = tokens[first_para[0] : first_para[1]]
    else:
        excerpt_tokens = []
    excerpt_html = md.renderer.render(excerpt_tokens, options, env) if excerpt_tokens else ""
    excerpt_text = " ".join(_inline_text(t) for t in excerpt_tokens if t.type == "inline")
    return Rendered(
        html=body,
        excerpt_html=excerpt_html,
        excerpt_text=re.sub(r"\s+", " ", excerpt_text).strip(),
        h1=h1,
        toc=toc,
        ids=ids,
        links=links,
        code=code.used,
    )


def _render_rust(text: str, code: Code, src_dir: str, first_line: int, base_path: str) -> Rendered | None:
    """``render`` from markdown-it-pyrs' HTML (``mdfast``) or its tree (``mdhtml``; several times faster
    than markdown-it-py's parse and render), or None for a page neither can take."""
    from . import mdfast, mdhtml

    def highlight(content: str, lang: str) -> str:
        return code(content, lang, None)

    def resolve(href: str) -> tuple[str, str]:
        return _resolve(href, src_dir, base_path)

    # a plain page from the Rust renderer's HTML, else from the Rust parser's tree
    parts = mdfast.render_parts(text, slugify=slugify, highlight=highlight, resolve=resolve)
    if parts is None:
        parts = mdhtml.render_parts(text, slugify=slugify, highlight=highlight, resolve=resolve)
    if parts is None:
        return None
    links = [Link(_target(new, kind), first_line + line, kind) for new, kind, line in parts.links]
    h1 = next((h.title for h in parts.headings if h.level == 1), None)
    pairs = zip(parts.headings, parts.ids, strict=True)
    toc = [(h.level, hid, h.title) for h, hid in pairs if h.level in (2, 3)]
    excerpt_html = excerpt_text = ""
    if parts.excerpt is not None:
        excerpt_html, excerpt_text = parts.excerpt
    elif parts.excerpt_nodes:
        excerpt_html, excerpt_text = _rust_excerpt(parts, code, src_dir, first_line, base_path)
    return Rendered(
        html=parts.html,
        excerpt_html=excerpt_html,
        excerpt_text=_SPACES.sub(" ", excerpt_text).strip(),
        h1=h1,
        toc=toc,
        ids=parts.ids,
        links=links,
        code=code.used,
        search=parts.search,
    )


def _rust_excerpt(
    parts: mdhtml.Parts, code: Code, src_dir: str, first_line: int, base_path: str
) -> tuple[str, str]:
    """The excerpt's HTML and text: its few blocks rendered by ``mdtree.render_light`` (markdown-it-py
    not imported), or by markdown-it-py's renderer where that has no rule (a code block, an image)."""
    from . import mdtree

    tokens = _excerpt_tokens(parts, mdtree.Tok, src_dir, first_line, base_path)
    text = " ".join(_inline_text(t) for t in tokens if t.type == "inline")
    shown = mdtree.render_light(tokens)
    if shown is None:
        from markdown_it.utils import OptionsDict, OptionsType

        md = _after_parse()
        options = OptionsDict(cast(OptionsType, dict(md.options)))
        options["highlight"] = code
        shown = md.renderer.render(_excerpt_tokens(parts, None, src_dir, first_line, base_path), options, {})
    return shown, text


def _excerpt_tokens(
    parts: mdhtml.Parts, make: type[Any] | None, src_dir: str, first_line: int, base_path: str
) -> list[Any]:
    """The excerpt's blocks as tokens of class ``make`` (None: markdown-it-py's), links resolved as in
    the page."""
    flat = parts.flat
    assert flat is not None  # (a page with excerpt nodes comes from the tree)
    flat.out, flat.make = [], make
    flat.blocks(parts.excerpt_nodes, 0)
    for tok in flat.out:
        if tok.type == "html_block":
            tok.content = _raw_links(tok.content, 0, src_dir, base_path, first_line, [])
        for child in tok.children or ():
            if child.type == "html_inline":
                child.content = _raw_links(child.content, 0, src_dir, base_path, first_line, [])
            attr = "href" if child.type == "link_open" else "src" if child.type == "image" else None
            if attr is not None:
                child.attrSet(attr, _resolve(str(child.attrGet(attr) or ""), src_dir, base_path)[0])
    # a list item's or a quote's headings too (``_excerpt_nodes`` leaves out the top-level ones), as on
    # markdown-it-py's path
    return _without_headings(flat.out)


def _without_headings(tokens: list[Token]) -> list[Token]:
    # Excerpts appear on list pages beside other excerpts: their headings' ids would collide there.
    out: list[Token] = []
    skip = False
    for tok in tokens:
        if tok.type == "heading_open":
            skip = True
        elif tok.type == "heading_close":
            skip = False
        elif not skip:
            out.append(tok)
    return out


def pygments_css(style: str) -> str:
    """The highlighting stylesheet: light, and dark when the reader chose it (``data-theme``) or, without
    a choice, when the system prefers it."""
    from pygments.formatters import HtmlFormatter

    light = HtmlFormatter(style=style).get_style_defs(".highlight")
    chosen = HtmlFormatter(style="github-dark").get_style_defs(':root[data-theme="dark"] .highlight')
    system = HtmlFormatter(style="github-dark").get_style_defs(':root:not([data-theme="light"]) .highlight')
    system_rules = "\n".join("  " + line for line in system.splitlines())
    return f"{light}\n{chosen}\n@media (prefers-color-scheme: dark) {{\n{system_rules}\n}}\n"
