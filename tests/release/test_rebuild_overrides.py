"""`release rebuild` of a release built from a profile with overrides (what `cernvm-build demo` builds:
the published tag, `--port`'s server). The index recorded the digest of the profile as resolved with
them and rebuild loaded the shipped profile by name: the digests differed and the rebuild was refused,
blaming the checkout. The index (schema 2) records the overrides; rebuild lays them over again.

The image and container stages are small deterministic fakes (the resume tests' pattern): this tests
what the index records and how rebuild resolves the profile, not the builders (test_release_e2e.py).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cernvm_build import releaseindex as idx
from cernvm_build.artifact import Artifact
from cernvm_build.context import BuildContext
from cernvm_build.demo.flow import demo_overrides, demo_profile
from cernvm_build.profile import Profile
from cernvm_build.release import build as release_build
from cernvm_build.release.build import ReleaseOptions, build_release
from cernvm_build.release.rebuild import rebuild

VERSION = "2026.11-1"


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Builders whose bytes depend on the resolved profile and the epoch, as the real ones do."""

    def fake_image(profile: Profile, out_dir: Path, *, ctx: BuildContext, **_kw: Any) -> Any:
        out_dir.mkdir(parents=True, exist_ok=True)
        iso = out_dir / f"{profile.artifact_stem}.iso"
        iso.write_bytes(f"iso of {profile.fingerprint()} at {ctx.epoch}".encode())
        manifest = out_dir / f"{profile.artifact_stem}.manifest.json"
        manifest.write_text(json.dumps({"source_date_epoch": ctx.epoch}))
        snap = SimpleNamespace(root_hash="ab" * 20, revision=7, tag=profile.cvmfs.snapshot.tag)
        return SimpleNamespace(artifacts=[Artifact.of(iso, "iso")], manifest=manifest, snapshot=snap)

    def fake_container(profile: Profile, *, out_dir: Path, ctx: BuildContext, **_kw: Any) -> Any:
        out_dir.mkdir(parents=True, exist_ok=True)
        tar = out_dir / f"{profile.name}.oci.tar"
        tar.write_bytes(f"oci of {profile.fingerprint()} at {ctx.epoch}".encode())
        return SimpleNamespace(result=SimpleNamespace(artifacts=[Artifact.of(tar, "oci-archive")]))

    monkeypatch.setattr(release_build, "build_image", fake_image)
    monkeypatch.setattr(release_build, "build_container", fake_container)


def _demo_release(root: Path) -> Path:
    """A release built as `cernvm-build demo --port 9123` builds it, pinned to its published tag."""
    prof = demo_profile(9123, tag="generic-2026-11-25")
    opts = ReleaseOptions(
        version=VERSION,
        profiles=(prof,),
        out=root,
        overrides={prof.name: demo_overrides(9123, "generic-2026-11-25")},
    )
    _, directory = build_release(opts, BuildContext(epoch=1764028800))
    return directory / "index.json"


def test_a_demo_release_rebuilds_to_the_same_digests(tmp_path: Path) -> None:
    index = _demo_release(tmp_path / "releases")
    recorded = idx.load(index)
    assert recorded.schema == 2
    assert [(o.key, o.flag) for o in recorded.profiles[0].overrides] == [
        ("cvmfs.servers", "--port"),
        ("cvmfs.snapshot.tag", "the published tag"),
    ]
    report = rebuild(index, work=tmp_path)
    assert report.identical, report.to_json()
    assert len(report.outcomes) == len(recorded.artifacts) == 3


def test_a_killed_rebuild_s_scratch_is_removed_by_the_next(tmp_path: Path) -> None:
    """A rebuild builds the whole release in a scratch folder: one killed with SIGKILL left it (its
    images, GBs) in the temporary folder for ever. Its lock is free (the kernel dropped it with the
    process), so the next rebuild removes it; a running rebuild's (locked) is kept."""
    from cernvm_build.fsutil import lock_dir
    from cernvm_build.release.rebuild import SCRATCH

    index = _demo_release(tmp_path / "releases")
    dead = tmp_path / f"{SCRATCH}k1ll3d00"
    (dead / "images").mkdir(parents=True)
    (dead / "images" / "big.iso").write_bytes(b"x" * 1000)
    running = tmp_path / f"{SCRATCH}runn1ng0"
    running.mkdir()
    held = lock_dir(running, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert held is not None
    try:
        assert rebuild(index, work=tmp_path).identical
    finally:
        os.close(held)
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "releases"]


def test_a_tampered_recorded_override_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cernvm_build.cli.main import main

    index = _demo_release(tmp_path / "releases")
    original = json.loads(index.read_text())
    for tamper, expected in (
        # another valid value: the profile resolves to other settings than the recorded digest's
        (
            lambda o: o[1].update(text="other-tag"),
            "profiles[0].profile_sha256: profile demo: the release recorded",
        ),
        (
            lambda o: o[0].update(key="cvmfs.nonsense"),
            "profiles[0].overrides[0]: recorded override 'cvmfs.nonsense' is not",
        ),
        (
            lambda o: o[0].update(text=["not a url"]),
            "profiles[0].overrides: profile demo with the recorded overrides:",
        ),
        (lambda o: o[0].update(text=5), "profiles[0].overrides[0].text: 'text' should be a string or a list"),
        (lambda o: o.clear(), "profiles[0].profile_sha256: profile demo: the release recorded"),
    ):
        data = json.loads(json.dumps(original))
        tamper(data["profiles"][0]["overrides"])
        index.write_text(json.dumps(data))
        assert main(["release", "rebuild", str(index)]) == idx.ReleaseError.exit_code
        err = capsys.readouterr().err
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {index}: {expected}"), err
        assert "Traceback" not in err


def test_a_schema_1_index_has_no_overrides_and_rebuilds_as_before(tmp_path: Path) -> None:
    """An index written before schema 2: read, no overrides; the shipped profile is loaded by name
    (so a demo release of then is still refused, as it was, by the digest check)."""
    index = _demo_release(tmp_path / "releases")
    data = json.loads(index.read_text())
    data["schema"] = 1
    del data["profiles"][0]["overrides"]
    index.write_text(json.dumps(data))
    assert idx.load(index).profiles[0].overrides == ()
    with pytest.raises(idx.ReleaseError, match="the release recorded settings sha256"):
        rebuild(index, work=tmp_path)


def _oci_archive(path: Path, labels: dict[str, str]) -> Path:
    """A one-layer oci-archive whose config carries ``labels``."""
    import gzip
    import hashlib
    import io
    import tarfile

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("f")
        t.addfile(info, io.BytesIO(b""))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps(
        {"config": {"Labels": labels}, "rootfs": {"type": "layers", "diff_ids": [digest(raw.getvalue())]}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"digest": digest(config), "size": len(config)},
            "layers": [{"digest": digest(layer), "size": len(layer)}],
        }
    ).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{"digest": digest(manifest)}]}).encode()
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index}
    files.update({f"blobs/sha256/{digest(b)[7:]}": b for b in (config, manifest, layer)})
    with tarfile.open(path, "w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def test_a_container_that_differs_by_a_label_says_which(tmp_path: Path) -> None:
    # a profile's description is a label of its containers but not in the settings sha256 the index
    # records: a changed description passed rebuild's profile check and the container was "not
    # reproducible"
    from cernvm_build.release.rebuild import _container_diff

    old = _oci_archive(tmp_path / "old.oci.tar", {"org.opencontainers.image.description": "CernVM 5"})
    new = _oci_archive(tmp_path / "new.oci.tar", {"org.opencontainers.image.description": "CernVM 5 (new)"})
    why = _container_diff(old, new)
    assert why is not None
    assert why.startswith(
        "its label org.opencontainers.image.description differs: 'CernVM 5' → 'CernVM 5 (new)'"
    )
    assert _container_diff(old, old) is None
    assert _container_diff(old, tmp_path / "missing.oci.tar") is None  # no reason: the caller's default


def test_a_container_s_label_is_compared_without_reading_its_layers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rv25a doubtful 3: to compare two configs rebuild read both containers whole (every layer
    inflated and hashed, the whole file map kept): minutes and much memory for a real OS container,
    on the failure path. It reads the JSON documents only now; the message is the same."""
    from cernvm_build.container import verify
    from cernvm_build.release.rebuild import _container_diff

    old = _oci_archive(tmp_path / "old.oci.tar", {"org.opencontainers.image.description": "CernVM 5"})
    new = _oci_archive(tmp_path / "new.oci.tar", {"org.opencontainers.image.description": "CernVM 6"})
    scanned: list[str] = []
    real = verify._scan_layer

    def counting(*args: Any, **kw: Any) -> Any:
        scanned.append(kw["where"])
        return real(*args, **kw)

    monkeypatch.setattr(verify, "_scan_layer", counting)
    why = _container_diff(old, new)
    assert why is not None and why.startswith("its label org.opencontainers.image.description differs")
    assert scanned == []
    assert "f" in verify.read_image(old).nodes and scanned  # a full read still scans its layers
