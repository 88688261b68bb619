"""Build a release: every profile's images and containers, then the index, SHA256SUMS and notes.

The release is assembled in ``<out>/.<version>.partial/`` and renamed to ``<out>/<version>/`` only when
complete. Each profile's part is finished by a marker (``cachekey.write_marker``) holding the key of its
inputs (the profile's fingerprint, the build time, the formats, the image signer, the toolkit version):
a build that was interrupted resumes with the profiles not yet done, and a part whose inputs changed
since is built again. Images and containers pin the same snapshot: the root hash the image build saw
is the one the container is cut from.
"""

from __future__ import annotations

import calendar
import contextlib
import dataclasses
import os
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import cachekey, gpg, utcdate
from .. import releaseindex as idx
from ..artifact import Artifact
from ..bootloader.cpio import MAX_FIELD
from ..container.from_profile import build_profile as build_container
from ..context import BuildContext, env_epoch
from ..cvmfs.repository import SnapshotSpec
from ..errors import CernVMError
from ..fsutil import atomic_write, held_lock, remove_tree
from ..image.build import build_image
from ..profile import Override, Profile, load
from ..report import Reporter, scoped
from . import notes, sums

DONE = ".done.json"


@dataclass(frozen=True)
class ReleaseOptions:
    version: str
    profiles: tuple[Profile, ...]
    out: Path
    sign_key: Path | None = None  # OpenPGP secret key for SHA256SUMS.asc
    image_signer: Any = None  # cernvm_build.image.signature.Signer for the image trailers
    previous: Path | None = None  # the previous release's index.json, for the notes
    container_formats: tuple[str, ...] | None = None  # default: each profile's own
    image_formats: tuple[str, ...] | None = None
    #: by profile name, the overrides it was loaded with (the demo's published tag and --port server):
    #: recorded in the index so that ``release rebuild`` resolves the same profile
    overrides: Mapping[str, Sequence[Override]] = dataclasses.field(default_factory=dict)


def version_epoch(version: str) -> int:
    """The release's SOURCE_DATE_EPOCH when none is set: 00:00 UTC on the 1st of its month."""
    year, month = (int(x) for x in version.split("-")[0].split("."))
    return calendar.timegm((year, month, 1, 0, 0, 0))


def release_context(version: str, *, reporter: Reporter | None = None, jobs: int = 1) -> BuildContext:
    """The context a release is built with: ``SOURCE_DATE_EPOCH`` if set, else the release month's."""
    default = version_epoch(idx.check_version(version))
    if default > MAX_FIELD and env_epoch() is None:
        # the image build's check_epoch said "set SOURCE_DATE_EPOCH to an earlier time", though the
        # time came from the version (pr26a 12): name the version it came from
        raise idx.ReleaseError(
            f"release version '{version}' dates the release {utcdate.text(default)} (the 1st of its "
            f"month), after {utcdate.text(MAX_FIELD)}, the last time an initrd's cpio (newc) header holds",
            hint="name an earlier release, or set SOURCE_DATE_EPOCH to a build time before that",
        )
    return BuildContext.from_environment(default_epoch=default, reporter=reporter, jobs=jobs)


def for_release(profile: Profile, version: str) -> Profile:
    """The profile with its bootloader version and release number taken from the release version."""
    ym, n = version.split("-")
    boot = dataclasses.replace(profile.bootloader, version=ym, release=int(n))
    return dataclasses.replace(profile, bootloader=boot)


def profile_hash(profile: Profile) -> str:
    """What the profile asks for, independent of the checkout's location (keys by content)."""
    return profile.fingerprint()


def _artifact_rows(arts: list[Artifact], root: Path, profile: str, kind: str) -> list[dict[str, Any]]:
    rows = []
    for a in arts:
        if not a.path.is_file():
            continue  # directories (OCI layout, sandbox) are build conveniences, not release files
        rows.append(
            {
                "name": a.path.name,
                "path": str(a.path.relative_to(root)),
                "profile": profile,
                "kind": kind,
                "format": a.format,
                "sha256": a.sha256,
                "size": a.size,
            }
        )
    return rows


def part_key(profile: Profile, opts: ReleaseOptions, ctx: BuildContext) -> str:
    """The key of everything one profile's part is made from (see ``cachekey``)."""
    signer = opts.image_signer
    return cachekey.key(
        {
            "profile": profile_hash(profile),
            "epoch": ctx.epoch,
            "image_formats": opts.image_formats,
            "container_formats": opts.container_formats,
            "image_signer": signer.identity() if signer is not None else None,
            "toolkit": cachekey.code_version(),
        }
    )


def build_profile_part(
    profile: Profile, part_root: Path, opts: ReleaseOptions, ctx: BuildContext
) -> dict[str, Any]:
    """Images, build manifest and containers of one profile; returns the record for the index."""
    say = scoped(ctx.reporter, profile.name)
    done = part_root / profile.name / DONE
    key = part_key(profile, opts, ctx)
    resumed = cachekey.read_marker(done, key)
    if isinstance(resumed, dict):
        say.step("already built from the same inputs (resuming)")
        return resumed
    if done.exists():
        say.step("built before from other inputs: building again")
        done.unlink()
    images_dir = part_root / "images" / profile.name
    containers_dir = part_root / "containers" / profile.name
    for d in (images_dir, containers_dir):
        shutil.rmtree(d, ignore_errors=True)
    say.step("image: building")
    image = build_image(
        profile,
        images_dir,
        ctx=ctx.replace(reporter=scoped(say, "image")),
        formats=list(opts.image_formats) if opts.image_formats else None,
        signer=opts.image_signer,
    )
    snap = image.snapshot
    rows = _artifact_rows(image.artifacts, part_root, profile.name, "image")
    rows += _artifact_rows([Artifact.of(image.manifest, "manifest")], part_root, profile.name, "manifest")
    say.step(f"container: from snapshot {snap.root_hash[:12]}")
    made = build_container(
        profile,
        out_dir=containers_dir,
        formats=list(opts.container_formats) if opts.container_formats else None,
        snapshot=SnapshotSpec(root_hash=snap.root_hash),
        snapshot_tag=snap.tag,
        ctx=ctx.replace(reporter=scoped(say, "container")),
    )
    rows += _artifact_rows(made.result.artifacts, part_root, profile.name, "container")
    record = {
        "profile": {
            "name": profile.name,
            "os": f"{profile.os.distribution} {profile.os.release}",
            "frozen": profile.preservation.frozen,
            "snapshot": {
                "repository": profile.cvmfs.repository,
                "path": profile.cvmfs.path,
                "root_hash": snap.root_hash,
                "revision": snap.revision,
                "tag": snap.tag,
            },
            "profile_sha256": profile_hash(profile),
            "overrides": [
                {"key": o.key, "text": o.text, "flag": o.flag} for o in opts.overrides.get(profile.name, ())
            ],
        },
        "artifacts": rows,
    }
    cachekey.write_marker(done, key, record)
    say.step("done")
    return record


def build_release(opts: ReleaseOptions, ctx: BuildContext) -> tuple[idx.ReleaseIndex, Path]:
    """Build (or finish building) the release; returns its index and directory.

    ``ctx.epoch`` is the release's build time (``release_context`` picks the default), ``ctx.jobs`` how
    many profiles build at once; each thread gets the context as an argument."""
    version = idx.check_version(opts.version)
    final = opts.out / version
    _refuse_existing(version, final)
    if opts.sign_key:
        check_sign_key(opts.sign_key)
    if opts.image_signer is not None:  # the images' signing time is the release's build time
        from ..image.signature import check_signing_time

        check_signing_time(opts.image_signer.certificate, ctx.epoch, "--image-cert")
    # read before the build: a damaged or missing previous index failed only after every profile was built
    previous = idx.load(opts.previous) if opts.previous else None

    def refuse(holder: str) -> None:
        raise idx.ReleaseError(
            f"release {version} is being built in {opts.out} by {holder}",
            hint="wait for that build to finish (the lock is released when it exits)",
        )

    # one build of a version at a time: two at once shared .VERSION.partial, each removing the other's
    # parts, and the one that said "ok" published the other's files under its own index and SHA256SUMS
    with held_lock(opts.out / f".{version}.lock", f"release build {version}", refuse, remove=True):
        _refuse_existing(version, final)  # (again: one may have finished since)
        return _build_release(opts, ctx, version, final, previous)


def _refuse_existing(version: str, final: Path) -> None:
    if (final / "index.json").is_file():
        raise idx.ReleaseError(
            f"release {version} already exists at {final}",
            hint="choose a new version, or remove that directory to rebuild it",
        )


def _build_release(
    opts: ReleaseOptions, ctx: BuildContext, version: str, final: Path, previous: idx.ReleaseIndex | None
) -> tuple[idx.ReleaseIndex, Path]:
    say = ctx.reporter
    part_root = opts.out / f".{version}.partial"
    part_root.mkdir(parents=True, exist_ok=True)
    epoch = ctx.epoch
    profiles = [for_release(p, version) for p in opts.profiles]
    try:
        with ThreadPoolExecutor(max_workers=max(1, ctx.jobs)) as pool:
            records = list(pool.map(lambda p: build_profile_part(p, part_root, opts, ctx), profiles))
    except BaseException:
        # a partial that holds no finished part is nothing a re-run would resume: an unreachable
        # repository left an empty releases/.VERSION.partial/ behind
        if not any(part_root.glob(f"*/{DONE}")):
            with contextlib.suppress(OSError):
                remove_tree(part_root)
        raise
    artifacts = tuple(
        idx.ReleaseArtifact(**row)
        for rec in records
        for row in sorted(rec["artifacts"], key=lambda r: r["path"])
    )
    profiles_rec = tuple(
        idx.ProfileRecord(
            **{k: v for k, v in rec["profile"].items() if k not in ("snapshot", "overrides")},
            snapshot=idx.Snapshot(**rec["profile"]["snapshot"]),
            overrides=tuple(
                idx.RecordedOverride(o["key"], tuple(t) if isinstance(t := o["text"], list) else t, o["flag"])
                for o in rec["profile"].get("overrides", ())
            ),
        )
        for rec in records
    )
    sums_path = sums.write(part_root, artifacts)
    signature = signer = None
    if opts.sign_key:
        say.step("release: signing SHA256SUMS")
        with gpg.Keyring([opts.sign_key]) as kr:
            kr.sign_detached(sums_path, part_root / f"{sums.NAME}.asc")
            signer = kr.secret_fingerprints()[0]
        signature = f"{sums.NAME}.asc"
    release = idx.ReleaseIndex(
        version=version,
        date=utcdate.text(epoch),
        source_date_epoch=epoch,
        profiles=profiles_rec,
        artifacts=artifacts,
        previous=previous.version if previous else None,
        signature=signature,
        signer=signer,
    )
    atomic_write(part_root / "RELEASE-NOTES.md", notes.render(release, previous).encode())
    atomic_write(part_root / "index.json", release.dumps().encode())
    for rec in records:
        (part_root / rec["profile"]["name"] / DONE).unlink(missing_ok=True)
        shutil.rmtree(part_root / rec["profile"]["name"], ignore_errors=True)
    os.rename(part_root, final)
    return release, final


def check_sign_key(key: Path) -> None:
    """Sign a few bytes with ``key`` before anything is built: a key file that is missing (a
    FileNotFoundError traceback), holds no secret key, has expired or been revoked failed only at the
    end, after every profile was built."""
    if not key.is_file():
        raise idx.ReleaseError(f"{key}: no such key file", hint="give the OpenPGP secret key (--sign-key)")
    with gpg.Keyring([key]) as kr:
        probe = kr.home / "probe"
        probe.write_bytes(b"can this key sign?\n")
        try:
            kr.sign_detached(probe, kr.home / "probe.asc")
        except CernVMError as e:
            reason, hint = kr.why_dead() or (
                e.message.splitlines()[0],  # (gpg's, not its command)
                "give an OpenPGP secret key that has not expired or been revoked, without a passphrase",
            )
            raise idx.ReleaseError(f"{key}: cannot sign with this key: {reason}", hint=hint) from None


def release_profiles(names: Sequence[str]) -> tuple[Profile, ...]:
    return tuple(load(n) for n in names)
