"""When each content file last changed, from git: the "last updated" date of pages without ``updated:``.

Dates come from commits, never from the clock or file mtimes, so a build of one commit always shows the
same dates. One ``git log`` for the whole content folder, remembered per commit in the build cache.
Outside a git checkout (or without git) there are no dates and pages simply show none.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..fsutil import atomic_write


def _in_work_tree(folder: Path) -> bool:
    """Whether git could find a repository for ``folder``: a ``.git`` in it or above (or $GIT_DIR).
    Outside one (a generated site, the bench's corpus) no git process is started at all."""
    if os.environ.get("GIT_DIR"):
        return True
    return any((d / ".git").exists() for d in (folder, *folder.parents))


def _git(content: Path, *args: str) -> str | None:
    import subprocess  # here: a build outside a git checkout starts none

    git = shutil.which("git")
    if git is None:
        return None
    try:
        proc = subprocess.run(
            [git, "-C", str(content), *args], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def last_changed(content: Path, cache_dir: Path) -> dict[str, str]:
    """``{content-relative path: YYYY-MM-DD of the last commit touching it}``."""
    head = _git(content, "rev-parse", "HEAD") if _in_work_tree(content.resolve()) else None
    if not head:
        return {}
    memo = cache_dir / "gitdates.json"
    try:
        saved = json.loads(memo.read_text())
        if saved.get("head") == head.strip() and saved.get("dir") == str(content):
            return dict(saved["dates"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    log = _git(content, "log", "--format=%x00%cs", "--name-only", "--relative", "--", ".")
    dates: dict[str, str] = {}
    date = ""
    for line in (log or "").splitlines():
        if line.startswith("\0"):
            date = line[1:]
        elif line and date:
            dates.setdefault(line, date)  # newest first: the first date seen is the last change
    atomic_write(memo, json.dumps({"head": head.strip(), "dir": str(content), "dates": dates}).encode())
    return dates
