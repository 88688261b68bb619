"""One repository for the whole interop suite, written by the project's publisher and served by the
project's ``cvmfs serve`` on 127.0.0.1; the real tools check it after every kind of operation."""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.nesting import AutoCatalogs
from cernvm_build.cvmfs.publish import (
    PublishResult,
    add_tag,
    create_repository,
    publish_tree,
    remove_tag,
    resign_whitelist,
)
from cernvm_build.cvmfs.serve import Server, serve
from tests.cvmfs_publish.helpers import make_sample_tree

from .real import RealTools, locate

FQRN = "interop.cernvm.test"
MiB = 1 << 20
#: Variant symlinks and what the real cvmfs2 2.11.5 shows for them with CVMFS_VAR=hello in its
#: configuration and nothing else set (measured; test_variant re-checks every one of them).
VARIANTS = {
    "$(ARCH)/lib": "/lib",
    "$(CVMFS_VAR)": "hello",
    "$(CVMFS_VAR:-dflt)/x": "hello/x",
    "$(UNSET_VAR:-dflt)/x": "dflt/x",
    "a$(X)b$(Y)c": "abc",
    "$(": "$(",
    "$(NOPE": "$(NOPE",
    "$X": "$X",
    "$()": "",
    "$$(CVMFS_VAR)": "$hello",
    "$(CVMFS_VAR)$(CVMFS_VAR)": "hellohello",
    "$(CVMFS_VAR:-a:-b)": "hello",
    "$(UNSET_VAR:-a)b)": "ab)",
    "$(UNSET_VAR:-$(CVMFS_VAR))": "$(CVMFS_VAR)",
    "$($(CVMFS_VAR))": ")",
    "$(A B)": "",
}
VARIANT_CONFIG = {"CVMFS_VAR": "hello"}
AUTO = AutoCatalogs(max_weight=200, min_weight=30)


@dataclass
class Revision:
    number: int
    source: Path
    timestamp: int
    root_hash: str
    markers: frozenset[str]  # catalog markers the publisher added (dirtab, automatic split)
    catalogs: int


@dataclass
class Interop:
    tools: RealTools
    server: Server
    stratum: Path
    pub: Path
    work: Path
    revisions: dict[str, Revision] = field(default_factory=dict)
    checks: list[tuple[str, str, subprocess.CompletedProcess[str]]] = field(default_factory=list)

    @property
    def url_template(self) -> str:
        return f"{self.server.url}/cvmfs/@fqrn@"

    def check_all(self, after: str) -> None:
        """Both server checks, recorded (a test asserts them all) so the fixture keeps going."""
        tmp = self.work / f"check-{len(self.checks)}"
        self.checks.append(
            (after, "check -c", self.tools.check(self.server.repo_url(FQRN), FQRN, self.pub, tmp))
        )
        self.checks.append((after, "scrub", self.tools.scrub(self.stratum)))


def first_tree(root: Path) -> Path:
    """Every file type: the publisher tests' sample tree (nested catalog marker, hard links, xattrs,
    fifo, whiteout, odd names, owners, ns mtimes) plus devices, a big file cut with the default
    4/8/16 MiB chunking, variant symlinks and an owned directory."""
    make_sample_tree(root)
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "loop9", stat.S_IFBLK | 0o660, os.makedev(7, 9))
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(random.Random(14).randbytes(26 * MiB + 12345))
    (root / "owned").mkdir(mode=0o750)
    os.chown(root / "owned", 42, 43)
    (root / "owned" / "exec").write_bytes(b"#!/bin/sh\n")
    (root / "owned" / "exec").chmod(0o4755)
    os.utime(root / "owned" / "exec", ns=(1_700_000_000_999_999_999,) * 2)
    (root / "variants").mkdir()
    for i, link in enumerate(VARIANTS):
        os.symlink(link, root / "variants" / f"v{i:02d}")
    # nested catalogs without markers: /.cvmfsdirtab rules and the automatic split (AUTO limits)
    (root / ".cvmfsdirtab").write_text("/sw/*\n! */skip*\n")
    for d, n in {
        "sw/one": 3,
        "sw/two/deeper": 2,
        "sw/skipme": 1,
        "auto/a": 90,
        "auto/b": 70,
        "auto/c/d": 60,
    }.items():
        (root / d).mkdir(parents=True)
        for i in range(n):
            (root / d / f"f{i}").write_bytes(b"%d\n" % i)
    return root


def change_tree(src: Path, dest: Path, step: int) -> Path:
    """A copy of ``src`` with changes (an incremental publish): edited, added, removed files."""
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    (dest / "etc" / "os-release").write_text(f"NAME=CernVM\nVERSION=5.{step}\n")
    (dest / "usr" / "bin" / f"new{step}").write_bytes(random.Random(step).randbytes(5000))
    shutil.rmtree(dest / "dir with spaces", ignore_errors=True)
    (dest / "usr" / "bin" / f"tool{step}").unlink()
    with open(dest / "data" / "big.bin", "r+b") as f:  # one changed chunk, the others shared
        f.seek(20 * MiB)
        f.write(b"changed in step %d" % step)
    return dest


@pytest.fixture(scope="session")
def interop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Interop]:
    work = tmp_path_factory.mktemp("interop")
    tools = locate(work)
    keys = keymod.generate_keys(FQRN)
    keys.save(work / "keys")
    stratum = work / "srv" / FQRN
    now = int(time.time())
    t1, t2, t3 = now - 3000, now - 2000, now - 1000
    create_repository(stratum, FQRN, keys, timestamp=now - 4000, whitelist_days=3)
    with serve(work / "srv") as server:
        it = Interop(tools, server, stratum, work / "keys" / f"{FQRN}.pub", work)
        it.check_all("create")
        s1 = first_tree(work / "src1")
        r = publish_tree(stratum, FQRN, keys, s1, tag="v1", timestamp=t1, autocatalogs=AUTO)
        it.revisions["v1"] = Revision(r.revision, s1, t1, r.root_hash, markers(r), r.catalogs)
        it.check_all("full publish")
        s2 = change_tree(s1, work / "src2", 2)
        r = publish_tree(stratum, FQRN, keys, s2, tag="v2", timestamp=t2, autocatalogs=AUTO)
        it.revisions["v2"] = Revision(r.revision, s2, t2, r.root_hash, markers(r), r.catalogs)
        it.check_all("incremental publish")
        s3 = change_tree(s2, work / "src3", 3)
        r = publish_tree(stratum, FQRN, keys, s3, timestamp=t3, autocatalogs=AUTO)
        it.revisions["trunk"] = Revision(r.revision, s3, t3, r.root_hash, markers(r), r.catalogs)
        it.check_all("second incremental publish")
        add_tag(stratum, FQRN, keys, "extra", it.revisions["v1"].root_hash, timestamp=t3 + 10)
        it.check_all("tag add")
        remove_tag(stratum, FQRN, keys, "extra", timestamp=t3 + 20)
        it.check_all("tag remove")
        resign_whitelist(stratum, FQRN, keys, days=7)
        it.check_all("resign")
        yield it


def markers(r: PublishResult) -> frozenset[str]:
    auto = [f"{d}/{m}" for d in r.nested_auto for m in (".cvmfscatalog", ".cvmfsautocatalog")]
    return frozenset([f"{d}/.cvmfscatalog" for d in r.nested_by_dirtab] + auto)


def iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def logs() -> Iterator[Path]:
    """A folder squid's own user ('proxy') can write its logs and pid file to (pytest's tmp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="cernvm-squid-logs-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)
