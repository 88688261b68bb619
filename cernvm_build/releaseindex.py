"""The release index: what a release is made of, with every artifact's size and hash.

It is written once per release as ``index.json`` beside the artifacts; everything else that names a
release (SHA256SUMS, the downloads page, the news post, verification years later) derives from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import dataload, jsonable, utcdate
from .errors import CernVMError, Location
from .fsutil import TooLarge, read_capped

#: 2 records each profile's command-line overrides (``ProfileRecord.overrides``); 1 is still read
SCHEMA = 2
READABLE_SCHEMAS = (1, 2)
VERSION_RE = re.compile(r"^\d{4}\.\d{2}-\d+\Z")
HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
#: the largest index read (one artifact is ~300 bytes, so this is tens of thousands of them; launch's
#: image catalog reads an index over HTTP with the same cap)
MAX_INDEX_BYTES = 64 << 20


class ReleaseError(CernVMError):
    exit_code = 7


@dataclass(frozen=True)
class Snapshot:
    repository: str
    path: str
    root_hash: str | None
    revision: int | None
    tag: str | None


@dataclass(frozen=True)
class RecordedOverride:
    """A setting laid over the shipped profile when the release was built (``profile.Override``:
    the demo's published tag and ``--port`` server), so that a rebuild resolves the same profile."""

    key: str  # dotted setting key
    text: str | tuple[str, ...]  # as given (a list for list settings)
    flag: str  # how it was given, e.g. "--port"


@dataclass(frozen=True)
class ProfileRecord:
    name: str
    os: str  # e.g. "SLC 4", "AlmaLinux 9"
    frozen: bool
    snapshot: Snapshot
    profile_sha256: str  # of the resolved profile JSON, so a rebuild can tell the recipe changed
    #: the overrides the profile was resolved with (schema 2; a schema 1 index records none)
    overrides: tuple[RecordedOverride, ...] = ()


@dataclass(frozen=True)
class ReleaseArtifact:
    name: str  # file name
    path: str  # relative to the release directory
    profile: str
    kind: str  # "image" | "container" | "manifest"
    format: str
    sha256: str
    size: int
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReleaseIndex:
    version: str
    date: str  # ISO 8601, UTC
    source_date_epoch: int
    profiles: tuple[ProfileRecord, ...]
    artifacts: tuple[ReleaseArtifact, ...]
    previous: str | None = None
    signature: str | None = None  # file name of the SHA256SUMS signature, if signed
    signer: str | None = None  # OpenPGP fingerprint of the key that signed it
    schema: int = SCHEMA

    def to_json(self) -> dict[str, Any]:
        return jsonable.to_json(self)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    def artifact(self, name: str) -> ReleaseArtifact:
        for a in self.artifacts:
            if a.name == name:
                return a
        raise ReleaseError(f"release {self.version} has no artifact named '{name}'")


def check_version(version: str, where: Location | str | None = None) -> str:
    # the year and month are a date (the release's default SOURCE_DATE_EPOCH): month 13 or year 0000
    # matched the pattern and then failed in calendar.timegm, a traceback
    hint = "CernVM releases are named like 2026.11-1 (year.month-release, month 01 to 12)"
    if not VERSION_RE.match(version):
        raise ReleaseError(
            f"release version '{version}' is not of the form YYYY.MM-N", hint=hint, where=where
        )
    # the form is right but no build time: say which part (1969.12-1 was "not of the form", pr26a 12)
    if not 1 <= int(version[5:7]) <= 12:
        raise ReleaseError(
            f"release version '{version}': month {version[5:7]} is not 01 to 12", hint=hint, where=where
        )
    if int(version[:4]) < 1970:
        raise ReleaseError(
            f"release version '{version}': year {version[:4]} is before 1970 (its 1st of the month is the "
            "release's default build time, a Unix time)",
            hint=hint,
            where=where,
        )
    return version


def _require(d: dict[str, Any], key: str, typ: type, where: str) -> Any:
    if key not in d:
        raise ReleaseError(
            f"missing key '{key}'", where=Location(where, key=key), hint="the index is damaged"
        )
    value = d[key]
    # bool is an int to isinstance: 'size': true was a size of 1 byte
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        raise ReleaseError(
            f"'{key}' should be {typ.__name__}, is {type(value).__name__}", where=Location(where, key=key)
        )
    return value


def _object(value: Any, where: str, key: str) -> None:
    """A list entry that must be a JSON object (``_require`` reads keys of it)."""
    if not isinstance(value, dict):
        raise ReleaseError(
            f"'{key}' should be an object, is {type(value).__name__}",
            where=Location(where, key=key),
            hint="the index is damaged; write it with 'cernvm-build release'",
        )


def _optional(d: dict[str, Any], key: str, typ: type, where: Location) -> Any:
    """``d[key]`` when it is a ``typ``, None when absent or null; another type is one error (a number
    as ``signature`` was a TypeError in the site build, a list as ``previous`` a link to
    ``/releases/['x']/``)."""
    value = d.get(key)
    if value is not None and (not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool)):
        raise ReleaseError(
            f"'{key}' should be {typ.__name__} or null, is {type(value).__name__}",
            where=where,
            hint="the index is damaged; write it with 'cernvm-build release'",
        )
    return value


def _size(size: int, where: Location) -> int:
    if size < 0:
        raise ReleaseError(f"size {size} is negative", where=where, hint="the index is damaged or hostile")
    return size


def _relative(rel: str, where: Location) -> str:
    # a scheme or host (file:///dev/zero, //other/) would survive urljoin: a pull would read any
    # local file or another server, before anything is verified
    parts = urlsplit(rel)
    if rel.startswith("/") or ".." in Path(rel).parts or parts.scheme or parts.netloc or "\\" in rel:
        raise ReleaseError(f"path {rel[:200]!r} leaves the release directory", where=where)
    return rel


def _file_name(name: str, where: Location) -> str:
    """An artifact's name: a file name, printable (every listing, verify line and download page shows
    it): "a.iso\nOK: release ..." forged a line of ``release verify`` (pr26b finding 14)."""
    if not name or not name.isprintable() or "/" in name or name in (".", ".."):
        raise ReleaseError(
            f"name {name[:200]!r} is not a file name",
            where=where,
            hint="the index is damaged or was not written by 'release build'",
        )
    return name


def _previous(raw: dict[str, Any], where: str) -> str | None:
    at = Location(where, key="previous")
    previous = _optional(raw, "previous", str, at)
    return None if previous is None else check_version(previous, at)


def _signature(raw: dict[str, Any], where: str) -> str | None:
    at = Location(where, key="signature")
    signature = _optional(raw, "signature", str, at)
    return None if signature is None else _relative(signature, at)


def _date(text: str, at: Location) -> str:
    """The release date as ``release build`` writes it (``YYYY-MM-DDTHH:MM:SSZ``, the one date rule
    ``utcdate.parse``): the site prints it and puts its day into generated front matter."""
    try:
        utcdate.parse(text)
    except ValueError as e:
        raise ReleaseError(f"date {e}", where=at, hint="the index is damaged or hostile") from None
    return text


#: the type of each ``Snapshot`` field in an index (``_optional``: absent or null reads as None)
_SNAPSHOT_TYPES = {"repository": str, "path": str, "root_hash": str, "revision": int, "tag": str}


def _overrides(p: dict[str, Any], where: str, key: str) -> tuple[RecordedOverride, ...]:
    """A profile's recorded overrides: a list of {key, text (string or list of strings), flag}."""
    found = []
    for j, o in enumerate(_require(p, "overrides", list, f"{where}: {key}")):
        at = f"{key}.overrides[{j}]"
        _object(o, where, at)
        text = o.get("text")
        if isinstance(text, list) and all(isinstance(t, str) for t in text):
            text = tuple(text)
        elif not isinstance(text, str):
            raise ReleaseError(
                f"'text' should be a string or a list of strings, is {type(text).__name__}",
                where=Location(where, key=f"{at}.text"),
                hint="the index is damaged; write it with 'cernvm-build release'",
            )
        found.append(
            RecordedOverride(
                key=_require(o, "key", str, f"{where}: {at}"),
                text=text,
                flag=_require(o, "flag", str, f"{where}: {at}"),
            )
        )
    return tuple(found)


def load(path: Path) -> ReleaseIndex:
    """Read and check an index.json; every problem names the file and the key."""
    where = str(path)
    try:
        data = read_capped(path, MAX_INDEX_BYTES)
    except FileNotFoundError:
        raise ReleaseError(
            f"{path}: no such release index", hint="give the index.json of a release"
        ) from None
    except TooLarge:
        raise ReleaseError(
            f"more than {MAX_INDEX_BYTES:,} bytes, far more than an index needs",
            where=where,
            hint="the index is damaged or hostile",
        ) from None
    except OSError as e:
        raise ReleaseError(
            f"{path}: cannot be read: {e.strerror}", hint="give the index.json of a release"
        ) from None
    try:
        raw = dataload.load(json.loads, data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ReleaseError(
            f"not UTF-8 text (byte {e.start})", where=where, hint="the index is damaged"
        ) from None
    except json.JSONDecodeError as e:
        raise ReleaseError(f"not valid JSON: {e.msg}", where=Location(where, e.lineno, e.colno)) from None
    except dataload.TooComplex as e:  # depth, int()'s digit limit: one line, not a traceback
        raise ReleaseError(e.message, where=where, hint="the index is damaged or hostile") from None
    if not isinstance(raw, dict):
        raise ReleaseError("the index is not a JSON object", where=where)
    schema = _require(raw, "schema", int, where)
    if schema not in READABLE_SCHEMAS:
        raise ReleaseError(
            f"index schema {schema} is not supported (this tool reads "
            f"{', '.join(map(str, READABLE_SCHEMAS))})",
            where=where,
        )
    profiles = []
    for i, p in enumerate(_require(raw, "profiles", list, where)):
        key = f"profiles[{i}]"
        _object(p, where, key)
        snap = _require(p, "snapshot", dict, f"{where}: {key}")
        digest = _require(p, "profile_sha256", str, where)
        if not HEX64.match(digest):
            raise ReleaseError(
                f"profile_sha256 {digest!r:.80} is not 64 hex digits",
                where=Location(where, key=f"{key}.profile_sha256"),
            )
        profiles.append(
            ProfileRecord(
                name=_require(p, "name", str, where),
                os=_require(p, "os", str, where),
                frozen=_require(p, "frozen", bool, where),
                snapshot=Snapshot(
                    **{
                        k: _optional(snap, k, t, Location(where, key=f"{key}.snapshot.{k}"))
                        for k, t in _SNAPSHOT_TYPES.items()
                    }
                ),
                profile_sha256=digest,
                overrides=_overrides(p, where, key) if schema >= 2 else (),
            )
        )
    artifacts = []
    for i, a in enumerate(_require(raw, "artifacts", list, where)):
        key = f"artifacts[{i}]"
        _object(a, where, key)
        sha = _require(a, "sha256", str, where)
        if not HEX64.match(sha):
            raise ReleaseError(
                f"sha256 '{sha}' is not 64 hex digits", where=Location(where, key=f"{key}.sha256")
            )
        rel = _relative(_require(a, "path", str, where), Location(where, key=f"{key}.path"))
        artifacts.append(
            ReleaseArtifact(
                name=_file_name(_require(a, "name", str, where), Location(where, key=f"{key}.name")),
                path=rel,
                profile=_require(a, "profile", str, where),
                kind=_require(a, "kind", str, where),
                format=_require(a, "format", str, where),
                sha256=sha,
                size=_size(_require(a, "size", int, where), Location(where, key=f"{key}.size")),
                inputs=_optional(a, "inputs", dict, Location(where, key=f"{key}.inputs")) or {},
            )
        )
    return ReleaseIndex(
        version=check_version(_require(raw, "version", str, where), Location(where, key="version")),
        date=_date(_require(raw, "date", str, where), Location(where, key="date")),
        source_date_epoch=_require(raw, "source_date_epoch", int, where),
        profiles=tuple(profiles),
        artifacts=tuple(artifacts),
        previous=_previous(raw, where),
        signature=_signature(raw, where),
        signer=_optional(raw, "signer", str, Location(where, key="signer")),
        schema=schema,
    )
