"""Step 4 of a site build: write the outputs whose fingerprint changed, delete what a clean build would
not write, and return the rows for the state (the index of outputs: fingerprint, size, mtime).

Into an output folder that exists, outputs appear by rename, so readers see the old file or the new
one. A build into a new folder (``new=True``) writes into a folder nobody reads yet (the builder renames
it into place at the end, ``fsutil.atomic_dir``): there each file is written once, in place
(``output.py``: how a file is written and recorded).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import sqlite3
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import BuildError, CernVMError
from ..report import Reporter
from . import parallel
from . import templates as tpl_mod
from .cache import State
from .model import ContentText, Job, Late
from .ntuple import NamedTuple
from .output import (
    check_out,
    copy_output,
    files_in_changed_folders,
    folder_rows,
    matches,
    prune_emptied,
    with_parents,
    write_output,
)
from .pages import PageSet
from .parallel import fork_map, run_size
from .plan import Plan
from .search import PREFIX as SEARCH_PREFIX
from .search import Postings, Shard, ShardMade, extract_key, page_extract, write_shard


class Work(NamedTuple):
    """Everything a worker needs to write outputs; handed to it as an argument through ``fork``."""

    out_dir: Path
    env: tpl_mod.Environment
    html: dict[str, str]  # rendered Markdown by key
    fetch: bool  # some the pages show is not in ``html``: read from the state a unit at a time (``_fetched``)
    sidebar_items: dict[str, tuple[list[dict[str, Any]], str]]  # the plan's sidebars by "section:open dir"
    sidebars: dict[str, str]  # their HTML, rendered where first used (each process its own)
    pageset: PageSet
    jobs: list[Job]
    made: set[str] | None  # out_dir is new (nobody reads it yet): the folders made in it so far
    extract: set[str]  # pages whose search extract is made here, from the HTML rendered (search.missing)
    base_path: str
    shards: list[Shard]  # search shards made here (from the extracts of the pages written with them)
    known: dict[str, tuple[bytes, bytes]]  # their pages' extracts not made here: from the state
    index_old: dict[str, tuple[str, int, int]]  # the index files recorded (written only if changed)
    texts: dict[str, ContentText]  # what the search index reads of rendered Markdown, by key
    state: State  # the build's state: the extracts of a shard made here are kept from here
    # one byte shared by every process of the write step (anonymous, mapped before the fork): set when
    # an output fails, so none starts another (a page-wide template error costs one page's time, e.g. a
    # template that includes itself ~5 s, not every page's)
    failed: mmap.mmap


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


def _shown_md(jobs: Iterable[Job], have: Container[str]) -> set[str]:
    """The keys of the rendered Markdown these outputs show that are not in ``have``."""
    return {
        v.key
        for j in jobs
        if j.context
        for v in _lates(j.context)
        if v.kind == "content" and v.key not in have
    }


def _made(late: Late, work: Work) -> Any:
    """A ``Late`` value made: the page's rendered body (its links resolved) or a sidebar."""
    if late.kind == "content":
        raw = work.html[late.key]
        page = work.pageset.by_src.get(late.arg)
        return tpl_mod.Markup(work.pageset.resolve_html(raw) if page else raw)
    if late.kind == "sidebar":
        got = work.sidebars.get(late.arg)
        if got is None:  # a run's pages are neighbours: most share the sidebar of the one before
            items = work.sidebar_items[late.arg][0]
            got = work.sidebars[late.arg] = work.env.render("partials/sidebar.html", {"items": items})
        return tpl_mod.Markup(got)
    raise AssertionError(late.kind)


def _materialize(ctx: dict[str, Any], work: Work) -> dict[str, Any]:
    """A job's context with its ``Late`` values made, in the places ``plan`` puts them
    (the sidebar, the page's body, the feed entries' bodies: ``plan`` puts none elsewhere); the containers on
    the way copied, the rest shared with the job, not copied (templates only read their context).
    The copy of the whole context this was, ~65 calls a page into every dict and list (the links, the
    table of contents, the breadcrumbs), was ~5 % of the write step's CPU."""
    out = dict(ctx)
    sidebar = out.get("sidebar")
    if isinstance(sidebar, Late):
        out["sidebar"] = _made(sidebar, work)
    page = out.get("page")
    if isinstance(page, dict) and isinstance(page.get("content"), Late):
        out["page"] = {**page, "content": _made(page["content"], work)}
    feed = out.get("feed")
    if isinstance(feed, dict) and isinstance(feed.get("entries"), list):
        entries = [
            {**e, "content": _made(e["content"], work)}
            if isinstance(e, dict) and isinstance(e.get("content"), Late)
            else e
            for e in feed["entries"]
        ]
        out["feed"] = {**feed, "entries": entries}
    return out


#: what a worker returns for an output: (size, mtime in ns, search extract or None); (message, where,
#: hint) for one that failed; None for one not attempted (another had failed)
Written = tuple[int, int, tuple[bytes, bytes] | None]


#: a unit of the write step's work: outputs (indices of ``Work.jobs``), and the search shard (an index of
#: ``Work.shards``) made from their extracts (those outputs are its pages), or None
Unit = tuple[tuple[int, ...], int | None]


def _do_unit(
    work: Work, unit: Unit
) -> tuple[Sequence[Written | tuple[str, str, str] | None], ShardMade | None]:
    jobs, shard_no = unit
    with _fetched(work, jobs):
        return _do_jobs(work, jobs, shard_no)


@contextlib.contextmanager
def _fetched(work: Work, jobs: Sequence[int]) -> Iterator[None]:
    """The rendered Markdown these outputs show that is not in ``work.html`` (kept in the state by the
    render step, past ``sources.HELD_MAX``) read for them, one query, and dropped after them."""
    if not work.fetch:  # (a search of every context: ~0.02 CPU-s of a 1,000-page build)
        yield
        return
    need = _shown_md((work.jobs[i] for i in jobs), work.html)
    if not need:
        yield
        return
    work.html.update(work.state.md_html(sorted(need)))
    try:
        yield
    finally:
        for key in need:
            work.html.pop(key, None)


def _do_jobs(
    work: Work, jobs: tuple[int, ...], shard_no: int | None
) -> tuple[Sequence[Written | tuple[str, str, str] | None], ShardMade | None]:
    # the extracts of a shard's pages, also as its files read them (no pickle read back here)
    parsed: dict[str, Postings] | None = None if shard_no is None else {}
    results: list[Written | tuple[str, str, str]] = []
    for i in jobs:
        if work.failed[0]:  # an output failed, here or in another process: the build stops
            return [*results, *[None] * (len(jobs) - len(results))], None
        results.append(_do_job_safe(work, i, parsed))
    if shard_no is None:
        return results, None
    shard = work.shards[shard_no]
    extracts = {p: work.known[p] for p in shard.pages if p in work.known}
    extracts.update(
        (work.jobs[i].out, r[2]) for i, r in zip(jobs, results, strict=True) if isinstance(r[2], tuple)
    )
    if not all(p in extracts for p in shard.pages):  # a page failed, or had no extract: the index step's
        return results, None
    made = write_shard(work.out_dir, shard, extracts, work.index_old, work.made, parsed=parsed)
    # the extracts made here are kept in the state from here, not sent back (the index step needs
    # them no more): ~5.5 KB a page to pickle, and a serial step after the last worker
    here = [(work.jobs[i], r) for i, r in zip(jobs, results, strict=True)]
    try:
        work.state.put_search_extracts(
            [(extract_key(job.out, job.fp), *r[2]) for job, r in here if isinstance(r[2], tuple)]
        )
    except sqlite3.Error:  # the state busy past its wait, or unwritable: the parent keeps them, as before
        return results, made
    return [r if not isinstance(r[2], tuple) else (r[0], r[1], None) for r in results], made


def _do_job_safe(
    work: Work, i: int, parsed: dict[str, Postings] | None = None
) -> Written | tuple[str, str, str]:
    # a CernVMError's where/hint do not survive pickling from a worker: send the parts
    try:
        return _do_job(work, i, parsed)
    except CernVMError as e:
        work.failed[0] = 1
        return e.message, str(e.where or ""), e.hint or ""


def _do_job(work: Work, i: int, parsed: dict[str, Postings] | None = None) -> Written:
    """Write output ``i``; ``parsed``: where its search extract is also kept (``search.page_extract``'s
    ``into``)."""
    job = work.jobs[i]
    dest = work.out_dir / job.out
    if job.copy_from is not None:
        return (*copy_output(job.copy_from, dest, work.made), None)
    if job.data is not None:
        return (*write_output(dest, job.data, work.made), None)
    assert job.template is not None and job.context is not None
    ctx = _materialize(job.context, work)
    if "sidebar" in ctx and "page" in ctx:
        # mark the current page in the shared sidebar fragment
        url = ctx["page"]["url"]
        ctx["sidebar"] = tpl_mod.Markup(
            str(ctx["sidebar"]).replace(f'<a href="{url}">', f'<a href="{url}" aria-current="page">', 1)
        )
    page = work.env.render(job.template, ctx)
    if job.out.endswith(".xml"):
        page = _XML_INVALID.sub("", page)  # with none found, the same str back at the cost of a search
    size_mtime = write_output(dest, page.encode("utf-8"), work.made)
    if job.out not in work.extract:
        return (*size_mtime, None)
    # the index step's extract of the page, while its HTML is here (else that step reads it back); the
    # text of its Markdown as the Markdown stage read it, where it did
    shown = job.context.get("page")
    late = shown.get("content") if isinstance(shown, dict) else None
    text = work.texts.get(late.key) if isinstance(late, Late) and late.kind == "content" else None
    content = (str(ctx["page"]["content"]), text) if text is not None else None
    return (*size_mtime, page_extract(page, job.out, work.base_path, content, parsed))


#: characters XML 1.0 does not allow (escaped or not): one in atom.xml made feed readers drop the whole
#: feed (audit17c: a YAML "\x01" in a title, a raw \x0b in Markdown, "\u0001" in a release index).
#: They reach the XML outputs from many sources, so this one rule removes them from every XML output
#: as it is written; HTML readers tolerate them, and the HTML pages keep them as written.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def _units(todo: list[Job], shards: list[Shard], forked: int) -> tuple[list[Unit], int | None]:
    """The write step's units in the order the workers take them, and the job done first, before any
    fork. A shard's pages are one unit, so its files are made where all its extracts are, whatever
    process that is (a shard's files depend only on its pages' extracts). Shards first, the biggest
    first; then the other outputs in runs, which even out the processes' ends (a shard is ~0.1 s of
    work). With ``forked`` processes (0: none forked), the last ``forked - 1`` shards are cut into runs
    too, for the same reason, and left to the index step (one: made there in-process, no fork)."""
    by_out = {j.out: i for i, j in enumerate(todo)}
    units: list[Unit] = sorted(
        (
            (tuple(by_out[p] for p in s.pages if p in by_out), n)
            for n, s in enumerate(shards[: len(shards) - max(0, forked - 1)])
        ),
        key=lambda u: -len(u[0]),
    )
    warm = units[0][0][0] if units and units[0][0] else 0 if todo else None
    if units and units[0][0]:
        units[0] = (units[0][0][1:], units[0][1])
    taken = {i for u in units for i in u[0]}
    rest = [i for i in range(len(todo)) if i not in taken and i != warm]
    size = run_size(len(rest), max(1, forked))
    units += [(tuple(rest[k : k + size]), None) for k in range(0, len(rest), size)]
    return units, warm


def _unchanged(out_dir: Path, job: Job, old: dict[str, tuple[str, int, int]]) -> bool:
    prev = old.get(job.out)
    return prev is not None and prev[0] == job.fp and matches(f"{out_dir}/{job.out}", prev)


def find_strays(
    out_dir: Path, wanted: set[str], known: set[str], folders: dict[str, int]
) -> tuple[list[str], bool, list[str], set[str]]:
    """Files in the output that a clean build would not write, whether empty folders exist, the
    folders listed and every folder (the search index's folder is the index step's: not walked here).
    ``folders``: the state's (``State.folders``): one recorded and unchanged holds what it held."""
    files, empty, listed, seen = files_in_changed_folders(out_dir, SEARCH_PREFIX.rstrip("/"), folders)
    return sorted(rel for rel in files if rel not in wanted and rel not in known), empty, listed, seen


def execute(
    out_dir: Path,
    plan: Plan,
    pageset: PageSet,
    old: dict[str, tuple[str, int, int]],
    env: tpl_mod.Environment,
    state: State,
    fresh: dict[str, str | None],
    jobs: int,
    reporter: Reporter,
    *,
    new: bool = False,
    extract: set[str] | frozenset[str] = frozenset(),
    texts: dict[str, ContentText] | None = None,
    base_path: str = "/",
    meanwhile: Callable[[], object] | None = None,
    shards: list[Shard] | None = None,
    known: dict[str, tuple[bytes, bytes]] | None = None,
    index_old: dict[str, tuple[str, int, int]] | None = None,
    written: Callable[[list[Job], dict[str, tuple[bytes, bytes]]], object] | None = None,
) -> tuple[
    list[Job],
    list[tuple[str, str, int, int]],
    list[str],
    dict[str, tuple[bytes, bytes]],
    dict[str, ShardMade],
]:
    """Write what changed; returns (jobs written, state rows for them, outputs removed, search extracts
    of the written pages among ``extract``, search shards made: bundle -> ``search.write_shard``'s
    result). ``fresh``: the rendered Markdown of this build by key (None: kept in the state only, read
    back a unit at a time). ``new``: the output folder is new and empty (see the module docstring);
    ``texts``: what the search index reads of rendered Markdown (by key; a page showing other Markdown
    is read whole);
    ``meanwhile``: the builder's serial work, done here while the workers write (``parallel.fork_map``);
    ``shards``: search shards to make here, each by the worker that writes its pages
    (``search.for_write``; one whose pages did not all give an extract is left to the index step),
    from those extracts and ``known`` ones, its files written unless they have the bytes ``index_old``
    records; ``written``: called with the jobs written and their search extracts once all are written,
    before the output is walked for strays (the index step's shards started in the render child, which
    makes them meanwhile: ``search.offload``)."""
    shards = shards or []
    known = known or {}
    index_old = index_old or {}
    todo = [job for job in plan.jobs if job.out not in plan.unchanged and not _unchanged(out_dir, job, old)]
    for job in todo:
        check_out(job.out)  # the last guard: nothing is written outside ``out_dir``
    # What the workers need and this process already has: rendered HTML and sidebars. The contexts are
    # searched for the rendered pages they show only where some page was not rendered now (a full
    # build's ~21,000 context values: 0.02 CPU-s of serial time for nothing).
    need_md: list[str] = []
    if any(p.md_key and p.md_key not in fresh for p in pageset.pages):
        need_md = sorted(_shown_md(todo, fresh))
    html = {key: text for key, text in fresh.items() if text is not None}
    html.update(state.md_html(need_md))
    made = {str(out_dir)} if new else None
    forked = jobs if jobs > 1 and len(todo) >= parallel.PARALLEL_MIN else 0
    if forked:
        env.close()  # a render child (``renderchild``) is for a few pages: the workers render here
    if env.child is None:
        if any(j.context and isinstance(j.context.get("sidebar"), Late) for j in todo):
            env.get("partials/sidebar.html")  # compiled once, before the fork; rendered by the workers
        for j in todo:
            if j.template is not None:
                env.get(j.template)  # compile once, before the fork
    units, warm = _units(todo, shards, forked)
    work = Work(
        out_dir,
        env,
        html,
        any(text is None for text in fresh.values()),
        plan.sidebars,
        {},
        pageset,
        todo,
        made,
        set(extract),
        base_path,
        shards,
        dict(known),
        index_old,
        texts or {},
        state,
        mmap.mmap(-1, 1),  # MAP_SHARED: the forked workers see one byte
    )
    reporter.progress("pages", 0, len(todo))
    results: list[Any] = [None] * len(todo)
    if warm is not None:
        # the first page of the first shard, here before the fork: what it makes on first use (the
        # page's template compiled, its lexers...) is made once and inherited; its extract with it
        with _fetched(work, (warm,)):
            results[warm] = _do_job_safe(work, warm)
        if isinstance(results[warm][2], tuple):
            work.known[todo[warm].out] = results[warm][2]
    built: dict[str, ShardMade] = {}
    for unit, (got, shard) in zip(
        units,
        fork_map(_do_unit, work, units, forked or 1, 0, meanwhile, size=1, first=False),
        strict=True,
    ):
        for i, r in zip(unit[0], got, strict=True):
            results[i] = r
        if shard is not None and unit[1] is not None:
            built[shards[unit[1]].bundle] = shard
    reporter.progress("pages", len(todo), len(todo))
    # the first failed in the outputs' order among those attempted (one failed, no other started)
    failed = [r for r in results if r is not None and isinstance(r[0], str)]
    if failed:
        message, where, hint = failed[0]
        raise BuildError(str(message), where=str(where) or None, hint=str(hint) or None)
    rows = [(job.out, job.fp, int(r[0]), int(r[1])) for job, r in zip(todo, results, strict=True)]
    extracts = {job.out: r[2] for job, r in zip(todo, results, strict=True) if isinstance(r[2], tuple)}
    if written is not None:
        written(todo, extracts)
    wanted = {j.out for j in plan.jobs}
    # the search index's folder is the index step's (search.update), which lists its shards last
    removed = sorted(rel for rel in set(old) - wanted if not rel.startswith(SEARCH_PREFIX))
    folders = state.folders(outside=SEARCH_PREFIX.rstrip("/"))  # (that folder's rows: ``search.sweep``)
    strays: list[str]
    listed: list[str]
    if made is not None:
        # a new folder holds only what this build wrote (the search index's folder aside): its folders
        # are those of the outputs, and a walk would find nothing else (~0.006 CPU-s of serial time
        # after the workers at 1,000 pages)
        strays, empty_dirs, listed, seen = [], False, [], with_parents(wanted)
    else:
        strays, empty_dirs, listed, seen = find_strays(out_dir, wanted, set(removed), folders)
    removed += strays
    for rel in removed:
        try:
            os.unlink(out_dir / rel)
        except FileNotFoundError:
            pass
    if removed or empty_dirs:
        prune_emptied(out_dir, removed, empty_dirs)
    # the folders this build listed or changed, as they are now (the others are as recorded), and
    # none of those it did not find
    now, gone = folder_rows(out_dir, set(listed) | with_parents([j.out for j in todo] + removed))
    state.put_folders(now, gone + [rel for rel in folders if rel not in seen])
    return todo, rows, removed, extracts, built
