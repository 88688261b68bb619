"""Build reference containers from one tree source: the layer once, then every requested format.

Outputs, for a base name B in the output folder:

- ``oci``: ``B.oci/`` (OCI image layout) and ``B.oci.tar`` (the same as an ``oci-archive``)
- ``docker-archive``: ``B.docker.tar`` (``docker load`` / ``podman load``)
- ``apptainer``: ``B.sandbox/`` (flat root tree with ``.singularity.d``)
- ``thin``: ``B.thin.oci/`` (DUCC thin image: ``thin.json`` naming the layer in the hub)
- ``cvmfs``: the image published into a CernVM-FS hub in DUCC's layout (see ``hub.py``)

Intermediate files live in ``.B.work/`` beside the outputs and are removed at the end; an
interrupted build leaves only that folder, which the next run clears, and finishes the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..artifact import Artifact
from ..errors import BuildError
from ..fsutil import atomic_dir, atomic_file, remove_tree
from ..tree import TreeReport
from .apptainer import add_scaffold
from .image import LABEL_MTIMES, LABEL_SKIPPED, ImageSpec, hex_of
from .layer import LayerResult
from .layering import DEFAULT_LAYER_BYTES, ImageTrees, LayerView, plan_layers
from .layers import write_layers
from .materialize import materialize
from .oci import ImageParts, assemble, write_docker_archive, write_oci_dir, write_oci_tar
from .sbom import MEDIA_TYPE as SBOM_MEDIA_TYPE
from .source import FILE, Clamped, TreeSource
from .thin import write_thin

log = logging.getLogger(__name__)

FORMATS = ("oci", "docker-archive", "apptainer", "thin", "cvmfs")
_NEEDS_GZ = {"oci", "thin", "cvmfs"}

Progress = Callable[[int], None]


@dataclass(frozen=True)
class BuildRequest:
    source: TreeSource
    spec: ImageSpec
    formats: Sequence[str]
    out_dir: Path
    basename: str
    keep_mtimes: bool = False
    #: the CernVM-FS hub a thin image points into
    hub_fqrn: str = "unpacked.cern.ch"
    #: publishes into the hub for the ``cvmfs`` format (``hub.publisher``)
    publish: Callable[[ImageParts, ImageTrees], Artifact] | None = None
    #: create device nodes in trees written to disk (the sandbox; needs root); tar layers carry them
    devices: bool = False
    #: a directory heavier than this is cut into several layers (see ``layering.py``)
    layer_bytes: int = DEFAULT_LAYER_BYTES
    #: the tree's SPDX document (``sbom.py``): written as ``B.spdx.json`` and attached to the OCI
    #: layout as an artifact whose subject is the image
    sbom: bytes | None = None


@dataclass
class BuildResult:
    artifacts: list[Artifact] = field(default_factory=list)
    layers: list[LayerResult] = field(default_factory=list)  # bottom first
    parts: ImageParts | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: what was skipped and what carries power (setuid/setgid, xattrs), from the layer and the sandbox
    report: TreeReport = field(default_factory=TreeReport)


def check_formats(formats: Sequence[str]) -> list[str]:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise BuildError(
            f"unknown container format {unknown[0]!r}",
            hint="choose from: " + ", ".join(FORMATS),
        )
    if not formats:
        raise BuildError("no container format given", hint="choose from: " + ", ".join(FORMATS))
    return list(dict.fromkeys(formats))


def content_size(source: TreeSource) -> int:
    """Bytes of file content in the tree (for progress bars); reads metadata only."""
    seen: set[object] = set()
    total = 0
    for e in source.entries():
        if e.kind == FILE and (e.link_id is None or e.link_id not in seen):
            total += e.size
            if e.link_id is not None:
                seen.add(e.link_id)
    return total


def _dir_artifact(path: Path, fmt: str, digest: str, **meta: object) -> Artifact:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return Artifact(path=path, format=fmt, sha256=hex_of(digest), size=size, meta=dict(meta))


def build(req: BuildRequest, progress: Progress | None = None) -> BuildResult:
    formats = check_formats(req.formats)
    if "cvmfs" in formats and req.publish is None:
        raise BuildError("the cvmfs format needs a hub repository to publish into", hint="pass --hub-stratum")
    out = req.out_dir
    out.mkdir(parents=True, exist_ok=True)
    work = out / f".{req.basename}.work"
    remove_tree(work)
    # temporaries of an interrupted run (killed before it could clean up) of these same outputs
    for stale in out.glob(f".{req.basename}.*.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            remove_tree(stale)
        else:
            stale.unlink()
    work.mkdir()
    # mtimes are the tree's own, capped at the image's date unless kept as they are: a fixed value
    # would be the revision's time, different in every snapshot, and no layer could be shared
    tree = req.source if req.keep_mtimes else Clamped(req.source, req.spec.created)
    res = BuildResult()
    try:
        needs_layer = bool(set(formats) - {"apptainer"})
        spec = req.spec
        if needs_layer:
            plan = plan_layers(tree, layer_bytes=req.layer_bytes)
            files = write_layers(
                tree,
                plan,
                work,
                gzip=bool(_NEEDS_GZ & set(formats)),
                progress=progress,
                report=res.report,
            )
            res.layers = [f.result for f in files]
            res.skipped = list(res.report.skipped)
            spec = _with_build_labels(spec, req.keep_mtimes, res.report.skipped_count)
            parts = replace(assemble(spec, [(f, f.created_by()) for f in files]), sbom=req.sbom)
            res.parts = parts
            if "oci" in formats:
                oci_dir = out / f"{req.basename}.oci"
                write_oci_dir(oci_dir, parts)
                res.artifacts.append(
                    _dir_artifact(oci_dir, "oci", parts.manifest_digest, reference=spec.reference)
                )
                oci_tar = out / f"{req.basename}.oci.tar"
                write_oci_tar(oci_tar, oci_dir, parts, mtime=spec.created)
                res.artifacts.append(Artifact.of(oci_tar, "oci-archive", reference=spec.reference))
            if "docker-archive" in formats:
                dtar = out / f"{req.basename}.docker.tar"
                write_docker_archive(dtar, parts, mtime=spec.created)
                res.artifacts.append(Artifact.of(dtar, "docker-archive", reference=spec.reference))
            if "thin" in formats:
                tdir = out / f"{req.basename}.thin.oci"
                thin = write_thin(tdir, parts, hub_fqrn=req.hub_fqrn, work=work)
                res.artifacts.append(
                    _dir_artifact(tdir, "thin", thin.manifest_digest, reference=thin.spec.reference)
                )
            if "cvmfs" in formats:
                assert req.publish is not None
                trees = ImageTrees(tree, [LayerView(tree, plan, f.index) for f in parts.layers])
                res.artifacts.append(req.publish(parts, trees))
        if "apptainer" in formats:
            sandbox = out / f"{req.basename}.sandbox"
            with atomic_dir(sandbox) as tmp:
                m = materialize(
                    tree,
                    tmp,
                    mtime=None,
                    devices=req.devices,
                    progress=None if needs_layer else progress,
                )
                if not needs_layer:
                    res.skipped, res.report = list(m.skipped), m.report
                    spec = _with_build_labels(spec, req.keep_mtimes, len(m.skipped))
                else:  # the layer's report, plus what only the sandbox skipped (device nodes)
                    layer_skips = set(res.skipped)
                    extra = [s for s in m.skipped if s not in layer_skips]
                    res.skipped += extra
                    for p, why in extra:
                        res.report.skip(p, why)
                add_scaffold(tmp, spec, mtime=spec.created)
                tmp.chmod(0o755)
            res.artifacts.append(
                Artifact(
                    path=sandbox,
                    format="apptainer",
                    sha256=m.tree_sha256,
                    size=m.bytes,
                    meta={"files": m.files, "sha256_of": "canonical listing of the tree"},
                )
            )
        if req.sbom is not None:
            spdx = out / f"{req.basename}.spdx.json"
            with atomic_file(spdx) as f:
                f.write(req.sbom)
            res.artifacts.append(Artifact.of(spdx, "spdx", media_type=SBOM_MEDIA_TYPE))
    finally:
        remove_tree(work)
    return res


def _with_build_labels(spec: ImageSpec, keep_mtimes: bool, skipped: int) -> ImageSpec:
    labels = dict(spec.labels)
    labels[LABEL_MTIMES] = "kept" if keep_mtimes else "clamped"
    if skipped:
        labels[LABEL_SKIPPED] = str(skipped)
    return replace(spec, labels=labels)
