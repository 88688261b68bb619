"""When each content file last changed, from git: the "last updated" date of pages without ``updated:``.

Dates come from commits, never from the clock or file mtimes, so a build of one commit always shows the
same dates. One ``git log`` for the whole content folder, remembered per commit in the build cache.
Outside a git checkout (or without git) there are no dates and pages simply show none.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..fsutil import atomic_write


def _in_work_tree(folder: Path) -> bool:
    """Whether git could find a repository for ``folder``: a ``.git`` in it or above (or $GIT_DIR).
    Outside one (a generated site, the bench's corpus) no git process is started at all."""
    if os.environ.get("GIT_DIR"):
        return True
    return any((d / ".git").exists() for d in (folder, *folder.parents))


def _git_started(content: Path, *args: str) -> Callable[[], str | None]:
    """git's output (None if it fails, is not there or takes over 60 s), the process started now and
    waited for when the returned function is called. Its output goes to a file, not a pipe: git never
    waits for this process to read, and one never waited for (a build that failed before) ends on its own.
    The one way git is run here."""
    import subprocess  # here: a build outside a git checkout starts none
    import tempfile

    git = shutil.which("git")
    if git is None:
        return lambda: None
    out = tempfile.TemporaryFile()  # noqa: SIM115  # closed by wait(), or with the object
    try:
        proc = subprocess.Popen(
            [git, "-C", str(content), *args], stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
    except OSError:
        out.close()
        return lambda: None

    def wait() -> str | None:
        with out:
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return None
            out.seek(0)
            return out.read().decode("utf-8", "replace") if code == 0 else None

    return wait


def start(content: Path, cache_dir: Path) -> Callable[[], dict[str, str]]:
    """What reads ``{content-relative path: YYYY-MM-DD of the last commit touching it}``, its ``git log``
    started now and read when the returned function is called (once): the builder starts it before the
    Markdown is rendered and reads it after, so the log runs meanwhile in its own process (~0.06-0.1 s
    of wall time of a cold build of the shipped site, nearly all of it git's own, that the build waited
    for)."""
    head = _git_started(content, "rev-parse", "HEAD")() if _in_work_tree(content.resolve()) else None
    if not head:
        return dict
    memo = cache_dir / "gitdates.json"
    try:
        saved = json.loads(memo.read_text())
        if saved.get("head") == head.strip() and saved.get("dir") == str(content):
            return lambda: dict(saved["dates"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    # core.quotePath=false: git would print a non-ASCII name quoted and escaped ("caf\303\251.md")
    quoting = ("-c", "core.quotePath=false")
    log = _git_started(content, *quoting, "log", "--format=%x00%cs", "--name-only", "--relative", "--", ".")

    def dates_of() -> dict[str, str]:
        text = log()
        if text is None:  # failed or timed out (a loaded host): not remembered, the next build asks again
            return {}
        dates: dict[str, str] = {}
        date = ""
        for line in text.splitlines():
            if line.startswith("\0"):
                date = line[1:]
            elif line and date:
                dates.setdefault(line, date)  # newest first: the first date seen is the last change
        atomic_write(memo, json.dumps({"head": head.strip(), "dir": str(content), "dates": dates}).encode())
        return dates

    return dates_of
