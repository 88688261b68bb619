"""The hub's two other views of an image, in DUCC's layout: ``.chains/`` and ``podmanStore/``.

``.chains/<c[0:2]>/<c>/`` holds layers ``0..k`` of an image applied in order, for each k, named by
DUCC's chain id: the first is ``sha256("<digest 0>")``, each next ``sha256("<previous id> <digest
k>")`` (``sha256:<hex>`` strings; the digests are the compressed layer digests). Two images that start
with the same layers share those chains.

``podmanStore/`` is a containers/storage store that podman reads as an *additional image store*
(read-only: ``--storage-opt additionalimagestore=/cvmfs/<hub>/podmanStore``, ``overlay`` driver;
podman 4.3 refuses additional stores with ``vfs``). As DUCC's ``create-podman-store`` does, each
image is one synthetic layer whose ``diff`` is the image's flat root (a relative symlink to
``.flat/…``), so nothing is merged or copied when a container starts: ``overlay/<id>/{diff,link}``,
``overlay/l/<link id>`` → ``../<id>/diff``, ``overlay-layers/layers.json``,
``overlay-images/images.json`` and ``overlay-images/<image id>/`` with the manifest and the config
under containers/storage's file names (``=`` + base64 of the key).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from typing import Any

from .image import canonical, hex_of
from .oci import ImageParts

STORE = "/podmanStore"
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9._-]+\Z")


def chain_ids(digests: Sequence[str]) -> list[str]:
    """DUCC's chain ids (``sha256:<hex>``) of layers with these compressed digests, bottom first."""
    ids: list[str] = []
    for d in digests:
        text = d if not ids else f"{ids[-1]} {d}"
        ids.append("sha256:" + hashlib.sha256(text.encode()).hexdigest())
    return ids


def chain_dir(chain_id: str) -> str:
    c = hex_of(chain_id)
    return f"/.chains/{c[:2]}/{c}"


def big_data_name(key: str) -> str:
    """The file name containers/storage gives an image's big-data item ``key``."""
    return key if _PLAIN_KEY.match(key) else "=" + base64.standard_b64encode(key.encode()).decode()


def image_id(parts: ImageParts) -> str:
    return hex_of(parts.config_digest)


def flat_layer_id(parts: ImageParts) -> str:
    """The synthetic layer's id: a function of the image (its config), like DUCC's."""
    return hashlib.sha256(f"flat {parts.config_digest}".encode()).hexdigest()


def link_id(layer_id: str) -> str:
    """The 26-character short name containers/storage keeps in ``overlay/l/`` (derived, not random,
    so that a re-run writes the same store)."""
    return base64.b32encode(hashlib.sha256(layer_id.encode()).digest()).decode()[:26]


def image_files(parts: ImageParts) -> dict[str, bytes]:
    """``vfs-images/<image id>/``: file name -> content."""
    mkey = "manifest-" + parts.manifest_digest
    return {
        "manifest": parts.manifest,
        big_data_name(mkey): parts.manifest,
        big_data_name(parts.config_digest): parts.config,
    }


def image_record(parts: ImageParts, layer_id: str, names: Sequence[str]) -> dict[str, Any]:
    keys = {"manifest": parts.manifest, "manifest-" + parts.manifest_digest: parts.manifest}
    keys[parts.config_digest] = parts.config
    return {
        "id": image_id(parts),
        "digest": parts.manifest_digest,
        "names": sorted(names),
        "layer": layer_id,
        "metadata": "",
        "big-data-names": sorted(keys),
        "big-data-sizes": {k: len(v) for k, v in keys.items()},
        "big-data-digests": {k: "sha256:" + hashlib.sha256(v).hexdigest() for k, v in keys.items()},
        "created": parts.spec.created_iso,
    }


def layer_record(layer_id: str, created_iso: str, size: int) -> dict[str, Any]:
    # there is no tar of the synthetic layer: its digest stands for it (as DUCC does), so that
    # containers/storage never finds the size "unknown"
    return {
        "id": layer_id,
        "created": created_iso,
        "diff-digest": "sha256:" + layer_id,
        "diff-size": size,
        "uidset": [0],
        "gidset": [0],
    }


def merged(existing: object, record: dict[str, Any], *, names: bool = False) -> bytes:
    """``images.json`` / ``layers.json`` with ``record`` added (replacing one with its id, whose
    names it keeps: one image under several tags; an image name moves to the newest image that has
    it, as a tag does)."""
    items = [r for r in existing if isinstance(r, dict)] if isinstance(existing, list) else []
    out = []
    for r in items:
        if r.get("id") == record["id"]:
            if names and isinstance(r.get("names"), list):
                same = [n for n in r["names"] if isinstance(n, str)]
                record = dict(record, names=sorted({*same, *record["names"]}))
            continue
        if names:
            had = r.get("names")
            kept = (
                [n for n in had if isinstance(n, str) and n not in record["names"]]
                if isinstance(had, list)
                else []
            )
            r = dict(r, names=kept)
        out.append(r)
    out.append(record)
    out.sort(key=lambda r: str(r.get("id")))
    return canonical(out)
