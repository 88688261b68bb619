"""Publish trees and tar streams, read them back with the reader, compare file for file."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.limits import MAX_TAG_TEXT
from cernvm_build.cvmfs.lock import RepositoryLocked
from cernvm_build.cvmfs.publish import (
    add_tag,
    create_repository,
    publish_tar,
    publish_tree,
    remove_tag,
    resign_whitelist,
)
from cernvm_build.cvmfs.repository import Repository
from cernvm_build.errors import CvmfsError, IntegrityError

from .helpers import FQRN, SMALL_CHUNKS, describe, make_sample_tree

pytestmark = pytest.mark.integration


def _catalog(stratum: Path, name: str, tmp: Path) -> sqlite3.Connection:
    db = tmp / f"{name}.db"
    db.write_bytes(zlib.decompress((stratum / "data" / name[:2] / (name[2:] + "C")).read_bytes()))
    return sqlite3.connect(db)


def test_round_trip_every_file_type(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, export: Callable[..., Path]
) -> None:
    src = make_sample_tree(tmp_path / "src")
    r = publish_tree(stratum, FQRN, keyset, src, chunking=SMALL_CHUNKS, tag="v1")
    assert r.revision == 2 and r.tag == "v1" and r.catalogs == 2
    out = export(stratum)
    assert describe(out) == describe(src)
    # a web server running as another user must be able to serve every object
    modes = {p.stat().st_mode & 0o777 for p in (stratum / "data").rglob("*") if p.is_file()}
    modes |= {(stratum / n).stat().st_mode & 0o777 for n in (".cvmfspublished", ".cvmfswhitelist")}
    assert modes == {0o644}


def test_catalog_structure(tmp_path: Path, stratum: Path, keyset: keymod.KeySet) -> None:
    src = make_sample_tree(tmp_path / "src")
    r = publish_tree(stratum, FQRN, keyset, src, chunking=SMALL_CHUNKS)
    root = _catalog(stratum, r.root_hash, tmp_path)
    props = dict(root.execute("SELECT key, value FROM properties"))
    assert props["schema"] == "2.5" and props["schema_revision"] == "7"
    assert props["revision"] == "2" and "root_prefix" not in props and props["TTL"] == "240"
    stats = dict(root.execute("SELECT counter, value FROM statistics"))
    assert len(stats) == 24
    ((nested_path, nested_hash, nested_size),) = root.execute("SELECT * FROM nested_catalogs").fetchall()
    assert nested_path == "/opt/sw"
    child = _catalog(stratum, nested_hash, tmp_path)
    assert dict(child.execute("SELECT key, value FROM properties"))["root_prefix"] == "/opt/sw"
    cstats = dict(child.execute("SELECT counter, value FROM statistics"))
    for k in ("regular", "dir", "chunked", "chunks", "file_size"):
        assert stats[f"subtree_{k}"] == cstats[f"self_{k}"] + cstats[f"subtree_{k}"]
    assert cstats["self_chunked"] == 2 and cstats["self_chunks"] >= 5  # big.bin, zeros
    flags = dict(root.execute("SELECT name, flags FROM catalog"))
    assert flags["sw"] == 3 and flags["alias"] == 12 and flags["fifo"] == 20 and flags["os-release"] == 4
    assert dict(child.execute("SELECT name, flags FROM catalog"))["big.bin"] == 68
    # hard links are grouped per directory, as the real server does: (group << 32) | 2 in /usr/bin,
    # the third link, in /etc, is an ordinary file there (cvmfs_swissknife check insists)
    links = dict(root.execute("SELECT name, hardlinks FROM catalog WHERE name LIKE 'tool1%'"))
    assert (
        links["tool1"] == links["tool1-hard"]
        and links["tool1"] & 0xFFFFFFFF == 2
        and links["tool1"] >> 32 >= 1
    )
    assert links["tool1-elsewhere"] == 1
    xattr = root.execute("SELECT xattr FROM catalog WHERE name = 'opaque'").fetchone()[0]
    assert xattr == b"\x01\x01\x16\x01trusted.overlay.opaquey"
    assert stats["self_xattr"] == 2 and stats["self_special"] == 2
    assert nested_size == (child.execute("PRAGMA page_count").fetchone()[0] * 4096)
    # the reflog lists every catalog, certificate and history written, and the manifest names it
    reflog = stratum / ".cvmfsreflog"
    refs = dict(sqlite3.connect(reflog).execute("SELECT hash, type FROM refs"))
    assert refs[r.root_hash] == 0 and refs[nested_hash] == 0 and sorted(set(refs.values())) == [0, 1, 2]
    manifest = (stratum / ".cvmfspublished").read_bytes()
    assert f"Y{hashlib.sha1(reflog.read_bytes()).hexdigest()}\n".encode() in manifest
    assert f"C{r.root_hash}\nB{root.execute('PRAGMA page_count').fetchone()[0] * 4096}\n".encode() in manifest


def test_same_input_gives_identical_bytes(tmp_path: Path, keyset: keymod.KeySet) -> None:
    src = make_sample_tree(tmp_path / "src")
    outputs = []
    for name in ("a", "b"):
        s = tmp_path / name
        create_repository(s, FQRN, keyset, timestamp=1_800_000_000)
        publish_tree(s, FQRN, keyset, src, chunking=SMALL_CHUNKS, timestamp=1_800_000_100, tag="t")
        files = {str(p.relative_to(s)): p.read_bytes() for p in sorted(s.rglob("*")) if p.is_file()}
        # stats/stats.db records when each publish ran (wall clock), as the server's does
        files = {k: v for k, v in files.items() if not k.startswith(("data/txn/", "stats/"))}
        outputs.append(files)
    assert outputs[0].keys() == outputs[1].keys()
    assert outputs[0] == outputs[1]


def test_incremental_publish_writes_only_changes(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, reader: Callable[..., Repository]
) -> None:
    src = make_sample_tree(tmp_path / "src")
    first = publish_tree(stratum, FQRN, keyset, src, chunking=SMALL_CHUNKS)
    (src / "etc" / "os-release").write_text("NAME=CernVM\nVERSION=6\n")
    (src / "usr" / "bin" / "tool4").unlink()
    (src / "etc" / "new").write_text("new file\n")
    second = publish_tree(stratum, FQRN, keyset, src, chunking=SMALL_CHUNKS)
    assert second.revision == first.revision + 1
    # two new contents + root catalog + history; the untouched nested catalog is reused by hash
    assert second.objects_written == 4
    assert second.catalogs_reused == 1
    with reader(stratum) as repo:
        assert repo.read_bytes("/etc/os-release") == b"NAME=CernVM\nVERSION=6\n"
        assert repo.lookup("/usr/bin/tool4") is None
        assert repo.read_bytes("/etc/new") == b"new file\n"
    with reader(stratum, tag="trunk-previous") as old:
        assert old.read_bytes("/etc/os-release") == b"NAME=CernVM\nVERSION=5\n"
        assert old.lookup("/usr/bin/tool4") is not None
    # S and T grow: the previous revision's own time again is moved on by one second
    third = publish_tree(stratum, FQRN, keyset, src, timestamp=second.timestamp, chunking=SMALL_CHUNKS)
    assert third.revision == second.revision + 1 and third.timestamp == second.timestamp + 1


def test_timestamp_before_the_previous_revision_is_refused(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_sample_tree(tmp_path / "src")
    first = publish_tree(stratum, FQRN, keyset, src, timestamp=1_900_000_000)
    manifest = (stratum / ".cvmfspublished").read_bytes()
    with pytest.raises(
        CvmfsError, match=r"timestamp 1899999999 \(2030-03-17T17:46:39Z\) is earlier than revision 2"
    ):
        publish_tree(stratum, FQRN, keyset, src, timestamp=first.timestamp - 1)
    with pytest.raises(CvmfsError, match="is earlier than revision 2"):
        add_tag(stratum, FQRN, keyset, "late", timestamp=first.timestamp - 1)
    assert (stratum / ".cvmfspublished").read_bytes() == manifest  # nothing published
    argv = ["cvmfs", "publish", str(stratum), str(src), "--keys", str(key_dir), "--timestamp", "1000"]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.count("\n") <= 2 and "timestamp 1000 (1970-01-01T00:16:40Z) is earlier than revision 2" in err
    assert f"at or after {first.timestamp}" in err and "Traceback" not in err


def test_base_path_replaces_only_that_subtree(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, export: Callable[..., Path]
) -> None:
    src = make_sample_tree(tmp_path / "src")
    publish_tree(stratum, FQRN, keyset, src, chunking=SMALL_CHUNKS)
    layer = tmp_path / "layer"
    (layer / "bin").mkdir(parents=True)
    (layer / ".cvmfscatalog").write_bytes(b"")
    (layer / "bin" / "sh").write_text("#!/bin/sh\n")
    r = publish_tree(stratum, FQRN, keyset, layer, base_path="/.flat/ab/abcd")
    assert r.catalogs == 3 and r.catalogs_reused == 0
    out = export(stratum)
    want = describe(src)
    got = describe(out)
    flat = {k: v for k, v in got.items() if k.startswith("/.flat")}
    assert {k: v for k, v in got.items() if not k.startswith("/.flat")} == want
    assert set(flat) == {"/.flat", "/.flat/ab", "/.flat/ab/abcd", "/.flat/ab/abcd/.cvmfscatalog",
                         "/.flat/ab/abcd/bin", "/.flat/ab/abcd/bin/sh"}  # fmt: skip
    # a second layer next to it: the first one's nested catalog is kept by hash, not rebuilt
    (layer / "bin" / "sh").write_text("#!/bin/bash\n")
    r2 = publish_tree(stratum, FQRN, keyset, layer, base_path="/.flat/cd/cdef")
    assert r2.catalogs == 4
    out2 = export(stratum)
    assert (out2 / ".flat/ab/abcd/bin/sh").read_text() == "#!/bin/sh\n"
    assert (out2 / ".flat/cd/cdef/bin/sh").read_text() == "#!/bin/bash\n"
    assert (out2 / "opt/sw/lib/libsw.so").read_bytes() == (src / "opt/sw/lib/libsw.so").read_bytes()
    with pytest.raises(CvmfsError, match="/usr/abslink is not a directory"):
        publish_tree(stratum, FQRN, keyset, layer, base_path="/usr/abslink/x")


def test_tar_stream_round_trip(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, export: Callable[..., Path]
) -> None:
    src = make_sample_tree(tmp_path / "src")
    buf = io.BytesIO()

    def with_xattrs(info: tarfile.TarInfo) -> tarfile.TarInfo:
        # tarfile does not read xattrs itself; GNU tar --xattrs writes these PAX records
        path = src / info.name
        for name in os.listxattr(path, follow_symlinks=False):
            value = os.getxattr(path, name, follow_symlinks=False)
            info.pax_headers[f"SCHILY.xattr.{name}"] = value.decode()
        return info

    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.add(src, arcname=".", filter=with_xattrs)
    buf.seek(0)
    r = publish_tar(stratum, FQRN, keyset, buf, chunking=SMALL_CHUNKS)
    assert r.files == 15
    out = export(stratum)
    # tar keeps whole-second mtimes for files written without PAX time fields
    assert describe(out, mtimes=False) == describe(src, mtimes=False)


def test_tar_with_missing_dirs_and_bad_paths(tmp_path: Path, stratum: Path, keyset: keymod.KeySet) -> None:
    def tar_of(name: str, data: bytes) -> io.BytesIO:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        buf.seek(0)
        return buf

    publish_tar(stratum, FQRN, keyset, tar_of("a/b/c.txt", b"deep"))
    with pytest.raises(CvmfsError, match="leaves the archive"):
        publish_tar(stratum, FQRN, keyset, tar_of("../evil", b"x"))
    with pytest.raises(CvmfsError, match=r"tar stream: (not a tar archive|tar stream is damaged)"):
        publish_tar(stratum, FQRN, keyset, io.BytesIO(b"this is not a tar" * 100))


@pytest.mark.parametrize(
    ("members", "what"),
    [
        ([("a", tarfile.SYMTYPE, "/etc"), ("a/passwd", tarfile.REGTYPE, "")], "a symbolic link"),
        ([("x", tarfile.REGTYPE, ""), ("x/y", tarfile.REGTYPE, "")], "not a directory"),
        (
            [("d/f", tarfile.REGTYPE, ""), ("d/g", tarfile.REGTYPE, ""), ("d", tarfile.SYMTYPE, "e")],
            "a symbolic",
        ),
    ],
)
def test_tar_member_below_a_non_directory_is_one_error(
    stratum: Path, keyset: keymod.KeySet, members: list[tuple[str, bytes, str]], what: str
) -> None:
    """audit13c finding 11: a member below a symlink or a file (either order) was dropped without a
    word (exit 0); now one error names it and how many more, and no revision is made."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.size = 1 if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(b"x") if kind == tarfile.REGTYPE else None)
    buf.seek(0)
    before = (stratum / ".cvmfspublished").read_bytes()
    first = members[1][0] if len(members) == 2 else "d/f"
    with pytest.raises(
        CvmfsError, match=rf"tar member '/{first}' is below '/{first.split('/')[0]}', which is {what}"
    ):
        publish_tar(stratum, FQRN, keyset, buf)
    assert (stratum / ".cvmfspublished").read_bytes() == before
    if len(members) == 3:
        with pytest.raises(CvmfsError, match=r"\(and 1 more below non-directories\)"):
            buf.seek(0)
            publish_tar(stratum, FQRN, keyset, buf)


def test_a_source_deeper_than_path_max_is_one_short_line(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, reader: Callable[..., Repository]
) -> None:
    """audit13c finding 12: 40 nested 200-byte names (8 KB, past PATH_MAX) gave one 4 KB line with
    the whole path; now a short line with the path's head and tail and a hint to publish it as a
    tar stream, which the test then follows (GNU tar walks by descriptors)."""
    src = tmp_path / "src"
    src.mkdir()
    fd = os.open(src, os.O_RDONLY)
    for _ in range(40):
        os.mkdir("d" * 200, dir_fd=fd)
        deeper = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(leaf, b"deep\n")
    os.close(leaf)
    os.close(fd)
    with pytest.raises(CvmfsError, match="longer than the system allows") as e:
        publish_tree(stratum, FQRN, keyset, src)
    assert len(str(e.value)) < 400 and "tar stream" in (e.value.hint or "")
    tar = subprocess.run(["tar", "-C", str(src), "-c", "."], capture_output=True, check=True).stdout
    publish_tar(stratum, FQRN, keyset, io.BytesIO(tar))
    with reader(stratum) as repo:
        assert repo.read_bytes("".join("/" + "d" * 200 for _ in range(40)) + "/leaf") == b"deep\n"


def test_tags_add_remove_and_pin(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, reader: Callable[..., Repository]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("one")
    r1 = publish_tree(stratum, FQRN, keyset, src, tag="first", description="the first")
    (src / "f").write_text("two")
    publish_tree(stratum, FQRN, keyset, src, auto_tag=True)
    add_tag(stratum, FQRN, keyset, "pinned", root_hash=r1.root_hash, description="pin")
    add_tag(stratum, FQRN, keyset, "head")
    with reader(stratum) as repo:
        tags = {t.name: t for t in repo.tags()}
        assert {"trunk", "trunk-previous", "first", "pinned", "head"} <= set(tags)
        assert any(n.startswith("generic-") for n in tags)
        assert tags["pinned"].root_hash == r1.root_hash and tags["first"].description == "the first"
    with reader(stratum, tag="pinned") as repo:
        assert repo.read_bytes("/f") == b"one"
    with reader(stratum, tag="head") as repo:
        assert repo.read_bytes("/f") == b"two"
    remove_tag(stratum, FQRN, keyset, "first")
    with reader(stratum) as repo:
        assert "first" not in {t.name for t in repo.tags()}
    with pytest.raises(CvmfsError, match="unknown tag 'nope'"):
        remove_tag(stratum, FQRN, keyset, "nope")
    with pytest.raises(CvmfsError, match="cannot be removed"):
        remove_tag(stratum, FQRN, keyset, "trunk")
    with pytest.raises(CvmfsError, match="invalid tag name"):
        add_tag(stratum, FQRN, keyset, "bad name")


def test_whitelist_expiry_and_resign(
    tmp_path: Path, keyset: keymod.KeySet, reader: Callable[..., Repository]
) -> None:
    s = tmp_path / "old"
    create_repository(s, FQRN, keyset, timestamp=int(time.time()) - 40 * 86400)
    with pytest.raises(IntegrityError, match="expired"):
        reader(s)
    resign_whitelist(s, FQRN, keyset, days=7)
    with reader(s) as repo:
        assert repo.revision == 1
    with pytest.raises(CvmfsError, match="must be 1 to 36500 days"):
        resign_whitelist(s, FQRN, keyset, days=0)


def test_wrong_keys_and_names_are_refused(tmp_path: Path, stratum: Path, keyset: keymod.KeySet) -> None:
    src = tmp_path / "src"
    src.mkdir()
    other = keymod.generate_keys(FQRN)
    with pytest.raises(CvmfsError, match="not in the whitelist"):
        publish_tree(stratum, FQRN, other, src)
    with pytest.raises(CvmfsError, match=r"repository is 'pub\.cernvm\.test', not 'x\.cernvm\.test'"):
        publish_tree(stratum, "x.cernvm.test", keyset, src)
    with pytest.raises(CvmfsError, match="cannot read source: No such file"):
        publish_tree(stratum, FQRN, keyset, src / "missing")
    with pytest.raises(CvmfsError, match="not a directory"):
        publish_tree(stratum, FQRN, keyset, stratum / ".cvmfspublished")
    with pytest.raises(CvmfsError, match="already exists"):
        create_repository(stratum, FQRN, keyset)
    with pytest.raises(CvmfsError, match="not a repository"):
        publish_tree(tmp_path / "nothing", FQRN, keyset, src)
    with pytest.raises(CvmfsError, match="must not contain"):
        publish_tree(stratum, FQRN, keyset, src, base_path="/a/../b")
    bad = src / "bad-\udcff-name"
    bad.write_text("x")
    with pytest.raises(CvmfsError, match="not valid UTF-8"):
        publish_tree(stratum, FQRN, keyset, src)


def test_second_publisher_is_told_who_holds_the_lock(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(stratum)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        with pytest.raises(RepositoryLocked, match=f"locked by another publisher \\(pid {holder.pid} "):
            publish_tree(stratum, FQRN, keyset, src)
    finally:
        holder.kill()
        holder.wait()
    publish_tree(stratum, FQRN, keyset, src)  # the kernel released the dead holder's lock


HOLD_LOCK = """
import sys, time
from pathlib import Path
from cernvm_build.cvmfs.lock import publish_lock
with publish_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_special_file_modes_are_kept(tmp_path: Path, stratum: Path, keyset: keymod.KeySet) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(src / "null", 0o666)
    r = publish_tree(stratum, FQRN, keyset, src, normalize_owner=True)
    root = _catalog(stratum, r.root_hash, tmp_path)
    size, mode, flags = root.execute("SELECT size, mode, flags FROM catalog WHERE name = 'null'").fetchone()
    assert (size, mode, flags) == (os.makedev(1, 3), stat.S_IFCHR | 0o666, 20)


def test_progress_reports_bytes_up_to_the_total(tmp_path: Path, stratum: Path, keyset: keymod.KeySet) -> None:
    src = make_sample_tree(tmp_path / "src")
    calls: list[tuple[int, int]] = []
    publish_tree(
        stratum, FQRN, keyset, src, chunking=SMALL_CHUNKS, progress=lambda d, t: calls.append((d, t))
    )
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1] == (total, total)


def test_damaged_previous_revision_is_reported_not_reused(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet
) -> None:
    src = make_sample_tree(tmp_path / "src")
    r = publish_tree(stratum, FQRN, keyset, src)
    obj = stratum / "data" / r.root_hash[:2] / (r.root_hash[2:] + "C")
    obj.write_bytes(obj.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(IntegrityError, match=f"object {r.root_hash}C does not match its hash"):
        publish_tree(stratum, FQRN, keyset, src)


def test_a_sparse_tar_from_gnu_tar_publishes_at_its_real_size(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, reader: Callable[..., Repository]
) -> None:
    """``tar --sparse`` stores only a file's data: the 100 MB file below is a 10 KiB tar. Its stored
    data is bounded by the stream, its holes by their own cap (they were once refused as more than
    the stream can hold)."""
    src = tmp_path / "src"
    src.mkdir()
    with (src / "sp").open("wb") as f:
        f.seek(50 << 20)
        f.write(b"hello")
        f.truncate(100 << 20)
    tar = tmp_path / "s.tar"
    subprocess.run(["tar", "--sparse", "-C", str(src), "-cf", str(tar), "sp"], check=True)
    assert tar.stat().st_size <= 20 << 10
    with tar.open("rb") as f:
        publish_tar(stratum, FQRN, keyset, f)
    with reader(stratum) as repo:
        data = repo.read_bytes("/sp")
    assert len(data) == 100 << 20 and data[50 << 20 : (50 << 20) + 5] == b"hello"
    assert data.count(0) == len(data) - 5


def test_a_tag_description_the_reader_would_refuse_is_refused_before_publishing(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, reader: Callable[..., Repository]
) -> None:
    """The reader refuses a history value over MAX_TAG_TEXT (and with it the whole tag list): the
    publisher wrote one without a word, after which `cvmfs tag list` of the repository failed."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("one")
    before = (stratum / ".cvmfspublished").read_bytes()
    with pytest.raises(CvmfsError, match=r"tag description of 65,537 bytes: longer than 64 KiB"):
        publish_tree(stratum, FQRN, keyset, src, tag="t", description="d" * (MAX_TAG_TEXT + 1))
    assert (stratum / ".cvmfspublished").read_bytes() == before  # nothing published
    publish_tree(stratum, FQRN, keyset, src, tag="t", description="d" * MAX_TAG_TEXT)
    with pytest.raises(CvmfsError, match="tag description of 65,538 bytes"):
        add_tag(
            stratum, FQRN, keyset, "u", description="é" * (MAX_TAG_TEXT // 2 + 1)
        )  # bytes, not characters
    with reader(stratum) as repo:
        assert {"t"} <= {t.name for t in repo.tags()}
        assert "u" not in {t.name for t in repo.tags()}


def test_a_create_that_waited_for_another_create_of_its_stratum_is_refused(
    tmp_path: Path, keyset: keymod.KeySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ``cvmfs create`` of one new stratum at once, the second's "already exists" check before the
    first's create and its lock after it: it replaced the first's repository with its own keys, and
    both said "created" (the first one's public key then verified nothing). Checked again under the lock."""
    import contextlib

    from cernvm_build.cvmfs import publish as pub

    stratum = tmp_path / "stratum"
    first_keys = keymod.generate_keys(FQRN)
    real = pub._session

    @contextlib.contextmanager
    def after_another_create(where: Path, what: str) -> Iterator[object]:
        monkeypatch.setattr(pub, "_session", real)
        create_repository(where, FQRN, first_keys, timestamp=int(time.time()))  # held the lock first
        with real(where, what) as held:
            yield held

    monkeypatch.setattr(pub, "_session", after_another_create)
    with pytest.raises(CvmfsError, match="a repository already exists here"):
        create_repository(stratum, FQRN, keyset, timestamp=int(time.time()))
    whitelist = (stratum / ".cvmfswhitelist").read_bytes().decode(errors="replace")
    assert first_keys.fingerprint() in whitelist and keyset.fingerprint() not in whitelist  # the first's
