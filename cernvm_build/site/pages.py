"""Step 2 of a site build: the page model — one ``Page`` per Markdown source, section index, release
and tag — and how a link written in Markdown resolves to a URL."""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from html import escape, unescape
from typing import Any

from ..errors import BuildError, Location
from . import frontmatter
from . import markdown as md_mod
from . import versions as versions_mod
from .config import Section, SiteConfig
from .model import BAD_PATH_CHARS, Page, out_file, page_path, parse_date, tag_slug, url_path
from .ntuple import NamedTuple


class PageSet(NamedTuple):
    pages: list[Page]
    by_path: dict[str, Page]  # site path -> page
    by_src: dict[str, Page]  # content-relative source -> page
    tagged: dict[str, list[Page]]  # tag -> pages
    base_path: str

    def resolve_target(self, target: str) -> str | None:
        """The URL of a link as written in Markdown (``docs/a.md#x``), None when it is not a page."""
        path, _, frag = target.partition("#")
        if path.endswith(".md"):
            page = self.by_src.get(path)
            if page is None:
                return None
            return page.url + (f"#{frag}" if frag else "")
        return self.base_path + path + (f"#{frag}" if frag else "")

    def resolve_html(self, html: str) -> str:
        """Rendered Markdown with its link markers (``@@L:…@@``) replaced by URLs."""
        if "@@L:" not in html:
            return html
        return md_mod.MARKER.sub(
            lambda m: escape(self.resolve_target(unescape(m.group(1))) or "#broken", quote=True), html
        )

    def link_map(self, page: Page) -> list[tuple[str, str]]:
        return [
            (t, self.resolve_target(t) or "#broken")
            for t, _line, kind in page.r.get("links", ())
            if kind == "content"
        ]


#: what a ``url:`` must not hold: what no page path holds (``BAD_PATH_CHARS``, a file name's rule too),
#: and a %-escape (the output file would be named with it literally) or a space (written as the reader
#: means a URL, not as a file name: it would break the sitemap's and the pages' links)
_BAD_URL = re.compile(f"[{BAD_PATH_CHARS} %]")


def _checked_url(path: str, file: str) -> str:
    """A page's site path from its front matter's ``url:`` (``model.page_path``), normalised (``//``,
    ``/./``) and kept inside the site: a ``..`` segment would make its output file leave the output
    folder. The trailing '/' (an ``index.html``) is kept."""
    bad = _BAD_URL.search(path)
    segments = path.split("/")
    if bad is not None or ".." in segments:
        what = f"holds {bad.group()!r}" if bad is not None else "has a '..' segment: it leaves the site"
        raise BuildError(
            f"{path!r} {what}",
            where=Location(file=file, key="url"),
            hint="write the page's path inside the site, e.g. 'url: /docs/name/' (no '..', no control "
            "characters, spaces, backslashes, quotes, '<', '>', '?', '#' or %-escapes)",
        )
    if any(s.startswith(".") and s != "." for s in segments):  # out/.git/config, a hidden file
        raise BuildError(
            f"{path!r} has a segment starting with '.'",
            where=Location(file=file, key="url"),
            hint="write the page's path without hidden names, e.g. 'url: /docs/name/'",
        )
    norm = posixpath.normpath(path)
    norm = "/" + norm.lstrip("/")  # (normpath keeps a leading '//')
    if path.endswith("/") and norm != "/":
        norm += "/"
    return norm


def _kind(rel: str) -> str:
    if rel == "index.md":
        return "home"
    if rel.rpartition("/")[2] in ("_index.md", "index.md"):  # (posixpath.basename: a call more a page)
        return "index"
    return "page"


def _default_layout(rel: str, kind: str, section: str, sec: Section | None) -> str:
    """The layout of a source whose front matter names none."""
    if kind == "home":
        return "home"
    if sec is None:
        return "page"
    return sec.list_layout if kind == "index" and "/" not in rel[len(section) + 1 :] else sec.layout


def likely_layouts(
    cfg: SiteConfig, rels: Iterable[str], named: Mapping[str, str], tagged: bool = False
) -> set[str]:
    """The layouts ``make_pages`` will likely give the pages of these sources and the section indexes it
    makes, guessed before their front matter is parsed (``named``: the ``layout:`` lines ``sources.scan``
    saw, by source; ``tagged``: it saw ``tags:``, the tag pages' too): the builder compiles their
    templates while the Markdown renders."""
    settings: dict[str, Section | None] = {}
    layouts: set[str] = set()
    for rel in rels:
        section = rel.split("/", 1)[0] if "/" in rel else ""
        if section not in settings:
            settings[section] = versions_mod.section_settings(cfg, section)
        got = named.get(rel)
        layouts.add(got if got is not None else _default_layout(rel, _kind(rel), section, settings[section]))
    # a section without an index page of its own gets one
    layouts.update(sec.list_layout for name, sec in cfg.sections.items() if name in settings)
    if tagged:
        layouts.update(("tags", "list"))  # the tags page's and a tag's (``make_pages``)
    return layouts


def _source_page(
    cfg: SiteConfig,
    rel: str,
    file: str,
    key: str,
    meta: dict[str, Any],
    changed: str | None,
    base: str,
    settings: dict[str, Section | None],
) -> Page:
    """``base``: the base path without its last '/'; ``settings``: section -> its settings, filled here
    (one look-up a section, not one a page: this runs for every page of every build)."""
    fm: dict[str, Any] = meta["fm"]
    _check_types(fm, file)
    path = page_path(rel, fm)
    if "url" in fm and isinstance(fm["url"], str):
        path = _checked_url(path, file)
    elif "%" in path:  # (the name's other characters: sources._check_name)
        # the page's URL is its file name, written as it is: 'a%2fb.md' was served as /a/b/ (a 404)
        raise BuildError(
            f"the file name {rel!r} holds '%', which the page's URL cannot hold as written",
            where=file,
            hint="rename the file, or give the page a 'url:' without it",
        )
    section = rel.split("/", 1)[0] if "/" in rel else ""
    try:
        sec = settings[section]
    except KeyError:
        sec = settings[section] = versions_mod.section_settings(cfg, section)
    kind = _kind(rel)
    default_layout = _default_layout(rel, kind, section, sec)
    title = fm.get("title") or meta["h1"]
    if not title:
        raise BuildError(
            "page has no title",
            where=Location(file=file, key="title"),
            hint="add 'title: …' to the front matter",
        )
    # (the dates parsed only where given: two calls a page fewer, as ``tags`` below)
    date = None if (given := fm.get("date")) is None else parse_date(given, file, "date")
    if sec and sec.dated and kind == "page" and date is None:
        raise BuildError(
            f"pages in '{section}' need a date",
            where=Location(file=file, key="date"),
            hint="add 'date: YYYY-MM-DD' to the front matter",
        )
    tags = fm.get("tags") or ()
    if isinstance(tags, str):
        tags = (tags,)
    updated = None if (given := fm.get("updated")) is None else parse_date(given, file, "updated")
    return Page(
        src=rel,
        file=file,
        path=path,
        url=base + url_path(path),  # a file name's space is %20 in the sitemap, feed and links
        out=out_file(path),
        section=section,
        kind=kind,
        layout=str(fm.get("layout") or default_layout),
        title=str(title),
        nav_title=str(fm.get("nav_title") or title),
        date=date,
        updated=updated or changed,
        tags=tuple(sorted({str(t) for t in tags})) if tags else (),
        weight=int(fm.get("weight", 1000)),
        description=str(fm.get("description") or meta["summary"]),
        md_key=key,
        meta=fm,
        r=meta,
    )


#: the most tags one page may have (the shipped pages have 1-3)
MAX_TAGS = 100


def _check_types(fm: dict[str, Any], file: str) -> None:
    """Keys a page shows as text hold text (a mapping would show as its Python repr), ``weight`` an
    integer (the nav orders by it); else one line naming the key."""
    for k in ("title", "description", "nav_title", "url"):
        if k in fm and fm[k] is not None and not isinstance(fm[k], str):
            raise BuildError(
                f"{k} must be text, not {frontmatter.yaml_kind(fm[k])}",
                where=Location(file=file, key=k),
                hint=f"write '{k}: \"…\"' (quotes keep a number or a date as text)",
            )
    tags = fm.get("tags")
    if not (
        tags is None
        or isinstance(tags, str)
        or (isinstance(tags, list) and all(isinstance(t, str) for t in tags))
    ):
        raise BuildError(
            "tags must be a list of text",
            where=Location(file=file, key="tags"),
            hint="write 'tags: [one, two]' (quote a tag that is a number or a date)",
        )
    if isinstance(tags, list) and len(tags) > MAX_TAGS:
        # each tag is a page listing its pages, and each of those lists the page's tags: 20,000 tags on
        # one page were 20,000 pages of 20,000 links (24 GB and minutes before it failed)
        raise BuildError(
            f"{len(tags)} tags: a page has at most {MAX_TAGS}",
            where=Location(file=file, key="tags"),
            hint="keep the few tags a reader would browse by",
        )
    weight = fm.get("weight")
    if weight is not None and (not isinstance(weight, int) or isinstance(weight, bool)):
        raise BuildError(
            f"weight must be a whole number, not {frontmatter.yaml_kind(weight)}",
            where=Location(file=file, key="weight"),
            hint="write 'weight: 10' (lower comes first)",
        )


def _release_page(base: str, rel_data: dict[str, Any]) -> Page:
    version = rel_data["version"]
    path = f"/releases/{version}/"
    return Page(
        None,
        rel_data["source"],
        path,
        base + path,
        out_file(path),
        "releases",
        "page",
        "release",
        f"CernVM {version}",
        date=rel_data["date"],
        tags=("release",),
        description=(
            f"CernVM {version}: {rel_data['artifact_count']} artifacts for "
            + ", ".join(p["name"] for p in rel_data["profiles"])
        ),
    )


def _spelling(counts: Counter[str]) -> str:
    """The name of a tag written several ways: the spelling most pages use, ties to the first sorted."""
    return min(counts, key=lambda t: (-counts[t], t))


def make_pages(
    cfg: SiteConfig,
    files: dict[str, str],
    keys: dict[str, str],
    metas: dict[str, Any],
    data: dict[str, Any],
    changed: dict[str, str] | None = None,
) -> PageSet:
    """Pages of the sources (``files``: rel -> file, keyed by ``keys``), sections, releases and tags.

    ``changed``: the date each source last changed (``gitdates``), for pages without ``updated:``."""
    base = cfg.base_path.rstrip("/")
    pages: list[Page] = []
    by_path: dict[str, Page] = {}
    settings: dict[str, Section | None] = {}
    changed = changed or {}
    for rel in sorted(files):
        key = keys[rel]
        meta = metas[key]
        draft = meta["fm"].get("draft")
        if draft is not None and not isinstance(draft, bool):  # "no" and "false" are true strings
            raise BuildError(
                f"draft must be true or false, not {frontmatter.yaml_kind(draft)}",
                where=Location(file=files[rel], key="draft"),
                hint="write 'draft: true' (the page is left out) or 'draft: false', without quotes",
            )
        if draft:
            continue
        page = _source_page(cfg, rel, files[rel], key, meta, changed.get(rel), base, settings)
        if page.path in by_path:
            raise BuildError(
                f"page URL {page.path} is also produced by {by_path[page.path].file}",
                where=page.file,
                hint="rename one of the files or set a different 'url:'",
            )
        by_path[page.path] = page
        pages.append(page)

    # Section indexes that have no _index.md still get a page.
    for name, sec in sorted(cfg.sections.items()):
        path = f"/{name}/"
        if path not in by_path and any(p.section == name for p in pages):
            page = Page(
                None, None, path, base + path, out_file(path), name, "index", sec.list_layout, sec.title
            )
            by_path[path] = page
            pages.append(page)

    # One page per release in the data: the hand-written notes if there are any, else generated.
    for rel_data in data.get("releases", []):
        path = f"/releases/{rel_data['version']}/"
        found = by_path.get(path)
        if found is None:
            found = by_path[path] = _release_page(base, rel_data)
            pages.append(found)
        found.layout = "release"
        found.extra["release"] = rel_data

    # Tags are grouped by slug (their page's path): 'Squid' and 'squid' are one tag, named by the
    # spelling most pages use (ties: the first in sorted order), each page once in it.
    by_slug: dict[str, list[Page]] = {}
    spellings: dict[str, Counter[str]] = {}
    for p in pages:
        for t in p.tags:
            slug = tag_slug(t)
            spelt = spellings.setdefault(slug, Counter())
            if not spelt or by_slug[slug][-1] is not p:
                by_slug.setdefault(slug, []).append(p)
            spelt[t] += 1
    tagged = {_spelling(c): by_slug[slug] for slug, c in spellings.items()}
    if tagged:
        path = "/tags/"
        pages.append(Page(None, None, path, base + path, out_file(path), "tags", "tags", "tags", "Tags"))
        for t, members in sorted(tagged.items()):
            path = f"/tags/{tag_slug(t)}/"
            tp = Page(None, None, path, base + path, out_file(path), "tags", "tag", "list", f"Tagged “{t}”")
            tp.extra["tag"] = t
            tp.extra["members"] = members
            pages.append(tp)
    return PageSet(pages, by_path, {p.src: p for p in pages if p.src}, tagged, cfg.base_path)


def patch_pages(
    kept: PageSet,
    cfg: SiteConfig,
    files: dict[str, str],
    keys: dict[str, str],
    metas: dict[str, Any],
    edited: set[str],
    changed: dict[str, str] | None = None,
) -> PageSet:
    """``kept`` (the page set of the last complete build, as ``make_pages`` made it) with the pages of
    the ``edited`` sources made again from their metadata now, and every page's rendered metadata the
    one in ``metas``: what ``make_pages`` would return, when nothing other pages show of an edited page
    changed (``plan.public``: its title, front matter, place) and neither did anything else it reads
    (configuration, data, dates, the other sources: the caller knows by the plan's digest and keys).
    The pages are changed in place (lists, tag pages and the navigation hold them): ``kept`` is this
    build's. Making 1,001 pages was ~5 ms of a ~50 ms one-page rebuild in ``site serve``."""
    base = cfg.base_path.rstrip("/")
    settings: dict[str, Section | None] = {}
    changed = changed or {}
    for rel in edited:
        old = kept.by_src.get(rel)
        if old is None:  # a draft (its front matter says so still)
            continue
        key = keys[rel]
        new = _source_page(cfg, rel, files[rel], key, metas[key], changed.get(rel), base, settings)
        for name in _REMADE:
            setattr(old, name, getattr(new, name))
    for page in kept.pages:
        if page.md_key:
            page.r = metas[page.md_key]  # (the last build's was read through its state, closed since)
    return kept


#: what ``patch_pages`` takes of an edited source's page made again: all but what ``make_pages`` sets
#: after (a release's layout and data, a tag page's members)
_REMADE = tuple(name for name in Page.__slots__ if name not in ("extra", "layout"))
