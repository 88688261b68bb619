"""The stage other areas call: a profile in, its reference containers out.

    from cernvm_build.container.from_profile import build_profile
    made = build_profile(profile.load("el9"), out_dir=Path("build/containers"), ctx=BuildContext(epoch=0))
    made.result.artifacts        # [Artifact(path, format, sha256, size, meta), ...]

The repository, path and snapshot come from the profile unless given; ``sources`` and ``keys``
override the profile's servers and public keys (a local Stratum folder works as a source).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..context import BuildContext
from ..cvmfs.repository import SnapshotSpec
from ..errors import UsageError
from ..profile import Profile
from .build import BuildRequest, BuildResult, build, check_formats
from .delta import check_parent
from .image import LABEL_TAG, ImageSpec
from .layering import DEFAULT_LAYER_BYTES
from .origin import default_cmd, image_spec, oci_arch, open_origin, provenance
from .sbom import image_sbom, sbom_labels


@dataclass(frozen=True)
class HubOptions:
    fqrn: str = "unpacked.cern.ch"
    stratum: Path | None = None  # local Stratum-0 of the hub (the cvmfs format publishes there)
    keys_dir: Path | None = None


@dataclass
class ProfileBuild:
    spec: ImageSpec
    origin: dict[str, str]
    description: str  # e.g. cvmfs://repo/path@tag
    result: BuildResult

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.spec.reference,
            "origin": self.origin,
            "artifacts": [a.to_json() for a in self.result.artifacts],
            "layers": [
                {
                    "diff_id": layer.diff_id,
                    "digest": layer.digest,
                    "size": layer.size,
                    "compressed_size": layer.compressed_size,
                    "files": layer.files,
                    "directories": layer.dirs,
                    "symlinks": layer.symlinks,
                    "hardlinks": layer.hardlinks,
                    "specials": layer.specials,
                }
                for layer in self.result.layers
            ],
            "parent": self.result.parent.to_json() if self.result.parent is not None else None,
            "skipped": [{"path": p, "reason": r} for p, r in self.result.skipped],
            # setuid/setgid files and files with xattrs are kept (OS trees need them) and listed
            "setid": self.result.report.to_json()["setid"],
            "setid_count": self.result.report.setid_count,
            "xattrs": self.result.report.to_json()["xattrs"],
            "xattrs_count": self.result.report.xattrs_count,
        }


def image_tag(cvmfs_tag: str) -> str:
    """A CernVM-FS tag as an image tag (those allow fewer characters: ``:`` and ``+`` become ``-``)."""
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", cvmfs_tag)[:128]
    return tag if re.match(r"[A-Za-z0-9_]", tag) else "v" + tag[:127]


def profile_snapshot(prof: Profile) -> SnapshotSpec:
    s = prof.cvmfs.snapshot
    return SnapshotSpec(tag=s.tag, date=s.date, root_hash=s.root_hash)


def build_profile(
    prof: Profile,
    *,
    out_dir: Path,
    formats: Sequence[str] | None = None,
    basename: str | None = None,
    sources: Sequence[str] | None = None,
    keys: Sequence[Path] | None = None,
    snapshot: SnapshotSpec | None = None,
    snapshot_tag: str | None = None,
    path: str | None = None,
    reference: str | None = None,
    keep_mtimes: bool = False,
    layer_bytes: int = DEFAULT_LAYER_BYTES,
    devices: bool = False,
    hub: HubOptions = HubOptions(),
    parent: Path | None = None,
    ctx: BuildContext,
) -> ProfileBuild:
    """Build ``formats`` (default: the profile's) of ``prof``'s container into ``out_dir``.

    The image is tagged with the snapshot's tag (``snapshot_tag`` names it when the snapshot is
    opened by root hash), else ``r<revision>``, and ``latest``; its ``created`` time (and the files'
    mtimes unless ``keep_mtimes``) is the revision's timestamp (``ctx.epoch`` if it has none);
    ``ctx.reporter`` hears a step once the snapshot is open and the content bytes as progress.
    ``devices`` creates device nodes in the sandbox (as root; layers always carry them).
    ``parent``: an earlier image of the same repository path whose layers the image reuses, plus one
    delta layer (``delta.py``; ``result.parent`` says whether it was used).
    """
    fmts = check_formats([f.strip() for f in (formats or prof.container.formats)])
    if "cvmfs" in fmts and (hub.stratum is None or hub.keys_dir is None):
        raise UsageError("the cvmfs format needs --hub-stratum DIR and --hub-keys DIR")
    if parent is not None:
        check_parent(parent)  # local inputs before the network
    origin = open_origin(
        list(sources or prof.cvmfs.server_urls()),
        fqrn=prof.cvmfs.repository,
        path=path or prof.cvmfs.path,
        public_keys=list(keys or prof.cvmfs.public_keys),
        snapshot=snapshot or profile_snapshot(prof),
        blacklist=prof.cvmfs.blacklist,
    )
    try:
        repo = origin.repo
        ctx.reporter.step(f"reading {origin.tree.description} (revision {repo.revision})")
        labels = provenance(origin)
        cvmfs_tag = repo.tag or snapshot_tag
        labels[LABEL_TAG] = cvmfs_tag or ""
        spec = image_spec(
            profile_name=prof.name,
            description=prof.description,
            version=image_tag(cvmfs_tag) if cvmfs_tag else f"r{repo.revision}",
            reference=reference,
            created=repo.timestamp or ctx.epoch,
            entrypoint=prof.container.entrypoint,
            cmd=prof.container.cmd if prof.container.cmd is not None else default_cmd(repo, origin.tree.base),
            env=prof.container.env,
            labels=prof.container.labels,
            origin_labels=labels,
            architecture=oci_arch(prof.os.arch),
        )
        sbom, note = image_sbom(repo, origin.tree.base, spec)
        ctx.reporter.step(note)
        spec = replace(spec, labels={**spec.labels, **sbom_labels(sbom)})
        publish = None
        if "cvmfs" in fmts:
            from .hub import publisher  # deliberate lazy import: the publisher needs cryptography

            assert hub.stratum is not None and hub.keys_dir is not None
            publish = publisher(stratum=hub.stratum, fqrn=hub.fqrn, keys_dir=hub.keys_dir)
        req = BuildRequest(
            source=origin.tree,
            spec=spec,
            formats=fmts,
            out_dir=out_dir,
            basename=basename or prof.name,
            keep_mtimes=keep_mtimes,
            layer_bytes=layer_bytes,
            hub_fqrn=hub.fqrn,
            publish=publish,
            devices=devices,
            sbom=sbom,
            parent=parent,
        )
        result = build(req, progress=lambda done, total: ctx.reporter.progress("content bytes", done, total))
        return ProfileBuild(spec, labels, origin.tree.description, result)
    finally:
        origin.close()
