"""What ``qemu-img info`` says of a qcow2 image, and whether it reads files besides itself.

A qcow2 header can name other host files QEMU then opens with the image: a backing file, and an
external data file (``data_file``, where the guest's clusters live). An image from elsewhere (a
downloaded seed or boot image) could so name ``~/.ssh/id_ed25519``, and the guest would read it.
Seeds and boot images must be self-contained: one rule for both (``outside_file``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import proc
from ..errors import CernVMError, ToolError


def info(path: Path, error: type[CernVMError], what: str) -> dict[str, object]:
    """``qemu-img info`` as a dict; ``error`` (one line naming ``what``) when it cannot read it.
    --force-share: an instance running on the image holds qemu's lock on it; the header is safe."""
    try:
        out = proc.run(["qemu-img", "info", "--force-share", "--output", "json", proc.qemu_file(path)]).stdout
    except ToolError as e:
        raise error(
            f"qemu-img cannot read the {what}: {e.message}", where=str(path), hint="give a qcow2 image"
        ) from None
    try:
        found = json.loads(out)
    except ValueError:
        raise error(f"qemu-img's description of the {what} is not JSON", where=str(path)) from None
    return found if isinstance(found, dict) else {}


def outside_file(described: dict[str, object]) -> str:
    """ "a backing file (X)" or "an external data file (X)" when the image reads another file; "" else."""
    backing = described.get("full-backing-filename") or described.get("backing-filename")
    if backing:
        return f"a backing file ({backing})"
    specific = described.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    data_file = data.get("data-file") if isinstance(data, dict) else None
    if data_file:
        return f"an external data file ({data_file})"
    return ""


def flatten_hint(path: Path) -> str:
    return (
        f"if you trust what it names, make a self-contained copy: qemu-img convert -O qcow2 {path} flat.qcow2"
    )
