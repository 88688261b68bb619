"""Resuming a release: a finished profile part is reused only when it was built from the same inputs.

The image and container stages are replaced by small fakes that write files and count calls (this
tests the resume rule, not the builders; the real builders run in test_release_e2e.py).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cernvm_build import cachekey
from cernvm_build.artifact import Artifact
from cernvm_build.context import BuildContext
from cernvm_build.profile import Profile, load
from cernvm_build.release import build as release_build
from cernvm_build.release.build import DONE, ReleaseOptions, build_profile_part, for_release
from cernvm_build.report import Recorder

VERSION = "2026.11-1"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every (stage, epoch) the fakes were asked to build."""
    seen: list[tuple[str, int]] = []

    def fake_image(profile: Profile, out_dir: Path, *, ctx: BuildContext, **_kw: Any) -> Any:
        seen.append(("image", ctx.epoch))
        out_dir.mkdir(parents=True, exist_ok=True)
        iso = out_dir / f"{profile.artifact_stem}.iso"
        iso.write_bytes(f"iso at {ctx.epoch}".encode())
        manifest = out_dir / f"{profile.artifact_stem}.manifest.json"
        manifest.write_text(json.dumps({"source_date_epoch": ctx.epoch}))
        snap = SimpleNamespace(root_hash="ab" * 20, revision=7, tag="trunk")
        return SimpleNamespace(artifacts=[Artifact.of(iso, "iso")], manifest=manifest, snapshot=snap)

    def fake_container(profile: Profile, *, out_dir: Path, ctx: BuildContext, **_kw: Any) -> Any:
        seen.append(("container", ctx.epoch))
        out_dir.mkdir(parents=True, exist_ok=True)
        tar = out_dir / f"{profile.name}.oci.tar"
        tar.write_bytes(f"oci at {ctx.epoch}".encode())
        return SimpleNamespace(result=SimpleNamespace(artifacts=[Artifact.of(tar, "oci-archive")]))

    monkeypatch.setattr(release_build, "build_image", fake_image)
    monkeypatch.setattr(release_build, "build_container", fake_container)
    return seen


def _part(profile: Profile, root: Path, epoch: int, **opts: Any) -> tuple[dict[str, Any], Recorder]:
    rec = Recorder()
    options = ReleaseOptions(version=VERSION, profiles=(profile,), out=root, **opts)
    return build_profile_part(profile, root, options, BuildContext(epoch=epoch, reporter=rec)), rec


def test_same_inputs_resume_and_changed_inputs_rebuild(tmp_path: Path, calls: list[tuple[str, int]]) -> None:
    prof = for_release(load("demo"), VERSION)
    first, _ = _part(prof, tmp_path, 1000)
    assert calls == [("image", 1000), ("container", 1000)]

    again, rec = _part(prof, tmp_path, 1000)
    assert again == first and len(calls) == 2, "same inputs: the finished part is reused"
    assert rec.steps() == ["demo: already built from the same inputs (resuming)"]

    # Another build time: the marker is not trusted, the part is built again with the new epoch.
    moved, rec = _part(prof, tmp_path, 2000)
    assert calls[2:] == [("image", 2000), ("container", 2000)]
    assert "demo: built before from other inputs: building again" in rec.steps()
    assert moved["artifacts"] != first["artifacts"]

    # Another profile setting (the kernel command line) and other formats: built again each time.
    changed = dataclasses.replace(prof, bootloader=dataclasses.replace(prof.bootloader, cmdline=["quiet"]))
    assert changed.fingerprint() != prof.fingerprint()
    _part(changed, tmp_path, 2000)
    assert len(calls) == 6
    _part(changed, tmp_path, 2000, image_formats=("iso",))
    assert len(calls) == 8
    _part(changed, tmp_path, 2000, image_formats=("iso",))
    assert len(calls) == 8, "and reused once the inputs stay the same"


def test_a_marker_without_the_inputs_key_is_not_trusted(tmp_path: Path, calls: list[tuple[str, int]]) -> None:
    """A marker from before keyed resumes (the bare record) or a damaged one: build again."""
    prof = for_release(load("demo"), VERSION)
    record, _ = _part(prof, tmp_path, 1000)
    done = tmp_path / "demo" / DONE
    done.write_text(json.dumps(record))
    _part(prof, tmp_path, 1000)
    assert len(calls) == 4
    done.write_text("{not json")
    _part(prof, tmp_path, 1000)
    assert len(calls) == 6


def test_cache_keys_are_canonical() -> None:
    assert cachekey.key({"b": 1, "a": (1, 2)}) == cachekey.key({"a": [1, 2], "b": 1})
    assert cachekey.key({"a": Path("/x")}) == cachekey.key({"a": "/x"})
    assert cachekey.key({"epoch": 1}) != cachekey.key({"epoch": 2})
    with pytest.raises(TypeError, match="object has no JSON form"):
        cachekey.key({"a": object()})


def test_a_failed_build_leaves_no_partial_without_a_finished_part(
    tmp_path: Path, calls: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr19d: `release VERSION` with its repository unreachable left an empty
    `releases/.VERSION.partial/`. A partial that holds no finished part is removed; one that holds
    a finished part stays for the re-run to resume."""
    from cernvm_build.errors import CvmfsError
    from cernvm_build.release.build import build_release

    real_image = release_build.build_image

    def unreachable(profile: Profile, out_dir: Path, **kw: Any) -> Any:
        if profile.name == "el9":
            raise CvmfsError("http://127.0.0.1:9/cvmfs/x: connection refused")
        return real_image(profile, out_dir, **kw)

    monkeypatch.setattr(release_build, "build_image", unreachable)
    out = tmp_path / "releases"
    el9 = load("el9")
    with pytest.raises(CvmfsError):
        build_release(ReleaseOptions(VERSION, (el9,), out), BuildContext(epoch=1000))
    assert list(out.iterdir()) == [], "nothing of the failed build is left"
    with pytest.raises(CvmfsError):
        build_release(ReleaseOptions(VERSION, (load("demo"), el9), out), BuildContext(epoch=1000))
    partial = out / f".{VERSION}.partial"
    assert (partial / "demo" / DONE).is_file(), "the finished part is kept for the re-run"


def test_a_second_build_of_a_version_being_built_is_refused_naming_the_first(
    tmp_path: Path, calls: list[tuple[str, int]]
) -> None:
    """Two builds of one version into one --out at once shared .VERSION.partial: each removed the
    other's parts, the second ended in a FileNotFoundError traceback, and the first said "ok" over the
    second's files, which its index and SHA256SUMS do not name. The second is refused in one line."""
    import fcntl
    import os

    from cernvm_build.release.build import build_release
    from cernvm_build.releaseindex import ReleaseError

    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / f".{VERSION}.lock", os.O_RDWR | os.O_CREAT)  # the first build's hold
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"pid 4242 (release build {VERSION})\n".encode())
        with pytest.raises(ReleaseError, match=f"release {VERSION} is being built in .* by pid 4242") as e:
            build_release(ReleaseOptions(VERSION, (load("demo"),), out), BuildContext(epoch=1000))
        assert e.value.hint and "wait" in e.value.hint
        assert calls == [] and sorted(p.name for p in out.iterdir()) == [f".{VERSION}.lock"]
    finally:
        os.close(fd)
    build_release(ReleaseOptions(VERSION, (load("demo"),), out), BuildContext(epoch=1000))
    assert sorted(p.name for p in out.iterdir()) == [VERSION]  # the lock file went with the build
