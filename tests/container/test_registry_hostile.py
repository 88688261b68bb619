"""A hostile registry on 127.0.0.1 (a small HTTP server of the test), spoken to by the real skopeo:
what it answers cannot grow this machine's memory without bound; and a damaged layout to push is one
line."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar, NoReturn

import pytest

from cernvm_build.cli.main import main
from cernvm_build.container import registry
from cernvm_build.container.registry import RegistryOptions
from cernvm_build.cvmfs.keys import generate_keys
from cernvm_build.errors import BuildError
from tests.support.hostile import http_server

pytestmark = pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")


class _EndlessTags(BaseHTTPRequestHandler):
    """``/v2/x/y/tags/list``: 1,000 tags and a ``Link`` to the next page, for ever."""

    page = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b"{}"
        if "/tags/list" in self.path:
            _EndlessTags.page += 1
            body = json.dumps({"name": "x/y", "tags": [f"t{i}" for i in range(1000)]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if "/tags/list" in self.path:
            self.send_header("Link", f'</v2/x/y/tags/list?n=1000&last=p{_EndlessTags.page}>; rel="next"')
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def endless_tags() -> Iterator[str]:
    with http_server(_EndlessTags) as url:
        yield url.removeprefix("http://")


def test_a_tag_list_that_never_ends_stops_skopeo_at_its_memory_cap(
    endless_tags: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """skopeo follows the next-page links and holds every tag: it grew by ~20 MB/s until the
    30-minute timeout (GBs). It is stopped at ``MAX_SKOPEO_RSS`` (lowered here to keep the test
    light) with one line."""
    monkeypatch.setattr(registry, "MAX_SKOPEO_RSS", 64 << 20)
    monkeypatch.setattr(registry, "_TIMEOUT", 60)
    with pytest.raises(BuildError) as e:
        registry.list_tags(f"{endless_tags}/x/y", opts=RegistryOptions(tls_verify=False))
    assert f"list the tags of {endless_tags}/x/y: skopeo took " in e.value.message
    assert "(at most 64 MiB), stopped" in e.value.message and "\n" not in e.value.message


class _Trickle(BaseHTTPRequestHandler):
    """A registry answering its ping, then every manifest or tag list one byte a second."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b"{}" if self.path == "/v2/" else b'{"name": "x/y", "tags": [' + b" " * 1000 + b"]}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/v2/":
            self.wfile.write(body)
            return
        try:
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(1)
        except OSError:  # skopeo gave up: the test is over
            pass


@pytest.fixture
def trickle() -> Iterator[str]:
    with http_server(_Trickle) as url:
        yield url.removeprefix("http://")


@pytest.mark.parametrize("call", ["inspect", "list-tags"])
def test_a_registry_trickling_its_answer_is_given_up_on_after_the_query_timeout(
    call: str, trickle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mm18c: inspect and list-tags waited for skopeo's default 30 minutes (``_TIMEOUT``, lowered
    here so that the code without the fix fails rather than hangs); they get the options'
    ``query_timeout`` (``QUERY_TIMEOUT``, 120 s, unless ``--registry-timeout`` says otherwise)."""
    monkeypatch.setattr(registry, "_TIMEOUT", 20)
    opts = RegistryOptions(tls_verify=False, query_timeout=2)
    with pytest.raises(BuildError) as e:
        if call == "inspect":
            registry.inspect_raw(f"{trickle}/x/y:1", opts=opts)
        else:
            registry.list_tags(f"{trickle}/x/y", opts=opts)
    assert "no whole answer from the registry in 2 s (" in e.value.message, e.value.message
    assert "\n" not in e.value.message
    assert e.value.hint is not None and "--registry-timeout SECONDS (now 2)" in e.value.hint


def test_the_query_timeout_is_a_flag_of_hub_ingest_that_its_error_names(
    trickle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``list-tags`` reads every page of a tag list in one skopeo command, stopped at 120 s: a
    registry paging a very large tag list slowly could need more, and nothing said how to give it.
    ``--registry-timeout`` sets it, and the error names the flag."""
    generate_keys("unpacked.cern.ch").save(tmp_path / "k")
    # the hub must exist (checked before the registry is asked, pr19d finding 17)
    create = [
        "cvmfs",
        "create",
        str(tmp_path / "s"),
        "--fqrn",
        "unpacked.cern.ch",
        "--keys",
        str(tmp_path / "k"),
    ]
    assert main([*create, "--json"]) == 0
    capsys.readouterr()
    hub = ["--hub-stratum", str(tmp_path / "s"), "--hub-keys", str(tmp_path / "k")]
    argv = ["hub", "ingest", f"{trickle}/x/y:1.*", *hub, "--no-tls-verify", "--registry-timeout", "2"]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        f"error: list the tags of {trickle}/x/y: no whole answer from the registry in 2 s "
        "(Error listing repository tags: context deadline exceeded)"
    ], err
    assert "--registry-timeout SECONDS (now 2)" in err and "Traceback" not in err
    for bad in ("0", "1.5", "86401"):
        with pytest.raises(SystemExit) as e:
            main([*argv[:-1], bad])
        assert e.value.code == 2 and "argument --registry-timeout: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("index", "said"),
    [
        (b"garbage", "index.json is not an OCI index: Expecting value"),
        (b'{"manifests": [5]}', "index.json is not an OCI index: 'int' object has no attribute 'get'"),
        (b'{"schemaVersion": 2}', "index.json is not an OCI index: no 'manifests'"),
        (b"[" * 100_000, "index.json is not an OCI index: nested too deeply"),
        (
            b'{"manifests": [], "n": ' + b"9" * 5000 + b"}",
            "index.json is not an OCI index: a number has more digits",
        ),
        (b" " * (4 << 20) + b"{}", "index.json is larger than 4 MiB: not an OCI index"),
        (None, "index.json cannot be read: No such file or directory"),
    ],
    ids=["not-json", "entry-int", "no-manifests", "nested", "digits", "huge", "missing"],
)
def test_pushing_a_layout_with_a_damaged_index_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], index: bytes | None, said: str
) -> None:
    """``container push`` reads the layout's index for its first tag (a traceback before)."""
    image = tmp_path / "x.oci"
    image.mkdir()
    (image / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    if index is not None:
        (image / "index.json").write_bytes(index)
    assert main(["container", "push", str(image), "127.0.0.1:9/x/y:1", "--no-tls-verify"]) == 7
    err = capsys.readouterr().err
    assert f"error: {image}/{said}" in err and "Traceback" not in err, err


def test_a_push_writes_nothing_beside_the_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """skopeo's --digestfile went beside the image (``.NAME.oci.push-digest``): a push from a
    read-only folder failed after the copy, and two pushes of one image shared the file."""
    image = tmp_path / "ro" / "x.oci"
    image.mkdir(parents=True)
    (image / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    seen: list[Path] = []

    def skopeo(args: list[str], what: str) -> bytes:  # skopeo's part: it writes the digest there
        seen.append(Path(args[args.index("--digestfile") + 1]))
        seen[-1].write_text("sha256:" + "ab" * 32 + "\n")
        return b""

    monkeypatch.setattr(registry, "_skopeo", skopeo)
    digest = registry.push(image, "127.0.0.1:9/x/y:1", tag="1", opts=RegistryOptions(tls_verify=False))
    assert digest == "sha256:" + "ab" * 32
    assert sorted(p.name for p in (tmp_path / "ro").iterdir()) == ["x.oci"]
    assert tmp_path not in seen[0].parents and not seen[0].exists()


def test_a_layout_whose_path_holds_a_colon_is_refused_not_taken_for_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr21 N8: skopeo's ``oci:PATH:TAG`` ends PATH at its first ':': pushing ``a:b.oci`` pushed the
    layout ``a`` (or failed on ``a/index.json``), and a pull into a scratch folder under a TMPDIR
    holding ':' wrote the layout beside it."""
    called: list[list[str]] = []
    monkeypatch.setattr(registry, "_skopeo", lambda args, what: called.append(args) or b"")
    for name in ("a", "a:b.oci"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    image = tmp_path / "a:b.oci"
    assert main(["container", "push", str(image), "127.0.0.1:9/x/y:1", "--tag", "1", "--no-tls-verify"]) == 7
    err = capsys.readouterr().err
    assert f"error: {image}: skopeo cannot name a folder whose path holds ':'" in err, err
    with pytest.raises(BuildError) as e:
        registry.pull("127.0.0.1:9/x/y:1", tmp_path / "c:d" / "image.oci", opts=RegistryOptions())
    assert "skopeo cannot name a folder whose path holds ':'" in e.value.message
    assert called == [] and not (tmp_path / "c:d" / "image.oci").exists()


@pytest.mark.parametrize(
    ("dest", "said"),
    [
        ("cernvm/el9:1", "'cernvm' is not a registry host"),  # skopeo: docker.io/cernvm/el9:1
        ("el9:1", "is not an image name host/repo:tag"),
        ("reg.example/cernvm/el9:1.*", "a push names one tag, not a pattern"),
    ],
    ids=["no-host", "no-repository", "pattern"],
)
def test_a_push_destination_names_its_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dest: str, said: str
) -> None:
    """pr21 N14: a destination without a registry host went to Docker Hub (skopeo's default)."""
    called: list[list[str]] = []
    monkeypatch.setattr(registry, "_skopeo", lambda args, what: called.append(args) or b"")
    image = tmp_path / "x.oci"
    image.mkdir()
    (image / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    with pytest.raises(BuildError) as e:
        registry.push(image, dest, tag="1", opts=RegistryOptions())
    assert said in e.value.message and called == []


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _EndlessBlob(BaseHTTPRequestHandler):
    """A registry whose image declares a 102-byte layer and sends that layer's blob without end:
    random bytes (gzip does not shrink them, as skopeo's copy did a blob of spaces) up to ``CAP``."""

    protocol_version = "HTTP/1.1"
    CAP = 512 << 20
    layer = b"\x1f\x8b" + b"\0" * 100
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    )
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _digest(config.encode()), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _digest(layer), "size": len(layer)}],
    }).encode()  # fmt: skip
    sent: ClassVar[list[int]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        if "/blobs/" in self.path and self.path.endswith(_digest(self.layer)) and not head:
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            chunk, sent = os.urandom(1 << 16), 0
            try:
                while sent < self.CAP:
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except OSError:  # skopeo was stopped
                pass
            _EndlessBlob.sent.append(sent)
            return
        body = b"{}"
        ctype = "application/json"
        if "/manifests/" in self.path:
            body, ctype = self.manifest, "application/vnd.oci.image.manifest.v1+json"
        elif "/blobs/" in self.path:
            body = self.config.encode()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Content-Digest", _digest(body))
        self.end_headers()
        if not head:
            self.wfile.write(body)


@pytest.fixture
def endless_blob() -> Iterator[str]:
    _EndlessBlob.sent.clear()
    with http_server(_EndlessBlob) as url:
        yield url.removeprefix("http://")


def test_a_blob_larger_than_its_manifest_says_stops_the_pull_and_leaves_nothing(
    endless_blob: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr33c: skopeo checks a blob's digest only at its end, so a 102-byte layer whose body never
    ended wrote 1 GiB into the scratch layout (a real registry: until the disk was full or 30
    minutes passed). The pull is stopped past what the manifests declare, one line, nothing left."""
    from cernvm_build.container import ingest

    monkeypatch.setattr(registry, "_POLL", 0.05)  # the test's bytes, not the rule
    work = tmp_path / "work"
    work.mkdir()
    wish = ingest.Wish(endless_blob, "x/y", "t")
    with pytest.raises(BuildError) as e:
        ingest.ingest_image(wish, "t", _publish_never, opts=RegistryOptions(tls_verify=False), work=work)
    assert f"pull {endless_blob}/x/y@sha256:" in e.value.message and "\n" not in e.value.message
    assert "the registry sent more than the " in e.value.message, e.value.message
    assert "bytes its manifest declares" in e.value.message
    assert list(work.iterdir()) == []
    assert _EndlessBlob.sent and _EndlessBlob.sent[0] < _EndlessBlob.CAP // 2


def _publish_never(*args: object) -> NoReturn:
    raise AssertionError("nothing may be published")


class _HugeManifest(BaseHTTPRequestHandler):
    """A registry whose manifest is 5 MiB (skopeo accepts 4)."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b"{}" if self.path == "/v2/" else b'{"schemaVersion": 2, "x": "' + b"a" * (5 << 20) + b'"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)


def test_a_manifest_over_skopeo_s_limit_is_blamed_on_the_registry_not_the_name() -> None:
    """skopeo says "Error parsing image name ...: exceeded maximum allowed size": the hint said to
    check the image name."""
    with http_server(_HugeManifest) as url, pytest.raises(BuildError) as e:
        registry.inspect_raw(f"{url.removeprefix('http://')}/x/y:1", opts=RegistryOptions(tls_verify=False))
    assert "exceeded maximum allowed size of 4194304 bytes" in e.value.message and "\n" not in e.value.message
    assert e.value.hint is not None and "the registry answered more than skopeo accepts" in e.value.hint


class _StalledBlob(_EndlessBlob):
    """The image of ``_EndlessBlob``, whose 102-byte layer comes a byte every 0.2 s (a registry
    stalling on one layer: 20 s for the whole)."""

    sent: ClassVar[list[int]] = []

    def do_GET(self, head: bool = False) -> None:
        if "/blobs/" in self.path and self.path.endswith(_digest(self.layer)) and not head:
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.layer)))
            self.end_headers()
            with contextlib.suppress(OSError):  # skopeo was stopped
                for i in range(len(self.layer)):
                    self.wfile.write(self.layer[i : i + 1])
                    self.wfile.flush()
                    _StalledBlob.sent.append(i + 1)
                    time.sleep(0.2)
            return
        super().do_GET(head)


def test_a_registry_stalling_on_a_layer_ends_the_pull_with_the_layer_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lf34a: a layer trickled a byte at a time held the pull for 30 minutes (``_TIMEOUT``): less
    than ``LOW_SPEED`` bytes/s over ``LOW_SPEED_TIME`` ends it, one line naming the registry, the
    image and the layer, nothing left."""
    from cernvm_build.container import ingest

    monkeypatch.setattr(registry, "_POLL", 0.05)  # the test's window, not the rule
    monkeypatch.setattr(registry, "LOW_SPEED_TIME", 2)
    _StalledBlob.sent.clear()
    work = tmp_path / "work"
    work.mkdir()
    with http_server(_StalledBlob) as url:
        host = url.removeprefix("http://")
        wish = ingest.Wish(host, "x/y", "t")
        with pytest.raises(BuildError) as e:
            ingest.ingest_image(wish, "t", _publish_never, opts=RegistryOptions(tls_verify=False), work=work)
    message = e.value.message
    assert f"pull {host}/x/y@sha256:" in message and "\n" not in message, message
    assert f"less than {registry.LOW_SPEED} bytes/s for " in message, message
    assert f"layer {_digest(_StalledBlob.layer)} not complete" in message, message
    assert list(work.iterdir()) == []
    assert 0 < max(_StalledBlob.sent) < len(_StalledBlob.layer)  # stopped before the whole layer
