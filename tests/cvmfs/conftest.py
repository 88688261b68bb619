"""Shared fixtures: a writable copy of the real-tools fixture, an HTTP server over it, re-signing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa as crsa

from cernvm_build.cvmfs import manifest
from cernvm_build.cvmfs.masterkey import FileMasterKey
from cernvm_build.cvmfs.serve import Server, serve

#: the libfuse builds the mount daemon runs on (its ``FUSE_LIBRARY_PATH``)
FUSE_LIBS = {
    "libfuse3": "/usr/lib/x86_64-linux-gnu/libfuse3.so.3",
    "libfuse2": "/usr/lib/x86_64-linux-gnu/libfuse.so.2",
}


def fuse_env(lib: str) -> dict[str, str]:
    """The environment that makes the mount daemon run on ``lib`` (a missing library fails the test:
    both front ends are part of what is tested)."""
    path = FUSE_LIBS[lib]
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: apt-get install {'fuse3' if lib == 'libfuse3' else 'libfuse2'}")
    return os.environ | {"FUSE_LIBRARY_PATH": path}


def unmount(mnt: Path) -> None:
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=60)


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Path]:
    """An empty mount point, unmounted after the test if a mount is left on it."""
    m = tmp_path / "mnt"
    m.mkdir()
    yield m
    unmount(m)


# Written by the real CernVM-FS 2.11.5 server tools (see data/README.md); vendored so CI has it.
FIXTURE = Path(__file__).resolve().parent / "data" / "fixture.cernvm.test"
FQRN = "fixture.cernvm.test"
ROOT_REV1 = "7d8a9044c2715e91dd078c3b646dff0bc025a6d6"
ROOT_REV2 = "ca734188abe4255977cc1d053b5331c9f24c55cb"


@dataclass
class Fixture:
    root: Path  # <tmp>/fixture.cernvm.test

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def pub(self) -> Path:
        return self.keys / f"{FQRN}.pub"

    def listing(self, revision: int) -> dict[str, Any]:
        return json.loads((self.root / f"listing-revision-{revision}.json").read_text())

    def object(self, name: str, suffix: str = "") -> Path:
        return self.repo / "data" / name[:2] / (name[2:] + suffix)

    def resign_manifest(self, body: bytes) -> None:
        key = serialization.load_pem_private_key((self.keys / f"{FQRN}.key").read_bytes(), None)
        assert isinstance(key, crsa.RSAPrivateKey)
        h = manifest.body_hash(body)
        sig = key.sign(h.encode(), padding.PKCS1v15(), hashes.SHA1())
        (self.repo / ".cvmfspublished").write_bytes(manifest.join_signed(body, h, sig))

    def resign_whitelist(self, body: bytes, keyfile: Path | None = None) -> None:
        key = FileMasterKey((keyfile or self.keys / f"{FQRN}.masterkey").read_bytes())
        h = manifest.body_hash(body)
        sig = key.sign_raw(h.encode())
        (self.repo / ".cvmfswhitelist").write_bytes(manifest.join_signed(body, h, sig))


def _writable(root: Path) -> None:
    for dirpath, _dirs, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)


@pytest.fixture
def fx(tmp_path: Path) -> Fixture:
    dest = tmp_path / FQRN
    shutil.copytree(FIXTURE, dest)
    _writable(dest)
    return Fixture(dest)


@pytest.fixture
def server(fx: Fixture) -> Iterator[Server]:
    with serve(fx.root) as s:
        yield s


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start the HTTP server are integration tests (a real server on 127.0.0.1)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents and "server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
