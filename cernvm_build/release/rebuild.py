"""``release rebuild INDEX``: build again from the recorded inputs and compare byte for byte.

The reproducibility boundary is stated per artifact. A rebuild uses the same profile (the hash of its
resolved settings must be the one recorded: a profile changed since, or another one under the recorded
name, is refused before anything is built; the index records the hash, not the settings, and since
schema 2 the overrides the profile was resolved with, e.g. the demo's tag and server), the recorded
SOURCE_DATE_EPOCH and the same snapshot selector; when an artifact differs, the rebuilt image's build
manifest is compared with the original's to say why (the snapshot the tag now resolves to, the kernel
package, the toolkit or the tools).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import jsonable
from .. import releaseindex as idx
from ..container.verify import read_image
from ..context import BuildContext
from ..errors import CernVMError, Location, ProfileError
from ..fsutil import locked_scratch, sha256_file
from ..profile import Override, Profile, load, settings
from ..profile.resolve import looks_like_path
from .build import ReleaseOptions, build_release, for_release, profile_hash


@dataclass
class Outcome:
    name: str  # the artifact's file name
    identical: bool
    reason: str = ""


@dataclass
class RebuildReport:
    version: str
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return all(o.identical for o in self.outcomes) and bool(self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return jsonable.to_json(self, omit=("outcomes",), identical=self.identical, artifacts=self.outcomes)


def _manifest_diff(old: Path, new: Path) -> str:
    """Why two image builds differ, from their build manifests."""
    try:
        a, b = json.loads(old.read_text()), json.loads(new.read_text())
    except (OSError, ValueError):
        return "the build manifest is missing"
    checks = (
        ("repository", "root_hash", "the snapshot moved"),
        ("kernel", "sha256", "the kernel package changed"),
        ("initrd", "sha256", "the initrd differs (busybox, Python runtime or modules)"),
    )
    for section, key, why in checks:
        if (a.get(section) or {}).get(key) != (b.get(section) or {}).get(key):
            return f"{why}: {(a.get(section) or {}).get(key)} → {(b.get(section) or {}).get(key)}"
    if a.get("toolkit") != b.get("toolkit"):
        return f"toolkit {a.get('toolkit')} → {b.get('toolkit')}"
    if a.get("tools") != b.get("tools"):
        return "the tool versions (xorriso, syslinux, qemu-img …) changed"
    return "same recorded inputs, different bytes: not reproducible"


def _container_diff(old: Path, new: Path) -> str | None:
    """The first setting of two containers' configs that differs (a label, the environment ...), or
    None. A profile's description is such a label and is not in the settings sha256 the index
    records, so a changed description passed the profile check and the container was called "not
    reproducible"."""
    try:
        a, b = (read_image(p, layers=False).config or {} for p in (old, new))  # no layer read
    except CernVMError:
        return None
    ca, cb = a.get("config") or {}, b.get("config") or {}
    if not isinstance(ca, dict) or not isinstance(cb, dict):
        return None
    la, lb = ca.get("Labels") or {}, cb.get("Labels") or {}
    if isinstance(la, dict) and isinstance(lb, dict):
        for key in sorted(set(la) | set(lb)):
            if la.get(key) != lb.get(key):
                return (
                    f"its label {key} differs: {la.get(key)!r:.80} → {lb.get(key)!r:.80} (a setting "
                    "the recorded sha256 leaves out, such as the profile's description: rebuild with it "
                    "as it was)"
                )
    for key in sorted(set(ca) | set(cb)):
        if key != "Labels" and ca.get(key) != cb.get(key):
            return f"its config's {key} differs: {ca.get(key)!r:.80} → {cb.get(key)!r:.80}"
    return None


def _overrides(rec: idx.ProfileRecord, index: str, i: int) -> list[Override]:
    """The recorded overrides as ``profile.Override``s; a key that is no setting, or a value the
    setting refuses, is one error at the index's key (the digest check catches a changed valid one)."""
    found = []
    for j, o in enumerate(rec.overrides):
        at = Location(index, key=f"profiles[{i}].overrides[{j}]")
        if o.key not in settings.BY_KEY:
            raise idx.ReleaseError(
                f"recorded override {o.key!r:.80} is not a profile setting",
                where=at,
                hint="the index is damaged or hostile",
            )
        found.append(Override(o.key, list(o.text) if isinstance(o.text, tuple) else o.text, o.flag))
    return found


def _load(rec: idx.ProfileRecord, index: str, i: int) -> Profile:
    overrides = _overrides(rec, index, i)
    try:
        return load(rec.name, overrides=overrides)
    except ProfileError as e:
        if not overrides:
            raise
        load(rec.name)  # the profile itself does not load: its own error, at its file
        raise idx.ReleaseError(
            f"profile {rec.name} with the recorded overrides: {e}",
            where=Location(index, key=f"profiles[{i}].overrides"),
            hint="the index is damaged or hostile",
        ) from None


#: the rebuild's scratch folder's prefix in ``work`` (tempfile's folder by default)
SCRATCH = "cernvm-release-rebuild-"


def rebuild(index_path: Path, *, work: Path | None = None, ctx: BuildContext | None = None) -> RebuildReport:
    """Build the release again from its recorded inputs (``ctx``'s epoch is replaced by the recorded
    one) and compare every artifact."""
    release = idx.load(index_path)
    ctx = (ctx or BuildContext(epoch=release.source_date_epoch)).replace(epoch=release.source_date_epoch)
    original = index_path.parent
    report = RebuildReport(version=release.version)
    profiles = []
    for i, rec in enumerate(release.profiles):
        if looks_like_path(rec.name):  # a release records profile names; a path would load any file
            raise idx.ReleaseError(
                f"profile name {rec.name!r:.80} is a path, not a profile name",
                where=Location(str(index_path), key=f"profiles[{i}].name"),
                hint="the index is damaged or hostile",
            )
        prof = for_release(_load(rec, str(index_path), i), release.version)
        now = profile_hash(prof)
        if now != rec.profile_sha256:
            # the index records the settings' hash, not the settings: what was built cannot be built
            # again from another recipe (and comparing its bytes would say nothing)
            raise idx.ReleaseError(
                f"profile {rec.name}: the release recorded settings sha256 {rec.profile_sha256[:16]}…, "
                f"the profile's are now {now[:16]}…",
                where=Location(str(index_path), key=f"profiles[{i}].profile_sha256"),
                hint=f"rebuild with the profiles as they were for {release.version} (a checkout of the "
                "toolkit that built it), and the index's recorded overrides as written; a changed profile "
                "makes a new release",
            )
        profiles.append(prof)
    overrides = {rec.name: _overrides(rec, str(index_path), i) for i, rec in enumerate(release.profiles)}
    # a whole release's images: a killed rebuild's scratch (its lock free) is removed by the next one
    with locked_scratch(work, SCRATCH) as tmp:
        opts = ReleaseOptions(
            version=release.version, profiles=tuple(profiles), out=Path(tmp), overrides=overrides
        )
        new, new_dir = build_release(opts, ctx)
        rebuilt = {a.path: a for a in new.artifacts}
        manifests = {a.profile: a.path for a in release.artifacts if a.kind == "manifest"}
        for a in release.artifacts:
            got = rebuilt.get(a.path)
            if got is None:
                report.outcomes.append(Outcome(a.name, False, "not produced by the rebuild"))
            elif got.sha256 == a.sha256:
                report.outcomes.append(Outcome(a.name, True))
            elif a.kind == "manifest":
                report.outcomes.append(Outcome(a.name, False, "build manifest differs (see the images)"))
            else:
                m = manifests.get(a.profile)
                reason = _manifest_diff(original / m, new_dir / m) if m else "no build manifest to compare"
                if a.kind == "container":
                    old_snap = next(p.snapshot.root_hash for p in release.profiles if p.name == a.profile)
                    new_snap = next(p.snapshot.root_hash for p in new.profiles if p.name == a.profile)
                    reason = (
                        f"the snapshot moved: {old_snap} → {new_snap}"
                        if old_snap != new_snap
                        else _container_diff(original / a.path, new_dir / got.path)
                        or "same snapshot, different bytes: not reproducible"
                    )
                report.outcomes.append(Outcome(a.name, False, reason))
            if got is not None and sha256_file(new_dir / got.path) != got.sha256:
                report.notes.append(f"{got.path}: changed while comparing")
    return report
