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
    """What reads ``{content-relative path: YYYY-MM-DD of the last commit touching it}``, its git
    processes started now and read when the returned function is called (once): the builder starts
    them before the Markdown is rendered and reads them after, so they run meanwhile in processes of
    their own. ``git rev-parse HEAD`` always (the dates are remembered per commit: 4-9 ms of waiting in
    each build of the shipped site when it ran before the build went on, 70 ms on a cold start); ``git
    log`` (~0.06-0.1 s of a cold build of the shipped site, nearly all git's own) beside it when no
    dates are remembered, else only when they turn out to be another commit's (once per commit, waited
    for then)."""
    if not _in_work_tree(content.resolve()):
        return dict
    head_of = _git_started(content, "rev-parse", "HEAD")
    memo = cache_dir / "gitdates.json"
    saved: tuple[str, dict[str, str]] | None = None  # (head, dates) remembered
    try:
        got = json.loads(memo.read_text())
        if got.get("dir") == str(content):
            saved = str(got["head"]), {str(k): str(v) for k, v in got["dates"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    log = _log_started(content) if saved is None else None

    def dates_of() -> dict[str, str]:
        head = (head_of() or "").strip()
        if saved is not None and head and saved[0] == head:
            return dict(saved[1])
        if not head:  # not a commit yet, or git failed
            if log is not None:
                log()  # (waited for: no process is left behind)
            return {}
        text = (log or _log_started(content))()
        if text is None:  # failed or timed out (a loaded host): not remembered, the next build asks again
            return {}
        dates: dict[str, str] = {}
        date = ""
        for line in text.splitlines():
            if line.startswith("\0"):
                date = line[1:]
            elif line and date:
                dates.setdefault(line, date)  # newest first: the first date seen is the last change
        atomic_write(memo, json.dumps({"head": head, "dir": str(content), "dates": dates}).encode())
        return dates

    return dates_of


def _log_started(content: Path) -> Callable[[], str | None]:
    # core.quotePath=false: git would print a non-ASCII name quoted and escaped ("caf\303\251.md")
    quoting = ("-c", "core.quotePath=false")
    return _git_started(content, *quoting, "log", "--format=%x00%cs", "--name-only", "--relative", "--", ".")
