"""Publish an image into a CernVM-FS hub in DUCC's ``unpacked.cern.ch`` layout.

For an image with compressed layer digest ``d`` and config digest ``c``, published as
``<registry>/<repository>:<tag>``::

    /.layers/<d[0:2]>/<d>/layerfs/            the unpacked layer (its own nested catalog)
    /.layers/<d[0:2]>/<d>/.metadata/          origin.json (config digests using it), layers.json
    /.flat/<c[0:2]>/<c>/                      the flat root for Apptainer: tree + .singularity.d + /dev
    /<registry>/<repository>:<tag>            relative symlink to ../…/.flat/<c[0:2]>/<c>
    /.metadata/<registry>/<repository>:<tag>/manifest.json   the image manifest: the marker

Each part is one publish (the publisher replaces exactly one subtree per revision and keeps the rest
of the hub), in an order that keeps every revision consistent: layer, flat root, public link, and
the marker last. Before anything, the marker is read back: if it names the same config digest the
image is already there and nothing is written. A part already present (a layer shared with another
image, a flat root from an interrupted run) is not written again, so a re-run finishes the job.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

from .. import utcdate
from ..artifact import Artifact
from ..cvmfs.keys import KeySet, load_keys
from ..cvmfs.parts import CopyPart, Part, RemovePart, TarPart
from ..cvmfs.publish import publish_parts
from ..cvmfs.repository import Repository, open_repository
from ..errors import BuildError, CernVMError
from ..fsutil import locked_scratch, reraise_naming
from .apptainer import scaffold_tree
from .hub_store import (
    STORE,
    chain_dir,
    chain_ids,
    flat_layer_id,
    image_files,
    image_id,
    image_record,
    layer_record,
    link_id,
    merged,
)
from .image import canonical, hex_of, tags_of
from .layer import LayerResult, write_layer
from .layering import ImageTrees, LayerTar, whiteout_of
from .layers import LayerFile
from .oci import ImageParts
from .source import (
    FILE,
    SYMLINK,
    Entry,
    MemoryTree,
    TreeSource,
    memory_file,
)
from .thin import layer_path

log = logging.getLogger(__name__)

CATALOG_MARKER = ".cvmfscatalog"

#: publishes an image into the hub: (parts, its trees) -> artifact
Publish = Callable[[ImageParts, ImageTrees], Artifact]


def layer_dir(digest: str) -> str:
    d = hex_of(digest)
    return f"/.layers/{d[:2]}/{d}"


def flat_dir(config_digest: str) -> str:
    c = hex_of(config_digest)
    return f"/.flat/{c[:2]}/{c}"


def public_path(parts: ImageParts) -> str:
    return f"/{parts.spec.registry}/{parts.spec.repository}:{parts.spec.tag}"


def marker_path(parts: ImageParts) -> str:
    return f"/.metadata/{parts.spec.registry}/{parts.spec.repository}:{parts.spec.tag}/manifest.json"


def link_target(parts: ImageParts) -> str:
    """The public name's relative symlink, e.g. ``../../.flat/ab/<c>`` for ``reg/lib/img:tag``."""
    depth = public_path(parts).count("/") - 1
    return "../" * depth + flat_dir(parts.config_digest).lstrip("/")


def _open_hub(stratum: Path, keys: KeySet) -> Repository:
    try:
        return open_repository(stratum, fqrn=keys.fqrn, public_keys=[keys.public_key_pem])
    except CernVMError as e:
        raise BuildError(
            f"{stratum}: cannot open the hub repository {keys.fqrn}: {e.message}",
            hint=f"create it first with 'cernvm-build cvmfs create {stratum} --fqrn {keys.fqrn} --keys DIR'",
        ) from e


def _read_json(repo: Repository, path: str) -> object | None:
    entry = repo.lookup(path)
    if entry is None or not entry.is_file:
        return None
    try:
        data: object = json.loads(repo.read_bytes(entry))
        return data
    except ValueError:
        return None


def _tar(source: TreeSource, files: ExitStack, work: Path, mtime: int | None) -> BinaryIO:
    """``source`` as a tar in a scratch file (closed when the publish is over)."""
    f = files.enter_context(tempfile.TemporaryFile(dir=work))  # noqa: SIM115 (closed by the stack)
    try:
        write_layer(source, raw_out=f, mtime=mtime)
    except OSError as e:  # a full disk under the hub: "No space left on device" named no file
        reraise_naming(e, work)
    f.seek(0)
    return f


def _layer_tar(layer: TreeSource | LayerTar, files: ExitStack, work: Path) -> BinaryIO:
    if isinstance(layer, LayerTar):
        return files.enter_context(open(layer.path, "rb"))
    return _tar(layer, files, work, None)


def publish_image(
    stratum: Path, keys: KeySet, parts: ImageParts, trees: ImageTrees, *, work: Path
) -> Artifact:
    """Publish ``parts`` into the hub in one revision; nothing is written if it is there, and a
    layer, chain or flat root already there is not written again (content addressed)."""
    manifest = json.loads(parts.manifest)
    digests = [_digest(f) for f in parts.layers]
    chains = chain_ids(digests)
    repo = _open_hub(stratum, keys)
    try:
        marker = _read_json(repo, marker_path(parts))
        same = isinstance(marker, dict) and marker.get("config", {}).get("digest") == parts.config_digest
        revision = repo.revision
        if same:
            return _artifact(stratum, parts, revision, published=[], unchanged=True)
        fdir = flat_dir(parts.config_digest)
        # a layer is there once its metadata is (written after its layerfs)
        origins = [_read_json(repo, layer_dir(d) + "/.metadata/origin.json") for d in digests]
        have = {
            p
            for p in [fdir, *(chain_dir(c) for c in chains), "/.layers"]
            if repo.lookup(p + "/" + CATALOG_MARKER) is not None
        }
        link = repo.lookup(public_path(parts))
        have_link = link is not None and link.is_symlink and link.symlink == link_target(parts)
        images_json = _read_json(repo, f"{STORE}/overlay-images/images.json")
        layers_json = _read_json(repo, f"{STORE}/overlay-layers/layers.json")
    finally:
        repo.close()

    published: list[str] = []
    ops: list[Part] = []
    cfg = parts.config_digest
    ts = parts.spec.created
    with ExitStack() as files:
        if "/.layers" not in have:
            ops.append(TarPart("/.layers/" + CATALOG_MARKER, _tar(_single(b"", ts), files, work, ts)))
        done: set[str] = set()
        for layer, origin, layer_tree in zip(parts.layers, origins, trees.layers, strict=True):
            ldir = layer_dir(_digest(layer))
            if ldir in done:
                continue
            done.add(ldir)
            had = origin.get("origin", []) if isinstance(origin, dict) else []
            now = sorted({*had, cfg})
            if origin is None:
                ops += _layer_parts(
                    layer.result, _layer_tar(layer_tree, files, work), now, ldir, files, work, ts
                )
                if isinstance(layer_tree, LayerTar):  # the layer alone keeps no whiteout entries
                    ops += [RemovePart(f"{ldir}/layerfs/{p}") for p in layer_tree.whiteouts]
                published.append(ldir)
            elif cfg not in had:
                data = canonical({"origin": now})
                ops.append(TarPart(ldir + "/.metadata/origin.json", _tar(_single(data, ts), files, work, ts)))
                published.append(ldir + "/.metadata/origin.json")
        # chain k = chain k-1 (copied: catalog rows only), the layer's whiteouts, layer k over it
        for k, chain in enumerate(chains):
            cdir = chain_dir(chain)
            if cdir in have:
                continue
            layerfs = layer_dir(digests[k]) + "/layerfs"
            if k == 0:
                ops.append(CopyPart(layerfs, cdir))
            else:
                ops.append(CopyPart(chain_dir(chains[k - 1]), cdir))
                layer_tree = trees.layers[k]
                if isinstance(layer_tree, LayerTar):
                    ops += _applied_whiteouts(cdir, layer_tree.whiteouts)
                ops.append(CopyPart(layerfs, cdir, over=True))
            published.append(cdir)
        if fdir not in have:
            scaffold = scaffold_tree(parts.spec, mtime=ts, present=trees.names())
            ops.append(CopyPart(chain_dir(chains[-1]), fdir))
            ops.append(TarPart(fdir, _tar(scaffold, files, work, None), over=True))
            published.append(fdir)
        store, store_published = _store_parts(parts, images_json, layers_json)
        for path, tree in store:
            ops.append(TarPart(path, _tar(tree, files, work, ts)))
        published += store_published
        if not have_link:
            ops.append(
                TarPart(public_path(parts), _tar(_single_link(link_target(parts), ts), files, work, ts))
            )
            published.append(public_path(parts))
        marker_dir = marker_path(parts).rsplit("/", 1)[0]
        mtree = MemoryTree("marker", [memory_file("manifest.json", canonical(manifest), mtime=ts)])
        ops.append(TarPart(marker_dir, _tar(mtree, files, work, ts)))
        published.append(marker_path(parts))
        res = publish_parts(stratum, keys.fqrn, keys, ops)
    for w in res.warnings:
        log.warning("%s: %s", public_path(parts), w)
    return _artifact(stratum, parts, res.revision, published=published, unchanged=False)


def _applied_whiteouts(chain: str, whiteouts: Sequence[str]) -> list[Part]:
    """What a layer's whiteout entries remove from the chain below it: ``d/.wh.NAME`` removes
    ``d/NAME``, ``d/.wh..wh..opq`` everything in ``d`` (the layer's own entries come after)."""
    out: list[Part] = []
    for w in whiteouts:  # checked when read (``ingest.scan_layer``, ``verify`` for a parent)
        parent, target = whiteout_of(w)
        where = f"{chain}/{parent}" if parent else chain
        out.append(
            RemovePart(where, children_only=True) if target is None else RemovePart(f"{where}/{target}")
        )
    return out


def _store_parts(
    parts: ImageParts, images_json: object, layers_json: object
) -> tuple[list[tuple[str, TreeSource]], list[str]]:
    """The image in ``podmanStore/``: its one layer (a link to the flat root), its metadata, and
    the store's image and layer lists (one revision: podman sees all of it or none); and the paths
    to report as published."""
    ts = parts.spec.created
    layer_id = flat_layer_id(parts)
    short = link_id(layer_id)
    ldir = f"{STORE}/overlay/{layer_id}"
    diff = "../../../" + flat_dir(parts.config_digest).lstrip("/")
    layer_tree = MemoryTree(
        ldir,
        [
            (Entry(path="diff", kind=SYMLINK, mode=0o777, mtime=ts, target=diff), b""),
            memory_file("link", short.encode(), mtime=ts),
        ],
    )
    size = sum(f.result.size for f in parts.layers)
    layers_data = merged(layers_json, layer_record(layer_id, parts.spec.created_iso, size))
    steps: list[tuple[str, TreeSource]] = [
        (ldir, layer_tree),
        (f"{STORE}/overlay/l/{short}", _single_link(f"../{layer_id}/diff", ts)),
        (f"{STORE}/overlay-layers/layers.json", _single(layers_data, ts)),
        (f"{STORE}/overlay-layers/layers.lock", _single(b"", ts)),
        (f"{STORE}/overlay-images/images.lock", _single(b"", ts)),
    ]
    idir = f"{STORE}/overlay-images/{image_id(parts)}"
    files = sorted(image_files(parts).items())
    steps.append((idir, MemoryTree(idir, [memory_file(n, d, mtime=ts) for n, d in files])))
    names = [f"{parts.spec.name}:{t}" for t in tags_of(parts.spec)]
    images_data = merged(images_json, image_record(parts, layer_id, names), names=True)
    images = f"{STORE}/overlay-images/images.json"
    steps.append((images, _single(images_data, ts)))
    return steps, [ldir, idir, images]


def _single(data: bytes, ts: int) -> MemoryTree:
    return MemoryTree("file", [(_single_file(data, ts), data)])


def _single_link(target: str, ts: int) -> MemoryTree:
    return MemoryTree("link", [(Entry(path=".", kind=SYMLINK, mode=0o777, mtime=ts, target=target), b"")])


def _digest(layer: LayerFile) -> str:
    assert layer.result.digest is not None, "hub layers are the gzip blobs"
    return layer.result.digest


def _layer_parts(
    layer: LayerResult,
    layerfs: BinaryIO,
    origins: list[str],
    ldir: str,
    files: ExitStack,
    work: Path,
    ts: int,
) -> list[Part]:
    """``ldir/layerfs`` (the layer's tar, with a nested-catalog marker of its own) and
    ``ldir/.metadata`` (written after it, so a layer counts as there once its metadata is)."""
    assert layer.digest is not None
    layers_json = canonical(
        [
            {
                "id": layer.diff_id,
                "compressed-diff-digest": layer.digest,
                "diff-digest": layer.diff_id,
                "diff-size": layer.size,
                "created": utcdate.text(ts),
            }
        ]
    )
    meta = MemoryTree(
        "layer metadata",
        [
            memory_file("layers.json", layers_json, mtime=ts),
            memory_file("origin.json", canonical({"origin": origins}), mtime=ts),
        ],
    )
    return [
        TarPart(ldir + "/layerfs", layerfs),
        TarPart(ldir + "/layerfs/" + CATALOG_MARKER, _tar(_single(b"", ts), files, work, ts)),
        TarPart(ldir + "/.metadata", _tar(meta, files, work, ts)),
    ]


def _single_file(data: bytes, ts: int) -> Entry:
    return Entry(path=".", kind=FILE, mode=0o644, size=len(data), mtime=ts)


def _artifact(
    stratum: Path, parts: ImageParts, revision: int, *, published: list[str], unchanged: bool
) -> Artifact:
    return Artifact(
        path=stratum,
        format="cvmfs",
        sha256=hex_of(parts.manifest_digest),
        size=0,
        meta={
            "public_path": public_path(parts),
            "flat": flat_dir(parts.config_digest),
            "layers": ["/" + layer_path(_digest(f)) for f in parts.layers],
            "chains": [chain_dir(c) for c in chain_ids([_digest(f) for f in parts.layers])],
            "podman_store": STORE,
            "revision": revision,
            "unchanged": unchanged,
            "published": published,
        },
    )


def publisher(*, stratum: Path, fqrn: str, keys_dir: Path) -> Publish:
    """The ``publish`` callback of a BuildRequest for the ``cvmfs`` format."""
    keys = load_keys(keys_dir, fqrn)
    # before any layer is built: a hub that is not there (its folder neither) was a traceback from the
    # scratch folder beside it, after the whole image had been read
    with _open_hub(stratum, keys):
        pass

    def publish(parts: ImageParts, trees: ImageTrees) -> Artifact:
        with locked_scratch(stratum.parent, ".hub-") as work:  # a killed run's is removed by the next
            return publish_image(stratum, keys, parts, trees, work=work)

    return publish
