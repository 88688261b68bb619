"""A source tree that changes under the publisher, or that a user or a package made oddly: nothing
outside the tree is ever read, nothing blocks, and each problem is one line naming the path."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import content as content_mod
from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs import stage as stage_mod
from cernvm_build.cvmfs.publish import add_tag, create_repository, publish_tree, remove_tag, resign_whitelist
from cernvm_build.cvmfs.repository import Repository
from cernvm_build.errors import CvmfsError, IntegrityError

from .helpers import FQRN


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a").write_bytes(b"inside....")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a").write_bytes(b"SECRET!!!!")  # the same size as d/a: a size check alone passes
    return src, outside


@pytest.mark.parametrize("swap", ["link", "fifo", "dir-link"])
def test_a_file_swapped_after_the_scan_is_never_read_outside_the_tree(
    swap: str,
    tmp_path: Path,
    stratum: Path,
    keyset: keymod.KeySet,
    reader: Callable[..., Repository],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between the scan and the read of d/a (the race window, made certain here): a link out of
    the tree put in its place was followed and the outside file published; a FIFO blocked the
    publish for ever; the directory above swapped for a link out read the outside file too."""
    src, outside = _tree(tmp_path)
    submit = content_mod.ContentStore.submit_file

    def swapped(self: content_mod.ContentStore, repo_path: str, fs_path: str, *rest: Any) -> None:
        if repo_path == "/d/a":
            if swap == "link":
                os.unlink(fs_path)
                os.symlink(outside / "a", fs_path)
            elif swap == "fifo":
                os.unlink(fs_path)
                os.mkfifo(fs_path)
            else:
                os.rename(src / "d", src / "d.old")
                os.symlink(outside, src / "d")
        submit(self, repo_path, fs_path, *rest)

    monkeypatch.setattr(content_mod.ContentStore, "submit_file", swapped)
    with pytest.raises(CvmfsError, match=r"/d/a: file changed while publishing") as e:
        publish_tree(stratum, FQRN, keyset, src)
    assert e.value.hint == "publish again when it is quiet"
    with reader(stratum) as repo:
        assert repo.revision == 1 and repo.lookup("/d") is None


def test_a_directory_swapped_for_a_link_after_the_scan_is_never_listed(
    tmp_path: Path,
    stratum: Path,
    keyset: keymod.KeySet,
    reader: Callable[..., Repository],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/d is seen as a directory when the root is listed, then swapped for a link to a folder
    outside before it is listed itself: that folder's files were published as /d's."""
    src, outside = _tree(tmp_path)
    put_many = stage_mod.Stage.put_many

    def swapping(self: stage_mod.Stage, batch: Any, *rest: Any, **kw: Any) -> Any:
        if any(e.path == "/d" for e in batch) and not (src / "d").is_symlink():
            os.rename(src / "d", src / "d.old")
            os.symlink(outside, src / "d")
        return put_many(self, batch, *rest, **kw)

    monkeypatch.setattr(stage_mod.Stage, "put_many", swapping)
    with pytest.raises(CvmfsError, match=r"src/d: directory changed while publishing"):
        publish_tree(stratum, FQRN, keyset, src)
    with reader(stratum) as repo:
        assert repo.revision == 1


def test_a_tag_of_a_nested_catalog_or_of_no_catalog_is_refused(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, reader: Callable[..., Repository]
) -> None:
    """``tag add --root-hash`` of a nested catalog's hash was signed as a tag every reader then
    called damaged ("root prefix is '/n'"); a mistyped hash was told "the repository is incomplete;
    restore it from a backup"."""
    src = tmp_path / "src"
    (src / "n").mkdir(parents=True)
    (src / "n" / ".cvmfscatalog").write_bytes(b"")
    (src / "n" / "f").write_text("x")
    publish_tree(stratum, FQRN, keyset, src)
    with reader(stratum) as repo:
        (nested,) = [c.name for c in repo.catalogs() if c.root_prefix == "/n"]
    before = (stratum / ".cvmfspublished").read_bytes()
    with pytest.raises(CvmfsError, match=r"is the nested catalog of /n, not a root catalog") as e:
        add_tag(stratum, FQRN, keyset, "v1", root_hash=nested)
    assert "cvmfs tag list" in (e.value.hint or "")
    with pytest.raises(CvmfsError, match=r"--root-hash 0{40}: no catalog of that hash in ") as e:
        add_tag(stratum, FQRN, keyset, "v1", root_hash="0" * 40)
    assert "backup" not in (e.value.hint or "")
    assert (stratum / ".cvmfspublished").read_bytes() == before


def test_a_whitelist_validity_out_of_range_is_one_line(
    tmp_path: Path,
    stratum: Path,
    keyset: keymod.KeySet,
    key_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``resign --days 3000000`` (past year 9999) was an OverflowError traceback;
    ``create --whitelist-days -5`` made a repository whose whitelist had already expired."""
    before = (stratum / ".cvmfswhitelist").read_bytes()
    with pytest.raises(SystemExit) as stop:
        main(["cvmfs", "resign", str(stratum), "--keys", str(key_dir), "--days", "3000000"])
    assert stop.value.code == 2
    assert "--days: '3000000': expected a whole number from 1 to 36500" in capsys.readouterr().err
    new = tmp_path / "new"
    args = ["cvmfs", "create", str(new), "--fqrn", FQRN, "--keys", str(key_dir), "--whitelist-days", "-5"]
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    assert "--whitelist-days: '-5'" in capsys.readouterr().err and not new.exists()
    with pytest.raises(CvmfsError, match=r"whitelist validity must be 1 to 36500 days, got 3000000"):
        resign_whitelist(stratum, FQRN, keyset, days=3_000_000)
    with pytest.raises(CvmfsError, match=r"got 0"):
        create_repository(new, FQRN, keyset, whitelist_days=0)
    assert (stratum / ".cvmfswhitelist").read_bytes() == before and not new.exists()


def test_publish_and_tags_need_no_master_key_which_may_live_offline(
    tmp_path: Path, stratum: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The publishing guide says the master key "is needed only to re-sign the whitelist, so it can
    live offline": publish and tag add refused a key directory without it ("key file missing",
    hint: make new keys with keygen, which would not be the repository's)."""
    offline = tmp_path / "publisher-keys"
    offline.mkdir()
    for ext in ("crt", "key"):
        (offline / f"{FQRN}.{ext}").write_bytes((key_dir / f"{FQRN}.{ext}").read_bytes())
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    assert main(["cvmfs", "publish", str(stratum), str(src), "--keys", str(offline), "-q"]) == 0
    assert main(["cvmfs", "tag", "add", str(stratum), "v1", "--keys", str(offline), "-q"]) == 0
    assert main(["cvmfs", "resign", str(stratum), "--keys", str(offline)]) == 5
    err = capsys.readouterr().err
    assert f"{FQRN}.masterkey: key file missing" in err and "keygen" not in err and "--master-key" in err
    master = ["--master-key", str(key_dir / f"{FQRN}.masterkey")]
    assert main(["cvmfs", "resign", str(stratum), "--keys", str(offline), *master, "-q"]) == 0


def test_a_private_key_others_may_read_is_warned_about(
    tmp_path: Path, stratum: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """keygen writes the private keys 0600; a copy (cp, a checkout) is often 0644, and nothing said so."""
    loose = tmp_path / "loose-keys"
    loose.mkdir()
    for ext in ("masterkey", "pub", "crt", "key"):
        (loose / f"{FQRN}.{ext}").write_bytes((key_dir / f"{FQRN}.{ext}").read_bytes())
        (loose / f"{FQRN}.{ext}").chmod(0o644)
    assert main(["cvmfs", "resign", str(stratum), "--keys", str(loose), "-q"]) == 0
    err = capsys.readouterr().err
    assert f"{FQRN}.key: private key readable by others (mode 0644); chmod 600 it" in err
    assert f"{FQRN}.masterkey: private key readable by others" in err and ".pub" not in err
    (loose / f"{FQRN}.key").chmod(0o600)
    (loose / f"{FQRN}.masterkey").chmod(0o600)
    assert main(["cvmfs", "tag", "add", str(stratum), "v1", "--keys", str(loose), "-q"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_wide_directory_is_staged_a_batch_at_a_time(
    tmp_path: Path,
    stratum: Path,
    keyset: keymod.KeySet,
    reader: Callable[..., Repository],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A directory of 200,000 files was listed whole and its entries all held until its end: the
    scan's peak RSS was 370 MB (40 MB in batches of 4,096). Here 1,000 files in batches of 100."""
    from cernvm_build.cvmfs import scan

    src = tmp_path / "src"
    (src / "wide").mkdir(parents=True)
    for i in range(1000):
        (src / "wide" / f"f{i}").write_text(str(i))
    monkeypatch.setattr(scan, "SCAN_BATCH", 100)
    sizes: list[int] = []
    put_many = stage_mod.Stage.put_many

    def counting(self: stage_mod.Stage, batch: Any, *rest: Any, **kw: Any) -> Any:
        sizes.append(len(batch))
        return put_many(self, batch, *rest, **kw)

    monkeypatch.setattr(stage_mod.Stage, "put_many", counting)
    publish_tree(stratum, FQRN, keyset, src)
    assert max(sizes) <= 100
    with reader(stratum) as repo:
        names = {e.path for e in repo.iterdir("/wide")}
        assert len(names) == 1000 and repo.read_bytes("/wide/f999") == b"999"


def test_a_source_named_by_a_link_to_a_directory_is_that_directory(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, reader: Callable[..., Repository]
) -> None:
    """``publish REPO /srv/sw`` where /srv/sw -> /data/sw was "not a directory"."""
    src = tmp_path / "data"
    src.mkdir()
    (src / "f").write_text("x")
    os.symlink("data", tmp_path / "link")
    publish_tree(stratum, FQRN, keyset, tmp_path / "link")
    with reader(stratum) as repo:
        assert repo.read_bytes("/f") == b"x"


def test_a_base_path_or_description_of_bytes_that_are_no_utf8_is_one_line(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet
) -> None:
    """``--base-path $'/a\\xff'`` and ``-m $'\\xff'`` (argv bytes that are no UTF-8 come as
    surrogates) were UnicodeEncodeError tracebacks from SQLite."""
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(CvmfsError, match=r"base path '/a\\udcff/b': file name is not valid UTF-8"):
        publish_tree(stratum, FQRN, keyset, src, base_path="/a\udcff/b")
    with pytest.raises(CvmfsError, match=r"tag description 'x\\udcff' is not valid UTF-8"):
        publish_tree(stratum, FQRN, keyset, src, tag="t1", description="x\udcff")
    with pytest.raises(CvmfsError, match=r"is not valid UTF-8"):
        add_tag(stratum, FQRN, keyset, "t2", description="\udcff")


def test_tag_names_hashes_and_timestamps_no_sqlite_can_take_are_one_line(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tag remove R $'\\xff'``, ``tag add R x --root-hash $'\\xff'`` (UnicodeEncodeError) and
    ``publish --timestamp 99999999999999999999`` (OverflowError) were tracebacks from SQLite."""
    with pytest.raises(CvmfsError, match=r"unknown tag '\\udcff'"):
        remove_tag(stratum, FQRN, keyset, "\udcff")
    with pytest.raises(CvmfsError, match=r"--root-hash '\\udcff' is not an object name"):
        add_tag(stratum, FQRN, keyset, "x", root_hash="\udcff")
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(SystemExit) as stop:
        main(["cvmfs", "publish", str(stratum), str(src), "--keys", str(key_dir), "--timestamp", "9" * 20])
    assert stop.value.code == 2 and "--timestamp: '99999999999999999999'" in capsys.readouterr().err


def test_resign_with_another_master_key_is_refused_unless_asked(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, reader: Callable[..., Repository]
) -> None:
    """A key directory with the repository's certificate but another master key (and that key's own
    .pub beside it) re-signed the whitelist without a word: every client, holding the repository's
    master public key, then refused the repository."""
    other = keymod.generate_keys(FQRN)
    mixed = keymod.KeySet(
        FQRN, other.master_key_pem, other.public_key_pem, keyset.cert_pem, keyset.cert_key_pem
    )
    before = (stratum / ".cvmfswhitelist").read_bytes()
    with pytest.raises(CvmfsError, match=r"the current whitelist is not signed by this master key") as e:
        resign_whitelist(stratum, FQRN, mixed)
    assert "--new-master-key" in (e.value.hint or "")
    assert (stratum / ".cvmfswhitelist").read_bytes() == before
    resign_whitelist(stratum, FQRN, keyset)  # the repository's own master key
    with reader(stratum) as repo:
        assert repo.revision == 1
    resign_whitelist(stratum, FQRN, mixed, new_master_key=True)  # a rotation, asked for
    resign_whitelist(stratum, FQRN, mixed)  # now the current one


@pytest.mark.parametrize("name", [".cvmfspublished", ".cvmfswhitelist"])
@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_a_signed_file_of_the_stratum_that_is_a_fifo_or_huge_is_one_line(
    name: str, kind: str, tmp_path: Path, stratum: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """publish read the stratum's manifest and whitelist with read_bytes: a FIFO there waited for
    ever (the CLI's name lookup too), a 3 GB one was read whole (3.1 GB RSS)."""
    (stratum / name).unlink()
    if kind == "fifo":
        os.mkfifo(stratum / name)
    else:
        with open(stratum / name, "wb") as f:
            f.truncate(3 << 30)  # sparse
    src = tmp_path / "src"
    src.mkdir()
    assert main(["cvmfs", "publish", str(stratum), str(src), "--keys", str(key_dir)]) == 5
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 2, err


def test_keygen_or_create_over_a_file_is_one_line(
    tmp_path: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``keygen --out FILE`` and ``create FILE`` (or a path below a file) were FileExistsError /
    NotADirectoryError tracebacks."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    for target in (afile, afile / "sub"):
        assert main(["cvmfs", "keygen", FQRN, "--out", str(target)]) == 5
        assert main(["cvmfs", "create", str(target), "--fqrn", FQRN, "--keys", str(key_dir)]) == 5
    err = capsys.readouterr().err
    assert err.count("cannot make the folder") == 4 and "Traceback" not in err


def test_re_publishing_a_wide_directory_holds_neither_listing_whole(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-publishing a directory of 200,000 files peaked at 259 MB (50 MB now): the previous
    revision's listing of it was read whole (to find unchanged files), the statistics held the old
    and the new listings as dictionaries, and the previous catalog was held stored and inflated. Now
    rows are looked up a scan batch at a time, the statistics merge two sorted cursors and the
    catalog is inflated a block at a time. Here 500, then 6,000 files in batches of 100: the traced
    peak of a re-publish does not grow with the directory (it grew by 4 MB; now by ~10 KB)."""
    import tracemalloc

    from cernvm_build.cvmfs import catalog_build, objwrite, previous, scan

    # every batch the publisher reads or writes a directory in (and the block a catalog is stored
    # and inflated in), small: what is left grows with the directory
    monkeypatch.setattr(scan, "SCAN_BATCH", 100)
    monkeypatch.setattr(stage_mod, "BATCH", 100)
    monkeypatch.setattr(catalog_build, "BATCH", 100)
    monkeypatch.setattr(objwrite, "BLOCK", 64 << 10)
    monkeypatch.setattr(previous, "_BLOCK", 64 << 10, raising=False)
    src = tmp_path / "src"
    wide = src / "wide"
    wide.mkdir(parents=True)

    def peak_of_republish(count: int) -> int:
        for i in range(count):
            (wide / f"a-file-with-a-long-name-{i:06d}").write_text(str(i))
        publish_tree(stratum, FQRN, keyset, src)
        os.utime(wide / "a-file-with-a-long-name-000001", (1, 1))  # one change
        tracemalloc.start()
        try:
            publish_tree(stratum, FQRN, keyset, src)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small = peak_of_republish(500)
    large = peak_of_republish(6000)
    assert large - small < 512 << 10, (small, large)


@pytest.mark.timeout(60)  # (without the check: read for hours)
def test_a_sparse_file_of_huge_apparent_size_is_refused_by_its_holes(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1 TiB file of one 4 KiB block (``truncate -s 1T``) was read whole, its holes compressed and
    hashed as zeros (hours; the real server does the same). Holes past ``--max-hole-bytes`` (64 GiB)
    are one line; a file of that size with no holes is not refused."""
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge", "wb") as f:
        f.write(b"x" * 4096)
        f.truncate(1 << 40)
    with pytest.raises(
        CvmfsError, match=r"huge: sparse file of 1024 GiB with \d+ KiB of holes, past the limit of 64 GiB"
    ):
        publish_tree(stratum, FQRN, keyset, src)
    (src / "huge").unlink()
    with open(src / "holes", "wb") as f:
        f.truncate(3 << 20)
    (src / "dense").write_bytes(b"y" * (3 << 20))
    args = ["cvmfs", "publish", str(stratum), str(src), "--keys", str(key_dir), "--max-hole-bytes", "1M"]
    assert main(args) == 5
    err = capsys.readouterr().err
    assert f"{src}/holes: sparse file of 3 MiB" in err and "--max-hole-bytes" in err and "dense" not in err, (
        err
    )
    (src / "holes").unlink()
    assert main([*args, "-q"]) == 0  # the dense file of the same size passes


def test_a_damaged_object_is_refused_before_any_of_it_is_inflated(tmp_path: Path) -> None:
    """rv24: a previous catalog is inflated a block at a time (cd654b5), and its hash was checked at
    the end: a damaged or replaced file (a zlib bomb under the catalog's name) was inflated whole onto
    the scratch, or into memory through read_object, before the hash refused it. Hashed first now."""
    import hashlib
    import zlib

    from cernvm_build.cvmfs import previous
    from cernvm_build.cvmfs.objects import object_path

    stratum = tmp_path / "stratum"
    bomb = zlib.compress(b"\0" * (8 << 20))
    name = "ab" + "0" * 38  # not the bomb's hash
    path = stratum / object_path(name, "C")
    path.parent.mkdir(parents=True)
    path.write_bytes(bomb)
    written: list[bytes] = []
    with pytest.raises(IntegrityError, match="does not match its hash"):
        previous._inflate_object(stratum, name, "C", "catalog /", written.append)
    assert written == []
    good = zlib.compress(b"x" * 3_000_000)
    name = hashlib.sha1(good).hexdigest()
    path = stratum / object_path(name, "C")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(good)
    assert previous.read_object(stratum, name, "C", "catalog /") == b"x" * 3_000_000
    path.write_bytes(good[:-10])  # a stream cut short: its hash says so first
    with pytest.raises(IntegrityError, match="does not match its hash"):
        previous.read_object(stratum, name, "C", "catalog /")


@pytest.mark.parametrize("stratum", ["S3://bucket/r", "s3:/bucket/r", "http://host/cvmfs/r"])
def test_a_mistyped_s3_url_makes_no_local_folder(
    stratum: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr28c: `cvmfs create S3://b/r` (or s3:/b/r, or an http URL) said "created ..." and exit 0: it made
    the local folder 'S3:' in the working directory (the mirror refuses the same URL)."""
    monkeypatch.chdir(tmp_path)
    assert main(["cvmfs", "keygen", FQRN, "--out", "keys", "-q"]) == 0
    assert main(["cvmfs", "create", stratum, "--fqrn", FQRN, "--keys", "keys", "--json"]) == 2
    assert "is not an s3:// URL" in json.loads(capsys.readouterr().out)["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]
    assert main(["cvmfs", "create", f"./{stratum}", "--fqrn", FQRN, "--keys", "keys", "-q"]) == 0  # said so


def test_create_and_publish_json_name_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr28c: every cvmfs --json result names its repository ('fqrn': info, verify, replicate, keygen)
    but create's and publish's."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    assert main(["cvmfs", "keygen", FQRN, "--out", "keys", "-q"]) == 0
    assert main(["cvmfs", "create", "srv", "--fqrn", FQRN, "--keys", "keys", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fqrn"] == FQRN
    assert main(["cvmfs", "publish", "srv", "src", "--keys", "keys", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fqrn"] == FQRN
