"""An image built on top of an earlier one (``container build --parent IMAGE``): a build history.

A cut along the tree (``layering.py``) cannot make a one-package change one layer: the package's
files and the package database lie in different subtrees. A history can: the new image is the
parent's layers, reused byte for byte (same blobs, same diff_ids), plus one *delta* layer with
every entry that is new or differs from the parent's tree (content, type, mode, owner, target,
xattrs, mtime under the image's rule, device numbers, hard-link group) and an OCI whiteout for
every entry that is gone (``D/.wh.NAME``; ``D/.wh..wh..opq`` when none of D's entries is left).

The delta is a tree of its own: the directories above a changed entry come with their real
metadata (what the unpacked image shows), a directory's whiteouts right after it, before any of its
entries (so ``.wh.X`` then a new ``X`` of another type is a replacement in every engine); a
hard-link group with one member changed is written whole (links never point into a lower layer).
Same inputs, same bytes: the tree's order, fixed whiteout metadata, ``pgzip``.

The parent is read and checked first (every digest and diff_id, its labels name the same
repository path, the same mtime rule and architecture) and refused otherwise. A chain of deltas
carries dead bytes (what later deltas replaced), so it is bounded: a parent with ``MAX_DELTAS``
deltas, an image over ``MAX_LAYERS`` layers, or a delta heavier than ``MAX_DELTA_SHARE`` of the
parent's blobs makes the build start over with the tree cut (``ParentUse.why`` says which).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from ..cvmfs.tar_limits import members as tar_members
from ..cvmfs.tar_limits import open_file
from ..errors import BuildError
from ..tarwrite import TarWriter, skip_reason
from ..tree import BLOCK, CHAR, DIR, FILE, SYMLINK, Entry, TreeReport, TreeSource, bad_path
from .image import (
    LABEL_MTIMES,
    LABEL_PATH,
    LABEL_REPOSITORY,
    LABEL_REVISION,
    MT_LAYER_GZIP,
    ImageSpec,
    hex_of,
)
from .layer import LayerResult
from .layering import MAX_LAYERS, OPAQUE, WHITEOUT, LayerTar
from .layers import HashedFile, LayerFile, layer_file
from .verify import ImageContents, Node, read_image

MAX_DELTAS = 16  # delta layers over the last tree cut
MAX_DELTA_SHARE = 0.25  # a delta heavier than this share of the parent's blobs: cut the tree again
DELTA = "cernvm-build delta"  # how the history names a delta layer (counted in a parent)
_READ = 1 << 20
_HINT = "give an OCI layout or archive built by 'cernvm-build container' from the same repository path"


@dataclass(frozen=True)
class Parent:
    """A checked parent image: its layers (blobs in the work folder or its layout), their history
    and whiteouts, and its tree as the layers give it."""

    layers: tuple[LayerFile, ...]
    created_by: tuple[str, ...]
    whiteouts: tuple[tuple[str, ...], ...]
    nodes: dict[str, Node]
    deltas: int
    label: str  # the parent's revision, for the history (not its file name: the same bytes anywhere)

    @property
    def blob_bytes(self) -> int:
        return sum(f.result.compressed_size for f in self.layers)


@dataclass
class ParentUse:
    """What ``--parent`` did: the delta's figures, or why the tree was cut instead."""

    parent: str
    used: bool
    why: str = ""
    reused_layers: int = 0
    reused_bytes: int = 0
    delta_bytes: int = 0
    changed: int = 0
    removed: int = 0

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)

    def summary(self) -> str:
        if not self.used:
            return f"parent {self.parent} not used ({self.why}): layers cut along the tree"
        if not self.delta_bytes:
            return (
                f"on parent {self.parent}: its {self.reused_layers} layers, nothing changed (no delta layer)"
            )
        return (
            f"on parent {self.parent}: {self.reused_layers} layers reused ({_size(self.reused_bytes)}),"
            f" one delta layer of {_size(self.delta_bytes)} ({self.changed} new or changed,"
            f" {self.removed} removed)"
        )


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _refuse(path: Path, why: str, hint: str = _HINT) -> BuildError:
    return BuildError(f"--parent {path}: {why}", hint=hint)


def check_parent(path: Path) -> None:
    """Before the repository is contacted: ``path`` is an OCI image at all (its JSON documents only; the
    rest is checked against the image being built by ``open_parent``). A parent that was no image was
    found only after the snapshot was opened: offline, the error was the network's (rv34a)."""
    try:
        contents = read_image(path, layers=False)
    except BuildError as e:
        raise BuildError(f"--parent {e.message}", hint=_HINT) from None  # (a docker-archive will not do)
    _check_kind(path, contents)


def _check_kind(path: Path, contents: ImageContents) -> tuple[dict[str, Any], dict[str, Any]]:
    """The image's manifest and config, which an OCI image has."""
    if contents.kind not in ("oci", "oci-archive") or contents.manifest is None or contents.config is None:
        raise _refuse(path, f"is a {contents.kind}, not an OCI image")
    return contents.manifest, contents.config


def open_parent(path: Path, spec: ImageSpec, work: Path, *, mtimes: str, raw: bool) -> Parent:
    """Read and check ``path`` (OCI layout or archive) for an image ``spec`` whose mtimes are
    ``mtimes`` (the label's value); its blobs are placed in ``work`` (an archive's) or used where
    they are (a layout's); ``raw`` also unpacks each to a plain tar (the docker-archive's layers)."""
    if not path.exists():
        raise _refuse(path, "does not exist", "check the path")
    contents = read_image(path)
    manifest, config = _check_kind(path, contents)
    if contents.integrity:
        first = contents.integrity[0]
        raise _refuse(
            path,
            f"is damaged: {first}",
            "rebuild the parent, or build without --parent (the layers are then cut along the tree)",
        )
    labels = contents.labels
    for key in (LABEL_REPOSITORY, LABEL_PATH):
        mine, theirs = spec.labels.get(key, ""), labels.get(key)
        if theirs is None:
            raise _refuse(path, f"has no {key} label (not made by cernvm-build)")
        if theirs != mine:
            raise _refuse(path, f"is an image of {key}={theirs}, not {mine}")
    if labels.get(LABEL_MTIMES) != mtimes:
        raise _refuse(
            path,
            f"has mtimes {labels.get(LABEL_MTIMES)!r}, this build {mtimes!r}",
            "build both with or both without --keep-mtimes",
        )
    if config.get("architecture") != spec.architecture:
        raise _refuse(path, f"is for {config.get('architecture')}, not {spec.architecture}")
    for p in contents.nodes:  # its paths become whiteout names: each must be a path in a tree
        why = bad_path(p)
        if why is not None:
            raise _refuse(path, f"has a member {p!r:.200} that is not a path in a tree ({why})")
    descs = manifest["layers"]
    if any(d.get("mediaType") != MT_LAYER_GZIP for d in descs):
        raise _refuse(path, "has layers that are not tar+gzip")
    try:  # the digests match, but whoever made them match may have written anything
        history = [
            str(h.get("created_by", "")) for h in config.get("history", []) if not h.get("empty_layer")
        ]
        sizes = [d["size"] for d in descs]
        if not all(type(n) is int and n >= 0 for n in sizes):
            raise ValueError(f"a layer's size is not a number of bytes: {sizes!r:.80}")
    except (AttributeError, TypeError, KeyError, ValueError) as e:
        what = f"no {e}" if isinstance(e, KeyError) else str(e)
        raise _refuse(path, f"has malformed metadata ({what})") from None
    if len(history) != len(descs):
        history = [""] * len(descs)
    blobs = _place_blobs(path, [d["digest"] for d in descs], work)
    layers: list[LayerFile] = []
    diff_ids = config["rootfs"]["diff_ids"]
    for i, (desc, diff_id) in enumerate(zip(descs, diff_ids, strict=True)):
        res = LayerResult(diff_id=diff_id, size=contents.layer_sizes[i], digest=desc["digest"],
                          compressed_size=sizes[i])  # fmt: skip
        gz = blobs[desc["digest"]]
        rawp = None
        if raw:
            rawp = work / f"parent-{i}.tar"
            with gzip.open(gz, "rb") as src, open(rawp, "wb") as dst:
                shutil.copyfileobj(src, dst, _READ)
        layers.append(LayerFile(res, rawp, gz, ("parent",), -1))
    deltas = 0
    for by in reversed(history):  # deltas since the last tree cut
        if not by.startswith(DELTA):
            break
        deltas += 1
    return Parent(
        layers=tuple(layers),
        created_by=tuple(history),
        whiteouts=tuple(contents.layer_whiteouts),
        nodes=contents.nodes,
        deltas=deltas,
        label=f"r{labels.get(LABEL_REVISION, '?')}",
    )


def _place_blobs(path: Path, digests: list[str], work: Path) -> dict[str, Path]:
    """Blob digest -> a file with its bytes: the layout's own, or extracted from the archive (its
    digest checked again: the archive was read once already, and could have changed since)."""
    if path.is_dir():
        return {d: path / "blobs" / "sha256" / hex_of(d) for d in digests}
    out: dict[str, Path] = {}
    with open_file(path) as tar:
        tar_members(tar, str(path))  # checked as read: a backward PAX size would loop extractfile's walk
        for d in dict.fromkeys(digests):
            dest = work / f"parent-{hex_of(d)}.tar.gz"
            src = tar.extractfile(f"blobs/sha256/{hex_of(d)}")
            if src is None:
                raise _refuse(path, f"blob {d} is missing")
            h = hashlib.sha256()
            with src, open(dest, "wb") as f:
                while block := src.read(_READ):
                    h.update(block)
                    f.write(block)
            if "sha256:" + h.hexdigest() != d:
                raise _refuse(path, f"blob {d} changed while it was read", "run the command again")
            out[d] = dest
    return out


def too_deep(parent: Parent) -> str | None:
    """Why a delta on ``parent`` would make the chain too long, or None."""
    if parent.deltas >= MAX_DELTAS:
        return f"it has {parent.deltas} delta layers, the most a chain may have"
    if len(parent.layers) + 1 > MAX_LAYERS:
        return f"it has {len(parent.layers)} layers; one more is over {MAX_LAYERS}"
    return None


def _parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def _differs(e: Entry, node: Node, source: TreeSource | None) -> bool:
    """Whether ``e`` is not ``node``; its content is read from ``source`` when the rest matches (None:
    a later member of a link group, whose content is the first member's, compared there)."""
    if node.kind != e.kind or (node.uid, node.gid) != (e.uid, e.gid) or dict(e.xattrs) != node.xattrs:
        return True
    if (node.mtime, node.mtime_nsec) != (e.mtime, e.mtime_nsec):
        return True
    if e.kind == SYMLINK:
        return node.target != e.target
    if node.mode != e.mode or (e.kind in (CHAR, BLOCK) and node.rdev != tuple(e.rdev)):
        return True
    if e.kind == FILE:
        if node.size != e.size:
            return True
        if source is None:
            return False
        h = hashlib.sha256()
        if e.size:
            with source.open(e) as f:
                while block := f.read(_READ):
                    h.update(block)
        return node.sha256 != h.hexdigest()
    return False


@dataclass
class _Changes:
    changed: set[str] = field(default_factory=set)  # new paths written to the delta
    whiteouts: dict[str, list[str]] = field(default_factory=dict)  # directory -> whiteout names
    removed: int = 0


def _changes(
    source: TreeSource, parent: Parent, report: TreeReport, progress: Callable[[int], None] | None
) -> _Changes:
    """What the delta holds, from one pass over ``source`` (file contents hashed where the metadata
    match) against the parent's nodes."""
    nodes = parent.nodes
    out = _Changes()
    present: set[str] = set()  # parent paths the tree still has, with the same type
    retyped: set[str] = set()
    groups: dict[object, list[str]] = {}
    for e in source.entries():
        reason = skip_reason(e)
        if reason is not None:
            report.skip(e.path, reason)
            continue
        if e.name.startswith(WHITEOUT):
            raise BuildError(
                f"{source.description}: {e.path!r}: a name starting with {WHITEOUT} is a whiteout in a layer",
                hint="build without --parent (the tree cut carries it, though engines will read a whiteout)",
            )
        report.note(e)
        node = nodes.get(e.path)
        if node is not None and node.kind != e.kind:
            retyped.add(e.path)
        elif node is not None:
            present.add(e.path)
        later = False  # a link group's later member: its content is the first's (read once)
        if e.kind == FILE and e.link_id is not None:
            members = groups.setdefault(e.link_id, [])
            members.append(e.path)
            later = len(members) > 1
            if node is not None and node.inode != members[0]:
                out.changed.add(e.path)
        elif e.kind == FILE and node is not None and node.inode != e.path:
            out.changed.add(e.path)  # was hard-linked, is not any more
        if node is None or _differs(e, node, None if later else source):
            out.changed.add(e.path)
        if progress is not None and e.kind == FILE and not later:
            progress(e.size)  # a link group's content once, as the total counts it
    # a link group is written whole when any member changed or the group is not the parent's
    lower_groups: dict[str, set[str]] = {}
    for p, n in nodes.items():
        if n.kind == FILE and n.inode != p:
            lower_groups.setdefault(n.inode, {n.inode}).add(p)
    for members in groups.values():
        lower = lower_groups.get(members[0], {members[0]})
        if any(m in out.changed for m in members) or lower != set(members):
            out.changed.update(members)
    # what is gone: a whiteout for the topmost gone path (and for a retyped one), or an opaque
    # whiteout for a directory none of whose entries is left
    children: dict[str, int] = {}
    gone_in: dict[str, list[str]] = {}
    for p in nodes:
        up = _parent_of(p)
        children[up] = children.get(up, 0) + 1
        if p not in present and p not in retyped:
            out.removed += 1
            if up == "" or up in present:
                gone_in.setdefault(up, []).append(p.rpartition("/")[2])
    for d, names in gone_in.items():
        if len(names) == children[d] and len(names) > 1:
            out.whiteouts[d] = [OPAQUE]
        else:
            out.whiteouts[d] = [WHITEOUT + n for n in names]
    for p in retyped:
        d, _, name = p.rpartition("/")
        if OPAQUE not in out.whiteouts.get(d, []):
            out.whiteouts.setdefault(d, []).append(WHITEOUT + name)
    for d in out.whiteouts:
        out.whiteouts[d] = sorted(set(out.whiteouts[d]), key=lambda n: n.encode("utf-8", "surrogateescape"))
    return out


def _whiteout(directory: str, name: str) -> Entry:
    return Entry(path=f"{directory}/{name}" if directory else name, kind=FILE, mode=0o644)


def _delta_entries(source: TreeSource, ch: _Changes) -> Iterator[Entry]:
    """The delta as a tree: changed entries, the directories above them, whiteouts after their
    directory."""
    yield from (_whiteout("", n) for n in ch.whiteouts.get("", []))
    stack: list[tuple[Entry, bool]] = []  # the open directories above the current entry: emitted?
    for e in source.entries():
        if skip_reason(e) is not None:
            continue
        while stack and not e.path.startswith(stack[-1][0].path + "/"):
            stack.pop()
        wanted = e.path in ch.changed or (e.kind == DIR and e.path in ch.whiteouts)
        if wanted:
            for i, (d, done) in enumerate(stack):
                if not done:
                    yield d
                    stack[i] = (d, True)
            yield e
            if e.kind == DIR:
                yield from (_whiteout(e.path, n) for n in ch.whiteouts.get(e.path, []))
        if e.kind == DIR:
            stack.append((e, wanted))


def _empty(_: Entry) -> BinaryIO:
    return io.BytesIO(b"")


@dataclass(frozen=True)
class Delta:
    layer: LayerFile | None  # None: nothing changed
    whiteouts: tuple[str, ...]
    changed: int
    removed: int

    @property
    def bytes(self) -> int:
        """The compressed delta layer's size (0: no layer)."""
        return self.layer.result.compressed_size if self.layer is not None else 0


def too_big(delta: Delta, parent: Parent) -> str | None:
    """Why ``delta`` is too heavy a layer over ``parent`` (the tree is cut instead), or None."""
    if delta.bytes > MAX_DELTA_SHARE * parent.blob_bytes:
        return (
            f"the delta, {delta.bytes / 1e6:.1f} MB, is over {MAX_DELTA_SHARE:.0%} of its "
            f"{parent.blob_bytes / 1e6:.1f} MB of layers"
        )
    return None


def write_delta(
    source: TreeSource,
    parent: Parent,
    work: Path,
    *,
    raw: bool,
    progress: Callable[[int], None] | None = None,
    report: TreeReport | None = None,
) -> Delta:
    """The delta layer of ``source`` over ``parent`` in ``work`` (gzip always: the parent's blobs
    are; the plain tar kept when ``raw``)."""
    report = report if report is not None else TreeReport()
    ch = _changes(source, parent, report, progress)
    wh = tuple(f"{d}/{n}" if d else n for d, names in sorted(ch.whiteouts.items()) for n in names)
    if not ch.changed and not wh:
        return Delta(None, (), 0, 0)
    rawp = work / "delta.tar"
    with open(rawp, "wb") as f:
        out = HashedFile(f)
        # the report was made by the pass over the whole tree
        where = source.description
        tar = TarWriter(out.write, mtime=None, where=where, error=BuildError, report=TreeReport())
        names = set(wh)
        for e in _delta_entries(source, ch):
            tar.add(e, _empty if e.path in names else source.open)
        tar.end()
    layer = layer_file(tar, out, rawp, gzip=True, report=report, keys=("delta",))
    if not raw:
        rawp.unlink()
        layer = replace(layer, raw=None)
    return Delta(layer, wh, len(ch.changed), ch.removed)


def created_by(delta: Delta, parent: Parent) -> str:
    return f"{DELTA} over {parent.label}: {delta.changed} new or changed, {delta.removed} removed"


def layer_tars(parent: Parent, delta: Delta) -> list[LayerTar]:
    """The image's layers as the hub publishes them: blobs and their whiteouts."""
    out = []
    for f, wh in zip(parent.layers, parent.whiteouts, strict=True):
        assert f.gz is not None
        out.append(LayerTar(f.gz, wh))
    if delta.layer is not None:
        assert delta.layer.gz is not None
        out.append(LayerTar(delta.layer.gz, delta.whiteouts))
    return out
