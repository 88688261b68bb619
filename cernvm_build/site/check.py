"""Check a built site: every internal link and #anchor resolves, every referenced asset exists; external
links only on request.

Problems are reported as ``output-file:line`` plus, when the page came from Markdown, its source file.
(Links written in Markdown are already checked at build time with their source line.)
"""

from __future__ import annotations

import html
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .. import jsonable

LINK_ATTRS = {
    "a": ("href",),
    "link": ("href",),
    "script": ("src",),
    "img": ("src",),
    "source": ("src",),
    "iframe": ("src",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "form": ("action",),
}
SKIP_SCHEMES = ("mailto:", "javascript:", "data:", "tel:")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str
    source: str | None = None

    def __str__(self) -> str:
        src = f" (from {self.source})" if self.source else ""
        return f"{self.file}:{self.line}: {self.message}{src}"


@dataclass
class CheckReport:
    pages: int
    links: int
    external: int
    problems: list[Problem] = field(default_factory=list)
    #: every broken link and other problem, also those past what ``problems`` lists
    broken: int = 0
    #: with ``external``: links to URLs past the first ``MAX_EXTERNAL``, not checked (neither broken
    #: nor good: they were counted as broken, failing a site whose links all answer), and where the
    #: first of them is (``page:line``)
    skipped: int = 0
    skipped_first: str | None = None

    def to_json(self) -> dict[str, object]:
        return jsonable.to_json(self)


class _Scan(HTMLParser):
    """A page's ids, each link handed to ``on_link(url, line)`` as it is met: a page's links are
    checked as it is read, never all kept (a 40 MB page of 10^6 links held 634 MB, pr17d)."""

    def __init__(self, on_link: Callable[[str, int], None]) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.on_link = on_link

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        d = dict(attrs)
        if d.get("id"):
            self.ids.add(str(d["id"]))
        if tag == "a" and d.get("name"):
            self.ids.add(str(d["name"]))
        for attr in LINK_ATTRS.get(tag, ()):
            value = d.get(attr)
            if value is not None:
                self.on_link(value, line)
        if tag in ("img", "source") and d.get("srcset"):
            for part in str(d["srcset"]).split(","):
                url = part.strip().split(" ")[0]
                if url:
                    self.on_link(url, line)


def _scan(path: Path, on_link: Callable[[str, int], None]) -> set[str]:
    """The ids of the page at ``path``, its links handed to ``on_link``."""
    s = _Scan(on_link)
    s.feed(path.read_text(encoding="utf-8", errors="replace"))
    s.close()
    return s.ids


#: how long one external link may take in all (connect, redirects, every header); the per-read timeout
#: alone let a server sending one header line every 5 s hold a link for 100 x 5 s (audit17c)
DEADLINE = 30.0
#: problems reported per page, then one line with how many more: a generated page of 10^6 broken links
#: printed 10^6 lines (pr17d)
MAX_PROBLEMS = 100
#: where each external URL is linked from, kept to list it if broken (the rest only counted: a site
#: linking one URL from every line of 10^6 pages kept 10^6 places)
MAX_PLACES = 10
#: distinct external URLs probed; past them a link is counted as not checked (each URL is kept)
MAX_EXTERNAL = 50_000


class _External:
    """An external URL's links: how many, and the first ``MAX_PLACES`` (page, line)."""

    __slots__ = ("count", "places")

    def __init__(self) -> None:
        self.count = 0
        self.places: list[tuple[str, int]] = []


def check_site(
    out_dir: Path,
    base_url: str,
    *,
    external: bool = False,
    sources: dict[str, str] | None = None,
    timeout: float = 15.0,
    jobs: int = 8,
    deadline: float = DEADLINE,
) -> CheckReport:
    """Check ``out_dir`` as published at ``base_url``. ``sources`` maps output files to source files."""
    base = urlsplit(base_url)
    base_path = base.path or "/"
    sources = sources or {}
    pages: list[str] = []
    files: set[str] = set()
    for root, _dirs, names in os.walk(out_dir):
        for name in names:
            rel = (Path(root) / name).relative_to(out_dir).as_posix()
            files.add(rel)
            if name.endswith(".html"):
                pages.append(rel)
    ids: dict[str, set[str]] = {}  # of the pages scanned so far
    #: (page, line, url, target page, fragment): a #fragment of a page not scanned yet (or this one)
    pending: list[tuple[str, int, str, str, str]] = []
    problems: list[Problem] = []
    shown: dict[str, int] = {}  # problems per page
    dropped: dict[str, tuple[int, int]] = {}  # page: (problems not shown, the last one's line)
    ext_links: dict[str, _External] = {}
    first_unchecked: str | None = None  # page:line of the first link past MAX_EXTERNAL URLs
    count = broken = not_checked = 0

    def problem(page: str, line: int, message: str) -> None:
        nonlocal broken
        broken += 1
        n = shown.get(page, 0)
        if n < MAX_PROBLEMS:
            shown[page] = n + 1
            problems.append(Problem(page, line, message, sources.get(page)))
        else:
            more, last = dropped.get(page, (0, 0))
            dropped[page] = (more + 1, max(last, line))

    def no_id(page: str, line: int, url: str, frag: str) -> None:
        problem(page, line, f"link to '{url}': no element with id '{frag}'")

    def target_file(path: str) -> str | None:
        if not path.startswith(base_path):
            return None
        rel = unquote(path[len(base_path) :])
        if rel == "" or rel.endswith("/"):
            rel += "index.html"
        if rel in files:
            return rel
        if rel + "/index.html" in files:
            return rel + "/index.html"
        return None

    def check_one(page: str, url: str, line: int) -> None:
        try:
            parts = urlsplit(url)
        except ValueError as e:  # ``http://[oops/``: one problem, not a traceback
            problem(page, line, f"link '{url}' is not a URL ({e}); fix or escape it")
            return
        if parts.scheme in ("http", "https") or url.startswith("//"):
            if parts.netloc == base.netloc and (parts.path or "/").startswith(base_path):
                url = parts.path + (f"#{parts.fragment}" if parts.fragment else "")
                parts = urlsplit(url)
            else:
                external_link(page, url.split("#")[0], line)
                return
        if parts.scheme or url.startswith(SKIP_SCHEMES):
            return
        if url.startswith("#") or url == "":
            target = page
        elif parts.path.startswith("/"):
            found = target_file(parts.path)
            if found is None:
                problem(page, line, f"link to '{url}': no such page or file")
                return
            target = found
        else:
            joined = os.path.normpath(os.path.join(os.path.dirname("/" + page), parts.path))
            found = target_file(base_path.rstrip("/") + joined + ("/" if parts.path.endswith("/") else ""))
            if found is None:
                problem(page, line, f"link to '{url}': no such page or file")
                return
            target = found
        frag = unquote(parts.fragment)
        if frag and target.endswith(".html") and frag != "top":
            t = ids.get(target)
            if t is None:
                pending.append((page, line, url, target, frag))
            elif frag not in t:
                no_id(page, line, url, frag)

    def external_link(page: str, url: str, line: int) -> None:
        nonlocal not_checked, first_unchecked
        ext = ext_links.get(url)
        if ext is None:
            if len(ext_links) >= MAX_EXTERNAL:
                not_checked += 1
                if first_unchecked is None:
                    first_unchecked = f"{page}:{line}"
                return
            ext = ext_links[url] = _External()
        ext.count += 1
        if len(ext.places) < MAX_PLACES:
            ext.places.append((page, line))

    for page in sorted(pages):

        def one(url: str, line: int, page: str = page) -> None:
            nonlocal count
            count += 1
            check_one(page, url.strip(), line)

        ids[page] = _scan(out_dir / page, one)
    for page, line, url, target, frag in pending:
        if frag not in ids[target]:
            no_id(page, line, url, frag)
    # The sitemap must list only pages that exist.
    sitemap = out_dir / "sitemap.xml"
    if sitemap.is_file():
        for n, line_text in enumerate(sitemap.read_text(encoding="utf-8").splitlines(), 1):
            for escaped in re.findall(r"<loc>([^<]+)</loc>", line_text):
                count += 1
                loc = html.unescape(escaped)  # XML-escaped: a file name's '&' is '&amp;' there
                try:
                    p = urlsplit(loc)
                except ValueError as e:
                    problem("sitemap.xml", n, f"'{loc}' is not a URL ({e})")
                    continue
                if p.netloc != base.netloc or target_file(p.path) is None:
                    problem("sitemap.xml", n, f"'{loc}' is not a page of this site")
    if external and ext_links:
        results = _check_external(list(ext_links), timeout, jobs, deadline)
        for url, ext in ext_links.items():
            if err := results[url]:
                for page, line in ext.places:
                    problem(page, line, f"external link '{url}': {err}")
                if ext.count > len(ext.places):  # counted, not listed
                    page, line = ext.places[-1]
                    more = ext.count - len(ext.places)
                    broken += more - 1
                    problem(
                        page, line, f"external link '{url}': {err}, also in {more} more places not listed"
                    )
    problems.sort(key=lambda p: (p.file, p.line, p.message))
    problems += (
        Problem(page, last, f"and {more} more problems ({MAX_PROBLEMS} shown)", sources.get(page))
        for page, (more, last) in dropped.items()
    )
    # a page's summary after its problems of the same line (a stable sort: it came last; by its text,
    # "and 49900 more problems" came first, and was the "first:" of the command's error line)
    problems.sort(key=lambda p: (p.file, p.line))
    return CheckReport(
        pages=len(pages),
        links=count,
        external=len(ext_links),
        problems=problems,
        broken=broken,
        skipped=not_checked if external else 0,
        skipped_first=first_unchecked if external else None,
    )


def _check_external(
    links: list[str], timeout: float, jobs: int, deadline: float = DEADLINE
) -> dict[str, str | None]:
    """Each URL's problem (None: it answers)."""
    import requests  # deliberate lazy import: only --external probes the network

    from ..mirror.source import Deadlined, deadline_session, failure

    # HEAD and GET both through Deadlined.get: its redirects are checked by httpredirect.refusal
    # (requests' own followed a HEAD's into 169.254.169.254) and a redirect's body is never read
    # (requests read each whole: a 302 with an endless body took all the memory, pr33a)
    session = deadline_session()
    session.headers["User-Agent"] = "cernvm-build-site-check/1"

    def probe(url: str) -> str | None:
        try:
            with Deadlined(timeout).get(session, url, "HEAD", timeout=timeout) as r:
                status = r.status_code
            if status in (403, 405, 501):
                with Deadlined(timeout).get(session, url, timeout=timeout) as r:
                    status = r.status_code
            return None if status < 400 else f"HTTP {status}"
        except requests.exceptions.InvalidURL as e:  # RedirectRefused too: which and why
            return f"{type(e).__name__}: {failure(e)}"
        except requests.RequestException as e:
            return type(e).__name__
        except ValueError as e:
            # a redirect's Location requests cannot parse (a bare ValueError, LocationParseError or
            # UnicodeDecodeError, none a RequestException) killed the probe's thread with a
            # traceback, and the link was reported as not answering once its deadline passed
            return f"redirect to a URL that cannot be read ({str(e)[:100]})"

    # Daemon threads, not a ThreadPoolExecutor: its workers are joined at exit, so a link that never
    # answers held Ctrl-C and SIGTERM until it did (audit17c: 386 s after the signal). A link past its
    # deadline is reported and its thread left behind (it ends with the process); a new one takes its place.
    todo: queue.SimpleQueue[str] = queue.SimpleQueue()
    for url in links:
        todo.put(url)
    done: queue.SimpleQueue[tuple[str, str | None]] = queue.SimpleQueue()
    started: dict[str, float] = {}

    def worker() -> None:
        while True:
            try:
                url = todo.get_nowait()
            except queue.Empty:
                return
            started[url] = time.monotonic()
            done.put((url, probe(url)))

    def spawn() -> None:
        threading.Thread(target=worker, name="site-check-link", daemon=True).start()

    for _ in range(min(jobs, len(links))):
        spawn()
    results: dict[str, str | None] = {}
    while len(results) < len(links):
        try:
            url, err = done.get(timeout=0.5)
            results.setdefault(url, err)
        except queue.Empty:
            pass
        now = time.monotonic()
        for url, t0 in started.copy().items():
            if url not in results and now - t0 > deadline:
                results[url] = f"no answer within {deadline:g} s"
                spawn()
    return results
