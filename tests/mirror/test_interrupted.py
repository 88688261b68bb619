"""A mirror SIGKILLed at any of ten steps leaves a publication whose live index names only matching
bytes (except the files of the --allow-rewrite batch, while it runs), and the same command run again
finishes the job: real dnf/apt install afterwards. A reader that still holds the previous index
installs every package it names. On Ceph RGW, and a kill between index files on moto too."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.mirror.publish import mirror, verify_published

from .conftest import Target
from .repos import apt_install, dnf_install, make_apt_repo, make_deb, make_rpm, make_yum_repo
from .test_rewrite import mismatched, tool_rel

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

#: (event, n): SIGKILL right after the n-th checkpoint of that kind; n=0 means the last one.
POINTS = [
    ("verified", 1),
    ("planned", 1),
    ("uploaded", 1),
    ("uploaded", 2),
    ("uploaded", 0),
    ("rewritten", 1),
    ("index", 1),
    ("index", 2),
    ("deleted", 1),
    ("manifest", 1),
]


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Per kind: [tool 1.0, tool 1.0 rebuilt (same name), extra, more]."""
    w = tmp_path_factory.mktemp("kpkgs")
    return {
        "yum": [
            make_rpm(w / "r1", "cvm-tool", payload=b"first build\n" * 50),
            make_rpm(w / "r2", "cvm-tool", payload=b"second build\n" * 50),
            make_rpm(w / "r3", "cvm-extra", payload=b"extra\n" * 50),
            make_rpm(w / "r4", "cvm-more", payload=b"more\n" * 50),
            make_rpm(w / "r5", "cvm-most", payload=b"most\n" * 50),
        ],
        "apt": [
            make_deb(w / "d1" / "cvm-tool_1.0_all.deb", "cvm-tool", payload=b"first build\n" * 50),
            make_deb(w / "d2" / "cvm-tool_1.0_all.deb", "cvm-tool", payload=b"second build\n" * 50),
            make_deb(w / "d3" / "cvm-extra_1.0_all.deb", "cvm-extra", payload=b"extra\n" * 50),
            make_deb(w / "d4" / "cvm-more_1.0_all.deb", "cvm-more", payload=b"more\n" * 50),
            make_deb(w / "d5" / "cvm-most_1.0_all.deb", "cvm-most", payload=b"most\n" * 50),
        ],
    }


def make_source(kind: str, src: Path, packages: list[Path], secret: Path) -> None:
    pool = src / ("Packages" if kind == "yum" else "pool/main")
    if pool.exists():
        shutil.rmtree(pool)
    if kind == "yum":
        if (src / "repodata").exists():
            shutil.rmtree(src / "repodata")
        make_yum_repo(src, packages, secret_key=secret)
    else:
        make_apt_repo(src, "stable", packages, secret_key=secret)


def killed(spec: dict[str, Any]) -> None:
    """Run the mirror of ``spec`` (see killrun) in its own process and check it was SIGKILLed."""
    proc = subprocess.run([sys.executable, "-m", "tests.mirror.killrun", json.dumps(spec)],
                          cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    where = f"{spec['event']} #{spec['n']}"
    assert proc.returncode == -9, f"not killed at {where}: {proc.returncode}\n{proc.stderr}"


#: Where the server's own S3 implementation is exercised too (suite budget): the order of the steps is
#: the mirror's, the same on any server, so every kill point and kind runs on the real server (Ceph
#: RGW), and moto gets one case per kind (a kill between the index files, where readers switch).
MOTO_POINTS = [("index", 1)]


def cases() -> list[Any]:
    return [
        pytest.param(server, kind, e, n, id=f"{server}-{kind}-{e}{n or '-last'}")
        for server, points in (("rgw", POINTS), ("moto", MOTO_POINTS))
        for kind in ("yum", "apt")
        for e, n in points
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "kind", "event", "n"), cases(), indirect=["target"])
def test_sigkill_then_rerun_installs(
    kind: str,
    event: str,
    n: int,
    pkgs: dict[str, list[Path]],
    signing_key: tuple[Path, Path],
    tmp_path: Path,
    target: Target,
) -> None:
    secret, public = signing_key
    first, rebuilt, extra, more, most = pkgs[kind]
    src = tmp_path / "src"
    make_source(kind, src, [first, extra], secret)
    mirror(kind, str(src), target.url("r"), client=target.client, gpg_key=public)

    # The next publication: a rebuilt package under the same name, two new ones, one gone.
    make_source(kind, src, [rebuilt, more, most], secret)
    if n == 0:
        plan = mirror(kind, str(src), target.url("r"), client=target.client, allow_rewrite=True, dry_run=True)
        assert plan.sync is not None
        n = sum(1 for a in plan.sync.actions if a.op == "create" and not a.last)
    spec = {"kind": kind, "source": str(src), "dest": target.url("r"), "endpoint": target.endpoint,
            "event": event, "n": n, "allow_rewrite": True, "keep": 0}  # fmt: skip
    killed(spec)

    # What a reader of the live publication meets now: nothing wrong before the rewrite batch, at
    # most the batch's own file while the old index is still live, a whole new index after it.
    bad = mismatched(kind, target, "r")
    if event in ("rewritten", "index"):
        assert bad <= {tool_rel(kind)}, bad
    else:
        assert bad == set(), bad

    rep = mirror(
        kind, str(src), target.url("r"), client=target.client, gpg_key=public, allow_rewrite=True, keep=0
    )
    assert rep.sync is not None
    assert verify_published(kind, target.url("r"), client=target.client, gpg_key=public).problems == []
    if kind == "yum":
        root = dnf_install(tmp_path / "dnf", target.http("r"), "cvm-tool", public_key=public)
    else:
        root = apt_install(tmp_path / "apt", target.http("r"), "stable", "cvm-tool", public_key=public)
    assert (root / "usr/share/cvm-tool/data").read_bytes() == b"second build\n" * 50


# -- a reader holding the previous index -----------------------------------------------------------


@pytest.fixture
def old_index_proxy() -> Iterator[Any]:
    """``proxy(upstream, snapshot) -> URL``: serves the files in ``snapshot`` (the index a reader
    fetched earlier) and everything else from ``upstream`` (the live bucket), as a reader with a
    cached index sees the repository."""
    servers: list[http.server.ThreadingHTTPServer] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        upstream = ""
        snapshot = Path()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            rel = self.path.split("?", 1)[0].lstrip("/")
            local = self.snapshot / rel
            if local.is_file():
                body, status = local.read_bytes(), 200
            else:
                try:
                    body, status = urllib.request.urlopen(f"{self.upstream}/{rel}").read(), 200
                except urllib.error.HTTPError as e:
                    body, status = e.read(), e.code
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def start(upstream: str, snapshot: Path) -> str:
        handler = type("Bound", (Handler,), {"upstream": upstream, "snapshot": snapshot})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def snapshot_indexes(target: Target, prefix: str, top: str, into: Path) -> None:
    """Download the published index files (everything under ``top``) as a reader caches them."""
    for key in target.objects():
        rel = key[len(prefix) + 1 :]
        if rel.startswith(top):
            dest = into / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(target.client.get_object(Bucket=target.bucket, Key=key)["Body"].read())


@pytest.mark.parametrize("target", ["rgw"], indirect=True)  # what readers see is the mirror's order
@pytest.mark.parametrize("kind", ["yum", "apt"])
def test_reader_holding_the_previous_index_installs_everything_it_names(
    kind: str,
    pkgs: dict[str, list[Path]],
    signing_key: tuple[Path, Path],
    tmp_path: Path,
    target: Target,
    old_index_proxy: Any,
) -> None:
    secret, public = signing_key
    first, _, extra, more, most = pkgs[kind]
    src = tmp_path / "src"
    make_source(kind, src, [first, extra], secret)
    mirror(kind, str(src), target.url("r"), client=target.client, gpg_key=public)
    old = tmp_path / "old-index"
    snapshot_indexes(target, "r", "repodata/" if kind == "yum" else "dists/", old)

    # Two publications later (fresh metadata, both old packages gone from the source) ...
    make_source(kind, src, [more], secret)
    mirror(kind, str(src), target.url("r"), client=target.client, gpg_key=public)
    make_source(kind, src, [more, most], secret)
    mirror(kind, str(src), target.url("r"), client=target.client, gpg_key=public)

    # ... the reader with the first index still installs every package that index names.
    url = old_index_proxy(target.http("r"), old)
    for name in ("cvm-tool", "cvm-extra"):
        if kind == "yum":
            root = dnf_install(tmp_path / f"dnf-{name}", url, name, public_key=public)
        else:
            root = apt_install(tmp_path / f"apt-{name}", url, "stable", name, public_key=public)
        assert (root / f"usr/share/{name}/data").is_file()


# -- a kill between two index files ------------------------------------------------------------------


def wait_for_indexes(target: Target, prefix: str, src: Path, indexes: list[str]) -> None:
    """Until the live index files are the source's (the index writer finishes after the kill)."""
    deadline = time.monotonic() + 120
    while True:
        live = {}
        for rel in indexes:
            try:
                live[rel] = target.client.get_object(Bucket=target.bucket, Key=f"{prefix}/{rel}")[
                    "Body"
                ].read()
            except target.client.exceptions.NoSuchKey:
                live[rel] = b""
        if all(live[rel] == (src / rel).read_bytes() for rel in indexes):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the index files were not finished after the kill: {sorted(live)}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["rgw"], indirect=True)  # a process-level property, on any server
@pytest.mark.parametrize(("kind", "n"), [("yum", 1), ("apt", 1), ("apt", 2)])
def test_sigkill_between_index_files_leaves_a_signed_pair_readers_accept(
    kind: str, n: int, pkgs: dict[str, list[Path]], signing_key: tuple[Path, Path], tmp_path: Path,
    target: Target,
) -> None:  # fmt: skip
    """Killed right after the n-th index file (yum: repomd.xml, before repomd.xml.asc), with no re-run:
    real dnf/apt with signature checks install from the live publication, because the index writer
    process finishes the pair. The control (index files written by the killed process itself) leaves
    repomd.xml with the old signature, which dnf refuses: the check can fail."""
    secret, public = signing_key
    first, _, extra, more, _ = pkgs[kind]
    src = tmp_path / "src"
    make_source(kind, src, [first, extra], secret)
    mirror(kind, str(src), target.url("r"), client=target.client, gpg_key=public)
    make_source(kind, src, [first, extra, more], secret)
    plan = mirror(kind, str(src), target.url("r"), client=target.client, dry_run=True, gpg_key=public)
    indexes = plan.checked.indexes
    assert len(indexes) >= 2, indexes

    def killed_at_index(helper: bool) -> None:
        spec = {"kind": kind, "source": str(src), "dest": target.url("r"), "endpoint": target.endpoint,
                "event": "index", "n": n, "allow_rewrite": False, "keep": 2, "helper": helper}  # fmt: skip
        killed(spec)

    killed_at_index(helper=True)
    wait_for_indexes(target, "r", src, indexes)
    assert verify_published(kind, target.url("r"), client=target.client, gpg_key=public).problems == []
    if kind == "yum":
        root = dnf_install(tmp_path / "dnf", target.http("r"), "cvm-more", public_key=public)
    else:
        root = apt_install(tmp_path / "apt", target.http("r"), "stable", "cvm-more", public_key=public)
    assert (root / "usr/share/cvm-more/data").read_bytes() == b"more\n" * 50

    if kind == "yum":
        # Control: the same kill with the index files written by the killed process itself.
        make_source(kind, src, [first, extra, more, pkgs[kind][4]], secret)
        killed_at_index(helper=False)
        with pytest.raises(AssertionError, match="GPG signature"):
            dnf_install(tmp_path / "dnf2", target.http("r"), "cvm-most", public_key=public)
