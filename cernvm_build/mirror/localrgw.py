"""A real Ceph RADOS Gateway on 127.0.0.1 for tests and benchmarks: one monitor, one OSD, one radosgw.

CERN's S3 is Ceph's RGW, so the mirror is proven against it next to moto. The cluster is made from
Debian's packages (ceph-mon, ceph-osd, radosgw) without cephadm or containers: ``monmaptool`` and
``ceph-authtool`` make the monitor's map and keyring, ``ceph osd new`` + ``ceph-osd --mkfs`` make an
OSD on memstore (objects live in the OSD's memory, capped by ``memory_bytes``), one replica per pool,
cephx off (the S3 side still signs requests with the user's keys). Messenger v1 only, IPv4 only:
containers often have no IPv6 and the v1/v2 address mix of a hand-made monmap confuses the OSD.
It starts in about 15 s; everything lives in one temporary folder, removed by ``stop()``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ToolError
from .locals3 import CREDENTIALS_ENV, make_public

PACKAGES = "ceph-mon ceph-osd radosgw ceph-common"
TOOLS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool", "ceph-authtool")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> str | None:
    """None when the Ceph tools are installed, else what is missing."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    return f"missing {', '.join(missing)} (apt-get install {PACKAGES})" if missing else None


@dataclass
class LocalRGW:
    memory_bytes: int = 2 << 30
    timeout: float = 90.0
    host: str = "127.0.0.1"
    port: int = 0
    root: Path | None = None
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _names: dict[int, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def conf(self) -> Path:
        assert self.root is not None
        return self.root / "ceph.conf"

    def start(self) -> LocalRGW:
        problem = available()
        if problem:
            raise ToolError(f"Ceph RGW: {problem}", hint=f"apt-get install {PACKAGES}")
        # A daemon that fails while the cluster forms (rarely, on a loaded machine) gets one more try
        # in a fresh folder; the error of the last try says which daemon and why.
        for attempt in (1, 2):
            self.root = Path(tempfile.mkdtemp(prefix="cernvm-rgw-"))
            try:
                self._start()
                return self
            except ToolError as e:
                e.message += self._log_tails()
                if os.environ.get("CERNVM_KEEP_RGW_LOGS"):
                    shutil.copytree(self.root / "log", os.environ["CERNVM_KEEP_RGW_LOGS"], dirs_exist_ok=True)
                self.stop()
                if attempt == 2:
                    raise
            except BaseException:
                self.stop()
                raise
        return self

    def _start(self) -> None:
        assert self.root is not None
        d = self.root
        for sub in ("run", "log", "mon", "osd/osd.0", "rgw"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        mon_port = free_port()
        self.port = free_port()
        while self.port == mon_port:
            self.port = free_port()
        fsid = str(uuid.uuid4())
        self.conf.write_text(
            f"""[global]
fsid = {fsid}
mon host = [v1:127.0.0.1:{mon_port}]
ms bind msgr2 = false
ms bind ipv6 = false
ms bind ipv4 = true
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
run dir = {d}/run
log file = {d}/log/$name.log
admin socket = {d}/run/$name.asok
mon data = {d}/mon/$name
osd data = {d}/osd/$name
osd objectstore = memstore
osd class update on start = false
osd crush update on start = false
memstore device bytes = {self.memory_bytes}
keyring = {d}/keyring
rgw frontends = beast endpoint=127.0.0.1:{self.port}
rgw data = {d}/rgw
rgw dns name = 127.0.0.1
rgw enable usage log = false
"""
        )
        c = ["-c", str(self.conf)]
        self._run("monmaptool", "--create", "--addv", "a", f"[v1:127.0.0.1:{mon_port}]", "--fsid", fsid,
                  str(d / "monmap"))  # fmt: skip
        self._run("ceph-authtool", "--create-keyring", str(d / "keyring"), "--gen-key", "-n", "mon.",
                  "--cap", "mon", "allow *")  # fmt: skip
        self._run("ceph-mon", *c, "--mkfs", "-i", "a", "--monmap", str(d / "monmap"), "--keyring",
                  str(d / "keyring"))  # fmt: skip
        self._daemon("mon", "ceph-mon", *c, "-i", "a", "-f")
        osd_uuid = str(uuid.uuid4())
        osd_id = self._run("ceph", *c, "osd", "new", osd_uuid).strip()
        if osd_id != "0":
            raise ToolError(f"Ceph RGW: the new OSD got id {osd_id!r}, expected 0", hint=f"see {d}/log")
        self._run("ceph-osd", *c, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
        # Placed in the CRUSH map here, not by the OSD as it boots: on a loaded host its own update
        # sometimes failed with EPERM ("init unable to update_crush_location"), killing the start.
        self._run("ceph", *c, "osd", "crush", "add", "osd.0", "1.0", "root=default")
        self._daemon("osd", "ceph-osd", *c, "-i", "0", "-f")
        self._wait(lambda: "1 up" in self._run("ceph", *c, "osd", "stat"), "the OSD to come up")
        self._daemon("rgw", "radosgw", *c, "-n", "client.rgw", "-f")
        self._wait(self._answers, f"radosgw to answer on {self.endpoint}")
        self._run("radosgw-admin", *c, "user", "create", "--uid=test", "--display-name=test",
                  f"--access-key={CREDENTIALS_ENV['AWS_ACCESS_KEY_ID']}",
                  f"--secret-key={CREDENTIALS_ENV['AWS_SECRET_ACCESS_KEY']}")  # fmt: skip

    def _log_tails(self) -> str:
        """The last error lines of each daemon's log, so a failure says why without the folder."""
        assert self.root is not None
        out = []
        for log in sorted((self.root / "log").glob("*")):
            lines = [x for x in log.read_text(errors="replace").splitlines() if " -1 " in x or "rror" in x]
            if lines:
                out.append(f"{log.name}: {lines[-1].strip()[-300:]}")
        return ("; " + " | ".join(out)) if out else ""

    def _run(self, *cmd: str) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        if proc.returncode != 0:
            raise ToolError(
                f"Ceph RGW: {cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}",
                hint=f"logs in {self.root}/log",
            )
        return proc.stdout

    def _daemon(self, name: str, *cmd: str) -> None:
        assert self.root is not None
        out = open(self.root / "log" / f"{name}.out", "wb")  # noqa: SIM115 - the daemon owns it
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self._procs.append(proc)
        self._names[proc.pid] = cmd[0]
        out.close()

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint, timeout=2).read()
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for p in self._procs:
                if p.poll() is not None:
                    raise ToolError(
                        f"Ceph RGW: {self._names[p.pid]} exited with {p.returncode} while waiting for {what}",
                        hint=f"logs in {self.root}/log",
                    )
            if ready():
                return
            time.sleep(0.3)
        raise ToolError(f"Ceph RGW: timed out waiting for {what}", hint=f"logs in {self.root}/log")

    def stop(self) -> None:
        for p in reversed(self._procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self._procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs.clear()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def make_public(self, client: Any, bucket: str) -> None:
        make_public(client, bucket)
