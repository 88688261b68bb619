"""What an image says about itself: config (env, entrypoint, labels, provenance) and manifest.

JSON documents are canonical (sorted keys, no spaces) so that the same inputs give the same digests.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import utcdate
from ..errors import BuildError
from .layer import LayerResult

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

#: provenance labels every image carries; ``verify`` reads them back
LABEL_REPOSITORY = "cvmfs.repository"
LABEL_PATH = "cvmfs.path"
LABEL_TAG = "cvmfs.tag"
LABEL_ROOT_HASH = "cvmfs.root_hash"
LABEL_REVISION = "cvmfs.revision"
LABEL_SERVER = "cvmfs.server"
LABEL_MTIMES = "cvmfs.mtimes"  # "kept" or "fixed"
LABEL_SKIPPED = "cvmfs.skipped"  # number of entries the layer could not carry

_REF_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*\Z")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_REGISTRY_RE = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]+)?\Z")


@dataclass(frozen=True)
class ImageSpec:
    """Everything about an image except its root tree."""

    registry: str  # e.g. "registry.cern.ch"
    repository: str  # e.g. "cernvm/el9"
    tag: str  # e.g. "2026.11-1"
    created: int  # seconds since the epoch (SOURCE_DATE_EPOCH)
    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    architecture: str = "amd64"
    os: str = "linux"
    working_dir: str = "/"

    def __post_init__(self) -> None:
        if not _REGISTRY_RE.match(self.registry):
            raise BuildError(
                f"invalid registry name {self.registry!r}", hint="use a host name like reg.example"
            )
        if not _REF_RE.match(self.repository):
            raise BuildError(
                f"invalid image repository name {self.repository!r}",
                hint="use lower-case path components like 'cernvm/el9'",
            )
        if not _TAG_RE.match(self.tag):
            raise BuildError(
                f"invalid image tag {self.tag!r}", hint="letters, digits, '_', '.', '-'; at most 128"
            )
        # every producer (a profile, a registry's config) gets this: the names are written unquoted
        # into the container's environment script (``export NAME='value'``), which a shell sources
        for key in self.env:
            if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
                raise BuildError(
                    f"environment variable name {key!r:.100} is not a shell name",
                    hint="a name is letters, digits and '_', not starting with a digit",
                )

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def created_iso(self) -> str:
        return utcdate.text(self.created)

    def env_list(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.env.items()]


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


#: a variable name the shell can export (POSIX: letters, digits, '_', not starting with a digit)
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")

#: a content digest as registries and layouts name blobs (the only algorithm the toolkit accepts)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")  # \Z: "$" would pass a final newline

#: the layers an image may have: Docker's own limit (what ``ingest`` takes and ``verify`` reads)
MAX_IMAGE_LAYERS = 127


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1]


def config_json(spec: ImageSpec, layers: Sequence[tuple[LayerResult, str]]) -> bytes:
    """The image configuration (OCI and Docker share this shape); ``layers`` are (layer, what made
    it), bottom first: one history entry per layer."""
    config: dict[str, Any] = {
        "Env": spec.env_list(),
        "Labels": dict(spec.labels),
        "WorkingDir": spec.working_dir,
    }
    if spec.entrypoint:
        config["Entrypoint"] = list(spec.entrypoint)
    if spec.cmd:
        config["Cmd"] = list(spec.cmd)
    doc = {
        "created": spec.created_iso,
        "architecture": spec.architecture,
        "os": spec.os,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer, _ in layers]},
        "history": [{"created": spec.created_iso, "created_by": by} for _, by in layers],
    }
    return canonical(doc)


def manifest_json(spec: ImageSpec, config: bytes, layers: Sequence[tuple[str, int, str]]) -> bytes:
    """An OCI image manifest; ``layers`` are (media type, size, digest)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": mt, "digest": d, "size": size} for mt, size, d in layers],
        "annotations": {"org.opencontainers.image.created": spec.created_iso},
    }
    return canonical(doc)


def tags_of(spec: ImageSpec) -> list[str]:
    """The image's tag, then ``latest`` (what ``umoci unpack --image x.oci:latest`` and a bare
    ``podman run NAME`` look for)."""
    return list(dict.fromkeys([spec.tag, "latest"]))


MT_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"


def artifact_manifest(spec: ImageSpec, subject: bytes, artifact_type: str, blob: bytes) -> bytes:
    """An OCI 1.1 artifact (e.g. the SBOM) whose ``subject`` is the image manifest: what registries'
    referrers API and ``oras discover`` list for the image."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": MT_EMPTY, "digest": digest_of(EMPTY_CONFIG), "size": len(EMPTY_CONFIG)},
        "layers": [{"mediaType": artifact_type, "digest": digest_of(blob), "size": len(blob)}],
        "subject": {"mediaType": MT_MANIFEST, "digest": digest_of(subject), "size": len(subject)},
        "annotations": {"org.opencontainers.image.created": spec.created_iso},
    }
    return canonical(doc)


def index_json(
    spec: ImageSpec,
    manifest: bytes,
    *,
    tags: Sequence[str] | None = None,
    artifacts: Sequence[tuple[bytes, str]] = (),
) -> bytes:
    """The layout's index: the one manifest, once under each of ``tags`` (default ``tags_of(spec)``),
    then the artifacts that refer to it ((manifest, artifact type), untagged)."""
    refs = [
        {"mediaType": MT_MANIFEST, "digest": digest_of(m), "size": len(m), "artifactType": t}
        for m, t in artifacts
    ]
    doc = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [
            {
                "mediaType": MT_MANIFEST,
                "digest": digest_of(manifest),
                "size": len(manifest),
                "annotations": {
                    "org.opencontainers.image.ref.name": tag,
                    "io.containerd.image.name": f"{spec.name}:{tag}",
                },
            }
            for tag in (tags_of(spec) if tags is None else tags)
        ]
        + refs,
    }
    return canonical(doc)
