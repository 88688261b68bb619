"""``hub ingest`` takes tags, manifests and configs from a registry, which may be hostile: every field
the hub turns into a path or an image field is checked, and a bad one is one BuildError naming the
image (it was a KeyError/TypeError traceback, or a layer path built from the registry's digest)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cernvm_build.container import ingest
from cernvm_build.container.image import digest_of
from cernvm_build.container.registry import RegistryOptions
from cernvm_build.errors import BuildError

WISH = ingest.Wish("127.0.0.1:5000", "cernvm/demo", "demo-*")
HEX = "ab" * 32


def _image(layers: int = 1, **config: Any) -> tuple[bytes, bytes]:
    cfg = {
        "created": "2026-12-01T10:00:00Z",
        "architecture": "amd64",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{HEX}"] * layers},
        **config,
    }
    cfg_bytes = json.dumps(cfg).encode()
    manifest = {
        "schemaVersion": 2,
        "config": {"digest": digest_of(cfg_bytes), "size": len(cfg_bytes)},
        "layers": [{"digest": f"sha256:{HEX}", "size": 10}] * layers,
    }
    return json.dumps(manifest).encode(), cfg_bytes


def test_a_genuine_image_passes() -> None:
    parts = ingest.image_parts(WISH, "demo-1", *_image())
    assert parts.spec.reference == "127.0.0.1:5000/cernvm/demo:demo-1" and len(parts.layers) == 1


def _with_layer(**layer: Any) -> tuple[bytes, bytes]:
    m, c = _image()
    manifest = json.loads(m)
    manifest["layers"] = [dict(manifest["layers"][0], **layer)]
    return json.dumps(manifest).encode(), c


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (lambda: _with_layer(digest="sha256:../../../.flat/x"), "is not sha256:<hex>"),
        (lambda: _with_layer(size="big"), "has size 'big'"),
        (lambda: (json.dumps({"config": {}}).encode(), _image()[1]), "no 'layers'"),
        (lambda: _image(config={"Env": [7]}), "not an image the hub can take"),
        (lambda: _image(config={"Labels": {"a": ["b"]}}), "holds something else"),
        (lambda: _image(created="yesterday"), "Invalid isoformat string"),
        (lambda: _image(layers=ingest.MAX_LAYERS + 1), "128 layers (1 to 127 can be ingested)"),
        (lambda: (_image()[0], _image(architecture="arm64")[1]), "the config does not match its digest"),
    ],
    ids=["digest-path", "size", "no-layers", "env-int", "labels", "created", "too-many-layers", "config"],
)
def test_a_hostile_manifest_or_config_is_one_build_error(image: Any, error: str) -> None:
    with pytest.raises(BuildError) as e:
        ingest.image_parts(WISH, "demo-1", *image())
    assert error in str(e.value) and "127.0.0.1:5000/cernvm/demo:demo-1" in str(e.value)


def test_a_listed_tag_that_is_no_tag_is_refused_before_any_pull(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "list_tags", lambda repo, opts: ["demo-1", "demo-/../../../etc"])
    with pytest.raises(BuildError) as e:
        WISH.expand(RegistryOptions())
    assert "the registry lists 'demo-/../../../etc', which is not a tag" in str(e.value)
