"""Inflating whole objects with libdeflate (``inflate.py``): the same bytes and the same refusals as
zlib's streaming path in the store (damaged streams, a bad Adler-32, bytes after the stream, more or
fewer bytes than declared)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from cernvm_build.cvmfs import inflate
from cernvm_build.cvmfs.fetch import LocalFetcher
from cernvm_build.cvmfs.objects import hash_bytes
from cernvm_build.cvmfs.store import ObjectStore
from cernvm_build.errors import IntegrityError

needs_libdeflate = pytest.mark.skipif(not inflate.available(), reason="libdeflate.so.0 is not installed")

DATA = b"".join(i.to_bytes(4, "big") * (i % 7 + 1) for i in range(50_000)) + os.urandom(3000)
STREAM = zlib.compress(DATA)


@needs_libdeflate
def test_a_whole_stream_inflates_to_zlibs_bytes() -> None:
    assert inflate.inflate_exact(STREAM, len(DATA)) == DATA
    assert inflate.inflate_exact(zlib.compress(b""), 0) == b""


@needs_libdeflate
def test_more_than_declared_is_refused_and_less_comes_back_short() -> None:
    with pytest.raises(inflate.Overflow):
        inflate.inflate_exact(STREAM, len(DATA) - 1)
    assert inflate.inflate_exact(STREAM, len(DATA) + 10) == DATA


@needs_libdeflate
@pytest.mark.parametrize(
    "bad",
    [
        STREAM + b"\0",  # a byte after the stream
        STREAM[:-1] + bytes([STREAM[-1] ^ 1]),  # its Adler-32 wrong
        STREAM[: len(STREAM) // 2],  # cut short
        b"not zlib at all",
    ],
    ids=["byte-after", "bad-adler32", "cut-short", "not-zlib"],
)
def test_a_damaged_stream_is_refused(bad: bytes) -> None:
    with pytest.raises(inflate.Damaged):
        inflate.inflate_exact(bad, len(DATA))


@needs_libdeflate
def test_above_the_whole_buffer_bound_it_leaves_the_object_to_zlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inflate, "WHOLE_MAX", len(DATA) - 1)
    assert inflate.inflate_exact(STREAM, len(DATA)) is None


def _inflated(tmp_path: Path, stream: bytes, size: int) -> tuple[bytes, list[int]]:
    store = ObjectStore(LocalFetcher(tmp_path, repo="x.test"), None, repo="x.test")
    adler: list[int] = []
    h = hash_bytes(stream)
    chunks = [stream[i : i + 7000] for i in range(0, len(stream), 7000)]
    out = b"".join(store._inflate_blocks(h, "", iter(chunks), True, "file", size, adler32=adler))
    return out, adler


@pytest.fixture(params=["libdeflate", "zlib"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "libdeflate" and not inflate.available():
        pytest.skip("libdeflate.so.0 is not installed")
    if request.param == "zlib":
        monkeypatch.setattr(inflate, "available", lambda: False)
    return str(request.param)


def test_the_store_inflates_the_same_either_way(
    tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    whole = inflate.inflate_exact
    monkeypatch.setattr(inflate, "inflate_exact", lambda data, size: calls.append(size) or whole(data, size))
    out, adler = _inflated(tmp_path, STREAM, len(DATA))
    assert out == DATA
    assert calls == ([len(DATA)] if path == "libdeflate" else [])  # in one call where it can
    assert adler == [zlib.adler32(DATA)]  # the trailer's checksum, handed to the plain cache


@pytest.mark.parametrize(
    ("stream", "size", "message"),
    [
        (STREAM, len(DATA) - 1, "inflates to more than the"),
        (STREAM + b"x", len(DATA), "cannot be inflated|over-long"),
        (STREAM[:-1] + bytes([STREAM[-1] ^ 1]), len(DATA), "cannot be inflated"),
    ],
    ids=["bomb", "byte-after", "bad-adler32"],
)
def test_the_store_refuses_the_same_either_way(
    tmp_path: Path, path: str, stream: bytes, size: int, message: str
) -> None:
    with pytest.raises(IntegrityError, match=message):
        _inflated(tmp_path, stream, size)
