"""Manifest lists (Docker) and image indexes (OCI): the platforms of a multi-arch image.

``hub ingest`` reads the registry's raw manifest first (``skopeo inspect --raw``, bounded): an image
is ingested as it is; a list is checked entry by entry before anything is pulled, so a hostile one
costs one request and one line: more than ``MAX_PLATFORMS`` entries, an entry that is not an image
manifest (a nested index, an unknown media type), a platform name that is not a plain word, two
entries for one platform. Entries of platform ``unknown/unknown`` (buildx's attestations) are not
images and are left out.

Layout in the hub: each platform's image under ``<tag>-<os>-<arch>[-<variant>]`` (its own public
link, marker and podman name; layers and chains are shared by content as for any image), and the
default platform (``linux/amd64`` when listed, else the first entry) also under ``<tag>`` itself,
so the plain name works as before on the common machines and the choice does not depend on the
machine that ingests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import BuildError
from .image import DIGEST_RE
from .image import MT_INDEX as OCI_INDEX
from .image import MT_MANIFEST as OCI_MANIFEST

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})

MAX_PLATFORMS = 64
MAX_RAW = 4 << 20  # the registry's own limit for a manifest
_WORD = re.compile(r"^[a-z0-9][a-z0-9._]{0,31}\Z")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str
    digest: str

    @property
    def name(self) -> str:
        return "-".join(p for p in (self.os, self.architecture, self.variant) if p)


def _media_type(doc: dict[str, object]) -> str:
    media = doc.get("mediaType")
    if isinstance(media, str):
        return media
    # an OCI document may leave it out: its shape says what it is
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def index_platforms(ref: str, raw: bytes) -> list[Platform] | None:
    """The platforms ``raw`` lists, or None when it is one image's manifest."""
    hint = "the registry's manifest list is damaged or hostile"
    if len(raw) > MAX_RAW:
        raise BuildError(f"{ref}: the manifest is {len(raw)} bytes (at most {MAX_RAW})", hint=hint)
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise BuildError(f"{ref}: the manifest is not JSON ({e})"[:300], hint=hint) from None
    except RecursionError:  # json's decoder gives up ~1,000 levels deep, well under MAX_RAW
        raise BuildError(f"{ref}: the manifest is nested too deeply", hint=hint) from None
    if not isinstance(doc, dict):
        raise BuildError(f"{ref}: the manifest is not a JSON object", hint=hint)
    media = _media_type(doc)
    if media in MANIFEST_TYPES:
        return None
    if media not in INDEX_TYPES:
        raise BuildError(
            f"{ref}: the manifest is {media!r:.100}, neither an image nor a manifest list", hint=hint
        )
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise BuildError(f"{ref}: the manifest list has no list of manifests", hint=hint)
    if len(entries) > MAX_PLATFORMS:
        raise BuildError(
            f"{ref}: the manifest list has {len(entries)} entries (at most {MAX_PLATFORMS} platforms)",
            hint=hint,
        )
    out: list[Platform] = []
    for i, entry in enumerate(entries):
        where = f"{ref}: manifest list entry {i}"
        if not isinstance(entry, dict):
            raise BuildError(f"{where} is not an object", hint=hint)
        kind, digest, plat = entry.get("mediaType"), entry.get("digest"), entry.get("platform") or {}
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise BuildError(f"{where}: digest {digest!r:.80} is not sha256:<hex>", hint=hint)
        if not isinstance(plat, dict):
            raise BuildError(f"{where}: platform {plat!r:.80} is not an object", hint=hint)
        if plat.get("os") == "unknown" and plat.get("architecture") == "unknown":
            continue  # an attestation (SBOM, provenance) attached by buildx: not an image
        if kind not in MANIFEST_TYPES:
            raise BuildError(
                f"{where} ({digest}) is {kind!r:.100}, not an image manifest",
                hint="only lists of images can be ingested (no nested lists, no other artifacts)",
            )
        words = [plat.get("os"), plat.get("architecture"), plat.get("variant") or ""]
        if not all(
            isinstance(w, str) and (_WORD.match(w) or (j == 2 and w == "")) for j, w in enumerate(words)
        ):
            raise BuildError(
                f"{where}: platform {plat!r:.120} is not os/architecture[/variant] words", hint=hint
            )
        p = Platform(str(words[0]), str(words[1]), str(words[2]), digest)
        if any(q.name == p.name for q in out):
            raise BuildError(f"{where}: platform {p.name} is listed twice", hint=hint)
        out.append(p)
    if not out:
        raise BuildError(f"{ref}: the manifest list names no image", hint=hint)
    return out


def attestations(raw: bytes) -> list[str]:
    """The digests of the attestations (buildx's SBOM and provenance, platform ``unknown/unknown``)
    of the list ``raw`` that ``index_platforms`` passed: not images, but ``skopeo copy --all`` pulls
    them and their layers with the images (it has no way to leave them out), so the pull's quota
    counts them."""
    out = []
    for entry in json.loads(raw)["manifests"]:
        plat = entry.get("platform") or {}
        if plat.get("os") == "unknown" and plat.get("architecture") == "unknown":
            out.append(str(entry["digest"]))
    return out


def default_platform(platforms: Sequence[Platform]) -> Platform:
    """The platform published under the plain tag: linux/amd64 when listed, else the first."""
    return next((p for p in platforms if (p.os, p.architecture) == ("linux", "amd64")), platforms[0])
