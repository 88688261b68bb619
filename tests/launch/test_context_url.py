"""Pairing: ``cernvm-launch create --context URL`` and ``cernvm-launch context FILE_OR_URL`` read a
context from a real HTTP server on 127.0.0.1 (or file://) and check it exactly as a local file:
the same refusals in the same words, a size cap, one-line errors."""

from __future__ import annotations

import functools
import http.server
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from cernvm_build.cli.launch import main
from cernvm_build.launch.contextsrc import MAX_CONTEXT_BYTES
from tests.launch.support import driver_host

pytestmark = pytest.mark.integration

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq1w2e3r4t5y6u7i8o9p0aSdFgHjKlZxCvBnM12345 you@laptop"
GOOD = f"""#cloud-config
hostname: paired
ssh_authorized_keys:
  - {KEY}
[ucernvm-begin]
cvmfs_tag=v1
resize_rootfs=off
[ucernvm-end]
"""
URI = "test:///default"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # The reader hangs up at its size cap on purpose; the default prints the server thread's
        # traceback to stderr whenever the race lets it, into the next command's captured output.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    httpd = _Server(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def launch(*argv: str) -> int:
    return main(["--connect", URI, *argv], connect=driver_host)


def test_context_verb_checks_a_url_like_a_file(
    web: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, base = web
    (root / "vm.txt").write_text(GOOD)
    assert launch("context", f"{base}/vm.txt", "--json") == 0
    got = json.loads(capsys.readouterr().out)
    assert got["ucernvm"] == {"cvmfs_tag": "v1", "resize_rootfs": "off"}
    assert (got["hostname"], got["ssh_authorized_keys"]) == ("paired", 1)
    assert launch("context", f"file://{root / 'vm.txt'}") == 0
    capsys.readouterr()

    # The same malformed value, from a URL and from a file: the same message, only the place differs.
    bad = GOOD.replace("cvmfs_tag=v1", "cvmfs_tag=bad tag!")
    (root / "bad.txt").write_text(bad)
    local = tmp_path / "bad.txt"
    local.write_text(bad)
    assert launch("context", f"{base}/bad.txt") == 3
    from_url = capsys.readouterr().err
    assert launch("context", str(local)) == 3
    from_file = capsys.readouterr().err
    assert f"error: {base}/bad.txt:6: cvmfs_tag: invalid value 'bad tag!'" in from_url
    assert from_url.replace(f"{base}/bad.txt", str(local)) == from_file
    assert "hint: expected a snapshot tag" in from_url and "Traceback" not in from_url

    (root / "big.txt").write_bytes(b"#" * (MAX_CONTEXT_BYTES + 1))
    (tmp_path / "big.txt").write_bytes(b"#" * (MAX_CONTEXT_BYTES + 1))
    for source in (f"{base}/big.txt", str(tmp_path / "big.txt")):
        assert launch("context", source) == 3
        assert f"context is larger than {MAX_CONTEXT_BYTES} bytes" in capsys.readouterr().err
    assert launch("context", f"{base}/missing.txt") == 3
    err = capsys.readouterr().err
    assert f"{base}/missing.txt: cannot fetch the context: HTTP 404" in err and len(err.splitlines()) == 2
    assert launch("context", "ftp://example.org/x") == 3
    assert "scheme 'ftp' is not supported" in capsys.readouterr().err


def test_create_with_context_url_puts_that_context_on_the_instance(
    launch_env: Path, image: Path, web: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, base = web
    (root / "vm.txt").write_text(GOOD)
    conn = libvirt.open(URI)
    try:
        code = launch(
            "create", "--name", "ctx-a", "--iso", str(image), "--no-wait", "--context", f"{base}/vm.txt"
        )
        assert code == 0, capsys.readouterr().err
        isos = list((launch_env / "run" / "ctx-a").glob("*.iso"))
        assert isos, sorted(p.name for p in (launch_env / "run" / "ctx-a").iterdir())
        blob = isos[0].read_bytes()
        assert KEY.encode() in blob and b"cvmfs_tag=v1" in blob and b"hostname: paired" in blob
        # a malformed value is refused before anything is made
        (root / "bad.txt").write_text(GOOD.replace("resize_rootfs=off", "resize_rootfs=maybe"))
        assert launch("create", "--name", "ctx-b", "--iso", str(image), "--context", f"{base}/bad.txt") == 3
        assert "bad.txt:7: resize_rootfs: 'maybe' is not on/off" in capsys.readouterr().err
        assert not (launch_env / "run" / "ctx-b").exists()
        assert launch("create", "--name", "ctx-c", "--context", f"{base}/vm.txt", str(root / "vm.txt")) == 2
    finally:
        for dom in conn.listAllDomains(0):
            if dom.name().startswith("ctx-"):
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        conn.close()


def test_a_ucernvm_key_given_twice_is_a_warning_and_the_last_value_counts(
    launch_env: Path, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key given twice in the block took the last value without a word (note24's leftovers): the
    bootloader and the real μCernVM keep doing so; `context` and `create` now say it, naming both lines."""
    vm = tmp_path / "vm.txt"
    vm.write_text(GOOD.replace("resize_rootfs=off\n", "resize_rootfs=off\ncvmfs_tag=v2\n"))
    said = f"{vm}:8: cvmfs_tag is given again (first on line 6); the bootloader takes this last value"
    assert launch("context", str(vm)) == 0
    captured = capsys.readouterr()
    assert "ucernvm cvmfs_tag=v2" in captured.out and f"warning: {said}" in captured.err
    assert launch("context", str(vm), "--json") == 0
    got = json.loads(capsys.readouterr().out)
    assert got["ucernvm"]["cvmfs_tag"] == "v2" and got["warnings"] == [said]
    conn = libvirt.open(URI)
    try:
        assert (
            launch("create", "--name", "ctx-twice", "--iso", str(image), "--no-wait", "--context", str(vm))
            == 0
        )
        assert said in capsys.readouterr().err
        blob = next((launch_env / "run" / "ctx-twice").glob("*.iso")).read_bytes()
        assert b"cvmfs_tag=v2" in blob and b"cvmfs_tag=v1" not in blob
    finally:
        for dom in conn.listAllDomains(0):
            if dom.name() == "ctx-twice":
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        conn.close()
