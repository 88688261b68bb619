"""Inflating whole objects with libdeflate (``inflate.py``): the same bytes and the same refusals, word
for word, as zlib's streaming path in the store (damaged streams, a bad Adler-32, bytes after the
stream, a cut trailer, more or fewer bytes than declared); decompressors pooled."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.cvmfs import inflate
from cernvm_build.cvmfs import store as store_mod
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
def test_objects_of_many_sizes_make_no_new_types() -> None:
    # A ctypes array type per output size (``c_char * size``) was a type made and left for the
    # garbage collector on every small object of a cold read, 40 % of inflating one (issue 13).
    streams = [(zlib.compress(DATA[:n]), n) for n in range(1000, 1040)]
    gc.collect()
    gc.disable()
    try:
        before = sum(isinstance(o, type) for o in gc.get_objects())
        assert all(inflate.inflate_exact(s, n) == DATA[:n] for s, n in streams)
        after = sum(isinstance(o, type) for o in gc.get_objects())
    finally:
        gc.enable()
    assert after - before < 5  # was 80: two per size


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
        monkeypatch.setattr(inflate, "_library", lambda: None)  # as on a host without it
    return str(request.param)


def test_the_store_inflates_the_same_either_way(
    tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    whole = inflate.inflate_exact
    monkeypatch.setattr(
        inflate, "inflate_exact", lambda data, size, into=None: calls.append(size) or whole(data, size, into)
    )
    out, adler = _inflated(tmp_path, STREAM, len(DATA))
    assert out == DATA
    assert calls == ([len(DATA)] if path == "libdeflate" else [])  # in one call where it can
    assert adler == [zlib.adler32(DATA)]  # the trailer's checksum, handed to the plain cache


@needs_libdeflate
def test_a_small_object_is_left_to_zlib_a_larger_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to ``WHOLE_MIN`` declared bytes zlib inflates (cheaper than one call into libdeflate),
    above it libdeflate: the same bytes and Adler-32 either way."""
    calls: list[int] = []
    whole = inflate.inflate_exact
    monkeypatch.setattr(
        inflate, "inflate_exact", lambda data, size, into=None: calls.append(size) or whole(data, size, into)
    )
    for size in (inflate.WHOLE_MIN, inflate.WHOLE_MIN + 1):
        data = DATA[:size]
        assert _inflated(tmp_path, zlib.compress(data), size) == (data, [zlib.adler32(data)])
    assert calls == [inflate.WHOLE_MIN + 1]


def _refusal(tmp_path: Path, stream: bytes, size: int) -> str:
    with pytest.raises(IntegrityError) as e:
        _inflated(tmp_path, stream, size)
    return f"{e.value} | {e.value.hint}"


_RAW = zlib.compressobj(wbits=-15)
_GZIP = zlib.compressobj(wbits=31)
_ZDICT = zlib.compressobj(zdict=b"a preset dictionary")


@needs_libdeflate
@pytest.mark.parametrize(
    ("stream", "size", "message"),
    [
        (STREAM, len(DATA) - 1, "inflates to more than the"),
        (STREAM + b"x", len(DATA), "truncated or over-long"),
        (STREAM + STREAM, len(DATA), "truncated or over-long"),
        (STREAM[:-1] + bytes([STREAM[-1] ^ 1]), len(DATA), "incorrect data check"),
        (STREAM[:-1], len(DATA), "truncated or over-long"),  # a cut trailer: no "zlib bomb"
        (STREAM[:-3], len(DATA) + 100, "truncated or over-long"),
        (STREAM[:-6], len(DATA), "truncated or over-long"),
        (STREAM[: len(STREAM) // 2], len(DATA), "truncated or over-long"),
        (b"", len(DATA), "truncated or over-long"),
        (STREAM[:3], len(DATA), "truncated or over-long"),
        (b"not zlib at all", len(DATA), "incorrect header check"),
        (_RAW.compress(DATA) + _RAW.flush(), len(DATA), "cannot be inflated"),
        (_GZIP.compress(DATA) + _GZIP.flush(), len(DATA), "incorrect header check"),
        (_ZDICT.compress(DATA) + _ZDICT.flush(), len(DATA), "cannot be inflated"),
    ],
    ids=[
        "bomb",
        "byte-after",
        "two-streams",
        "bad-adler32",
        "cut-1",
        "cut-3-declared-larger",
        "cut-6",
        "cut-half",
        "empty",
        "three-bytes",
        "not-zlib",
        "raw-deflate",
        "gzip",
        "preset-dictionary",
    ],
)
def test_the_store_refuses_with_zlibs_message_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: bytes, size: int, message: str
) -> None:
    """libdeflate's verdict is not the message: zlib's path runs over the same bytes (a cut trailer
    is libdeflate's "overflow"), so a host with the library says exactly what one without says."""
    calls: list[int] = []
    whole = inflate.inflate_exact
    monkeypatch.setattr(
        inflate, "inflate_exact", lambda data, size, into=None: calls.append(size) or whole(data, size, into)
    )
    with_libdeflate = _refusal(tmp_path, stream, size)
    assert calls == [size]  # libdeflate did see it
    monkeypatch.setattr(inflate, "_library", lambda: None)
    with_zlib = _refusal(tmp_path, stream, size)
    assert calls == [size]  # no slot without libdeflate: zlib's path alone made this refusal
    assert with_libdeflate == with_zlib
    assert message in with_zlib


@needs_libdeflate
def test_the_store_streams_through_zlib_what_libdeflate_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the whole-buffer bound, or with all ``AT_ONCE`` slots taken, the store's zlib path gives
    the same bytes and Adler-32; without a slot the stored bytes are never joined: the blocks stream
    as they come (memory stays bounded by the slots, not by the threads reading)."""
    monkeypatch.setattr(inflate, "WHOLE_MAX", len(DATA) - 1)  # the store's own bound lets it through
    assert _inflated(tmp_path, STREAM, len(DATA)) == (DATA, [zlib.adler32(DATA)])
    monkeypatch.undo()
    with contextlib.ExitStack() as held:  # every slot taken by other callers
        assert all(held.enter_context(inflate.slot()) for _ in range(inflate.AT_ONCE))
        with inflate.slot() as whole_now:
            assert not whole_now
        assert _inflated(tmp_path, STREAM, len(DATA)) == (DATA, [zlib.adler32(DATA)])
        store = ObjectStore(LocalFetcher(tmp_path, repo="x.test"), None, repo="x.test")
        read: list[int] = []
        chunks = [STREAM[i : i + 7000] for i in range(0, len(STREAM), 7000)]

        def stored() -> Iterator[bytes]:
            for c in chunks:
                read.append(len(c))
                yield c

        out = store._inflate_blocks(hash_bytes(STREAM), "", stored(), True, "file", len(DATA))
        next(out)
        assert len(read) < len(chunks)  # output before the last block came in: not joined
    with inflate.slot() as whole_now:
        assert whole_now
        out = inflate.inflate_exact(STREAM, len(DATA))
    assert type(out) is bytearray and out == DATA  # the buffer itself, not a copy of it


@needs_libdeflate
def test_a_stream_libdeflate_refuses_reaches_zlib_in_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fed the joined bytes as one block, zlib copies the rest of its input after every BLOCK of output
    (its cost grows with the square of the size): the fallback feeds it BLOCK-sized slices."""
    fed: list[int] = []
    real = zlib.decompressobj

    class Counted:
        def __init__(self) -> None:
            self.d = real()

        def decompress(self, data: bytes, limit: int) -> bytes:
            fed.append(len(data))
            return self.d.decompress(data, limit)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.d, name)

    monkeypatch.setattr(store_mod, "BLOCK", 4096)
    monkeypatch.setattr(store_mod.zlib, "decompressobj", Counted)
    assert "truncated or over-long" in _refusal(tmp_path, STREAM + b"x", len(DATA))
    assert fed and max(fed) <= 4096 and sum(1 for n in fed if n == 4096) > 1


@needs_libdeflate
def test_decompressors_are_pooled_not_one_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """libfuse2 calls each request on a fresh thread state: short-lived threads take decompressors
    from the pool (at most AT_ONCE of them), and those beyond it are freed."""
    lib = inflate._library()
    assert lib is not None
    lib.close()
    made: list[int] = []
    freed: list[int] = []
    alloc, free = lib.alloc, lib.free
    monkeypatch.setattr(lib, "alloc", lambda: made.append(1) or alloc())
    monkeypatch.setattr(lib, "free", lambda d: freed.append(1) or free(d))
    go = threading.Barrier(inflate.AT_ONCE + 2)
    results: list[object] = []  # checked here: an assert in a thread only warns

    def inflated() -> None:
        try:
            results.append(inflate.inflate_exact(STREAM, len(DATA)) == DATA)
        except Exception as e:  # reported by the main thread
            results.append(e)

    def one() -> None:
        go.wait()  # AT_ONCE + 2 at once: the pool must give back what it cannot keep
        inflated()

    for _ in range(5):
        threads = [threading.Thread(target=one) for _ in range(inflate.AT_ONCE + 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    before = len(made)
    for _ in range(50):  # one after another, each on a new thread
        t = threading.Thread(target=inflated)
        t.start()
        t.join()
    assert results == [True] * (5 * (inflate.AT_ONCE + 2) + 50)
    assert len(made) == before  # the pool's, not one per thread
    assert 0 < len(lib.pool) <= inflate.AT_ONCE
    assert len(made) - len(freed) == len(lib.pool)  # none lost
    lib.close()
    assert len(made) == len(freed)


def test_a_large_copys_inflating_and_writing_are_timed_apart(tmp_path: Path) -> None:
    """``--stats``: an object too big to keep in memory, made for its reader, is ``fetch``,
    ``big-inflate`` and ``big-write`` (they were one phase, where a wait could not be placed)."""
    from cernvm_build.cvmfs.plaincache import PlainCache

    store = ObjectStore(LocalFetcher(tmp_path / "srv", repo="x.test"), None, repo="x.test")
    store.plain_cache = PlainCache(tmp_path / "cache")
    phases = store.phases = store_mod.Phases()
    h = hash_bytes(STREAM)
    obj = tmp_path / "srv" / h.path()
    obj.parent.mkdir(parents=True)
    obj.write_bytes(STREAM)
    os.close(store.inflated_fd(str(h), "", size=len(DATA), compressed=True, what="file"))
    assert sorted(phases) == ["big-inflate", "big-write", "fetch"]
    assert all(phases[k][0] == 1 for k in phases)


@needs_libdeflate
def test_an_output_buffer_is_reused_and_each_result_is_right(monkeypatch: pytest.MonkeyPatch) -> None:
    """``reusable``: the next caller inflates into the same buffer (grown or not), each result a view
    of exactly its own bytes; one above REUSE_MAX, or a buffer whose old view is still held (it cannot
    grow), gets a fresh bytearray."""
    monkeypatch.setattr(inflate, "_spare", [])
    small, large = DATA[: len(DATA) // 3], DATA
    with inflate.reusable() as buf:
        first = buf
        out = inflate.inflate_exact(zlib.compress(small), len(small), buf)
        assert isinstance(out, memoryview) and out == small
        del out
    for data in (large, small):  # grown, then a part of it
        with inflate.reusable() as buf:
            assert buf is first
            out = inflate.inflate_exact(zlib.compress(data), len(data), buf)
            assert isinstance(out, memoryview) and out == data
            del out
    monkeypatch.setattr(inflate, "REUSE_MAX", len(small))
    with inflate.reusable() as buf:
        assert buf is first
        out = inflate.inflate_exact(STREAM, len(DATA), buf)
        assert isinstance(out, bytearray) and out == DATA
    monkeypatch.undo()
    monkeypatch.setattr(inflate, "_spare", [])
    with inflate.reusable() as buf:
        held = inflate.inflate_exact(zlib.compress(small), len(small), buf)
    with inflate.reusable() as buf:
        out = inflate.inflate_exact(STREAM, len(DATA), buf)  # cannot grow under ``held``
        assert isinstance(out, bytearray) and out == DATA
    assert held == small


@needs_libdeflate
def test_large_copies_made_one_after_another_share_one_buffer_and_are_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plain cache's copies of large objects (written, not kept in memory) are inflated into a
    ``reusable`` buffer: after each copy is written the next may overwrite it, and every copy on
    the disk holds its own object's bytes."""
    from cernvm_build.cvmfs.plaincache import TRAILER, PlainCache

    monkeypatch.setattr(inflate, "_spare", [])
    store = ObjectStore(LocalFetcher(tmp_path / "srv", repo="x.test"), None, repo="x.test")
    store.plain_cache = PlainCache(tmp_path / "cache")
    made = []
    for n in (len(DATA), len(DATA) // 2, len(DATA) - 1000):  # each different, shorter after longer
        data = DATA[:n][::-1] if n % 2 else DATA[:n]
        stream = zlib.compress(data)
        h = hash_bytes(stream)
        obj = tmp_path / "srv" / h.path()
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(stream)
        os.close(store.inflated_fd(str(h), "", size=n, compressed=True, what="file"))
        made.append((store.plain_cache.path(str(h), ""), data))
        assert len(inflate._spare) == 1 and len(inflate._spare[0]) >= n
    for path, data in made:
        assert path.read_bytes()[:-TRAILER] == data


def _served(tmp_path: Path, data: bytes) -> str:
    stream = zlib.compress(data)
    h = hash_bytes(stream)
    obj = tmp_path / "srv" / h.path()
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(stream)
    return str(h)


@needs_libdeflate
def test_small_copies_read_or_fetched_ahead_share_one_buffer_and_own_their_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small object read whole on a miss, or fetched ahead in a batch (kept for its reader or
    not: a boot list's), is inflated into a ``reusable`` buffer too, not a fresh zeroed one: what
    a reader gets or is handed over is bytes of its own (copied out once), right after later
    objects were inflated into that buffer, and every copy on the disk holds its object's bytes."""
    from cernvm_build.cvmfs.plaincache import TRAILER, PlainCache

    monkeypatch.setattr(inflate, "_spare", [])
    store = ObjectStore(LocalFetcher(tmp_path / "srv", repo="x.test"), None, repo="x.test")
    store.plain_cache = PlainCache(tmp_path / "cache")
    sizes = (20_000, 9_000, 30_000, 12_000, 25_000, 15_000)  # above WHOLE_MIN, at most AHEAD_ITEM
    datas = [os.urandom(300) * (n // 300) + DATA[: n % 300] for n in sizes]
    names = [_served(tmp_path, d) for d in datas]
    got = [
        store.read(
            names[i], "", size=len(datas[i]), offset=0, length=len(datas[i]), compressed=True, what="f"
        )
        for i in (0, 1)
    ]
    assert len(inflate._spare) == 1
    items = [(names[i], "", len(datas[i]), True, "f") for i in (2, 3)]
    assert store.fetch_ahead_many(items) == (2, 0)
    assert store.fetch_ahead_many([(names[i], "", len(datas[i]), True, "f") for i in (4, 5)], keep=False) == (
        2,
        0,
    )
    assert len(inflate._spare) == 1
    handed = [store.cached_whole(names[i], "", len(datas[i])) for i in (2, 3)]
    for i, data in enumerate(got + handed):
        assert type(data) is bytes and data[: sizes[i]] == datas[i]
    for name, data in zip(names, datas, strict=True):
        assert store.plain_cache.path(name, "").read_bytes()[:-TRAILER] == data


def test_a_cold_object_above_the_spill_size_is_made_from_its_scratch_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an object cache, stored bytes above SPILL go to a scratch file while they are
    hash-checked, also on the cold read's own path (``_make_plain``): the copy is right and the
    scratch file is gone; a damaged one is refused with nothing kept."""
    from cernvm_build.cvmfs.plaincache import TRAILER, PlainCache

    monkeypatch.setattr(store_mod, "SPILL", 1000)
    store = ObjectStore(LocalFetcher(tmp_path / "srv", repo="x.test"), None, repo="x.test")
    store.plain_cache = PlainCache(tmp_path / "cache")
    name = _served(tmp_path, DATA)
    os.close(store.inflated_fd(name, "", size=len(DATA), compressed=True, what="file"))
    assert store.plain_cache.path(name, "").read_bytes()[:-TRAILER] == DATA
    assert not any(store.scratch().iterdir())
    bad = _served(tmp_path, DATA[:-1])
    (tmp_path / "srv" / hash_bytes(zlib.compress(DATA[:-1])).path()).write_bytes(zlib.compress(DATA[:-2]))
    with pytest.raises(IntegrityError, match="hash mismatch"):
        store.inflated_fd(bad, "", size=len(DATA) - 1, compressed=True, what="file")
    assert not store.plain_cache.has(bad, "") and not any(store.scratch().iterdir())


def test_the_in_memory_lru_bounds_memory_for_many_small_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting the objects' bytes alone, a tree of small files (an export, a find over a mount) kept
    every object: 200,000 7-byte files held ~33 MB. Each entry's own cost counts against the bound."""
    import tracemalloc

    monkeypatch.setattr(store_mod, "LRU_BYTES", 1 << 20)
    store = ObjectStore(LocalFetcher(tmp_path, repo="x.test"), None, repo="x.test")
    keys = [f"{i:040x}C" for i in range(40_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, key in enumerate(keys):
            store._lru_put(key, str(i).encode())
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= store_mod.LRU_BYTES, held
    assert len(store._lru) < len(keys)
