"""Adding a release to the site: what ``cernvm-build release`` calls once a release is cut.

The release index is copied, as is, to ``site/data/releases/<version>.json`` (the downloads page, the
release page and the feed are generated from it); release notes, when given, become
``site/content/releases/<version>.md``, whose body replaces the generated summary on the release page.
The documentation as it is now is kept as ``site/content/docs-<version>/`` (see ``site.versions``),
with its generated references written out, so the release's docs keep describing that release.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

from .. import releaseindex as release_index
from ..errors import BuildError
from ..fsutil import atomic_dir, atomic_write
from . import reference as site_reference
from .sources import GENERATE_RE, Generators


def snapshot_docs(site_dir: Path, version: str, generators: Generators) -> Path | None:
    """Copy ``content/docs/`` to ``content/docs-<version>/`` (once), generated references baked in."""
    docs = site_dir / "content" / "docs"
    dest = site_dir / "content" / f"docs-{version}"
    if not docs.is_dir() or dest.exists():
        return None
    _only_files_and_links(docs)
    with atomic_dir(dest) as tmp:
        # Links are copied as links, and the build judges them as it does the live docs' (one leading
        # out of the site folder is refused): following them made a file from anywhere on this
        # machine a regular page of the copy, published with the release.
        shutil.copytree(docs, tmp, symlinks=True, dirs_exist_ok=True)
        for root, _dirs, files in os.walk(tmp):
            for name in files:
                page = Path(root) / name
                if name.endswith(".md") and not page.is_symlink():  # never written through a link
                    _bake(page, generators)
    return dest


def _only_files_and_links(docs: Path) -> None:
    """One error for a FIFO, socket or device under ``docs`` (copying one was a shutil traceback)."""
    for root, _dirs, files in os.walk(docs):
        for name in files:
            path = Path(root) / name
            mode = path.lstat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                raise BuildError(
                    "not a regular file, folder or link: the docs cannot be kept for the release",
                    where=str(path),
                    hint="remove it from the docs folder",
                )


def _bake(page: Path, generators: Generators) -> None:
    raw = page.read_bytes()
    m = GENERATE_RE.search(raw)
    if not raw.startswith(b"---") or m is None or m.group(1).decode() not in generators:
        return
    text = raw.decode("utf-8")
    generated = generators[m.group(1).decode()]()
    text = re.sub(r"(?m)^generate:\s*[\w-]+\s*\n", "", text, count=1)
    page.write_text(text.rstrip("\n") + "\n\n" + generated, encoding="utf-8")


def add_release(
    site_dir: Path, index_path: Path, notes: str | None = None, generators: Generators | None = None
) -> list[Path]:
    """Put the release described by ``index_path`` on the site; returns the files written.

    ``generators``: the reference pages to bake into the release's copy of the docs (the CLI passes
    ``cli.reference.GENERATORS``); without them the site's own (``site.reference``)."""
    idx = release_index.load(index_path)  # refuses a damaged index with file and key
    written: list[Path] = []
    data = site_dir / "data" / "releases" / f"{idx.version}.json"
    atomic_write(data, index_path.read_bytes())
    written.append(data)
    if notes is not None:
        page = site_dir / "content" / "releases" / f"{idx.version}.md"
        front = (
            "---\n"
            f"title: {json.dumps(f'CernVM {idx.version}')}\n"
            f"date: {idx.date[:10]}\n"
            "tags: [release]\n"
            "---\n"
        )
        atomic_write(page, (front + notes.rstrip("\n") + "\n").encode("utf-8"))
        written.append(page)
    snapshot = snapshot_docs(
        site_dir, idx.version, site_reference.GENERATORS if generators is None else generators
    )
    if snapshot is not None:
        written.append(snapshot)
    return written
