"""Step 3 of a site build: one ``Job`` per output with its fingerprint.

An output's fingerprint is ``sha(planner code, template closure, the template context as JSON)``; big
context values (the rendered body, the sidebar) enter as ``Late(kind, key)`` and are materialised only when
rendering; a source page's fields that its Markdown key determines enter as the key (``BY_KEY``).
Anything a template can see is in its fingerprint, so an output whose fingerprint did not change needs
no rendering, and an incremental build writes exactly what a clean one would.

A rebuild after edits that change no page's public part (``public``: what other pages show of it —
title, front matter, headings' ids, the excerpt of a listed page) plans only the edited pages
(``Delta``): the plan's ``digest`` covers everything else a page's context is made of (configuration,
data, assets, templates, the planner's code, the builder's inputs such as git dates), so when it
equals the last complete build's, every other page's fingerprint is the one recorded and its output,
checked by size and mtime, is the one on disk. So are the sitemap and robots.txt (they show only
public parts), and the feed unless it shows an edited page (its entries hold their pages' contents).
The output-path check (``check_outputs``) is the last build's too.
"""

from __future__ import annotations

import functools
import json
import pickle
import posixpath
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import BuildError, Location
from ..fsutil import sha256_file
from . import nav as nav_mod
from . import templates as tpl_mod
from . import versions as versions_mod
from .config import SiteConfig
from .links import check_links, check_release_files
from .model import (
    Job,
    Late,
    Page,
    code_files,
    code_sha,
    human_date,
    newest_first,
    plain,
    sha,
    sha_after,
    tag_slug,
    tag_uri,
)
from .ntuple import NamedTuple
from .output import matches
from .pages import PageSet
from .search import MANIFEST as SEARCH_MANIFEST
from .search import PREFIX as SEARCH_PREFIX

#: outputs every site has besides its pages and assets
FIXED_OUTPUTS = ("atom.xml", "sitemap.xml", "robots.txt", SEARCH_MANIFEST)
#: the site-wide outputs rendered from templates of their own name (``plan``'s last jobs)
FIXED_TEMPLATES = FIXED_OUTPUTS[:3]


#: what of a rendered source's meta (``sources._render_source``) only its own page shows
PRIVATE = frozenset(("toc", "links", "code", "fm_key"))
#: what lists show of a page (``_item``): public only for pages in a list (dated or tagged ones)
LISTED = frozenset(("excerpt_html", "summary"))


def public(meta: dict[str, Any]) -> bytes:
    """What other outputs can show of a rendered source (its page's title, place, headings' ids, and
    the excerpt of a page that lists show), as bytes to compare: pickled, so 1 and 1.0 or a date and
    its text differ (``==`` would not tell them apart, and one becomes "1", the other "1.0" in a
    sidebar). A page is in a list (section list, tag page, home news, feed) only with a date or tags
    in its front matter, which is public itself."""
    fm = meta.get("fm") or {}
    hidden = PRIVATE if fm.get("date") or fm.get("tags") else PRIVATE | LISTED
    return pickle.dumps({k: v for k, v in meta.items() if k not in hidden}, protocol=pickle.HIGHEST_PROTOCOL)


class Delta(NamedTuple):
    """The last complete build's plan, for a rebuild whose edits change no page's ``public`` part."""

    digest: str  # that build's ``Plan.digest``
    edited: frozenset[str]  # sources (content-relative) whose key changed since
    old: dict[str, tuple[str, int, int]]  # the outputs it recorded: path -> (fingerprint, size, mtime)
    out_dir: Path
    searchable: frozenset[str]  # its ``Plan.searchable``


class Plan(NamedTuple):
    jobs: list[Job]
    sidebars: dict[str, tuple[list[dict[str, Any]], str]]  # "section:open dir" -> (items, fingerprint)
    #: everything the outputs are made of but the pages' own Markdown (``Delta``)
    digest: str = ""
    #: the pages the search index covers (their article is marked for it)
    searchable: frozenset[str] = frozenset()
    #: outputs known to be on disk as planned (a ``Delta``'s pages, checked by size and mtime)
    unchanged: frozenset[str] = frozenset()
    #: pages whose context was made (all of them unless a ``Delta`` was used)
    planned: int = 0
    #: the sidebars and reading orders made (``plan``'s ``navigation``)
    navigation: _Navigation | None = None
    #: each planned source page's plan parts (``parts_blob``) by source, and its sidebar's items, for the
    #: state (``replan``); ``plan`` leaves them to ``plan_parts`` (``unpickled``)
    parts: dict[str, bytes] | None = None
    #: the planned source pages whose parts are not made yet: ``parts_blob``'s arguments (source, site
    #: path, output, Markdown key, context, whether the feed shows it)
    unpickled: list[tuple[str, str, str, str, dict[str, Any], bool]] | None = None


def plan_parts(outputs: Plan) -> dict[str, bytes]:
    """``Plan.parts``, made from ``Plan.unpickled`` where ``plan`` left them: pickling every page's
    context was ~0.03 CPU-s at 1,000 pages, serial time before the write step forked; the builder
    makes them while the pages are written (the write step's ``meanwhile``)."""
    if outputs.unpickled is None:
        return outputs.parts or {}
    parts: dict[str, bytes] = {}
    for src, path, out, md_key, ctx, fed in outputs.unpickled:
        blob = parts_blob(path, out, md_key, ctx, outputs.sidebars, parts, fed)
        if blob is not None:
            parts[src] = blob
    return parts


@functools.lru_cache(maxsize=1)
def plan_code() -> str:
    # the planner's and page model's code: a plan recorded by another version of them is not reused
    return sha(*(code_sha(name) for name in sorted(code_files())))


def _fp_default(obj: Any) -> Any:
    if isinstance(obj, Late):
        return ["late", obj.kind, obj.key, obj.arg]
    raise TypeError(type(obj).__name__)


#: a source page's fields made from its rendered metadata alone (``Page.r``, its front matter, its
#: description: ``pages._source_page``), which its Markdown key determines (``sources.plan_sources``:
#: the source's digest, the renderer's code): its fingerprint has the key in their place (with the
#: planner's code, which makes them from it), not their JSON (a table of contents is many little
#: dicts: ~40 % of a page's JSON, ~6 ms of ``plan`` at 1,000 pages)
BY_KEY = frozenset(("toc", "meta", "description"))
#: one encoder for every fingerprint (``json.dumps`` with options makes one a call)
_ENCODE = json.JSONEncoder(sort_keys=True, default=_fp_default, check_circular=False).encode


#: the fields of a page's context made from its own rendered metadata, None in its recorded row
#: (``replan`` makes them again from the page's Markdown key, and its links, which the row keeps: see
#: ``parts_blob``; the rest of its context is recorded)
OWN = ("description", "toc", "content")
#: the format of a recorded page's plan parts (a row of another is not read)
PARTS_VERSION = 2


#: the plan parts row of a sidebar's items, by the sidebar's fingerprint (pages share it: one row)
SIDEBAR_ROW = "\0sidebar "


def parts_blob(
    path: str,
    out: str,
    md_key: str,
    ctx: dict[str, Any],
    sidebars: Mapping[str, Any],
    rows: dict[str, bytes],
    fed: bool,
) -> bytes | None:
    """What a one-page rebuild needs of a planned source page's context (``replan``), pickled: its site
    path, output and Markdown key, the context without ``site`` (the plan's own) and its ``OWN`` fields
    (None in their place: the order stays) but its links (with the key, what its fingerprint has of
    them: ``replan`` checks the row against the output's recorded fingerprint), whether the feed shows
    it. Its sidebar's items go in ``rows`` once, by their fingerprint (``SIDEBAR_ROW``: ~80 % of a
    page's row at 1,000 pages). None when the context cannot be pickled (the page is then planned as
    before: the whole page set made)."""
    rest = {k: v for k, v in ctx.items() if k != "site"}
    rest["page"] = {k: (None if k in OWN else v) for k, v in ctx["page"].items()}
    try:
        sidebar = ctx.get("sidebar")
        if isinstance(sidebar, Late) and SIDEBAR_ROW + sidebar.key not in rows:
            items = pickle.dumps(sidebars[sidebar.arg][0], protocol=pickle.HIGHEST_PROTOCOL)
            rows[SIDEBAR_ROW + sidebar.key] = items
        return pickle.dumps((PARTS_VERSION, path, out, md_key, rest, fed), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
        return None


class _Fingerprints:
    """Jobs with their fingerprint; the site-wide part of the context is one shared object, hashed once."""

    def __init__(self, env: tpl_mod.Environment):
        self.env = env
        self._site_id = 0
        self._site_fp = ""
        # a fingerprint's head (the plan's code, the template's, the site's JSON) hashed once per
        # template (``sha_after``), not once per job (callgrind, 1,000 pages: ~13 M instructions of
        # sha256 updates fewer in this serial step)
        self._heads: dict[tuple[str, bool], Callable[..., str]] = {}

    def job(self, out: str, template: str, ctx: dict[str, Any], md_key: str | None = None) -> Job:
        """``md_key``: the Markdown key of the page whose context ``ctx`` is (its ``BY_KEY`` fields)."""
        site = ctx.get("site")
        if site is not None and id(site) != self._site_id:
            self._site_id, self._site_fp = id(site), json.dumps(site, sort_keys=True)
            self._heads.clear()
        rest = {k: v for k, v in ctx.items() if k != "site"}
        if md_key:
            rest["page"] = {k: v for k, v in rest["page"].items() if k not in BY_KEY}
        head = self._heads.get((template, site is not None))
        if head is None:
            site_fp = self._site_fp if site is not None else ""
            head = sha_after(plan_code(), self.env.closure_hash(template), site_fp)
            self._heads[template, site is not None] = head
        fp = head(md_key or "", _ENCODE(rest))
        return Job(out=out, fp=fp, template=template, context=ctx)


def _asset_jobs(
    cfg: SiteConfig, assets: dict[str, Path], css: str, file_sha256: Mapping[str, str]
) -> tuple[list[Job], dict[str, str]]:
    """Copies of the asset files and the generated ones; returns the jobs and each asset's digest."""
    jobs: list[Job] = []
    digests: dict[str, str] = {}
    for rel, apath in sorted(assets.items()):
        digest = sha("file", file_sha256.get(rel) or sha256_file(apath))
        digests[rel] = digest
        jobs.append(Job(out=rel, fp=sha("copy", digest), copy_from=apath))
    generated = {"assets/pygments.css": css.encode()}
    for rel, blob in generated.items():
        digests[rel] = sha("file", blob)
        jobs.append(Job(out=rel, fp=sha("bytes", blob), data=blob))
    return jobs, digests


def _origin(page: Page) -> str:
    """What a page's output is made from, for a message."""
    if page.file:
        return page.file
    if page.kind == "tag":
        return f"the tag page of {page.extra.get('tag', '')!r}"
    if page.kind == "tags":
        return "the tags page"
    return f"the {page.kind} page {page.path}"


def check_outputs(pages: list[Page], asset_jobs: list[Job], assets: Mapping[str, Path]) -> None:
    """Every output path once, before anything is written: two sources of one output (a page and a
    copied file, a tag page and a page, a file named like a generated one, a file in the search index's
    folder), or a file where another output needs a folder, is one line naming both (not a
    ``FileExistsError`` from the writer)."""
    by_out: dict[str, str] = {out: f"the generated {out}" for out in FIXED_OUTPUTS}
    # outputs that differ only by case or Unicode form are one file on macOS/Windows checkouts and on
    # case-insensitive hosts: one would overwrite the other there
    folded: dict[str, str] = {_fold(out): out for out in by_out}

    def claim(out: str, source: str) -> None:
        other = by_out.get(out)
        same = folded.setdefault(_fold(out), out)
        if other is None and same != out:
            raise BuildError(
                f"outputs {same} (from {by_out[same]}) and {out} (from {source}) differ only by case or "
                "Unicode form",
                hint="rename one of them (they would be one file on a case-insensitive file system)",
            )
        if other is None and out.startswith(SEARCH_PREFIX):
            other = f"the search index ({SEARCH_PREFIX})"
        if other is not None:
            raise BuildError(
                f"output {out} would be written from both {other} and {source}",
                hint="rename or remove one of them (or give the page another 'url:')",
            )
        by_out[out] = source

    for job in asset_jobs:
        claim(job.out, str(assets[job.out]) if job.out in assets else f"the generated {job.out}")
    for page in pages:
        claim(page.out, _origin(page))
    folders: set[str] = set()
    for out, source in by_out.items():
        folder = out.rpartition("/")[0]
        while folder and folder not in folders:
            if folder in by_out:
                raise BuildError(
                    f"output {folder} would be a file (from {by_out[folder]}) and the folder of {out} "
                    f"(from {source})",
                    hint="rename or remove one of them",
                )
            folders.add(folder)
            folder = folder.rpartition("/")[0]


def _fold(out: str) -> str:
    return unicodedata.normalize("NFC", out).casefold() if not out.isascii() else out.lower()


def _site_context(cfg: SiteConfig, digests: dict[str, str]) -> dict[str, Any]:
    base = cfg.base_path

    def asset_url(rel: str) -> str:  # versioned by content, so browsers may cache assets forever
        d = digests.get(rel)
        return f"{base}{rel}?v={d[:10]}" if d else f"{base}{rel}"

    return {
        "title": cfg.title,
        "description": cfg.description,
        "base_url": cfg.base_url,
        "base_path": base,
        "language": cfg.language,
        "author": {"name": cfg.author_name, "email": cfg.author_email},
        # (a path on this site under the base path; an http(s) or mailto: URL as written)
        "menu": [
            {"title": m.title, "url": base.rstrip("/") + m.url if m.url.startswith("/") else m.url}
            for m in cfg.menu
        ],
        "feed_url": base + "atom.xml",
        "search_url": base + "search/",
        "search_bundle": base + SEARCH_PREFIX,
        "css": [asset_url("assets/site.css"), asset_url("assets/pygments.css")],
        "js": asset_url("assets/site.js"),
        "search_js": asset_url("assets/search.js"),
        "context_js": asset_url("assets/context.js"),
        "favicon": asset_url("assets/favicon.svg"),
    }


class _Navigation:
    """Sidebar trees and reading order of the sidebar sections; sidebars made once per open folder."""

    def __init__(self, cfg: SiteConfig, pageset: PageSet, env: tpl_mod.Environment):
        self.trees: dict[str, nav_mod.Node] = {}
        self.reading: dict[str, list[tuple[str, str]]] = {}
        names = set(cfg.sections) | {p.section for p in pageset.pages}
        for name in sorted(names):
            sec = versions_mod.section_settings(cfg, name)
            if sec is not None and sec.sidebar:
                members = [p for p in pageset.pages if p.section == name and p.src]
                idx = pageset.by_path.get(f"/{name}/")
                titles = {name: idx.title if idx else sec.title}
                tree = nav_mod.build_tree(name, members, titles)  # type: ignore[arg-type]
                self.trees[name] = tree
                self.reading[name] = nav_mod.flatten(tree)
        self.versions = versions_mod.versions(cfg, names)
        self.positions = {n: {u: i for i, (_t, u) in enumerate(o)} for n, o in self.reading.items()}
        self.sidebar_tpl = env.closure_hash("partials/sidebar.html")
        self.sidebars: dict[str, tuple[list[dict[str, Any]], str]] = {}

    def sidebar_key(self, section: str, open_dir: str) -> str:
        k = f"{section}:{open_dir}"
        if k not in self.sidebars:
            items = nav_mod.sidebar(self.trees[section], open_dir)
            self.sidebars[k] = (items, sha(self.sidebar_tpl, json.dumps(items, sort_keys=True)))
        return k

    def place(self, page: Page, ctx: dict[str, Any]) -> None:
        """The page's sidebar and previous/next, when its section has a sidebar."""
        open_dir = posixpath.dirname(page.src) if page.src else page.section
        k = self.sidebar_key(page.section, open_dir)
        ctx["sidebar"] = Late("sidebar", self.sidebars[k][1], k)
        order = self.reading[page.section]
        i = self.positions[page.section].get(page.url, -1)
        if i >= 0:
            prev = order[i - 1] if i > 0 else None
            nxt = order[i + 1] if i + 1 < len(order) else None
            ctx["page"]["prev"] = {"title": prev[0], "url": prev[1]} if prev else None
            ctx["page"]["next"] = {"title": nxt[0], "url": nxt[1]} if nxt else None


def _archived(cfg: SiteConfig, section: str) -> bool:
    v = versions_mod.of(cfg, section)
    return v is not None and v.version != versions_mod.LATEST


def _tags(base: str, tags: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"name": t, "url": f"{base}tags/{tag_slug(t)}/"} for t in tags]


def _item(pageset: PageSet, p: Page) -> dict[str, Any]:
    """A page as lists, the feed and the home page's news show it."""
    return {
        "title": p.title,
        "url": p.url,
        "date": p.date,
        "date_human": human_date(p.date),
        "section": p.section,
        "excerpt": pageset.resolve_html(p.r.get("excerpt_html", "")) if p.md_key else "",
        "description": p.description,
        "tags": _tags(pageset.base_path, p.tags),
    }


def _breadcrumbs(pageset: PageSet, page: Page, made: dict[str, list[dict[str, str]]]) -> list[dict[str, str]]:
    """``made``: the crumbs by parent path, this plan's (the pages of a folder share theirs: templates
    only read their context)."""
    if page.kind == "home":
        return []
    parts = page.path.strip("/").split("/")
    parent = "/".join(parts[:-1])
    crumbs = made.get(parent)
    if crumbs is None:
        crumbs = made[parent] = [{"title": "Home", "url": pageset.base_path}]
        for i in range(1, len(parts)):
            p = pageset.by_path.get("/" + "/".join(parts[:i]) + "/")
            if p is not None:
                crumbs.append({"title": p.title, "url": p.url})
    return crumbs


def _menu_active(cfg: SiteConfig, page: Page, menu: list[dict[str, str]]) -> str | None:
    url = page.url
    v = versions_mod.of(cfg, page.section)
    if v is not None and v.version != versions_mod.LATEST:  # a release's docs are still the docs
        url = url.replace(f"/{v.folder}/", f"/{v.base}/", 1)
    best = None
    for m in menu:
        if url.startswith(m["url"]) and (best is None or len(m["url"]) > len(best)):
            best = m["url"]
    return best


def _page_fields(
    cfg: SiteConfig,
    pageset: PageSet,
    page: Page,
    menu: list[dict[str, str]],
    crumbs: dict[str, list[dict[str, str]]],
) -> dict[str, Any]:
    return {
        "title": page.title,
        "url": page.url,
        "abs_url": cfg.absolute(page.url),
        "section": page.section,
        "kind": page.kind,
        "layout": page.layout,
        "date": page.date,
        "date_human": human_date(page.date),
        "updated": page.updated,
        "searchable": searchable(page, _archived(cfg, page.section)),
        "edit_url": cfg.edit_url.replace("{path}", page.src) if cfg.edit_url and page.src else "",
        "updated_human": human_date(page.updated),
        "tags": _tags(cfg.base_path, page.tags),
        "breadcrumbs": _breadcrumbs(pageset, page, crumbs),
        "menu_active": _menu_active(cfg, page, menu),
        "meta": plain(page.meta),
        "prev": None,
        "next": None,
        "versions": [],
        **own_fields(pageset, page),
    }


def own_fields(pageset: PageSet, page: Page) -> dict[str, Any]:
    """A page's ``OWN`` context fields and its links: ``_page_fields``' and ``replan``'s, which makes
    them again for an edited page (its recorded row has the rest)."""
    return {
        "description": page.description,
        "toc": [{"level": lv, "id": i, "title": t} for lv, i, t in page.r.get("toc", ())],
        "content": Late("content", page.md_key, page.src or "") if page.md_key else "",
        "links": pageset.link_map(page),
    }


def _page_context(
    cfg: SiteConfig,
    pageset: PageSet,
    page: Page,
    site_ctx: dict[str, Any],
    nav: _Navigation,
    dated: list[Page],
    data: dict[str, Any],
    crumbs: dict[str, list[dict[str, str]]],
) -> dict[str, Any]:
    layout = page.layout
    fields = _page_fields(cfg, pageset, page, site_ctx["menu"], crumbs)
    ctx: dict[str, Any] = {"site": site_ctx, "page": fields}
    psec = versions_mod.section_settings(cfg, page.section)
    if psec and psec.sidebar and page.section in nav.trees:
        nav.place(page, ctx)
        if page.src:
            ctx["page"]["versions"] = versions_mod.switcher(
                cfg, page.src, page.section, pageset.by_src, nav.versions
            )
    if page.kind == "index" and layout == "list":
        ctx["items"] = [_item(pageset, p) for p in dated if p.section == page.section]
    if page.kind == "tag":
        ctx["items"] = [_item(pageset, p) for p in sorted(page.extra["members"], key=newest_first)]
    if page.kind == "tags":
        ctx["tags"] = [
            {"name": t, "url": f"{cfg.base_path}tags/{tag_slug(t)}/", "count": len(m)}
            for t, m in sorted(pageset.tagged.items())
        ]
    if "release" in page.extra:
        ctx["release"] = page.extra["release"]
    if layout == "home":
        ctx["news"] = [_item(pageset, p) for p in dated[:4]]
    for key in tpl_mod.LAYOUT_DATA.get(layout, ()):
        ctx.setdefault("data", {})[key] = data.get(key)
    for key in page.meta.get("data", ()) or ():
        ctx.setdefault("data", {})[str(key)] = data.get(str(key))
    return ctx


def _feed_context(
    cfg: SiteConfig, pageset: PageSet, site_ctx: dict[str, Any], dated: list[Page]
) -> dict[str, Any]:
    base = cfg.base_path
    items = []
    for p in dated[: cfg.feed_limit]:
        it = _item(pageset, p)
        it["abs_url"] = cfg.absolute(p.url)
        it["id"] = tag_uri(cfg, p)
        it["updated"] = (p.updated or p.date or "1970-01-01") + "T00:00:00Z"
        it["content"] = Late("content", p.md_key, p.src or "") if p.md_key else it["excerpt"]
        items.append(it)
    return {
        "site": site_ctx,
        "feed": {
            "title": cfg.feed_title,
            "id": cfg.absolute(base + "atom.xml"),
            "self": cfg.absolute(base + "atom.xml"),
            "home": cfg.base_url,
            "updated": max((i["updated"] for i in items), default="1970-01-01T00:00:00Z"),
            "entries": items,
        },
    }


def searchable(page: Page, archived: bool = False) -> bool:
    """Whether the search index covers the page (its article is marked ``data-search-body``); the
    docs of past releases are left out, or every answer would come once per release."""
    return bool(
        page.md_key
        and page.kind not in ("home", "tag", "tags")
        and page.layout not in ("404", "search", "list")
        and not page.meta.get("noindex")
        and not archived
    )


def plan_digest(
    cfg: SiteConfig,
    assets: dict[str, Path],
    data: dict[str, Any],
    env: tpl_mod.Environment,
    pygments_css: str,
    inputs: str,
    file_sha256: Mapping[str, str],
) -> tuple[str, list[Job], dict[str, str]]:
    """``Plan.digest`` (everything the outputs are made of but the pages' Markdown), with the asset
    jobs and the assets' digests it covers: made before the page set by a rebuild that may find
    nothing changed (``Builder._as_recorded``), and by ``plan``."""
    jobs, digests = _asset_jobs(cfg, assets, pygments_css, file_sha256)
    digest = sha(
        plan_code(),
        inputs,
        repr(cfg),
        pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL),
        env.folder_hash(),
        *(f"{j.out} {j.fp}" for j in jobs),
    )
    return digest, jobs, digests


def _kept(delta: Delta | None, out: str, jobs: list[Job], unchanged: set[str]) -> bool:
    """Whether a delta's last build recorded ``out`` and it is on disk as recorded: then it is planned
    as unchanged, with that build's fingerprint (its context is the same, and not made)."""
    if delta is None:
        return False
    prev = delta.old.get(out)
    if prev is None or not matches(f"{delta.out_dir}/{out}", prev):
        return False
    jobs.append(Job(out=out, fp=prev[0]))
    unchanged.add(out)
    return True


def plan(
    cfg: SiteConfig,
    pageset: PageSet,
    assets: dict[str, Path],
    data: dict[str, Any],
    env: tpl_mod.Environment,
    pygments_css: str,
    *,
    inputs: str = "",
    delta: Delta | None = None,
    file_sha256: Mapping[str, str] | None = None,
    whole: Callable[[], object] | None = None,
    digested: tuple[str, list[Job], dict[str, str]] | None = None,
    navigation: _Navigation | None = None,
) -> Plan:
    """Every output of the site, links and served release files checked first; ``pygments_css``: the
    highlighting stylesheet (``markdown.pygments_css`` of the site's style); ``inputs``: a digest of
    what the builder made the page set from besides the Markdown (git dates); ``delta``: the last
    complete build's plan, used when this one's digest is the same (module docstring);
    ``file_sha256``: the sha256 of assets by site path, where the caller knows it (``filedigest``);
    ``whole``: called when every page is planned, before any context is made (the builder reads the
    pages' whole metadata then, in one query: a delta's metadata is read on use, one query a page);
    ``digested``: ``plan_digest``'s result, where the caller made it (used once: its job list grows);
    ``navigation``: the last complete build's (``Plan.navigation``), where nothing other pages show of a
    page changed since, nor anything else the digest covers (``site serve``: ``pages.patch_pages``)."""
    pages = pageset.pages
    file_sha256 = file_sha256 or {}
    made = digested or plan_digest(cfg, assets, data, env, pygments_css, inputs, file_sha256)
    digest, jobs, digests = made
    if delta is not None and delta.digest != digest:
        delta = None
    if delta is None and whole is not None:
        whole()
    site_ctx = _site_context(cfg, digests)
    nav = navigation or _Navigation(cfg, pageset, env)
    dated = sorted(
        (p for p in pages if p.date and p.section in cfg.sections and cfg.sections[p.section].feed),
        key=lambda p: (p.date or "", p.path),
        reverse=True,
    )
    if delta is None:  # (a delta's outputs are the last complete build's, which this check passed)
        check_outputs(pages, jobs, assets)
    outputs = {j.out for j in jobs} | {p.out for p in pages} | set(FIXED_OUTPUTS)
    edited = [p for p in pages if delta is None or p.src in delta.edited]
    # with a delta, the other pages' links are the ones checked last time, to the same targets
    check_links(pageset, outputs, set(assets) | {j.out for j in jobs if j.data is not None}, edited)
    check_release_files(cfg.base_path, data.get("releases", []), assets, file_sha256)

    fps = _Fingerprints(env)
    fed_srcs = {p.src for p in dated[: cfg.feed_limit] if p.src}
    unpickled: list[tuple[str, str, str, str, dict[str, Any], bool]] = []
    searchable_pages: set[str] = set()
    unchanged: set[str] = set()
    crumbs: dict[str, list[dict[str, str]]] = {}
    for page in pages:
        if delta is not None and page.src not in delta.edited:
            prev = delta.old.get(page.out)
            if prev is None or not matches(f"{delta.out_dir}/{page.out}", prev):
                # not on disk as recorded: plan everything (its context is not at hand)
                return plan(
                    cfg,
                    pageset,
                    assets,
                    data,
                    env,
                    pygments_css,
                    inputs=inputs,
                    file_sha256=file_sha256,
                    whole=whole,
                    navigation=nav,
                )
            jobs.append(Job(out=page.out, fp=prev[0]))  # never rendered: ``Plan.unchanged``
            unchanged.add(page.out)
            if page.out in delta.searchable:
                searchable_pages.add(page.out)
            continue
        template = f"{page.layout}.html"
        if not env.exists(template):
            raise BuildError(
                f"no template '{template}' for layout '{page.layout}'",
                where=Location(file=page.file, key="layout") if page.file else None,
                hint=f"add templates/{template} or use another layout",
            )
        ctx = _page_context(cfg, pageset, page, site_ctx, nav, dated, data, crumbs)
        job = fps.job(page.out, template, ctx, page.md_key)
        jobs.append(job)
        if page.src and page.md_key:
            unpickled.append((page.src, page.path, page.out, page.md_key, ctx, page.src in fed_srcs))
        if ctx["page"]["searchable"]:
            searchable_pages.add(page.out)

    planned = len(pages) - len(unchanged)
    # a delta's edits change no page's public part: the sitemap (pages' paths and dates) and robots.txt
    # are the last build's, and so is the feed unless it shows an edited page's content
    fed = delta is not None and any(p.src in delta.edited for p in dated[: cfg.feed_limit])
    if fed or not _kept(delta, "atom.xml", jobs, unchanged):
        jobs.append(fps.job("atom.xml", "atom.xml", _feed_context(cfg, pageset, site_ctx, dated)))
    if not _kept(delta, "sitemap.xml", jobs, unchanged):
        sitemap = [
            {"loc": cfg.absolute(p.url), "lastmod": p.updated or p.date}
            for p in sorted(pages, key=lambda p: p.path)
            if p.out.endswith(".html") and p.layout != "404" and not p.meta.get("noindex")
        ]
        jobs.append(fps.job("sitemap.xml", "sitemap.xml", {"urls": sitemap}))
    if not _kept(delta, "robots.txt", jobs, unchanged):
        robots = {"sitemap": cfg.absolute(cfg.base_path + "sitemap.xml")}
        jobs.append(fps.job("robots.txt", "robots.txt", robots))
    return Plan(
        jobs,
        nav.sidebars,
        digest,
        frozenset(searchable_pages),
        frozenset(unchanged),
        planned,
        nav,
        None,
        unpickled,
    )
