"""What the site build passes between its steps: pages, output jobs, the report; small pure helpers."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from .. import jsonable
from ..errors import BuildError, Location
from .config import SiteConfig
from .ntuple import NamedTuple


class LinkErrors(BuildError):
    """Links that point nowhere: each one with file:line. ``found``: the first ``LISTED`` as (file,
    line, message), of ``total``; ``problems``: the same as 'file:line: message' lines."""

    LISTED = 100

    def __init__(self, found: list[tuple[str, int, str]], total: int):
        self.found = found
        self.total = total
        self.problems = [f"{file}:{line}: {message}" for file, line, message in found]
        more = f" (and {self.total - 1} more)" if self.total > 1 else ""
        file, line, message = found[0]
        super().__init__(
            message + more,
            where=Location(file, line),
            hint="fix the links (paths are relative to the page's .md file; anchors are heading ids)",
        )

    def json_details(self) -> dict[str, object]:
        # --json listed only the first, inside the message, with "where" null (note24's leftovers)
        return {
            "problems": [{"file": f, "line": n, "message": m} for f, n, m in self.found],
            "more": self.total - len(self.found),
        }


class Page:
    """A page of the site. A plain class, not a dataclass: the rebuild path imports it, and a dataclass
    costs ~1 ms to create (its methods are made with ``exec``); pages are built, not compared."""

    __slots__ = (
        "date",
        "description",
        "extra",
        "file",
        "kind",
        "layout",
        "md_key",
        "meta",
        "nav_title",
        "out",
        "path",
        "r",
        "section",
        "src",
        "tags",
        "title",
        "updated",
        "url",
        "weight",
    )

    def __init__(
        self,
        src: str | None,  # content-relative source, None for pages made from data
        file: str | None,  # source file for messages
        path: str,  # site path without the base: '/docs/a/'
        url: str,  # with the base path
        out: str,  # output file, relative to the output folder
        section: str,
        kind: str,  # page | index | home | release | tags | tag
        layout: str,
        title: str,
        nav_title: str = "",  # shorter title for the sidebar and previous/next
        date: str | None = None,
        updated: str | None = None,
        tags: tuple[str, ...] = (),
        weight: int = 1000,
        description: str = "",
        md_key: str | None = None,
        meta: dict[str, Any] | None = None,  # front matter
        r: Mapping[str, Any] | None = None,  # rendered Markdown minus the HTML (``cache.Meta``)
        extra: dict[str, Any] | None = None,  # layout data (release record, tag items)
    ):
        self.src = src
        self.file = file
        self.path = path
        self.url = url
        self.out = out
        self.section = section
        self.kind = kind
        self.layout = layout
        self.title = title
        self.nav_title = nav_title
        self.date = date
        self.updated = updated
        self.tags = tags
        self.weight = weight
        self.description = description
        self.md_key = md_key
        self.meta: dict[str, Any] = {} if meta is None else meta
        self.r: Mapping[str, Any] = {} if r is None else r
        self.extra: dict[str, Any] = {} if extra is None else extra

    def __repr__(self) -> str:
        return f"Page({self.path!r}, src={self.src!r})"


class BuildReport:
    """What a build did. A plain class, not a dataclass, as ``Page``: ``dataclasses`` imports ``inspect``
    (~10 ms, 5% of a one-page rebuild through the CLI), which nothing else on the build's path needs."""

    #: the fields, in the order ``to_json`` gives them (``seconds`` last, rounded; ``sources`` left out)
    FIELDS = (
        "out_dir",
        "pages",
        "outputs",
        "rendered",
        "markdown_rendered",
        "removed",
        "jobs",
        "search_files",
        "search_shards",
        "pages_planned",
        "warnings",
    )

    def __init__(
        self,
        out_dir: Path,
        pages: int,
        outputs: int,
        rendered: int,
        markdown_rendered: int,
        removed: int,
        seconds: float,
        jobs: int,
        search_files: int = 0,  # files of the search index written (search.update), not in ``rendered``
        search_shards: int = 0,  # shards of the search index made again
        pages_planned: int = 0,  # pages whose template context was made (``plan.Delta``: the edited ones)
        warnings: list[str] | None = None,
        sources: dict[str, str] | None = None,  # output file -> source file
    ):
        self.out_dir = out_dir
        self.pages = pages
        self.outputs = outputs
        self.rendered = rendered
        self.markdown_rendered = markdown_rendered
        self.removed = removed
        self.seconds = seconds
        self.jobs = jobs
        self.search_files = search_files
        self.search_shards = search_shards
        self.pages_planned = pages_planned
        self.warnings: list[str] = [] if warnings is None else warnings
        self.sources: dict[str, str] = {} if sources is None else sources

    def to_json(self) -> dict[str, Any]:
        out = {name: jsonable.encode(getattr(self, name)) for name in self.FIELDS}
        out["seconds"] = round(self.seconds, 3)
        return out

    def __repr__(self) -> str:
        return "BuildReport(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.FIELDS) + ")"


#: a heading's permalink anchor's attributes in rendered Markdown: its sign is not text of the heading
#: or the page (search titles, excerpts)
PERMALINK_IGNORED = 'class="header-anchor" data-search-ignore'


def permalink(sid: str) -> str:
    """A heading's permalink anchor (the anchors plugin's, its sign marked as no text) for its id
    ``sid`` as the ``id`` attribute holds it (escaped): the one writer of it, for all three renderers
    (``mdfast``, ``mdhtml``, markdown-it-py's path in ``markdown``), whose outputs are compared byte for
    byte. The page's own HTML naming the class is left as written."""
    return f'<a {PERMALINK_IGNORED} href="#{sid}">#</a>'


#: what a heading is to the search index: an h2 or h3 with an ``id`` starts a section, named by that
#: id (results link to it); the first h1 with text is the page's title; any other heading (h4-h6, one
#: without an id) is text of the section it is in. The one rule for ``search.sections``' scan of a page
#: and for the text the Markdown renderers make of it (``mdfast``, ``mdhtml``: ``ContentText``), which
#: the index takes instead of scanning and which must therefore agree with the scan. Tag -> role; the
#: tags not here are plain text.
SECTION, TITLE = "section", "title"
HEADING_ROLES: dict[str, str] = {"h1": TITLE, "h2": SECTION, "h3": SECTION}


def heading_role(tag: str, hid: str) -> str | None:
    """``SECTION``, ``TITLE`` or None (text) for a heading ``tag`` ("h2") with the id ``hid``."""
    role = HEADING_ROLES.get(tag)
    return None if role == SECTION and not hid else role


class ContentText(NamedTuple):
    """What ``search.sections`` reads of a page's rendered Markdown, made from its syntax tree by the Markdown
    stage (``mdhtml``) instead of from its HTML: the text before its first section heading and after each
    (raw: whitespace where the HTML has a word break, ``&`` as ``&amp;``, so it joins the template's raw
    text as the HTML would), each section heading's id and heading (clean) and its title (the sections
    and title by ``heading_role``)."""

    lead: str
    sections: list[tuple[str, str, str]]  # (id, heading, raw text)
    title: str


class Job(NamedTuple):
    """One output file: copied, written from bytes, or rendered from a template and its context."""

    out: str
    fp: str  # fingerprint of everything the output is made of
    template: str | None = None
    context: dict[str, Any] | None = None
    copy_from: Path | None = None
    data: bytes | None = None


class Late:
    """A context value filled in only when the output is rendered (big, and fingerprinted by key)."""

    __slots__ = ("arg", "key", "kind")

    def __init__(self, kind: str, key: str, arg: str = ""):
        self.kind, self.key, self.arg = kind, key, arg


#: the builder's own code files' sha256 by name (``site/<name>``): each build's from its state where the
#: file's stat is the one recorded (``Builder._build``, ``filedigest``), else read and hashed here once
#: a process (as the digests made of them always were: ``plan_code``, ``render_version``, ``code_salt``)
_CODE_SHA: dict[str, str] = {}


def code_files() -> dict[str, Path]:
    """The builder's code files (``site/*.py``) by name."""
    here = Path(__file__).parent
    return {name: here / name for name in os.listdir(here) if name.endswith(".py")}


def code_known(digests: Mapping[str, str]) -> None:
    """The code files' digests as the builder found them (``code_files``' names): used from now on."""
    _CODE_SHA.update(digests)


def code_sha(name: str) -> str:
    """The sha256 (hex) of the builder's code file ``site/<name>``."""
    got = _CODE_SHA.get(name)
    if got is None:
        got = _CODE_SHA[name] = hashlib.sha256((Path(__file__).parent / name).read_bytes()).hexdigest()
    return got


def sha(*parts: bytes | str) -> str:
    """The site's fingerprint of a sequence of parts (NUL-separated; asset URLs carry its prefix)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def sha_after(*head: bytes | str) -> Callable[..., str]:
    """``sha(*head, *rest)`` as a function of ``rest`` (text), the same digests: for many fingerprints
    that start alike (every source's key starts with the renderer's version and the base path) the head
    is hashed once and its state copied, and the rest in one ``update`` (about half ``sha``'s time at
    1,000 sources: a call an ``update`` was most of it)."""
    start = hashlib.sha256()
    for p in head:
        start.update(p.encode() if isinstance(p, str) else p)
        start.update(b"\0")

    def after(*rest: str) -> str:
        h = start.copy()
        if rest:  # NUL after each part, as ``sha``
            h.update(("\0".join(rest) + "\0").encode())
        return h.hexdigest()

    return after


def parse_date(value: Any, file: str, key: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(str(value)[:10]).isoformat()
    except ValueError:
        raise BuildError(
            f"'{key}' is not a date: {value!r}",
            where=Location(file=file, key=key),
            hint="write dates as YYYY-MM-DD",
        ) from None


#: characters no page path holds, whether from a file name (which becomes the path unchanged) or a
#: ``url:`` (a regex class body): C0/C1 controls and DEL (a newline broke the sitemap and every link to
#: the page), a backslash (a folder separator elsewhere), ``?`` and ``#`` (they end a URL's path), ``"<>``
#: (they end an attribute or a tag), line and paragraph separators (a line end to JavaScript and the
#: sitemap's readers) and bidi controls (a folder name shown reversed; audit17b finding 6)
BAD_PATH_CHARS = r'\x00-\x1f\x7f-\x9f\\?#"<>\u2028\u2029\u202a-\u202e\u2066-\u2069'


def page_path(rel: str, fm: dict[str, Any]) -> str:
    if isinstance(fm.get("url"), str):
        url = str(fm["url"])
        return url if url.startswith("/") else "/" + url
    stem = rel[: -len(".md")]
    if stem == "index":
        return "/"
    if stem.endswith("/_index") or stem.endswith("/index"):
        return "/" + stem.rsplit("/", 1)[0] + "/"
    return "/" + stem + "/"


#: what a page's URL keeps as written: the characters RFC 3986 allows in a path, less '%' (a file
#: name never holds one: ``pages``); a space, a non-ASCII letter, ... are %-escaped, as sitemap.xml, the
#: feed and links must carry them (the templates then escape '&' and quotes for XML/HTML)
_URL_SAFE = "/!$&'()*+,;=:@~"


def url_path(path: str) -> str:
    """A page's site path (``page_path``, as its file is named) as it is written in a URL."""
    return quote(path, _URL_SAFE)


def out_file(path: str) -> str:
    rel = path.lstrip("/")
    return rel + "index.html" if rel == "" or rel.endswith("/") else rel


_NOT_SLUG = re.compile(r"[^\w\- ]")
_DASHES = re.compile(r"-{2,}")


@lru_cache(maxsize=4096)  # (pure; a site repeats its heading titles: Overview, Usage ...)
def slugify(title: str) -> str:
    # NFKC: "Café" typed composed and decomposed, or "ﬁle" and "file", are one tag page and one anchor
    if not title.isascii():
        title = unicodedata.normalize("NFKC", title)
    slug = _NOT_SLUG.sub("", title.strip().lower()).strip().replace(" ", "-")
    return _DASHES.sub("-", slug) if "--" in slug else slug or "section"


def tag_slug(tag: str) -> str:
    return slugify(tag)


def human_date(date: str | None) -> str | None:
    if not date:
        return None
    d = dt.date.fromisoformat(date)
    return f"{d.day} {d.strftime('%B')} {d.year}"


def newest_first(p: Page) -> tuple[str, str]:
    return (_invert(p.date or ""), p.title)


def _invert(s: str) -> str:
    return "".join(chr(0x10FFFF - ord(c)) for c in s)


def tag_uri(cfg: SiteConfig, p: Page) -> str:
    host = urlsplit(cfg.base_url).netloc
    return f"tag:{host},{p.date}:{url_path(p.path)}"  # a URI: a space is %20 (plain paths unchanged)


def plain(obj: Any) -> Any:
    """Front matter as JSON-able data (dates become ISO strings)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, dt.date | dt.datetime):
        return obj.isoformat()
    return obj
