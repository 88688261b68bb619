"""A one-page rebuild's plan made from the state (O(edited pages), not O(pages)).

When ``plan``'s ``Delta`` applies (the same sources, none of whose ``public`` part changed, the same plan
digest), every page but the edited ones is the last complete build's, and so is each edited page's context
but its ``OWN`` fields and links (made from its own Markdown): nothing it shows of other pages changed.
Each build records, per page it planned, those context parts by source (``plan.parts_blob``), and the
source pages' places (site path and URL: what the edited pages' links resolve to and are checked against).
This module plans from them without a ``Page`` or a context for the unchanged pages: their outputs are the
recorded ones, checked on disk by size and mtime as ``plan`` checks them (a deleted or edited output is
repaired by the next build). Whatever is not as expected (a row missing, of another format, or recorded
for another output than the one on disk, a page the feed shows, a link to a source without a place) makes
``recorded`` return None: the builder then plans as before, the whole page set made.

Each recorded row names the fingerprint of the output it was planned for: it is used only while that is the
output the state records, so a row left by a build that did not complete, or a damaged one, is never
taken for the page's context.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import templates as tpl_mod
from .cache import Snapshot, State
from .config import SiteConfig
from .links import check_links, check_release_files
from .model import Job, Late, Page, out_file, sha, url_path
from .output import matches
from .pages import PageSet
from .plan import (
    FIXED_OUTPUTS,
    OWN,
    PARTS_VERSION,
    SIDEBAR_ROW,
    Plan,
    _Fingerprints,
    _site_context,
    own_fields,
    parts_blob,
)
from .search import PREFIX as SEARCH_PREFIX


def places_blob(pageset: PageSet) -> bytes:
    """The source pages' places (source -> site path), pickled for the state."""
    return pickle.dumps({p.src: p.path for p in pageset.pages if p.src}, protocol=pickle.HIGHEST_PROTOCOL)


def _places(blob: bytes | None) -> dict[str, str] | None:
    try:
        got = pickle.loads(blob) if blob is not None else None
    except Exception:  # a damaged row: planned as before
        return None
    if not isinstance(got, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in got.items()
    ):
        return None
    return got


class _Parts:
    __slots__ = ("fed", "key", "out", "path", "rest")

    def __init__(self, blob: Any):
        version, self.path, self.out, self.key, self.rest, self.fed = pickle.loads(blob)
        page = self.rest["page"]
        if not (
            version == PARTS_VERSION
            and all(isinstance(v, str) for v in (self.path, self.out, self.key))
            and isinstance(page, dict)
            and all(page.get(k, 0) is None for k in OWN)
            and isinstance(page.get("links"), list)
            and isinstance(page.get("layout"), str)
            and isinstance(page.get("url"), str)
            and "site" not in self.rest
            and (self.rest.get("sidebar") is None or isinstance(self.rest["sidebar"], Late))
            and isinstance(self.fed, bool)
        ):
            raise ValueError("not a plan parts row")


def _parts(blob: Any) -> _Parts | None:
    try:
        return _Parts(blob)
    except Exception:  # missing, damaged, of another format: planned as before
        return None


def recorded(
    cfg: SiteConfig,
    site_dir: Path,
    state: State,
    snap: Snapshot,
    edited: set[str],
    keys: dict[str, str],
    metas: Mapping[str, Any],
    files: dict[str, str],
    old: dict[str, tuple[str, int, int]],
    out_dir: Path,
    env: tpl_mod.Environment,
    data: dict[str, Any],
    assets: dict[str, Path],
    file_sha256: Mapping[str, str],
    digested: tuple[str, list[Job], dict[str, str]],
) -> tuple[Plan, PageSet, dict[str, str]] | None:
    """The plan of a rebuild of the ``edited`` sources (``plan.Delta``'s case, the digest ``digested``
    already the snapshot's), a page set of the edited pages and their links' targets (what the write
    step reads of it), and the report's output -> source file; None: plan as before (module docstring)."""
    site, _format, _pages, outputs_count, report_fp = snap.report
    if site != str(site_dir):
        return None
    got_fp, by_output = state.report_sources()
    if got_fp != report_fp:
        return None
    rows = state.plan_parts(edited)
    parts: dict[str, _Parts] = {}
    for src in sorted(edited):
        row = _parts(rows.get(src))
        if row is None or row.fed or row.out not in old or row.out != out_file(row.path):
            return None
        parts[src] = row
    bars = state.plan_parts(
        {
            SIDEBAR_ROW + r.rest["sidebar"].key
            for r in parts.values()
            if isinstance(r.rest.get("sidebar"), Late)
        }
    )
    places = _places(state.page_places())
    if places is None or not all(places.get(src) == parts[src].path for src in parts):
        return None
    digest, asset_jobs, digests = digested
    jobs = list(asset_jobs)  # (``digested`` is the caller's, for a plan made after all)
    skip = {j.out for j in jobs} | {p.out for p in parts.values()}
    unchanged: set[str] = set()
    searchable: set[str] = set()
    for out, prev in old.items():
        if out in skip or out.startswith(SEARCH_PREFIX):
            continue
        if not matches(f"{out_dir}/{out}", prev):  # to be repaired: the whole plan makes its context
            return None
        jobs.append(Job(out=out, fp=prev[0]))
        unchanged.add(out)
        if out in snap.searchable:
            searchable.add(out)

    # the edited pages and what their links name (the places recorded, each target's metadata now)
    by_src: dict[str, Page] = {}
    at_path = {path: src for src, path in places.items()}
    base = cfg.base_path.rstrip("/")

    def page(src: str) -> Page | None:
        """The page of a source with a place; None where the place is not the recorded report's (the
        output -> source file map the snapshot names: a damaged place is never a link's URL)."""
        got = by_src.get(src)
        if got is None and src in places:
            path, key, file = places[src], keys.get(src), files.get(src)
            if key is None or key not in metas or file is None or by_output.get(out_file(path)) != file:
                return None
            got = by_src[src] = Page(
                src, file, path, base + url_path(path), "", "", "page", "", "", md_key=key
            )
            got.r = metas[key]
        return got

    edited_pages: list[Page] = []
    for src, row in parts.items():
        p = page(src)
        if p is None:
            return None
        fields = row.rest["page"]
        p.out, p.kind, p.layout, p.title = row.out, str(fields.get("kind")), fields["layout"], ""
        p.meta = p.r["fm"]
        edited_pages.append(p)
        for target, _line, kind in p.r.get("links", ()):
            path, _, frag = target.partition("#")
            if kind == "content" and path.endswith(".md"):
                if (path in keys) != (path in places) or (path in places and page(path) is None):
                    return None  # a draft's, or a place recorded for no source now
            elif kind == "site" and frag:
                rel = path[len(cfg.base_path) :] if path.startswith(cfg.base_path) else path.lstrip("/")
                src_at = at_path.get("/" + rel)
                if src_at is not None and page(src_at) is None:
                    return None
    if any(p.md_key is None for p in by_src.values()):
        return None
    pageset = PageSet(edited_pages, {p.path: p for p in by_src.values()}, by_src, {}, cfg.base_path)
    outputs = {o for o in old if not o.startswith(SEARCH_PREFIX)} | set(FIXED_OUTPUTS)
    check_links(pageset, outputs, set(assets) | {j.out for j in jobs if j.data is not None}, edited_pages)
    check_release_files(cfg.base_path, data.get("releases", []), assets, file_sha256)

    site_ctx = _site_context(cfg, digests)
    fps = _Fingerprints(env)
    sidebars: dict[str, tuple[list[dict[str, Any]], str]] = {}
    made: dict[str, bytes] = {}
    for p, (src, row) in zip(edited_pages, parts.items(), strict=True):
        template = f"{p.layout}.html"
        if not env.exists(template):
            return None
        # the row is the context the recorded output was made from, or it is not used: its fingerprint
        # made again (the former key and links in their place, as ``plan`` made it) is the output's
        # recorded one, and so is its sidebar's
        was: dict[str, Any] = {"site": site_ctx}
        was.update(row.rest)
        was["page"] = {**row.rest["page"], "content": Late("content", row.key, src)}
        sidebar = row.rest.get("sidebar")
        if isinstance(sidebar, Late):
            try:
                items = pickle.loads(bars[SIDEBAR_ROW + sidebar.key])
                items_fp = sha(env.closure_hash("partials/sidebar.html"), json.dumps(items, sort_keys=True))
            except Exception:  # missing, damaged: planned as before
                return None
            if items_fp != sidebar.key:
                return None
            sidebars[sidebar.arg] = (items, sidebar.key)
        if fps.job(p.out, template, was, row.key).fp != old[row.out][0]:
            return None
        p.description = str(p.meta.get("description") or p.r["summary"])  # (``pages._source_page``'s)
        fields = dict(row.rest["page"])
        fields.update(own_fields(pageset, p))  # (in their places: the row keeps the order)
        ctx: dict[str, Any] = {"site": site_ctx}
        ctx.update(row.rest)
        ctx["page"] = fields
        job = fps.job(p.out, template, ctx, p.md_key)
        jobs.append(job)
        blob = parts_blob(p.path, p.out, p.md_key or "", ctx, sidebars, made, row.fed)
        if blob is not None:
            made[src] = blob
        if fields.get("searchable"):
            searchable.add(p.out)
    if len(jobs) != outputs_count:  # the state does not describe the last build's outputs
        return None
    plan = Plan(jobs, sidebars, digest, frozenset(searchable), frozenset(unchanged), len(parts), None, made)
    return plan, pageset, by_output
