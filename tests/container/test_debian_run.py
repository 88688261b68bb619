"""The real-OS profile's container runs (issue 19): the Debian 12 tree that ``make deps`` builds (taken
from its cache, offline) is published into the demo repository as ``demo --os debian12`` does (once
per machine), the debian12 profile's image is built from that snapshot, and ``podman run --rm IMAGE
cat /etc/os-release`` prints the tree's os-release; dpkg runs in it and the image's SBOM lists the
packages it knows. One build and one container per session."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build import profile
from cernvm_build.bootloader.kernel import fetch_debian_kernel
from cernvm_build.container.from_profile import build_profile
from cernvm_build.context import BuildContext
from cernvm_build.cvmfs.repository import SnapshotSpec
from cernvm_build.demo.os_tree import DEFAULT_EPOCH
from cernvm_build.demo.repository import publish_debian
from cernvm_build.osbuild.debian import build_debian_tree

from .conftest import SHARED_CACHE
from .podman import RUN, needs_podman, podman, store

__all__ = ["store"]  # the fixture

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the Debian tree is built with dpkg in a chroot (root)"),
    needs_podman,
]


@contextlib.contextmanager
def _shared_cache() -> Iterator[None]:
    own = os.environ.get("CERNVM_CACHE_DIR")
    if SHARED_CACHE is None:
        os.environ.pop("CERNVM_CACHE_DIR", None)
    else:
        os.environ["CERNVM_CACHE_DIR"] = SHARED_CACHE
    try:
        yield
    finally:
        if own is not None:
            os.environ["CERNVM_CACHE_DIR"] = own


@pytest.fixture(scope="module")
def debian_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tree and the debian12 image (docker-archive: raw layers, no gzip of 380 MB) and the tree it holds.
    The tree is published as ``cernvm-build demo --os debian12`` does it: into the shared demo
    repository, once per machine (the tree is ``make deps``' and nothing is downloaded); the image is
    read from it with the test's own reader cache."""
    own = os.environ["CERNVM_CACHE_DIR"]  # the package's (conftest._own_cache)
    with _shared_cache():
        kernel = fetch_debian_kernel(profile.load("debian12").kernel.package or "linux-image-cloud-amd64")
        tree = build_debian_tree("12", epoch=DEFAULT_EPOCH, kernel=kernel, offline=True)
        repo = publish_debian(release="12", kernel=kernel, offline=True)
    out = tmp_path_factory.mktemp("debian-container")
    # a reader cache of its own: the shared demo repository and the package's demo_repo are two
    # histories of one name (both dated from the demo's fixed epoch); one cache that verified the
    # shared one's later revision refused the fresh one as a rollback (order-dependent)
    os.environ["CERNVM_CACHE_DIR"] = str(tmp_path_factory.mktemp("debian-reader-cache"))
    try:
        build_profile(profile.load("debian12"), out_dir=out, formats=["docker-archive"],
                      sources=[str(repo.stratum)], keys=[repo.public_key],
                      snapshot=SnapshotSpec(tag="debian12"), ctx=BuildContext(epoch=0))  # fmt: skip
    finally:
        os.environ["CERNVM_CACHE_DIR"] = own
    return tree.root, out


def test_podman_runs_the_debian12_image(debian_image: tuple[Path, Path], store: Path) -> None:
    tree, out = debian_image
    image = f"docker-archive:{out / 'debian12.docker.tar'}"
    # overlay: the container is not a copy of the image (vfs would copy 380 MB per container)
    script = "cat /etc/os-release && echo ---- && dpkg-query -W -f '${Package}\\n'"
    done = podman(store, "--storage-driver=overlay", *RUN, image, "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    os_release, _, packages = done.stdout.partition("----\n")
    assert os_release == (tree / "usr/lib/os-release").read_text()
    assert 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"' in os_release
    # the tree's own shell and dpkg ran, and the image's SBOM lists the packages dpkg knows
    names = set(packages.split())
    assert {"systemd", "openssh-server", "cloud-init"} <= names
    sbom = json.loads((out / "debian12.spdx.json").read_text())
    assert {p["name"] for p in sbom["packages"]} >= names
