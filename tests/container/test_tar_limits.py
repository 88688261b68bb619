"""A layer's tar members are bounded as their headers are read, by one implementation
(``cvmfs/tar_limits.py``) that ``hub ingest``'s layer scan and the publisher's ``scan_tar`` share:
a declared size past what the blob can hold (a 200-byte layer saying ``size=10**40`` made tarfile
read empty blocks for ever), a sparse member's real size (1 TiB of zeros from 1 KB), and the caps
on bytes and members. Each hostile case runs in a child with a deadline: a regression fails, it
does not hang the suite."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from cernvm_build.container import ingest, verify
from cernvm_build.cvmfs.tar_limits import TarLimits
from cernvm_build.errors import BuildError
from tests.support import run_python
from tests.support.tars import tar_bytes

WHERE = "reg/x:1 layer sha256:ab"


def _pax_size() -> bytes:
    t = tarfile.TarInfo("big")
    t.size, t.mtime, t.pax_headers = 5, 1, {"size": "9" * 40}
    return gzip.compress(t.tobuf(format=tarfile.PAX_FORMAT) + b"hello".ljust(512, b"\0") + b"\0" * 1024)


def _sparse() -> bytes:
    t = tarfile.TarInfo("GNUSparseFile.0/sp")
    t.size, t.mtime = 1024, 1
    t.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "sp",
        "GNU.sparse.realsize": str(1 << 40),
    }
    body = b"1\n0\n5\n".ljust(512, b"\0") + b"hello".ljust(512, b"\0")
    return gzip.compress(t.tobuf(format=tarfile.PAX_FORMAT) + body + b"\0" * 1024)


def _gnu_sparse() -> bytes:
    """An old GNU sparse header (what ``tar --sparse`` writes) whose own size field, the stored
    data tarfile skips to reach the next header, says 1 TiB: its map says 5 bytes."""
    t = tarfile.TarInfo("sp")
    t.size, t.mtime, t.type = 5, 1, tarfile.GNUTYPE_SPARSE
    hdr = bytearray(t.tobuf(format=tarfile.GNU_FORMAT))
    hdr[124:136] = b"\x80" + (1 << 40).to_bytes(11, "big")  # size, base-256
    hdr[386:398] = b"%011o\0" % 0  # sparse map: offset 0,
    hdr[398:410] = b"%011o\0" % 5  # 5 bytes
    hdr[483:495] = b"%011o\0" % 5  # real size
    hdr[148:156] = b"%06o\0 " % (sum(hdr[:148]) + 256 + sum(hdr[156:]))
    return gzip.compress(bytes(hdr) + b"hello".ljust(512, b"\0") + b"\0" * 1024)


SCAN = """
from pathlib import Path
from cernvm_build.container import ingest, verify
from cernvm_build.errors import BuildError
try:
    ingest.scan_layer(Path({blob!r}), set(), {where!r})
except BuildError as e:
    print(e.message, "|", e.hint)
"""

PUBLISH = """
from pathlib import Path
from cernvm_build.cvmfs import keys
from cernvm_build.cvmfs.publish import create_repository, publish_tar
from cernvm_build.errors import CvmfsError
ks = keys.generate_keys("t.cernvm.test")
create_repository(Path({stratum!r}), "t.cernvm.test", ks, timestamp=1)
try:
    with open({blob!r}, "rb") as f:
        publish_tar(Path({stratum!r}), "t.cernvm.test", ks, f)
except CvmfsError as e:
    print(e.message, "|", e.hint)
"""


@pytest.mark.parametrize(
    ("blob", "said"),
    [
        (_pax_size, "tar member 'big' declares 9999"),
        (_sparse, "tar sparse member 'sp' declares 1099511627776"),
        (_gnu_sparse, "tar sparse member 'sp' declares 1099511627"),
    ],
    ids=["pax-size-1e40", "sparse-1TiB", "gnu-sparse-stored-1TiB"],
)
@pytest.mark.parametrize("path", ["scan_layer", "publish_tar"])
def test_a_member_larger_than_its_blob_can_hold_is_refused_by_both_readers(
    tmp_path: Path, blob: object, said: str, path: str
) -> None:
    f = tmp_path / "layer.tar.gz"
    f.write_bytes(blob())  # type: ignore[operator]
    code = SCAN.format(blob=str(f), where=WHERE) if path == "scan_layer" else None
    code = code or PUBLISH.format(blob=str(f), stratum=str(tmp_path / "s"))
    r = run_python(code, blocked=f"{path} did not refuse the member: it reads on", timeout=30)
    assert r.returncode == 0, r.stderr
    # a sparse member's holes are capped on their own: hub ingest's 64 GiB, the publisher's holes'
    bounded = "past the limit of 64 GiB" if blob is _sparse else "more than the stream can hold"
    assert said in r.stdout and bounded in r.stdout, r.stdout
    assert "damaged or hostile" in r.stdout and len(r.stdout.strip().splitlines()) == 1


def _layer(files: dict[str, bytes | None]) -> tuple[bytes, str]:
    raw = tar_bytes(files)
    return gzip.compress(raw), "sha256:" + hashlib.sha256(raw).hexdigest()


def test_the_layer_tar_must_be_its_diff_id(tmp_path: Path) -> None:
    blob, diff = _layer({"etc": None, "etc/a": b"a"})
    f = tmp_path / "layer.tar.gz"
    f.write_bytes(blob)
    ingest.scan_layer(f, set(), WHERE, diff)  # the genuine diff_id passes
    with pytest.raises(BuildError) as e:
        ingest.scan_layer(f, set(), WHERE, "sha256:" + "ab" * 32)
    assert e.value.message.startswith(WHERE) and f"the layer's tar is {diff}" in e.value.message


def test_a_multi_member_gzip_layer_is_read_whole(tmp_path: Path) -> None:
    raw = tar_bytes({"a": b"a", "b": b"b"})
    f = tmp_path / "layer.tar.gz"
    f.write_bytes(gzip.compress(raw[:1024]) + gzip.compress(raw[1024:]))
    below: set[str] = set()
    ingest.scan_layer(f, below, WHERE, "sha256:" + hashlib.sha256(raw).hexdigest())
    assert below == {"a", "b"}


@pytest.mark.parametrize(
    ("files", "limits", "said"),
    [
        ({"z": b"\0" * 100_000}, TarLimits(max_bytes=50_000), "tar member 'z' declares 100000 bytes"),
        ({f"f{i}": b"" for i in range(10)}, TarLimits(max_entries=5), "more than 5 members"),
    ],
    ids=["bytes", "entries"],
)
def test_the_caps_on_bytes_and_members(
    tmp_path: Path, files: dict[str, bytes | None], limits: TarLimits, said: str
) -> None:
    blob, diff = _layer(files)
    f = tmp_path / "layer.tar.gz"
    f.write_bytes(blob)
    ingest.scan_layer(f, set(), WHERE, diff)  # under the default caps
    with pytest.raises(BuildError) as e:
        ingest.scan_layer(f, set(), WHERE, diff, limits)
    assert e.value.message.startswith(WHERE) and said in e.value.message
    assert "raise the limit" in (e.value.hint or "")


def test_zeros_after_the_end_marker_count_to_the_cap(tmp_path: Path) -> None:
    """A bomb after the tar's end: the rest is read for the diff_id, at most up to the cap."""
    raw = tar_bytes({"a": b"a"}) + b"\0" * 200_000
    f = tmp_path / "layer.tar.gz"
    f.write_bytes(gzip.compress(raw))
    with pytest.raises(BuildError) as e:
        ingest.scan_layer(f, set(), WHERE, None, TarLimits(max_bytes=100_000))
    assert "holds more than" in e.value.message


VERIFY = """
import json
from pathlib import Path
from cernvm_build.container import verify
print(json.dumps([str(d) for d in verify.read_image(Path({layout!r})).integrity]))
"""


def _layout(root: Path, layer: bytes, diff_id: str) -> Path:
    """An OCI layout of one ``layer`` whose config says ``diff_id``."""
    cfg = json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps(
        {"config": {"digest": _digest(cfg)}, "layers": [{"digest": _digest(layer), "size": len(layer)}]}
    ).encode()
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in (layer, cfg, manifest):
        (blobs / _digest(data)[7:]).write_bytes(data)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"manifests": [{"digest": _digest(manifest)}]}))
    return root


def test_verify_reads_a_parent_layer_under_the_same_bound(tmp_path: Path) -> None:
    """``verify`` (and a ``--parent`` build) reads an OCI layout's layers with tarfile too, and
    hashes every file: a sparse member's 1 TiB of zeros would take days."""
    img = _layout(tmp_path / "img", _sparse(), "sha256:" + "ab" * 32)
    r = run_python(VERIFY.format(layout=str(img)), blocked="verify read the layer on", timeout=30)
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    assert any("tar sparse member 'sp' declares 1099511627776 bytes" in d for d in found), found


@pytest.mark.parametrize(
    ("tail", "said"),
    [
        (b"", None),
        (b"\0" * 10240, None),  # a second record of zeros (tar -b 40)
        (b"\0" * 700 + b"x", "holds non-zero bytes after its tar end marker (at byte 1024)"),
        (b"\0" * (1 << 20), "holds more than 1 MiB after its tar end marker (at byte 1024)"),
    ],
    ids=["record", "two-records", "not-zeros", "past-1MiB"],
)
@pytest.mark.parametrize("reader", ["scan_layer", "verify"])
def test_after_the_end_marker_a_layer_holds_a_little_zero_padding(
    tmp_path: Path, tail: bytes, said: str | None, reader: str
) -> None:
    """What tar writers put there (zeros to a record; Go's archive/tar nothing past the two zero
    blocks): ``verify`` had hashed the rest to any length, ``hub ingest`` to 64 GiB, of anything."""
    raw = tar_bytes({"a": b"a"}) + tail
    assert len(raw) == 10240 + len(tail)  # 'a' and its data, then the end marker at byte 1024
    blob, diff = gzip.compress(raw), _digest(raw)
    if reader == "verify":
        found = [str(d) for d in verify.read_image(_layout(tmp_path / "img", blob, diff)).integrity]
        assert found == [] if said is None else any(said in d for d in found), found
        return
    (tmp_path / "l").write_bytes(blob)
    if said is None:
        ingest.scan_layer(tmp_path / "l", set(), WHERE, diff)
        return
    with pytest.raises(BuildError) as e:
        ingest.scan_layer(tmp_path / "l", set(), WHERE, diff)
    assert e.value.message == f"{WHERE}: the layer {said}", e.value.message
    assert "at most a record of zeros" in (e.value.hint or "")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _pax_member(pax: dict[str, str]) -> bytes:
    """A layer whose member 'f' carries ``pax`` (numbers tarfile takes as given), then 'g'."""
    t = tarfile.TarInfo("f")
    t.size, t.mtime, t.pax_headers = 2, 1, pax
    g = tarfile.TarInfo("g")
    g.size, g.mtime = 2, 1
    body = b"hi".ljust(512, b"\0")
    tail = g.tobuf(format=tarfile.PAX_FORMAT) + body + b"\0" * 1024
    return gzip.compress(t.tobuf(format=tarfile.PAX_FORMAT) + body + tail)


LOCK = """
from cernvm_build.cvmfs.lock import lock_path, publish_lock
with publish_lock(Path({stratum!r})):  # released by the refused publish: this does not wait
    pass
print("lock", repr(lock_path(Path({stratum!r})).read_text()))
"""


@pytest.mark.parametrize(
    ("pax", "said"),
    [
        ({"size": "-1"}, "has a negative size (-1)"),
        ({"uid": "-5"}, "has uid -5 / gid 0, outside 0..4294967294"),
        ({"gid": str(2**70)}, f"has uid 0 / gid {2**70}, outside"),
        ({"mtime": "1e30"}, "has mtime 1e+30, not a time a catalog holds"),
        ({"mtime": "-1e20"}, "has mtime -1e+20, not a time"),
        ({"mtime": "nan"}, "has mtime nan, not a time"),
    ],
    ids=["size-neg", "uid-neg", "gid-2^70", "mtime-1e30", "mtime-neg", "mtime-nan"],
)
@pytest.mark.parametrize("path", ["scan_layer", "publish_tar"])
def test_pax_numbers_a_catalog_cannot_hold_are_refused_by_both_readers(
    tmp_path: Path, pax: dict[str, str], said: str, path: str
) -> None:
    """A negative size (it moved tarfile's offset back, or not at all) or uid/gid/mtime past the
    catalog's integers were published (the readers then refused the catalog), or raised a
    traceback: one line naming the member, and the publish lock released."""
    f = tmp_path / "layer.tar.gz"
    f.write_bytes(_pax_member(pax))
    stratum = str(tmp_path / "s")
    code = SCAN.format(blob=str(f), where=WHERE) if path == "scan_layer" else None
    code = code or PUBLISH.format(blob=str(f), stratum=stratum) + LOCK.format(stratum=stratum)
    r = run_python(code, blocked=f"{path} read on", timeout=30)
    assert r.returncode == 0, r.stderr
    first = r.stdout.strip().splitlines()[0]
    assert f"tar member 'f' {said}" in first and "damaged or hostile" in first, r.stdout
    if path == "publish_tar":
        assert r.stdout.strip().splitlines()[1:] == ["lock ''"], r.stdout


PRE = tarfile.TarInfo("first").tobuf(format=tarfile.GNU_FORMAT)


def _back_pax() -> bytes:
    """An archive whose member's PAX size points back at its own header: Python 3.11's tarfile
    (no CVE-2025-8194 check) reads it again for ever in ``getmembers()``."""
    t = tarfile.TarInfo("loop")
    t.size, t.pax_headers = 0, {"size": "-0"}
    n = len(t.tobuf(format=tarfile.PAX_FORMAT))
    t.pax_headers = {"size": str(-n)}
    return PRE + t.tobuf(format=tarfile.PAX_FORMAT) + b"\0" * 1024


def _back_gnu_sparse() -> bytes:
    """An old GNU sparse member whose stored size (base-256) is -512: its real size and map are
    sound, but tarfile's next header is its own again."""
    t = tarfile.TarInfo("sp")
    t.size, t.mtime, t.type = 5, 1, tarfile.GNUTYPE_SPARSE
    hdr = bytearray(t.tobuf(format=tarfile.GNU_FORMAT))
    hdr[124:136] = b"\xff" + (256**11 - 512).to_bytes(11, "big")  # size -512, base-256
    hdr[386:398] = b"%011o\0" % 0
    hdr[398:410] = b"%011o\0" % 5
    hdr[483:495] = b"%011o\0" % 5
    hdr[148:156] = b"%06o\0 " % (sum(hdr[:148]) + 256 + sum(hdr[156:]))
    return PRE + bytes(hdr) + b"hello".ljust(512, b"\0") + b"\0" * 1024


VERIFY_CLI = """
import runpy, sys
sys.argv = ["cernvm-build", "container", "verify", {path!r}]
runpy.run_module("cernvm_build.cli.main", run_name="__main__")
"""

OVA = """
from pathlib import Path
from cernvm_build.errors import CernVMError
from cernvm_build.launch.images import ImageCache
try:
    ImageCache(Path({home!r})).add_ova(Path({path!r}))
except CernVMError as e:
    print(e.message, "|", e.hint)
"""

DELTA = """
from pathlib import Path
from cernvm_build.container import delta
from cernvm_build.errors import CernVMError
try:
    delta._place_blobs(Path({path!r}), ["sha256:" + "ab" * 32], Path({home!r}))
except CernVMError as e:
    print(e.message, "|", e.hint)
"""


@pytest.mark.parametrize(
    ("archive", "said"),
    [
        (_back_pax, "tar member 'loop' has a negative size"),
        (_back_gnu_sparse, "tar member 'sp' starts at byte 1024, not past the previous member (at 1024)"),
    ],
    ids=["pax-size-back", "gnu-sparse-back"],
)
@pytest.mark.parametrize("reader", ["container-verify", "add_ova", "delta"])
def test_an_archive_walked_backwards_is_refused_not_looped_on(
    tmp_path: Path, archive: object, said: str, reader: str
) -> None:
    """``container verify X.tar``, ``cernvm-launch import X.ova`` and a delta's parent blobs walk
    an archive file's members with the same checked iterator as the stream readers."""
    f = tmp_path / "x.ova"
    f.write_bytes(archive())  # type: ignore[operator]
    (tmp_path / "home").mkdir()
    code = {"container-verify": VERIFY_CLI, "add_ova": OVA, "delta": DELTA}[reader]
    r = run_python(
        code.format(path=str(f), home=str(tmp_path / "home")), blocked=f"{reader} loops", timeout=30
    )
    out = r.stderr if reader == "container-verify" else r.stdout
    assert f"{f}: {said}" in out and "damaged or hostile" in out, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert (r.returncode != 0) == (reader == "container-verify"), r.stderr
    if reader == "container-verify":  # sr18 10: as any other bad archive (7), not a repository's (5)
        assert r.returncode == 7, r.stderr


def _huge_pax(first: bool) -> bytes:
    """An archive with a PAX extended header of 5 MiB (a ``comment`` record), on its first member
    (read by ``tarfile.open`` itself) or its second (read by the checked walk)."""
    big = tarfile.TarInfo("big")
    big.pax_headers = {"comment": "x" * (5 << 20)}
    small = tarfile.TarInfo("small")
    order = [big, small] if first else [small, big]
    return b"".join(t.tobuf(format=tarfile.PAX_FORMAT) for t in order) + b"\0" * 1024


@pytest.mark.parametrize("first", [True, False], ids=["first-member", "later-member"])
@pytest.mark.parametrize("reader", ["container-verify", "add_ova", "delta"])
def test_an_archive_file_s_huge_pax_header_is_refused_before_it_is_read(
    tmp_path: Path, first: bool, reader: str
) -> None:
    """The random-access readers bound a PAX header's declared data as the stream readers do (it was
    read into memory whole: a 3 GiB OVA that is one PAX header was 3 GiB of memory)."""
    f = tmp_path / "x.ova"
    f.write_bytes(_huge_pax(first))
    (tmp_path / "home").mkdir()
    code = {"container-verify": VERIFY_CLI, "add_ova": OVA, "delta": DELTA}[reader]
    r = run_python(code.format(path=str(f), home=str(tmp_path / "home")), blocked=reader, timeout=30)
    out = r.stderr if reader == "container-verify" else r.stdout
    assert f"{f}: tar PAX extended header" in out and "more than the 4 MiB" in out, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert (r.returncode != 0) == (reader == "container-verify"), r.stderr


def _sparse_map(body: bytes) -> bytes:
    """A GNU 1.0 sparse member whose map (the lines opening its data) is ``body``."""
    t = tarfile.TarInfo("GNUSparseFile.0/sp")
    t.size, t.mtime = len(body), 1
    t.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "sp"}
    padded = body.ljust(-(-len(body) // 512) * 512, b"\0")
    return gzip.compress(t.tobuf(format=tarfile.PAX_FORMAT) + padded + b"\0" * 1024)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"1\n0 5\n", "its GNU sparse map holds b'0 5', not a number"),  # tarfile: ValueError traceback
        (b"2\n0\n5\n", "its GNU sparse map runs past the archive"),  # no newline left: ValueError
        (b"9999999999\n", "its GNU sparse map declares 9999999999 entries"),
        (b"1048576\n" + b"1\n" * (3 << 20), "its GNU sparse map runs past 4 MiB"),  # tarfile: ~4x in memory
    ],
    ids=["not-a-number", "cut-short", "huge-count", "long-map"],
)
@pytest.mark.parametrize("path", ["scan_layer", "publish_tar"])
def test_a_gnu_sparse_map_tarfile_cannot_read_is_one_line(
    tmp_path: Path, body: bytes, said: str, path: str
) -> None:
    """sr18 finding 9: tarfile parses a 1.0 sparse map with bare int() and split, and reads a map of
    any length: a ValueError traceback (container verify, publish, ingest, cernvm_inject) and ~4x the
    map in memory. The map is read bounded, each line a number."""
    f = tmp_path / "layer.tar.gz"
    f.write_bytes(_sparse_map(body))
    code = SCAN.format(blob=str(f), where=WHERE) if path == "scan_layer" else None
    code = code or PUBLISH.format(blob=str(f), stratum=str(tmp_path / "s"))
    r = run_python(code, blocked=f"{path} did not refuse the map", timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert said in r.stdout and len(r.stdout.strip().splitlines()) == 1, r.stdout
