"""The real CernVM-FS 2.11.5 client and server tool (``shared/fixtures/cvmfs-real``), as the tests use them.

They are a reference to test against and never part of the project: found beside the checkout (or
through ``$CERNVM_CVMFS_REAL``), never copied into it. When they cannot run, the tests FAIL and say
which Debian packages to install: a skipped interop suite would hide exactly the breakage it exists
to catch.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ENV = "CERNVM_CVMFS_REAL"
CHECKOUT = Path(__file__).resolve().parents[2]
RELATIVE = Path("shared") / "fixtures" / "cvmfs-real"
MiB = 1 << 20
#: ``cvmfs_server``'s default chunking, as ``cvmfs_swissknife sync`` options
DEFAULT_CHUNKS = ("-p", "-l", str(4 * MiB), "-a", str(8 * MiB), "-h", str(16 * MiB))
#: Runtime Debian packages of the binaries (from the fixture's README); also in the Makefile.
PACKAGES = (
    "libcurl4 libc-ares2 libleveldb1d libprotobuf-lite32 libsqlite3-0 libpacparser1 libarchive13 "
    "libssl3 libuuid1 libfuse3-3 fuse3 libcap2 libattr1"
)
# shared library -> Debian package, to name the package in the failure message
_LIB_PACKAGE = {
    "libcares.so.2": "libc-ares2",
    "libleveldb.so.1d": "libleveldb1d",
    "libprotobuf-lite.so.32": "libprotobuf-lite32",
    "libpacparser.so.1": "libpacparser1",
    "libcurl.so.4": "libcurl4",
    "libsqlite3.so.0": "libsqlite3-0",
    "libarchive.so.13": "libarchive13",
    "libssl.so.3": "libssl3",
    "libcrypto.so.3": "libssl3",
    "libuuid.so.1": "libuuid1",
    "libfuse3.so.3": "libfuse3-3",
    "libcap.so.2": "libcap2",
    "libattr.so.1": "libattr1",
}


def real_dir() -> Path:
    """``$CERNVM_CVMFS_REAL``, else ``shared/fixtures/cvmfs-real`` beside the checkout (or an ancestor)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    for parent in CHECKOUT.parents:
        cand = parent / RELATIVE
        if cand.is_dir():
            return cand
    return CHECKOUT.parent / RELATIVE


@dataclass(frozen=True)
class RealTools:
    root: Path
    lib: Path  # a directory of links named as the client's dlopen() expects

    @property
    def cvmfs2(self) -> Path:
        return self.root / "bin" / "cvmfs2"

    @property
    def swissknife(self) -> Path:
        return self.root / "bin" / "cvmfs_swissknife"

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, CVMFS_LIBRARY_PATH=str(self.lib))

    def swissknife_run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.swissknife), *map(str, args)], capture_output=True, text=True, timeout=300, env=self.env
        )

    def check(self, url: str, fqrn: str, pub: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
        """``cvmfs_swissknife check -c`` over HTTP: signatures, catalogs, every object present."""
        tmp.mkdir(parents=True, exist_ok=True)
        return self.swissknife_run("check", "-c", "-r", url, "-t", tmp, "-k", pub, "-N", fqrn)

    def scrub(self, stratum: Path) -> subprocess.CompletedProcess[str]:
        """``cvmfs_swissknife scrub``: re-hashes every object of the Stratum."""
        return self.swissknife_run("scrub", "-r", stratum / "data")


def _missing_libraries(binary: Path) -> list[str]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    return re.findall(r"^\s*(\S+) => not found", out, re.M)


def _link_libraries(root: Path, dest: Path) -> None:
    """Links ``libX.so`` and ``libX.so.V`` -> the real files. The fixture's own ``libX.so`` may be a
    symlink flattened into a text file holding the target's name, which dlopen() cannot load."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted((root / "lib").glob("*.so.*")):
        for name in (f.name, f.name.split(".so")[0] + ".so"):
            link = dest / name
            if not link.exists():
                link.symlink_to(f.resolve())


class RealToolsMissing(Exception):
    """The real tools are not there or cannot run; the message says what to do."""


def find_tools(scratch: Path) -> RealTools:
    """The real tools, ready to run (library links made in ``scratch``); ``RealToolsMissing`` with
    what to install or set when they cannot run."""
    root = real_dir()
    if not (root / "bin" / "cvmfs2").is_file() or not (root / "bin" / "cvmfs_swissknife").is_file():
        raise RealToolsMissing(
            f"the real CernVM-FS tools are not at {root} (hint: put shared/fixtures/cvmfs-real beside the "
            f"checkout, or set {ENV}=/path/to/cvmfs-real)"
        )
    tools = RealTools(root, scratch / "lib")
    _link_libraries(root, tools.lib)
    missing: list[str] = []
    for binary in [tools.cvmfs2, tools.swissknife, *sorted((root / "lib").glob("*.so.*"))]:
        missing += [m for m in _missing_libraries(binary) if m not in missing]
    if shutil.which("fusermount3") is None:
        missing.append("fusermount3")
    if missing:
        pkgs = sorted({_LIB_PACKAGE.get(m, "fuse3" if m == "fusermount3" else "?") for m in missing})
        raise RealToolsMissing(
            f"the real CernVM-FS tools in {root} cannot run: missing {', '.join(missing)} "
            f"(hint: apt-get install {' '.join(pkgs)}; all of them: {PACKAGES}; 'make deps' installs them)"
        )
    r = subprocess.run([str(tools.cvmfs2), "--version"], capture_output=True, text=True, env=tools.env)
    if r.returncode != 0 or "2.11" not in r.stdout + r.stderr:
        raise RealToolsMissing(
            f"{tools.cvmfs2} --version failed: {(r.stderr or r.stdout).strip()[:300]} "
            f"(hint: apt-get install {PACKAGES})"
        )
    return tools


def locate(scratch: Path) -> RealTools:
    """``find_tools`` for a test: a missing tool FAILS the test (a skip would hide the breakage)."""
    try:
        return find_tools(scratch)
    except RealToolsMissing as e:
        pytest.fail(str(e), pytrace=False)


def _unmount(mnt: Path) -> None:
    if not os.path.ismount(mnt):
        return
    r = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, timeout=60)
    if r.returncode != 0:  # busy: detach lazily so that the test run never leaves a mount behind
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, timeout=60)


@contextlib.contextmanager
def mounted(
    tools: RealTools,
    url_template: str,
    fqrn: str,
    pub: Path,
    work: Path,
    **config: str,
) -> Iterator[Path]:
    """The real ``cvmfs2`` mounts ``fqrn`` at ``work/mnt``; ``config`` adds client parameters
    (``CVMFS_REPOSITORY_TAG=...``). Unmounted at exit, lazily if busy."""
    mnt, cache = work / "mnt", work / "cache"
    mnt.mkdir(parents=True)
    cache.mkdir()
    lines = {
        "CVMFS_SERVER_URL": url_template,
        "CVMFS_PUBLIC_KEY": str(pub),
        "CVMFS_HTTP_PROXY": "DIRECT",
        "CVMFS_CACHE_BASE": str(cache),
        "CVMFS_RELOAD_SOCKETS": str(cache),
        "CVMFS_USER": "root",
        "CVMFS_SHARED_CACHE": "no",
        "CVMFS_QUOTA_LIMIT": "-1",
        "CVMFS_CLAIM_OWNERSHIP": "no",
        **config,
    }
    conf = work / "client.conf"
    conf.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    cmd = [str(tools.cvmfs2), "-o", f"config={conf},fsname=cvmfs2,allow_other", fqrn, str(mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=tools.env)
    try:
        assert r.returncode == 0 and os.path.ismount(mnt), (
            f"cvmfs2 failed ({r.returncode}): {r.stdout}{r.stderr}"
        )
        yield mnt
    finally:
        _unmount(mnt)


def real_sync(
    tools: RealTools, work: Path, fqrn: str, base: Path, base_hash: str, pub: Path, files: Path, *extra: str
) -> str:
    """``cvmfs_swissknife sync`` (what ``cvmfs_server publish`` runs) of ``files`` over ``base``,
    into a Stratum at ``work/real`` (``extra``: more sync options); returns the new root hash.

    The tool keeps statistics in /var/spool/cvmfs/<fqrn>/: it runs in a private mount namespace with a
    tmpfs there, so nothing is written outside the test's directory."""
    real, tmp, empty = work / "real", work / "sync-tmp", work / "empty"
    for d in (real / "data" / "txn", tmp, empty):
        d.mkdir(parents=True)
    for i in range(256):
        (real / "data" / f"{i:02x}").mkdir()
    manifest = tmp / "manifest"
    cmd = [
        tools.swissknife, "sync", "-u", files, "-s", files, "-c", empty, "-t", tmp, "-b", base_hash,
        "-r", f"local,{real}/data/txn,{real}", "-w", f"file://{base}", "-o", manifest, "-N", fqrn,
        "-K", pub, "-e", "sha1", "-Z", "zlib", "-f", "overlayfs", *extra,
    ]  # fmt: skip
    inner = f"mount -t tmpfs none /var/spool && mkdir -p /var/spool/cvmfs/{fqrn} && exec "
    inner += " ".join(shlex.quote(str(c)) for c in cmd)
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
        capture_output=True,
        text=True,
        timeout=300,
        env=tools.env,
    )
    assert r.returncode == 0, f"cvmfs_swissknife sync failed: {r.stdout[-800:]}{r.stderr[-800:]}"
    return next(line[1:] for line in manifest.read_text().splitlines() if line.startswith("C"))
