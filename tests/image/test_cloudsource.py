"""Cloud user-data sources of the initrd (``bootloader/cloudsource.py``) against real HTTP servers on
127.0.0.1 that behave like the EC2 (IMDSv1 and v2), OpenStack and GCE metadata services, OpenNebula
context files, and the module run from the assembled initrd runtime alone."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cernvm_build.bootloader import cloudsource
from cernvm_build.bootloader.runtime import build_runtime

pytestmark = pytest.mark.integration

USER_DATA = b"[ucernvm-begin]\ncvmfs_server=10.0.2.2:8000\nresize_rootfs=off\n[ucernvm-end]\n#cloud-config\n"
Route = Callable[[BaseHTTPRequestHandler], tuple[int, bytes]]


class _Answered(Exception):
    pass


class _Service(BaseHTTPRequestHandler):
    routes: dict[tuple[str, str], Route] = {}  # noqa: RUF012 - set per server below
    seen: list[tuple[str, str]] = []  # noqa: RUF012

    def _answer(self) -> None:
        type(self).seen.append((self.command, self.path))
        route = self.routes.get((self.command, self.path))
        try:
            status, body = route(self) if route else (404, b"not found")
        except _Answered:  # the route wrote its own answer
            return
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = _answer

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def service() -> Iterator[Callable[[dict[tuple[str, str], Route]], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(routes: dict[tuple[str, str], Route]) -> str:
        handler = type("Service", (_Service,), {"routes": routes, "seen": []})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _ok(body: bytes) -> Route:
    return lambda _: (200, body)


def _dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def test_ec2_imdsv1(service: Callable[[dict[tuple[str, str], Route]], str]) -> None:
    url = service({("GET", "/2016-04-19/user-data"): _ok(USER_DATA)})
    found = cloudsource.from_metadata([url])
    assert found == cloudsource.Found(f"ec2 {url}/2016-04-19/user-data", USER_DATA)


def test_ec2_imdsv2_token_is_sent(service: Callable[[dict[tuple[str, str], Route]], str]) -> None:
    def token(h: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        ok = h.headers.get("X-aws-ec2-metadata-token-ttl-seconds") == "21600"
        return (200, b"TOKEN-123") if ok else (400, b"")

    def data(h: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        return (200, USER_DATA) if h.headers.get("X-aws-ec2-metadata-token") == "TOKEN-123" else (401, b"")

    url = service({("PUT", "/latest/api/token"): token, ("GET", "/2016-04-19/user-data"): data})
    found = cloudsource.from_metadata([url])
    assert found is not None and found.data == USER_DATA


def test_openstack_after_ec2_and_gce_first(service: Callable[[dict[tuple[str, str], Route]], str]) -> None:
    url = service({("GET", "/openstack/2013-10-17/user_data"): _ok(b"openstack")})
    assert cloudsource.from_metadata([url]) == cloudsource.Found(
        f"openstack {url}/openstack/2013-10-17/user_data", b"openstack"
    )

    def gce(h: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        return (200, b"gce") if h.headers.get("Metadata-Flavor") == "Google" else (403, b"")

    both = service(
        {
            ("GET", "/computeMetadata/v1/instance/attributes/user-data"): gce,
            ("GET", "/2016-04-19/user-data"): _ok(b"ec2"),
        }
    )
    found = cloudsource.from_metadata([both])
    assert found is not None and (found.data, found.source.split()[0]) == (b"gce", "gce")


def test_no_user_data_no_service_and_too_much(service: Callable[[dict[tuple[str, str], Route]], str]) -> None:
    empty = service({})  # a metadata service without user data for this instance: 404 everywhere
    assert cloudsource.from_metadata([empty]) is None
    huge = service({("GET", "/2016-04-19/user-data"): _ok(b"x" * (cloudsource.MAX_USER_DATA + 1))})
    assert cloudsource.from_metadata([huge]) is None
    # a dead address is skipped after the connect probe; the next base URL answers
    fine = service({("GET", "/latest/user-data"): _ok(b"late")})
    found = cloudsource.from_metadata([_dead_url(), fine])
    assert found is not None and found.data == b"late"


def test_opennebula_context_sh() -> None:
    encoded = base64.b64encode(USER_DATA).decode()
    text = (
        "# Context variables generated by OpenNebula\n"
        "DISK_ID='1'\n"
        "ETH0_IP='10.0.0.5'\n"
        f"EC2_USER_DATA='{encoded[:20]}\n{encoded[20:]}'\n"
        "NOTE='it'\\''s $(rm -rf /) data'\n"
        'OTHER="a \\"b\\" c"\n'
    )
    values = cloudsource.parse_context_sh(text)
    assert values["NOTE"] == "it's $(rm -rf /) data" and values["OTHER"] == 'a "b" c'
    assert values["DISK_ID"] == "1" and values["ETH0_IP"] == "10.0.0.5"
    assert cloudsource.from_opennebula(text.encode()) == cloudsource.Found(
        "opennebula context.sh EC2_USER_DATA", USER_DATA
    )
    plain = "USER_DATA='[ucernvm-begin]\ncvmfs_tag=v1\n[ucernvm-end]\n'\n"
    found = cloudsource.from_opennebula(plain.encode())
    assert found is not None and found.data == b"[ucernvm-begin]\ncvmfs_tag=v1\n[ucernvm-end]\n"
    b64 = f"USERDATA_ENCODING='base64'\nUSER_DATA='{encoded}'\n"
    assert cloudsource.from_opennebula(b64.encode()) == cloudsource.Found(
        "opennebula context.sh USER_DATA", USER_DATA
    )
    assert cloudsource.from_opennebula(b"EC2_USER_DATA='not base64!'\n") is None
    assert cloudsource.from_opennebula(b"ETH0_IP='10.0.0.5'\nunterminated='abc") is None


def test_command_line(service: Callable[[dict[tuple[str, str], Route]], str], tmp_path: Path) -> None:
    url = service({("GET", "/2016-04-19/user-data"): _ok(USER_DATA)})
    out = tmp_path / "user-data"
    run = [sys.executable, "-m", "cernvm_build.bootloader.cloudsource"]
    r = subprocess.run([*run, "metadata", str(out), "--url", url], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, f"ec2 {url}/2016-04-19/user-data")
    assert out.read_bytes() == USER_DATA
    none = tmp_path / "none"
    r = subprocess.run([*run, "metadata", str(none), "--url", _dead_url()], capture_output=True, timeout=60)
    assert r.returncode == 1 and not none.exists()
    r = subprocess.run([*run, "metadata"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_runs_from_the_initrd_runtime_alone(
    service: Callable[[dict[tuple[str, str], Route]], str], tmp_path: Path
) -> None:
    """As the init runs it: the runtime's own interpreter and zip (a module the scan misses fails here)."""
    url = service({("GET", "/openstack/2013-10-17/user_data"): _ok(USER_DATA)})
    ctx = tmp_path / "context.sh"
    ctx.write_text(f"EC2_USER_DATA='{base64.b64encode(b'nebula').decode()}'\n")
    rt = build_runtime(tmp_path / "rt")
    lib = rt.root / "lib"
    env = {"PYTHONHOME": str(rt.root), "LD_LIBRARY_PATH": str(lib), "PATH": os.environ["PATH"]}
    py = [str(lib / "ld-linux-x86-64.so.2"), str(rt.root / "bin" / "python3"), "-S", "-m"]
    mod = "cernvm_build.bootloader.cloudsource"
    for argv, want in (
        (["metadata", str(tmp_path / "a"), "--url", url], USER_DATA),
        (["opennebula", str(ctx), str(tmp_path / "b")], b"nebula"),
    ):
        r = subprocess.run(
            [*py, mod, *argv], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert r.returncode == 0, r.stderr
        assert Path(argv[-1] if argv[0] == "opennebula" else argv[1]).read_bytes() == want


def _trickle(request: BaseHTTPRequestHandler) -> tuple[int, bytes]:
    """A byte every 0.2 s of a 1,000-byte answer: each read is well within its timeout."""
    request.send_response(200)
    request.send_header("Content-Length", "1000")
    request.end_headers()
    try:
        for _ in range(1000):
            request.wfile.write(b"x")
            request.wfile.flush()
            time.sleep(0.2)
    except OSError:
        pass
    raise _Answered


def test_too_much_opennebula_user_data_is_none_not_a_cut_one() -> None:
    big = b"#cloud-config\n" + b"#" * cloudsource.MAX_USER_DATA
    text = f"EC2_USER_DATA='{base64.b64encode(big).decode()}'\n"
    assert cloudsource.from_opennebula(text.encode()) is None
    assert cloudsource.from_opennebula(b"USER_DATA='" + big + b"'\n") is None


def _trickle_head(request: BaseHTTPRequestHandler) -> tuple[int, bytes]:
    """The status line, then a header byte every 0.2 s, never ending the headers."""
    try:
        request.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(1000):
            request.wfile.write(b"a")
            request.wfile.flush()
            time.sleep(0.2)
    except OSError:
        pass
    raise _Answered


@pytest.mark.timeout(60)
@pytest.mark.parametrize("trickle", [_trickle, _trickle_head], ids=["body", "headers"])
def test_a_trickling_service_is_given_up_at_its_deadline(
    service: Callable[[dict[tuple[str, str], Route]], str],
    monkeypatch: pytest.MonkeyPatch,
    trickle: Callable[[BaseHTTPRequestHandler], tuple[int, bytes]],
) -> None:
    """GCE's path sends a byte just before each read would time out, in the body or (``http.client``
    reads the status line and headers with only the per-read timeout) in the headers: the boot must
    not wait for it (200 s here, days for a megabyte; the headers held the initrd for ever). It is
    dropped at the deadline and EC2 is asked next."""
    monkeypatch.setattr(cloudsource, "DEADLINE", 1.0)
    url = service(
        {
            ("GET", "/computeMetadata/v1/instance/attributes/user-data"): trickle,
            ("GET", "/2016-04-19/user-data"): _ok(USER_DATA),
        }
    )
    assert cloudsource.from_metadata([url]) == cloudsource.Found(f"ec2 {url}/2016-04-19/user-data", USER_DATA)


@pytest.mark.timeout(60)
def test_all_requests_together_are_bounded(
    service: Callable[[dict[tuple[str, str], Route]], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every path trickles: the boot goes on without user data once TOTAL_DEADLINE has passed, not
    after five request deadlines."""
    monkeypatch.setattr(cloudsource, "DEADLINE", 30.0)
    monkeypatch.setattr(cloudsource, "TOTAL_DEADLINE", 1.0)
    paths = ["/latest/api/token"] + [p for _, p, _ in cloudsource.FLAVOURS]
    url = service({(m, p): _trickle_head for p in paths for m in ("GET", "PUT")})
    assert cloudsource.from_metadata([url]) is None


def test_one_user_data_limit_for_the_initrd_and_launch() -> None:
    """The init's copy (init.head.sh), the metadata client and the parser's inflate limit (which
    launch's document cap is) are the same number: launch must refuse what the guest would ignore."""
    from cernvm_build.bootloader import userdata
    from cernvm_build.paths import data_dir

    head = (data_dir("bootloader") / "init.head.sh").read_text()
    assert f"MAX_USER_DATA={userdata.MAX_INFLATED}\n" in head
    assert cloudsource.MAX_USER_DATA == userdata.MAX_INFLATED


@pytest.mark.timeout(60)
def test_past_the_total_deadline_no_further_url_is_asked(
    service: Callable[[dict[tuple[str, str], Route]], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """lf18: once TOTAL_DEADLINE had passed, the remaining URLs were still probed and sent every
    request (each failing at once, after its connect): now none is, and the caller is told."""
    monkeypatch.setattr(cloudsource, "DEADLINE", 30.0)
    monkeypatch.setattr(cloudsource, "TOTAL_DEADLINE", 1.0)
    paths = ["/latest/api/token"] + [p for _, p, _ in cloudsource.FLAVOURS]
    slow = service({(m, p): _trickle_head for p in paths for m in ("GET", "PUT")})
    good = service({("GET", "/2016-04-19/user-data"): _ok(USER_DATA)})
    notes: list[str] = []
    assert cloudsource.from_metadata([slow, good, good], note=notes.append) is None
    handler = _Service.__subclasses__()[-1]  # the good service's (the last made)
    assert handler.seen == []  # type: ignore[attr-defined]
    # the deadline passed while the slow one's first path trickled: what came next is named
    assert notes == [
        f"the metadata services' deadline (1 s) passed: ec2 /2016-04-19/user-data of {slow} "
        "(and 2 more URLs) not asked"
    ]


@pytest.mark.timeout(120)
def test_the_init_asks_the_early_mount_process_for_cloud_user_data(
    service: Callable[[dict[tuple[str, str], Route]], str], tmp_path: Path
) -> None:
    """03-context-drive's metadata and OpenNebula reads are requests to the early mount process
    (``init.head.sh`` ``py_early``), not a Python start of their own (~0.6-0.7 guest-s each under TCG):
    the user data, the source line and the status reach the init as from ``python3 -m ...cloudsource``,
    a trickling service is still given up at its deadline, a bad argument is the same one line, and
    the same process mounts afterwards. A process gone before the request leaves it to a start of its
    own."""
    from cernvm_build.bootloader import parse_and_mount
    from cernvm_build.errors import CvmfsError
    from cernvm_build.paths import data_dir

    url = service({("GET", "/2016-04-19/user-data"): _ok(USER_DATA)})
    slow = service({("GET", "/computeMetadata/v1/instance/attributes/user-data"): _trickle})
    (tmp_path / "context.sh").write_text(f"EC2_USER_DATA='{base64.b64encode(b'nebula').decode()}'\n")
    head = data_dir("bootloader") / "init.head.sh"
    runs, log, prelude = tmp_path / "starts", tmp_path / "cvmfs.log", tmp_path / "prelude.py"
    not_dir = tmp_path / "not a dir"
    not_dir.write_text("")
    # the real early process; its request deadline shortened (a trickling service, 10 s otherwise)
    prelude.write_text(
        "from cernvm_build.bootloader import cloudsource, parse_and_mount\n"
        "cloudsource.DEADLINE = 1.0\n"
        "parse_and_mount.exit_now(parse_and_mount.main([]))\n"
    )
    package = str(Path(parse_and_mount.__file__).resolve().parent.parent.parent)
    t = tmp_path
    boot = (
        f". {head}; MOUNT_FIFOS=$FIFOS; "
        f'py() {{ echo "py $*" >>{runs}; return 1; }}; '
        f'py_storage() {{ echo early >>{runs}; [ -z "$FAIL" ] || return 1; {sys.executable} {prelude}; }}; '
        # FAIL: the early process is gone before the first request (waited for: under load it may
        # still be ending, and one that dies on a request answers nothing, by design)
        f'start_mount; [ -z "$FAIL" ] || wait $MOUNT_PID; '
        f'src=$(py_early cloudsource metadata {t}/a --url {url}); echo "a=$src rc=$?"; '
        f'src=$(py_early cloudsource opennebula {t}/context.sh {t}/b); echo "b=$src rc=$?"; '
        f'src=$(py_early cloudsource metadata {t}/c --url {slow}); echo "c=$src rc=$?"; '
        'py_early cloudsource metadata; echo "usage=$?"; '
        f'mount_cvmfs {log} --fqrn demo.example --server http://127.0.0.1:9/cvmfs/demo.example "{not_dir}"; '
        'echo "mount=$?"'
    )

    def boot_once(**env: str) -> tuple[str, str, str]:
        runs.unlink(missing_ok=True)
        # each boot its own FIFOs: an early process of the boot before, still ending under load, must
        # not answer this one's first request (seen once in CI)
        fifos = f"{t}/mount{len(list(t.glob('mount*')))}"
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": package, "FIFOS": fifos, **env}
        r = subprocess.run(["busybox", "sh", "-c", boot], capture_output=True, text=True, timeout=90, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout, r.stderr, runs.read_text()

    out, err, starts = boot_once()
    assert starts == "early\n", "no Python start of its own"
    assert f"a=ec2 {url}/2016-04-19/user-data rc=0\n" in out, out
    assert (tmp_path / "a").read_bytes() == USER_DATA
    assert "b=opennebula context.sh EC2_USER_DATA rc=0\n" in out, out
    assert (tmp_path / "b").read_bytes() == b"nebula"
    assert "c= rc=1\n" in out and not (tmp_path / "c").exists(), out
    assert "usage=2\n" in out and "cloudsource: usage: metadata OUT" in err and "Traceback" not in err, err
    assert f"mount={CvmfsError.exit_code}\n" in out and "mount point is not a directory" in log.read_text()
    out, err, starts = boot_once(FAIL="1")  # gone before the request: a start of its own (here: fails)
    assert starts.splitlines() == [
        "early",
        f"py cernvm_build.bootloader.cloudsource metadata {t}/a --url {url}",
        f"py cernvm_build.bootloader.cloudsource opennebula {t}/context.sh {t}/b",
        f"py cernvm_build.bootloader.cloudsource metadata {t}/c --url {slow}",
        "py cernvm_build.bootloader.cloudsource metadata",
    ]
    assert "a= rc=1\n" in out and "usage=1\n" in out, out


def test_cloud_user_data_adds_neither_typing_nor_dataclasses_to_the_early_process() -> None:
    """The early mount process (whose imports load neither, tests/cvmfs/test_core.py) imports this
    module when 03-context-drive asks: typing and dataclasses, with inspect, ast and dis under them,
    were ~40 M of the ~75 M instructions of that import (callgrind, the initrd's runtime)."""
    code = (
        "import sys, cernvm_build.bootloader.parse_and_mount, cernvm_build.cvmfs.mount; "
        "before = set(sys.modules); import cernvm_build.bootloader.cloudsource; "
        "print(*sorted(set(sys.modules) - before))"
    )
    root = Path(cloudsource.__file__).resolve().parent.parent.parent
    run = [sys.executable, "-S", "-c", code]
    r = subprocess.run(run, cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    added = {m.split(".")[0] for m in r.stdout.split()}
    assert "http" in added, added  # the control: it did import something
    assert sorted(added & {"typing", "dataclasses", "inspect", "ast", "dis"}) == [], added
