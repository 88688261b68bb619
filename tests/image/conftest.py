"""Shared fixtures of the image tests: a demo-keyed repository with a tiny test OS, served on 127.0.0.1."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cernvm_build import profile
from cernvm_build.cvmfs.keys import KeySet, load_keys
from cernvm_build.cvmfs.publish import PublishResult, create_repository, publish_tree
from cernvm_build.cvmfs.serve import Server, serve
from cernvm_build.paths import data_dir

from .vm import make_os_tree

FQRN = "demo.cernvm.test"
DEMO_KEYS = data_dir("profiles") / "keys" / "demo"


@dataclass
class ServedRepo:
    stratum: Path
    keys: KeySet
    server: Server
    work: Path
    revisions: list[PublishResult]

    @property
    def url(self) -> str:
        return self.server.repo_url(FQRN)

    def publish(self, release: str, tag: str) -> PublishResult:
        tree = make_os_tree(self.work / f"os-{release}", release)
        r = publish_tree(self.stratum / FQRN, FQRN, self.keys, tree, tag=tag)
        self.revisions.append(r)
        return r

    def profile(self) -> profile.Profile:
        p = profile.load("demo")
        # no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check fails at
        # random ("IO-APIC + timer doesn't work!", a panic before the initrd runs).
        boot = dataclasses.replace(p.bootloader, cmdline=[*p.bootloader.cmdline, "no_timer_check"])
        return dataclasses.replace(p, cvmfs=dataclasses.replace(p.cvmfs, servers=[self.url]), bootloader=boot)


@pytest.fixture(scope="session")
def test_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRepo]:
    work = tmp_path_factory.mktemp("repo")
    keys = load_keys(DEMO_KEYS, FQRN)
    create_repository(work / "stratum" / FQRN, FQRN, keys)
    srv = serve(work / "stratum")
    repo = ServedRepo(work / "stratum", keys, srv, work, [])
    repo.publish("1", "release-1")
    try:
        yield repo
    finally:
        srv.close()


@dataclass
class Built:
    out: Path
    again: Path  # a second build from the same inputs, for the reproducibility test
    result: object
    snapshot_root: str

    def image(self, fmt: str) -> Path:
        return next(self.out.glob(f"*.{fmt}"))


@pytest.fixture(scope="session")
def built(test_repo: ServedRepo, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """iso + hdd + qcow2 of the demo profile against the test repository, built twice, signed."""
    from cernvm_build.context import BuildContext
    from cernvm_build.image.build import build_image
    from cernvm_build.image.signature import load_signer

    # a build time the demo certificate covers (2026-11-25 to 2036): the signing time is the build time
    ctx = BuildContext(epoch=1796000000)
    signer = load_signer(DEMO_KEYS / f"{FQRN}.key", DEMO_KEYS / f"{FQRN}.crt")
    outs = [tmp_path_factory.mktemp("images"), tmp_path_factory.mktemp("images-again")]
    results = [
        build_image(
            test_repo.profile(), o, formats=["iso", "hdd", "qcow2"], signer=signer, initrd_level=3, ctx=ctx
        )
        for o in outs
    ]
    return Built(outs[0], outs[1], results[0], test_repo.revisions[-1].root_hash)
