"""DUCC "thin images": a tiny image whose one layer holds ``thin.json``, which names the layers of the
real image by their path in a CernVM-FS hub (``/.layers/<d[0:2]>/<d>/layerfs``). Engines that mount
CernVM-FS themselves (the cvmfs graph driver, the containerd snapshotter) read it instead of pulling.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from .image import canonical, hex_of
from .layer import write_layer
from .oci import ImageParts, assemble, write_oci_dir
from .source import FILE, Entry

THIN_VERSION = "1.0"


def layer_path(digest: str) -> str:
    """Where DUCC keeps an unpacked layer inside the hub repository."""
    d = hex_of(digest)
    return f".layers/{d[:2]}/{d}/layerfs"


def thin_json(parts: ImageParts, hub_fqrn: str) -> bytes:
    assert parts.layer.digest is not None
    doc = {
        "version": THIN_VERSION,
        "origin": parts.spec.reference,
        "layers": [
            {
                "digest": hex_of(parts.layer.digest),
                "url": f"cvmfs://{hub_fqrn}/{layer_path(parts.layer.digest)}",
            }
        ],
    }
    return canonical(doc)


class _OneFile:
    """A tree source holding just ``thin.json``."""

    def __init__(self, data: bytes, mtime: int) -> None:
        self.data = data
        self.entry = Entry(path="thin.json", kind=FILE, mode=0o644, size=len(data), mtime=mtime)
        self.description = "thin.json"

    def entries(self) -> Iterator[Entry]:
        yield self.entry

    def open(self, entry: Entry) -> io.BytesIO:
        return io.BytesIO(self.data)


def write_thin(dest: Path, parts: ImageParts, *, hub_fqrn: str, work: Path) -> bytes:
    """Write the thin image as an OCI layout at ``dest``; returns the ``thin.json`` it carries."""
    doc = thin_json(parts, hub_fqrn)
    spec = parts.spec
    thin_spec = replace(
        spec,
        tag=f"{spec.tag}-thin" if len(spec.tag) < 123 else spec.tag,
        labels={**spec.labels, "cvmfs.thin.hub": hub_fqrn},
    )
    gz = work / "thin-layer.tar.gz"
    with open(gz, "wb") as f:
        layer = write_layer(_OneFile(doc, spec.created), gz_out=f, mtime=spec.created)
    thin_parts = assemble(
        thin_spec,
        layer,
        layer_gz=gz,
        layer_raw=None,
        created_by=f"cernvm-build container thin of {spec.reference}",
    )
    write_oci_dir(dest, thin_parts)
    return doc
