"""OCI image layout (directory and ``.tar``) and docker-archive, around one written layer.

The layer is written once (see ``layer.py``); these functions only arrange files around it. Every
output appears atomically: a directory via ``atomic_dir``, a tar via ``atomic_file``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..fsutil import atomic_dir, atomic_file
from .archive import Member, directory_members, write_members
from .image import (
    EMPTY_CONFIG,
    MT_LAYER_GZIP,
    ImageSpec,
    artifact_manifest,
    canonical,
    config_json,
    digest_of,
    hex_of,
    index_json,
    manifest_json,
    tags_of,
)
from .layers import LayerFile
from .sbom import MEDIA_TYPE as SBOM_MEDIA_TYPE

OCI_LAYOUT = canonical({"imageLayoutVersion": "1.0.0"})


@dataclass(frozen=True)
class ImageParts:
    """An image whose layers have been written (bottom first): the JSON documents and the files."""

    spec: ImageSpec
    layers: tuple[LayerFile, ...]
    config: bytes
    manifest: bytes
    #: an SPDX document attached to the image (an OCI artifact whose subject is the image)
    sbom: bytes | None = None

    @property
    def sbom_manifest(self) -> bytes | None:
        if self.sbom is None:
            return None
        return artifact_manifest(self.spec, self.manifest, SBOM_MEDIA_TYPE, self.sbom)

    @property
    def config_digest(self) -> str:
        return digest_of(self.config)

    @property
    def manifest_digest(self) -> str:
        return digest_of(self.manifest)


def assemble(spec: ImageSpec, layers: Sequence[tuple[LayerFile, str]]) -> ImageParts:
    """The image of ``layers``: (written layer, what made it), bottom first."""
    config = config_json(spec, [(f.result, by) for f, by in layers])
    blobs = [
        (MT_LAYER_GZIP, f.result.compressed_size, f.result.digest)
        for f, _ in layers
        if f.result.digest is not None
    ]
    manifest = manifest_json(spec, config, blobs)
    return ImageParts(spec, tuple(f for f, _ in layers), config, manifest)


def _place(src: Path, dest: Path) -> None:
    """Hard-link ``src`` to ``dest`` when they share a file system (layers are big), else copy."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def populate_oci(root: Path, parts: ImageParts) -> None:
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_bytes(OCI_LAYOUT)
    referrer = parts.sbom_manifest
    extra = [] if referrer is None else [(referrer, SBOM_MEDIA_TYPE)]
    (root / "index.json").write_bytes(index_json(parts.spec, parts.manifest, artifacts=extra))
    (blobs / hex_of(parts.config_digest)).write_bytes(parts.config)
    (blobs / hex_of(parts.manifest_digest)).write_bytes(parts.manifest)
    if referrer is not None and parts.sbom is not None:
        (blobs / hex_of(digest_of(parts.sbom))).write_bytes(parts.sbom)
        (blobs / hex_of(digest_of(EMPTY_CONFIG))).write_bytes(EMPTY_CONFIG)
        (blobs / hex_of(digest_of(referrer))).write_bytes(referrer)
    for layer in parts.layers:
        assert layer.gz is not None and layer.result.digest is not None
        dest = blobs / hex_of(layer.result.digest)
        if not dest.exists():  # two layers with the same bytes are one blob
            _place(layer.gz, dest)
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


def docker_layer_ids(parts: ImageParts) -> list[str]:
    """The v1-compatible layer ids, bottom first: each a stable function of its layer, the one below
    it and the config (so an image's ids are its own, as ``docker save`` makes them)."""
    ids: list[str] = []
    for layer in parts.layers:
        key = {
            "diff_id": layer.result.diff_id,
            "parent": ids[-1] if ids else "",
            "config": parts.config_digest,
        }
        ids.append(hex_of(digest_of(canonical(key))))
    return ids


def write_docker_archive(dest: Path, parts: ImageParts, *, mtime: int) -> None:
    """The ``docker save`` format that ``docker load``, ``podman load`` and skopeo read."""
    spec = parts.spec
    ids = docker_layer_ids(parts)
    config_name = hex_of(parts.config_digest) + ".json"
    tags = tags_of(spec)
    repo_tags = [f"{spec.name}:{t}" for t in tags]
    manifest = [{"Config": config_name, "RepoTags": repo_tags, "Layers": [f"{i}/layer.tar" for i in ids]}]
    members = [Member(config_name, data=parts.config)]
    for n, (layer_id, layer) in enumerate(zip(ids, parts.layers, strict=True)):
        assert layer.raw is not None
        layer_json: dict[str, object] = {
            "id": layer_id,
            "created": spec.created_iso,
            "os": spec.os,
            "architecture": spec.architecture,
            "config": {},
        }
        if n:
            layer_json["parent"] = ids[n - 1]
        members += [
            Member(layer_id, is_dir=True),
            Member(f"{layer_id}/VERSION", data=b"1.0"),
            Member(f"{layer_id}/json", data=canonical(layer_json)),
            Member(f"{layer_id}/layer.tar", path=layer.raw),
        ]
    members += [
        Member("manifest.json", data=canonical(manifest)),
        Member("repositories", data=canonical({spec.name: dict.fromkeys(tags, ids[-1])})),
    ]
    members.sort(key=lambda m: m.name.encode())
    with atomic_file(dest) as f:
        write_members(f, members, mtime=mtime)
