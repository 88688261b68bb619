"""Hostile packages against the Debian tree's host-side steps (unpack, overlay, scrub): whatever a
package's symlinks, hard links or member names say, nothing is written, removed or linked outside the
tree; a refusal is one line naming the package and member. Real .deb files (tar + ar), run as root."""

from __future__ import annotations

import gzip
import io
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_build import cachekey, debpkg, fsutil
from cernvm_build.errors import BuildError, CvmfsError, IntegrityError
from cernvm_build.osbuild import debian

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking keeps owners (root)")


def _deb(where: Path, name: str, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> debpkg.DebPackage:
    d = where / name
    d.mkdir()
    (d / "debian-binary").write_text("2.0\n")
    for part, items in (
        ("control", [("./control", f"Package: {name}\nVersion: 1\n".encode())]),
        ("data", members),
    ):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
            for m in items:
                if isinstance(m, tuple):
                    ti = tarfile.TarInfo(m[0])
                    ti.size, ti.mode = len(m[1]), 0o644
                    tf.addfile(ti, io.BytesIO(m[1]))
                else:
                    tf.addfile(m)
        (d / f"{part}.tar.gz").write_bytes(buf.getvalue())
    path = where / f"{name}.deb"
    subprocess.run(["ar", "rc", path, "debian-binary", "control.tar.gz", "data.tar.gz"], cwd=d, check=True)
    return debpkg.DebPackage(name, "1", "all", path, "")


def _entry(name: str, kind: bytes, link: str = "", mode: int = 0o755) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode = kind, link, mode
    return ti


def _owned(ti: tarfile.TarInfo, uid: int) -> tarfile.TarInfo:
    ti.uid = uid  # pr17c finding 9: chown's OverflowError was a traceback
    return ti


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"  # a stand-in for the host's /etc
    out.mkdir()
    (out / "secret").write_text("host secret\n")
    return out


def test_symlinks_lead_into_the_tree_never_out(tmp_path: Path, outside: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    up = "../" * (len(tree.parts) + 2)
    links = _deb(tmp_path, "links", [
        _entry("./etc/", tarfile.DIRTYPE),
        _entry("./usr/share/abs", tarfile.SYMTYPE, "/etc"),  # chroot-style: the tree's own etc
        _entry("./usr/share/rel", tarfile.SYMTYPE, f"{up}etc"),  # '..' stops at the tree's top
        _entry("./usr/share/host", tarfile.SYMTYPE, str(outside)),  # names a host folder
    ])  # fmt: skip
    through = _deb(tmp_path, "through", [
        ("./usr/share/abs/by-abs", b"1\n"),
        ("./usr/share/rel/by-rel", b"2\n"),
        _entry("./usr/share/hl", tarfile.LNKTYPE, "usr/share/abs/by-abs"),
        ("./usr/share/host", b"a file replaces the symlink, never writes through it\n"),
    ])  # fmt: skip
    debian._unpack(tree, [links, through])
    assert sorted(os.listdir(outside)) == ["secret"] and (outside / "secret").read_text() == "host secret\n"
    assert (tree / "etc/by-abs").read_text() == "1\n" and (tree / "etc/by-rel").read_text() == "2\n"
    assert (tree / "usr/share/hl").stat().st_ino == (tree / "etc/by-abs").stat().st_ino
    assert not (tree / "usr/share/host").is_symlink()
    assert os.readlink(tree / "bin") == "usr/bin" and (tree / "tmp").stat().st_mode & 0o7777 == 0o1777


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([("./usr/share/host/pwned", b"x")], "nor a symlink to one inside the tree"),
        ([_entry("./usr/share/host/", tarfile.DIRTYPE)], "nor a symlink to one inside the tree"),
        (
            [_entry("./usr/share/hl", tarfile.LNKTYPE, "usr/share/host/secret")],
            "target usr/share/host/secret is not in",
        ),
        ([_entry("./usr/share/hl", tarfile.LNKTYPE, "../../secret")], "hard link's target"),
        ([("../../../pwned", b"x")], "leaves the tree"),
        ([("/pwned", b"x")], "leaves the tree"),
        ([_entry("./dev/kmem", tarfile.CHRTYPE, mode=0o666)], "device node"),
        ([_owned(_entry("./usr/share/u", tarfile.DIRTYPE), 1 << 40)], r"owner id 1099511627776:0 is out of"),
        ([_entry("./", tarfile.SYMTYPE, "/")], "the tree's root can only be a directory"),
        (
            [_entry("./usr/share/x/", tarfile.DIRTYPE), ("./usr/share/x/y", b"y"), ("./usr/share/x", b"x")],
            "replace a directory that is not empty, which dpkg refuses too",
        ),
    ],
    ids=[
        "file-through-host-link",
        "dir-through-host-link",
        "hardlink-through",
        "hardlink-dotdot",
        "dotdot",
        "abs",
        "dev",
        "uid-out-of-range",
        "root-symlink",
        "file-over-dir",
    ],
)
def test_a_member_that_would_leave_the_tree_is_refused_in_one_line(
    tmp_path: Path, outside: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], why: str
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    host = _deb(tmp_path, "host-link", [_entry("./usr/share/host", tarfile.SYMTYPE, str(outside))])
    evil = _deb(tmp_path, "evil", members)
    with pytest.raises(IntegrityError, match=r"^package evil \(evil.deb\): member '[^']+': ") as e:
        debian._unpack(tree, [host, evil])
    assert why in str(e.value) and "\n" not in str(e.value)
    assert sorted(os.listdir(outside)) == ["secret"] and (outside / "secret").read_text() == "host secret\n"
    assert not any(p.name == "pwned" for p in tmp_path.rglob("*"))


def test_scrub_never_follows_a_symlink_out(tmp_path: Path, outside: Path) -> None:
    (outside / "ssh").mkdir()
    (outside / "ssh/ssh_host_ed25519_key").write_text("HOST KEY\n")
    (outside / "machine-id").write_text("0123456789abcdef\n")
    (outside / "shadow").write_text("root:$6$hash:19000:0:99999:7:::\n")
    (outside / "log").mkdir()
    (outside / "log/dpkg.log").write_text("host log\n")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "var").mkdir()
    for name in ("ssh", "machine-id", "shadow"):
        (tree / "etc" / name).symlink_to(outside / name)
    (tree / "var/log").symlink_to(outside / "log")
    (tree / "etc/shadow-").write_text("root:*:19000:0:99999:7:::\n")
    debian._scrub(tree, 86400 * 20000)
    assert (outside / "ssh/ssh_host_ed25519_key").read_text() == "HOST KEY\n"
    assert (outside / "machine-id").read_text() == "0123456789abcdef\n"
    assert (outside / "shadow").read_text() == "root:$6$hash:19000:0:99999:7:::\n"
    assert (outside / "log/dpkg.log").read_text() == "host log\n"
    # the tree's own: machine-id an empty file (not the link), shadow's change day set
    assert not (tree / "etc/machine-id").is_symlink() and (tree / "etc/machine-id").read_text() == ""
    assert (tree / "etc/shadow-").read_text() == "root:*:20000:0:99999:7:::\n"


def test_a_package_name_is_never_a_path(tmp_path: Path) -> None:
    for name, version in (("../../../../tmp/x", "1"), ("ok", "1/../../x"), ("ok", "x:1")):
        with pytest.raises(IntegrityError, match="is not a Debian package"):
            debpkg.fetch_verified(name, version, "all", "0" * 64, tmp_path, offline=True)
    assert list(tmp_path.iterdir()) == []


def test_a_directory_member_keeps_an_existing_directory_as_it_is(tmp_path: Path) -> None:
    """As dpkg: a package's ``./`` or ``x/`` (through ``x -> /etc``) changes neither the tree's root
    nor the tree's /etc (audit13d finding 9); a new directory gets the member's owner and mode."""
    tree = tmp_path / "tree"
    tree.mkdir(mode=0o755)
    base = _deb(tmp_path, "base", [_entry("./etc/", tarfile.DIRTYPE)])
    members = [_entry("./", tarfile.DIRTYPE, mode=0o777), _entry("./usr/share/x", tarfile.SYMTYPE, "/etc")]
    members += [
        _entry("./usr/share/x/", tarfile.DIRTYPE, mode=0o777),
        _entry("./new/", tarfile.DIRTYPE, mode=0o750),
    ]
    for m in members:
        m.uid = 1234
    debian._unpack(tree, [base, _deb(tmp_path, "evil", members)])
    for path in (tree, tree / "etc"):
        st = path.stat()
        assert (st.st_mode & 0o7777, st.st_uid) == (0o755, 0), path
    st = (tree / "new").stat()
    assert (st.st_mode & 0o7777, st.st_uid) == (0o750, 1234)


def test_a_hard_link_to_a_missing_target_makes_nothing(tmp_path: Path) -> None:
    """Refused before its parent folders (or the target's) are made (audit13d finding 9)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    evil = _deb(tmp_path, "evil", [_entry("./made/here/hl", tarfile.LNKTYPE, "missing/dir/file")])
    with pytest.raises(IntegrityError, match=r"^package evil \(evil.deb\): member '[^']+': the hard link's"):
        debian._unpack(tree, [evil])
    assert not (tree / "made").exists() and not (tree / "missing").exists()


@pytest.mark.parametrize("name", ["shadow", "shadow-"])
def test_scrub_refuses_a_fifo_in_one_line(tmp_path: Path, name: str) -> None:
    """A FIFO a package leaves at etc/shadow does not block the scrub (audit13d finding 5)."""
    import threading

    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    os.mkfifo(tree / "etc" / name)
    got: list[BaseException | None] = []

    def scrub() -> None:
        try:
            debian._scrub(tree, 86400 * 20000)
            got.append(None)
        except BaseException as e:  # handed to the test's thread
            got.append(e)

    t = threading.Thread(target=scrub, daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():  # blocked in open(): a writer lets it go, so the test ends either way
        os.close(os.open(tree / "etc" / name, os.O_WRONLY | os.O_NONBLOCK))
        t.join()
        pytest.fail("the scrub blocked on a FIFO")
    assert isinstance(got[0], IntegrityError), got
    assert f"/etc/{name}: not a regular file" in str(got[0]) and "\n" not in str(got[0])


def test_the_root_and_the_skeleton_come_out_0755_whatever_mkdtemp_and_the_umask(tmp_path: Path) -> None:
    """The tree's root is mkdtemp's (0700) and a package's ``./`` keeps it (as dpkg): the skeleton
    sets it 0755 root:root, or no non-root process could traverse ``/`` (r15 finding 1). Directories
    made as a member's missing parents are 0755 too, under any umask."""
    tree = tmp_path / "tree"
    tree.mkdir(mode=0o700)
    base = _deb(tmp_path, "base", [
        _entry("./", tarfile.DIRTYPE),
        _entry("./usr/", tarfile.DIRTYPE),
        _entry("./etc/", tarfile.DIRTYPE),
        ("./etc/deep/er/file", b"x"),
    ])  # fmt: skip
    old = os.umask(0o077)
    try:
        debian._unpack(tree, [base])
    finally:
        os.umask(old)
    for rel in ("", "usr", "usr/bin", "usr/lib64", "etc", "etc/deep", "etc/deep/er", "var", "var/lib/dpkg"):
        st = (tree / rel).stat()
        assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == (oct(0o755), 0, 0), rel


def test_a_deep_member_is_no_recursion_error(tmp_path: Path) -> None:
    """An 800-byte ``a/a/…/x`` (under PATH_MAX) is unpacked: missing parents are made in a loop."""
    tree = tmp_path / "tree"
    tree.mkdir()
    deep = "a/" * 400 + "x"
    debian._unpack(tree, [_deb(tmp_path, "deep", [("./" + deep, b"deep\n")])])
    assert (tree / deep).read_text() == "deep\n"


def test_without_openat2_the_build_stops_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel older than 5.6 or a seccomp profile without openat2 (ENOSYS here: an unknown system
    call number) is a BuildError naming the need, not an OSError on the first path (r15 finding 3)."""
    from cernvm_build.errors import BuildError
    from cernvm_build.osbuild import inroot

    monkeypatch.setattr(inroot, "_SYS_OPENAT2", 9999)
    with pytest.raises(BuildError, match=r"needs Linux >= 5\.6 \(openat2\)"):
        debian._unpack(tmp_path, [])


def test_our_files_over_a_package_s_file_are_refused_in_one_line(tmp_path: Path) -> None:
    """The overlay needs a folder where a package left a file: one line naming the path (r15 finding 3)."""
    tree, ours = tmp_path / "tree", tmp_path / "ours"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/cloud").write_text("a file\n")
    (ours / "etc/cloud").mkdir(parents=True)
    (ours / "etc/cloud/x.cfg").write_text("x\n")
    with pytest.raises(IntegrityError, match=r": /etc/cloud: .*neither a directory") as e:
        debian._copy_in(tree, [(ours, "")])
    assert "\n" not in str(e.value)


def test_openat2_eagain_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """openat2(2): RESOLVE_IN_ROOT returns EAGAIN when a rename or mount races a '..' step, and
    asks the caller to retry (r15 finding 4). The race is injected: two EAGAINs, then the real call."""
    import ctypes
    import errno

    from cernvm_build.osbuild import inroot

    real, calls = inroot._libc, []

    class Racy:
        def syscall(self, *args: object) -> int:
            calls.append(1)
            if len(calls) in (2, 3):  # the first is Root's probe
                ctypes.set_errno(errno.EAGAIN)
                return -1
            return int(real.syscall(*args))

    monkeypatch.setattr(inroot, "_libc", Racy())
    (tmp_path / "d").mkdir()
    with inroot.Root(tmp_path) as root:
        os.close(root.open("d", os.O_PATH))
    assert len(calls) == 4


def test_a_deb_dpkg_deb_cannot_read_is_dpkg_deb_s_error(tmp_path: Path) -> None:
    """Not tar's 'empty file' after it with 'not installable as shipped' (r15 finding 7)."""
    path = tmp_path / "broken.deb"
    path.write_bytes(b"!<arch>\nnot really a package\n")
    broken = debpkg.DebPackage("broken", "1", "all", path, "")
    (tmp_path / "tree").mkdir()
    with pytest.raises(
        IntegrityError, match=r"^package broken \(broken.deb\): dpkg-deb --fsys-tarfile failed: "
    ) as e:
        debian._unpack(tmp_path / "tree", [broken])
    assert "delete it from the cache" in (e.value.hint or "") and "\n" not in str(e.value)


def test_without_dpkg_deb_the_unpack_is_a_tool_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dpkg-deb through ``proc.which``: a missing tool names its package, no FileNotFoundError
    traceback (r15 finding 7). Missing is simulated: the lookup finds nothing."""
    from cernvm_build import proc
    from cernvm_build.errors import ToolError

    deb = _deb(tmp_path, "plain", [("./usr/share/x", b"x")])
    monkeypatch.setattr(proc.shutil, "which", lambda *a, **k: None)
    (tmp_path / "tree").mkdir()
    with pytest.raises(ToolError, match="required tool 'dpkg-deb' is not installed"):
        debian._unpack(tmp_path / "tree", [deb])


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (
            lambda t: (t / "var/lib/dpkg/status").mkdir(parents=True),
            "/var/lib/dpkg/status: not a regular file",
        ),
        (lambda t: (t / ".debs/left-behind").write_text("x\n"), "/.debs: Directory not empty"),
    ],
    ids=["status-is-a-directory", "debs-not-empty"],
)
def test_install_s_reads_in_the_tree_fail_in_one_line(
    tmp_path: Path, make: Callable[[Path], object], why: str
) -> None:
    """What dpkg and the maintainer scripts left is read through ``_in_root``: an OSError on it is
    one line naming the path (sr_osb "noted, not changed"), not a traceback."""
    tree = tmp_path / "tree"
    (tree / ".debs").mkdir(parents=True)
    make(tree)
    with pytest.raises(IntegrityError, match=f"^{tree}: {why}$") as e:
        debian._check_installed(tree, 1)
    assert "not kept" in (e.value.hint or "")


def test_install_refuses_a_mount_point_a_package_replaced(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for d in ("dev", ".debs"):
        (tree / d).mkdir(parents=True)
    (tree / "proc").symlink_to("/proc")
    with pytest.raises(IntegrityError, match=r"/proc is not a directory \(a package replaced it\)$"):
        debian._install(tree, tmp_path, [], 0, None)


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_our_files_get_fixed_modes_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """The overlay is copied in 0644 (0755 when executable) whatever mode the checkout gave it: the
    cache key hashes bytes and the executable bit, so nothing else may reach the tree (r15 finding 9)."""
    old = os.umask(umask)
    try:
        ours = tmp_path / "ours"
        (ours / "etc/d").mkdir(parents=True)
        (ours / "etc/d/conf").write_text("c\n")
        (ours / "etc/d/prog").write_text("#!/bin/sh\n")
        os.chmod(ours / "etc/d/prog", 0o777 & ~umask | 0o100)  # a checkout makes it executable
        tree = tmp_path / "tree"
        tree.mkdir()
        debian._copy_in(tree, [(ours, "")])
    finally:
        os.umask(old)
    modes = {p: (tree / p).stat().st_mode & 0o7777 for p in ("etc", "etc/d", "etc/d/conf", "etc/d/prog")}
    assert modes == {"etc": 0o755, "etc/d": 0o755, "etc/d/conf": 0o644, "etc/d/prog": 0o755}


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE])
def test_a_huge_extended_header_is_refused_before_it_is_read(tmp_path: Path, kind: bytes) -> None:
    """A GNU long-name or PAX header declaring more than any name needs (1 GiB took a 1 MB .deb and
    was read into memory whole: MemoryError, pr19b finding 2): refused at its header, one line."""
    from cernvm_build.cvmfs.limits import MAX_TAR_HEADER_BYTES

    size = MAX_TAR_HEADER_BYTES + 512
    head = tarfile.TarInfo("././@LongLink")
    head.type, head.size = kind, size
    raw = head.tobuf(format=tarfile.GNU_FORMAT if kind == tarfile.GNUTYPE_LONGNAME else tarfile.USTAR_FORMAT)
    records = b"a" * size if kind == tarfile.GNUTYPE_LONGNAME else (b"9 a=bcd\n" * (size // 8 + 1))[:size]
    huge = tarfile.TarInfo("./huge")
    deb = _deb(tmp_path, "huge", [])
    # the data archive by hand: tarfile writes no header of our choosing
    d = tmp_path / "huge"
    with gzip.open(d / "data.tar.gz", "wb") as f:
        f.write(raw + records + huge.tobuf() + b"\0" * 1024)
    deb.path.unlink()
    subprocess.run(
        ["ar", "rc", deb.path, "debian-binary", "control.tar.gz", "data.tar.gz"], cwd=d, check=True
    )
    tree = tmp_path / "tree"
    tree.mkdir()
    with pytest.raises(CvmfsError, match=r"^package huge \(huge.deb\): tar .* header .* declares \d+ bytes"):
        debian._unpack(tree, [deb])


def test_a_sparse_member_is_refused_not_written_out(tmp_path: Path) -> None:
    """A GNU sparse member (``tar -S``): a 500-byte .deb whose 10 GiB hole tarfile wrote out as
    zeros (pr19b finding 3); dpkg has no such member type. Refused before anything is written."""
    deb = _deb(tmp_path, "sparse", [])
    d, src = tmp_path / "sparse", tmp_path / "src"
    src.mkdir()
    with (src / "big").open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["tar", "-C", src, "--format=gnu", "-S", "-czf", d / "data.tar.gz", "./big"], check=True)
    deb.path.unlink()
    subprocess.run(
        ["ar", "rc", deb.path, "debian-binary", "control.tar.gz", "data.tar.gz"], cwd=d, check=True
    )
    tree = tmp_path / "tree"
    tree.mkdir()
    with pytest.raises(
        IntegrityError, match=r"^package sparse \(sparse.deb\): member './big': a sparse member"
    ):
        debian._unpack(tree, [deb])
    assert not (tree / "big").exists()


def test_out_never_replaces_a_folder_that_holds_files(tmp_path: Path) -> None:
    """``os debian12 --out DIR`` replaced DIR whole: an existing folder's files were deleted (pr19b
    finding 7). Refused before anything is built (the CLI) and in the copy itself; a new or empty
    folder takes the copy."""
    src = tmp_path / "tree"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "os-release").write_text("ID=debian\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work\n")
    with pytest.raises(BuildError, match=r"mine: already exists and is not an empty directory"):
        debian.copy_tree(src, mine)
    proc = subprocess.run(
        [sys.executable, "-m", "cernvm_build.cli.main", "os", "debian12", "--out", mine],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == BuildError.exit_code and "--out: " in proc.stderr.splitlines()[0]
    assert "Traceback" not in proc.stderr and (mine / "thesis.txt").read_text() == "years of work\n"
    (tmp_path / "empty").mkdir()
    for new in (tmp_path / "new", tmp_path / "empty"):
        debian.copy_tree(src, new)
        assert (new / "etc" / "os-release").read_text() == "ID=debian\n"


def test_a_second_run_naming_the_same_out_is_refused_naming_the_first(tmp_path: Path) -> None:
    """Two ``os debian12 --out DIR`` at once both found DIR empty, and the second's copy replaced the
    first's whole. The first holds DIR from its check to the end of its copy; the second is refused
    before it builds anything, naming the first's pid; once the first is done, DIR takes one copy."""
    src = tmp_path / "tree"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "os-release").write_text("ID=debian\n")
    dest = tmp_path / "rootfs"
    with debian.out_folder(dest):  # the first run, between its check and its copy
        proc = subprocess.run(
            [sys.executable, "-m", "cernvm_build.cli.main", "os", "debian12", "--out", dest],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == BuildError.exit_code, proc.stderr
        assert proc.stderr.startswith(
            f"error: --out: {dest}: another run is making its copy there (pid {os.getpid()} "
        ), proc.stderr
        debian.copy_tree(src, dest)
    assert (dest / "etc" / "os-release").read_text() == "ID=debian\n"
    assert sorted(os.listdir(tmp_path)) == ["rootfs", "tree"]  # the lock file is gone
    with pytest.raises(BuildError, match="rootfs: already exists"), debian.out_folder(dest):
        pass


def test_a_killed_install_s_log_is_reclaimed_with_its_tree(tmp_path: Path) -> None:
    """A build killed while dpkg ran left ``..debian12-<key>.<pid>.<rnd>.tmp.log`` in the cache for
    ever (pr19b finding 11): the log is named as a temporary of the build, reclaimed with the tree."""
    dest = tmp_path / "debian12-0123456789abcdef01234567"
    made = subprocess.run(  # a process that has ended: its temporaries are stale
        [
            sys.executable,
            "-c",
            "import sys, tempfile; from pathlib import Path; from cernvm_build.fsutil import temp_prefix;"
            "from cernvm_build.osbuild import debian; d = Path(sys.argv[1]);"
            "t = Path(tempfile.mkdtemp(prefix=temp_prefix(d), suffix='.tmp', dir=d.parent));"
            "debian.install_log(t).write_bytes(b'dpkg output'); print(t)",
            dest,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [Path(made).name, Path(made).name[:-4] + "log.tmp"]
    )
    fsutil.reclaim_stale(dest)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["a-file/x", "/proc/x"])
def test_out_where_no_folder_can_be_made_is_refused_before_the_build(tmp_path: Path, where: str) -> None:
    """``--out`` below a file, or in /proc: a FileExistsError/FileNotFoundError traceback after the
    minutes-long build (pr19b finding 16); one line naming --out, before it."""
    (tmp_path / "a-file").write_text("x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cernvm_build.cli.main", "os", "debian12", "--out", where],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == BuildError.exit_code, proc.stderr
    assert proc.stderr.startswith(f"error: --out: {where}: cannot make this folder: ")
    assert "Traceback" not in proc.stderr and sorted(os.listdir(tmp_path)) == ["a-file"]


def test_a_marker_without_its_tree_is_not_a_reused_tree(tmp_path: Path) -> None:
    """Keeping one tree per release removed the others but not their markers: building those inputs
    again said "reused" for a folder that was gone, for ever (pr19b finding 18)."""
    old, new = tmp_path / "debian12-aaaa", tmp_path / "debian12-bbbb"
    for tree, key in ((old, "a" * 64), (new, "b" * 64)):
        (tree / "etc").mkdir(parents=True)
        cachekey.write_marker(tmp_path / f".{tree.name}.json", key, {"packages": 1})
    running = tmp_path / f".debian12-cccc.{os.getpid()}.xyz.tmp"  # a running build's temporary: kept
    running.mkdir()
    assert debian.reusable(old, "a" * 64) and not debian.reusable(old, "b" * 64)
    debian.keep_only(new, "12")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".debian12-bbbb.json", running.name, new.name]
    assert not debian.reusable(old, "a" * 64) and debian.reusable(new, "b" * 64)
    fsutil.remove_tree(new)  # by hand: its marker stays, and says nothing any more
    assert not debian.reusable(new, "b" * 64)


def test_a_killed_build_of_older_inputs_is_reclaimed_by_the_next_build(tmp_path: Path) -> None:
    """A build SIGKILLed while dpkg ran left ``.debian12-<key A>.<pid>.<rnd>.tmp`` (and its log); only a
    build of the same key A reclaimed it, and the archive moves on: the next build (key B) kept it for
    ever (pr19e finding 1: 680 MB of two such half trees in a real cache)."""
    old, new = tmp_path / "debian12-aaaa", tmp_path / "debian12-bbbb"
    proc = subprocess.run(  # a build of key A killed with SIGKILL in the middle of its tree
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from pathlib import Path; from cernvm_build.fsutil import atomic_dir;"
            "from cernvm_build.osbuild import debian\n"
            "with atomic_dir(Path(sys.argv[1])) as t:\n"
            "    (t / 'etc').mkdir(); debian.install_log(t).write_bytes(b'dpkg output')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)",
            old,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".debian12-aaaa.")]) == 2
    (new / "etc").mkdir(parents=True)  # key B built
    debian.keep_only(new, "12")
    assert sorted(p.name for p in tmp_path.iterdir()) == [new.name]


def test_a_download_killed_in_apt_get_is_reclaimed_by_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr19e finding 5: a package download SIGKILLed while apt-get ran left ``.dl-<rnd>/`` in the
    package cache for ever (no pid in its name: no run could tell it from a running one's)."""
    import hashlib

    cache = tmp_path / "debs"
    want = hashlib.sha256(b"deb").hexdigest()
    killed = subprocess.run(  # apt-get "killed": the process dies inside the download
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from pathlib import Path; from cernvm_build import debpkg\n"
            "def apt(cmd, cwd):\n"
            "    (cwd / 'half.deb').write_bytes(b'de'); os.kill(os.getpid(), signal.SIGKILL)\n"
            "debpkg.run = apt\n"
            "debpkg.fetch_verified('pkg', '1.0', 'amd64', sys.argv[2], Path(sys.argv[1]))",
            cache,
            want,
        ],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list(cache.iterdir())) == 1

    def apt(cmd: list[str], cwd: Path) -> None:
        (cwd / "pkg_1.0_amd64.deb").write_bytes(b"deb")

    monkeypatch.setattr(debpkg, "run", apt)
    got = debpkg.fetch_verified("pkg", "1.0", "amd64", want, cache)
    assert [p.name for p in cache.iterdir()] == [got.path.name]


def test_a_tree_a_publish_reads_is_kept_by_a_build_of_other_inputs(tmp_path: Path) -> None:
    """A Debian build of other inputs removed the tree a concurrent publish read (note19): a reader
    (another process) holds it, the build keeps it and names the reader's pid; once the reader is
    done, the next build removes it. A reader of a tree that went gets one line, no traceback."""
    old, new = tmp_path / "debian12-aaaa", tmp_path / "debian12-bbbb"
    for tree, key in ((old, "a" * 64), (new, "b" * 64)):
        (tree / "etc").mkdir(parents=True)
        cachekey.write_marker(tmp_path / f".{tree.name}.json", key, {"packages": 1})
    reader = subprocess.Popen(  # a publish reading the old tree: holds it until told to stop
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from cernvm_build.osbuild import debian\n"
            "with debian.reading(Path(sys.argv[1])):\n"
            "    print('reading', flush=True); sys.stdin.readline()",
            old,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "reading\n"
        said: list[str] = []
        debian.keep_only(new, "12", said.append)
        assert old.is_dir() and debian.reusable(old, "a" * 64)
        assert said == [f"kept {old.name}: process {reader.pid} reads it (a later build removes it)"]
    finally:
        reader.communicate("done\n")
    debian.keep_only(new, "12")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".debian12-bbbb.json", new.name]
    with pytest.raises(BuildError, match="removed by a concurrent build"), debian.reading(old):
        pass


def test_two_builds_of_one_tree_on_a_cold_cache_build_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `os debian12` on a cold cache both built the tree (minutes as root), and the second's swap
    replaced it under the first's reads: the second waits, saying for whom, and reuses the first's.
    (The packages and dpkg are fakes: the lock is the test.)"""
    import threading

    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(debian, "select_packages", lambda release, **kw: ())
    monkeypatch.setattr(debian, "_inputs", lambda *a: "ab" * 32)
    for step in ("_copy_in", "_install", "_scrub"):
        monkeypatch.setattr(debian, step, lambda *a, **kw: None)
    heard: list[str] = []
    second_waits = threading.Event()
    built: list[Path] = []
    got: list[debian.DebianTree] = []

    def said(line: str) -> None:
        heard.append(line)
        if line.startswith("waiting for pid"):
            second_waits.set()

    def unpack(tree: Path, files: object) -> None:
        built.append(tree)
        if len(built) == 1:  # the first build, unpacking: the second build comes now
            second = threading.Thread(target=lambda: got.append(debian.build_debian_tree(epoch=0, say=said)))
            second.start()
            assert second_waits.wait(60), "the second build did not wait for the first's"
            unpack.second = second  # type: ignore[attr-defined]
        (tree / "etc").mkdir()

    monkeypatch.setattr(debian, "_unpack", unpack)
    first = debian.build_debian_tree(epoch=0)
    unpack.second.join(60)  # type: ignore[attr-defined]
    assert len(built) == 1 and not first.reused and len(got) == 1 and got[0].reused
    assert got[0].root == first.root
    assert any(f"waiting for pid {os.getpid()} (build of {first.root.name})" in h for h in heard), heard
    assert not list(first.root.parent.glob(".*.lock"))


def test_a_copy_to_a_relative_folder_beginning_with_a_dash_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr26c finding 12: ``os PROFILE --out=-a/b`` copied with ``cp -a SRC/. -a/.b.<pid>…``, which cp
    read as options: "'cp' failed: Try '/usr/bin/cp --help' for more information"."""
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "os-release").write_text("ID=debian\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-a").mkdir()
    debian.copy_tree(src, Path("-a/b"))
    assert (tmp_path / "-a" / "b" / "etc" / "os-release").read_text() == "ID=debian\n"


def test_a_package_in_a_relative_folder_beginning_with_a_dash_is_extracted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as the cp above: a cache 'CERNVM_CACHE_DIR=./-c' is '-c/...' as a Path, and dpkg-deb read the
    # package's name as its options ("unknown option -c")
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: x\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: x\n"
    )
    (tree / "etc").mkdir()
    (tree / "etc" / "x.conf").write_text("x\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-c").mkdir()
    subprocess.run(["dpkg-deb", "--build", str(tree), "./-c/x_1_all.deb"], check=True, capture_output=True)
    pkg = debpkg.DebPackage("x", "1", "all", Path("-c/x_1_all.deb"), "0" * 64)
    debpkg.extract(pkg, Path("-c/tree"))
    assert (tmp_path / "-c" / "tree" / "etc" / "x.conf").read_text() == "x\n"
