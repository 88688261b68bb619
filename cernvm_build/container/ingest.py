"""``hub ingest``: images from a registry, published unpacked into the hub as DUCC does.

For each wished image (``host[:port]/repo:tag``; ``*``/``?`` in the tag match the registry's tags,
e.g. ``library/python:3.*``) the image is copied into a scratch OCI layout with skopeo (checked
against a ``policy.json`` when given), and each view the hub keeps is unpacked with the real umoci
from that layout, so whiteouts and opaque directories mean what they mean to every engine: each
layer alone, each chain (layers 0..k: a layout whose manifest lists only those), and the flat root.
Then the same publisher as for built images writes them (``hub.publish_image``): a layer, chain or
flat root already in the hub is not written again, and an unchanged image writes nothing.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..artifact import Artifact
from ..errors import BuildError
from .image import _TAG_RE, ImageSpec, canonical, digest_of, hex_of
from .layer import LayerResult
from .layering import ImageTrees
from .layers import LayerFile
from .oci import ImageParts
from .registry import RegistryOptions, list_tags, pull
from .source import LocalTree

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wish:
    registry: str
    repository: str
    tag: str  # may hold wildcards

    @classmethod
    def parse(cls, text: str) -> Wish:
        ref = text.removeprefix("docker://")
        name, sep, tag = ref.rpartition(":")
        if not sep or "/" in tag or "/" not in name:
            raise BuildError(
                f"{text!r} is not an image name host/repo:tag", hint="e.g. 127.0.0.1:5000/library/python:3.*"
            )
        host, _, repo = name.partition("/")
        return cls(host, repo, tag)

    def expand(self, opts: RegistryOptions) -> list[str]:
        """The wished tags that exist (the wildcards matched against the registry's tags)."""
        if not any(c in self.tag for c in "*?["):
            return [self.tag]
        matching = [
            t
            for t in list_tags(f"{self.registry}/{self.repository}", opts=opts)
            if fnmatch.fnmatchcase(t, self.tag)  # '*' matches '/' and '..' too
        ]
        for t in matching:
            if not isinstance(t, str) or not _TAG_RE.match(t):
                raise BuildError(
                    f"{self.registry}/{self.repository}: the registry lists {t!r:.140}, which is not a tag",
                    hint="a tag is letters, digits, '_', '.', '-': the registry is damaged or hostile",
                )
        return matching


def _umoci(layout: Path, tag: str, dest: Path) -> Path:
    argv = ["umoci", "raw", "unpack", *([] if os.geteuid() == 0 else ["--rootless"])]
    proc = subprocess.run([*argv, "--image", f"{layout}:{tag}", str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(
            f"{layout}: umoci cannot unpack it: {proc.stderr.strip()[-300:]}", hint="is it an image?"
        )
    return dest


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / hex_of(digest)).read_bytes()


def _partial(layout: Path, manifest: dict[str, Any], config: dict[str, Any], top: int, tag: str) -> None:
    """Tag in ``layout`` an image made of the first ``top + 1`` layers (for unpacking a chain or a layer)."""
    cfg = dict(config, rootfs={"type": "layers", "diff_ids": config["rootfs"]["diff_ids"][: top + 1]})
    cfg_bytes = canonical(cfg)
    m = dict(manifest, layers=manifest["layers"][: top + 1])
    m["config"] = dict(manifest["config"], digest=digest_of(cfg_bytes), size=len(cfg_bytes))
    m_bytes = canonical(m)
    for data in (cfg_bytes, m_bytes):
        (layout / "blobs" / "sha256" / hex_of(digest_of(data))).write_bytes(data)
    index = json.loads((layout / "index.json").read_text())
    entry = {"mediaType": m.get("mediaType", "application/vnd.oci.image.manifest.v1+json"),
             "digest": digest_of(m_bytes), "size": len(m_bytes),
             "annotations": {"org.opencontainers.image.ref.name": tag}}  # fmt: skip
    index["manifests"].append(entry)
    (layout / "index.json").write_text(json.dumps(index))


#: Docker's own limit; each layer is unpacked twice (alone and as a chain)
MAX_LAYERS = 127
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def image_parts(w: Wish, tag: str, manifest_bytes: bytes, config_bytes: bytes) -> ImageParts:
    """The registry's manifest and config as ``ImageParts``, every field the hub uses checked (they
    name paths in the hub and ImageSpec fields): one BuildError naming the image, never a KeyError."""
    where = f"{w.registry}/{w.repository}:{tag}"
    try:
        manifest = json.loads(manifest_bytes)
        config = json.loads(config_bytes)
        layers = manifest["layers"]
        diff_ids = config["rootfs"]["diff_ids"]
        if not isinstance(layers, list) or not isinstance(diff_ids, list) or len(layers) != len(diff_ids):
            raise ValueError("the manifest's layers and the config's diff_ids do not pair up")
        if not 0 < len(layers) <= MAX_LAYERS:
            raise ValueError(f"{len(layers)} layers (1 to {MAX_LAYERS} can be ingested)")
        for layer, diff in zip(layers, diff_ids, strict=True):
            digest, size = layer["digest"], layer["size"]
            if not (isinstance(digest, str) and _DIGEST.match(digest) and isinstance(diff, str)):
                raise ValueError(f"layer digest {digest!r:.80} / diff_id {diff!r:.80} is not sha256:<hex>")
            if type(size) is not int or size < 0:
                raise ValueError(f"layer {digest} has size {size!r:.40}")
        files = [
            LayerFile(LayerResult(diff, 0, layer["digest"], layer["size"]), None, None)
            for layer, diff in zip(layers, diff_ids, strict=True)
        ]
        parts = ImageParts(_spec(w, tag, config), tuple(files), config_bytes, manifest_bytes)
        if parts.config_digest != manifest["config"]["digest"]:
            raise ValueError("the config does not match its digest")
    except BuildError as e:
        raise BuildError(f"{where}: {e.message}", hint=e.hint or "") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        what = f"no {e}" if isinstance(e, KeyError) else str(e)
        raise BuildError(
            f"{where}: not an image the hub can take: {what}"[:400],
            hint="the registry's manifest or config is damaged or hostile",
        ) from None
    return parts


def _spec(w: Wish, tag: str, config: dict[str, Any]) -> ImageSpec:
    c = config.get("config") or {}
    created = config.get("created") or "1970-01-01T00:00:00Z"
    stamp = int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    env = dict(e.split("=", 1) for e in c.get("Env") or [] if "=" in e)
    texts = [*env.values(), *(c.get("Entrypoint") or ()), *(c.get("Cmd") or ()), c.get("WorkingDir") or "/"]
    labels = dict(c.get("Labels") or {})
    if not all(
        isinstance(v, str) for v in [*texts, *labels, *labels.values(), config.get("architecture", "")]
    ):
        raise ValueError("a config field that is text holds something else")
    return ImageSpec(
        registry=w.registry,
        repository=w.repository,
        tag=tag,
        created=stamp,
        entrypoint=tuple(c.get("Entrypoint") or ()),
        cmd=tuple(c.get("Cmd") or ()),
        env=env,
        labels=labels,
        architecture=config.get("architecture", "amd64"),
        working_dir=c.get("WorkingDir") or "/",
    )


def ingest_image(
    w: Wish,
    tag: str,
    publish: Callable[[ImageParts, ImageTrees], Artifact],
    *,
    opts: RegistryOptions,
    work: Path,
) -> Artifact:
    layout = pull(f"{w.registry}/{w.repository}:{tag}", work / "image.oci", opts=opts)
    index = json.loads((layout / "index.json").read_text())
    manifest_bytes = _blob(layout, index["manifests"][0]["digest"])
    manifest = json.loads(manifest_bytes)
    config_bytes = _blob(layout, manifest["config"]["digest"])
    parts = image_parts(w, tag, manifest_bytes, config_bytes)
    config = json.loads(config_bytes)
    layers = manifest["layers"]
    diff_ids = config["rootfs"]["diff_ids"]
    chains, alone = [], []
    for k in range(len(layers)):
        _partial(layout, manifest, config, k, f"chain{k}")
        chains.append(LocalTree(_umoci(layout, f"chain{k}", work / f"chain{k}")))
        one = dict(manifest, layers=[layers[k]])
        _partial(
            layout, one, dict(config, rootfs={"type": "layers", "diff_ids": [diff_ids[k]]}), 0, f"layer{k}"
        )
        alone.append(LocalTree(_umoci(layout, f"layer{k}", work / f"layer{k}")))
    return publish(parts, ImageTrees(chains[-1], alone, chains))


def ingest(
    wishes: Sequence[str],
    publish: Callable[[ImageParts, ImageTrees], Artifact],
    *,
    opts: RegistryOptions,
    scratch: Path | None = None,
) -> list[Artifact]:
    """Ingest every image the ``wishes`` name; returns one artifact per image (``unchanged`` when
    the hub had it)."""
    out: list[Artifact] = []
    for text in wishes:
        w = Wish.parse(text)
        tags = w.expand(opts)
        if not tags:
            raise BuildError(
                f"{text}: no tag of {w.registry}/{w.repository} matches", hint="list them: skopeo list-tags"
            )
        for tag in tags:
            work = Path(tempfile.mkdtemp(prefix="cernvm-ingest-", dir=scratch))
            try:
                out.append(ingest_image(w, tag, publish, opts=opts, work=work))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return out
