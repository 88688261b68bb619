"""Build the site: sources → rendered Markdown (cached by content key) → pages → planned outputs → written.

The steps, one module each, in the order data flows:

- ``sources``: scan ``content/`` and ``static/``, key every Markdown file by its content, render the
  ones not in the cache (forked workers when there are many);
- ``pages``: the page model (pages, section indexes, releases, tags) and link resolution;
- ``plan``: one ``Job`` per output with a fingerprint of everything its template sees; links checked;
- ``write``: render and write the jobs whose fingerprint changed, delete what a clean build would not
  write; the state (``cache.State``) records what was written;
- ``search``: the search index from the written pages (each page's extract made as it is written,
  kept in the state; a page is read back only when the state lost its extract).

Incremental by construction: an output is rendered again only when its fingerprint changed, so an
incremental build writes exactly the bytes a clean build would. A build into a folder that does not
exist yet writes a sibling folder and renames it into place when pages and index are complete.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import paths
from ..errors import BuildError
from ..fsutil import atomic_dir, held_lock
from ..report import NULL_REPORTER, Reporter
from . import config as config_mod
from . import filedigest, gitdates
from . import markdown as md_mod
from . import templates as tpl_mod
from .cache import Snapshot, State, discard, is_damage
from .config import SiteConfig
from .frontmatter import Memo
from .model import BuildReport, ContentText, Job, LinkErrors, code_files, code_known, sha
from .parallel import PARALLEL_MIN, both
from .reference import GENERATORS
from .sources import Generators, Sources, nothing, plan_sources, render_markdown, scan

# The modules of the steps after the render step (page set, plan, write, search index; data files'
# readers, made beside the render step) are imported where they are used, and by a build that forks
# its render step while its workers render (``_import_later``): imported here, they were ~0.06 CPU-s
# of the serial time before the render workers forked, which the other core did not overlap.
if TYPE_CHECKING:
    from . import search as search_mod
    from .pages import PageSet
    from .plan import Plan

__all__ = ["BuildReport", "Builder", "LinkErrors", "build_site", "default_cache_dir"]


#: the file in the cache folder whose ``flock`` a build holds (``Builder.build``)
LOCK_NAME = "build.lock"


def default_cache_dir(out_dir: Path) -> Path:
    return paths.cache_dir("site", sha(str(out_dir.resolve()))[:16])


class Builder:
    """One site (sources + output folder); ``build()`` may be called again after edits (``site serve``).

    ``generators`` are the reference pages the content may ask for (``generate: NAME``); the CLI passes
    ``cli.reference.GENERATORS``, which adds its own command reference to the site's.
    """

    def __init__(
        self,
        site_dir: Path,
        out_dir: Path,
        *,
        base_url: str | None = None,
        cache_dir: Path | None = None,
        jobs: int | None = None,
        repo_metadata: dict[str, Path] | None = None,
        reporter: Reporter = NULL_REPORTER,
        generators: Generators | None = None,
        ends_process: bool = False,
    ):
        self.site_dir = site_dir.resolve()
        self.out_dir = out_dir.resolve()
        self.base_url = base_url
        self.cache_dir = cache_dir or default_cache_dir(self.out_dir)
        self.jobs = jobs or max(1, len(os.sched_getaffinity(0)))
        self.repo_metadata = repo_metadata or {}
        self.reporter = reporter
        self.generators: Generators = GENERATORS if generators is None else generators
        self.warnings: list[str] = []
        # the process ends after this build (the CLI's one-shot): nothing is tidied for a next one
        # that never comes (``State.close``)
        self.ends_process = ends_process
        # a builder that builds again (``site serve``) keeps the search shards' postings as merged
        # last: a rebuild merges again only the edited pages' (``search.Merged``)
        self._merged: dict[str, search_mod.Merged] | None = None if ends_process else {}
        # and what it can of its last complete build's page set (``pages.patch_pages``)
        self._kept: _Kept | None = None

    def _check_out_dir(self) -> None:
        # inside a folder the build reads whole, not only that folder: --out static/out copied each
        # build's output into the next (out/out/out/..., without end)
        if self.out_dir == self.site_dir or any(
            self.out_dir.is_relative_to(self.site_dir / name)
            for name in ("content", "templates", "static", "data")
        ):
            raise BuildError(
                f"output folder {self.out_dir} overlaps the site sources",
                hint="choose another --out, e.g. build/site",
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

    def _write(
        self,
        target: Path,
        outputs: Plan,
        pageset: PageSet,
        old_outputs: dict[str, tuple[str, int, int]],
        env: tpl_mod.Environment,
        state: State,
        fresh: dict[str, str | None],
        texts: dict[str, ContentText],
        new: bool,
        meanwhile: Callable[[], object],
        indexing: Callable[[], object],
    ) -> tuple[int, int, int, int]:
        """Steps 4 and 5 into ``target``; returns (outputs written, removed, search files written,
        shards indexed). ``meanwhile``: serial work done while the pages are written; ``indexing``:
        while the render child makes the search shard (``search.update``'s ``meanwhile``)."""
        from . import search as search_mod
        from .write import execute

        pages = search_pages(outputs)
        index = search_mod.index_plan(target, old_outputs, pages)
        # only a page written now can have its extract made from its HTML
        extract = search_mod.missing({p: fp for p, fp in pages.items() if p not in outputs.unchanged}, state)
        # a new folder only: there a failed write step leaves nothing, while in a folder readers use
        # a shard's files written before a failed page would no longer match the manifest listed
        shards, known = search_mod.for_write(index, extract, pages, state) if new else ([], {})
        offloaded: list[search_mod.Offload] = []

        def started(_jobs: list[Job], extracts: dict[str, tuple[bytes, bytes]]) -> None:
            got = search_mod.offload(target, index, pages, state, extracts, env.child)
            offloaded.extend([got] if got is not None else [])

        written, rows, removed, extracts, built = execute(
            target,
            outputs,
            pageset,
            old_outputs,
            env,
            state,
            fresh,
            self.jobs,
            self.reporter,
            new=new,
            texts=texts,
            extract=extract,
            base_path=self.cfg.base_path,
            meanwhile=meanwhile,
            shards=shards,
            known=known,
            index_old=index.ours,
            # a one-shot rebuild into its folder: the stale shard made in the render child meanwhile
            written=started if env.child is not None and not new and self._merged is None else None,
        )
        state.put_outputs(rows, removed)  # recorded first: a failed index step keeps the pages
        if any(j.out.endswith(".html") for j in written) or any(r.endswith(".html") for r in removed):
            # the index on disk may no longer match: trust none of it until it is made again
            state.put_outputs([], [search_mod.MANIFEST])
        indexed = search_mod.update(
            target,
            index,
            pages,
            state,
            base_path=self.cfg.base_path,
            jobs=self.jobs,
            fresh=extracts,
            new=new,
            built=built,
            keep=self._merged,
            offloaded=offloaded[0] if offloaded else None,
            meanwhile=indexing,
        )
        if indexed is None:
            return len(written), len(removed), 0, 0
        # the rows of the index files left as recorded are in the state already: a one-page rebuild
        # makes one shard again, and wrote ~710 rows of which ~670 were unchanged (~1.5 ms at 1,000
        # pages); those this build dropped (the manifest's above, the write step's removed) are written
        dropped = {search_mod.MANIFEST, *removed}
        changed = [r for r in indexed.rows if r[0] in dropped or index.ours.get(r[0]) != r[1:]]
        state.put_outputs(changed, indexed.removed)
        return len(written), len(removed), indexed.written, indexed.shards

    def _tail(
        self,
        state: State,
        snap: Snapshot | None,
        pageset: PageSet,
        keys: dict[str, str],
        metas: dict[str, Any],
        fresh: dict[str, str | None],
        edited: set[str] | None,
        old_keys: set[str],
        css_key: str,
        recorded: dict[str, str] | None = None,
    ) -> tuple[dict[str, str], str]:
        """The report's output -> source file and its fingerprint, recorded; the rendered Markdown and
        highlighted blocks of sources no longer built pruned from the state. Independent of the
        written outputs and the search index (``search.update`` runs it while a helper makes a shard).
        ``recorded``: the last complete build's map, where the page set is not whole (``replan``)."""
        by_output = _sources(pageset) if recorded is None else recorded
        fp = sha(*(f"{out}\0{file}" for out, file in sorted(by_output.items())))
        # the row as well as the snapshot: a row that disagrees with the snapshot (lost, or a build
        # stopped between the two writes) would make every later rebuild decline the shortcut
        # (``_as_recorded``) and never be repaired (reading it: ~0.01 ms at 68 pages)
        if snap is None or snap.report[4] != fp or state.report_sources()[0] != fp:
            state.put_report_sources(fp, by_output)
        if edited != set() or fresh:  # else no source changed: the last build pruned to these keys
            current = set(keys.values())
            # only edited sources (the others as the last complete build had them, which pruned to
            # its keys): what can be stale is their former versions' rows (``State._prune``)
            former = old_keys if edited else None
            # a failed build's rows beside the last complete build's: its code blocks are not known
            # by key, so every row is listed against the whole set's (below)
            strays = state.prune_md(current, former)
            suspects = None
            if former is not None:
                suspects = {k for key in former if key in metas for k in metas[key].get("code", ())}
                if recorded is not None and edited and not strays:
                    # planned from the state (``replan``: the stylesheet's key the last build's): only
                    # a block the edited pages no longer hold can be stale; none, and the rows are the
                    # last build's and the edited pages' new ones, as after a build with no edit (no
                    # page's head unpickled for the whole set: ~1,000 at 1,000 pages)
                    suspects -= {k for rel in edited for k in metas[keys[rel]].get("code", ())}
                    if not suspects:
                        return by_output, fp
            state.prune_code({k for key in current for k in metas[key].get("code", ())} | {css_key}, suspects)
        return by_output, fp

    def _aside(
        self, state: State, cfg: SiteConfig, sources: Sources, yaml_memo: Memo, code: filedigest.Digests
    ) -> tuple[dict[str, Any], tuple[str, str], Mapping[str, str]]:
        """The plan's inputs that do not depend on the rendered Markdown: the data files, the
        highlighting stylesheet (its key and text), the assets' sha256. Made while the render workers
        work (``render_markdown``'s meanwhile), where they were serial time between the two forks; the
        scan's and the assets' digests recorded then too. A data file's error is raised from here."""
        from . import data as data_mod

        state.put_sources(sources.rows, sources.gone)
        data = data_mod.load_all(self.site_dir, cfg, self.repo_metadata, yaml_memo)
        try:
            css = _stylesheet(state, cfg.highlight_style)
        except ValueError:  # Pygments' ClassNotFound: no style of that name (was a traceback)
            raise BuildError(
                f"no highlighting style {cfg.highlight_style!r}"[:200],
                where=f"{self.site_dir / config_mod.CONFIG_NAME}: highlight_style",
                hint="name one of Pygments' styles, e.g. 'friendly', 'default' or 'github-dark'",
            ) from None
        asset_sha = filedigest.digests(sources.assets, code.known)
        # (the files table holds both: a file is gone when neither is it)
        state.put_files(asset_sha.rows + code.rows, sorted(asset_sha.gone & code.gone))
        return data, css, asset_sha.sha256

    def build(self) -> BuildReport:
        # The cyclic GC is off for the build: a build allocates many objects (page metadata, contexts)
        # that live until its end, so each collection walked them all for nothing (a tenth of a
        # one-page rebuild's CPU, measured); what a build leaves behind is freed by reference counts,
        # and a long-running ``site serve`` gets the collector back between builds.
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._check_out_dir()
            _check_cache(self.cache_dir)
            # One build at a time into an output (its cache folder is the output's): two at once mixed
            # their pages, and each removed the other's temporaries as strays. A second build (another
            # terminal, ``site serve`` rebuilding) waits, saying for whom; a killed one's lock is gone.
            with held_lock(self.cache_dir / LOCK_NAME, f"site build into {self.out_dir}", self._waiting):
                return self._build()
        except sqlite3.DatabaseError as e:
            if _disk_full(e):
                # SQLite's own full disk (the state's pages, its WAL): an OperationalError that named
                # neither the file nor what to do, a traceback; the state stays (SQLite rolled back)
                raise BuildError(
                    f"cannot write the build state {self.cache_dir / 'state.sqlite'}: {e}",
                    hint=f"free space on the cache's disk ({self.cache_dir}), then build again",
                ) from None
            if _io_error(e):
                # SQLite's SQLITE_IOERR: a disk so full that the WAL index (-shm) cannot be mapped
                # meets the open as "disk I/O error", not as a full disk (a traceback)
                raise BuildError(
                    f"cannot read or write the build state {self.cache_dir / 'state.sqlite'}: {e}",
                    hint=f"free space on the cache's disk ({self.cache_dir}) and check it for errors"
                    " (the kernel's log), then build again",
                ) from None
            if not is_damage(e):
                raise
            # damage the open did not see (a page read later): the state is a cache, deleted here so
            # that the next build starts cold instead of failing again
            damaged = self.cache_dir / "state.sqlite"
            discard(damaged)
            raise BuildError(
                f"the build state {damaged} is damaged ({e}); it was deleted",
                hint="build again: the next build starts cold",
            ) from None
        finally:
            if enabled:
                gc.enable()

    def _waiting(self, holder: str) -> None:
        self.reporter.step(f"waiting for {holder} to finish (it holds {self.cache_dir / LOCK_NAME})")

    def _build(self) -> BuildReport:
        from . import renderchild

        start = time.perf_counter()
        state = State(self.cache_dir / "state.sqlite")
        if state.discarded:
            self.warnings.append(
                f"the build state {state.path} was damaged ({state.discarded}): "
                "set aside, this build starts cold"
            )
        # the Markdown rendered now is kept while the pages are written (``render_markdown``), or at
        # the end when a step before that failed: the next build does not render it again
        store_md: Callable[[], None] = nothing
        closing: tpl_mod.Environment | None = None  # its render child (if any) ended at the end
        try:
            yaml_memo = Memo(state.memo("yaml"))  # config.yaml and data files parsed before
            cfg = config_mod.load(self.site_dir, base_url=self.base_url, memo=yaml_memo)
            self.cfg: SiteConfig = cfg
            snap = state.snapshot()
            sources = scan(self.site_dir, state.sources())
            # the builder's own code, which every source key and fingerprint names (``model.code_sha``):
            # its files' digests by stat, as the assets' (reading and hashing the ~40 files was ~4 % of
            # a one-page rebuild's instructions)
            code = filedigest.digests(code_files(), state.files())
            code_known(code.sha256)
            # what the plan needs besides the rendered Markdown: made while the workers render (once)
            aside = functools.cache(functools.partial(self._aside, state, cfg, sources, yaml_memo, code))
            planned = plan_sources(sources, cfg.base_path, self.generators)
            keys = {rel: s.key for rel, s in planned.items()}
            edited = _edited(snap, keys)
            jinja_cache = self.cache_dir / "jinja"
            env = closing = tpl_mod.environment(self.site_dir / "templates", jinja_cache)
            if (
                edited
                and len(edited) < PARALLEL_MIN
                and self.jobs > 1
                and self.ends_process
                and "jinja2" not in sys.modules
                and renderchild.idle_core()
            ):
                # a one-shot build of a few edited pages, a core idle: a child forked now imports
                # jinja2 and renders the pages on it while this process plans (``renderchild``). As
                # soon as the edits are known: its import (~100M instructions) is what this process
                # waits for at its first page; the steps that need not come first come after it
                env.use(renderchild.RenderChild.start(env.folder, env.bytecode_cache))
            jinja_cache.mkdir(parents=True, exist_ok=True)
            old_outputs = state.outputs()
            self._guard_out_dir(old_outputs or state.claimed(str(self.out_dir)))
            # the pages' dates from git: its log runs in a process of its own while this one renders
            # the sources (read after that)
            dates = functools.cache(gitdates.start(self.site_dir / "content", self.cache_dir))
            if edited == set() and snap is not None:  # no source changed: maybe nothing did
                quick = self._as_recorded(snap, state, cfg, sources, aside, dates, old_outputs, yaml_memo)
                if quick is not None:
                    quick.seconds = time.perf_counter() - start
                    return quick
            old_keys = {snap.keys[rel] for rel in edited} if snap and edited is not None else set()
            # a build that may plan the edited pages alone reads the rest of a page's metadata on use;
            # a builder that built last reads only what it did not then (no other build since)
            # what this builder kept of the last build, if that build is the recorded one (compared
            # once: it was compared again before patching its pages)
            kept = self._kept if self._kept is not None and self._kept.snap == snap else None
            metas = state.md_meta(
                set(keys.values()) | old_keys,
                lazy=edited is not None,
                kept=kept.metas if kept is not None else None,
            )
            # jinja2 imported while the workers render (~0.05 CPU-s that was serial time after them): a
            # build that renders Markdown writes pages. The later steps' modules too: inside the render
            # step, their module-level patterns are made from the state's (``recache``, where a full
            # build's ``_import_later`` kept them), not compiled again (~14M instructions of a one-page
            # rebuild's ~450M, sp33b)
            rendering: Callable[[], object] = both(env.warm if env.child is None else nothing, _import_later)
            if self.jobs > 1 and sum(s.key not in metas for s in planned.values()) >= PARALLEL_MIN:
                # the render step forks: the templates the pages will likely use compiled meanwhile
                # too (0.034 CPU-s at 1,000 pages, serial before the write step forked), and the
                # later steps' modules imported
                env.close()  # (the render child, if any: the pages are rendered here and by workers)
                rendering = both(functools.partial(_warm_templates, env, cfg, sources), _import_later)
            fresh, texts, store_md = render_markdown(
                planned,
                metas,
                state,
                self.jobs,
                self.reporter,
                old_keys,
                meanwhile=aside,
                rendering=rendering,
                fences=sources.fences,
                warn=self.warnings.append,
            )
            data, (css_key, css), file_sha256 = aside()  # (made already when anything was rendered)
            from . import replan
            from . import search as search_mod
            from .pages import make_pages, patch_pages
            from .plan import Delta, plan, plan_digest

            env.forget_changed()  # a template compiled meanwhile and edited since is compiled again
            if edited and snap is not None and _shown_elsewhere(edited, keys, snap, metas):
                edited = None  # a title, listed excerpt, heading id... other pages show it: plan them all
            if yaml_memo.now.keys() != yaml_memo.known.keys():  # kept: this build's texts, no others
                state.put_memo("yaml", yaml_memo.now)
            files = {rel: path for rel, (path, _digest, _name) in sources.markdown.items()}
            changed = dates()
            inputs = sha(json.dumps(changed, sort_keys=True))
            self._kept = None  # (this build changes its pages: kept again at its end)
            digested = navigation = None
            if kept is not None and edited is not None and kept.files == files:
                digested = plan_digest(cfg, sources.assets, data, env, css, inputs, file_sha256)
            new = not self.out_dir.exists()
            # a one-shot rebuild of edited pages that other pages show nothing of: planned from the
            # state's recorded plan parts, no page set made (``replan``), where they are as expected
            fast = None
            if kept is None and edited and snap is not None and not new:
                digested = plan_digest(cfg, sources.assets, data, env, css, inputs, file_sha256)
                if digested[0] == snap.digest:
                    fast = replan.recorded(
                        cfg,
                        self.site_dir,
                        state,
                        snap,
                        edited,
                        keys,
                        metas,
                        files,
                        old_outputs,
                        self.out_dir,
                        env,
                        data,
                        sources.assets,
                        file_sha256,
                        digested,
                    )
            by_output: dict[str, str] | None = None  # (the report's, where ``replan`` read it)
            if fast is not None:
                outputs, pageset, by_output = fast
                pages_count = snap.report[2] if snap is not None else 0
            else:
                if kept is not None and digested is not None and digested[0] == kept.snap.digest:
                    # the last complete build was this builder's, and nothing but the edited pages' own
                    # parts changed since: its pages, the edited ones made again, and its navigation
                    pageset = patch_pages(kept.pageset, cfg, files, keys, metas, edited or set(), changed)
                    navigation = kept.navigation
                else:
                    pageset = make_pages(cfg, files, keys, metas, data, changed)
                delta = None
                if snap is not None and edited is not None and not new:
                    delta = Delta(snap.digest, frozenset(edited), old_outputs, self.out_dir, snap.searchable)
                outputs = plan(
                    cfg,
                    pageset,
                    sources.assets,
                    data,
                    env,
                    css,
                    inputs=inputs,
                    delta=delta,
                    file_sha256=file_sha256,
                    # every page planned (no delta, or one plan cannot use): one query, not one per page
                    whole=lambda: state.read_whole(metas),
                    digested=digested,
                    navigation=navigation,
                )
                pages_count = len(pageset.pages)
                state.put_page_places(replan.places_blob(pageset))
            # what the next one-page rebuild plans from (``replan``); every page's when all were planned:
            # recorded while the pages are written (``plan.plan_parts``), else after that
            everything = fast is None and outputs.planned == len(pageset.pages)
            recorded_parts = functools.cache(functools.partial(_record_parts, state, outputs, everything))
            state.claim(str(self.out_dir))
            with contextlib.ExitStack() as stack:
                target = self.out_dir
                if new:
                    # a new folder is made beside it and renamed into place when complete: its files
                    # are written in place (write.py) and a failed build leaves no half a site
                    try:
                        target = stack.enter_context(atomic_dir(self.out_dir))
                    except OSError as e:  # its parent a file, or a place none can be made in (a traceback)
                        raise BuildError(
                            f"cannot make the output folder {self.out_dir}: {e.strerror or e}",
                            hint="check --out: a folder in a place that can be written",
                        ) from None
                    target.chmod(0o755)  # not mkdtemp's 0700: the site is served to others
                    if old_outputs:  # the state of a folder that is gone
                        state.put_outputs([], list(old_outputs))
                        old_outputs = {}
                after = Snapshot(outputs.digest, keys, outputs.searchable)
                if snap is not None and snap[:3] != after[:3]:
                    state.put_snapshot(None)  # this build writes: no plan is complete until it ends
                # the report's sources and the state's pruning: done while the render child makes the
                # search shard (``search.update``'s ``meanwhile``: ~12M of the parent's instructions
                # after it at 1,000 pages), else here
                tail = functools.cache(
                    functools.partial(
                        self._tail,
                        state,
                        snap,
                        pageset,
                        keys,
                        metas,
                        fresh,
                        edited,
                        old_keys,
                        css_key,
                        by_output,
                    )
                )
                rendered, removed, search_files, search_shards = self._write(
                    target,
                    outputs,
                    pageset,
                    old_outputs,
                    env,
                    state,
                    fresh,
                    texts,
                    new,
                    both(store_md, recorded_parts),
                    tail,
                )
                recorded_parts()
                by_output, fp = tail()
                report = (str(self.site_dir), search_mod.VERSION, pages_count, len(outputs.jobs), fp)
                after = after._replace(rows=state.output_count(), report=report)
                if snap != after:
                    state.put_snapshot(after)
        finally:
            try:
                if closing is not None:
                    closing.close()
                store_md()  # (once: a second call does nothing)
            finally:
                state.close(ends_process=self.ends_process)
        if not self.ends_process and fast is None:
            self._kept = _Kept(
                after, files, pageset, outputs.navigation, {k: metas[k] for k in keys.values()}
            )
        return BuildReport(
            out_dir=self.out_dir,
            pages=pages_count,
            outputs=len(outputs.jobs),
            rendered=rendered,
            search_files=search_files,
            search_shards=search_shards,
            pages_planned=outputs.planned,
            markdown_rendered=len(fresh),
            removed=removed,
            seconds=time.perf_counter() - start,
            jobs=self.jobs,
            warnings=self.warnings,
            sources=by_output,
        )

    def _as_recorded(
        self,
        snap: Snapshot,
        state: State,
        cfg: SiteConfig,
        sources: Sources,
        aside: Callable[[], tuple[dict[str, Any], tuple[str, str], Mapping[str, str]]],
        dates: Callable[[], dict[str, str]],
        old_outputs: dict[str, tuple[str, int, int]],
        yaml_memo: Memo,
    ) -> BuildReport | None:
        """The report of a rebuild that has nothing to do, or None: no source changed (the caller
        knows), the plan's digest is the last complete build's (config, data, templates, assets, git
        dates, the site code) and so is the search index's format, the outputs table is as that build
        left it (its row count), every recorded output is on disk as recorded, the search index's
        manifest among them, and no other file is (``write.find_strays``, the walk of the output's
        changed folders). Then a full rebuild
        would plan the same outputs, find each unchanged and write nothing: the page set, the plan and
        the search index's plan are not made (~20 ms of a ~0.12 s no-change rebuild through the CLI at
        1,000 pages). Else the build goes on (``aside`` and ``dates`` are cached: not made twice)."""
        from . import search as search_mod
        from .output import folder_rows, matches
        from .plan import plan_digest
        from .write import find_strays

        site, index_format, pages, jobs, fp = snap.report
        if snap.rows != len(old_outputs) or (site, index_format) != (str(self.site_dir), search_mod.VERSION):
            return None
        if not self.out_dir.is_dir():
            return None
        if search_mod.MANIFEST not in old_outputs:  # forgotten: the index on disk is trusted no more
            return None
        kept, by_output = state.report_sources()
        if kept != fp:
            return None
        data, (_css_key, css), file_sha256 = aside()
        if yaml_memo.now.keys() != yaml_memo.known.keys():
            state.put_memo("yaml", yaml_memo.now)
        env = tpl_mod.environment(self.site_dir / "templates", self.cache_dir / "jinja")
        inputs = sha(json.dumps(dates(), sort_keys=True))
        digest, _jobs, _digests = plan_digest(cfg, sources.assets, data, env, css, inputs, file_sha256)
        top = str(self.out_dir)
        if digest != snap.digest or not all(matches(f"{top}/{rel}", row) for rel, row in old_outputs.items()):
            return None
        folders = state.folders(outside=search_mod.PREFIX.rstrip("/"))
        strays, empty, listed, seen = find_strays(self.out_dir, set(old_outputs), set(), folders)
        if strays or empty:
            return None
        # what a killed run left in the search index's folder (where one changed)
        search_mod.sweep(self.out_dir, old_outputs, state)
        # the folders listed now recorded as they are (``write.execute``)
        now, gone = folder_rows(self.out_dir, set(listed))
        state.put_folders(now, gone + [rel for rel in folders if rel not in seen])
        return BuildReport(
            out_dir=self.out_dir,
            pages=pages,
            outputs=jobs,
            rendered=0,
            markdown_rendered=0,
            removed=0,
            seconds=0.0,
            jobs=self.jobs,
            warnings=self.warnings,
            sources=by_output,
        )


class _Kept:
    """What a builder that builds again (``site serve``) keeps of its last complete build: the
    snapshot it recorded (the state's must still be that one: no other build since), its sources'
    files, its page set and navigation, its sources' metadata (key -> ``cache.State.md_meta``'s).
    A plain class: a NamedTuple's class costs the CLI's every build at import, which never uses it."""

    __slots__ = ("files", "metas", "navigation", "pageset", "snap")

    def __init__(
        self,
        snap: Snapshot,
        files: dict[str, str],
        pageset: PageSet,
        navigation: Any,
        metas: dict[str, Any],
    ):
        self.snap = snap
        self.files = files
        self.pageset = pageset
        self.navigation = navigation
        self.metas = metas


def _sources(pageset: PageSet) -> dict[str, str]:
    """The report's output -> source file."""
    return {p.out: p.file for p in pageset.pages if p.file}


def _warm_templates(env: tpl_mod.Environment, cfg: SiteConfig, sources: Sources) -> None:
    """jinja2 imported and the templates the write step will likely render compiled (a guess: one
    missed is compiled before the write step forks, as every template was)."""
    from .pages import likely_layouts
    from .plan import FIXED_TEMPLATES

    env.warm()
    layouts = likely_layouts(cfg, sources.markdown, sources.layouts, sources.tagged)
    sidebar = ["partials/sidebar.html"] if any(s.sidebar for s in cfg.sections.values()) else []
    env.compile([*(f"{name}.html" for name in sorted(layouts)), *FIXED_TEMPLATES, *sidebar])


def _record_parts(state: State, outputs: Plan, everything: bool) -> None:
    """The plan parts the next one-page rebuild plans from, recorded (``replan``); ``everything``: all
    pages were planned, so the rows of sources that are gone are deleted."""
    from .plan import plan_parts

    parts = plan_parts(outputs)
    state.put_plan_parts(parts, set(parts) if everything else None)


def _import_later() -> None:
    """The modules of the steps after the render step, imported (module comment at the imports)."""
    from . import replan, write  # noqa: F401  (replan's imports: the page set, plan, search index)


def _check_cache(folder: Path) -> None:
    """The state a file and the templates' cache a folder, or absent: a folder named state.sqlite, a
    FIFO or a link to /dev/null was an sqlite traceback on every build, a file named jinja mkdir's."""
    for name, want, kind in (
        ("state.sqlite", stat.S_ISREG, "file"),
        ("jinja", stat.S_ISDIR, "folder"),
        (LOCK_NAME, stat.S_ISREG, "file"),
    ):
        try:
            mode = os.stat(folder / name).st_mode
        except FileNotFoundError:
            continue
        except OSError:  # a link loop, ...: what it is cannot be known
            mode = 0
        if not want(mode):
            raise BuildError(
                f"{folder / name} in the build cache is not a {kind}",
                hint=f"remove it (the cache is made again): rm -r '{folder / name}'",
            )


def _stylesheet(state: State, style: str) -> tuple[str, str]:
    """The highlighting stylesheet and its key in the state, where it is kept beside the highlighted
    blocks (keyed alike: the style, this renderer's code and Pygments' version): making it imports
    Pygments' formatter and styles, which a build whose code blocks are all known never needs."""
    key = md_mod.code_key("\0stylesheet", style)  # no fenced block has that language
    css = state.code_html(key)
    if css is None:
        css = md_mod.pygments_css(style)
        state.put_code({key: css})
    return key, css


def search_pages(outputs: Plan) -> dict[str, str]:
    """The pages the search index covers (output path -> fingerprint): those whose article is marked
    for it; a site without any gets all its pages (their whole bodies are then indexed)."""
    pages = {j.out: j.fp for j in outputs.jobs if j.out.endswith(".html")}
    return {out: fp for out, fp in pages.items() if out in outputs.searchable} or pages


def _shown_elsewhere(edited: set[str], keys: dict[str, str], snap: Snapshot, metas: dict[str, Any]) -> bool:
    """Whether an edit changed what other outputs show of its page (``plan.public``), or the former
    version is not at hand to tell."""
    from .plan import public

    return any(
        snap.keys[rel] not in metas or public(metas[keys[rel]]) != public(metas[snap.keys[rel]])
        for rel in edited
    )


def _edited(snap: Snapshot | None, keys: dict[str, str]) -> set[str] | None:
    """The sources whose key changed since the last complete build (None: sources came or went, or
    no build completed)."""
    if snap is None or snap.keys.keys() != keys.keys():
        return None
    return {rel for rel, key in keys.items() if snap.keys[rel] != key}


def build_site(site_dir: Path, out_dir: Path, **kw: Any) -> BuildReport:
    return Builder(site_dir, out_dir, **kw).build()


def _io_error(e: sqlite3.DatabaseError) -> bool:
    """SQLITE_IOERR and its extended codes (a forked worker's keeps its message)."""
    return str(getattr(e, "sqlite_errorname", None)).startswith("SQLITE_IOERR") or "disk I/O error" in str(e)


def _disk_full(e: sqlite3.DatabaseError) -> bool:
    """SQLITE_FULL (a forked worker's, pickled to this process, keeps its name in its message)."""
    return getattr(e, "sqlite_errorname", None) == "SQLITE_FULL" or "database or disk is full" in str(e)
