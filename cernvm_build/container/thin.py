"""DUCC "thin images": a tiny image whose one layer holds ``thin.json``, which names the layers of the
real image by their path in a CernVM-FS hub (``/.layers/<d[0:2]>/<d>/layerfs``). Engines that mount
CernVM-FS themselves (the cvmfs graph driver, the containerd snapshotter) read it instead of pulling.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .image import canonical, hex_of
from .layer import write_layer
from .layers import LayerFile
from .oci import ImageParts, assemble, write_oci_dir
from .source import MemoryTree, memory_file

THIN_VERSION = "1.0"
LABEL_THIN_HUB = "cvmfs.thin.hub"


def layer_path(digest: str) -> str:
    """Where DUCC keeps an unpacked layer inside the hub repository."""
    d = hex_of(digest)
    return f".layers/{d[:2]}/{d}/layerfs"


def thin_json(parts: ImageParts, hub_fqrn: str) -> bytes:
    digests = [layer.result.digest for layer in parts.layers]
    doc = {
        "version": THIN_VERSION,
        "origin": parts.spec.reference,
        "layers": [
            {"digest": hex_of(d), "url": f"cvmfs://{hub_fqrn}/{layer_path(d)}"}
            for d in digests
            if d is not None
        ],
    }
    return canonical(doc)


def write_thin(dest: Path, parts: ImageParts, *, hub_fqrn: str, work: Path) -> ImageParts:
    """Write the thin image as an OCI layout at ``dest``; returns its parts."""
    doc = thin_json(parts, hub_fqrn)
    spec = parts.spec
    thin_spec = replace(
        spec,
        tag=f"{spec.tag}-thin" if len(spec.tag) < 123 else spec.tag,
        labels={**spec.labels, LABEL_THIN_HUB: hub_fqrn},
    )
    gz = work / "thin-layer.tar.gz"
    with open(gz, "wb") as f:
        files = MemoryTree("thin.json", [memory_file("thin.json", doc, mtime=spec.created)])
        layer = write_layer(files, gz_out=f, mtime=spec.created)
    thin_parts = assemble(
        thin_spec,
        [(LayerFile(layer, None, gz, ("thin.json",)), f"cernvm-build container thin of {spec.reference}")],
    )
    write_oci_dir(dest, thin_parts)
    return thin_parts
