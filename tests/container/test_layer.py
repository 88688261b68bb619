"""The tar layer: what goes in, in which order, and that the same tree gives the same bytes."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from cernvm_build.container.layer import write_layer
from cernvm_build.container.source import LocalTree
from cernvm_build.tree import SOCKET_REASON

from .trees import XATTR, make_tree


def _members(raw: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        return t.getmembers()


def _member(raw: bytes, name: str) -> tarfile.TarInfo:
    return next(m for m in _members(raw) if m.name == name)


def _layer(tree: Path, **kw: object) -> tuple[bytes, bytes, object]:
    raw, gz = io.BytesIO(), io.BytesIO()
    res = write_layer(LocalTree(tree), raw_out=raw, gz_out=gz, **kw)  # type: ignore[arg-type]
    return raw.getvalue(), gz.getvalue(), res


def test_members_sorted_parents_first_with_links_and_modes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    raw, gz, res = _layer(tree, mtime=1234)
    assert gzip.decompress(gz) == raw
    members = _members(raw)
    names = [m.name for m in members]
    # depth-first, children sorted by name bytes: a parent always precedes its children
    assert (
        names.index("opt")
        < names.index("opt/dir with space")
        < names.index("opt/dir with space/Ünïcode ñame.txt")
    )
    assert names.index("usr/bin/tool") < names.index("usr/bin/tool-hardlink")
    by = {m.name: m for m in members}
    assert all(m.mtime == 1234 for m in members)
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert by["usr/bin/tool-hardlink"].type == tarfile.LNKTYPE
    assert by["usr/bin/tool-hardlink"].linkname == "usr/bin/tool"
    assert by["usr/release-link"].issym() and by["usr/release-link"].linkname == "../etc/redhat-release"
    assert by["usr/absolute-link"].linkname == "/etc/redhat-release"
    assert by["usr/bin/su-like"].mode == 0o4755
    assert by["opt/read-only"].isdir() and by["opt/read-only"].mode == 0o555
    assert by["opt/pipe"].isfifo()
    assert ("long-" * 30) in [n.rsplit("/", 1)[-1] for n in names]
    assert by["etc/redhat-release"].pax_headers.get(f"SCHILY.xattr.{XATTR[0]}") is not None
    assert res.hardlinks == 1 and res.skipped == []  # type: ignore[attr-defined]


def test_xattr_value_round_trips_bytes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    raw, _, _ = _layer(tree)
    m = _member(raw, "etc/redhat-release")
    value = m.pax_headers[f"SCHILY.xattr.{XATTR[0]}"]
    assert value.encode("utf-8", "surrogateescape") == XATTR[1]


def test_same_tree_gives_identical_bytes_and_fixed_gzip_header(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a")
    raw1, gz1, res1 = _layer(a, mtime=0)
    os.utime(a / "etc" / "redhat-release", (999999, 999999))  # a new mtime must not matter
    raw2, gz2, res2 = _layer(a, mtime=0)
    assert raw1 == raw2 and gz1 == gz2
    assert res1.diff_id == res2.diff_id  # type: ignore[attr-defined]
    # gzip header: magic, deflate, no flags (no name), mtime 0
    assert gz1[:8] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00"


def test_keep_mtimes_keeps_the_tree_s_own(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    os.utime(tree / "etc" / "empty.conf", (1111111, 1111111))
    raw, _, _ = _layer(tree, mtime=None)
    m = _member(raw, "etc/empty.conf")
    assert m.mtime == 1111111


def test_socket_is_skipped_and_reported_never_silently(tmp_path: Path) -> None:
    """The skip is in the layer's result, which `container build` prints as a warning
    (cli/container.py); the tar writer no longer logs it too (def9aa5: export said it twice)."""
    tree = make_tree(tmp_path / "t", socket_file=True)
    raw, _, res = _layer(tree)
    assert res.skipped == [("opt/sock", SOCKET_REASON)]  # type: ignore[attr-defined]
    assert "opt/sock" not in [m.name for m in _members(raw)]


def test_tree_changing_under_the_writer_is_an_error(tmp_path: Path) -> None:
    from cernvm_build.container.source import Entry
    from cernvm_build.errors import BuildError

    tree = make_tree(tmp_path / "t")

    class Shrinking(LocalTree):
        def entries(self):  # type: ignore[no-untyped-def]
            for e in super().entries():
                if e.path == "etc/redhat-release":
                    e = Entry(**{**e.__dict__, "size": e.size + 5})
                yield e

    with pytest.raises(BuildError, match="etc/redhat-release: content size differs"):
        write_layer(Shrinking(tree), gz_out=io.BytesIO())


def test_parallel_gzip_bytes_do_not_depend_on_worker_count(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    (tree / "opt" / "big.bin").write_bytes(os.urandom(1 << 20) * 3 + b"tail" * 100_000)
    outs = []
    for workers in (1, 2, 3):
        gz = io.BytesIO()
        write_layer(LocalTree(tree), gz_out=gz, workers=workers)
        outs.append(gz.getvalue())
    assert outs[0] == outs[1] == outs[2]
    raw = io.BytesIO()
    write_layer(LocalTree(tree), raw_out=raw)
    assert gzip.decompress(outs[0]) == raw.getvalue()
    # the stream is one standard gzip member that the gzip tool accepts
    (tmp_path / "l.gz").write_bytes(outs[0])
    subprocess.run(["gzip", "-t", str(tmp_path / "l.gz")], check=True)


def _several_layers(
    tree: Path, work: Path, source: object = None, workers: int | None = None
) -> list[object]:
    from cernvm_build.container.layering import plan_layers
    from cernvm_build.container.layers import write_layers

    src = source if source is not None else LocalTree(tree)
    work.mkdir()
    plan = plan_layers(src, layer_bytes=64 << 10)  # type: ignore[arg-type]
    return write_layers(src, plan, work, gzip=True, raw=True, workers=workers)  # type: ignore[arg-type]


def test_layers_gzip_in_the_same_pass_is_the_tar_gzipped_whatever_the_threads(tmp_path: Path) -> None:
    """Each layer's blob (made while the tree is read, the layers sharing the deflating threads)
    is its tar, gzipped; the bytes are the same with one thread or two, and across runs."""
    tree = make_tree(tmp_path / "t")
    for i in range(6):
        d = tree / "usr" / f"lib{i}"
        d.mkdir(parents=True)
        (d / "big.bin").write_bytes(os.urandom(300 << 10) + bytes(700 << 10) + os.urandom(100 << 10))
        (d / "small.txt").write_bytes(b"x" * 100)
    runs = []
    for n, workers in enumerate((1, 2, 2)):
        files = _several_layers(tree, tmp_path / f"w{n}", workers=workers)
        runs.append([(f.gz.read_bytes(), f.result.digest, f.result.diff_id) for f in files])  # type: ignore[attr-defined]
        assert len(files) > 2
        for f in files:
            raw = f.raw.read_bytes()  # type: ignore[attr-defined]
            assert gzip.decompress(f.gz.read_bytes()) == raw  # type: ignore[attr-defined]
            assert f.result.size == len(raw)  # type: ignore[attr-defined]
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize("delta", [5, -5])
def test_a_file_that_changes_size_under_the_layers_writer_is_an_error(tmp_path: Path, delta: int) -> None:
    """The read-ahead thread reads small files before the writer reaches them: a file that grew or
    shrank since it was listed is still refused, and no thread is left behind."""
    import threading

    from cernvm_build.container.source import Entry
    from cernvm_build.errors import BuildError

    tree = make_tree(tmp_path / "t")

    class Changed(LocalTree):
        def entries(self):  # type: ignore[no-untyped-def]
            for e in super().entries():
                if e.path == "etc/redhat-release":
                    e = Entry(**{**e.__dict__, "size": e.size + delta})
                yield e

    before = threading.active_count()
    with pytest.raises(BuildError, match="etc/redhat-release: content size differs"):
        _several_layers(tree, tmp_path / "w", Changed(tree))
    assert threading.active_count() == before


def test_a_file_that_cannot_be_read_stops_the_layers_writer(tmp_path: Path) -> None:
    import threading

    tree = make_tree(tmp_path / "t")

    class Unreadable(LocalTree):
        def open(self, entry):  # type: ignore[no-untyped-def]
            if entry.path == "etc/redhat-release":
                raise PermissionError(13, "Permission denied", entry.path)
            return super().open(entry)

    before = threading.active_count()
    with pytest.raises(PermissionError):
        _several_layers(tree, tmp_path / "w", Unreadable(tree))
    assert threading.active_count() == before
