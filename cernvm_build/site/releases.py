"""Adding a release to the site: what ``cernvm-build release`` calls once a release is cut.

The release index is copied, as is, to ``site/data/releases/<version>.json`` (the downloads page, the
release page and the feed are generated from it); release notes, when given, become
``site/content/releases/<version>.md``, whose body replaces the generated summary on the release page.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import releaseindex as release_index
from ..fsutil import atomic_write


def add_release(site_dir: Path, index_path: Path, notes: str | None = None) -> list[Path]:
    """Put the release described by ``index_path`` on the site; returns the files written."""
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
    return written
