"""Sample trees with every file type, and a file-for-file comparison of two trees."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cernvm_build.cvmfs.chunking import ChunkingSettings

FQRN = "pub.cernvm.test"
# small chunks so that tests exercise chunking with small files
SMALL_CHUNKS = ChunkingSettings(min_size=64 << 10, avg_size=128 << 10, max_size=256 << 10)

# The real-tools fixture, copied into the tests so that a clean clone has it.
FIXTURE = Path(__file__).resolve().parent.parent / "cvmfs" / "data" / "fixture.cernvm.test"


def make_sample_tree(root: Path, seed: int = 1) -> Path:
    """Regular (empty, small, big = chunked), dirs, symlinks, hardlinks, fifo, char device 0/0
    (an overlay whiteout), xattrs incl. trusted.overlay.opaque, a nested catalog, odd names."""
    rnd = __import__("random").Random(seed)
    root.mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text("NAME=CernVM\nVERSION=5\n")
    (root / "etc" / "empty.conf").write_bytes(b"")
    (root / "usr" / "bin").mkdir(parents=True)
    for i in range(5):
        p = root / "usr" / "bin" / f"tool{i}"
        p.write_bytes(rnd.randbytes(100 * i + 1))
        p.chmod(0o755)
    os.link(root / "usr" / "bin" / "tool1", root / "usr" / "bin" / "tool1-hard")
    os.link(root / "usr" / "bin" / "tool1", root / "etc" / "tool1-elsewhere")
    os.symlink("tool2", root / "usr" / "bin" / "alias")
    os.symlink("/cvmfs/other.repo/abs", root / "usr" / "abslink")
    os.symlink("bin", root / "usr" / "dirlink")
    sw = root / "opt" / "sw"
    (sw / "lib").mkdir(parents=True)
    (sw / ".cvmfscatalog").write_bytes(b"")
    (sw / "lib" / "libsw.so").write_bytes(rnd.randbytes(3000))
    (sw / "big.bin").write_bytes(rnd.randbytes(700 << 10))  # several small chunks
    (sw / "zeros").write_bytes(bytes(300 << 10))
    (root / "dir with spaces" / "ünïcödé").mkdir(parents=True)
    (root / "dir with spaces" / "ünïcödé" / "f.txt").write_text("x")
    os.mkfifo(root / "fifo")
    os.mknod(root / "whiteout", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    os.setxattr(root / "etc" / "os-release", "user.origin", b"test")
    (root / "opaque").mkdir()
    os.setxattr(root / "opaque", "trusted.overlay.opaque", b"y")
    (root / "secret").write_text("s")
    (root / "secret").chmod(0o600)
    os.chown(root / "secret", 1234, 5678)
    os.utime(root / "etc" / "os-release", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return root


def _xattrs(p: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError:
        return {}
    return {
        n: os.getxattr(p, n, follow_symlinks=False)
        for n in names
        if n.startswith(("user.", "trusted.overlay."))
    }


def describe(root: Path, *, mtimes: bool = True) -> dict[str, tuple[object, ...]]:
    """path -> (type, permissions, size, sha1/target/rdev, uid, gid, xattrs, mtime, link group)."""
    out: dict[str, tuple[object, ...]] = {}
    # hard links as CernVM-FS keeps them: a group is the links to one inode within one directory
    inodes: dict[tuple[str, int, int], list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            rel = "/" + str(p.relative_to(root))
            if stat.S_ISREG(st.st_mode):
                what: object = hashlib.sha1(p.read_bytes()).hexdigest()
                group = None
                if st.st_nlink > 1:
                    inodes.setdefault((dirpath, st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                what, group = os.readlink(p), None
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                what, group = st.st_rdev, None
            else:
                what, group = None, None
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
            mtime = st.st_mtime_ns if mtimes and not stat.S_ISLNK(st.st_mode) else 0
            out[rel] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                size,
                what,
                st.st_uid,
                st.st_gid,
                _xattrs(p),
                mtime,
                group,
            )
    for members in inodes.values():
        if len(members) > 1:
            for rel in members:
                out[rel] = (*out[rel][:-1], members[0])
    return out
