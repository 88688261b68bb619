"""When each content file last changed, from git: the "last updated" date of pages without ``updated:``.

Dates come from commits, never from the clock or file mtimes, so a build of one commit always shows the
same dates. One ``git log`` for the whole content folder, remembered per commit in the build cache.
Outside a git checkout (or without git) there are no dates and pages simply show none.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path

from ..fsutil import atomic_write, read_capped


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
    import shutil  # here: a build outside a git checkout starts none
    import subprocess
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


#: the largest memo read (~60 bytes a file: a million files)
MAX_MEMO = 64 << 20


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
        got = json.loads(read_capped(memo, MAX_MEMO))  # (a FIFO there hung the build)
        if got.get("dir") == str(content):
            saved = str(got["head"]), {str(k): str(v) for k, v in got["dates"].items() if _is_date(str(v))}
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
        dates = _parse_log(text)
        with contextlib.suppress(OSError):  # a memo not kept (a folder in its place) costs a log next time
            atomic_write(memo, json.dumps({"head": head, "dir": str(content), "dates": dates}).encode())
        return dates

    return dates_of


def _is_date(text: str) -> bool:
    """Whether ``text`` is a date the pages can show: a commit's date is whatever its author wrote
    (year 10000 prints as ``10000-01-01``, which fromisoformat refuses: it failed every build)."""
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10  # YYYY-MM-DD only (fromisoformat also takes 20240305 and 2024-W10-2)


def _parse_log(text: str) -> dict[str, str]:
    r"""``{name: date}`` from ``git log -z --format=%x00%cs --name-only``: each commit is ``\0DATE\0``,
    then, if it touched files here, ``\n`` and each name ended by ``\0``. Names are never empty, so an
    empty field says the next one is a date. Newest first: the first date seen is a file's last change.
    A file last changed by a commit whose date is not one (see _is_date) has none: not an older one."""
    dates: dict[str, str | None] = {}
    date: str | None = None
    fields = text.split("\0")
    i = 0
    while i < len(fields):
        field = fields[i]
        if not field and i + 1 < len(fields):
            date = fields[i + 1] if _is_date(fields[i + 1]) else None
            i += 2
            if i < len(fields) and fields[i].startswith("\n"):  # this commit's first name
                fields[i] = fields[i][1:]
            continue
        if field:
            dates.setdefault(field, date)
        i += 1
    return {name: date for name, date in dates.items() if date is not None}


def _log_started(content: Path) -> Callable[[], str | None]:
    # -z: names NUL-ended and never quoted (without it git quotes and escapes a name holding ", \, a tab
    # or a newline even with core.quotePath=false, which only spares non-ASCII ones: they got no date).
    # --no-show-signature: a user's log.showSignature put each signed commit's verdict in the output
    log = ("log", "-z", "--no-show-signature", "--format=%x00%cs", "--name-only", "--relative")
    return _git_started(content, *log, "--", ".")
