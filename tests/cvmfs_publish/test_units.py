"""Pure logic: chunk boundaries, catalog encodings, keys, tag names."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cernvm_build.cvmfs import rsa
from cernvm_build.cvmfs.catalog_rows import md5_pair
from cernvm_build.cvmfs.catalog_write import serialize_xattrs
from cernvm_build.cvmfs.chunking import ChunkingSettings, split_points
from cernvm_build.cvmfs.history_write import auto_tag_name
from cernvm_build.cvmfs.keys import check_fqrn, generate_keys, load_keys
from cernvm_build.errors import CvmfsError

from .helpers import FIXTURE

S = ChunkingSettings(min_size=1000, avg_size=3000, max_size=8000)


def _sizes(cuts: list[int]) -> list[int]:
    return [b - a for a, b in zip([0, *cuts], cuts, strict=False)]


def test_chunks_respect_min_and_max_and_cover_the_file() -> None:
    data = random.Random(3).randbytes(400_000)
    cuts = split_points(data, S)
    sizes = _sizes(cuts)
    assert cuts[-1] == len(data) and sum(sizes) == len(data)
    assert all(S.min_size <= s <= S.max_size for s in sizes[:-1])
    assert 2000 < sum(sizes) / len(sizes) < 4500  # near avg for random data


def test_cut_points_do_not_depend_on_read_size() -> None:
    data = random.Random(4).randbytes(200_000)
    assert split_points(data, S, block=777) == split_points(data, S, block=65536)


def test_cut_points_follow_content_after_an_insertion() -> None:
    data = random.Random(5).randbytes(200_000)
    shifted = split_points(b"inserted!" + data, S)
    original = split_points(data, S)
    # after the first couple of chunks, the boundaries realign at the same content
    assert set(original[3:]) <= {c - 9 for c in shifted}


def test_constant_data_is_cut_at_max_size() -> None:
    assert _sizes(split_points(bytes(20_000), S)) == [8000, 8000, 4000]


def test_chunking_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        ChunkingSettings(min_size=10, avg_size=5, max_size=20)
    assert not ChunkingSettings(enabled=False).should_chunk(1 << 30)
    assert ChunkingSettings().threshold == 511  # the real server: UINT32_MAX / 8 MiB


def test_md5_pairs_match_the_real_server() -> None:
    # root entry row of the fixture written by cvmfs_server
    assert md5_pair("") == (338333539836370388, 9098107892288553193)
    assert md5_pair("/opt/sw") == (2386521372107762498, 3202243136491376986)


def test_xattr_blob_layout() -> None:
    assert serialize_xattrs({}) is None
    blob = serialize_xattrs({"user.b": b"2", "user.a": b"1"})
    assert blob == b"\x01\x02\x06\x01user.a1\x06\x01user.b2"
    with pytest.raises(ValueError):
        serialize_xattrs({"user.x": b"v" * 300})


def test_keys_round_trip_and_signatures(tmp_path: Path) -> None:
    keys = generate_keys("round.trip.test")
    files = keys.save(tmp_path)
    assert {p.name for p in files} == {f"round.trip.test.{e}" for e in ("masterkey", "pub", "crt", "key")}
    assert (tmp_path / "round.trip.test.masterkey").stat().st_mode & 0o777 == 0o600
    loaded = load_keys(tmp_path, "round.trip.test")
    assert loaded == keys
    pub = rsa.load_public_key(keys.public_key_pem)
    assert rsa.verify_raw([pub], b"abc123", keys.sign_whitelist("abc123"))
    cert = rsa.load_certificate(keys.cert_pem)
    assert rsa.verify_pkcs1_sha1(cert.public_key, b"abc123", keys.sign_manifest("abc123"))


def test_fixture_keys_load_and_fingerprint_matches_its_whitelist() -> None:
    keys = load_keys(FIXTURE / "keys", "fixture.cernvm.test")
    whitelist = (FIXTURE / "repo" / ".cvmfswhitelist").read_bytes()
    assert keys.fingerprint().encode() in whitelist


def test_bad_key_directories(tmp_path: Path) -> None:
    with pytest.raises(CvmfsError, match="key file missing"):
        load_keys(tmp_path, "a.b.c")
    generate_keys("a.b.c").save(tmp_path)
    other = generate_keys("a.b.c")
    (tmp_path / "a.b.c.crt").write_bytes(other.cert_pem)
    with pytest.raises(CvmfsError, match="certificate does not match"):
        load_keys(tmp_path, "a.b.c")
    (tmp_path / "a.b.c.key").write_bytes(b"garbage")
    with pytest.raises(CvmfsError, match="not an unencrypted PEM"):
        load_keys(tmp_path, "a.b.c")
    with pytest.raises(CvmfsError, match="invalid repository name"):
        check_fqrn("no_dots")


def test_auto_tag_names_look_like_the_servers() -> None:
    assert auto_tag_name(1_795_580_508) == "generic-2026-11-25T04:21:48.000Z"


def test_a_wide_directory_is_catalogued_without_holding_its_entries(tmp_path: Path) -> None:
    """lf18: the catalog builder read each directory's staged rows into a list (~0.8 KB traced per
    entry: 40 MB for 50,000 files, 0.8 GB for a million); now they stream in batches. The rows and
    so the catalog are the same (one catalog hash either way, checked when this was made)."""
    import hashlib
    import tracemalloc

    from cernvm_build.cvmfs.catalog_build import CatalogBuilder
    from cernvm_build.cvmfs.catalog_write import Entry
    from cernvm_build.cvmfs.objwrite import ObjectWriter
    from cernvm_build.cvmfs.stage import Stage

    (tmp_path / "s" / "data" / "txn").mkdir(parents=True)
    (tmp_path / "scratch").mkdir()
    stage = Stage(tmp_path / "stage.db")
    digest = hashlib.sha1(b"x").digest()
    stage.put_many([Entry(path="", mode=0o40755, mtime=1), Entry(path="/big", mode=0o40755, mtime=1)])
    n = 50_000
    for k in range(0, n, 10_000):
        stage.put_many(
            [
                Entry(path=f"/big/f{i:06d}", mode=0o100644, mtime=1, size=1, digest=digest)
                for i in range(k, k + 10_000)
            ]
        )
    tracemalloc.start()
    try:
        CatalogBuilder(stage, ObjectWriter(tmp_path / "s"), None, tmp_path / "scratch", 2, 1).build()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        stage.close()
    assert peak < 10 << 20, f"{peak / n:.0f} bytes per entry"


def test_a_stage_listing_left_unfinished_says_nothing_once_the_stage_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr21 N2: a publish refused mid-way (a hub chain with an empty symlink target) left the catalog
    builder's listings suspended; collected after ``close`` they printed 'Exception ignored in
    <generator Stage.iter_children>' and a ``sqlite3.ProgrammingError`` traceback under the error."""
    import gc
    import sys

    from cernvm_build.cvmfs.catalog_write import Entry
    from cernvm_build.cvmfs.stage import Stage

    said: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", said.append)
    stage = Stage(tmp_path / "stage.db")
    stage.put_many([Entry(path="", mode=0o40755, mtime=1), Entry(path="/f", mode=0o100644, mtime=1)])
    listing = stage.iter_children("", dirs=False)
    assert next(listing).entry.path == "/f"
    stage.close()
    del listing
    gc.collect()
    assert said == []


def test_keys_are_loaded_only_for_a_repository_name(tmp_path: Path) -> None:
    """pr21 N5: ``hub ingest --hub-fqrn ../x`` read ``<keys>/../x.masterkey``, a file beside the keys
    folder, and its hint said to run 'cvmfs keygen ../x', which refuses the name."""
    keys = generate_keys("demo.cernvm.test")
    (tmp_path / "keys").mkdir()
    keys.save(tmp_path)
    for ext in ("masterkey", "pub", "crt", "key"):
        (tmp_path / f"demo.cernvm.test.{ext}").rename(tmp_path / f"x.cernvm.test.{ext}")
    with pytest.raises(CvmfsError) as e:
        load_keys(tmp_path / "keys", "../x.cernvm.test")
    assert e.value.message == "invalid repository name '../x.cernvm.test'"
