"""The demo repository: the demo OS published with the demo keys, readable and verifiable by the reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build.cvmfs.repository import SnapshotSpec, open_repository
from cernvm_build.demo.os_tree import DEFAULT_EPOCH
from cernvm_build.demo.repository import publish_demo

pytestmark = pytest.mark.integration


def test_publish_read_and_republish(tmp_path: Path) -> None:
    first = publish_demo(tmp_path, release="1")
    with open_repository(first.stratum, fqrn=first.fqrn, public_keys=[first.public_key]) as repo:
        assert repo.root_hash == first.root_hash
        assert b'VERSION_ID="1"' in repo.read("/etc/os-release", 0, 4096)
        assert repo.stat("/usr/sbin/init").is_symlink and repo.readlink("/sbin") == "usr/sbin"

    second = publish_demo(tmp_path, release="2", extra_files={"/etc/motd": "second\n"})
    assert second.revision > first.revision
    assert second.objects_written < first.objects_written  # only what changed, plus catalogs
    with open_repository(
        first.stratum, fqrn=first.fqrn, public_keys=[first.public_key], snapshot=SnapshotSpec(tag="demo-1")
    ) as pinned:
        assert pinned.root_hash == first.root_hash
        assert pinned.lookup("/etc/motd") is None
    with open_repository(first.stratum, fqrn=first.fqrn, public_keys=[first.public_key]) as trunk:
        assert trunk.read("/etc/motd", 0, 100) == b"second\n"


def test_same_inputs_publish_nothing_new(tmp_path: Path) -> None:
    first = publish_demo(tmp_path, release="1")
    again = publish_demo(tmp_path, release="1")
    assert (again.revision, again.root_hash, again.objects_written) == (first.revision, first.root_hash, 0)


def test_the_same_inputs_give_the_same_root_hash_on_another_day(tmp_path: Path) -> None:
    # revisions were dated now: every fresh demo repository had another root hash, and the release cut
    # from it other images and containers whatever SOURCE_DATE_EPOCH said
    first = publish_demo(tmp_path / "a", release="1")
    with open_repository(first.stratum, fqrn=first.fqrn, public_keys=[first.public_key]) as repo:
        assert repo.manifest is not None and repo.manifest.timestamp == DEFAULT_EPOCH + 1  # not the clock
    again = publish_demo(tmp_path / "b", release="1")
    assert (again.revision, again.root_hash) == (first.revision, first.root_hash)


def test_a_demo_repository_made_again_is_read_through_a_cache_that_read_the_last_one(tmp_path: Path) -> None:
    """Revisions are dated from the demo's fixed epoch, so a demo repository made again (its folder
    removed) is "older" than the last one's later revision: a reader cache (the container build's,
    ``cache_dir("cvmfs")``) that verified that revision refused every open of the new one as a
    rollback. The demo forgets that floor when it makes its repository again."""
    import shutil

    from cernvm_build.paths import cache_dir

    cache = cache_dir("cvmfs")
    publish_demo(tmp_path, release="1")
    later = publish_demo(tmp_path, release="2", extra_files={"/etc/motd": "second\n"})
    with open_repository(later.stratum, public_keys=[later.public_key], cache_dir=cache) as r:
        assert r.revision == later.revision
    shutil.rmtree(tmp_path)
    again = publish_demo(tmp_path, release="1")
    assert again.revision < later.revision
    with open_repository(again.stratum, public_keys=[again.public_key], cache_dir=cache) as r:
        assert r.root_hash == again.root_hash
