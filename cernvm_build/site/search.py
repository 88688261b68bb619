"""Step 5 of a site build: the search index, made by Pagefind over the written pages, in shards.

Pagefind (the ``pagefind[extended]`` package ships its binary) reads the built HTML and writes a
static index: the browser loads a small entry file, then only the index chunks and page fragments its
query needs. It stems words per language, matches prefixes and quoted phrases, and returns the
headings inside a page (``sub_results``, by their ``id``), which is why it was chosen over a hand-made
index or lunr (measurements: docs/ARCHITECTURE.md, section "site").

Pagefind has no incremental mode: it reads every page it is given. So the pages are cut into shards
(from ``SHARD_FROM`` pages on; whole folders, in path order, at least ``SHARD_PAGES`` pages each, at
most ``MAX_SHARDS``), each its
own Pagefind bundle: the first under ``pagefind/``, the others under ``pagefind/more/<id>/``, listed
in ``pagefind/shards.json`` with the key of the pages they cover. A shard is indexed again only when
one of its pages changed (its key: the pages' paths and output fingerprints), so a one-page edit costs
one shard, not the site. The browser merges the shards (``mergeIndex``); a small site is one shard and
loads exactly what it did before. Every bundle is a pure function of its pages, and the cut a pure
function of the page list, so an incremental index is byte for byte a clean one.

Only what a page marks with ``data-pagefind-body`` is indexed (the article, not menus or sidebars).
Index files are written like any other output: by rename, and only those whose bytes changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError, ToolError
from .model import sha

PREFIX = "pagefind/"
MANIFEST = PREFIX + "shards.json"
#: below this many pages the index is one bundle: shards rank by their own word statistics, so results
#: across shards are ordered a little differently than from one index (the bench measured the cost)
SHARD_FROM = 200
#: a shard covers whole folders and at least this many pages (fewer only for the last one)
SHARD_PAGES = 50
#: the browser loads one Wasm instance per shard: past this many, shards grow instead
MAX_SHARDS = 16
#: where Pagefind writes, inside the index folder (the same file system: its files are moved in place)
WORK = ".work"
GLOB_SPECIAL = re.compile(r"[{}\[\],*?]")
UNUSED = re.compile(r"pagefind-(?:[a-z-]*ui|highlight)\.(?:js|css)")


@dataclass(frozen=True)
class Shard:
    bundle: str  # "pagefind/" or "pagefind/more/<id>/"
    pages: tuple[str, ...]  # output paths of the HTML pages it covers
    key: str  # sha of the pages' paths and fingerprints


@dataclass(frozen=True)
class Indexed:
    rows: list[tuple[str, str, int, int]]  # state rows of every index file
    written: int  # index files written
    removed: list[str]  # index files removed
    shards: int  # shards Pagefind indexed in this build


def executable() -> str:
    """The Pagefind binary: from the ``pagefind[extended]`` or ``pagefind[bin]`` wheel, else $PATH."""
    for module in ("pagefind_bin_extended", "pagefind_bin"):
        try:
            mod = __import__(module)
            return str(mod.get_executable())
        except (ImportError, FileNotFoundError, RuntimeError):
            continue
    found = shutil.which("pagefind_extended") or shutil.which("pagefind")
    if found:
        return found
    raise ToolError(
        "the search index needs Pagefind, which is not installed",
        hint="pip install 'cernvm-build[site]' (it brings pagefind[extended])",
    )


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
        bundle = PREFIX if i == 0 else f"{PREFIX}more/{sha('shard', _folder(group[0]))[:12]}/"
        key = sha(bundle, *(f"{p} {pages[p]}" for p in group))
        out.append(Shard(bundle, tuple(group), key))
    return out


def run(out_dir: Path, work: Path, shard: Shard) -> dict[str, Path]:
    """Index the shard's pages in ``out_dir`` into ``work``; returns its bundle's files (``pagefind/…``
    → where Pagefind wrote them). ``work`` is on the output's file system: files are moved, not copied."""
    if work.exists():
        shutil.rmtree(work)
    work.parent.mkdir(parents=True, exist_ok=True)
    # one glob naming every page: Pagefind reads exactly those (URLs stay relative to the site)
    pattern = "{" + ",".join(_glob_literal(p) for p in shard.pages) + "}"
    cmd = [executable(), "--site", str(out_dir), "--glob", pattern, "--output-path", str(work), "--silent"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired as e:
        raise BuildError("Pagefind did not finish indexing within 10 minutes") from e
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise BuildError(
            f"Pagefind failed (exit {proc.returncode}): {detail[-1] if detail else 'no message'}",
            hint="run it by hand: " + " ".join(cmd[:3]) + " --output-path /tmp/pagefind",
        )
    files: dict[str, Path] = {}
    for root, _dirs, names in os.walk(work):
        for name in names:
            p = Path(root) / name
            if UNUSED.fullmatch(name):  # Pagefind's ready-made search UIs: the site has its own
                continue
            files[shard.bundle + p.relative_to(work).as_posix()] = p
    return files


def _glob_literal(page: str) -> str:
    # Pagefind's globs take a backslash before a special character, but no escaped backslash
    if "\\" in page:
        raise BuildError(
            f"{page}: a page whose path has a backslash cannot be indexed for search",
            hint="rename its Markdown file (or its url:) without '\\'",
        )
    return GLOB_SPECIAL.sub(r"\\\g<0>", page)


def _bundle_of(rel: str, bundles: list[str]) -> str | None:
    # the longest bundle prefix: "pagefind/more/x/…" is shard x's, not the first shard's
    best = None
    for b in bundles:
        if rel.startswith(b) and (best is None or len(b) > len(best)):
            best = b
    return best


def _previous(out_dir: Path, old: dict[str, tuple[str, int, int]]) -> dict[str, str]:
    """bundle -> key of the shards the last build recorded as complete (none if the manifest is not
    the one recorded: a failed or interrupted index step forgets it)."""
    prev = old.get(MANIFEST)
    if prev is None or not _matches(out_dir / MANIFEST, prev):
        return {}
    try:
        listed = json.loads((out_dir / MANIFEST).read_bytes())
        return {PREFIX + s["bundle"]: s["key"] for s in listed["shards"]}
    except (ValueError, KeyError, TypeError):
        return {}


def update(
    out_dir: Path,
    old: dict[str, tuple[str, int, int]],
    pages: dict[str, str],
    *,
    jobs: int = 1,
) -> Indexed | None:
    """Index again the shards whose pages changed (or whose files are missing or damaged); write the
    files whose bytes changed. ``pages``: every HTML output -> its fingerprint. None when the whole
    index is current."""
    ours = {rel: v for rel, v in old.items() if rel.startswith(PREFIX)}
    cut = shards(pages)
    bundles = [s.bundle for s in cut]
    prev = _previous(out_dir, old)
    recorded: dict[str, list[str]] = {b: [] for b in bundles}
    for rel in ours:
        b = _bundle_of(rel, bundles)
        if b is not None and rel != MANIFEST:
            recorded[b].append(rel)
    stale = [
        s
        for s in cut
        if prev.get(s.bundle) != s.key
        or not recorded[s.bundle]
        or not all(_matches(out_dir / rel, ours[rel]) for rel in recorded[s.bundle])
    ]
    listed = sorted(prev) == sorted(bundles)
    if not stale and listed and not (set(ours) - {MANIFEST} - {r for b in bundles for r in recorded[b]}):
        return None
    work = out_dir / PREFIX / WORK
    shutil.rmtree(work, ignore_errors=True)  # a killed run's leftovers
    work.mkdir(parents=True)
    made: dict[str, Path] = {}
    workers = max(1, min(jobs, len(stale)))
    try:
        with ThreadPoolExecutor(workers) as pool:  # Pagefind is a process: threads only wait for it
            for files in pool.map(lambda i: run(out_dir, work / str(i), stale[i]), range(len(stale))):
                made.update(files)
        keep = {rel: ours[rel] for s in cut if s not in stale for rel in recorded[s.bundle]}
        rows: list[tuple[str, str, int, int]] = [(rel, *v) for rel, v in keep.items()]
        written = sum(_put(out_dir, rel, made[rel], ours.get(rel), rows) for rel in sorted(made))
        # the manifest last: it names the shards as complete
        listing = {"shards": [{"bundle": s.bundle[len(PREFIX) :], "key": s.key} for s in cut]}
        (work / "shards.json").write_text(json.dumps(listing, indent=1, sort_keys=True) + "\n")
        written += _put(out_dir, MANIFEST, work / "shards.json", ours.get(MANIFEST), rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            (out_dir / PREFIX).rmdir()  # only if the failed first run left it empty
    # whatever else is in the index folder goes, recorded or not (a failed run forgets the rows)
    final = set(made) | set(keep) | {MANIFEST}
    top = str(out_dir / PREFIX)
    on_disk = {
        PREFIX + (root[len(top) + 1 :] + "/" if root != top else "") + n
        for root, _d, names in os.walk(top)
        for n in names
    }
    removed = sorted((set(ours) | on_disk) - final)
    for rel in removed:
        (out_dir / rel).unlink(missing_ok=True)
    _prune_dirs(out_dir / PREFIX)
    return Indexed(sorted(rows), written, removed, len(stale))


def _put(
    out_dir: Path,
    rel: str,
    made: Path,
    prev: tuple[str, int, int] | None,
    rows: list[tuple[str, str, int, int]],
) -> int:
    """Move a file Pagefind made into place, unless the output already has these bytes."""
    fp = sha("bytes", made.read_bytes())
    dest = out_dir / rel
    if prev and prev[0] == fp and _matches(dest, prev):
        rows.append((rel, *prev))
        return 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(made, dest)  # a rename: readers see the old file or the new one
    st = os.stat(dest)
    rows.append((rel, fp, st.st_size, st.st_mtime_ns))
    return 1


def _prune_dirs(top: Path) -> None:
    for root, _dirs, _files in os.walk(top, topdown=False):
        if Path(root) != top and not os.listdir(root):
            os.rmdir(root)


def _matches(path: Path, v: tuple[str, int, int]) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return st.st_size == v[1] and st.st_mtime_ns == v[2]
