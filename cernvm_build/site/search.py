"""Step 5 of a site build: the search index, made by Pagefind over the written pages.

Pagefind (the ``pagefind[extended]`` package ships its binary) reads the built HTML and writes a
static, sharded index under ``pagefind/``: the browser loads the small entry file, then only the index
chunks and page fragments its query needs. It stems words per language, matches prefixes and quoted
phrases, and returns the headings inside a page (``sub_results``, by their ``id``), which is why it
was chosen over a hand-made index or lunr (measurements: docs/ARCHITECTURE.md, section "site").

Only what a page marks with ``data-pagefind-body`` is indexed (the article, not menus or sidebars).
The index is a pure function of the HTML (same pages, same bytes), so it is made again only when a
page was written or removed, into a temporary folder, and its files are then written like any other
output: by rename, and only those whose bytes changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import BuildError, ToolError
from ..fsutil import atomic_write
from .model import sha

PREFIX = "pagefind/"


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


def run(out_dir: Path, work: Path) -> dict[str, bytes]:
    """Index the HTML in ``out_dir``; returns the index files (``pagefind/…`` → bytes)."""
    if work.exists():
        shutil.rmtree(work)
    work.parent.mkdir(parents=True, exist_ok=True)
    cmd = [executable(), "--site", str(out_dir), "--output-path", str(work), "--silent"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired as e:
        raise BuildError("Pagefind did not finish indexing within 10 minutes") from e
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise BuildError(
            f"Pagefind failed (exit {proc.returncode}): {detail[-1] if detail else 'no message'}",
            hint="run it by hand: " + " ".join(cmd),
        )
    files: dict[str, bytes] = {}
    for root, _dirs, names in os.walk(work):
        for name in names:
            p = Path(root) / name
            files[PREFIX + p.relative_to(work).as_posix()] = p.read_bytes()
    shutil.rmtree(work)
    return files


def update(
    out_dir: Path, work: Path, old: dict[str, tuple[str, int, int]], pages_changed: bool
) -> tuple[list[tuple[str, str, int, int]], int, list[str]] | None:
    """Make the index again when pages changed (or it is missing or damaged); write the files whose
    bytes changed. Returns None when the index is current, else (state rows of every index file, how
    many were written, the index files removed)."""
    ours = {rel: v for rel, v in old.items() if rel.startswith(PREFIX)}
    intact = bool(ours) and all(_matches(out_dir / rel, v) for rel, v in ours.items())
    if not pages_changed and intact:
        return None
    files = run(out_dir, work)
    rows: list[tuple[str, str, int, int]] = []
    written = 0
    for rel, blob in sorted(files.items()):
        fp = sha("bytes", blob)
        dest = out_dir / rel
        prev = ours.get(rel)
        if prev and prev[0] == fp and _matches(dest, prev):
            rows.append((rel, *prev))
            continue
        atomic_write(dest, blob, durable=False)
        st = os.stat(dest)
        rows.append((rel, fp, st.st_size, st.st_mtime_ns))
        written += 1
    # whatever else is in the index folder goes, recorded or not (a failed run forgets the rows)
    on_disk = {
        PREFIX + (Path(root) / n).relative_to(out_dir / PREFIX).as_posix()
        for root, _d, names in os.walk(out_dir / PREFIX)
        for n in names
    }
    removed = sorted((set(ours) | on_disk) - set(files))
    for rel in removed:
        (out_dir / rel).unlink(missing_ok=True)
    return rows, written, removed


def _matches(path: Path, v: tuple[str, int, int]) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return st.st_size == v[1] and st.st_mtime_ns == v[2]
