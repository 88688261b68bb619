"""``cvmfs replicate`` between local Stratum directories: the rollback floor under the lock, a
whitelist that expires during the run, and the errors' words (pr16d findings 7, 9, 10)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs import replicate as rep
from cernvm_build.cvmfs.blacklist import load
from cernvm_build.cvmfs.commit import read_current
from cernvm_build.cvmfs.publish import publish_tree
from cernvm_build.cvmfs.whitelist import Whitelist
from cernvm_build.errors import CvmfsError, IntegrityError
from tests.support import free_port

from .helpers import FQRN


def _publish(stratum: Path, keyset: keymod.KeySet, tmp_path: Path, n: int) -> None:
    src = tmp_path / f"src{n}"
    src.mkdir()
    (src / "f").write_text(f"revision {n}\n")
    publish_tree(stratum, FQRN, keyset, src)


def test_the_rollback_floor_is_read_under_the_lock(
    stratum: Path, keyset: keymod.KeySet, key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run B waits for the lock while run A publishes revision 4; B's source is a stale mirror at 3.
    With the replica's manifest read before the lock, B published 3 over 4."""
    pub = [key_dir / f"{FQRN}.pub"]
    _publish(stratum, keyset, tmp_path, 2)
    dest = tmp_path / "replica"
    rep.replicate(stratum, dest, public_keys=pub, fqrn=FQRN)
    _publish(stratum, keyset, tmp_path, 3)
    stale = tmp_path / "stale"
    shutil.copytree(stratum, stale)
    _publish(stratum, keyset, tmp_path, 4)
    real = rep.publish_lock

    @contextlib.contextmanager
    def after_run_a(d: Path, what: str) -> Iterator[None]:
        monkeypatch.setattr(rep, "publish_lock", real)
        rep.replicate(stratum, dest, public_keys=pub, fqrn=FQRN)  # run A, while B waits
        with real(d, what):
            yield

    monkeypatch.setattr(rep, "publish_lock", after_run_a)
    with pytest.raises(IntegrityError, match="offers revision 3, older than the replica's 4"):
        rep.replicate(stale, dest, public_keys=pub, fqrn=FQRN)  # run B
    assert read_current(dest, FQRN).revision == 4


def test_a_whitelist_that_expires_during_the_run_is_not_published(
    stratum: Path, keyset: keymod.KeySet, key_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(stratum, keyset, tmp_path, 2)
    checks: list[bool] = []

    def expired(self: Whitelist, now: object = None) -> bool:
        checks.append(bool(checks))  # valid when the source is opened, expired from then on
        return checks[-1]

    monkeypatch.setattr(Whitelist, "expired", expired)
    dest = tmp_path / "replica"
    with pytest.raises(
        IntegrityError, match=r"expired on .* during the replication; nothing was published"
    ) as e:
        rep.replicate(stratum, dest, public_keys=[key_dir / f"{FQRN}.pub"], fqrn=FQRN)
    assert "re-sign the whitelist at the Stratum-0" in (e.value.hint or "")
    assert not (dest / ".cvmfspublished").exists() and not (dest / ".cvmfswhitelist").exists()


def test_replicate_errors_name_the_way_out_once(
    stratum: Path, keyset: keymod.KeySet, key_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _publish(stratum, keyset, tmp_path, 2)
    pub = str(key_dir / f"{FQRN}.pub")
    dest = tmp_path / "replica"
    argv = ["cvmfs", "replicate", str(stratum), str(dest), "--key", pub, "--fqrn", FQRN]
    assert main(argv) == 0
    capsys.readouterr()
    # a damaged manifest of the replica's own blocked every run with no way out named
    (dest / ".cvmfspublished").write_bytes(b"C0000\nN" + FQRN.encode() + b"\n")
    assert main(argv) != 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith(f"error: {dest}/.cvmfspublished"), err
    assert err[1] == f"hint: the replica's own manifest is damaged: remove {dest}/.cvmfspublished and " + (
        "replicate again (the objects already there are kept, not fetched again)"
    )
    (dest / ".cvmfspublished").unlink()
    assert main(argv) == 0
    capsys.readouterr()
    # an object the source lacks: the repository named once
    _publish(stratum, keyset, tmp_path, 3)
    new = {p for p in (stratum / "data").glob("??/*") if not (dest / p.relative_to(stratum)).exists()}
    victim = next(p for p in sorted(new) if not p.name.endswith(("C", "H", "X", "M", "L")))
    victim.unlink()
    assert main(argv) != 0
    error = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("error:"))
    assert error.startswith(f"error: {FQRN}: ") and error.count(FQRN) == 1, error
    # a source that does not answer: no reader's hint about a local cache
    url = f"http://127.0.0.1:{free_port()}/cvmfs/{FQRN}"
    assert main(["cvmfs", "replicate", url, str(dest), "--key", pub, "--retries", "0"]) != 0
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "hint: check the source URL(s) and --proxy, then run again: what was fetched is kept", (
        err
    )


@pytest.mark.parametrize("jobs", ["0", "65"])
def test_jobs_out_of_range_is_one_line_and_writes_nothing(
    stratum: Path, key_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: str
) -> None:
    """pr18d finding 5: -j 100000 started threads until the system refused one (a traceback). The
    CLI's range type refuses it when the line is read (cli.app.jobs); the library's own check stays."""
    dest = tmp_path / "replica"
    pub = str(key_dir / f"{FQRN}.pub")
    with pytest.raises(SystemExit) as stop:
        main(["cvmfs", "replicate", str(stratum), str(dest), "--key", pub, "--fqrn", FQRN, "-j", jobs])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument -j/--jobs: '{jobs}': expected a whole number from 1 to {rep.MAX_JOBS}" in err
    assert "Traceback" not in err and not dest.exists()
    with pytest.raises(CvmfsError, match=f"--jobs {jobs}: not from 1 to {rep.MAX_JOBS}"):
        rep.replicate(str(stratum), dest, fqrn=FQRN, public_keys=[Path(pub)], jobs=int(jobs))
    assert not dest.exists()


@pytest.mark.parametrize("dest", ["file", "file/sub"])
def test_a_dest_that_cannot_be_a_folder_is_one_line(
    stratum: Path, key_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], dest: str
) -> None:
    """pr18d finding 11: DEST a file (or under one) was a FileExistsError/NotADirectoryError traceback."""
    (tmp_path / "file").write_text("not a folder\n")
    pub = str(key_dir / f"{FQRN}.pub")
    argv = ["cvmfs", "replicate", str(stratum), str(tmp_path / dest), "--key", pub, "--fqrn", FQRN]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert f"error: {tmp_path / dest}: cannot be the replica's directory: " in err and "Traceback" not in err
    assert (tmp_path / "file").read_text() == "not a folder\n"


def test_tags_below_the_blacklists_floor_are_copied_and_named(
    stratum: Path, keyset: keymod.KeySet, key_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replica copied tagged revisions below a blacklist floor without a word (clients refuse
    them). A Stratum-1 mirrors the history, so they are still copied (and served: a client with
    another list may take them); each is one line of the result and one warning."""
    for n in (2, 3):
        src = tmp_path / f"src{n}"
        src.mkdir()
        (src / "f").write_text(f"revision {n}\n")
        publish_tree(stratum, FQRN, keyset, src, tag=f"t{n}")
    floor = tmp_path / "blacklist"
    floor.write_text(f"<{FQRN} 3\n")
    dest = tmp_path / "replica"
    result = rep.replicate(
        stratum, dest, public_keys=[key_dir / f"{FQRN}.pub"], fqrn=FQRN, blacklist=load([floor])
    )
    assert sorted(result.below_floor) == [
        f"{FQRN}: tag {t!r} (revision 2) is below the blacklist's floor 3 ({floor}:1): copied, but clients "
        "with that list refuse it"
        for t in ("t2", "trunk-previous")
    ]
    assert "t2" in result.tags and result.revisions == 2  # 3 (trunk, t3) and 2, copied all the same
    pub = str(key_dir / f"{FQRN}.pub")
    args = [
        "cvmfs",
        "replicate",
        str(stratum),
        str(dest),
        "--fqrn",
        FQRN,
        "--key",
        pub,
        "--blacklist",
        str(floor),
    ]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.count("tag 't2' (revision 2) is below the blacklist's floor 3") == 1, out
    assert err.count("tag 't2' (revision 2) is below the blacklist's floor 3") == 1, err
