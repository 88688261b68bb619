"""OCI image layout (directory and ``.tar``) and docker-archive, around one written layer.

The layer is written once (see ``layer.py``); these functions only arrange files around it. Every
output appears atomically: a directory via ``atomic_dir``, a tar via ``atomic_file``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..fsutil import atomic_dir, atomic_file
from .archive import Member, directory_members, write_members
from .image import (
    MT_LAYER_GZIP,
    ImageSpec,
    canonical,
    config_json,
    digest_of,
    hex_of,
    index_json,
    manifest_json,
    tags_of,
)
from .layer import LayerResult

OCI_LAYOUT = canonical({"imageLayoutVersion": "1.0.0"})


@dataclass(frozen=True)
class ImageParts:
    """An image whose layer has been written: the JSON documents and the layer files."""

    spec: ImageSpec
    layer: LayerResult
    config: bytes
    manifest: bytes
    layer_gz: Path | None  # the gzip layer blob (OCI)
    layer_raw: Path | None  # the uncompressed layer (docker-archive)

    @property
    def config_digest(self) -> str:
        return digest_of(self.config)

    @property
    def manifest_digest(self) -> str:
        return digest_of(self.manifest)


def assemble(
    spec: ImageSpec, layer: LayerResult, *, layer_gz: Path | None, layer_raw: Path | None, created_by: str
) -> ImageParts:
    config = config_json(spec, layer, created_by=created_by)
    layers = []
    if layer.digest is not None:
        layers.append((MT_LAYER_GZIP, layer.compressed_size, layer.digest))
    manifest = manifest_json(spec, config, layers)
    return ImageParts(spec, layer, config, manifest, layer_gz, layer_raw)


def _place(src: Path, dest: Path) -> None:
    """Hard-link ``src`` to ``dest`` when they share a file system (layers are big), else copy."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def populate_oci(root: Path, parts: ImageParts) -> None:
    assert parts.layer_gz is not None and parts.layer.digest is not None
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_bytes(OCI_LAYOUT)
    (root / "index.json").write_bytes(index_json(parts.spec, parts.manifest))
    (blobs / hex_of(parts.config_digest)).write_bytes(parts.config)
    (blobs / hex_of(parts.manifest_digest)).write_bytes(parts.manifest)
    _place(parts.layer_gz, blobs / hex_of(parts.layer.digest))
    for p in blobs.iterdir():
        p.chmod(0o644)
    for d in (root, root / "blobs", blobs):
        d.chmod(0o755)


def write_oci_dir(dest: Path, parts: ImageParts) -> None:
    with atomic_dir(dest) as tmp:
        populate_oci(tmp, parts)


def write_oci_tar(dest: Path, oci_dir: Path, parts: ImageParts, *, mtime: int) -> None:
    """An ``oci-archive``: the layout directory as a deterministic tar, its index naming the image
    once, by its own tag (skopeo and podman refuse ``oci-archive:PATH`` when the index has more than
    one entry; ``latest`` is for the layout directory, where umoci looks for it)."""
    index = Member("index.json", data=index_json(parts.spec, parts.manifest, tags=[parts.spec.tag]))
    members = [index if m.name == "index.json" else m for m in directory_members(oci_dir)]
    with atomic_file(dest) as f:
        write_members(f, members, mtime=mtime)


def docker_layer_id(parts: ImageParts) -> str:
    """The v1-compatible layer id: a stable function of the layer and the config it belongs to."""
    return hex_of(digest_of(canonical({"diff_id": parts.layer.diff_id, "config": parts.config_digest})))


def write_docker_archive(dest: Path, parts: ImageParts, *, mtime: int) -> None:
    """The ``docker save`` format that ``docker load``, ``podman load`` and skopeo read."""
    assert parts.layer_raw is not None
    spec = parts.spec
    layer_id = docker_layer_id(parts)
    config_name = hex_of(parts.config_digest) + ".json"
    tags = tags_of(spec)
    repo_tags = [f"{spec.name}:{t}" for t in tags]
    manifest = [{"Config": config_name, "RepoTags": repo_tags, "Layers": [f"{layer_id}/layer.tar"]}]
    layer_json = {
        "id": layer_id,
        "created": spec.created_iso,
        "os": spec.os,
        "architecture": spec.architecture,
        "config": {},
    }
    members = [
        Member(layer_id, is_dir=True),
        Member(f"{layer_id}/VERSION", data=b"1.0"),
        Member(f"{layer_id}/json", data=canonical(layer_json)),
        Member(f"{layer_id}/layer.tar", path=parts.layer_raw),
        Member(config_name, data=parts.config),
        Member("manifest.json", data=canonical(manifest)),
        Member("repositories", data=canonical({spec.name: dict.fromkeys(tags, layer_id)})),
    ]
    with atomic_file(dest) as f:
        write_members(f, members, mtime=mtime)
