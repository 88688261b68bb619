"""Build reference containers from one tree source: the layer once, then every requested format.

Outputs, for a base name B in the output folder:

- ``oci``: ``B.oci/`` (OCI image layout) and ``B.oci.tar`` (the same as an ``oci-archive``)
- ``docker-archive``: ``B.docker.tar`` (``docker load`` / ``podman load``)
- ``apptainer``: ``B.sandbox/`` (flat root tree with ``.singularity.d``)
- ``thin``: ``B.thin.oci/`` (DUCC thin image: ``thin.json`` naming the layer in the hub)
- ``cvmfs``: the image published into a CernVM-FS hub in DUCC's layout (see ``hub.py``)

Intermediate files live in ``.B.work/`` beside the outputs and are removed at the end; an
interrupted build leaves only that folder, which the next run clears, and finishes the job. The
outputs are written there too and renamed into place together once every format is made
(``_Staged``): a format that fails (a full disk, a tool's error) is named in the error, and leaves
the folder's earlier outputs as they were, not some of them replaced by this build's.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..artifact import Artifact
from ..errors import BuildError, CernVMError
from ..fsutil import (
    atomic_dir,
    atomic_file,
    fsync_dir,
    held_lock,
    place_dir,
    reclaim_stale_in,
    remove_tree,
    shown,
)
from ..tree import TreeReport
from .apptainer import add_scaffold
from .delta import ParentUse, created_by, layer_tars, open_parent, too_big, too_deep, write_delta
from .image import LABEL_MTIMES, LABEL_SKIPPED, ImageSpec, hex_of
from .layer import LayerResult
from .layering import DEFAULT_LAYER_BYTES, ImageTrees, LayerTar, LayerView, Weights, plan_weighed, weigh
from .layers import LayerFile, write_layers
from .materialize import materialize
from .oci import ImageParts, assemble, write_docker_archive, write_oci_dir, write_oci_tar
from .sbom import MEDIA_TYPE as SBOM_MEDIA_TYPE
from .source import Clamped, TreeSource
from .thin import write_thin

log = logging.getLogger(__name__)

FORMATS = ("oci", "docker-archive", "apptainer", "thin", "cvmfs")
_NEEDS_GZ = {"oci", "thin", "cvmfs"}

#: told (content bytes done, the tree's content bytes) as the tree is read
Progress = Callable[[int, int], None]


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
    #: an earlier image of the same repository path (OCI layout or archive): its layers reused, plus
    #: one delta layer (``delta.py``); the tree cut when the chain is too long or the delta too big
    parent: Path | None = None


@dataclass
class BuildResult:
    artifacts: list[Artifact] = field(default_factory=list)
    layers: list[LayerResult] = field(default_factory=list)  # bottom first
    parts: ImageParts | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: what was skipped and what carries power (setuid/setgid, xattrs), from the layer and the sandbox
    report: TreeReport = field(default_factory=TreeReport)
    #: what ``--parent`` did (None: no parent given)
    parent: ParentUse | None = None


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


class _Count:
    """Content bytes done of the tree's ``total``, told to ``tell(done, total)``."""

    def __init__(self, tell: Progress, total: int) -> None:
        self.tell, self.total, self.done = tell, total, 0
        tell(0, total)

    def advance(self, n: int) -> None:
        self.done += n
        self.tell(self.done, self.total)

    def restart(self) -> None:
        if self.done:
            self.done = 0
            self.tell(0, self.total)


@dataclass
class _Layers:
    """The image's layers (each with its history line), the hub's view of them, the build report."""

    files: list[tuple[LayerFile, str]]
    trees: list[TreeSource | LayerTar]
    report: TreeReport


class _Staged:
    """The build's outputs, each written at ``path(name)`` in the work folder and renamed to its
    name in ``out`` by ``place``, once all of them are made."""

    def __init__(self, work: Path, out: Path) -> None:
        self.dir = work / "out"
        self.dir.mkdir()
        self.out = out
        self.names: list[str] = []

    def path(self, name: str) -> Path:
        self.names.append(name)
        return self.dir / name

    def place(self, artifacts: list[Artifact]) -> list[Artifact]:
        """Every output renamed into place (durably); ``artifacts`` with the paths they now have."""
        for name in self.names:
            staged, dest = self.dir / name, self.out / name
            if staged.is_dir():
                place_dir(staged, dest)
            else:
                os.replace(staged, dest)
        fsync_dir(self.out)
        return [
            replace(a, path=self.out / a.path.name) if a.path.parent == self.dir else a for a in artifacts
        ]


#: errors of the output's place, not of the code: named with the format being made (``_making``)
_PLACE_ERRNOS = {
    errno.ENOSPC: "free some space in the output folder's file system",
    errno.EDQUOT: "your disk quota there is used up: free some space",
    errno.EACCES: "check the permissions of the output folder",
    errno.EPERM: "check the permissions of the output folder",
    errno.EROFS: "the output folder's file system is read-only: choose another --out",
    errno.ENAMETOOLONG: "use a shorter --out or --basename",
}


@contextlib.contextmanager
def _making(fmt: str, staged: _Staged, output: str) -> Iterator[None]:
    """The ``fmt`` format's writing (its ``output`` first): its error names the format, and that
    output where a file in the work folder failed (a file elsewhere keeps its own error)."""
    try:
        yield
    except CernVMError as e:  # its class, hint and exit code kept
        e.message = f"the {fmt} format: {e.message}"
        raise
    except OSError as e:
        hint = _PLACE_ERRNOS.get(e.errno or 0)
        if hint is None or not isinstance(e.filename, (str, Path)):
            raise
        where = Path(e.filename)
        if not where.is_relative_to(staged.dir):
            # elsewhere (the hub's stratum, a cache): the CLI's line names that file and its own
            # file system's hint; this one would send the user to the output folder
            raise
        where = staged.out / output
        raise BuildError(
            f"the {fmt} format: cannot write it: {e.strerror}",
            where=shown(str(where)),
            hint=f"{hint}, then build again: no output in that folder was replaced (the re-run"
            " finishes the job)",
        ) from e


def _dir_artifact(path: Path, fmt: str, digest: str, **meta: object) -> Artifact:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return Artifact(path=path, format=fmt, sha256=hex_of(digest), size=size, meta=dict(meta))


#: the profile's name rule (settings.py): what a basename may be
_BASENAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def build(req: BuildRequest, progress: Progress | None = None) -> BuildResult:
    formats = check_formats(req.formats)
    if "cvmfs" in formats and req.publish is None:
        raise BuildError("the cvmfs format needs a hub repository to publish into", hint="pass --hub-stratum")
    # a file name in --out, as a profile's name is: '--basename ../x' wrote x.oci beside --out, and
    # '--basename "*"' removed every build's temporaries in it as its own stale ones (pr21 N17)
    if not _BASENAME_RE.fullmatch(req.basename):
        raise BuildError(
            f"--basename {req.basename[:80]!r} is not a file name",
            hint="letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. el9-2026.12)",
        )
    out = req.out_dir
    out.mkdir(parents=True, exist_ok=True)

    def refuse(holder: str) -> None:
        raise BuildError(
            f"{out}: {req.basename} is being built there by {holder}",
            hint="wait for that build to finish, or give another --out or --basename",
        )

    # one build of a name in a folder at a time: a second removed the first's work folder and
    # temporaries as a killed run's (the first ended in a FileNotFoundError traceback)
    with held_lock(out / f".{req.basename}.lock", f"container build {req.basename}", refuse, remove=True):
        return _build(req, formats, out, progress)


def _build(req: BuildRequest, formats: list[str], out: Path, progress: Progress | None) -> BuildResult:
    work = out / f".{req.basename}.work"
    remove_tree(work)  # a killed run's (the lock keeps out a running one)
    # temporaries of runs killed before they could clean up: their pid no longer runs (by name, a
    # build of 'el9' removed the running 'el9.1' build's)
    reclaim_stale_in(out)
    work.mkdir()
    staged = _Staged(work, out)
    # mtimes are the tree's own, capped at the image's date unless kept as they are: a fixed value
    # would be the revision's time, different in every snapshot, and no layer could be shared
    tree = req.source if req.keep_mtimes else Clamped(req.source, req.spec.created)
    res = BuildResult()
    needs_layer = bool(set(formats) - {"apptainer"})
    try:
        # one metadata pass gives the progress total and the cut's weights (weighed when needed)
        weights: Weights | None = None
        count: _Count | None = None
        if progress is not None:
            weights = weigh(tree)
            count = _Count(progress, weights.content)
        advance = count.advance if count is not None else None
        spec = req.spec
        layers: _Layers | None = None
        if needs_layer:
            if req.parent is not None:
                layers, res.parent = _on_parent(tree, req, work, formats, advance)
            if layers is None:
                if count is not None:  # a --parent build that cuts the tree instead reads it again
                    count.restart()
                plan = plan_weighed(weights or weigh(tree), layer_bytes=req.layer_bytes)
                files = write_layers(
                    tree,
                    plan,
                    work,
                    gzip=bool(_NEEDS_GZ & set(formats)) or req.parent is not None,
                    raw="docker-archive" in formats,
                    progress=advance,
                    report=res.report,
                )
                layers = _Layers(
                    [(f, f.created_by()) for f in files],
                    [LayerView(tree, plan, f.index) for f in files],
                    res.report,
                )
            res.layers = [f.result for f, _ in layers.files]
            res.report = layers.report
            res.skipped = list(res.report.skipped)
            spec = _with_build_labels(spec, req.keep_mtimes, res.report.skipped_count)
            parts = replace(assemble(spec, layers.files), sbom=req.sbom)
            res.parts = parts
            if "oci" in formats:
                with _making("oci", staged, f"{req.basename}.oci"):
                    oci_dir = staged.path(f"{req.basename}.oci")
                    write_oci_dir(oci_dir, parts)
                    res.artifacts.append(
                        _dir_artifact(oci_dir, "oci", parts.manifest_digest, reference=spec.reference)
                    )
                    oci_tar = staged.path(f"{req.basename}.oci.tar")
                    write_oci_tar(oci_tar, oci_dir, parts, mtime=spec.created)
                    res.artifacts.append(Artifact.of(oci_tar, "oci-archive", reference=spec.reference))
            if "docker-archive" in formats:
                with _making("docker-archive", staged, f"{req.basename}.docker.tar"):
                    dtar = staged.path(f"{req.basename}.docker.tar")
                    write_docker_archive(dtar, parts, mtime=spec.created)
                    res.artifacts.append(Artifact.of(dtar, "docker-archive", reference=spec.reference))
            if "thin" in formats:
                with _making("thin", staged, f"{req.basename}.thin.oci"):
                    tdir = staged.path(f"{req.basename}.thin.oci")
                    thin = write_thin(tdir, parts, hub_fqrn=req.hub_fqrn, work=work)
                    res.artifacts.append(
                        _dir_artifact(tdir, "thin", thin.manifest_digest, reference=thin.spec.reference)
                    )
        if "apptainer" in formats:
            with _making("apptainer", staged, f"{req.basename}.sandbox"):
                res.artifacts.append(_sandbox(req, tree, staged, res, spec, needs_layer, advance))
        if "cvmfs" in formats:
            # last: a hub's new revision is not undone, so it is made once every other format is
            assert req.publish is not None and res.parts is not None and layers is not None
            with _making("cvmfs", staged, req.hub_fqrn):
                res.artifacts.append(req.publish(res.parts, ImageTrees(tree, layers.trees)))
        if req.sbom is not None:
            spdx = staged.path(f"{req.basename}.spdx.json")
            with atomic_file(spdx) as f:
                f.write(req.sbom)
            res.artifacts.append(Artifact.of(spdx, "spdx", media_type=SBOM_MEDIA_TYPE))
        res.artifacts = staged.place(res.artifacts)
    finally:
        remove_tree(work)
    return res


def _sandbox(
    req: BuildRequest,
    tree: TreeSource,
    staged: _Staged,
    res: BuildResult,
    spec: ImageSpec,
    needs_layer: bool,
    advance: Callable[[int], None] | None,
) -> Artifact:
    """The apptainer sandbox, with the build report's part only it has (into ``res``)."""
    sandbox = staged.path(f"{req.basename}.sandbox")
    with atomic_dir(sandbox) as tmp:
        m = materialize(tree, tmp, mtime=None, devices=req.devices, progress=None if needs_layer else advance)
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
    return Artifact(
        path=sandbox,
        format="apptainer",
        sha256=m.tree_sha256,
        size=m.bytes,
        meta={"files": m.files, "sha256_of": "canonical listing of the tree"},
    )


def _on_parent(
    tree: TreeSource,
    req: BuildRequest,
    work: Path,
    formats: list[str],
    progress: Callable[[int], None] | None,
) -> tuple[_Layers | None, ParentUse]:
    """The image as ``req.parent``'s layers plus a delta, or None when the chain is cut short; and
    what was done."""
    assert req.parent is not None
    parent = open_parent(
        req.parent, req.spec, work, mtimes="kept" if req.keep_mtimes else "clamped",
        raw="docker-archive" in formats,
    )  # fmt: skip
    use = ParentUse(str(req.parent), used=False)
    use.why = too_deep(parent) or ""
    if use.why:
        return None, use
    report = TreeReport()
    delta = write_delta(tree, parent, work, raw="docker-archive" in formats, progress=progress, report=report)
    use.why = too_big(delta, parent) or ""
    if use.why:
        return None, use
    layers = list(zip(parent.layers, parent.created_by, strict=True))
    if delta.layer is not None:
        layers.append((delta.layer, created_by(delta, parent)))
    use.used, use.reused_layers, use.reused_bytes = True, len(parent.layers), parent.blob_bytes
    use.delta_bytes, use.changed, use.removed = delta.bytes, delta.changed, delta.removed
    return _Layers(layers, list(layer_tars(parent, delta)), report), use


def _with_build_labels(spec: ImageSpec, keep_mtimes: bool, skipped: int) -> ImageSpec:
    labels = dict(spec.labels)
    labels[LABEL_MTIMES] = "kept" if keep_mtimes else "clamped"
    if skipped:
        labels[LABEL_SKIPPED] = str(skipped)
    return replace(spec, labels=labels)
