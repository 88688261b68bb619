"""Step 5 of a site build: the search index, written by the site itself from the built pages.

What the browser gets (``static/assets/search.js`` reads it; ``site.js`` loads that script on first
use), under ``search-index/``:

- ``shards.json``: the shards (below), each with its word statistics (sections, total length), the
  first word of each of its buckets (``starts``) and their names (``buckets``); the only file every
  query loads;
- ``<shard>b/<hash>.json``: a bucket, named by its content: the postings of a run of words (Porter
  stems, in the order JavaScript compares strings) of about 13 KiB (cut where the words say, ``_cut``):
  word -> ``[[page, [section, length, heading length, first position, deltas…], …], …]``; a query
  loads the bucket of each of its words per shard, a prefix query ("conf*") the buckets its words can
  be in;
- ``<shard>meta.json``: where the shard's pages' fragments are: ``packs`` (the names of its fragment
  files) and ``first`` (the page, in posting order, each file starts with);
- ``<shard>f/<hash>.json``: the fragments of a run of pages, in page order (about ``PACK_BYTES``): a
  page's fragment is its URL, title and each section (heading ``id``, heading, text); a file is loaded
  only for the pages a query shows (excerpts, and the heading the result links to). Packed, not one
  file per page: a file per page was most of the index's files, and creating a file costs more than
  writing its bytes (ext4 allocates an inode; where many were deleted lately it searches for one).

A page is cut into sections at its h2/h3 headings (the part before the first one is the page's own,
headed by its h1; the rule is ``model.heading_role``, which the Markdown renderers' text follows), so
results link to the heading that answers the query. A section's words are its heading's (positions from
0) then its text's (after a gap, so a phrase never spans both): positions serve phrase queries ("pin a
tag" in quotes), the heading length weighs words of headings up. Every word is kept, one-letter ones
included ("stratum 1"); stemming is ``stemmer.py``'s, mirrored in the script. Only what a page marks
``data-search-body`` is read (the article), minus the elements marked ``data-search-ignore``
(breadcrumbs, sidebars, TOC, permalink signs), scripts and styles.

Incremental: a page's extract (fragment + postings) is kept in the state under the page's output
fingerprint. The write step makes it from the page it renders (``page_extract``; ``missing`` says which
pages need one), so a page is read back from the output only when the state lost its extract. From
``SHARD_FROM`` pages on, the pages are cut into shards of whole folders in path order (at least
``SHARD_PAGES`` pages, at most ``MAX_SHARDS``),
the first under ``search-index/``, the others under ``search-index/more/<id>/``; a shard's files are
made again only when one of its pages changed (its key: the pages' paths and fingerprints), and
written only where their bytes changed. Every file is a pure function of its shard's pages, so an
incremental index is byte for byte a clean one. The browser adds the shards' statistics, so ranking
does not depend on the cut.
"""

from __future__ import annotations

import functools
import html
import itertools
import json
import pickle
import re
import zlib
from collections.abc import Callable, Container, Mapping
from pathlib import Path
from typing import Any, Protocol

from .cache import State, search_extracts_at
from .model import HEADING_ROLES, PERMALINK_IGNORED, SECTION, TITLE, ContentText, heading_role, sha
from .ntuple import NamedTuple
from .output import (
    files_in_changed_folders,
    folder_rows,
    matches,
    prune_emptied,
    with_parents,
    write_output,
)
from .parallel import fork_map
from .stemmer import stems

PREFIX = "search-index/"
MANIFEST = PREFIX + "shards.json"
#: the folder of every shard but the first (``shards``)
MORE = PREFIX + "more/"
#: what the index holds, a page's extract's content included (stemmer, sections): a change here
#: makes every page be read again and every shard again (it is part of both keys)
VERSION = "5"
#: only how the state stores a page's extract (``page_extract``): a change here makes every page be
#: read again, and changes no index file; a change of what an extract holds bumps ``VERSION``
EXTRACT_VERSION = "5"
#: below this many pages the index is one shard (a query then loads one bucket per word)
SHARD_FROM = 200
#: a shard covers whole folders and at least this many pages (fewer only for the last one)
SHARD_PAGES = 50
#: a query loads one bucket per word from each shard: past this many, shards grow instead
MAX_SHARDS = 16
#: a bucket holds the postings of a run of words (in order): at least BUCKET_MIN bytes (but the last),
#: then it ends before a word whose stable hash hits (one in BUCKET_SPAN bytes of postings) or that
#: would pass BUCKET_MAX (``_cut``): 12-13.5 KiB on average (bench/site_buckets.py; the greedy 16 KiB
#: cut made 12.7-15.2). A small minimum: a hit skipped for it moves the next boundary (a larger one made a
#: one-word edit rewrite several buckets); the maximum bounds what a query loads per word.
BUCKET_MIN = 2 * 1024
BUCKET_SPAN = 14 * 1024
BUCKET_MAX = 24 * 1024
#: a fragment file holds the fragments of a run of pages up to about this many bytes
PACK_BYTES = 24 * 1024
#: hex digits of the content hash that names a bucket or fragments file (``shard_files``)
NAME_HEX = 16

_TAG = re.compile(
    r"<!--.*?(?:-->|\Z)|<(/?)([a-zA-Z][a-zA-Z0-9-]*)([^>\"']*(?:(?:\"[^\"]*\"|'[^']*')[^>\"']*)*)>", re.S
)
_BODY = re.compile(r"<main\b[^>]*\bdata-search-body\b[^>]*>")
_ID = re.compile(r"""\bid\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")
_PRE_END = re.compile(r"</pre\s*>", re.I)
_ANY_TAG = re.compile(r"<[^>]*>")
#: elements nested deeper are read as text (bounds the work per closing tag on hostile pages)
MAX_DEPTH = 256
VOID = frozenset(
    ("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr")
)
SKIP = frozenset(("script", "style", "template", "noscript"))
#: elements that separate words (text of inline ones runs on: <code>cvmfs</code>_config is one word)
BLOCK = frozenset(
    (
        "address", "article", "aside", "blockquote", "br", "dd", "details", "div", "dl", "dt",
        "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main",
        "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr",
        "ul",
    )
)  # fmt: skip


class Shard(NamedTuple):
    bundle: str  # "search-index/" or "search-index/more/<id>/"
    pages: tuple[str, ...]  # output paths of the HTML pages it covers
    key: str  # sha of the pages' paths and fingerprints


class Indexed(NamedTuple):
    rows: list[tuple[str, str, int, int]]  # state rows of every index file
    written: int  # index files written
    removed: list[str]  # index files removed
    shards: int  # shards made again in this build


#: a rendered Markdown page nests fewer elements than this (``mdtree.MAX_DEPTH`` bounds its blocks and
#: its inlines): where the template is deeper, its elements past ``MAX_DEPTH`` would not be tracked
CONTENT_DEPTH = 64


# -- one page ---------------------------------------------------------------------------------------
def sections(
    page: str, content: tuple[str, ContentText] | None = None
) -> tuple[str, list[tuple[str, str, str]]]:
    """The page's title (its first h1) and sections ``(id, heading, text)``: the first is the text
    before any h2/h3 (id "", headed by the title), then one per h2/h3 that has an ``id``.

    ``content``: the rendered Markdown the page holds and its ``ContentText``: the page's HTML is then
    scanned around it (the template's parts), and its text taken from the Markdown stage. Where that
    cannot be the same (it is not found in the page once and at a tag, it is inside an ignored element
    or a heading, the page marks something in it ignored) the whole page is scanned."""
    whole = page
    m = _BODY.search(page)
    if m:
        start = m.end()
        end = page.find("</main>", start)
        page = page[start : end if end >= 0 else len(page)]
    cut = len(page) + 1  # where the content is (past the end: none)
    if content is not None:
        shown, text = content
        at = _once(page, shown) if shown.startswith("<") else -1
        if at < 0 or shown.count("data-search-ignore") != shown.count(PERMALINK_IGNORED):
            return sections(whole)
        cut = at
    title = ""
    secs: list[list[Any]] = [["", None, []]]
    stack: list[str] = []
    heading: list[Any] | None = None  # [tag, id, parts]
    pos = 0
    pre_closed = True  # a </pre> may follow
    while (t := _TAG.search(page, pos)) is not None:
        if t.end() > cut:  # the content: its text from the Markdown stage
            if t.start() != cut or heading is not None or len(stack) > MAX_DEPTH - CONTENT_DEPTH:
                return sections(whole)
            if cut > pos:
                secs[-1][2].append(page[pos:cut])
            secs[-1][2].append(text.lead)
            secs += ([hid, head, [raw]] for hid, head, raw in text.sections)
            title = title or text.title
            pos = cut + len(shown)
            cut = len(page) + 1
            continue
        if t.start() > pos:
            (heading[2] if heading is not None else secs[-1][2]).append(page[pos : t.start()])
        pos = t.end()
        name = (t.group(2) or "").lower()
        if not name:
            continue  # a comment
        if t.group(1):  # a closing tag: close up to the matching element
            if name not in stack:
                continue
            while stack:
                top = stack.pop()
                if heading is not None and top == heading[0]:
                    title = _close_heading(heading, secs, title)
                    heading = None
                if top == name:
                    break
            if name in BLOCK:
                secs[-1][2].append(" ")
            continue
        attrs = t.group(3) or ""
        if name in BLOCK:
            (heading[2] if heading is not None else secs[-1][2]).append(" ")
        if name in VOID or attrs.rstrip().endswith("/"):
            continue
        if name in SKIP or "data-search-ignore" in attrs:
            pos = _skip(page, name, pos)  # sidebars, TOCs: most of a page's tags, skipped in one go
            continue
        if name == "pre" and heading is None and pre_closed:
            # a code block: highlighted, so hundreds of <span>s; its text in one step (no <pre> inside)
            close = _PRE_END.search(page, pos)
            if close is not None:
                secs[-1][2].append(_ANY_TAG.sub("", page[pos : close.start()]) + " ")
                pos = close.end()
                continue
            pre_closed = False  # none further on: not looked for again at each <pre> (quadratic)
        if len(stack) >= MAX_DEPTH:
            continue  # past MAX_DEPTH elements are not tracked: a closing tag costs at most that
        stack.append(name)
        if heading is None and name in HEADING_ROLES:  # (other headings are text: not tracked)
            idm = _ID.search(attrs)
            hid = html.unescape(next(g for g in idm.groups() if g is not None)) if idm else ""
            heading = [name, hid, []]
    if cut <= len(page):  # the content was in an element skipped whole
        return sections(whole)
    if pos < len(page):
        secs[-1][2].append(page[pos:])
    if heading is not None:
        title = _close_heading(heading, secs, title)
    out = [(hid, head if head is not None else title, _clean("".join(parts))) for hid, head, parts in secs]
    return title, out


#: how much of the content ``_once`` looks for first
HEAD = 64


def _once(page: str, shown: str) -> int:
    """Where ``shown`` is in ``page`` if it is there exactly once, else -1. Its first ``HEAD``
    characters are looked for first: where they are in the page once, so is ``shown`` at most. A
    search for the whole content (~6 KB), twice to know it is there once, cost 2.5x as much (the
    string search prepares a long needle first)."""
    head = shown[:HEAD]
    at = page.find(head)
    if at < 0:
        return -1
    if page.find(head, at + 1) < 0:
        return at if page.startswith(shown, at) else -1
    at = page.find(shown)
    return at if at >= 0 and page.find(shown, at + 1) < 0 else -1


@functools.lru_cache(maxsize=64)
def _same(name: str) -> re.Pattern[str]:
    # bounded: a page may hold any number of tag names (the process may be a long ``site serve``)
    return re.compile(rf"<(/?){re.escape(name)}(?=[\s/>])[^>]*>", re.I)


def _skip(page: str, name: str, pos: int) -> int:
    """Where the element ``name`` opened before ``pos`` ends (after its closing tag; the page's end if
    it is not closed): only tags of that name are counted."""
    depth = 1
    for m in _same(name).finditer(page, pos):
        if m.group(1):
            depth -= 1
            if depth == 0:
                return m.end()
        elif name not in SKIP and not m.group(0).endswith("/>"):
            depth += 1
    return len(page)


def _close_heading(heading: list[Any], secs: list[list[Any]], title: str) -> str:
    """Close a heading (``model.heading_role``: a section's start, the title or text); returns the
    page's title."""
    tag, hid, parts = heading
    role = heading_role(tag, hid)
    if role == SECTION:
        secs.append([hid, _clean("".join(parts)), []])
    elif role != TITLE:  # text of its section
        secs[-1][2].extend((" ", *parts, " "))
    return title or (_clean("".join(parts)) if role == TITLE else "")


def _clean(text: str) -> str:
    # runs of whitespace as one space, none at the ends: ``str.split`` (the same whitespace as the
    # regex ``\s``) costs a third of what a substitution, one per space between words, did
    return " ".join(html.unescape(text).split())


def extract(
    page: str, url: str, content: tuple[str, ContentText] | None = None
) -> tuple[bytes, dict[str, str], tuple[int, int]]:
    """A page's fragment (the JSON the browser shows results from), its postings (stem -> its entries
    ``[section, length, heading length, first position, deltas…]`` as JSON, comma-separated, without
    the outer brackets) and (sections with words, words).

    The postings are made as text here: one small string per (section, word) costs less than lists
    of ints encoded afterwards (a JSON encoder call per word was a third of the index's time). A
    stem's text is made as its words come, in page order, as a list of pieces joined once: a word
    adds its distance from the stem's previous position, or, first in its section, the section's
    entry head and its position. A dict of positions per section, each (section, stem) entry then
    formatted and merged into the page's, took ~2.2x as long after the words were cut and stemmed
    (``tests/site/test_site_search.py`` keeps that definition and compares)."""
    frag, at, stats = _postings(page, url, content)
    return frag, {s: "".join(pieces[1:]) + "]" for s, pieces in at.items()}, stats


def _postings(
    page: str, url: str, content: tuple[str, ContentText] | None
) -> tuple[bytes, dict[str, list[Any]], tuple[int, int]]:
    """``extract``'s, each stem's postings still its pieces after its last position (``extract`` joins
    them, ``page_extract`` joins them into its one string)."""
    title, secs = sections(page, content)
    # stem -> [its last word's position on the page (``base`` + in section), its postings' pieces…]
    at: dict[str, list[Any]] = {}
    count = total = base = 0
    # the text of each position in a section and of each distance, subscripted (a call a word cost
    # ~12 % of the loop); a section past their length brings longer ones, made once for the page
    numbers, commas = _NUMBERS, _COMMA_NUMBERS
    for i, (_hid, head, text) in enumerate(secs):
        hw = stems(head)
        tw = stems(text)
        head_len = len(hw)
        length = head_len + len(tw)  # the gap between heading and text (one position) is not counted
        if not length:
            continue
        if length >= len(numbers):
            numbers = [str(n) for n in range(length + 1)]
            commas = ["," + n for n in numbers]
        count += 1
        total += length
        pre = f"[{i},{length},{head_len},"
        again = "]," + pre  # a stem's next section: its entry closed, this one's head
        # positions on the page: the heading's from ``base``, the text's after the gap; the last one
        # kept in the stem's list, not a second dict (one lookup a word fewer: ~6 % of the loop)
        for p, s in itertools.chain(enumerate(hw, base), enumerate(tw, base + head_len + 1)):
            got = at.get(s)
            if got is None:
                at[s] = [p, pre, numbers[p - base]]
            elif (prev := got[0]) >= base:  # in this section already
                got.append(commas[p - prev])
                got[0] = p
            else:
                got += (again, numbers[p - base])
                got[0] = p
        base += length + 1  # past every position of this section
    # the sections' tuples are JSON arrays as they are (no list made of each)
    return _json({"u": url, "t": title or url, "s": secs}), at, (count, total)


#: the decimal text of the positions and distances most sections have, made once, not once per word
_NUMBERS = [str(n) for n in range(4096)]
_COMMA_NUMBERS = ["," + n for n in _NUMBERS]


#: compact JSON, keys sorted; one encoder made once (``json.dumps`` with options makes one a call)
_ENCODE_SORTED = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode


def _json(obj: Any) -> bytes:
    return _ENCODE_SORTED(obj).encode()


def page_url(base_path: str, out: str) -> str:
    if out == "index.html":
        return base_path
    return base_path + (out[: -len("index.html")] if out.endswith("/index.html") else out)


def extract_key(out: str, fp: str) -> str:
    """A page's extract in the state: by its output path and fingerprint (and what the index holds,
    and the extract's format).
    Joined, not hashed: the fingerprint is a hash already and the path is unique to the page, and a
    one-page rebuild makes the key of every page (a sha256 each cost ~2 ms at 1,000 pages)."""
    return f"{VERSION}.{EXTRACT_VERSION} {fp} {out}"


#: a page's extract as a shard reads it (``_page_postings``): (statistics, its words, their postings'
#: text, a line each)
Postings = tuple[tuple[int, int], list[str], str]


def page_extract(
    page: str,
    out: str,
    base_path: str,
    content: tuple[str, ContentText] | None = None,
    into: dict[str, Postings] | None = None,
) -> tuple[bytes, bytes]:
    """What the state keeps of a page: its fragment and its pickled (statistics, words, postings): the
    words one string, a line each, and their postings one string, a line each, each the word's entries
    already JSON and closed as in the shard (``[section, …],…]``: the page's number is all a shard adds in
    front), so that assembling a shard, which a one-page edit does for all of the shard's pages, joins
    strings instead of encoding them again. Two strings rather than a dict: a shard unpickled its pages'
    dicts (300 words a page of prose) and formatted each posting, ~0.045 of 0.175 CPU-s at 1,000 pages
    of prose; a word never holds a line break (words are cut at whitespace).

    ``into``: where the page's postings are also kept as read back from the pickle (``Postings``, by
    ``out``), for a shard made in this process (``write._do_unit``): it then neither unpickles them nor
    cuts the words again (~0.03 CPU-s of 1,000 pages of prose)."""
    frag, at, stats = _postings(page, page_url(base_path, out), content)
    words = "\n".join(at)
    # each stem's entries closed twice: its last entry, and its list (as ``extract``'s + "]"). Joined
    # once for the page: each stem's first item (its last position, needed no more) becomes the
    # separator before it (the first one cut off); a join (and a list slice) per stem cost 3x as much
    entries = ""
    if at:
        for pieces in at.values():
            pieces[0] = "]]\n"
        entries = "".join(itertools.chain.from_iterable(at.values()))[3:] + "]]"
    if into is not None:
        into[out] = (stats, list(at), entries)
    return frag, pickle.dumps((stats, words, entries), protocol=pickle.HIGHEST_PROTOCOL)


def missing(pages: dict[str, str], state: State) -> set[str]:
    """The pages (output path -> fingerprint) whose extract the state does not hold: the write step
    makes theirs from the page it renders (``write.execute``), so no written page is read back."""
    keys = {extract_key(p, fp): p for p, fp in pages.items()}
    return {keys[k] for k in set(keys) - state.search_keys(set(keys))}


def _extract_file(shared: tuple[Path, str], out: str) -> tuple[bytes, bytes]:
    # a page the write step did not render in this build (unchanged since one that did not keep its
    # extract, or copied from static/): read from the output
    out_dir, base_path = shared
    return page_extract((out_dir / out).read_text(encoding="utf-8", errors="replace"), out, base_path)


# -- shards -----------------------------------------------------------------------------------------
def _folder(page: str) -> str:
    # "docs/a/b/index.html" -> "docs/a": a page and its siblings stay together
    parts = page.split("/")
    return "/".join(parts[:-2]) if parts[-1] == "index.html" else "/".join(parts[:-1])


def shards(pages: dict[str, str]) -> list[Shard]:
    """Cut the HTML pages (output path -> fingerprint) into shards of whole folders, in path order."""
    by_folder: dict[str, list[str]] = {}
    for page in sorted(pages):
        by_folder.setdefault(_folder(page), []).append(page)
    size = len(pages) if len(pages) < SHARD_FROM else max(SHARD_PAGES, -(-len(pages) // MAX_SHARDS))
    groups: list[list[str]] = [[]]
    for folder in sorted(by_folder):
        if len(groups[-1]) >= size:
            groups.append([])
        groups[-1].extend(by_folder[folder])
    out = []
    for i, group in enumerate(groups):
        bundle = PREFIX if i == 0 else f"{MORE}{sha('shard', _folder(group[0]))[:12]}/"
        key = sha(VERSION, bundle, *(f"{p} {pages[p]}" for p in group))
        out.append(Shard(bundle, tuple(group), key))
    return out


def _utf16(word: str) -> bytes:
    # the order JavaScript compares strings in (UTF-16 code units), so the script finds a word's bucket
    return word.encode("utf-16-be")


def _cut(words: list[str], pieces: list[str]) -> list[int]:
    """Where the buckets of ``words`` (in order; ``pieces``: their JSON) start: before a word whose hash
    (crc32: stable, unlike ``hash``) hits, with a chance of its piece's bytes in ``BUCKET_SPAN`` (so the
    sizes do not depend on how large words' postings are), once the bucket holds ``BUCKET_MIN`` bytes;
    or before one that would take it past ``BUCKET_MAX``. Cut where the content says (as rsync's
    chunks), not greedily by size: a greedy cut moves every later boundary when one bucket's size
    changes, so a one-word edit rewrote the buckets after it; here a boundary depends only on the words
    just before it, and a forced cut's shift ends at the next word whose hash hits."""
    cuts: list[int] = []
    size = BUCKET_MAX  # the first word starts a bucket
    for i, (w, piece) in enumerate(zip(words, pieces, strict=True)):
        if size + len(piece) > BUCKET_MAX or (
            size >= BUCKET_MIN and zlib.crc32(w.encode()) * BUCKET_SPAN < len(piece) << 32
        ):
            cuts.append(i)
            size = 0
        size += len(piece) + 1
    return cuts


def _page_postings(
    n: int, blob: bytes, parsed: Postings | None = None
) -> tuple[tuple[int, int], list[str], list[str]]:
    """A page's (statistics, words, postings) from its extract (``page_extract``), each posting with
    the page's number ``n`` in the shard in front: ``[n,[section, …],…]``. ``parsed``: the extract as
    ``page_extract`` kept it (``into``), read instead of ``blob``."""
    if parsed is not None:
        stats, listed, entries = parsed
        if not listed:
            return stats, [], []
    else:
        stats, words, entries = pickle.loads(blob)
        if not words:
            return stats, [], []
        listed = words.split("\n")
    # the page's number put before every line of its postings at once
    pre = f"[{n},"
    return stats, listed, (pre + entries.replace("\n", "\n" + pre)).split("\n")


class Merged:
    """A shard's postings as its last ``shard_files`` merged them, kept by a long-running builder
    (``site serve``) so that a rebuild after an edit of some of the shard's pages merges only theirs
    again: merging all of a shard's pages (~100 at 1,000 pages) was the largest part of a one-page
    rebuild's index step. Every file is still made from the whole merge: the same bytes as a cold
    build's. Each page's fragment and extract key are kept too: ``update`` does not read from the
    state the extracts of pages whose key it holds (~100 a one-page rebuild)."""

    __slots__ = ("blobs", "frags", "keys", "merged", "pages", "pieces", "stats", "words")

    def __init__(self, pages: tuple[str, ...]):
        self.pages = pages
        self.frags: list[bytes] = []  # each page's fragment
        self.keys: dict[str, str] = {}  # page -> the key of the extract merged ('' not known)
        self.blobs: list[bytes] = []  # each page's extract blob (what its postings were merged from)
        self.stats: list[tuple[int, int]] = []  # each page's (sections with words, words)
        self.words: list[list[str]] = []  # each page's words
        self.merged: dict[str, dict[int, str]] = {}  # word -> page number -> its posting
        self.pieces: dict[str, str] = {}  # word -> its bucket entry (``"word":[postings]``)

    def add(self, n: int, blob: bytes) -> None:
        """Merge page ``n``'s postings (the pages in order)."""
        stats, words, postings = _page_postings(n, blob)
        self.blobs.append(blob)
        self.stats.append(stats)
        self.words.append(words)
        merged = self.merged
        for w, posting in zip(words, postings, strict=True):
            got = merged.get(w)
            if got is None:
                merged[w] = {n: posting}
            else:
                got[n] = posting

    def replace(self, n: int, blob: bytes) -> None:
        """Page ``n``'s postings replaced by those of ``blob``."""
        merged = self.merged
        touched = set(self.words[n])
        for w in touched:
            was = merged[w]
            del was[n]
            if not was:
                del merged[w]
        stats, words, postings = _page_postings(n, blob)
        for w, posting in zip(words, postings, strict=True):
            got = merged.get(w)
            if got is None:
                merged[w] = {n: posting}
            else:
                got[n] = posting  # (last in the dict: the piece puts it in page order)
        touched.update(words)
        for w in touched:
            now = merged.get(w)
            if now is None:
                self.pieces.pop(w, None)
            else:
                self.pieces[w] = '"' + w + '":[' + ",".join(map(now.__getitem__, sorted(now))) + "]"
        self.blobs[n], self.stats[n], self.words[n] = blob, stats, words


def _merged(
    shard: Shard,
    extracts: Mapping[str, tuple[bytes, bytes]],
    kept: Merged | None,
    keys: Mapping[str, str],
) -> Merged:
    """The shard's postings merged: ``kept`` (the last merge of the same pages) with the pages whose
    extract changed merged again (a page not in ``extracts``: the caller knows ``kept`` holds its
    extract, by its key), or all of them."""
    if kept is not None and kept.pages == shard.pages:
        for n, page in enumerate(shard.pages):
            got = extracts.get(page)
            if got is None:
                continue
            frag, blob = got
            if blob is not kept.blobs[n] and blob != kept.blobs[n]:
                kept.replace(n, blob)
            kept.frags[n] = frag
            kept.keys[page] = keys.get(page, "")
        return kept
    made = Merged(shard.pages)
    for n, page in enumerate(shard.pages):
        frag, blob = extracts[page]
        made.add(n, blob)
        made.frags.append(frag)
        made.keys[page] = keys.get(page, "")
    made.pieces = {w: '"' + w + '":[' + ",".join(got.values()) + "]" for w, got in made.merged.items()}
    return made


def shard_files(
    shard: Shard,
    extracts: Mapping[str, tuple[bytes, bytes]],
    keep: dict[str, Merged] | None = None,
    keys: Mapping[str, str] | None = None,
    parsed: Mapping[str, Postings] | None = None,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """A shard's files (path -> bytes) and its entry in the manifest, from its pages' extracts.
    ``keep``: bundle -> its postings as merged last (``Merged``), used and updated (a builder that
    builds again: ``site serve``); then ``extracts`` may leave out pages it holds, and ``keys`` are the
    pages' extract keys, recorded in it (``update``); ``parsed``: pages' extracts as ``page_extract``
    kept them (``into``), the same as their blobs in ``extracts``."""
    parsed = parsed or {}
    files: dict[str, bytes] = {}
    packs: list[list[bytes]] = []  # runs of pages' fragments, about PACK_BYTES each
    first: list[int] = []  # the page each run starts with
    size = 0
    merged: dict[str, list[str]] = {}  # word -> its pages' postings as JSON, in page order
    count = total = 0
    kept = None
    if keep is not None:
        # taken out while it changes: a merge stopped half-way (an error) is not kept
        kept = _merged(shard, extracts, keep.pop(shard.bundle, None), keys or {})
        count = sum(s for s, _w in kept.stats)
        total = sum(w for _s, w in kept.stats)
    for n, page in enumerate(shard.pages):
        frag, blob = extracts[page] if kept is None else (kept.frags[n], b"")
        if not packs or size + len(frag) > PACK_BYTES:
            packs.append([])
            first.append(n)
            size = 0
        packs[-1].append(frag)
        size += len(frag) + 1
        if kept is not None:
            continue
        (sections_, words_), words, postings = _page_postings(n, blob, parsed.get(page))
        count += sections_  # sections without a word cannot match: not counted
        total += words_
        for w, posting in zip(words, postings, strict=True):
            got = merged.get(w)
            if got is None:
                merged[w] = [posting]
            else:
                got.append(posting)
    # buckets: runs of words in order (``_cut``); the manifest lists each one's first word
    # JavaScript's order (UTF-16 code units): where no word has a character beyond U+FFFF (a surrogate
    # pair in UTF-16), Python's own string order, without a key made for each word
    words_of: Mapping[str, object] = merged if kept is None else kept.merged
    text = "".join(words_of)
    bmp = text.isascii() or max(text, default="") < "\U00010000"
    order = sorted(words_of) if bmp else sorted(words_of, key=_utf16)
    # a word is letters and digits (``stemmer.WORD``): its JSON is itself in quotes, which an encoder
    # call per word (~34,000 at 1,000 pages) only confirmed
    if kept is None:
        pieces = ['"' + w + '":[' + ",".join(merged[w]) + "]" for w in order]
    else:
        pieces = [kept.pieces[w] for w in order]
    cuts = _cut(order, pieces)
    starts = [order[a] for a in cuts]
    buckets = []
    for a, b in itertools.pairwise([*cuts, len(order)]):
        joined = ("{" + ",".join(pieces[a:b]) + "}").encode()
        # by content, as the fragment files: a boundary made or lost renames no other bucket
        name = sha("bucket", joined)[:NAME_HEX]
        files[f"{shard.bundle}b/{name}.json"] = joined
        buckets.append(name)
    names = []
    for pack in packs:
        joined = b"[" + b",".join(pack) + b"]"
        # by content: a changed file is never taken for a cached copy
        name = sha("fragments", joined)[:NAME_HEX]
        files[f"{shard.bundle}f/{name}.json"] = joined
        names.append(name)
    files[f"{shard.bundle}meta.json"] = _json({"first": first, "packs": names})
    if keep is not None and kept is not None:
        keep[shard.bundle] = kept
    entry = {
        "bundle": shard.bundle[len(PREFIX) :],
        "key": shard.key,
        "sections": count,
        "words": total,
        "starts": starts,
        "buckets": buckets,
    }
    return files, entry


# -- the step ---------------------------------------------------------------------------------------
def _bundle_of(rel: str, bundles: Container[str]) -> str:
    # the longest bundle prefix: "search-index/more/x/…" is shard x's, anything else the first shard's
    if rel.startswith(MORE):
        bundle = rel[: rel.find("/", len(MORE)) + 1]
        if bundle in bundles:
            return bundle
    return PREFIX


def _previous(out_dir: Path, old: dict[str, tuple[str, int, int]]) -> dict[str, dict[str, Any]]:
    """bundle -> manifest entry of the shards the last build recorded as complete (none if the manifest
    is not the one recorded: a failed or interrupted index step forgets it)."""
    prev = old.get(MANIFEST)
    if prev is None or not matches(str(out_dir / MANIFEST), prev):
        return {}
    try:
        listed = json.loads((out_dir / MANIFEST).read_bytes())
        return {PREFIX + s["bundle"]: s for s in listed["shards"] if isinstance(s["key"], str)}
    except (ValueError, KeyError, TypeError):
        return {}


class IndexPlan(NamedTuple):
    """What the index step will make again (``index_plan``), known before the pages are written."""

    ours: dict[str, tuple[str, int, int]]  # the index files recorded: path -> state row
    cut: list[Shard]  # every shard
    prev: dict[str, dict[str, Any]]  # bundle -> manifest entry of the shards recorded complete
    recorded: dict[str, list[str]]  # bundle -> its files recorded
    stale: list[Shard]  # the shards to make again
    current: bool  # nothing to do: the index is complete and has no other files


#: what making a shard returns: (its files, its manifest entry, their state rows, files written)
ShardMade = tuple[list[str], dict[str, Any], list[tuple[str, str, int, int]], int]


def index_plan(out_dir: Path, old: dict[str, tuple[str, int, int]], pages: dict[str, str]) -> IndexPlan:
    """The shards of ``pages`` (every HTML output to index -> its fingerprint) and which are stale: one
    whose pages changed, or whose files are missing or damaged."""
    ours = {rel: v for rel, v in old.items() if rel.startswith(PREFIX)}
    top = str(out_dir)  # paths as strings: a stat per index file, a Path each would cost more
    cut = shards(pages)
    bundles = [s.bundle for s in cut]
    prev = _previous(out_dir, old)
    recorded: dict[str, list[str]] = {b: [] for b in bundles}
    for rel in ours:
        if rel != MANIFEST:
            recorded[_bundle_of(rel, recorded.keys())].append(rel)
    stale = [
        s
        for s in cut
        if prev.get(s.bundle, {}).get("key") != s.key
        or not recorded[s.bundle]
        or not all(matches(f"{top}/{rel}", ours[rel]) for rel in recorded[s.bundle])
    ]
    listed = sorted(prev) == sorted(bundles)
    current = (
        not stale and listed and not (set(ours) - {MANIFEST} - {r for b in bundles for r in recorded[b]})
    )
    return IndexPlan(ours, cut, prev, recorded, stale, current)


def for_write(
    index: IndexPlan, extract: set[str], pages: dict[str, str], state: State
) -> tuple[list[Shard], dict[str, tuple[bytes, bytes]]]:
    """The stale shards the write step can make (``write.execute``): each of their pages has its
    extract made there (``extract``, from ``missing``) or kept in the state; and those kept extracts."""
    if index.current:
        return [], {}
    wanted = {extract_key(p, pages[p]): p for s in index.stale for p in s.pages if p not in extract}
    known = {wanted[k]: e for k, e in state.search_extracts(set(wanted)).items()}
    return [s for s in index.stale if all(p in extract or p in known for p in s.pages)], known


class Helper(Protocol):
    """A process that runs a call while this one goes on (``renderchild.RenderChild``)."""

    def start_call(self, kind: str, what: Any, args: Any) -> bool: ...

    def end_call(self) -> tuple[bool, Any]: ...


class Offload:
    """The stale shards' files being made in a helper process (``offload``); ``update`` takes them."""

    __slots__ = ("bundles", "helper")

    def __init__(self, helper: Helper, bundles: list[str]):
        self.helper = helper
        self.bundles = bundles

    def take(self, left: list[Shard]) -> list[ShardMade] | None:
        """The helper's shards, if it made these (None: make them here)."""
        done, got = self.helper.end_call()
        return got if done and self.bundles == [s.bundle for s in left] else None


def offload(
    out_dir: Path,
    index: IndexPlan,
    pages: dict[str, str],
    state: State,
    fresh: dict[str, tuple[bytes, bytes]],
    helper: Helper | None,
) -> Offload | None:
    """Start ``update``'s shards in ``helper`` (a one-shot build's render child, idle after its jinja2
    import): the one stale shard of a one-page rebuild, made there (its ~100 pages' postings merged
    again, its files written: ~8 ms of the parent's ~110 at 1,000 pages) while this process walks the
    output for strays and records the pages; the extracts made now kept meanwhile, the others read
    there. None: make them in ``update`` (no helper, or more shards than ``OFFLOAD_MAX``; the helper
    fails where a page's extract must be read back from its file). Into an existing output folder
    only, its pages written: a new one makes its shards in the write step (``for_write``)."""
    if helper is None or index.current or not 0 < len(index.stale) <= OFFLOAD_MAX:
        return None
    keys = {p: extract_key(p, pages[p]) for s in index.stale for p in s.pages}
    need = {keys[p]: p for p in keys if p not in fresh}
    extracts = {p: fresh[p] for p in keys if p in fresh}
    left = index.stale
    ours = {rel: index.ours[rel] for s in left for rel in index.recorded[s.bundle]}  # (its files' rows)
    # the index on disk changes from here: the manifest's row forgotten first, so that a helper killed
    # half-way leaves an index the next build makes again (whether or not a page was written now)
    state.put_outputs([], [MANIFEST])
    if not helper.start_call("call", _write_shards, (state.path, out_dir, need, extracts, ours, left)):
        return None
    state.put_search_extracts([(extract_key(p, pages[p]), *e) for p, e in fresh.items() if p in pages])
    return Offload(helper, [s.bundle for s in left])


def _write_shards(
    path: Path,
    out_dir: Path,
    need: dict[str, str],
    extracts: dict[str, tuple[bytes, bytes]],
    ours: dict[str, tuple[str, int, int]],
    left: list[Shard],
) -> list[ShardMade]:
    """``offload``'s call in the helper: the pages' extracts the state keeps (``need``: key -> page)
    read there, with ``extracts`` made now, the shards made and written."""
    known = search_extracts_at(path, set(need))
    extracts.update((need[k], e) for k, e in known.items())
    if len(known) != len(need):  # a page's extract to read back from its file: ``update``'s, in workers
        raise OSError("a page's search extract is not kept")
    return [write_shard(out_dir, s, extracts, ours, None) for s in left]


#: the most stale shards ``offload`` gives the helper (a one-page rebuild makes one)
OFFLOAD_MAX = 1


def update(
    out_dir: Path,
    index: IndexPlan,
    pages: dict[str, str],
    state: State,
    *,
    base_path: str = "/",
    jobs: int = 1,
    fresh: dict[str, tuple[bytes, bytes]] | None = None,
    new: bool = False,
    built: dict[str, ShardMade] | None = None,
    keep: dict[str, Merged] | None = None,
    offloaded: Offload | None = None,
    meanwhile: Callable[[], object] | None = None,
) -> Indexed | None:
    """Make again the stale shards of ``index`` (``index_plan``) that the write step did not make
    (``built``: bundle -> ``write_shard``'s result); write the files whose bytes changed, the manifest
    last. ``pages``: every HTML output to index -> its fingerprint; ``state``: the build's
    ``cache.State`` (page extracts); ``fresh``: extracts the write step made of the pages it rendered
    (page -> ``page_extract``), kept in the state here; ``keep``: ``shard_files``'; ``offloaded``: the
    shards started in a helper (``offload``), taken from there, ``meanwhile`` run while it makes them.
    None when the whole index is current."""
    if index.current:
        sweep(out_dir, index.ours, state)  # what a killed run left there (its folder changed)
        return None
    ours, prev, recorded = index.ours, index.prev, index.recorded
    built = built or {}
    top = str(out_dir)
    # the pages' extracts: made by the write step, else from the state, else read from the page
    keys = {p: extract_key(p, fp) for p, fp in pages.items()}
    extracts = {p: e for p, e in (fresh or {}).items() if p in keys}
    left = [s for s in index.stale if s.bundle not in built]
    made = {top} if new else None
    if offloaded is not None:  # while the helper makes the shard (it reads only these pages' extracts)
        state.prune_search_extracts(set(keys.values()))
        if meanwhile is not None:
            meanwhile()
    made_now = None if offloaded is None else offloaded.take(left)
    if made_now is None:
        # (a page whose extract a kept merge of its shard holds, by its key, is not read: ``Merged``)
        need = [p for s in left for p in s.pages if p not in extracts and not _held(keep, s, p, keys[p])]
        known = state.search_extracts({keys[p] for p in need})
        todo = [p for p in need if keys[p] not in known]
        extracts.update(zip(todo, fork_map(_extract_file, (out_dir, base_path), todo, jobs), strict=True))
        made_here = [(keys[p], *e) for p, e in extracts.items()]  # kept in the state meanwhile
        extracts.update((p, known[keys[p]]) for p in need if keys[p] in known)
        # the stale shards' files, made and written in forked workers (a shard is much work: a cold
        # build's index was serial time after the pages' parallel step)
        made_now = fork_map(
            _write_shard,
            (out_dir, extracts, ours, new, keep, keys),
            left,
            jobs,
            least=2,
            meanwhile=lambda: state.put_search_extracts(made_here),
        )
    rows: list[tuple[str, str, int, int]] = []
    written = 0
    final: set[str] = {MANIFEST}
    entries: dict[str, dict[str, Any]] = {}
    by_bundle = {**built, **{s.bundle: m for s, m in zip(left, made_now, strict=True)}}
    for s in index.cut:
        if s.bundle in by_bundle:
            names, entries[s.bundle], shard_rows, shard_written = by_bundle[s.bundle]
            rows += shard_rows
            written += shard_written
            final |= set(names)
        else:
            entries[s.bundle] = prev[s.bundle]
            rows += [(rel, *ours[rel]) for rel in recorded[s.bundle]]
            final |= set(recorded[s.bundle])
    # the manifest last: it names the shards as complete
    listing = {"shards": [entries[s.bundle] for s in index.cut]}
    written += _put(out_dir, MANIFEST, _json(listing) + b"\n", ours.get(MANIFEST), rows, made)
    # whatever else is in the index folder goes, recorded or not (a failed run forgets the rows): every
    # folder listed (the shards' folders changed anyway)
    removed = sorted(set(sweep(out_dir, final, state, every=True)) | (set(ours) - final))
    if offloaded is None:
        state.prune_search_extracts(set(keys.values()))
    return Indexed(sorted(rows), written, removed, len(index.stale))


def sweep(out_dir: Path, keep: Container[str], state: State, *, every: bool = False) -> list[str]:
    """Remove the files of the index folder that are not in ``keep`` (output-relative paths) and the
    folders left empty; returns the files removed. Only the folders whose ctime is not the one the
    state records are listed (``output.files_in_changed_folders``; ``every``: all of them): a killed
    run's temporary (``fsutil.atomic_file``'s), or any file put there, changed its folder, so a build
    with nothing stale removes it too, at a stat a folder and one small query when none changed. The
    folders' ctimes are recorded as they are left (rows the write step's walk, ``write.find_strays``,
    does not read: ``State.folders(outside=...)``)."""
    top = PREFIX.rstrip("/")
    recorded = state.folders(top)
    known = {} if every else {rel[len(PREFIX) :] if rel != top else "": c for rel, c in recorded.items()}
    files, empty, listed, seen = files_in_changed_folders(out_dir / top, "", known)
    removed = sorted(PREFIX + rel for rel in files if PREFIX + rel not in keep)
    for rel in removed:
        (out_dir / rel).unlink(missing_ok=True)
    if removed or empty:
        prune_emptied(out_dir / top, [rel[len(PREFIX) :] for rel in removed], empty)
    if listed or len(seen) != len(recorded):
        # those listed, and those a removal changed (an emptied folder's parent)
        changed = {f"{PREFIX}{rel}" if rel else top for rel in listed}
        changed |= {d for d in with_parents(removed) if d == top or d.startswith(PREFIX)}
        now, gone = folder_rows(out_dir, changed)
        gone += [rel for rel in recorded if (rel[len(PREFIX) :] if rel != top else "") not in seen]
        state.put_folders(now, gone)
    return removed


def _held(keep: dict[str, Merged] | None, shard: Shard, page: str, key: str) -> bool:
    """Whether the kept merge of ``shard`` holds ``page``'s extract of that key."""
    kept = None if keep is None else keep.get(shard.bundle)
    return kept is not None and kept.pages == shard.pages and kept.keys.get(page) == key != ""


def _write_shard(
    shared: tuple[
        Path,
        dict[str, tuple[bytes, bytes]],
        dict[str, tuple[str, int, int]],
        bool,
        dict[str, Merged] | None,
        dict[str, str],
    ],
    shard: Shard,
) -> ShardMade:
    out_dir, extracts, ours, new, keep, keys = shared
    return write_shard(out_dir, shard, extracts, ours, {str(out_dir)} if new else None, keep, keys)


def write_shard(
    out_dir: Path,
    shard: Shard,
    extracts: Mapping[str, tuple[bytes, bytes]],
    ours: dict[str, tuple[str, int, int]],
    made: set[str] | None,
    keep: dict[str, Merged] | None = None,
    keys: Mapping[str, str] | None = None,
    parsed: Mapping[str, Postings] | None = None,
) -> ShardMade:
    """Make a shard's files from its pages' ``extracts`` and write those whose bytes changed from the
    recorded ones (``ours``); ``made``: as ``output.write_output``'s; ``keep``, ``parsed``:
    ``shard_files``'. Its files, its manifest entry, their state rows, files written."""
    files, entry = shard_files(shard, extracts, keep, keys, parsed)
    rows: list[tuple[str, str, int, int]] = []
    written = sum(_put(out_dir, rel, files[rel], ours.get(rel), rows, made) for rel in sorted(files))
    return sorted(files), entry, rows, written


#: the state row's fingerprint of an index file named by its content (``_named_by_content``)
BY_NAME = "named by its content"


def _named_by_content(rel: str) -> bool:
    """A bucket or fragments file of ``shard_files``: ``<bundle>b/<16 hex>.json`` or ``<bundle>f/…``."""
    folder, _, name = rel.rpartition("/")
    return folder.endswith(("/b", "/f")) and len(name) == NAME_HEX + 5 and name.endswith(".json")


def _put(
    out_dir: Path,
    rel: str,
    blob: bytes,
    prev: tuple[str, int, int] | None,
    rows: list[tuple[str, str, int, int]],
    made: set[str] | None,
) -> int:
    """Write an index file, unless the output already has these bytes; ``made``: the folders made so
    far in a new output folder (None: an existing one, written by rename)."""
    # a bucket or fragments file is named by its bytes' hash: recorded under that name and as recorded
    # on disk, it has them (a second hash of them was ~1 MB a shard, ~1.5 ms of a one-page rebuild)
    fp = BY_NAME if _named_by_content(rel) else sha("bytes", blob)
    dest = out_dir / rel
    if prev and prev[0] == fp and matches(str(dest), prev):
        rows.append((rel, *prev))
        return 0
    if made is None:
        dest.parent.mkdir(parents=True, exist_ok=True)
    size, mtime = write_output(dest, blob, made)  # existing folder: a rename, readers see old or new
    rows.append((rel, fp, size, mtime))
    return 1
