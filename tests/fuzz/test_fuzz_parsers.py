"""Fuzzing the parsers of untrusted input: the CernVM-FS manifest and whitelist, catalogs (SQLite files
whose rows, schema version and properties are mutated, read through the reader's ``Catalog``), and the
user data read by the bootloader and by cernvm-launch. The property: whatever the input, only the
project's own errors (``CernVMError``) escape — never a traceback — and the bootloader's parser, which
runs in the initrd and reports instead of raising, never raises. Every crash found became an
``@example`` here and was fixed.
"""

from __future__ import annotations

import gzip
import shutil
import sqlite3
import tempfile
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cernvm_build.bootloader import userdata as boot_userdata
from cernvm_build.cvmfs import blacklist, manifest, whitelist
from cernvm_build.cvmfs.catalog import Catalog, DirEntry
from cernvm_build.errors import CernVMError
from cernvm_build.launch import userdata as launch_userdata

FIXTURE = Path(__file__).parents[1] / "cvmfs" / "data" / "fixture.cernvm.test" / "repo"

# -- text made of the pieces real files have, plus noise --------------------------------------------

HEX40 = st.text("0123456789abcdef", min_size=40, max_size=40)
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", "0", "-1", "1e9", "0x10", "١٢", "1_000", "9" * 5000, " 7", "nan"]),
)
NOISE = st.text(max_size=40)
HASHES = st.one_of(HEX40, HEX40.map(lambda h: h + "-rmd160"), HEX40.map(lambda h: h + "-shake128"), NOISE)


def _lines(draw: st.DrawFn, keys: str, values: st.SearchStrategy[str]) -> list[str]:
    return draw(
        st.lists(st.tuples(st.sampled_from(keys), values).map("".join), max_size=20),
    )


@st.composite
def manifests(draw: st.DrawFn) -> bytes:
    values = st.one_of(HASHES, NUMBERS, NOISE, st.sampled_from(["yes", "no"]))
    lines = _lines(draw, "CBRDSGANXHTMYLZ\x00é-", values)
    body = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    tail = draw(
        st.sampled_from(
            [b"", b"\n--\n", b"\n--\n" + b"3784a0da5bbf068c45e930878f1281c866714b84" + b"\n\x00sig", b"--\n"]
        )
    )
    return body + tail


@st.composite
def whitelists(draw: st.DrawFn) -> bytes:
    stamps = st.one_of(
        st.text("0123456789", min_size=14, max_size=14),
        st.just("20261125042143"),
        st.sampled_from(["99999999999999", "00000000000000", "2026112504214", "²0261125042143"]),
        NOISE,
    )
    fpr = st.lists(st.text("0123456789ABCDEF", min_size=2, max_size=2), min_size=1, max_size=21).map(":".join)
    head = [draw(stamps), "E" + draw(stamps), "N" + draw(st.one_of(st.just("fixture.cernvm.test"), NOISE))]
    rest = draw(
        st.lists(st.one_of(fpr, fpr.map(lambda f: f + " # comment"), st.just("Vpkcs7"), NOISE), max_size=8)
    )
    lines = draw(st.permutations(head)) if draw(st.booleans()) else head
    text = "\n".join([*lines, *rest]) + draw(st.sampled_from(["", "\n", "\r\n", "\n--\nabc\n"]))
    return text.encode("utf-8", errors="surrogatepass")


@given(st.one_of(manifests(), st.binary(max_size=300)))
@example(b"C" + b"a" * 40 + b"\nR" + b"d" * 32 + b"\nD240\nS" + b"9" * 5000)
@example(b"C\nR0\nD0\nS0")  # found by the fuzzer: an empty root hash was an AssertionError
@example(b"\r")  # found by the fuzzer (20,000 examples): a line of only CR was an IndexError
def test_manifest_parser(data: bytes) -> None:
    try:
        manifest.parse(data)
    except CernVMError:
        pass
    try:
        manifest.split_signed(data, ".cvmfspublished")
    except CernVMError:
        pass


@given(st.one_of(whitelists(), st.binary(max_size=300)))
def test_whitelist_parser(data: bytes) -> None:
    try:
        w = whitelist.parse(data)
    except CernVMError:
        return
    w.expired()
    w.lists("AA:BB")


@st.composite
def blacklists(draw: st.DrawFn) -> bytes:
    fpr = st.lists(st.text("0123456789ABCDEFabcdef", min_size=2, max_size=2), min_size=1, max_size=21).map(
        ":".join
    )
    floor = st.tuples(st.one_of(st.just("fixture.cernvm.test"), NOISE), NUMBERS).map(
        lambda t: f"<{t[0]} {t[1]}"
    )
    items = st.one_of(
        fpr, fpr.map(lambda f: f + "-RMD160"), fpr.map(lambda f: f + " # c"), floor, st.just("# c"), NOISE
    )
    text = "\n".join(draw(st.lists(items, max_size=8))) + draw(st.sampled_from(["", "\n", "\r\n"]))
    return text.encode("utf-8", errors="surrogatepass")


@given(st.one_of(blacklists(), st.binary(max_size=300)))
@example(b"<a.test \xd9\xa1\n")  # an Arabic-Indic digit: int() takes it, a revision is ASCII digits
def test_blacklist_parser(data: bytes) -> None:
    """``/etc/cvmfs/blacklist`` and the user data's entries (``cvmfs/blacklist.py``)."""
    try:
        b = blacklist.parse(data, "bl")
    except CernVMError:
        return
    assert b.certificate_entry(b"not a certificate, hashed all the same") is None or b.certificates
    try:
        b.check_revision("fixture.cernvm.test", 1)
    except CernVMError:
        assert b.floors["fixture.cernvm.test"][0] > 1


def test_the_real_manifest_and_whitelist_parse() -> None:
    """The fuzzers' seeds are the real server's files, which must parse (or the fuzz tests nothing)."""
    m = manifest.parse((FIXTURE / ".cvmfspublished").read_bytes())
    assert m.fqrn == "fixture.cernvm.test"
    assert whitelist.parse((FIXTURE / ".cvmfswhitelist").read_bytes()).fqrn == "fixture.cernvm.test"


# -- catalogs: the real server's catalogs, then rows, schema and properties changed with sqlite -------


def _object(hash_text: str) -> bytes:
    return zlib.decompress((FIXTURE / "data" / hash_text[:2] / (hash_text[2:] + "C")).read_bytes())


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The fixture's root catalog and its nested catalog (with chunked files), decompressed."""
    out = tmp_path_factory.mktemp("catalogs")
    root_hash = manifest.parse((FIXTURE / ".cvmfspublished").read_bytes()).root_hash
    (out / "root.db").write_bytes(_object(root_hash))
    nested = Catalog(out / "root.db", name=root_hash, where="seed").nested()
    paths = [out / "root.db"]
    for i, ref in enumerate(nested):
        (out / f"nested{i}.db").write_bytes(_object(ref.hash))
        paths.append(out / f"nested{i}.db")
    return paths


SQL_VALUES = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, -1, 2**31, 2**32 - 1, 2**62, -(2**63)]),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=40),
)
COLUMNS = ["hash", "size", "mode", "mtime", "flags", "name", "symlink", "uid", "gid", "hardlinks", "xattr"]
PROPERTIES = ["schema", "schema_revision", "root_prefix", "revision"]


@st.composite
def catalog_edits(draw: st.DrawFn) -> list[tuple[str, tuple[Any, ...]]]:
    """SQL statements that change a catalog as a hostile publisher might."""
    edits: list[tuple[str, tuple[Any, ...]]] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["row", "row", "row", "property", "nested", "chunk", "drop"]))
        value = draw(SQL_VALUES)
        if kind == "row":
            column = draw(st.sampled_from(COLUMNS))
            row = draw(st.integers(1, 40))
            edits.append((f"UPDATE catalog SET {column}=? WHERE rowid=?", (value, row)))
        elif kind == "property":
            key = draw(st.sampled_from(PROPERTIES))
            edits.append(("INSERT OR REPLACE INTO properties (key, value) VALUES (?, ?)", (key, value)))
        elif kind == "nested":
            column = draw(st.sampled_from(["path", "sha1", "size"]))
            edits.append((f"UPDATE nested_catalogs SET {column}=?", (value,)))
        elif kind == "chunk":
            column = draw(st.sampled_from(["offset", "size", "hash"]))
            edits.append((f"UPDATE chunks SET {column}=? WHERE rowid=?", (value, draw(st.integers(1, 5)))))
        else:
            table = draw(
                st.sampled_from(["properties", "nested_catalogs", "chunks", "statistics", "catalog"])
            )
            edits.append((f"DROP TABLE IF EXISTS {table}", ()))
    return edits


def _walk(cat: Catalog, path: str, budget: list[int]) -> Iterator[DirEntry]:
    """Every entry under ``path`` (bounded: a cycle of parent hashes is the reader's problem, not ours)."""
    for entry in cat.children(path):
        budget[0] -= 1
        if budget[0] < 0:
            return
        yield entry
        if entry.is_dir and entry.path != path:
            yield from _walk(cat, entry.path, budget)


def _read_everything(db: Path) -> None:
    cat = Catalog(db, name="f" * 40, where="fuzzed.cernvm.test")
    try:
        _ = (cat.revision, cat.schema, cat.root_prefix)
        cat.statistics()
        cat.nested()
        root = cat.lookup(cat.root_prefix or "")
        if root is not None:
            _ = (root.inode, root.is_dir)
        for entry in _walk(cat, cat.root_prefix or "", [500]):
            _ = (entry.inode, entry.is_file, entry.is_special, entry.compressed, entry.chunks)
            if entry.is_special:
                _ = entry.rdev
    finally:
        cat.close()


#: found by this fuzzer before the reader checked its rows (each crashed with the error named)
FOUND: list[tuple[list[tuple[str, tuple[Any, ...]]], int]] = [
    ([("UPDATE catalog SET hash=? WHERE rowid=?", (4294967295, 3))], 0),  # MemoryError: bytes(2**32)
    ([("UPDATE catalog SET mode=? WHERE rowid=?", (-1904, 1))], 0),  # OverflowError in stat
    (
        [("INSERT OR REPLACE INTO properties (key, value) VALUES (?, ?)", ("schema", b"\x0c"))],
        0,
    ),  # ValueError
    ([("UPDATE catalog SET xattr=? WHERE rowid=?", (-(2**63), 1))], 0),  # TypeError
    ([("UPDATE nested_catalogs SET size=?", ("x",))], 0),  # ValueError
    ([("UPDATE chunks SET offset=? WHERE rowid=?", (None, 1))], 1),  # TypeError
    ([("UPDATE catalog SET size=? WHERE rowid=?", ("x", 1))], 0),  # ValueError
    ([("UPDATE catalog SET hash=? WHERE rowid=?", ("text", 5))], 0),  # TypeError
]


def _with_found(test: Any) -> Any:
    for edits, which in FOUND:
        test = example(edits=edits, which=which)(test)
    return test


@_with_found
@given(edits=catalog_edits(), which=st.integers(0, 1))
def test_catalog_reader(seeds: list[Path], edits: list[tuple[str, tuple[Any, ...]]], which: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "catalog.db"
        shutil.copyfile(seeds[min(which, len(seeds) - 1)], db)
        with sqlite3.connect(db) as con:
            for sql, args in edits:
                try:
                    con.execute(sql, args)
                except sqlite3.Error:
                    pass  # e.g. a column this schema does not have
        con.close()
        try:
            _read_everything(db)
        except CernVMError:
            pass


@given(st.binary(max_size=2000))
def test_catalog_that_is_not_sqlite(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "catalog.db"
        db.write_bytes(data)
        try:
            _read_everything(db)
        except CernVMError:
            pass


def test_the_seed_catalogs_read_whole(seeds: list[Path]) -> None:
    for db in seeds:
        _read_everything(db)


# -- user data ---------------------------------------------------------------------------------------

UD_LINES = st.one_of(
    st.sampled_from(
        [
            "[ucernvm-begin]",
            "[ucernvm-end]",
            "cvmfs_branch=cernvm-prod.cern.ch",
            "cvmfs_tag=HEAD",
            "cvmfs_server=a.b:80,c",
            "#cloud-config",
            "users: [a]",
            "#!/bin/sh",
            "[amiconfig]",
            "Content-Type: multipart/mixed; boundary=X",
            "MIME-Version: 1.0",
            "--X",
            "--X--",
            "Content-Type: text/cloud-config",
            "Content-Transfer-Encoding: base64",
            "a: 2020-99-99",
            "a: &a [1]",
            "b: *a",
            "key",
            "=value",
            "x: !!python/object:os.system {}",
            "\t",
            "",
        ]
    ),
    NOISE,
)


@st.composite
def user_data(draw: st.DrawFn) -> bytes:
    data = "\n".join(draw(st.lists(UD_LINES, max_size=25))).encode("utf-8", errors="surrogatepass")
    how = draw(st.sampled_from(["plain", "plain", "gzip", "cut-gzip", "junk-gzip"]))
    if how == "gzip":
        return gzip.compress(data)
    if how == "cut-gzip":
        return gzip.compress(data)[: draw(st.integers(2, 30))]
    if how == "junk-gzip":
        return b"\x1f\x8b" + draw(st.binary(max_size=50))
    return data


@given(st.one_of(user_data(), st.binary(max_size=300)))
@example(b"\x1f\x8b")  # found by the fuzzer: gzip's EOFError
@example(b"\x1f\x8b\x08\x00\xcd\x8d\x0fk\x02\xff")  # found by the fuzzer: gzip cut short
def test_bootloader_user_data_parser_never_raises(data: bytes) -> None:
    parsed = boot_userdata.parse(data)
    assert all("\n" not in m for m in parsed.messages)
    boot_userdata.render(parsed.values)


@given(st.one_of(user_data(), st.binary(max_size=300)))
@example(b"\x1f\x8b")  # found by the fuzzer: gzip's EOFError
@example(b"#cloud-config\na: 2020-99-99")  # found by the fuzzer: PyYAML's ValueError for the date
@example(b"#cloud-config\na: " + b"[" * 5000 + b"]" * 5000)
def test_launch_user_data_parser(data: bytes) -> None:
    try:
        ud = launch_userdata.parse(data, "user-data")
    except CernVMError:
        return
    launch_userdata.render(ud)


def _gzip_bomb(inflated: int) -> bytes:
    """``inflated`` zero bytes, gzip'd (about a thousandth of the size)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join([*(c.compress(block) for _ in range(inflated >> 20)), c.flush()])


def test_a_gzip_bomb_in_user_data_is_refused_in_bounded_memory() -> None:
    bomb = _gzip_bomb(256 << 20)
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    try:
        parsed = boot_userdata.parse(bomb)
        with pytest.raises(
            CernVMError, match=r"user-data: user data: gzip data inflates to more than 1048576"
        ):
            launch_userdata.parse(bomb, "user-data")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.values == {} and parsed.messages == [
        "user data ignored: gzip data inflates to more than 1048576 bytes"
    ]
    assert peak < 8 << 20, f"{peak} bytes allocated"
    # gzip'd user data of an honest size still works
    ok = gzip.compress(b"[ucernvm-begin]\ncvmfs_tag=HEAD\n[ucernvm-end]\n")
    assert boot_userdata.parse(ok).values == {"cvmfs_tag": "HEAD"}
    assert launch_userdata.parse(ok, "user-data").ucernvm == {"cvmfs_tag": "HEAD"}
