"""Hostile repositories (issue 12) against the consumers that write trees and layers from them:
container layers (oci, docker-archive), the Apptainer sandbox, the DUCC hub (``.layers``, ``.flat``).

For every case of ``tests/support/hostile.py`` and every consumer, run as a separate process: a
non-zero exit with one ``error:`` line matching the case (no traceback), nothing beside the output
changed (a canary), no half-written output, bounded time, peak RSS under 256 MB. The big cases are
legitimate repositories: they must build, in the same bounds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_build.cvmfs import manifest as mf
from cernvm_build.cvmfs.keys import generate_keys
from cernvm_build.cvmfs.publish import create_repository
from tests.container.profiles import local_profile
from tests.support import hostile

MAX_RSS_MB = 256
SMALL = [name for name, case in hostile.CASES.items() if not case.big]
BIG = [name for name, case in hostile.CASES.items() if case.big]
HUB = "hub.hostile.test"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(stratum, keys dir) of an empty hub repository."""
    where = tmp_path_factory.mktemp("hub")
    keys = generate_keys(HUB)
    keys.save(where / "keys")
    create_repository(where / "stratum", HUB, keys)
    return where / "stratum", where / "keys"


def consumers(hub: tuple[Path, Path]) -> dict[str, list[str]]:
    return {
        "layers": ["--format", "oci,docker-archive"],
        "apptainer": ["--format", "apptainer"],
        "hub": [
            "--format",
            "cvmfs",
            "--hub-fqrn",
            HUB,
            "--hub-stratum",
            str(hub[0]),
            "--hub-keys",
            str(hub[1]),
        ],
    }


def build_in(
    repo: hostile.Repo, where: Path, extra: list[str], *, timeout: float
) -> tuple[hostile.Measured, Path]:
    """Run ``container build`` on ``repo`` into ``where/out``, beside a canary; check the canary."""
    canary = where / "canary"
    canary.mkdir(parents=True)
    (canary / "passwd").write_text("root:x:0:0\n")
    os.symlink("passwd", canary / "link")
    before = hostile.snapshot_tree(canary)
    prof = where / "hostile.yaml"
    prof.write_text(local_profile(repo.fqrn, repo.pub, branch="hostile"))
    root_hash = mf.parse((repo.stratum / ".cvmfspublished").read_bytes()).root_hash
    out = where / "out"
    argv = [*hostile.cli(), "container", str(prof), "--source", str(repo.stratum), "--root-hash", root_hash,
            "--out", str(out), *extra]  # fmt: skip
    res = hostile.run_measured(argv, timeout=timeout)
    assert not res.timed_out, f"no answer in {timeout} s"
    assert hostile.snapshot_tree(canary) == before, "the canary beside the output changed"
    assert sorted(os.listdir(where)) == ["canary", "hostile.yaml", "out"][: 3 if out.exists() else 2]
    assert res.max_rss_mb < MAX_RSS_MB, f"peak RSS {res.max_rss_mb:.0f} MB"
    print(f"{repo.stratum.parent.name} {' '.join(extra[:2])}: peak RSS {res.max_rss_mb:.0f} MB")  # for -s
    return res, out


@pytest.mark.integration
@pytest.mark.parametrize("consumer", ["layers", "apptainer", "hub"])
@pytest.mark.parametrize("name", SMALL)
def test_hostile_repository_is_refused(
    name: str,
    consumer: str,
    hostile_corpus: Callable[[str], hostile.Repo],
    hub: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    case = hostile.CASES[name]
    repo = hostile_corpus(name)
    res, out = build_in(repo, tmp_path / "run", consumers(hub)[consumer], timeout=120)
    assert res.returncode != 0, f"{name}: the build succeeded\n{res.stdout[-2000:]}"
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = res.error_lines
    assert len(lines) == 1, res.stderr[-3000:]
    assert case.error is not None and re.search(case.error, lines[0]), lines[0]
    # no half-written output: only the (emptied) output folder may remain
    if out.exists():
        assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []
        assert not any(p.name.endswith(".work") for p in out.iterdir())


@pytest.mark.integration
@pytest.mark.parametrize("consumer", ["layers", "apptainer"])
@pytest.mark.parametrize("name", BIG)
def test_big_repository_builds_in_bounded_memory(
    name: str,
    consumer: str,
    hostile_corpus: Callable[[str], hostile.Repo],
    hub: tuple[Path, Path],
    big_tmp_path: Path,
) -> None:
    repo = hostile_corpus(name)
    res, out = build_in(repo, big_tmp_path / "run", consumers(hub)[consumer], timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    if consumer == "apptainer":
        sandbox = out / "hostile.sandbox"
        if name == "million":
            assert len(os.listdir(sandbox / "many")) == hostile.MILLION
        else:
            fd = os.open(sandbox, os.O_RDONLY | os.O_DIRECTORY)
            try:  # the path is longer than PATH_MAX: walk down by descriptors
                for _ in range(hostile.DEPTH):
                    nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                    os.close(fd)
                    fd = nxt
                assert os.stat("bottom", dir_fd=fd).st_size == 7
            finally:
                os.close(fd)
    if name != "million":
        from cernvm_build.fsutil import remove_tree

        remove_tree(big_tmp_path / "run")  # pytest's own clean-up recurses: it cannot remove 1,500 levels
