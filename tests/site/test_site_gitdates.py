"""The pages' "last updated" dates from git: the last commit touching each file, its log run while the
sources render."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sitehelpers import build_site

from cernvm_build.site import build as build_mod
from cernvm_build.site import gitdates


def _commit(repo: Path, date: str, message: str, committed: str | None = None) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_AUTHOR_DATE": f"{date}T12:00:00+00:00",
        "GIT_COMMITTER_DATE": committed or f"{date}T12:00:00+00:00",
    }
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", message], check=True, env=env)


def _on_log(monkeypatch: pytest.MonkeyPatch, fake: Callable[..., Any]) -> None:
    """``fake`` runs instead of the ``git log`` (git's other commands run)."""
    started = gitdates._git_started
    monkeypatch.setattr(gitdates, "_git_started", lambda c, *a: fake(c, *a) if "log" in a else started(c, *a))


def _repo(folder: Path) -> None:
    subprocess.run(["git", "init", "-q", str(folder)], check=True)


def test_each_file_dated_by_its_last_commit_and_remembered_per_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = tmp_path / "repo" / "content"
    (content / "docs").mkdir(parents=True)
    _repo(tmp_path / "repo")
    (content / "a.md").write_text("a\n")
    (content / "docs" / "b.md").write_text("b\n")
    _commit(tmp_path / "repo", "2024-03-05", "first")
    (content / "a.md").write_text("a2\n")
    _commit(tmp_path / "repo", "2024-04-06", "second")
    cache = tmp_path / "cache"
    cache.mkdir()
    assert gitdates.start(content, cache)() == {"a.md": "2024-04-06", "docs/b.md": "2024-03-05"}
    # the same HEAD again: the dates remembered, no log run
    _on_log(monkeypatch, lambda *a: pytest.fail("git log run again"))
    assert gitdates.start(content, cache)() == {"a.md": "2024-04-06", "docs/b.md": "2024-03-05"}
    # outside a work tree: no dates, no git
    assert gitdates.start(tmp_path / "cache", cache)() == {}
    # another commit: the remembered dates are another HEAD's, its log is run (once it is known)
    monkeypatch.undo()
    (content / "docs" / "b.md").write_text("b2\n")
    _commit(tmp_path / "repo", "2024-05-07", "third")
    assert gitdates.start(content, cache)() == {"a.md": "2024-04-06", "docs/b.md": "2024-05-07"}


def test_the_git_log_runs_while_the_sources_render(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _repo(site)
    _commit(site, "2023-02-01", "site")
    events: list[str] = []
    started = gitdates._git_started
    render = build_mod.render_markdown

    def rendering(*a: Any, **kw: Any) -> Any:
        events.append("render")
        return render(*a, **kw)

    def git(content: Path, *a: str) -> Any:
        name = "log" if "log" in a else a[0]
        events.append(f"{name} started")
        wait = started(content, *a)

        def read() -> Any:
            events.append(f"{name} read")
            return wait()

        return read

    monkeypatch.setattr(gitdates, "_git_started", git)
    monkeypatch.setattr(build_mod, "render_markdown", rendering)
    build_site(site, tmp_path / "out")
    assert events == ["rev-parse started", "log started", "render", "rev-parse read", "log read"]
    page = (tmp_path / "out" / "docs" / "index.html").read_text()
    assert 'Last updated <time datetime="2023-02-01"' in page
    # the dates remembered for this commit: its HEAD asked for while the sources render, no log run
    events.clear()
    with (site / "content" / "docs" / "_index.md").open("a") as f:
        f.write("\nEdited.\n")
    build_site(site, tmp_path / "out")
    assert events == ["rev-parse started", "render", "rev-parse read"]
    page = (tmp_path / "out" / "docs" / "index.html").read_text()
    assert 'Last updated <time datetime="2023-02-01"' in page


def test_a_non_ascii_name_gets_its_date(tmp_path: Path) -> None:
    """git quotes such names by default (core.quotePath): the page would never match its date."""
    content = tmp_path / "repo" / "content"
    content.mkdir(parents=True)
    _repo(tmp_path / "repo")
    (content / "café.md").write_text("c\n")
    _commit(tmp_path / "repo", "2024-05-07", "first")
    assert gitdates.start(content, tmp_path)() == {"café.md": "2024-05-07"}


def test_names_git_would_quote_get_their_dates(tmp_path: Path) -> None:
    """Without -z git quotes a name holding ", \\, a tab or a newline even with core.quotePath=false."""
    content = tmp_path / "repo" / "content"
    content.mkdir(parents=True)
    _repo(tmp_path / "repo")
    names = ['"q".md', "back\\slash.md", "a\tb.md", "new\nline.md", "\nlead.md"]
    for name in names:
        (content / name).write_text("x\n")
    _commit(tmp_path / "repo", "2024-05-07", "first")
    (content / "plain.md").write_text("p\n")
    _commit(tmp_path / "repo", "2024-06-08", "second")
    assert gitdates.start(content, tmp_path)() == {
        **dict.fromkeys(names, "2024-05-07"),
        "plain.md": "2024-06-08",
    }
    # a commit listing no names here (a merge) is followed by the next one's date
    log = "\x002024-02-02\x00\x002024-01-01\x00\na.md\x00"
    assert gitdates._parse_log(log) == {"a.md": "2024-01-01"}


def test_a_date_past_9999_is_no_date_and_a_remembered_one_is_dropped(tmp_path: Path) -> None:
    """Anyone's commit may carry year 10000: ``%cs`` prints 10000-01-01, which crashed every build."""
    content = tmp_path / "repo" / "content"
    content.mkdir(parents=True)
    _repo(tmp_path / "repo")
    (content / "a.md").write_text("a\n")
    (content / "b.md").write_text("b\n")
    _commit(tmp_path / "repo", "2024-03-05", "first")
    (content / "a.md").write_text("a2\n")
    _commit(tmp_path / "repo", "2024-04-01", "far", committed="@253402300800 +0000")
    assert gitdates.start(content, tmp_path)() == {"b.md": "2024-03-05"}  # a.md: none, not an older one
    memo = tmp_path / "gitdates.json"
    saved = json.loads(memo.read_text())
    saved["dates"]["a.md"] = "10000-01-01"  # a cache written before this check
    memo.write_text(json.dumps(saved))
    assert gitdates.start(content, tmp_path)() == {"b.md": "2024-03-05"}


def test_a_failed_log_is_not_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One git log that failed or timed out on a loaded host must not mean "no dates" at this commit for
    every later build."""
    content = tmp_path / "repo" / "content"
    content.mkdir(parents=True)
    _repo(tmp_path / "repo")
    (content / "a.md").write_text("a\n")
    _commit(tmp_path / "repo", "2024-03-05", "first")
    with monkeypatch.context() as failing:
        _on_log(failing, lambda *a: lambda: None)
        assert gitdates.start(content, tmp_path)() == {}
    assert gitdates.start(content, tmp_path)() == {"a.md": "2024-03-05"}


def test_signed_commits_are_dated_whatever_the_user_s_git_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``log.showSignature = true`` (a committer who signs sets it) put git's verdict on each signed
    commit ("No signature", "Good signature ...") into the log's output: no page had a date (pr19a 4)."""
    content = tmp_path / "repo" / "content"
    content.mkdir(parents=True)
    _repo(tmp_path / "repo")
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    for k, v in (("gpg.format", "ssh"), ("user.signingkey", f"{key}.pub"), ("commit.gpgsign", "true")):
        subprocess.run(["git", "-C", str(tmp_path / "repo"), "config", k, v], check=True)
    (content / "a.md").write_text("a\n")
    _commit(tmp_path / "repo", "2024-03-05", "signed")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "log.showSignature")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "true")
    assert gitdates.start(content, tmp_path)() == {"a.md": "2024-03-05"}


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_memo_of_another_kind_is_ignored(tmp_path: Path, kind: str) -> None:
    """gitdates.json a FIFO hung the build in its read; a folder was atomic_write's traceback (pr19a 8)."""
    content = tmp_path / "repo" / "content"
    content.mkdir(parents=True)
    _repo(tmp_path / "repo")
    (content / "a.md").write_text("a\n")
    _commit(tmp_path / "repo", "2024-03-05", "first")
    cache = tmp_path / "cache"
    cache.mkdir()
    memo = cache / "gitdates.json"
    os.mkfifo(memo) if kind == "fifo" else memo.mkdir()
    assert gitdates.start(content, cache)() == {"a.md": "2024-03-05"}
