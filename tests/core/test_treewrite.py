"""The tree writer, fed crafted entry streams directly: hostile orders and names never write outside
the destination, never touch its parent, and dangerous files are opt-in and reported."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build.errors import CernVMError
from cernvm_build.fsutil import remove_tree
from cernvm_build.tree import BLOCK, CHAR, DIR, FIFO, FILE, SOCKET, SOCKET_REASON, SYMLINK, Entry, TreeReport
from cernvm_build.treewrite import DEVICES_REASON, HELD_DIRS, TreeWriter, write_tree

ROOT = os.geteuid() == 0
T = 1_500_000_000


class Stream:
    """A tree source that yields exactly the entries given, in the order given."""

    description = "crafted"

    def __init__(self, *items: tuple[Entry, bytes] | Entry) -> None:
        self.items = [it if isinstance(it, tuple) else (it, b"") for it in items]
        self.data = {id(e): d for e, d in self.items}

    def entries(self) -> Iterator[Entry]:
        for e, _ in self.items:
            yield e

    def open(self, entry: Entry):  # type: ignore[no-untyped-def]
        import io

        return io.BytesIO(self.data[id(entry)])


def d(path: str, mode: int = 0o755, **kw: object) -> Entry:
    return Entry(path=path, kind=DIR, mode=mode, mtime=T, **kw)  # type: ignore[arg-type]


def f(path: str, data: bytes = b"x", mode: int = 0o644, **kw: object) -> tuple[Entry, bytes]:
    return Entry(path=path, kind=FILE, mode=mode, size=len(data), mtime=T, **kw), data  # type: ignore[arg-type]


def ln(path: str, target: str) -> Entry:
    return Entry(path=path, kind=SYMLINK, mode=0o777, mtime=T, target=target)


def _stat(p: str | Path) -> tuple[int, int, int, int]:
    st = os.lstat(p)
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def snapshot(p: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every node under (and including) ``p``: mode, size, mtime_ns, ctime_ns."""
    out = {str(p): _stat(p)}
    for dirpath, dirnames, filenames in os.walk(p):
        for name in [*dirnames, *filenames]:
            out[os.path.join(dirpath, name)] = _stat(os.path.join(dirpath, name))
    return out


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(dest, canary): dest is an empty directory inside a parent that also holds a canary folder
    with a file; the parent, the canary and everything in it must never change."""
    parent = tmp_path / "parent"
    parent.mkdir()
    canary = parent / "canary"
    canary.mkdir()
    (canary / "victim").write_text("original\n")
    dest = parent / "dest"
    dest.mkdir()
    os.chmod(parent, 0o751)
    for p in (canary / "victim", canary, parent):
        os.utime(p, (T, T))
    before = snapshot(canary) | {"parent": _stat(parent)}
    yield dest, canary
    after = snapshot(canary) | {"parent": _stat(parent)}
    assert after == before, "something outside the destination changed"
    assert (canary / "victim").read_text() == "original\n"


def refused(dest: Path, *items: tuple[Entry, bytes] | Entry, match: str) -> CernVMError:
    with pytest.raises(CernVMError, match=match) as err:
        write_tree(Stream(*items), dest)
    assert "\n" not in str(err.value)
    return err.value


def test_symlink_then_directory_below_it_never_writes_through(world: tuple[Path, Path]) -> None:
    dest, canary = world
    refused(dest, ln("a", str(canary)), d("a/x"), match="not a directory written before it")
    refused(dest, ln("b", "../canary"), f("b/victim", b"pwned"), match="not a directory written before it")
    assert not (canary / "x").exists()


def test_symlink_then_same_name_is_a_duplicate_not_an_overwrite(world: tuple[Path, Path]) -> None:
    dest, canary = world
    refused(dest, ln("a", str(canary / "victim")), f("a", b"pwned"), match="appears twice")
    for i, later in enumerate((d("b"), ln("b", "/etc"))):
        target = dest / f"again{i}"
        target.mkdir()
        refused(target, ln("b", str(canary)), later, match="appears twice")
    assert os.readlink(dest / "a") == str(canary / "victim")


def test_file_then_file_and_directory_then_directory_duplicates(world: tuple[Path, Path]) -> None:
    dest, _ = world
    refused(dest, f("a", b"first"), f("a", b"second"), match="appears twice")
    assert (dest / "a").read_bytes() == b"first"
    other = dest / "more"
    other.mkdir()
    refused(other, d("x"), f("x/in"), d("x"), match="appears twice")


@pytest.mark.parametrize(
    "path", ["..", "../victim", "a/../../victim", ".", "a/./b", "", "a//b", "/abs", "a/", "nul\0name"]
)
def test_bad_names_are_refused(world: tuple[Path, Path], path: str) -> None:
    dest, _ = world
    items: list[tuple[Entry, bytes] | Entry] = [d("a")]
    if path == "":  # the root entry is only allowed first
        items.append(d(""))
    else:
        items.append(f(path, b"pwned"))
    refused(dest, *items, match="not allowed|contains|root of the tree|not a directory written")


def test_absolute_symlinks_are_written_verbatim_and_never_followed(world: tuple[Path, Path]) -> None:
    dest, canary = world
    res = write_tree(Stream(ln("etc", str(canary)), ln("rel", "../../canary/victim")), dest)
    assert os.readlink(dest / "etc") == str(canary) and res.entries == 2
    # writing "through" it afterwards, in any form, is refused
    for entry in (d("etc/x"), f("etc/victim", b"pwned"), f("etc/new", b"pwned", link_id=1)):
        again = dest / "again"
        again.mkdir()
        refused(again, ln("etc", str(canary)), entry, match="not a directory written before it")
        remove_tree(again)


def test_directory_finished_is_never_reopened_by_a_later_entry(world: tuple[Path, Path]) -> None:
    dest, _ = world
    refused(dest, d("a"), d("b"), f("a/late"), match="not a directory written before it")


def test_hard_links_only_to_files_written_in_this_tree(world: tuple[Path, Path]) -> None:
    dest, canary = world
    res = write_tree(Stream(d("bin"), f("bin/a", b"tool", link_id="g"), f("z", b"tool", link_id="g")), dest)
    a, z = os.stat(dest / "bin/a"), os.stat(dest / "z")
    assert (a.st_ino, a.st_nlink) == (z.st_ino, 2) and res.files == 1
    # someone swaps the first file for a symlink to the canary between the two entries: refused
    other = dest / "other"
    other.mkdir()
    w = TreeWriter(other, where="crafted")
    e, data = f("a", b"tool", link_id="h")
    pending = w.add(e)
    assert pending is not None
    pending.write(data)
    pending.finish()
    os.unlink(other / "a")
    os.symlink(canary / "victim", other / "a")
    with pytest.raises(CernVMError, match="hard-link target a is not the file written there"):
        w.add(f("b", b"tool", link_id="h")[0])
    w.abort()
    remove_tree(other)


def test_destination_parent_is_never_touched_and_root_metadata_lands_on_dest(
    world: tuple[Path, Path],
) -> None:
    dest, _ = world
    write_tree(Stream(d("", mode=0o555), d("ro", mode=0o500), f("ro/inside", b"data", mode=0o400)), dest)
    st = os.stat(dest)
    assert stat.S_IMODE(st.st_mode) == 0o555 and st.st_mtime_ns == T * 10**9
    assert stat.S_IMODE(os.stat(dest / "ro").st_mode) == 0o500
    assert os.stat(dest / "ro").st_mtime_ns == T * 10**9  # set after its child was written
    assert (dest / "ro" / "inside").read_bytes() == b"data"


def test_a_symlink_as_destination_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "link")
    with pytest.raises(CernVMError, match="cannot open the destination"):
        write_tree(Stream(f("a")), tmp_path / "link")
    assert os.listdir(tmp_path / "real") == []


def test_sockets_skipped_fifos_written(tmp_path: Path) -> None:
    sock = Entry(path="s", kind=SOCKET, mode=0o755, mtime=T)
    fifo = Entry(path="p", kind=FIFO, mode=0o640, mtime=T)
    res = write_tree(Stream(sock, fifo), tmp_path)
    assert res.report.skipped == [("s", SOCKET_REASON)]
    assert not os.path.lexists(tmp_path / "s")
    st = os.lstat(tmp_path / "p")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime_ns == T * 10**9


@pytest.mark.skipif(not ROOT, reason="device nodes need root")
def test_device_nodes_only_when_asked(tmp_path: Path) -> None:
    null = Entry(path="null", kind=CHAR, mode=0o666, mtime=T, rdev=(1, 3))
    sda = Entry(path="sda", kind=BLOCK, mode=0o660, mtime=T, rdev=(8, 0), gid=6)
    (tmp_path / "no").mkdir()
    res = write_tree(Stream(null, sda), tmp_path / "no")
    assert res.report.skipped == [("null", DEVICES_REASON), ("sda", DEVICES_REASON)]
    assert os.listdir(tmp_path / "no") == []
    (tmp_path / "yes").mkdir()
    res = write_tree(Stream(null, sda), tmp_path / "yes", devices=True)
    assert res.report.skipped == []
    st = os.lstat(tmp_path / "yes" / "null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3) and stat.S_IMODE(st.st_mode) == 0o666
    st = os.lstat(tmp_path / "yes" / "sda")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(8, 0) and st.st_gid == 6


def test_setuid_and_xattrs_are_kept_and_reported(tmp_path: Path) -> None:
    su = f("su", b"\x7fELF", mode=0o4755, uid=0, gid=0, xattrs={"user.origin": b"frozen\xff"})
    sg = f("sg", b"g", mode=0o2711, uid=1000, gid=1000)
    report = TreeReport()
    w = TreeWriter(tmp_path, where="crafted", report=report)
    for e, data in (su, sg):
        p = w.add(e)
        assert p is not None
        p.write(data)
        p.finish()
    w.close()
    assert stat.S_IMODE(os.stat(tmp_path / "su").st_mode) == 0o4755
    sg_st = os.stat(tmp_path / "sg")
    assert stat.S_IMODE(sg_st.st_mode) == 0o2711  # chown first: it would clear the bit afterwards
    if ROOT:
        assert (sg_st.st_uid, sg_st.st_gid) == (1000, 1000)
    try:
        assert os.getxattr(tmp_path / "su", "user.origin") == b"frozen\xff"
    except OSError:
        assert ("su", "xattr user.origin not set: Operation not supported") in report.skipped
    assert report.setid == [("su", 0o4755), ("sg", 0o2711)] and report.setid_count == 2
    assert report.xattrs == [("su", ["user.origin"])]
    assert report.summary() == "2 setuid/setgid kept, 1 with xattrs kept"


def test_deep_chain_bounded_descriptors_and_no_recursion(tmp_path: Path) -> None:
    depth = 1500
    names = ["d"] * depth

    def chain() -> Iterator[Entry]:
        for i in range(1, depth + 1):
            yield d("/".join(names[:i]), mode=0o555)
        yield Entry(path="/".join(names) + "/leaf", kind=FILE, mode=0o444, size=0, mtime=T)

    fds_before = len(os.listdir("/proc/self/fd"))
    peak = 0
    w = TreeWriter(tmp_path, where="deep")
    try:
        for e in chain():
            p = w.add(e)
            if p is not None:
                p.finish()
            peak = max(peak, len(os.listdir("/proc/self/fd")) - fds_before)
        w.close()
    except BaseException:
        w.abort()
        remove_tree(tmp_path)  # pytest's own clean-up recurses and cannot remove 1,500 levels
        raise
    assert peak <= HELD_DIRS + 3
    assert len(os.listdir("/proc/self/fd")) == fds_before
    deepest = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):  # walk down by descriptors: the path is longer than PATH_MAX
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=deepest)
            st = os.fstat(nxt)
            assert stat.S_IMODE(st.st_mode) == 0o555 and st.st_mtime_ns == T * 10**9
            os.close(deepest)
            deepest = nxt
        assert os.stat("leaf", dir_fd=deepest).st_size == 0
    finally:
        os.close(deepest)
        remove_tree(tmp_path)
    assert not tmp_path.exists()


def test_content_shorter_than_listed_is_an_error(tmp_path: Path) -> None:
    e = Entry(path="short", kind=FILE, mode=0o644, size=10, mtime=T)
    with pytest.raises(CernVMError, match="content of 2 bytes, the listing says 10"):
        write_tree(Stream((e, b"ab")), tmp_path)
