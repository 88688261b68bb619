"""Reading what the real cvmfs_server wrote: every fixture property, all snapshot selectors."""

from __future__ import annotations

import gc
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.cvmfs import SnapshotSpec, open_repository
from cernvm_build.cvmfs.catalog import DirEntry
from cernvm_build.cvmfs.repository import Repository
from cernvm_build.errors import CvmfsError

from .conftest import FQRN, ROOT_REV1, ROOT_REV2, Fixture

# What the real server recorded differs from the listings in two documented ways (see the report
# in docs/ARCHITECTURE.md "cvmfs reader"): its sync did not pick up the same-size, same-mtime rewrite
# of /etc/redhat-release in revision 2, and it stored the hard-link pair as two ordinary files.
REV1_REDHAT_SHA1 = "6097635ee133d8fda814d10636feedd19511dfcb"


def open_fx(fx: Fixture, **kw: Any) -> Repository:
    return open_repository(fx.repo, public_keys=[fx.pub], **kw)


def check_listing(repo: Repository, listing: dict[str, Any]) -> None:
    entries = {e.path: e for e in repo.walk("/")}
    assert set(entries) - {"/"} == set(listing)
    for path, want in listing.items():
        e = entries[path]
        assert oct(stat.S_IMODE(e.mode)) == want["mode"], path
        assert want["type"] == ("directory" if e.is_dir else "symlink" if e.is_symlink else "file"), path
        if want["type"] == "symlink":
            assert e.symlink == want["target"] == repo.readlink(path)
        if want["type"] == "file":
            data = repo.read(path)
            assert len(data) == want["size"] == e.size, path
            sha1 = hashlib.sha1(data).hexdigest()
            if path == "/etc/redhat-release" and repo.revision == 2:
                assert sha1 == REV1_REDHAT_SHA1  # what the real server stored
            else:
                assert sha1 == want["sha1"], path


@pytest.mark.parametrize(
    ("snapshot", "revision", "root", "tag"),
    [
        (None, 2, ROOT_REV2, None),
        (SnapshotSpec(tag="slc4-frozen"), 1, ROOT_REV1, "slc4-frozen"),
        (SnapshotSpec(tag="slc4-update"), 2, ROOT_REV2, "slc4-update"),
        (SnapshotSpec(root_hash=ROOT_REV1), 1, ROOT_REV1, "slc4-frozen"),
    ],
)
def test_snapshots_match_the_listings(
    fx: Fixture, snapshot: SnapshotSpec | None, revision: int, root: str, tag: str | None
) -> None:
    with open_fx(fx, snapshot=snapshot) as repo:
        assert (repo.fqrn, repo.revision, repo.root_hash) == (FQRN, revision, root)
        assert repo.tag == tag or (
            snapshot and snapshot.root_hash and repo.tag in ("slc4-frozen", "trunk-previous")
        )
        check_listing(repo, fx.listing(revision))


def test_date_selects_newest_tag_at_or_before(fx: Fixture) -> None:
    with open_fx(fx) as repo:
        tags = {t.name: t for t in repo.tags()}
    assert set(tags) == {"trunk", "trunk-previous", "slc4-frozen", "slc4-update"}
    assert tags["slc4-frozen"].description == "first freeze" and tags["slc4-frozen"].revision == 1
    assert tags["slc4-update"].description == "second revision" and tags["slc4-update"].revision == 2
    import time

    def iso(ts: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))

    t1, t2 = tags["slc4-frozen"].timestamp, tags["slc4-update"].timestamp
    assert t1 < t2
    with open_fx(fx, snapshot=SnapshotSpec(date=iso(t1))) as repo:
        assert repo.revision == 1
    with open_fx(fx, snapshot=SnapshotSpec(date=iso(t2))) as repo:
        assert repo.revision == 2
    with pytest.raises(CvmfsError, match="no tagged revision at or before"):
        open_fx(fx, snapshot=SnapshotSpec(date=iso(t1 - 1)))


def test_revision_differences(fx: Fixture) -> None:
    with open_fx(fx, snapshot=SnapshotSpec(tag="slc4-frozen")) as r1, open_fx(fx) as r2:
        assert r1.lookup("/usr/bin/tool5") is not None and r2.lookup("/usr/bin/tool5") is None
        assert r1.lookup("/etc/new-in-rev2") is None and r2.read("/etc/new-in-rev2") == b"added\n"


def test_tree_features(fx: Fixture) -> None:
    with open_fx(fx) as repo:
        root = repo.stat("/")
        assert root.is_dir and root.path == "/" and root.inode == 1
        # nested catalog at /opt/sw, entered transparently
        sw = repo.stat("/opt/sw")
        assert (
            sw.catalog_prefix == "/opt/sw" and repo.stat("/opt/sw/lib/libsw0.so").catalog_prefix == "/opt/sw"
        )
        assert repo.stat("/opt").catalog_prefix == ""
        assert [c.root_prefix for c in repo.catalogs()] == ["", "/opt/sw"]
        # names with spaces and non-ASCII characters
        names = [e.name for e in repo.listdir("/usr/share")]
        assert "ünïcode dir" in names and names == sorted(names)
        assert repo.stat("/usr/share/ünïcode dir/file with spaces.txt").is_file
        # symlinks: relative, absolute, to a directory
        assert repo.readlink("/usr/bin/dirlink") == "../lib/python"
        assert repo.readlink("/usr/bin/abslink").startswith("/cvmfs/other.repo/")
        # executables, empty file
        assert repo.stat("/usr/bin/tool1").mode & 0o111
        assert repo.read("/etc/empty.conf") == b""
        with pytest.raises(CvmfsError, match="ENOENT"):
            repo.stat("/nope")
        with pytest.raises(CvmfsError, match="ENOTDIR"):
            repo.listdir("/etc/empty.conf")


def test_walk_is_depth_first_sorted_parents_first(fx: Fixture) -> None:
    with open_fx(fx) as repo:
        paths = [e.path for e in repo.walk("/")]
    assert paths[0] == "/"
    seen: set[str] = set()
    for p in paths[1:]:
        parent = p.rsplit("/", 1)[0] or "/"
        assert parent in seen or parent == "/", p
        seen.add(p)
    assert paths.index("/opt/sw/lib") < paths.index("/opt/sw/lib/libsw0.so") < paths.index("/usr")


def test_chunked_file_reads_by_range(fx: Fixture) -> None:
    with open_fx(fx) as repo:
        big = repo.stat("/opt/sw/big-data.txt")
        assert big.size == 37_200_000 and len(big.chunks) == 3 and big.is_chunked
        assert sum(c.size for c in big.chunks) == big.size
        whole = repo.read(big)
        assert hashlib.sha1(whole).hexdigest() == fx.listing(2)["/opt/sw/big-data.txt"]["sha1"]
        edge = big.chunks[1].offset
        assert repo.read(big, edge - 5, 10) == whole[edge - 5 : edge + 5]
        assert repo.read(big, big.size - 3, 100) == whole[-3:]
        assert repo.read(big, big.size + 10, 5) == b""
        with repo.open("/opt/sw/big-data.txt") as f:
            f.seek(20_000_000)
            assert f.read(64) == whole[20_000_000:20_000_064]
            f.seek(-4, 2)
            assert f.read() == whole[-4:]


def test_verify_walks_everything(fx: Fixture) -> None:
    with open_fx(fx) as repo:
        report = repo.verify()
    assert report.ok, report.errors
    assert report.catalogs == 2 and report.entries == 81 and report.files == 66
    assert report.tags == 4  # each tag's root catalog is there


def test_manifest_fields_are_exposed(fx: Fixture) -> None:
    with open_fx(fx, snapshot=SnapshotSpec(tag="slc4-frozen")) as repo:
        assert repo.manifest is not None and repo.manifest.revision == 2  # the manifest is the trunk's
        assert repo.revision == 1 and repo.whitelist is not None and repo.whitelist.fqrn == FQRN


def test_unknown_tag_is_one_clear_error(fx: Fixture) -> None:
    with pytest.raises(CvmfsError) as e:
        open_fx(fx, snapshot=SnapshotSpec(tag="no-such-tag"))
    assert "no tag named 'no-such-tag'" in str(e.value) and FQRN in str(e.value)
    assert e.value.hint and "slc4-frozen" in e.value.hint


def test_fixture_layout_and_fqrn_detection(fx: Fixture) -> None:
    with open_repository(fx.root, public_keys=[fx.pub]) as repo:  # <fqrn>/ holding repo/ and keys/
        assert repo.fqrn == FQRN
    with pytest.raises(CvmfsError, match="no public key"):
        open_repository(fx.repo)
    with open_repository(fx.repo, verify=False) as repo:
        assert repo.revision == 2


def test_local_directory_named_otherwise_takes_the_manifest_name(fx: Fixture, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "stratum"
    shutil.copytree(fx.repo, other)
    with open_repository(other, public_keys=[fx.pub]) as repo:
        assert repo.fqrn == FQRN


def test_every_entry_keeps_its_file_kind_from_its_row(fx: Fixture) -> None:
    """``DirEntry.kind`` (set once when the row is read, tested by the hot paths instead of the
    mode) is the mode's file type for every kind of entry in the fixture."""
    with open_fx(fx) as repo:
        kinds = set()
        for e in repo.walk("/"):
            assert e.kind == stat.S_IFMT(e.mode), e.path
            kinds.add(e.kind)
            assert (e.is_dir, e.is_file, e.is_symlink) == (
                stat.S_ISDIR(e.mode),
                stat.S_ISREG(e.mode),
                stat.S_ISLNK(e.mode),
            )
    assert {stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK} <= kinds


def test_rows_make_entries_with_every_field_as_the_class_would(fx: Fixture) -> None:
    """Rows become ``DirEntry`` without its ``__init__`` (``Catalog._entry``, for speed): every field
    is set, and each entry equals the one the class itself makes from the same values."""
    names = set(DirEntry.FIELDS)
    with open_fx(fx) as repo:
        entries = [repo.stat("/"), *repo.walk("/")]
        for e in entries:
            assert names <= set(vars(e)), (e.path, names - set(vars(e)))
            same = DirEntry(**{n: getattr(e, n) for n in names})
            assert same == e and hash(same) == hash(e) and same.inode == e.inode, e.path
        assert {e.name for e in entries} - {""} == {e.path.rsplit("/", 1)[1] for e in entries} - {""}


def test_a_directory_is_listed_in_one_query_up_to_a_limit(fx: Fixture) -> None:
    """``Repository.listing``: the entries ``iterdir`` streams, as a list, or None when the directory
    holds more than the limit (then it is streamed)."""
    with open_fx(fx) as repo:
        for d in [repo.stat("/"), *(e for e in repo.walk("/") if e.is_dir)]:
            streamed = list(repo.iterdir(d))
            assert repo.listing(d, len(streamed)) == streamed
            assert repo.listing(d.path, len(streamed) + 5) == streamed
            if streamed:
                assert repo.listing(d, len(streamed) - 1) is None
        with pytest.raises(CvmfsError, match="not a directory"):
            repo.listing(next(e for e in repo.walk("/") if e.is_file), 10)


def test_a_name_that_is_not_utf8_is_listed_looked_up_and_read(tmp_path: Path) -> None:
    """A path is bytes to CernVM-FS (the real server stores what the file system had): a Latin-1 name
    is listed, looked up and read — its md5 key is that of its own bytes — and not an error."""
    import stat as st

    from tests.support import hostile

    repo = hostile.copy_repo(hostile.publish_base(tmp_path / "base"), tmp_path / "r")
    with hostile.Editor(repo) as ed:
        db = ed.catalog()
        digest = bytes.fromhex(ed.put(b"latin\n"))
        name = b"caf\xe9".decode("utf-8", "surrogateescape")
        mode = st.S_IFREG | 0o644
        hostile.add_row(db, "/dir", "x", mode=mode, size=6, digest=digest, key_path=f"/dir/{name}")
        db.execute("UPDATE catalog SET name = CAST(? AS TEXT) WHERE name = 'x'", (b"caf\xe9",))
    with open_repository(repo.stratum, public_keys=[repo.pub]) as r:
        assert name in {e.name for e in r.iterdir("/dir")}
        listed = r.listing("/dir", 100)
        assert listed is not None and name in {e.name for e in listed}
        entry = r.lookup(f"/dir/{name}")
        # a LOOKUP's inode (from the query's md5) is the one the listing gives (``path_inode``)
        assert entry is not None and entry.inode == next(e for e in listed if e.name == name).inode
        assert r.read(entry) == b"latin\n"


def test_a_repository_never_closed_leaves_no_scratch_folder(fx: Fixture) -> None:
    repo = open_fx(fx)
    assert repo.read("/etc/redhat-release")  # catalogs opened: spilled into the store's scratch
    scratch = repo.store.scratch()
    assert scratch.is_dir() and any(scratch.iterdir())
    pid = os.fork()
    if pid == 0:  # a forked child whose exit runs the store's finalizer leaves the parent's folder alone
        cleanup = repo.store._cleanup
        assert cleanup is not None
        cleanup()
        os._exit(0)
    os.waitpid(pid, 0)
    assert scratch.is_dir()
    del repo
    gc.collect()
    assert not scratch.exists()


def test_a_catalog_is_read_through_a_memory_map(fx: Fixture, tmp_path: Path) -> None:
    """SQLite maps the catalog file (issue 13: a booting guest's random lookups fault 128 KiB in at a
    time, not a 4 KiB pread each): after a lookup the process's maps list the file it opened."""
    with open_fx(fx, cache_dir=tmp_path / "cache", inflated=True) as repo:
        assert repo.lookup("/etc") is not None
        catalogs = {c.path for c in repo.catalogs()}
        with open("/proc/self/maps") as f:
            mapped = {line.split(maxsplit=5)[-1].strip() for line in f if line.count(" ") >= 5}
    assert catalogs and {str(p) for p in catalogs} <= mapped
