"""Pure logic of the mirror: URL parsing, patterns, deb822, clearsigned text, content types, paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cernvm_build.errors import MirrorError
from cernvm_build.mirror.apt import parse_deb822, strip_clearsign
from cernvm_build.mirror.publish import fnmatch_escape
from cernvm_build.mirror.s3client import parse_s3_url
from cernvm_build.mirror.s3sync import content_type, last_rank, matches
from cernvm_build.mirror.source import safe_rel


def test_s3_urls() -> None:
    u = parse_s3_url("s3://cvmrepo/yum/cvmfs/")
    assert (u.bucket, u.prefix, u.key("a/b"), u.rel("yum/cvmfs/a/b")) == (
        "cvmrepo",
        "yum/cvmfs",
        "yum/cvmfs/a/b",
        "a/b",
    )
    root = parse_s3_url("s3://bucket")
    assert (root.prefix, root.key("x"), root.list_prefix) == ("", "x", "")
    for bad in ("bucket/p", "s3:///p", "https://b/p"):
        with pytest.raises(MirrorError):
            parse_s3_url(bad)


def test_last_patterns_match_names_or_paths_in_order() -> None:
    assert matches("EL/9/x86_64/repodata/repomd.xml", "repomd.xml")
    assert not matches("EL/9/x86_64/repodata/repomd.xml.asc", "repomd.xml")
    assert matches("dists/stable/InRelease", "dists/*/InRelease")
    assert not matches("pool/InRelease.deb", "InRelease")
    last = ["repomd.xml", "*.asc"]
    assert [last_rank(r, last) for r in ("a/repomd.xml", "a/repomd.xml.asc", "a/x.rpm")] == [0, 1, None]
    assert matches("odd[1]/f*?.txt", fnmatch_escape("odd[1]/f*?.txt"))
    assert not matches("odd1/fab.txt", fnmatch_escape("odd[1]/f*?.txt"))


def test_deb822_and_clearsigned() -> None:
    text = "Origin: x\nSHA256:\n abc 1 main/Packages\n def 2 main/Packages.gz\n\nPackage: p\nSize: 3\n"
    st = parse_deb822(text)
    assert st[0]["SHA256"].splitlines() == ["", "abc 1 main/Packages", "def 2 main/Packages.gz"]
    assert st[1] == {"Package": "p", "Size": "3"}
    signed = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: x\n- -dash\n"
        "-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"
    )
    assert strip_clearsign(signed) == "Origin: x\n-dash\n"
    assert strip_clearsign("Origin: y\n") == "Origin: y\n"


def test_content_types() -> None:
    assert content_type("index.html") == "text/html; charset=utf-8"
    assert content_type("repodata/repomd.xml").endswith("xml") or "xml" in content_type("repomd.xml")
    assert content_type("x-primary.xml.gz") == "application/gzip"
    assert content_type("dists/s/InRelease") == "text/plain"
    assert content_type("pool/a.deb") in ("application/vnd.debian.binary-package", "application/octet-stream")


@pytest.mark.parametrize(
    "bad",
    ["../etc/passwd", "/abs", "a/../../b", "a//b", "a\\b", "a/", "./a.rpm", "P/./a.rpm", "P/a.rpm?x",
     "P/a.rpm#x",
     "%2e%2e/%2e%2e/other/x.rpm", "P/a%2Frpm", "P/a\nb.rpm", "P/a\x7f.rpm", "P/a\x00.rpm"],
)  # fmt: skip
def test_paths_from_metadata_cannot_leave_the_repository_or_mean_another_url(bad: str) -> None:
    """A name the client would read as another URL (query, fragment, escape, dot segment) than the
    key the mirror checks: refused in one line."""
    with pytest.raises(MirrorError, match="unsafe path") as e:
        safe_rel(bad)
    assert "\n" not in str(e.value)


def test_ordinary_package_names_are_safe() -> None:
    for good in ("Packages/a-1.0-1.el9.x86_64.rpm", "pool/main/g/g++-12/g++-12_12.2_amd64.deb", "a/50%.txt",
                 "pool/main/f/foo/foo_1.0~rc1+dfsg.orig.tar.xz", "x/.hidden", "x/a..b"):  # fmt: skip
        assert safe_rel(good) == good


def test_client_settings_suit_rgw_and_minio(s3env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from cernvm_build.mirror.s3client import make_client

    c = make_client(endpoint_url="http://127.0.0.1:9")
    cfg = c.meta.config
    assert cfg.request_checksum_calculation == "when_required"
    assert cfg.response_checksum_validation == "when_required"
    assert cfg.s3 is not None and cfg.s3["addressing_style"] == "path"
    assert c.meta.endpoint_url == "http://127.0.0.1:9"
    # A user's explicit choice wins; the endpoint may come from the environment.
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_supported")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:10")
    c = make_client()
    assert c.meta.config.request_checksum_calculation == "when_supported"
    assert c.meta.endpoint_url == "http://127.0.0.1:10"


def test_cli_default_jobs_is_the_engines() -> None:
    from cernvm_build.cli import mirror as cli_mirror
    from cernvm_build.mirror import s3sync

    assert cli_mirror.JOBS == s3sync.JOBS


@pytest.mark.parametrize(
    ("key", "headers", "token", "query"),
    [
        ("el9/Packages/cvm-tool-1.0-1.x86_64.rpm", {"Content-Type": "application/x-rpm"}, None, {}),
        ("pool/c/lib+plus/odd name~1%.deb", {"If-None-Match": "*", "x-amz-acl": "public-read"}, None, {}),
        ("dists/b/InRelease", {"If-Match": '"0123abc"', "x-amz-meta-sha256": "ab" * 32}, "tok/en=", {}),
        ("big.rpm", {}, None, {"uploadId": "2~Ab+C/d=_e.f", "partNumber": "10"}),
    ],
)
def test_own_sigv4_signature_is_botocores(
    key: str, headers: dict[str, str], token: str | None, query: dict[str, str]
) -> None:
    """The own PutObject/UploadPart signer (s3direct) signs exactly as botocore's SigV4 for S3 does, for
    keys that need URI encoding, conditional headers, metadata, a session token and a query string
    (botocore is the reference)."""
    import datetime
    import hashlib
    from unittest import mock
    from urllib.parse import quote

    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials

    from cernvm_build.mirror.s3direct import Keys, query_string, sign

    body = b"package bytes"
    sha = hashlib.sha256(body).hexdigest()
    path = f"/bucket/{quote(key, safe='/~')}"
    now = 1_780_000_000.0
    qs = query_string(query)
    ours = sign("PUT", "127.0.0.1:8000", path, headers, sha, Keys("AKID", "SECRET", token), "eu-west-1",
                now, query=qs)  # fmt: skip

    url = f"http://127.0.0.1:8000{path}" + (f"?{qs}" if qs else "")
    request = botocore.awsrequest.AWSRequest("PUT", url, data=body,
                                             headers={**headers, "X-Amz-Content-SHA256": sha})  # fmt: skip
    auth = botocore.auth.S3SigV4Auth(botocore.credentials.Credentials("AKID", "SECRET", token), "s3",
                                     "eu-west-1")  # fmt: skip
    fixed = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=fixed):
        auth.add_auth(request)
    assert ours["authorization"] == request.headers["Authorization"]


def test_direct_put_reads_a_hostile_error_body_with_a_cap() -> None:
    """An S3 server answering a PutObject with an endless error page (here 64 MB, sent until the
    client hangs up) costs the own signer's client a bounded read: a one-line S3 error, the
    connection closed rather than read to its end."""
    import socket
    import threading

    import botocore.exceptions

    from cernvm_build.mirror.s3direct import DirectPut, Keys

    body_size = 64 << 20
    sent = [0]
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)  # the request (headers and the small body)
            head = f"HTTP/1.1 403 Forbidden\r\nContent-Length: {body_size}\r\n\r\n<Error>"
            conn.sendall(head.encode())
            block = b"x" * (1 << 16)
            try:
                while sent[0] < body_size - 8:
                    conn.sendall(block)
                    sent[0] += len(block)
            except OSError:
                pass  # the client hung up: what we wanted

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    put = DirectPut(f"http://127.0.0.1:{srv.getsockname()[1]}", "us-east-1", lambda: Keys("AK", "SK"))
    with pytest.raises(botocore.exceptions.ClientError) as err:
        put.put("bucket", "key", b"data", "0" * 64, {"Content-Type": "text/plain"})
    put.close()
    t.join(30)
    srv.close()
    assert err.value.response["Error"]["Code"] == "403"
    assert sent[0] < 16 << 20, f"{sent[0]} bytes of the error page were taken"


def test_direct_put_refuses_a_hostile_etag_as_a_header(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An ETag a hostile server listed with CR/LF in it (XML character references) is not sent as
    If-Match (a header injection, or http.client's ValueError traceback): one MirrorError naming the
    key, before anything is sent."""
    import hashlib
    import os

    from cernvm_build.mirror.hashcache import signature
    from cernvm_build.mirror.s3client import S3Url
    from cernvm_build.mirror.s3direct import DirectPut, Keys
    from cernvm_build.mirror.s3plan import Action, LocalFile
    from cernvm_build.mirror.s3write import Conditions, Writer

    f = tmp_path / "repomd.xml"
    f.write_bytes(b"<x/>")
    lf = LocalFile("repodata/repomd.xml", f, 4, hashlib.sha256(b"<x/>").hexdigest(), signature(os.stat(f)))
    direct = DirectPut("http://127.0.0.1:9", "us-east-1", lambda: Keys("AK", "SK"))
    w = Writer(None, S3Url("bucket", ""), direct=direct, conditional=True, conditions=Conditions(True),
               total=4, progress=None, acl=None)  # fmt: skip
    hostile = '"abc"\r\nx-amz-acl: public-read-write'
    with pytest.raises(MirrorError) as err:
        w.upload(Action("update", lf.rel, 4, "changed", True, hostile), lf)
    assert "repodata/repomd.xml" in err.value.message and "\n" not in err.value.message


def test_the_index_writer_runs_the_toolkits_own_code_whatever_the_folder(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The index writer process gets the S3 keys on its stdin: it must import the toolkit that started
    it, not a ``cernvm_build`` folder in the current directory (``python -c`` puts that first)."""
    from cernvm_build.mirror.indexwriter import IndexWriter
    from cernvm_build.mirror.s3client import S3Url, make_client
    from cernvm_build.mirror.s3write import Conditions

    planted = tmp_path / "cernvm_build" / "mirror"
    planted.mkdir(parents=True)
    (tmp_path / "cernvm_build" / "__init__.py").write_text("")
    (planted / "__init__.py").write_text("")
    stolen = tmp_path / "stolen"
    (planted / "indexwriter.py").write_text(
        f"import sys\ndef main():\n    open({str(stolen)!r}, 'wb').write(sys.stdin.buffer.readline())\n"
    )
    client = make_client(endpoint_url="http://127.0.0.1:9", region="us-east-1", credentials=("A", "S", None))
    monkeypatch.chdir(tmp_path)
    helper = IndexWriter(client, S3Url("bucket", ""), conditional=True, conditions=Conditions(True), acl=None)
    helper.close()
    assert not stolen.exists(), stolen.read_text()


def test_links_back_up_are_passed_over_once_each_and_aliases_stay(tmp_path: Path) -> None:
    """``up -> ../..`` would make the tree endless: passed over (the folder it names is walked
    already), however many there are (each would multiply the walk: the cap would end it). A link
    that is no loop is listed under both names."""
    from cernvm_build.mirror.source import LocalSource

    (tmp_path / "pool" / "main").mkdir(parents=True)
    (tmp_path / "pool" / "main" / "a.deb").write_bytes(b"a")
    (tmp_path / "alias").symlink_to("pool")  # a link that is no loop: listed under both names
    assert LocalSource(tmp_path).list() == ["alias/main/a.deb", "pool/main/a.deb"]
    for i in range(12):  # without the check, 12^depth paths: the cap's one error, not a listing
        (tmp_path / "pool" / "main" / f"up{i}").symlink_to("../..")
    assert LocalSource(tmp_path).list() == ["alias/main/a.deb", "pool/main/a.deb"]


def test_an_ubuntu_mirrors_link_to_its_own_folder_is_passed_over(tmp_path: Path) -> None:
    """archive.ubuntu.com has ``ubuntu -> .`` and ``rsync -a`` copies it: the mirror is listed as
    it is (f93b2ac made it an error, and a real Ubuntu mirror could no longer be synced)."""
    from cernvm_build.mirror.s3plan import scan_local
    from cernvm_build.mirror.source import LocalSource

    (tmp_path / "pool" / "main").mkdir(parents=True)
    (tmp_path / "pool" / "main" / "a.deb").write_bytes(b"a")
    (tmp_path / "ubuntu").symlink_to(".")
    assert LocalSource(tmp_path).list() == ["pool/main/a.deb"]
    assert sorted(scan_local(tmp_path)) == ["pool/main/a.deb"]


def test_links_fanning_out_inside_the_folder_end_in_one_error_not_an_endless_walk(tmp_path: Path) -> None:
    """``d0/{a,b} -> ../d1``, ``d1/{a,b} -> ../d2``...: no loop and nothing leaves the folder, yet
    2^N paths from 2N links (pr16e's linkbomb): the walk stops at its cap with one MirrorError."""
    from cernvm_build.mirror.s3plan import walk_files
    from tests.support import link_farm as fan_out

    with pytest.raises(MirrorError, match=r"more than 1000 folders and files") as e:
        sum(1 for _ in walk_files(fan_out(tmp_path / "big", 12), limit=1000))
    assert "remove the extra links" in str(e.value.hint)
    # under the cap the links are still all followed: f.rpm by every path, 2^(n+1) - 1 of them
    assert sum(1 for _ in walk_files(fan_out(tmp_path / "small", 3), limit=1000)) == 15


def test_a_source_file_without_a_utf8_name_is_one_error(tmp_path: Path) -> None:
    from cernvm_build.mirror.source import LocalSource

    (tmp_path / os.fsdecode(b"bad\xff.deb")).write_bytes(b"x")
    with pytest.raises(MirrorError, match=r"bad\\xff\.deb.*not a UTF-8 name"):
        LocalSource(tmp_path).list()


def test_the_syncs_own_walk_passes_over_link_loops_and_refuses_non_utf8_names(tmp_path: Path) -> None:
    """The sync walks a local folder itself (scan_local): the same rules as the source's listing."""
    from cernvm_build.mirror.s3plan import scan_local

    (tmp_path / "pool" / "main").mkdir(parents=True)
    (tmp_path / "pool" / "main" / "a.deb").write_bytes(b"a")
    (tmp_path / "alias").symlink_to("pool")
    assert sorted(scan_local(tmp_path)) == ["alias/main/a.deb", "pool/main/a.deb"]
    (tmp_path / "pool" / "up").symlink_to("..")  # a loop: passed over, as the source does
    assert sorted(scan_local(tmp_path)) == ["alias/main/a.deb", "pool/main/a.deb"]
    (tmp_path / os.fsdecode(b"bad\xff.deb")).write_bytes(b"x")
    with pytest.raises(MirrorError, match=r"bad\\xff\.deb.*not a UTF-8 name"):
        scan_local(tmp_path)


def test_a_link_leaving_the_source_folder_is_refused_and_links_inside_stay(tmp_path: Path) -> None:
    """A tree copied with its links from a hostile upstream (``Packages/b.rpm -> ~/.aws/credentials``)
    must not publish what the link names on this machine: the listing and the sync's walk refuse it."""
    from cernvm_build.mirror.s3plan import scan_local
    from cernvm_build.mirror.source import LocalSource

    secret = tmp_path / "home" / "credentials"
    secret.parent.mkdir()
    secret.write_text("secret")
    src = tmp_path / "src"
    (src / "Packages").mkdir(parents=True)
    (src / "Packages" / "a.rpm").write_bytes(b"a")
    (src / "Packages" / "same.rpm").symlink_to("a.rpm")  # inside: allowed
    (src / "alias").symlink_to("Packages")
    assert sorted(scan_local(src)) == ["Packages/a.rpm", "Packages/same.rpm", "alias/a.rpm", "alias/same.rpm"]
    planted_links = (("Packages/b.rpm", secret), ("Packages/home", secret.parent), ("esc", src / ".."))
    for planted, target in planted_links:
        link = src / planted
        link.symlink_to(target)
        for walk in (scan_local, lambda root: LocalSource(root).list()):
            with pytest.raises(MirrorError, match=r"is a link to .*, outside the folder") as e:
                walk(src)
            assert "\n" not in str(e.value) and e.value.hint
        link.unlink()


def test_fifos_and_devices_in_a_source_folder_are_passed_over_without_reading_them(tmp_path: Path) -> None:
    from cernvm_build.mirror.s3plan import scan_local
    from cernvm_build.mirror.source import LocalSource

    (tmp_path / "a.rpm").write_bytes(b"a")
    os.mkfifo(tmp_path / "fifo.rpm")  # opening it would wait for a writer forever
    (tmp_path / "link.rpm").symlink_to("fifo.rpm")
    assert sorted(scan_local(tmp_path)) == ["a.rpm"]
    assert LocalSource(tmp_path).list() == ["a.rpm"]
    assert LocalSource(tmp_path).digest("link.rpm", "sha256") is None


def test_an_s3_error_message_is_shown_up_to_a_cap() -> None:
    """pr20a N8: the server's <Message> was shown whole: a hostile S3 sent megabytes for one line."""
    import botocore.exceptions

    from cernvm_build.mirror.s3client import MAX_MESSAGE, s3_error

    e = botocore.exceptions.ClientError({"Error": {"Code": "Odd", "Message": "m" * (1 << 20)}}, "PutObject")
    err = s3_error(e, "s3://b/k")
    assert err.message.startswith("s3://b/k: S3 error Odd: mmm") and len(err.message) < MAX_MESSAGE + 100
