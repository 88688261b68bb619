"""Build the site: sources -> rendered Markdown (cached by content hash) -> page model -> outputs.

Incremental by construction: every output has a fingerprint, the hash of everything its template sees
(the context as JSON, the template and the templates it includes, the rendered Markdown's key, the
sidebar's key). An output is rendered again only when its fingerprint changed, so an incremental build
writes exactly the bytes a clean build would. Rendering runs in forked worker processes when there is
enough of it to pay for the fork.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing
import os
import posixpath
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape, unescape
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import BuildError, CernVMError, Location
from . import config as config_mod
from . import markdown as md_mod
from . import nav as nav_mod
from . import templates as tpl_mod
from .cache import State
from .config import SiteConfig

Progress = Callable[[str, int, int], None]

#: outputs below this many are rendered in-process (forking costs more than it saves)
PARALLEL_MIN = 48
GENERATE_RE = re.compile(rb"^generate:\s*([\w-]+)\s*$", re.M)
BUILD_VERSION = "1"


class LinkErrors(BuildError):
    """Links that point nowhere: each one with file:line."""

    def __init__(self, problems: list[str]):
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(
            problems[0] + more,
            hint="fix the links (paths are relative to the page's .md file; anchors are heading ids)",
        )
        self.problems = problems


@dataclass
class Page:
    src: str | None  # content-relative source, None for pages made from data
    file: str | None  # source file for messages
    path: str  # site path without the base: '/docs/a/'
    url: str  # with the base path
    out: str  # output file, relative to the output folder
    section: str
    kind: str  # page | index | home | release | tags | tag
    layout: str
    title: str
    nav_title: str = ""  # shorter title for the sidebar and previous/next
    date: str | None = None
    updated: str | None = None
    tags: tuple[str, ...] = ()
    weight: int = 1000
    description: str = ""
    md_key: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # front matter
    r: dict[str, Any] = field(default_factory=dict)  # rendered Markdown minus the HTML
    extra: dict[str, Any] = field(default_factory=dict)  # layout data (release record, tag items)


@dataclass
class BuildReport:
    out_dir: Path
    pages: int
    outputs: int
    rendered: int
    markdown_rendered: int
    removed: int
    seconds: float
    jobs: int
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # output file -> source file

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "pages": self.pages,
            "outputs": self.outputs,
            "rendered": self.rendered,
            "markdown_rendered": self.markdown_rendered,
            "removed": self.removed,
            "seconds": round(self.seconds, 3),
            "jobs": self.jobs,
            "warnings": self.warnings,
        }


@dataclass
class Job:
    out: str
    fp: str
    template: str | None = None
    context: dict[str, Any] | None = None
    copy_from: Path | None = None
    data: bytes | None = None


class Late:
    """A context value filled in only when the output is rendered (big, and fingerprinted by key)."""

    __slots__ = ("arg", "key", "kind")

    def __init__(self, kind: str, key: str, arg: str = ""):
        self.kind, self.key, self.arg = kind, key, arg


def _fp_default(obj: Any) -> Any:
    if isinstance(obj, Late):
        return ["late", obj.kind, obj.key, obj.arg]
    raise TypeError(type(obj).__name__)


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def default_cache_dir(out_dir: Path) -> Path:
    return paths.cache_dir("site", _sha(str(out_dir.resolve()))[:16])


# -- sources ---------------------------------------------------------------------------------------
def _date(value: Any, file: str, key: str) -> str | None:
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


def _render_source(
    args: tuple[str, str, str, str],
) -> tuple[str, Any, str, str] | tuple[str, tuple[str, str, str]]:
    """Worker: front matter + Markdown of one source. Returns (key, meta, html, text) or (key, error)."""
    from . import frontmatter

    key, rel, file, base_path = args
    try:
        raw = Path(file).read_bytes()
        text = raw.decode("utf-8")
        fm, body, first_line = frontmatter.split(text, file)
        gen = fm.get("generate")
        if gen:
            from . import reference

            try:
                body = body.rstrip("\n") + "\n\n" + reference.generate(str(gen))
            except KeyError:
                raise BuildError(
                    f"unknown generator '{gen}'",
                    where=Location(file=file, key="generate"),
                    hint="one of: " + ", ".join(sorted(reference.GENERATORS)),
                ) from None
        r = md_mod.render(body, src_path=rel, first_line=first_line, base_path=base_path)
    except UnicodeDecodeError as e:
        return key, (f"not UTF-8 text (byte {e.start})", file, "save the file as UTF-8")
    except CernVMError as e:
        # exceptions do not cross the process boundary with their fields: send the parts
        return key, (e.message, str(e.where) if e.where else "", e.hint or "")
    meta = {
        "fm": fm,
        "h1": r.h1,
        "toc": r.toc,
        "ids": r.ids,
        "links": [(x.target, x.line, x.kind) for x in r.links],
        "excerpt_html": r.excerpt_html,
        "excerpt_text": r.excerpt_text,
    }
    return key, meta, r.html, r.text


def _source_key(rel: str, raw: bytes, base_path: str) -> str:
    gen_text = b""
    if raw.startswith(b"---"):
        head = raw[: raw.find(b"\n---", 3) + 1] if b"\n---" in raw else raw
        m = GENERATE_RE.search(head)
        if m:
            from . import reference

            try:
                gen_text = reference.generate(m.group(1).decode()).encode()
            except KeyError:
                gen_text = b"?"
    return _sha(_render_version(), base_path, rel, raw, gen_text)


_VERSION: list[str] = []


def _render_version() -> str:
    # The renderer's own code is part of every cache key: changing it re-renders everything.
    if not _VERSION:
        _VERSION.append(_sha(md_mod.VERSION, BUILD_VERSION, Path(md_mod.__file__).read_bytes()))
    return _VERSION[0]


def _page_path(rel: str, fm: dict[str, Any]) -> str:
    if isinstance(fm.get("url"), str):
        url = str(fm["url"])
        return url if url.startswith("/") else "/" + url
    stem = rel[: -len(".md")]
    if stem == "index":
        return "/"
    if stem.endswith("/_index") or stem.endswith("/index"):
        return "/" + stem.rsplit("/", 1)[0] + "/"
    return "/" + stem + "/"


def _out_file(path: str) -> str:
    rel = path.lstrip("/")
    return rel + "index.html" if rel == "" or rel.endswith("/") else rel


def tag_slug(tag: str) -> str:
    return md_mod.slugify(tag)


# -- the build ---------------------------------------------------------------------------------------
class Builder:
    def __init__(
        self,
        site_dir: Path,
        out_dir: Path,
        *,
        base_url: str | None = None,
        cache_dir: Path | None = None,
        jobs: int | None = None,
        repo_metadata: dict[str, Path] | None = None,
        progress: Progress | None = None,
    ):
        self.site_dir = site_dir.resolve()
        self.out_dir = out_dir.resolve()
        self.base_url = base_url
        self.cache_dir = cache_dir or default_cache_dir(self.out_dir)
        self.jobs = jobs or max(1, len(os.sched_getaffinity(0)))
        self.repo_metadata = repo_metadata or {}
        self.progress = progress or (lambda what, done, total: None)
        self.warnings: list[str] = []
        self._site_id = 0
        self._site_fp = ""

    # ---------------------------------------------------------------------------------------------
    def build(self) -> BuildReport:
        start = time.perf_counter()
        if self.out_dir == self.site_dir or (
            self.site_dir in self.out_dir.parents
            and (
                self.out_dir.parent == self.site_dir
                and self.out_dir.name in ("content", "templates", "static", "data")
            )
        ):
            raise BuildError(
                f"output folder {self.out_dir} overlaps the site sources",
                hint="choose another --out, e.g. build/site",
            )
        cfg = config_mod.load(self.site_dir, base_url=self.base_url)
        self.cfg = cfg
        state = State(self.cache_dir / "state.sqlite")
        try:
            old_outputs = state.outputs()
            self._guard_out_dir(old_outputs or state.claimed(str(self.out_dir)))
            md_sources, assets = self._scan()
            keys = {rel: _source_key(rel, raw, cfg.base_path) for rel, (_p, raw) in md_sources.items()}
            metas = state.md_meta(set(keys.values()))
            fresh = self._render_markdown(md_sources, keys, metas, state)
            from . import data as data_mod

            data = data_mod.load_all(self.site_dir, cfg, self.repo_metadata)
            pages = self._make_pages(md_sources, keys, metas, data)
            jinja_cache = self.cache_dir / "jinja"
            jinja_cache.mkdir(parents=True, exist_ok=True)
            env = tpl_mod.environment(self.site_dir / "templates", jinja_cache)
            jobs = self._plan(pages, assets, data, env, fresh)
            state.claim(str(self.out_dir))
            rendered, new_outputs, removed = self._execute(jobs, pages, old_outputs, env, state, fresh)
            state.put_outputs(new_outputs, removed)
            state.prune_md(set(keys.values()))
        finally:
            state.close()
        return BuildReport(
            out_dir=self.out_dir,
            pages=len(pages),
            outputs=len(jobs),
            rendered=rendered,
            markdown_rendered=len(fresh),
            removed=len(removed),
            seconds=time.perf_counter() - start,
            jobs=self.jobs,
            warnings=self.warnings,
            sources={p.out: p.file for p in pages if p.file},
        )

    def _guard_out_dir(self, ours: object) -> None:
        # An incremental build deletes whatever a clean build would not write: only do that in a
        # folder that is (or was) a site output.
        if ours or not self.out_dir.is_dir():
            return
        if any(self.out_dir.iterdir()) and not (self.out_dir / "sitemap.xml").is_file():
            raise BuildError(
                f"{self.out_dir} is not empty and holds no site this tool built",
                hint="choose an empty or new --out folder",
            )

    def _scan(self) -> tuple[dict[str, tuple[Path, bytes]], dict[str, Path]]:
        content = self.site_dir / "content"
        if not content.is_dir():
            raise BuildError(
                f"no content/ folder in {self.site_dir}", hint="put the Markdown pages in content/"
            )
        md_sources: dict[str, tuple[Path, bytes]] = {}
        assets: dict[str, Path] = {}
        top = str(content)
        for root, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            prefix = root[len(top) + 1 :] + "/" if len(root) > len(top) else ""
            for name in sorted(files):
                if name.startswith("."):
                    continue
                full = os.path.join(root, name)
                if name.endswith(".md"):
                    with open(full, "rb") as f:
                        md_sources[prefix + name] = (Path(full), f.read())
                else:
                    assets[prefix + name] = Path(full)
        static = self.site_dir / "static"
        if static.is_dir():
            for root, dirs, files in os.walk(static):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        p = Path(root) / name
                        assets.setdefault(p.relative_to(static).as_posix(), p)
        return md_sources, assets

    def _render_markdown(
        self,
        md_sources: dict[str, tuple[Path, bytes]],
        keys: dict[str, str],
        metas: dict[str, Any],
        state: State,
    ) -> dict[str, tuple[str, str]]:
        """Render the sources whose key is not cached. Returns {key: (html, text)} for them."""
        todo = sorted(
            (keys[rel], rel, str(p), self.cfg.base_path)
            for rel, (p, _raw) in md_sources.items()
            if keys[rel] not in metas
        )
        fresh: dict[str, tuple[str, str]] = {}
        if not todo:
            return fresh
        errors: list[tuple[str, str, str]] = []
        rows: list[tuple[str, Any, str, str]] = []
        total = len(todo)
        self.progress("markdown", 0, total)
        for n, res in enumerate(self._map(_render_source, todo), 1):
            if len(res) == 2:
                errors.append(res[1])
                continue
            key, meta, html, text = res  # type: ignore[misc]
            metas[key] = meta
            fresh[key] = (html, text)
            rows.append((key, meta, html, text))
            if n % 50 == 0 or n == total:
                self.progress("markdown", n, total)
        if errors:
            message, where, hint = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise BuildError(message + more, where=where or None, hint=hint or None)
        state.put_md(rows)
        return fresh

    def _map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        if self.jobs > 1 and len(items) >= PARALLEL_MIN:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(self.jobs) as pool:
                return pool.map(fn, items, chunksize=max(1, len(items) // (self.jobs * 8)))
        return [fn(i) for i in items]

    # -- page model -----------------------------------------------------------------------------
    def _make_pages(
        self,
        md_sources: dict[str, tuple[Path, bytes]],
        keys: dict[str, str],
        metas: dict[str, Any],
        data: dict[str, Any],
    ) -> list[Page]:
        cfg = self.cfg
        base = cfg.base_path.rstrip("/")
        pages: list[Page] = []
        by_path: dict[str, Page] = {}
        for rel in sorted(md_sources):
            key = keys[rel]
            meta = metas[key]
            fm: dict[str, Any] = meta["fm"]
            file = str(md_sources[rel][0])
            if fm.get("draft"):
                continue
            path = _page_path(rel, fm)
            section = rel.split("/", 1)[0] if "/" in rel else ""
            sec = cfg.sections.get(section)
            name = posixpath.basename(rel)
            if rel == "index.md":
                kind = "home"
            elif name in ("_index.md", "index.md"):
                kind = "index"
            else:
                kind = "page"
            default_layout = (
                "home"
                if kind == "home"
                else (
                    sec.list_layout if kind == "index" and "/" not in rel[len(section) + 1 :] else sec.layout
                )
                if sec
                else "page"
            )
            title = fm.get("title") or meta["h1"]
            if not title:
                raise BuildError(
                    "page has no title",
                    where=Location(file=file, key="title"),
                    hint="add 'title: …' to the front matter",
                )
            date = _date(fm.get("date"), file, "date")
            if sec and sec.dated and kind == "page" and date is None:
                raise BuildError(
                    f"pages in '{section}' need a date",
                    where=Location(file=file, key="date"),
                    hint="add 'date: YYYY-MM-DD' to the front matter",
                )
            tags = fm.get("tags") or ()
            if isinstance(tags, str):
                tags = (tags,)
            page = Page(
                src=rel,
                file=file,
                path=path,
                url=base + path,
                out=_out_file(path),
                section=section,
                kind=kind,
                layout=str(fm.get("layout") or default_layout),
                title=str(title),
                nav_title=str(fm.get("nav_title") or title),
                date=date,
                updated=_date(fm.get("updated"), file, "updated"),
                tags=tuple(sorted({str(t) for t in tags})),
                weight=int(fm.get("weight", 1000)),
                description=str(fm.get("description") or meta["excerpt_text"][:200]),
                md_key=key,
                meta=fm,
                r=meta,
            )
            if path in by_path:
                raise BuildError(
                    f"page URL {path} is also produced by {by_path[path].file}",
                    where=file,
                    hint="rename one of the files or set a different 'url:'",
                )
            by_path[path] = page
            pages.append(page)

        # Section indexes that have no _index.md still get a page.
        for name, sec in sorted(cfg.sections.items()):
            path = f"/{name}/"
            if path not in by_path and any(p.section == name for p in pages):
                page = Page(
                    None, None, path, base + path, _out_file(path), name, "index", sec.list_layout, sec.title
                )
                by_path[path] = page
                pages.append(page)

        # One page per release in the data: the hand-written notes if there are any, else generated.
        for rel_data in data.get("releases", []):
            version = rel_data["version"]
            path = f"/releases/{version}/"
            found = by_path.get(path)
            if found is None:
                page = Page(
                    None,
                    rel_data["source"],
                    path,
                    base + path,
                    _out_file(path),
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
                by_path[path] = page
                pages.append(page)
            else:
                page = found
            page.layout = "release"
            page.extra["release"] = rel_data

        # Tags.
        tagged: dict[str, list[Page]] = {}
        for p in pages:
            for t in p.tags:
                tagged.setdefault(t, []).append(p)
        if tagged:
            path = "/tags/"
            tags_page = Page(None, None, path, base + path, _out_file(path), "tags", "tags", "tags", "Tags")
            pages.append(tags_page)
            for t, members in sorted(tagged.items()):
                path = f"/tags/{tag_slug(t)}/"
                tp = Page(
                    None, None, path, base + path, _out_file(path), "tags", "tag", "list", f"Tagged “{t}”"
                )
                tp.extra["tag"] = t
                tp.extra["members"] = members
                pages.append(tp)
        self.by_path = by_path
        self.by_src = {p.src: p for p in pages if p.src}
        self.tagged = tagged
        return pages

    # -- links ---------------------------------------------------------------------------------
    def _resolve_target(self, target: str) -> str | None:
        path, _, frag = target.partition("#")
        if path.endswith(".md"):
            page = self.by_src.get(path)
            if page is None:
                return None
            return page.url + (f"#{frag}" if frag else "")
        return self.cfg.base_path + path + (f"#{frag}" if frag else "")

    def _link_map(self, page: Page) -> list[tuple[str, str]]:
        return [
            (t, self._resolve_target(t) or "#broken")
            for t, _line, kind in page.r.get("links", ())
            if kind == "content"
        ]

    def _check_links(self, pages: list[Page], outputs: set[str], assets: dict[str, Path]) -> None:
        problems: list[str] = []
        base = self.cfg.base_path
        for page in pages:
            ids = set(page.r.get("ids", ()))
            for target, line, kind in page.r.get("links", ()):
                where = f"{page.file}:{line}"
                path, _, frag = target.partition("#")
                if kind == "anchor":
                    if frag and frag not in ids and frag != "top":
                        problems.append(f"{where}: no heading '#{frag}' on this page")
                elif kind == "content":
                    if path.endswith(".md"):
                        tp = self.by_src.get(path)
                        if tp is None:
                            problems.append(f"{where}: link to '{path}', which is not a page")
                        elif frag and frag not in tp.r.get("ids", ()):
                            problems.append(f"{where}: '{path}' has no heading '#{frag}'")
                    elif path not in assets:
                        problems.append(f"{where}: '{path}' does not exist in content/ or static/")
                elif kind == "site":
                    rel = path[len(base) :] if path.startswith(base) else path.lstrip("/")
                    cand = {
                        rel,
                        rel.rstrip("/") + "/index.html" if rel else "index.html",
                        rel + "/index.html",
                    }
                    if not cand & outputs:
                        problems.append(f"{where}: '{path}' is not part of the site")
                    elif frag:
                        tp = self.by_path.get("/" + rel)
                        if tp is not None and tp.md_key and frag not in tp.r.get("ids", ()):
                            problems.append(f"{where}: '{path}' has no heading '#{frag}'")
        if problems:
            raise LinkErrors(problems)

    def _check_release_files(self, releases: list[dict[str, Any]], assets: dict[str, Path]) -> None:
        """Artifacts served by the site itself must be there, with the size and hash the index says."""
        base = self.cfg.base_path
        for rel in releases:
            for prof in rel["profiles"]:
                for art in prof["artifacts"]:
                    url = str(art["url"])
                    if "://" in url or not url.startswith(base):
                        continue  # elsewhere: 'site check --external' probes it
                    where = Location(file=rel["source"], key=f"artifacts[{art['name']}]")
                    path = assets.get(url[len(base) :])
                    if path is None:
                        raise BuildError(
                            f"release {rel['version']}: artifact {art['name']} is not at {url}",
                            where=where,
                            hint="copy the release's files under site/static/ or fix releases_url",
                        )
                    if path.stat().st_size != art["size"] or _file_sha256(path) != art["sha256"]:
                        raise BuildError(
                            f"release {rel['version']}: {url} does not match the size/sha256 in the index",
                            where=where,
                            hint="the file was changed or replaced after the release; copy the released one",
                        )

    # -- outputs ---------------------------------------------------------------------------------
    def _plan(
        self,
        pages: list[Page],
        assets: dict[str, Path],
        data: dict[str, Any],
        env: tpl_mod.Environment,
        fresh: dict[str, tuple[str, str]],
    ) -> list[Job]:
        cfg = self.cfg
        base = cfg.base_path
        jobs: list[Job] = []
        generated_assets: dict[str, bytes] = {
            "assets/pygments.css": md_mod.pygments_css(cfg.highlight_style).encode(),
        }
        asset_digests: dict[str, str] = {}
        for rel, apath in sorted(assets.items()):
            digest = _sha("file", apath.read_bytes())
            asset_digests[rel] = digest
            jobs.append(Job(out=rel, fp=_sha("copy", digest), copy_from=apath))
        for rel, blob in generated_assets.items():
            asset_digests[rel] = _sha("file", blob)
            jobs.append(Job(out=rel, fp=_sha("bytes", blob), data=blob))

        def asset_url(rel: str) -> str:
            d = asset_digests.get(rel)
            return f"{base}{rel}?v={d[:10]}" if d else f"{base}{rel}"

        menu = [{"title": m.title, "url": base.rstrip("/") + m.url} for m in cfg.menu]
        site_ctx: dict[str, Any] = {
            "title": cfg.title,
            "description": cfg.description,
            "base_url": cfg.base_url,
            "base_path": base,
            "language": cfg.language,
            "author": {"name": cfg.author_name, "email": cfg.author_email},
            "menu": menu,
            "feed_url": base + "atom.xml",
            "search_url": base + "search/",
            "search_index": asset_url("search-index.json").split("?")[0],
            "css": [asset_url("assets/site.css"), asset_url("assets/pygments.css")],
            "js": asset_url("assets/site.js"),
            "favicon": asset_url("assets/favicon.svg"),
        }

        # Navigation per sidebar section.
        trees: dict[str, nav_mod.Node] = {}
        reading: dict[str, list[tuple[str, str]]] = {}
        for name, sec in cfg.sections.items():
            if sec.sidebar:
                members = [p for p in pages if p.section == name and p.src]
                idx = self.by_path.get(f"/{name}/")
                titles = {name: idx.title if idx else sec.title}
                tree = nav_mod.build_tree(name, members, titles)  # type: ignore[arg-type]
                trees[name] = tree
                reading[name] = nav_mod.flatten(tree)
        positions = {name: {u: i for i, (_t, u) in enumerate(order)} for name, order in reading.items()}
        sidebar_tpl = env.closure_hash("partials/sidebar.html")
        self.sidebars: dict[str, tuple[list[dict[str, Any]], str]] = {}

        def sidebar_key(section: str, open_dir: str) -> str:
            k = f"{section}:{open_dir}"
            if k not in self.sidebars:
                items = nav_mod.sidebar(trees[section], open_dir)
                self.sidebars[k] = (items, _sha(sidebar_tpl, json.dumps(items, sort_keys=True)))
            return k

        dated = sorted(
            (p for p in pages if p.date and p.section in cfg.sections and cfg.sections[p.section].feed),
            key=lambda p: (p.date or "", p.path),
            reverse=True,
        )
        outputs_set = {j.out for j in jobs} | {p.out for p in pages}
        outputs_set |= {"atom.xml", "sitemap.xml", "robots.txt", "search-index.json"}
        self._check_links(pages, outputs_set, {**assets, **dict.fromkeys(generated_assets, Path())})
        self._check_release_files(data.get("releases", []), assets)

        def item(p: Page) -> dict[str, Any]:
            return {
                "title": p.title,
                "url": p.url,
                "date": p.date,
                "date_human": _human_date(p.date),
                "section": p.section,
                "excerpt": self._resolve(p.r.get("excerpt_html", ""), p) if p.md_key else "",
                "description": p.description,
                "tags": [{"name": t, "url": f"{base}tags/{tag_slug(t)}/"} for t in p.tags],
            }

        for page in pages:
            layout = page.layout
            ctx_page: dict[str, Any] = {
                "title": page.title,
                "url": page.url,
                "abs_url": cfg.absolute(page.url),
                "section": page.section,
                "kind": page.kind,
                "layout": layout,
                "description": page.description,
                "date": page.date,
                "date_human": _human_date(page.date),
                "updated": page.updated,
                "tags": [{"name": t, "url": f"{base}tags/{tag_slug(t)}/"} for t in page.tags],
                "toc": [{"level": lv, "id": i, "title": t} for lv, i, t in page.r.get("toc", ())],
                "breadcrumbs": self._breadcrumbs(page),
                "menu_active": self._menu_active(page, menu),
                "meta": _plain(page.meta),
                "content": Late("content", page.md_key, page.src or "") if page.md_key else "",
                "links": self._link_map(page),
                "prev": None,
                "next": None,
            }
            ctx: dict[str, Any] = {"site": site_ctx, "page": ctx_page}
            psec = cfg.sections.get(page.section)
            if psec and psec.sidebar and page.section in trees:
                open_dir = posixpath.dirname(page.src) if page.src else page.section
                k = sidebar_key(page.section, open_dir)
                ctx["sidebar"] = Late("sidebar", self.sidebars[k][1], k)
                order = reading[page.section]
                i = positions[page.section].get(page.url, -1)
                if i >= 0:
                    prev = order[i - 1] if i > 0 else None
                    nxt = order[i + 1] if i + 1 < len(order) else None
                    ctx_page["prev"] = {"title": prev[0], "url": prev[1]} if prev else None
                    ctx_page["next"] = {"title": nxt[0], "url": nxt[1]} if nxt else None
            if page.kind == "index" and layout == "list":
                ctx["items"] = [item(p) for p in dated if p.section == page.section]
            if page.kind == "tag":
                ctx["items"] = [item(p) for p in sorted(page.extra["members"], key=_newest_first)]
            if page.kind == "tags":
                ctx["tags"] = [
                    {"name": t, "url": f"{base}tags/{tag_slug(t)}/", "count": len(m)}
                    for t, m in sorted(self.tagged.items())
                ]
            if "release" in page.extra:
                ctx["release"] = page.extra["release"]
            if layout == "home":
                ctx["news"] = [item(p) for p in dated[:4]]
            for key in tpl_mod.LAYOUT_DATA.get(layout, ()):
                ctx.setdefault("data", {})[key] = data.get(key)
            for key in page.meta.get("data", ()) or ():
                ctx.setdefault("data", {})[str(key)] = data.get(str(key))
            template = f"{layout}.html"
            if not env.exists(template):
                raise BuildError(
                    f"no template '{template}' for layout '{layout}'",
                    where=Location(file=page.file, key="layout") if page.file else None,
                    hint=f"add templates/{template} or use another layout",
                )
            jobs.append(self._job(page.out, template, ctx, env))

        # Feed, sitemap, robots, search index.
        feed_items = []
        for p in dated[: cfg.feed_limit]:
            it = item(p)
            it["abs_url"] = cfg.absolute(p.url)
            it["id"] = _tag_uri(cfg, p)
            it["updated"] = (p.updated or p.date or "1970-01-01") + "T00:00:00Z"
            it["content"] = Late("content", p.md_key, p.src or "") if p.md_key else it["excerpt"]
            feed_items.append(it)
        feed_ctx = {
            "site": site_ctx,
            "feed": {
                "title": cfg.feed_title,
                "id": cfg.absolute(base + "atom.xml"),
                "self": cfg.absolute(base + "atom.xml"),
                "home": cfg.base_url,
                "updated": max((i["updated"] for i in feed_items), default="1970-01-01T00:00:00Z"),
                "entries": feed_items,
            },
        }
        jobs.append(self._job("atom.xml", "atom.xml", feed_ctx, env))
        sitemap_ctx = {
            "urls": [
                {"loc": cfg.absolute(p.url), "lastmod": p.updated or p.date}
                for p in sorted(pages, key=lambda p: p.path)
                if p.out.endswith(".html") and p.layout != "404" and not p.meta.get("noindex")
            ]
        }
        jobs.append(self._job("sitemap.xml", "sitemap.xml", sitemap_ctx, env))
        jobs.append(
            self._job("robots.txt", "robots.txt", {"sitemap": cfg.absolute(base + "sitemap.xml")}, env)
        )
        searchable = [
            p
            for p in sorted(pages, key=lambda p: p.path)
            if p.md_key and p.layout != "404" and not p.meta.get("noindex")
        ]
        search_fp = _sha(
            "search",
            json.dumps(
                [
                    [p.url, p.title, p.md_key, p.section, [t for _l, _i, t in p.r.get("toc", ())]]
                    for p in searchable
                ]
            ),
        )
        jobs.append(Job(out="search-index.json", fp=search_fp))
        self._searchable = searchable
        self._fresh = fresh
        return jobs

    def _job(self, out: str, template: str, ctx: dict[str, Any], env: tpl_mod.Environment) -> Job:
        # the site-wide part is the same object in every context: hashed once
        site = ctx.get("site")
        if site is not None and id(site) != self._site_id:
            self._site_id, self._site_fp = id(site), json.dumps(site, sort_keys=True)
        rest = {k: v for k, v in ctx.items() if k != "site"}
        body = json.dumps(rest, sort_keys=True, default=_fp_default, check_circular=False)
        fp = _sha(env.closure_hash(template), self._site_fp if site is not None else "", body)
        return Job(out=out, fp=fp, template=template, context=ctx)

    def _resolve(self, html: str, page: Page) -> str:
        if "@@L:" not in html:
            return html
        return md_mod.MARKER.sub(
            lambda m: escape(self._resolve_target(unescape(m.group(1))) or "#broken", quote=True), html
        )

    def _breadcrumbs(self, page: Page) -> list[dict[str, str]]:
        crumbs = [{"title": "Home", "url": self.cfg.base_path}]
        parts = page.path.strip("/").split("/")
        for i in range(1, len(parts)):
            p = self.by_path.get("/" + "/".join(parts[:i]) + "/")
            if p is not None:
                crumbs.append({"title": p.title, "url": p.url})
        return crumbs if page.kind != "home" else []

    def _menu_active(self, page: Page, menu: list[dict[str, str]]) -> str | None:
        best = None
        for m in menu:
            if page.url.startswith(m["url"]) and (best is None or len(m["url"]) > len(best)):
                best = m["url"]
        return best

    # -- writing ---------------------------------------------------------------------------------
    def _execute(
        self,
        jobs: list[Job],
        pages: list[Page],
        old: dict[str, tuple[str, int, int]],
        env: tpl_mod.Environment,
        state: State,
        fresh: dict[str, tuple[str, str]],
    ) -> tuple[int, list[tuple[str, str, int, int]], list[str]]:
        todo: list[Job] = []
        for job in jobs:
            prev = old.get(job.out)
            if prev and prev[0] == job.fp:
                try:
                    st = os.stat(self.out_dir / job.out)
                    if st.st_size == prev[1] and st.st_mtime_ns == prev[2]:
                        continue
                except FileNotFoundError:
                    pass
            todo.append(job)
        # What the workers need and the parent already has: rendered HTML and sidebars.
        need_md = sorted(
            {
                v.key
                for j in todo
                if j.context
                for v in _lates(j.context)
                if v.kind == "content" and v.key not in fresh
            }
        )
        html = {k: h for k, (h, _t) in fresh.items()}
        html.update(state.md_html(need_md))
        sidebar_html: dict[str, str] = {}
        for j in todo:
            if j.context and isinstance(j.context.get("sidebar"), Late):
                k = j.context["sidebar"].arg
                if k not in sidebar_html:
                    sidebar_html[k] = env.render("partials/sidebar.html", {"items": self.sidebars[k][0]})
        search_job = next((j for j in todo if j.out == "search-index.json"), None)
        if search_job is not None:
            texts = {k: t for k, (_h, t) in fresh.items()}
            texts.update(
                state.md_text([p.md_key for p in self._searchable if p.md_key and p.md_key not in texts])
            )
            search_job.data = _search_index(self._searchable, texts)
        for j in todo:
            if j.template is not None:
                env.get(j.template)  # compile once, before the fork

        global _WORK
        _WORK = _Work(self.out_dir, env, html, sidebar_html, self, todo)
        total = len(todo)
        self.progress("pages", 0, total)
        results = self._map(_do_job_safe, list(range(total))) if total else []
        self.progress("pages", total, total)
        failed = [r for r in results if len(r) == 3]
        if failed:
            message, where, hint = failed[0]
            raise BuildError(str(message), where=str(where) or None, hint=str(hint) or None)
        new_rows = [(job.out, job.fp, int(r[0]), int(r[1])) for job, r in zip(todo, results, strict=True)]
        wanted = {j.out for j in jobs}
        removed = sorted(set(old) - wanted)
        strays, empty_dirs = self._strays(wanted, set(removed))
        removed += strays
        for rel in removed:
            try:
                os.unlink(self.out_dir / rel)
            except FileNotFoundError:
                pass
        if removed or empty_dirs:
            _prune_empty_dirs(self.out_dir)
        # No fsync per file (it would cost more than the build): files appear by rename, so readers
        # never see half of one, and the state records each file's size and mtime, so a file lost in a
        # crash no longer matches and is written again by the next build.
        return total, new_rows, removed

    def _strays(self, wanted: set[str], known: set[str]) -> tuple[list[str], bool]:
        """Files in the output that a clean build would not write, and whether empty folders exist."""
        out: list[str] = []
        empty = False
        top = str(self.out_dir)
        cut = len(top) + 1
        for root, dirs, files in os.walk(top):
            if not dirs and not files:
                empty = True
            prefix = root[cut:] + "/" if len(root) > len(top) else ""
            for name in files:
                rel = prefix + name
                if rel not in wanted and rel not in known:
                    out.append(rel)
        return sorted(out), empty


@dataclass
class _Work:
    out_dir: Path
    env: tpl_mod.Environment
    html: dict[str, str]
    sidebars: dict[str, str]
    builder: Builder
    jobs: list[Job]


_WORK: _Work | None = None


def _lates(obj: Any) -> list[Late]:
    out: list[Late] = []
    if isinstance(obj, Late):
        out.append(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k != "site" and isinstance(v, dict | list | Late):  # 'site' is shared and plain
                out.extend(_lates(v))
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, dict | list | Late):
                out.extend(_lates(v))
    return out


def _materialize(obj: Any, work: _Work, page_src: str) -> Any:
    if isinstance(obj, Late):
        if obj.kind == "content":
            p = work.builder.by_src.get(obj.arg)
            raw = work.html[obj.key]
            return tpl_mod.Markup(work.builder._resolve(raw, p) if p else raw)
        if obj.kind == "sidebar":
            return tpl_mod.Markup(work.sidebars[obj.arg])
        raise AssertionError(obj.kind)
    if isinstance(obj, dict):
        return {k: _materialize(v, work, page_src) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialize(v, work, page_src) for v in obj]
    return obj


def _do_job_safe(i: int) -> tuple[int, int] | tuple[str, str, str]:
    # a CernVMError's where/hint do not survive pickling from a worker: send the parts
    try:
        return _do_job(i)
    except CernVMError as e:
        return e.message, str(e.where or ""), e.hint or ""


def _do_job(i: int) -> tuple[int, int]:
    work = _WORK
    assert work is not None
    job = work.jobs[i]
    dest = work.out_dir / job.out
    dest.parent.mkdir(parents=True, exist_ok=True)
    if job.copy_from is not None:
        tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
        shutil.copyfile(job.copy_from, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    else:
        if job.data is not None:
            blob = job.data
        else:
            assert job.template is not None and job.context is not None
            ctx = _materialize(job.context, work, "")
            if "sidebar" in ctx and "page" in ctx:
                # mark the current page in the shared sidebar fragment
                url = ctx["page"]["url"]
                ctx["sidebar"] = tpl_mod.Markup(
                    str(ctx["sidebar"]).replace(
                        f'<a href="{url}">', f'<a href="{url}" aria-current="page">', 1
                    )
                )
            blob = work.env.render(job.template, ctx).encode("utf-8")
        _write(dest, blob)
    st = os.stat(dest)
    return st.st_size, st.st_mtime_ns


def _write(dest: Path, blob: bytes) -> None:
    # Readers see the old file or the new one, never half of one (durability: one os.sync at the end).
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(blob)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)


def _prune_empty_dirs(root: Path) -> None:
    if not root.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda t: -len(t[0])):
        p = Path(dirpath)
        if p != root and not any(p.iterdir()):
            p.rmdir()


def _search_index(pages: list[Page], texts: dict[str, str]) -> bytes:
    docs = [
        {
            "t": p.title,
            "u": p.url,
            "s": p.section,
            "h": [t for _l, _i, t in p.r.get("toc", ())],
            "x": texts.get(p.md_key or "", ""),
        }
        for p in pages
    ]
    return json.dumps(docs, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _human_date(date: str | None) -> str | None:
    if not date:
        return None
    d = dt.date.fromisoformat(date)
    return f"{d.day} {d.strftime('%B')} {d.year}"


def _newest_first(p: Page) -> tuple[str, str]:
    return (_invert(p.date or ""), p.title)


def _invert(s: str) -> str:
    return "".join(chr(0x10FFFF - ord(c)) for c in s)


def _tag_uri(cfg: SiteConfig, p: Page) -> str:
    from urllib.parse import urlsplit

    host = urlsplit(cfg.base_url).netloc
    return f"tag:{host},{p.date}:{p.path}"


def _plain(obj: Any) -> Any:
    """Front matter as JSON-able data (dates become ISO strings)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, dt.date | dt.datetime):
        return obj.isoformat()
    return obj


def build_site(site_dir: Path, out_dir: Path, **kw: Any) -> BuildReport:
    return Builder(site_dir, out_dir, **kw).build()
