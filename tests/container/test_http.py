"""From a Stratum served over HTTP on 127.0.0.1: the profile's servers, fail-over, and verify that
finds the repository through the server recorded in the image."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs.serve import Server, serve

from .test_cvmfs_source import FIXTURE, KEY, PROFILE


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cvmfs/@fqrn@"  # nothing listens there any more


@pytest.fixture
def server() -> Iterator[Server]:
    srv = serve(FIXTURE / "repo")
    try:
        yield srv
    finally:
        srv.close()


@pytest.mark.integration
def test_build_over_http_with_fail_over_and_verify_by_recorded_server(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = f"{server.url}/cvmfs/@fqrn@"
    text = PROFILE.format(key=KEY).replace(
        "servers: !replace [http://127.0.0.1:9/cvmfs/@fqrn@]", f"servers: !replace [{dead_url()}, {live}]"
    )
    prof = tmp_path / "overhttp.yaml"
    prof.write_text(text)
    out = tmp_path / "out"
    assert (
        main(["container", str(prof), "--out", str(out), "--format", "docker-archive", "--json", "-q"]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["origin"]["cvmfs.server"].split()[1] == server.repo_url("fixture.cernvm.test")
    # no --source: the image says where it came from
    assert main(["container", "verify", str(out / "overhttp.docker.tar"), "--key", str(KEY), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["checked"] == 80


@pytest.mark.integration
def test_verify_when_the_recorded_server_is_gone(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prof = tmp_path / "gone.yaml"
    prof.write_text(
        PROFILE.format(key=KEY).replace("http://127.0.0.1:9/cvmfs/@fqrn@", f"{server.url}/cvmfs/@fqrn@")
    )
    out = tmp_path / "out"
    assert main(["container", str(prof), "--out", str(out), "--format", "oci", "-q"]) == 0
    server.close()
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "empty-cache"))  # no copy from the build
    capsys.readouterr()
    rc = main(["container", "verify", str(out / "gone.oci"), "--key", str(KEY)])
    err = capsys.readouterr().err
    assert rc == 5 and "Traceback" not in err and "error:" in err
    # an archivist's own copy of the repository still proves the image
    assert (
        main(["container", "verify", str(out / "gone.oci"), "--key", str(KEY), "--source", str(FIXTURE)]) == 0
    )
