"""The publisher reads a tar as ``hub ingest`` and ``container verify`` read a layer
(``cvmfs/tar_stream.py``): every member of a concatenated gzip/bz2/xz, and a stream of no known size
(a pipe) or bz2/xz bounded by what it really holds and by ``--max-tar-bytes``/``--max-tar-entries``.
The hostile cases run in a child with a deadline: a regression fails, it does not hang the suite."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.publish import publish_tar
from cernvm_build.errors import CvmfsError
from tests.support import run_python
from tests.support.tars import tar_bytes

from .helpers import FQRN

COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
}


@pytest.mark.parametrize("comp", list(COMPRESS))
def test_a_concatenated_compressed_tar_publishes_whole(
    stratum: Path, keyset: keymod.KeySet, export: Callable[..., Path], comp: str
) -> None:
    """pigz, ``cat a.gz b.gz`` (and pbzip2, ``xz -T``) write several members: tarfile's ``r|*``
    read the first one only, and the publish silently lacked the files of the others."""
    raw = tar_bytes({"a": b"first", "d": None, "d/b": b"second"})
    z = COMPRESS[comp]
    publish_tar(stratum, FQRN, keyset, io.BytesIO(z(raw[:1024]) + z(raw[1024:])))
    out = export(stratum)
    assert (out / "a").read_bytes() == b"first" and (out / "d" / "b").read_bytes() == b"second"


#: each compression the stream is told by, with the levels whose magics differ from tarfile's
WRAP: dict[str, Callable[[bytes], bytes]] = {
    "tar": lambda b: b,
    "gz": gzip.compress,
    "bz2 -1": lambda b: bz2.compress(b, 1),
    "bz2 -9": bz2.compress,
    "xz": lzma.compress,
    "lzma": lambda b: lzma.compress(b, lzma.FORMAT_ALONE),
    "lzma -9": lambda b: lzma.compress(b, lzma.FORMAT_ALONE, preset=9),
}


@pytest.mark.parametrize(
    ("first", "comp"),
    [(name, "tar") for name in ("BZh.txt", "BZh91", "]")] + [("BZh.txt", c) for c in WRAP if c != "tar"],
)
def test_a_first_member_named_like_a_magic_is_not_a_compression(
    stratum: Path, keyset: keymod.KeySet, export: Callable[..., Path], first: str, comp: str
) -> None:
    """A plain tar opens with its first member's name: ``BZh.txt`` (bz2's ``BZh``) was refused as
    an unreadable bz2 and ``]`` (lzma's ``\\x5d\\0\\0``) raised tarfile's ReadError."""
    raw = tar_bytes({first: b"one", "b": b"two"})
    publish_tar(stratum, FQRN, keyset, io.BytesIO(WRAP[comp](raw)))
    out = export(stratum)
    assert (out / first).read_bytes() == b"one" and (out / "b").read_bytes() == b"two"


def _declaring(size: int) -> bytes:
    """A plain tar whose member 'big' says (PAX) ``size`` bytes and holds 5; of a type the
    publisher skips (warned), so tarfile skips its data by reading it (a file's is read, and
    tarfile finds the end)."""
    t = tarfile.TarInfo("big")
    t.size, t.mtime, t.type, t.pax_headers = 5, 1, b"Z", {"size": str(size)}
    return t.tobuf(format=tarfile.PAX_FORMAT) + b"hello".ljust(512, b"\0") + b"\0" * 1024


PIPE = """
import os
from pathlib import Path
from cernvm_build.cvmfs import keys
from cernvm_build.cvmfs.publish import create_repository, publish_tar
from cernvm_build.cvmfs.tar_limits import TarLimits
from cernvm_build.errors import CvmfsError
ks = keys.generate_keys("t.cernvm.test")
create_repository(Path({stratum!r}), "t.cernvm.test", ks, timestamp=1)
r, w = os.pipe()
os.write(w, Path({data!r}).read_bytes())  # a few KiB: the pipe holds them
os.close(w)
try:
    with open(r, "rb") as f:
        publish_tar(Path({stratum!r}), "t.cernvm.test", ks, f, limits=TarLimits({max_bytes}, flag="tar"))
except CvmfsError as e:
    print(e.message, "|", e.hint)
"""


@pytest.mark.parametrize("comp", ["tar", "bz2", "xz"])
@pytest.mark.parametrize(
    ("declared", "max_bytes", "said"),
    [
        (
            1 << 60,
            1 << 62,
            "tar member 'big' declares 1152921504606846976 bytes, but the stream ends 1536 bytes into it",
        ),
        (1 << 40, 64 << 30, "declares 1099511627776 bytes, past the limit of 64 GiB"),
    ],
    ids=["past-its-end", "past-the-cap"],
)
def test_a_size_no_stored_size_bounds_is_bounded_by_the_stream_and_the_cap(
    tmp_path: Path, comp: str, declared: int, max_bytes: int, said: str
) -> None:
    """A pipe (and bz2/xz, whatever their size) has no stored size to bound a member by, and the
    publisher's only cap was 2**63: tarfile skipped a member declaring 2**60 bytes by reading
    empty blocks at the end for ever. Now the stream must hold it, and the cap applies."""
    data = tmp_path / "t"
    data.write_bytes(COMPRESS.get(comp, bytes)(_declaring(declared)))
    code = PIPE.format(stratum=str(tmp_path / "s"), data=str(data), max_bytes=max_bytes)
    r = run_python(code, blocked="publish_tar read on past the stream's end", timeout=60)
    assert r.returncode == 0, r.stderr
    assert said in r.stdout and "damaged or hostile" in r.stdout, r.stdout
    assert ("--max-tar-bytes" in r.stdout) == (max_bytes < declared), r.stdout
    assert len(r.stdout.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("files", "flag", "said"),
    [
        ({"z": b"\0" * 100_000}, ["--max-tar-bytes", "50000"], "tar member 'z' declares 100000 bytes"),
        ({f"f{i}": b"" for i in range(10)}, ["--max-tar-entries", "5"], "more than 5 members"),
    ],
    ids=["bytes", "entries"],
)
def test_the_publish_caps_are_flags(
    tmp_path: Path,
    stratum: Path,
    key_dir: Path,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, bytes | None],
    flag: list[str],
    said: str,
) -> None:
    src = tmp_path / "t.tar.xz"
    src.write_bytes(lzma.compress(tar_bytes(files)))
    argv = ["cvmfs", "publish", str(stratum), str(src), "--keys", str(key_dir)]
    before = (stratum / ".cvmfspublished").read_bytes()
    assert main([*argv, *flag]) != 0
    err = capsys.readouterr().err
    assert f"{src}: {said}" in err and f"raise the limit: {flag[0]}" in err and "Traceback" not in err
    assert (stratum / ".cvmfspublished").read_bytes() == before
    assert main(argv) == 0  # under the default caps


def test_a_zstd_tar_is_one_line(
    tmp_path: Path, stratum: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "t.tar.zst"
    src.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 100)
    assert main(["cvmfs", "publish", str(stratum), str(src), "--keys", str(key_dir)]) != 0
    err = capsys.readouterr().err
    assert f"{src}: a zstd-compressed tar" in err and "zstd -dc" in err and "Traceback" not in err


@pytest.mark.parametrize("comp", ["tar", "gz", "xz"])
def test_a_stream_cut_inside_a_header_is_refused(tmp_path: Path, comp: str) -> None:
    """lf18: tarfile takes a header cut short by the end of the stream for the end of the archive,
    so a pipe cut there published the members before it as if the tar were whole."""
    raw = tar_bytes({"a": b"x" * 100, "b": b"y"})
    data = tmp_path / "t"
    data.write_bytes(COMPRESS.get(comp, bytes)(raw[: 1024 + 100]))  # 100 bytes of b's header
    code = PIPE.format(stratum=str(tmp_path / "s"), data=str(data), max_bytes=1 << 30)
    r = run_python(code, blocked="publish_tar of a cut tar", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "truncated tar header at byte 1024 (the stream ends 100 bytes into it)" in r.stdout, r.stdout
    assert len(r.stdout.strip().splitlines()) == 1


def test_a_stream_ending_at_a_header_or_with_a_lone_zero_block_publishes(
    stratum: Path, keyset: keymod.KeySet, export: Callable[..., Path]
) -> None:
    """What tar readers accept stays accepted: no end marker at all, or a single zero block."""
    raw = tar_bytes({"a": b"x" * 100})
    for cut in (1024, 1536):
        publish_tar(stratum, FQRN, keyset, io.BytesIO(raw[:cut]))
        assert (export(stratum) / "a").read_bytes() == b"x" * 100


def _pax_member(**pax: str) -> bytes:
    t = tarfile.TarInfo("f")
    t.size, t.mtime, t.pax_headers = 2, 1, pax
    return t.tobuf(format=tarfile.PAX_FORMAT) + b"hi".ljust(512, b"\0") + b"\0" * 1024


@pytest.mark.parametrize("declared", [5 << 20, 10 << 30])
def test_a_pax_header_past_its_bound_is_refused_before_it_is_read(
    stratum: Path, keyset: keymod.KeySet, declared: int
) -> None:
    """lf18: tarfile reads a PAX header's records whole into memory: a pipe declaring 10 GiB of
    them was one read of 10 GiB. Refused past 4 MiB (what it declares, before reading it)."""
    raw = _pax_member(comment="c" * (5 << 20))
    if declared != 5 << 20:  # the header's size field says 10 GiB; a few MiB follow
        info = tarfile.TarInfo.frombuf(raw[:512], "utf-8", "surrogateescape")
        info.size = declared
        raw = info.tobuf(format=tarfile.GNU_FORMAT)[:512] + raw[512:]
        # the header as tarfile wrote it, with only its size changed (GNU base-256 for 10 GiB)
    before = (stratum / ".cvmfspublished").read_bytes()
    with pytest.raises(CvmfsError) as e:
        publish_tar(stratum, FQRN, keyset, io.BytesIO(raw))
    said = re.search(
        r"tar PAX extended header '\./\./@PaxHeader' at byte 0 declares (\d+) bytes", e.value.message
    )
    size = tarfile.TarInfo.frombuf(raw[:512], "utf-8", "surrogateescape").size  # the PAX records'
    assert said and int(said[1]) == size >= declared, e.value.message
    assert "more than the 4 MiB" in e.value.message and "\n" not in e.value.message
    assert (stratum / ".cvmfspublished").read_bytes() == before
    publish_tar(stratum, FQRN, keyset, io.BytesIO(_pax_member(comment="c" * (1 << 20))))  # 1 MiB: fine
