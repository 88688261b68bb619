"""Every bad input of issue 3: one clear error naming repository, object and failure; nothing bad cached."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa as crsa

from cernvm_build.cvmfs import SnapshotSpec, manifest, open_repository, whitelist
from cernvm_build.cvmfs.cache import ObjectCache
from cernvm_build.cvmfs.fetch import LocalFetcher, Unreachable
from cernvm_build.cvmfs.objects import compress, hash_bytes
from cernvm_build.cvmfs.repository import SIGNED_SET
from cernvm_build.cvmfs.serve import Server
from cernvm_build.cvmfs.store import ObjectStore
from cernvm_build.errors import CvmfsError, IntegrityError

from .conftest import FQRN, ROOT_REV2, Fixture


def _manifest(fx: Fixture) -> manifest.Manifest:
    return manifest.parse((fx.repo / ".cvmfspublished").read_bytes())


def _dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    return f"http://127.0.0.1:{port}/cvmfs/{FQRN}"


def test_tampered_manifest_body(fx: Fixture) -> None:
    p = fx.repo / ".cvmfspublished"
    p.write_bytes(p.read_bytes().replace(b"\nS2\n", b"\nS3\n"))
    with pytest.raises(IntegrityError, match=rf"{FQRN}: .cvmfspublished: body does not match its hash"):
        open_repository(fx.repo, public_keys=[fx.pub])


def test_manifest_signed_by_another_key(fx: Fixture) -> None:
    signed = manifest.split_signed((fx.repo / ".cvmfspublished").read_bytes(), "m")
    body = signed.body.replace(b"\nS2\n", b"\nS3\n")
    h = manifest.body_hash(body)
    other = crsa.generate_private_key(public_exponent=65537, key_size=2048)
    sig = other.sign(h.encode(), padding.PKCS1v15(), hashes.SHA1())
    (fx.repo / ".cvmfspublished").write_bytes(manifest.join_signed(body, h, sig))
    with pytest.raises(IntegrityError, match="signature does not verify against certificate"):
        open_repository(fx.repo, public_keys=[fx.pub])


def test_tampered_whitelist(fx: Fixture) -> None:
    p = fx.repo / ".cvmfswhitelist"
    p.write_bytes(p.read_bytes().replace(b"E2036", b"E2046"))
    with pytest.raises(IntegrityError, match=r"\.cvmfswhitelist: body does not match its hash"):
        open_repository(fx.repo, public_keys=[fx.pub])


def test_expired_whitelist(fx: Fixture) -> None:
    body = manifest.split_signed((fx.repo / ".cvmfswhitelist").read_bytes(), "w").body
    w = whitelist.parse(body)
    # the hour it is checked at, not the minutes it was written with (a time still ahead: pr17c 5)
    past = dt.datetime(2020, 1, 1, 5, 59, 59, tzinfo=dt.UTC)
    fx.resign_whitelist(whitelist.serialize(whitelist.Whitelist(past, past, w.fqrn, w.fingerprints)))
    with pytest.raises(IntegrityError, match=r"whitelist expired on 2020-01-01 05:00:00 UTC") as e:
        open_repository(fx.repo, public_keys=[fx.pub])
    assert e.value.hint and "re-sign" in e.value.hint


def test_whitelist_without_the_certificate(fx: Fixture) -> None:
    body = manifest.split_signed((fx.repo / ".cvmfswhitelist").read_bytes(), "w").body
    w = whitelist.parse(body)
    fx.resign_whitelist(
        whitelist.serialize(whitelist.Whitelist(w.created, w.expires, w.fqrn, ("AA:BB:CC:DD",)))
    )
    with pytest.raises(IntegrityError, match="is not in the whitelist"):
        open_repository(fx.repo, public_keys=[fx.pub])


def test_wrong_key(fx: Fixture, tmp_path: Path) -> None:
    other = crsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    wrong = tmp_path / "wrong.pub"
    wrong.write_bytes(
        other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(
        IntegrityError, match=r"signature does not match the repository's public key.*wrong.pub"
    ):
        open_repository(fx.repo, public_keys=[wrong])
    # any one good key among several is enough
    with open_repository(fx.repo, public_keys=[wrong, fx.pub]) as repo:
        assert repo.revision == 2


def test_wrong_repository_name(fx: Fixture) -> None:
    with pytest.raises(
        IntegrityError, match=r"manifest is for repository 'fixture\.cernvm\.test', not 'other\.test'"
    ):
        open_repository(fx.repo, fqrn="other.test", public_keys=[fx.pub])


def test_tampered_catalog(fx: Fixture) -> None:
    obj = fx.object(ROOT_REV2, "C")
    data = bytearray(obj.read_bytes())
    data[100] ^= 0xFF
    obj.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"{FQRN}: root catalog {ROOT_REV2}C: content hash mismatch"):
        open_repository(fx.repo, public_keys=[fx.pub])


def test_tampered_object_over_http_is_not_cached(fx: Fixture, server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with open_repository(server.repo_url(), public_keys=[fx.pub], cache_dir=cache) as repo:
        e = repo.stat("/usr/bin/tool1")
        assert e.content_hash
        obj = fx.object(e.content_hash)
        obj.write_bytes(compress(b"evil payload"))
        with pytest.raises(IntegrityError) as err:
            repo.read(e)
    msg = str(err.value)
    assert FQRN in msg and e.content_hash in msg and "/usr/bin/tool1" in msg and "hash mismatch" in msg
    cached = cache / FQRN / "data" / e.content_hash[:2] / e.content_hash[2:]
    assert not cached.exists()
    assert not [p for p in (cache / FQRN / "data").rglob("*.tmp")]


def test_corrupt_cache_entry_is_detected_and_fetched_again(
    fx: Fixture, server: Server, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with open_repository(server.repo_url(), public_keys=[fx.pub], cache_dir=cache) as repo:
        good = repo.read("/usr/bin/tool17")
        h = repo.stat("/usr/bin/tool17").content_hash
    assert h
    cached = cache / FQRN / "data" / h[:2] / h[2:]
    cached.write_bytes(cached.read_bytes()[:-3] + b"bad")
    with open_repository(server.repo_url(), public_keys=[fx.pub], cache_dir=cache) as repo:
        assert repo.read("/usr/bin/tool17") == good
        assert repo.store.stats["fetched"] >= 1
    assert str(hash_bytes(cached.read_bytes())) == h


def test_all_servers_down(fx: Fixture) -> None:
    urls = [_dead_url(), _dead_url()]
    with pytest.raises(Unreachable, match=rf"{FQRN}: manifest: no server could deliver it") as e:
        open_repository(urls, public_keys=[fx.pub], timeout=2, retries=1)
    assert e.value.exit_code == 5 and e.value.hint


def test_fail_over_to_the_next_server(fx: Fixture, server: Server) -> None:
    with open_repository([_dead_url(), server.repo_url()], public_keys=[fx.pub], retries=0) as repo:
        assert repo.read("/etc/new-in-rev2") == b"added\n"


def test_a_server_url_with_the_fqrn_placeholder_names_the_repository(
    fx: Fixture, server: Server, tmp_path: Path
) -> None:
    """pr20a finding 7: CVMFS_SERVER_URL's @fqrn@ (the site's client-parameter reference maps it to
    --server) was asked for as written: 404, "check the repository name in the URL"."""
    from cernvm_build.cvmfs.replicate import replicate

    templated = server.repo_url().rsplit("/", 1)[0] + "/@fqrn@"
    with open_repository(templated, fqrn=FQRN, public_keys=[fx.pub]) as repo:
        assert repo.read("/etc/new-in-rev2") == b"added\n"
    with open_repository([_dead_url(), templated], public_keys=[fx.pub], retries=0) as repo:
        assert repo.fqrn == FQRN and repo.read("/etc/new-in-rev2") == b"added\n"
    with pytest.raises(CvmfsError, match=r"cannot tell the repository name") as e:
        open_repository(templated, public_keys=[fx.pub])
    assert "--fqrn" in (e.value.hint or "")
    assert replicate(templated, tmp_path / "s1", fqrn=FQRN, public_keys=[fx.pub]).revision == 2
    # one derivation of the name for both (resolve_name): replicate checks it too, before DEST is made
    for bad in ("../../x", "a/b"):
        with pytest.raises(CvmfsError, match="invalid repository name") as e:
            replicate(templated, tmp_path / "s2", fqrn=bad, public_keys=[fx.pub])
        assert not (tmp_path / "s2").exists(), e.value


def test_fail_over_past_a_tampering_mirror(fx: Fixture, server: Server, tmp_path: Path) -> None:
    # A second, damaged copy served first: its object fails the hash, the good server delivers.
    import shutil

    from cernvm_build.cvmfs.serve import serve

    bad_root = tmp_path / "bad" / FQRN
    shutil.copytree(fx.repo, bad_root)
    with open_repository(fx.repo, public_keys=[fx.pub]) as repo:
        h = repo.stat("/usr/bin/tool1").content_hash
    assert h
    (bad_root / "data" / h[:2] / h[2:]).write_bytes(compress(b"evil"))
    with serve(tmp_path / "bad") as bad:
        urls = [bad.repo_url(FQRN), server.repo_url()]
        with open_repository(urls, public_keys=[fx.pub]) as repo:
            assert len(repo.read("/usr/bin/tool1")) == 500


@pytest.mark.parametrize("file", [".cvmfspublished", ".cvmfswhitelist"])
def test_a_server_answering_with_a_page_of_its_own_is_passed_over(
    fx: Fixture, server: Server, tmp_path: Path, file: str
) -> None:
    # A squid's cached error page (or a captive portal's) served with 200 in place of a signed
    # file: the next server is asked, and without one the error names who answered, with a hint.
    import shutil

    from cernvm_build.cvmfs.serve import serve

    portal = tmp_path / "portal" / FQRN
    shutil.copytree(fx.repo, portal)
    (portal / file).write_bytes(b"<html><body>ERR_CONNECT_FAIL</body></html>\n")
    with serve(tmp_path / "portal") as bad:
        with open_repository([bad.repo_url(FQRN), server.repo_url()], public_keys=[fx.pub]) as repo:
            assert repo.read("/etc/new-in-rev2") == b"added\n"
        cache = tmp_path / "cache"
        with pytest.raises(IntegrityError) as e:
            open_repository(bad.repo_url(FQRN), public_keys=[fx.pub], cache_dir=cache, retries=0)
        assert file in e.value.message and bad.repo_url(FQRN) in e.value.message and e.value.hint
        # what the cache verified earlier serves, as when no server answers
        open_repository(server.repo_url(), public_keys=[fx.pub], cache_dir=cache).close()
        with open_repository(bad.repo_url(FQRN), public_keys=[fx.pub], cache_dir=cache, retries=0) as repo:
            assert repo.offline and repo.read("/etc/new-in-rev2") == b"added\n"


def test_a_repository_name_that_is_no_name_is_refused_before_the_cache_is_touched(
    fx: Fixture, server: Server, tmp_path: Path
) -> None:
    """pr20a finding 6: the cache folder <cache>/<name> was made before the manifest refused the name:
    --fqrn ../../x made it outside the cache, a URL ending /cvmfs/.. (or a local manifest's N) in it."""
    cache = tmp_path / "a" / "cache"
    local = tmp_path / "local"
    shutil.copytree(fx.repo, local)
    published = local / ".cvmfspublished"
    published.write_bytes(published.read_bytes().replace(f"N{FQRN}\n".encode(), b"N../../y\n"))
    for source, name in (
        (server.repo_url(), "../../x"),
        (server.repo_url().rsplit("/", 1)[0] + "/..", None),
        (str(local), None),
    ):
        with pytest.raises(CvmfsError, match=r"^invalid repository name") as e:
            open_repository(source, fqrn=name, public_keys=[fx.pub], cache_dir=cache, retries=0)
        assert e.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fx.root.name, "local"])


def test_offline_from_cache_and_pinned_root(fx: Fixture, server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with open_repository(server.repo_url(), public_keys=[fx.pub], cache_dir=cache) as repo:
        wanted = {p: repo.read(p) for p in ("/etc/new-in-rev2", "/opt/sw/lib/libsw1.so")}
    url = server.repo_url()
    server.close()
    with open_repository(url, public_keys=[fx.pub], cache_dir=cache, retries=0, timeout=2) as repo:
        assert repo.offline and repo.revision == 2
        assert {p: repo.read(p) for p in wanted} == wanted
        with pytest.raises(Unreachable):  # not in the cache
            repo.read("/usr/bin/tool20")
    # a pinned root hash also works offline (its catalogs are in the cache)
    (cache / FQRN / SIGNED_SET).unlink()
    pinned = SnapshotSpec(root_hash=ROOT_REV2)
    with open_repository(url, public_keys=[fx.pub], cache_dir=cache, snapshot=pinned, retries=0) as repo:
        assert repo.manifest is None and repo.read("/etc/new-in-rev2") == b"added\n"


def test_size_mismatch_is_an_integrity_error_and_evicts(tmp_path: Path) -> None:
    data = compress(b"hello world")
    h = hash_bytes(data)
    src = tmp_path / "src"
    (src / "data" / str(h)[:2]).mkdir(parents=True)
    (src / h.path()).write_bytes(data)
    cache = ObjectCache(tmp_path / "cache" / "x.test", repo="x.test")
    store = ObjectStore(LocalFetcher(src, repo="x.test"), cache, repo="x.test")
    with pytest.raises(IntegrityError, match=r"inflated size 11 differs from the catalog's 12"):
        store.plain(str(h), "", size=12, what="file /a")
    assert not cache.path(h, "").exists()
    assert store.plain(str(h), "", size=11, what="file /a") == b"hello world"
    store.close()


def test_bad_snapshot_arguments(fx: Fixture) -> None:
    with pytest.raises(CvmfsError, match="choose one snapshot"):
        SnapshotSpec(tag="a", root_hash="b")
    with pytest.raises(CvmfsError, match="is not a content hash"):
        open_repository(fx.repo, public_keys=[fx.pub], snapshot=SnapshotSpec(root_hash="xyz"))
    with pytest.raises(CvmfsError, match=f"{FQRN}: root catalog {'0' * 40}C not found"):
        open_repository(fx.repo, public_keys=[fx.pub], snapshot=SnapshotSpec(root_hash="0" * 40))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_a_key_that_is_a_fifo_or_huge_is_one_line(tmp_path: Path, kind: str) -> None:
    """pr18d finding 13: --key was read whole: /dev/zero until memory ran out, a FIFO for ever."""
    import os

    from cernvm_build.cvmfs.repository import _load_keys

    key = tmp_path / "k.pub"
    if kind == "fifo":
        os.mkfifo(key)
    else:
        key.write_bytes(b"-----BEGIN PUBLIC KEY-----\n" + b"A" * (1 << 20))
    with pytest.raises(
        CvmfsError, match=rf"^{key}: public key (cannot be read: not a regular file|is larger than)"
    ):
        _load_keys([key])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_a_publisher_key_file_that_is_a_fifo_or_huge_is_one_line(tmp_path: Path, kind: str) -> None:
    """pr18d finding 14: the publisher's key files were read whole (--master-key /dev/zero, a FIFO)."""
    import os

    from cernvm_build.cvmfs.keys import load_keys

    master = tmp_path / "master.pem"
    if kind == "fifo":
        os.mkfifo(master)
    else:
        master.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + b"A" * (2 << 20))
    with pytest.raises(
        CvmfsError, match=rf"^{master}: (cannot read key file: not a regular file|key file larger)"
    ):
        load_keys(tmp_path, "a.org", str(master))
