"""The publish time: an explicit ``timestamp`` is strict, the build time ``epoch`` (what the CLI reads
from SOURCE_DATE_EPOCH) is lenient, and without either it is now. The library never reads the
environment itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import manifest
from cernvm_build.cvmfs.keys import generate_keys
from cernvm_build.cvmfs.publish import create_repository, publish_tree

FQRN = "epoch.cernvm.test"


def _published_time(stratum: Path) -> int:
    signed = manifest.split_signed((stratum / ".cvmfspublished").read_bytes(), "m")
    return manifest.parse(signed.body).timestamp


def test_epoch_dates_revisions_and_an_older_one_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000")  # the library does not look
    keys = generate_keys(FQRN)
    stratum = tmp_path / FQRN
    create_repository(stratum, FQRN, keys, epoch=1_800_000_000)
    assert _published_time(stratum) == 1_800_000_000
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("x")
    same = publish_tree(stratum, FQRN, keys, tree, epoch=1_800_000_000)
    assert same.timestamp == 1_800_000_001 and not same.warnings  # same build time: one second on
    older = publish_tree(stratum, FQRN, keys, tree, epoch=1_700_000_000)
    assert older.timestamp == 1_800_000_002
    assert any("earlier than revision" in w for w in older.warnings)
    fresh = tmp_path / "fresh"
    before = int(time.time())
    create_repository(fresh, FQRN, keys)  # neither: now, whatever SOURCE_DATE_EPOCH says
    assert before <= _published_time(fresh) <= int(time.time()) + 1  # the clock's time, not the epoch


def test_the_cli_hands_source_date_epoch_to_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    generate_keys(FQRN).save(keys)
    stratum = tmp_path / "srv" / FQRN
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1800000000")
    assert main(["cvmfs", "create", str(stratum), "--fqrn", FQRN, "--keys", str(keys), "-q"]) == 0
    assert _published_time(stratum) == 1_800_000_000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    assert main(["cvmfs", "tag", "add", str(stratum), "x", "--keys", str(keys), "-q"]) == 2


def test_a_build_time_no_reader_accepts_is_one_line_and_the_repository_stays_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # SOURCE_DATE_EPOCH is read up to the year 9999; a publish dated after 2242 said nothing, exit 0,
    # and left a manifest every reader refuses ("field 'T' is not a publish time")
    from cernvm_build.cvmfs.limits import MAX_MTIME

    keys, stratum, src = _created(tmp_path)
    before = (stratum / ".cvmfspublished").read_bytes()
    capsys.readouterr()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(MAX_MTIME + 1))
    for argv in (["publish", str(stratum), str(src)], ["tag", "add", str(stratum), "x"]):
        assert main(["cvmfs", *argv, "--keys", str(keys), "-q"]) == 5
        err = capsys.readouterr().err
        assert (
            err.startswith(f"error: build time {MAX_MTIME + 1} (2242-03-16T12:56:33Z) is after ")
            and "Traceback" not in err
        )
    assert (stratum / ".cvmfspublished").read_bytes() == before
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(MAX_MTIME))  # the last second a reader takes
    assert main(["cvmfs", "publish", str(stratum), str(src), "--keys", str(keys), "-q"]) == 0
    assert _published_time(stratum) == MAX_MTIME


def test_tag_add_says_when_it_moves_a_tag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pr19d finding 8: `cvmfs tag add REPO frozen` moved an existing 'frozen' to the trunk and said only
    "tagged revision 4 (...) as frozen": what archivists pinned changed without a word."""
    import json

    keys, stratum, src = _created(tmp_path)
    assert (
        main(["cvmfs", "publish", str(stratum), str(src), "--keys", str(keys), "--tag", "frozen", "-q"]) == 0
    )
    (src / "f").write_text("new")
    assert main(["cvmfs", "publish", str(stratum), str(src), "--keys", str(keys), "-q"]) == 0
    capsys.readouterr()
    tag = ["cvmfs", "tag", "add", str(stratum), "frozen", "--keys", str(keys)]
    assert main(tag) == 0
    assert "as frozen (moved from revision 2, " in capsys.readouterr().out
    assert main([*tag, "--json"]) == 0  # the same revision again: nothing moved
    assert json.loads(capsys.readouterr().out)["moved_from"] is None


def test_publish_refuses_to_move_a_tag_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cvmfs publish --tag frozen` over an existing 'frozen' moved it without a word (note19): refused,
    naming the tag, the revision it names and the flag; --move-tag moves it."""
    keys, stratum, src = _created(tmp_path)
    publish = ["cvmfs", "publish", str(stratum), str(src), "--keys", str(keys), "--tag", "frozen", "-q"]
    assert main(publish) == 0
    (src / "f").write_text("new")
    capsys.readouterr()
    assert main(publish) != 0
    err = capsys.readouterr().err
    assert "tag 'frozen' already names revision 2 (" in err and "--move-tag" in err
    assert "Traceback" not in err
    assert _published_revision(stratum) == 2  # nothing published
    assert main([*publish, "--move-tag"]) == 0
    assert _published_revision(stratum) == 3
    assert main(["cvmfs", "publish", str(stratum), str(src), "--keys", str(keys), "--move-tag"]) == 2


def _created(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Keys, an empty repository made by ``cvmfs create`` and an empty source folder."""
    keys = tmp_path / "keys"
    generate_keys(FQRN).save(keys)
    stratum = tmp_path / "srv" / FQRN
    src = tmp_path / "src"
    src.mkdir()
    assert main(["cvmfs", "create", str(stratum), "--fqrn", FQRN, "--keys", str(keys), "-q"]) == 0
    return keys, stratum, src


def _published_revision(stratum: Path) -> int:
    from cernvm_build.cvmfs.manifest import parse

    return parse((stratum / ".cvmfspublished").read_bytes()).revision


def test_publish_with_a_tag_inflates_the_history_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tag check (is the name free?) and the new history both read the current history
    database: it was read and inflated twice per publish --tag; once now (a spy counts the reads)."""
    from cernvm_build.cvmfs import commit
    from cernvm_build.cvmfs import publish as publish_mod

    keys = generate_keys(FQRN)
    stratum = tmp_path / "srv" / FQRN
    src = tmp_path / "src"
    src.mkdir()
    create_repository(stratum, FQRN, keys)
    publish_tree(stratum, FQRN, keys, src, tag="first")
    reads: list[str] = []
    real = commit.read_object

    def spy(stratum: Path, name: str, suffix: str, what: str) -> bytes:
        if suffix == "H":
            reads.append(name)
        return real(stratum, name, suffix, what)

    for module in (commit, publish_mod):
        monkeypatch.setattr(module, "read_object", spy)
    (src / "f").write_text("new")
    publish_tree(stratum, FQRN, keys, src, tag="second")
    assert len(reads) == 1, reads
