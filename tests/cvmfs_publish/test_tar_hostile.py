"""Hostile tar streams at the publisher (pr17c findings 1-3, 6): each is one error naming the member or
the path, and no revision is made; or, for hard links, the tree tar itself would extract."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.publish import add_tag, publish_tar
from cernvm_build.cvmfs.repository import Repository
from cernvm_build.errors import CvmfsError

from .helpers import FQRN

R, L, S = tarfile.REGTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE


def _tar(*members: dict[str, Any]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            m = dict(m)
            info = tarfile.TarInfo(m.pop("name"))
            data = m.pop("data", b"x")
            info.type = m.pop("type", R)
            for k, v in m.items():
                setattr(info, k, v)
            info.size = len(data) if info.type == R else 0
            tar.addfile(info, io.BytesIO(data) if info.type == R else None)
    buf.seek(0)
    return buf


@pytest.mark.parametrize(
    ("members", "message"),
    [
        # finding 3: rows every reader refuses were signed (the repository poisoned)
        ([dict(name="m", mtime=-(1 << 40))], r"^/m: mtime -1099511627776 is out of range"),
        ([dict(name="a", pax_headers={"path": "b\0c"})], r"^/b\\x00c: a name may not contain NUL"),
        ([dict(name="n" * 300)], r"^/n+\.\.\.n+: the name is longer than 255 bytes"),
        ([dict(name="s", type=S, linkname="x" * 5000)], r"^/s: symlink target is longer than 4095 bytes"),
        (
            [dict(name=".", data=b"root")],
            r"tar member '\.' is the archive's top directory \(/\) but not a dir",
        ),
        # finding 2: a ValueError traceback
        (
            [dict(name="x", pax_headers={"SCHILY.xattr.user.big": "v" * 300})],
            r"tar member 'x': extended attribute 'user.big' too long",
        ),
        # finding 1: an AssertionError traceback (a link to itself, to a link not yet resolved)
        (
            [dict(name="h", type=L, linkname="h")],
            r"tar member 'h': hard link to 'h', which is not a file read",
        ),
        (
            [dict(name="f"), dict(name="a", type=L, linkname="b"), dict(name="b", type=L, linkname="f")],
            r"tar member 'a': hard link to 'b', which is not a file read before it",
        ),
        # finding 6: the link took the replacement's content (tar keeps the first file's)
        (
            [dict(name="f", data=b"one"), dict(name="h", type=L, linkname="f"), dict(name="f", data=b"two")],
            r"tar member 'f' replaces a file that earlier hard links in the archive name",
        ),
    ],
)
def test_hostile_member_is_one_error_and_no_revision(
    stratum: Path, keyset: keymod.KeySet, members: list[dict[str, Any]], message: str
) -> None:
    before = (stratum / ".cvmfspublished").read_bytes()
    with pytest.raises(CvmfsError, match=message) as e:
        publish_tar(stratum, FQRN, keyset, _tar(*members))
    assert e.value.hint
    assert (stratum / ".cvmfspublished").read_bytes() == before


def test_cli_refuses_a_poisoning_row_in_one_line(
    tmp_path: Path, stratum: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "bad.tar"
    src.write_bytes(_tar(dict(name="m", mtime=-(1 << 40))).getvalue())
    rc = main(["cvmfs", "publish", str(stratum), str(src), "--keys", str(key_dir)])
    err = capsys.readouterr().err
    assert rc != 0
    assert "Traceback" not in err
    assert err.splitlines()[0].startswith("error: ") and "/m: mtime" in err


def test_a_chain_of_hard_links_is_one_group(
    stratum: Path, keyset: keymod.KeySet, reader: Callable[..., Repository]
) -> None:
    """finding 6: ``b -> f, a -> b``: a is a name of f (tar links it to f), not a file of its own."""
    publish_tar(
        stratum,
        FQRN,
        keyset,
        _tar(
            dict(name="f", data=b"data"),
            dict(name="b", type=L, linkname="f"),
            dict(name="a", type=L, linkname="b"),
        ),
    )
    with reader(stratum) as repo:
        entries = {e.name: e for e in repo.iterdir("/")}
        assert {e.linkcount for e in entries.values()} == {3}
        assert len({e.inode for e in entries.values()}) == 1
        assert repo.read_bytes("/a") == b"data"


def test_tag_root_hash_is_a_name_never_a_path(stratum: Path, keyset: keymod.KeySet) -> None:
    """finding 12: ``--root-hash ../../../big`` read a file outside the repository (a FIFO there hung
    the command, a big file was read whole, then a traceback); now the name is refused first."""
    os.mkfifo(stratum.parent / "bigC")  # stratum/data/../../bigC
    before = (stratum / ".cvmfspublished").read_bytes()
    with pytest.raises(CvmfsError, match=r"'\.\./\.\./big' is not an object name"):
        add_tag(stratum, FQRN, keyset, "g", root_hash="../../big")
    assert (stratum / ".cvmfspublished").read_bytes() == before


def test_a_name_twice_publishes_the_later_member(
    stratum: Path, keyset: keymod.KeySet, reader: Callable[..., Repository]
) -> None:
    """A small file's content was recorded after the same name's later, bigger member (stored at
    once): the row said 1 MiB, the object was 3 bytes, and every reader refused the file."""
    big = b"N" * ((1 << 20) + 1)  # past objwrite.SMALL: stored as it is read
    publish_tar(stratum, FQRN, keyset, _tar(dict(name="f", data=b"old"), dict(name="f", data=big)))
    with reader(stratum) as repo:
        assert repo.read_bytes("/f") == big


def test_a_fractional_mtime_before_1970_publishes_as_the_directory_scanner_would(
    stratum: Path, keyset: keymod.KeySet, reader: Callable[..., Repository]
) -> None:
    """sr17: ``int()`` rounded -0.5 s toward zero (0 s, -0.5e9 ns), which the row checks refused,
    while the same file in a directory published (floor: -1 s + 0.5e9 ns)."""
    publish_tar(stratum, FQRN, keyset, _tar(dict(name="m", mtime=-0.5), dict(name="n", mtime=0.9999999999)))
    with reader(stratum) as repo:
        entries = {e.name: e for e in repo.iterdir("/")}
        assert entries["m"].mtime_ns == -500_000_000
        assert entries["n"].mtime_ns == 999_999_999


def test_a_folder_replaced_while_its_file_compresses_keeps_the_later_file(
    stratum: Path, keyset: keymod.KeySet, reader: Callable[..., Repository]
) -> None:
    """sr17: ``d/f`` (small), then ``d`` a symlink (the tree removed), then ``d/`` and a bigger
    ``d/f``: the first content, recorded late, must not overwrite the later one's row."""
    big = b"N" * ((1 << 20) + 1)
    D = tarfile.DIRTYPE
    publish_tar(
        stratum,
        FQRN,
        keyset,
        _tar(
            dict(name="d", type=D),
            dict(name="d/f", data=b"old"),
            dict(name="d", type=S, linkname="x"),
            dict(name="d", type=D),
            dict(name="d/f", data=big),
        ),
    )
    with reader(stratum) as repo:
        assert repo.read_bytes("/d/f") == big
