"""``hub ingest``: images from a registry, published unpacked into the hub as DUCC does.

For each wished image (``host[:port]/repo:tag``; ``*``/``?`` in the tag match the registry's tags,
e.g. ``library/python:3.*``) the registry's manifest is read first: a manifest list (OCI index) is
checked and every platform's image ingested (``manifest_list.py`` says under which names). The
image (all of them, for a list) is copied into a scratch OCI layout with skopeo, checked against a
``policy.json`` when given. Nothing is unpacked here: each layer's blob goes to the publisher as it
is (its tar headers read once for its whiteout entries and the image's top-level names), and the
hub builds each chain from the one below plus the layer, applying the whiteouts as every engine
does (``.wh.NAME`` removes NAME from the layers below, ``.wh..wh..opq`` hides a directory's lower
content). All of an image goes into the hub in one revision (``hub.publish_image``); a layer,
chain or flat root already there is not written again, and an unchanged image writes nothing.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import re
import shutil
import tarfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..artifact import Artifact
from ..cvmfs.catalog_rows import check_name, symlink_problem
from ..cvmfs.limits import MAX_MTIME, human
from ..cvmfs.tar_limits import TarLimits
from ..cvmfs.tar_stream import TarStream, open_tar
from ..errors import BuildError, CvmfsError
from ..fsutil import locked_scratch
from .image import (
    _REF_RE,
    _REGISTRY_RE,
    _TAG_RE,
    DIGEST_RE,
    MT_LAYER_GZIP,
    ImageSpec,
    canonical,
    digest_of,
    hex_of,
)
from .image import (
    MAX_IMAGE_LAYERS as MAX_LAYERS,
)
from .layer import LayerResult
from .layering import WHITEOUT, ImageTrees, LayerTar, whiteout_of
from .layers import LayerFile
from .manifest_list import MAX_RAW, attestations, default_platform, index_platforms
from .oci import ImageParts
from .registry import RegistryOptions, inspect_raw, list_tags, pull

log = logging.getLogger(__name__)


#: a tag with wildcards: the tag's characters and fnmatch's
_TAG_GLOB_RE = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]{1,128}\Z")


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
        if not ("." in host or ":" in host or host == "localhost") or not _REGISTRY_RE.match(host):
            # docker's rule: a first word without '.' or ':' is no host, and skopeo reads x/y:1 as
            # docker.io/x/y:1 -- which the hub would have filed under a registry named 'x'
            raise BuildError(
                f"{text!r:.200}: {host!r:.80} is not a registry host",
                hint="name the registry first: host[:port]/repo:tag, e.g. docker.io/library/python:3",
            )
        if not _REF_RE.match(repo):
            raise BuildError(
                f"{text!r:.200}: {repo!r:.120} is not a repository name",
                hint="lower-case words joined by '/', '.', '_', '-' (e.g. library/python); "
                "an image is ingested by its tag, not by its digest (@sha256:)",
            )
        if not (_TAG_RE.match(tag) or (any(c in tag for c in "*?[") and _TAG_GLOB_RE.match(tag))):
            raise BuildError(
                f"{text!r:.200}: {tag!r:.140} is not a tag",
                hint="letters, digits, '_', '.', '-' (at most 128), and * ? [...] to match several",
            )
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


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / hex_of(digest)).read_bytes()


def image_parts(w: Wish, tag: str, manifest_bytes: bytes, config_bytes: bytes) -> ImageParts:
    """The registry's manifest and config as ``ImageParts``, every field the hub uses checked (they
    name paths in the hub and ImageSpec fields): one BuildError naming the image, never a KeyError."""
    where = f"{w.registry}/{w.repository}:{tag}"
    try:
        manifest = json.loads(manifest_bytes)
        config = json.loads(config_bytes)
        for doc, what in ((manifest, "manifest"), (config, "config")):
            # JSON's "\ud800" is a str no file can hold: the hub writes both into files and scripts
            try:
                canonical(doc)
            except UnicodeEncodeError as e:
                raise ValueError(f"the {what} holds {e.object[e.start]!r} (a lone surrogate)") from None
        layers = manifest["layers"]
        diff_ids = config["rootfs"]["diff_ids"]
        if not isinstance(layers, list) or not isinstance(diff_ids, list) or len(layers) != len(diff_ids):
            raise ValueError("the manifest's layers and the config's diff_ids do not pair up")
        if not 0 < len(layers) <= MAX_LAYERS:
            raise ValueError(f"{len(layers)} layers (1 to {MAX_LAYERS} can be ingested)")
        for layer, diff in zip(layers, diff_ids, strict=True):
            digest, size = layer["digest"], layer["size"]
            if not (isinstance(digest, str) and DIGEST_RE.match(digest)) or not (
                isinstance(diff, str) and DIGEST_RE.match(diff)
            ):
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
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
        raise _not_an_image(where, e, "manifest or config") from None
    return parts


def _not_an_image(where: str, e: Exception, what_of: str) -> BuildError:
    """A malformed manifest or config (a missing key, a wrong type) as one line naming the image."""
    if isinstance(e, RecursionError):  # json's decoder gives up ~1,000 levels deep
        what = "nested too deeply"
    else:
        what = f"no {e}" if isinstance(e, KeyError) else str(e)
    return BuildError(
        f"{where}: not an image the hub can take: {what}"[:400],
        hint=f"the registry's {what_of} is damaged or hostile",
    )


def _spec(w: Wish, tag: str, config: dict[str, Any]) -> ImageSpec:
    c = config.get("config") or {}
    stamp = _created(config.get("created") or "1970-01-01T00:00:00Z")
    env = dict(e.split("=", 1) for e in c.get("Env") or [] if "=" in e)
    entrypoint, cmd = _words(c.get("Entrypoint")), _words(c.get("Cmd"))
    texts = [*env.values(), *entrypoint, *cmd, c.get("WorkingDir") or "/"]
    labels = dict(c.get("Labels") or {})
    texts += [*labels, *labels.values(), config.get("architecture", "")]
    if not all(isinstance(v, str) for v in texts):
        raise ValueError("a config field that is text holds something else")
    return ImageSpec(
        registry=w.registry,
        repository=w.repository,
        tag=tag,
        created=stamp,
        entrypoint=entrypoint,
        cmd=cmd,
        env=env,
        labels=labels,
        architecture=config.get("architecture", "amd64"),
        working_dir=c.get("WorkingDir") or "/",
    )


def _words(value: Any) -> tuple[Any, ...]:
    """A config's ``Entrypoint``/``Cmd``: a list, or one string, which Docker reads as a list of one
    (taken as a sequence, "/bin/sh" ran as ``exec / b i n / s h``; pr21 N4)."""
    return (value,) if isinstance(value, str) else tuple(value or ())


def _created(text: str) -> int:
    """The config's ``created`` in seconds: without a zone it is UTC (RFC 3339 always has one; the
    local zone made the hub's bytes depend on the machine), and a time before 1970 is 0 -- Go's zero
    time ``0001-01-01T00:00:00Z`` (go-containerregistry's empty image) means none, and the catalog
    cannot hold it."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    stamp = int(when.replace(tzinfo=when.tzinfo or UTC).timestamp())
    if stamp > MAX_MTIME:
        raise ValueError(f"created {text!r:.40} is after {datetime.fromtimestamp(MAX_MTIME, UTC):%Y}")
    return max(stamp, 0)


#: the layer types the hub unpacks (the publisher reads plain and gzip tars)
LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        MT_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
)


#: a member's path in a layer is shorter than PATH_MAX (as its link targets are): no program opens a
#: longer one, and the publisher keeps each path whole -- a 2 MB layer of a 20,000-deep chain (paths
#: up to 40 KB) took 1.7 GB and 7 minutes to publish
MAX_LAYER_PATH = 4096


def _member_path(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _leaves(where: str, name: str) -> BuildError:
    return BuildError(
        f"{where}: layer member {name!r:.200} leaves its folder", hint="the layer is damaged or hostile"
    )


def scan_layer(
    blob: Path, below: set[str], where: str, diff_id: str | None = None, limits: TarLimits = TarLimits()
) -> LayerTar:
    """The layer's whiteout entries (read from its tar headers, the contents are skipped) and, in
    ``below``, the image's top-level names once this layer is applied over the ones before. The
    members are bounded as the publisher bounds them (``tar_limits``, read by ``tar_stream``, as
    ``container verify`` reads a layer), and the tar's digest must be
    ``diff_id`` (the config's word for it, published as the layer's id)."""
    whiteouts: list[str] = []
    # a layer's whiteouts hide the layers below, never its own entries, wherever they are in the tar:
    # the image's own /tmp before a root '.wh..wh..opq' was forgotten, and the flat root's scaffold
    # put a folder in its place (pr21 N11)
    own: set[str] = set()
    hidden: set[str] = set()
    opaque = False
    try:
        with open(blob, "rb") as f:
            stream = TarStream(f, limits, where, layer=True)
            with open_tar(stream) as tar:
                for m in stream.members(tar):
                    path = _member_path(m.name)
                    if not path:
                        continue
                    if len(path.encode(errors="surrogateescape")) >= MAX_LAYER_PATH:
                        raise BuildError(
                            f"{where}: layer member {path[:60]!r}… is a path of {len(path)} characters"
                            f" (less than {MAX_LAYER_PATH} bytes, PATH_MAX, can be opened)",
                            hint="the layer is damaged or hostile",
                        )
                    # the hub turns whiteouts into removals of paths: each must name an entry of its
                    # own folder (not the folder, its parent, or a path through '..')
                    if ".." in path.split("/"):
                        raise _leaves(where, m.name)
                    # as the catalog will refuse it, but there the error named a path of the hub's
                    # (/.chains/<id>/s: ...), not the image and layer (pr21 N3)
                    why = next(filter(None, map(check_name, path.split("/"))), None)
                    if why is None and m.issym():
                        why = symlink_problem(m.linkname)
                    if why is not None:
                        raise BuildError(
                            f"{where}: layer member {m.name[:200]!r}: {why}",
                            hint="the layer is damaged or hostile",
                        )
                    if not path.rpartition("/")[2].startswith(WHITEOUT):
                        own.add(path.split("/", 1)[0])
                        continue
                    try:
                        parent, target = whiteout_of(path)
                    except ValueError:
                        raise _leaves(where, m.name) from None
                    whiteouts.append(path)
                    if not parent:
                        if target is None:
                            opaque = True
                        else:
                            hidden.add(target)
                stream.finish(tar)  # the end marker and padding count for the diff_id
    except CvmfsError as e:
        raise BuildError(e.message, hint=e.hint or "") from None
    except (tarfile.TarError, OSError) as e:
        raise BuildError(
            f"{where}: the layer is not a tar the hub can read: {e}", hint="the blob is damaged"
        ) from None
    tar_digest = stream.digests[1]
    if diff_id is not None and tar_digest != diff_id:
        raise BuildError(
            f"{where}: the layer's tar is {tar_digest}, the config says {diff_id}",
            hint="the config's diff_ids do not match the layers: the registry is damaged or hostile",
        )
    if opaque:
        below.clear()
    below -= hidden
    below |= own
    return LayerTar(blob, tuple(whiteouts))


def ingest_manifest(
    w: Wish,
    tag: str,
    layout: Path,
    manifest_digest: str,
    publish: Callable[[ImageParts, ImageTrees], Artifact],
    scanned: dict[str, ImageTrees] | None = None,
    limits: TarLimits = TarLimits(),
) -> Artifact:
    """One image of the pulled layout (a platform of an index, or the image) into the hub: its
    layers straight from their blobs (no unpacking: the publisher reads the tars, and the hub makes
    each chain from the one below plus the layer, applying its whiteouts). ``scanned``: the layers
    already read, by manifest digest (the default platform is ingested twice: read its blobs once)."""
    where = f"{w.registry}/{w.repository}:{tag}"
    manifest_bytes = _blob(layout, manifest_digest)
    try:  # the pulled manifest may differ from the one checked before the pull
        manifest = json.loads(manifest_bytes)
        config_digest = manifest["config"]["digest"]
        if not (isinstance(config_digest, str) and DIGEST_RE.match(config_digest)):
            raise ValueError(f"config digest {config_digest!r:.80} is not sha256:<hex>")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
        raise _not_an_image(where, e, "manifest") from None
    parts = image_parts(w, tag, manifest_bytes, _blob(layout, config_digest))
    trees = scanned.get(manifest_digest) if scanned is not None else None
    if trees is None:
        trees = _scan_layers(layout, manifest["layers"], parts, where, limits)
        if scanned is not None:
            scanned[manifest_digest] = trees
    try:
        return publish(parts, trees)
    except CvmfsError as e:
        # the publisher names the tar it read by its file: a layer's blob in the scratch layout
        for layer in parts.layers:
            blob = f"{layout / 'blobs' / 'sha256' / hex_of(layer.result.digest or '')}: "
            if e.message.startswith(blob):
                raise BuildError(
                    f"{where} layer {layer.result.digest}: {e.message.removeprefix(blob)}",
                    hint="the layer is damaged or hostile",
                ) from None
        raise


def _scan_layers(
    layout: Path, layers: list[dict[str, Any]], parts: ImageParts, where: str, limits: TarLimits
) -> ImageTrees:
    names: set[str] = set()
    out = []
    for layer, file in zip(layers, parts.layers, strict=True):
        diff = file.result.diff_id
        _check_media(where, layer)
        blob = layout / "blobs" / "sha256" / hex_of(layer["digest"])
        out.append(scan_layer(blob, names, f"{where} layer {layer['digest']}", diff, limits))
    return ImageTrees(None, out, frozenset(names))


def _check_media(where: str, layer: dict[str, Any]) -> None:
    media = layer.get("mediaType", MT_LAYER_GZIP)
    if media not in LAYER_TYPES:
        raise BuildError(
            f"{where}: layer {layer['digest']!s:.80} is {media!r:.100}, which the hub cannot unpack",
            hint="layers must be tar or tar+gzip (zstd and foreign layers are not supported)",
        )


def check_before_pull(where: str, raw: bytes, limits: TarLimits) -> int:
    """The bytes the pull of one image (``raw``: its manifest, as the registry gives it) will fetch,
    its layers checked first -- their count, media types and sizes -- so that a hostile manifest is
    refused before any blob is pulled (1,000 layers took 3 minutes to refuse after the pull)."""
    try:
        doc = json.loads(raw)
        layers = doc["layers"]
        if not isinstance(layers, list):
            raise ValueError("its 'layers' is not a list")
        # read whole once pulled: a config of 8 GB was pulled and then read into memory (pr21 N7)
        config_size = doc["config"]["size"]
        if type(config_size) is not int or not 0 <= config_size <= MAX_RAW:
            raise BuildError(
                f"{where}: the image's config is {config_size!r:.40} bytes (at most {MAX_RAW})",
                hint="a config is a few KB: the registry is damaged or hostile",
            )
        if not 0 < len(layers) <= MAX_LAYERS:
            raise ValueError(f"{len(layers)} layers (1 to {MAX_LAYERS} can be ingested)")
        total = 0
        for layer in layers:
            _check_media(where, layer)
            size = layer["size"]
            if type(size) is not int or size < 0:
                raise ValueError(f"layer {layer['digest']!s:.80} has size {size!r:.40}")
            # gzip stores incompressible data in 16 KiB-odd blocks of 5 bytes' overhead: a blob this
            # much larger than the cap holds more tar than the cap allows
            if size > limits.max_bytes + limits.max_bytes // 1000 + 1024:
                raise BuildError(
                    f"{where}: layer {layer['digest']!s:.80} is {size} bytes, more than the "
                    f"{human(limits.max_bytes)} of tar a layer may hold",
                    hint="the registry is hostile, or raise the limit (--max-layer-bytes)",
                )
            total += size
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise _not_an_image(where, e, "manifest") from None
    return total


def check_attestation(where: str, raw: bytes, limits: TarLimits) -> tuple[int, list[str]]:
    """The bytes a list's attestation (``raw``: its manifest) adds to the pull, and its layers'
    digests: its layers are in-toto JSON, not tars, but bounded as an image's are (count, sizes)."""
    try:
        doc = json.loads(raw)
        layers, config_size = doc["layers"], doc["config"]["size"]
        if not isinstance(layers, list) or len(layers) > MAX_LAYERS:
            raise ValueError(f"its layers are not a list of at most {MAX_LAYERS}")
        if type(config_size) is not int or not 0 <= config_size <= MAX_RAW:
            raise ValueError(f"its config is {config_size!r:.40} bytes (at most {MAX_RAW})")
        total = config_size
        for layer in layers:
            size = layer["size"]
            if type(size) is not int or not 0 <= size <= limits.max_bytes:
                raise ValueError(
                    f"layer {layer['digest']!s:.80} is {size!r:.40} bytes (at most {human(limits.max_bytes)})"
                )
            total += size
        return total, [str(layer["digest"]) for layer in layers]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise _not_an_image(where, e, "attestation manifest") from None


def _layer_digests(raw: bytes) -> list[str]:
    """The layers' digests of a manifest ``check_before_pull`` passed."""
    return [str(layer["digest"]) for layer in json.loads(raw)["layers"]]


def _check_space(where: str, need: int, work: Path) -> None:
    free = shutil.disk_usage(work).free
    if need > free:
        raise BuildError(
            f"{where}: the pull needs {need} bytes of scratch space, {work.parent} has {free} free",
            hint="free some space, or point TMPDIR at a larger file system",
        )


def ingest_image(
    w: Wish,
    tag: str,
    publish: Callable[[ImageParts, ImageTrees], Artifact],
    *,
    opts: RegistryOptions,
    work: Path,
    registry_tags: Callable[[], Collection[str]] | None = None,
    limits: TarLimits = TarLimits(),
) -> list[Artifact]:
    """The image ``w`` at ``tag``; for a manifest list (OCI index) every platform's image, each
    under ``<tag>-<os>-<arch>[-<variant>]``, and the default platform also under ``<tag>``.
    ``registry_tags``: the repository's tags in the registry (listed when a list is met)."""
    ref = f"{w.registry}/{w.repository}:{tag}"
    raw = raw_top = inspect_raw(ref, opts=opts)
    platforms = index_platforms(ref, raw)
    need = 0
    layers: list[str] = []  # the declared layers' digests, named if the pull stalls
    extra: list[str] = []  # the list's attestations: pulled with it by skopeo's --all
    if platforms is None:
        need = check_before_pull(ref, raw, limits)
        layers += _layer_digests(raw)
        _check_space(ref, need, work)
    if platforms is not None:
        # A platform's name in the hub must not be a tag of its own in the registry: the two images
        # would take turns under one name, whichever was ingested last. Refused before any pull.
        tags = registry_tags() if registry_tags else _registry_tags(w, opts)
        clash = sorted(f"{tag}-{p.name}" for p in platforms if f"{tag}-{p.name}" in tags)
        if clash:
            raise BuildError(
                f"{ref}: the hub names this list's platform images <tag>-<os>-<arch>, and the registry "
                f"has {', '.join(clash)} as tags of their own",
                hint="ingest those tags by themselves, or rename them in the registry",
            )

        def manifest(where: str, digest: str) -> bytes:
            try:
                return inspect_raw(f"{w.registry}/{w.repository}@{digest}", opts=opts)
            except BuildError as e:  # named by what of the list it is
                raise BuildError(f"{where}: {e.message}", hint=e.hint or "") from None

        for p in platforms:
            where = f"{ref} ({p.name})"
            raw = manifest(where, p.digest)
            need += check_before_pull(where, raw, limits)
            layers += _layer_digests(raw)
        extra = attestations(raw_top)
        for digest in extra:
            where = f"{ref} (attestation {digest})"
            size, digests = check_attestation(where, manifest(where, digest), limits)
            need += size
            layers += digests
        _check_space(ref, need, work)
    # by the digest of what was checked: pulled by tag, the registry could answer the pull with
    # another manifest (1 TiB layers after the check of a small image)
    pinned = f"{w.registry}/{w.repository}@{digest_of(raw_top)}"
    # skopeo stopped past what the manifests declare: the layers, and each image's config and
    # manifest and the list at most MAX_RAW (a blob's digest is checked only at its end)
    images = 1 if platforms is None else len(platforms) + len(extra)
    allowed = need + (2 * images + 2) * MAX_RAW
    layout = pull(
        pinned,
        work / "image.oci",
        opts=opts,
        all_platforms=platforms is not None,
        max_bytes=allowed,
        layers=tuple(layers),
    )
    top = json.loads((layout / "index.json").read_text())["manifests"][0]
    if platforms is None:
        return [ingest_manifest(w, tag, layout, top["digest"], publish, limits=limits)]
    listed = {m["digest"] for m in json.loads(_blob(layout, top["digest"]))["manifests"]}
    out = []
    scanned: dict[str, ImageTrees] = {}
    for p in platforms:
        if p.digest not in listed or not (layout / "blobs" / "sha256" / hex_of(p.digest)).is_file():
            raise BuildError(
                f"{ref}: platform {p.name}'s manifest {p.digest} was not pulled",
                hint="is the registry complete?",
            )
        out.append(ingest_manifest(w, f"{tag}-{p.name}", layout, p.digest, publish, scanned, limits))
    default = default_platform(platforms)
    out.append(ingest_manifest(w, tag, layout, default.digest, publish, scanned, limits))
    return out


def _registry_tags(w: Wish, opts: RegistryOptions) -> frozenset[str]:
    return frozenset(list_tags(f"{w.registry}/{w.repository}", opts=opts))


def ingest(
    wishes: Sequence[str],
    publish: Callable[[ImageParts, ImageTrees], Artifact],
    *,
    opts: RegistryOptions,
    scratch: Path | None = None,
    limits: TarLimits = TarLimits(),
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
        registry_tags = functools.cache(functools.partial(_registry_tags, w, opts))  # listed once a wish
        for tag in tags:
            # locked while in use: a run killed with SIGKILL leaves its pull, which the next run removes
            with locked_scratch(scratch, "cernvm-ingest-") as work:
                out += ingest_image(
                    w, tag, publish, opts=opts, work=work, registry_tags=registry_tags, limits=limits
                )
    return out
