"""``cvmfs.follows``: the names a unit file gives and how they resolve, on a catalog stand-in (the
prefetcher's use of them on a published tree: tests/cvmfs/test_prefetch.py)."""

from __future__ import annotations

from stat import S_IFLNK, S_IFREG

from cernvm_build.cvmfs import follows
from cernvm_build.cvmfs.catalog import DirEntry


def _entry(path: str, kind: int = S_IFREG, symlink: str = "", size: int = 100) -> DirEntry:
    return DirEntry(
        path=path, name=path.rpartition("/")[2], mode=kind | 0o644, kind=kind, size=size, mtime=0,
        mtime_ns=0, uid=0, gid=0, symlink=symlink, hardlink_group=0, linkcount=1, flags=0,
        content_hash="a" * 40 if kind == S_IFREG else None,
    )  # fmt: skip


def test_unit_names_come_from_the_loading_keys_only() -> None:
    text = (
        "[Unit]\nDescription=After=x.service\nAfter=a.service b.target\n Wants = c.socket\n"
        "# Requires=commented.service\nRequires=/dev/not-a-unit.service d.mount\n"
        "Documentation=man:e.service\n[Install]\nWantedBy=f.target\nAlso=g.service\n"
    )
    assert list(follows.unit_names(text)) == ["a.service", "b.target", "c.socket", "d.mount"]


def test_a_unit_resolves_etc_first_then_its_template_and_a_mask_or_symlink_loop_is_none() -> None:
    tree = {
        e.path: e
        for e in (
            _entry("/usr/lib/systemd/system/a.service"),
            _entry("/etc/systemd/system/a.service"),
            _entry("/usr/lib/systemd/system/getty@.service"),
            _entry("/etc/systemd/system/masked.service", S_IFLNK, "/dev/null"),
            _entry("/usr/lib/systemd/system/loop.service", S_IFLNK, "loop.service"),
            _entry("/usr/lib/systemd/system/big.service", size=1 << 20),
        )
    }
    listed: list[str] = []

    def listing(path: str, limit: int) -> list[DirEntry]:
        listed.append(path)
        return [e for p, e in tree.items() if p.rpartition("/")[0] == path]

    f = follows.Follower(tree.get, listing)
    found = f.unit("a.service")
    assert found is not None and found.path == "/etc/systemd/system/a.service"
    found = f.unit("getty@tty1.service")
    assert found is not None and found.path == "/usr/lib/systemd/system/getty@.service"
    for name in ("masked.service", "loop.service", "big.service", "absent.service"):
        assert f.unit(name) is None, name
    assert sorted(listed) == sorted(follows.UNIT_DIRS), "a folder of units listed more than once"
