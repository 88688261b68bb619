"""The resolved profile: typed, frozen, what every stage takes as input.

Field names are a contract with the other stages (bootloader, image, container, launch, release).
Add fields freely; never rename one. Each leaf field is a setting of the table (``settings.py``) under
the dotted path of its dataclasses (``Profile.cvmfs.snapshot.tag`` is ``cvmfs.snapshot.tag``); ``build``
fills them from the converted values generically, and a test checks that the two agree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..fsutil import sha256_file

T = TypeVar("T")


@dataclass(frozen=True)
class OsSettings:
    family: str
    release: int
    distribution: str
    arch: str = "x86_64"


@dataclass(frozen=True)
class Snapshot:
    """Which revision of the repository to mount: at most one of the three is set."""

    tag: str | None = None
    date: str | None = None  # "YYYY-MM-DDTHH:MM:SSZ": the newest tag published at or before it
    root_hash: str | None = None

    @property
    def pinned(self) -> bool:
        """True when this names one fixed revision (a rolling tag such as ``trunk`` does not)."""
        if self.root_hash or self.date:
            return True
        return self.tag is not None and not is_rolling_tag(self.tag)


def is_rolling_tag(tag: str) -> bool:
    """Tags that move with every publish: ``trunk``, ``trunk-previous``, ``HEAD``, ``HEAD4``."""
    return tag in ("trunk", "trunk-previous") or re.fullmatch(r"HEAD\d*", tag) is not None


@dataclass(frozen=True)
class CvmfsSettings:
    repository: str
    servers: list[str]
    path: str
    public_keys: list[Path]
    http_proxy: str = "DIRECT"
    snapshot: Snapshot = field(default_factory=Snapshot)
    blacklist: Path | None = None  # a certificate blacklist file (cvmfs/blacklist.py)

    def server_urls(self) -> list[str]:
        """The Stratum-1 URLs with ``@fqrn@`` replaced by the repository name (as the client does)."""
        return [s.replace("@fqrn@", self.repository) for s in self.servers]


@dataclass(frozen=True)
class BootloaderSettings:
    branch: str
    version: str
    release: int
    cmdline: list[str]
    #: why an EL<=6 profile does without ``vsyscall=emulate`` (None: it must have it)
    no_vsyscall_reason: str | None = None


@dataclass(frozen=True)
class KernelSettings:
    """Either a Debian kernel package, or a vmlinuz plus its modules tree."""

    package: str | None = "linux-image-cloud-amd64"
    vmlinuz: Path | None = None
    modules: Path | None = None


@dataclass(frozen=True)
class ImageSettings:
    formats: list[str]


@dataclass(frozen=True)
class ContainerSettings:
    formats: list[str]
    entrypoint: list[str]
    cmd: list[str] | None
    env: dict[str, str]
    labels: dict[str, str]


@dataclass(frozen=True)
class PreservationSettings:
    frozen: bool = False
    read_only: bool = False
    checksums_required: bool = False
    signer_sha256: str | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    source: Path
    extends: list[str]
    os: OsSettings
    cvmfs: CvmfsSettings
    bootloader: BootloaderSettings
    kernel: KernelSettings
    image: ImageSettings
    container: ContainerSettings
    context: dict[str, str]
    preservation: PreservationSettings
    #: every profile file merged into this one, in merge order (parents first, ``source`` last)
    inputs: list[Path] = field(default_factory=list)

    @property
    def artifact_stem(self) -> str:
        """μCernVM's image name without the format: ``ucernvm-<branch>.<YYYY.MM>-<release>.cernvm.<arch>``."""
        b = self.bootloader
        return f"ucernvm-{b.branch}.{b.version}-{b.release}.cernvm.{self.os.arch}"

    def fingerprint(self) -> str:
        """sha256 of what the profile asks for, independent of where its files live.

        The resolved settings as canonical JSON, with each public key and kernel file replaced by the
        sha256 of its content (a changed key changes the fingerprint, a moved checkout does not).
        ``name``, ``description``, ``source``, ``extends`` and ``inputs`` do not count.
        """
        data = self.to_dict()
        for k in ("name", "description", "source", "extends", "inputs"):
            data.pop(k)
        data["cvmfs"]["public_keys"] = sorted(sha256_file(k) for k in self.cvmfs.public_keys)
        if self.cvmfs.blacklist is not None:  # what it revokes, not where it lives
            data["cvmfs"]["blacklist"] = sha256_file(self.cvmfs.blacklist)
        if self.kernel.vmlinuz is not None:
            data["kernel"]["vmlinuz"] = sha256_file(self.kernel.vmlinuz)
        if self.kernel.modules is not None:
            data["kernel"]["modules"] = self.kernel.modules.name
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (paths as strings), in declaration order."""
        return _plain(self)  # type: ignore[no-any-return]


def build(cls: type[T], values: dict[str, Any], extra: dict[str, Any], prefix: str = "") -> T:
    """An instance of the dataclass ``cls`` whose leaf fields are ``values[dotted path]``.

    Fields that are dataclasses themselves are built from the keys below their path; ``extra`` gives
    the fields that are not settings (``source``, ``inputs``). Fields found in neither keep their default.
    """
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = prefix + f.name
        kind = hints[f.name]
        if key in extra:
            kwargs[f.name] = extra[key]
        elif isinstance(kind, type) and dataclasses.is_dataclass(kind):
            kwargs[f.name] = build(kind, values, extra, key + ".")
        elif key in values:
            kwargs[f.name] = values[key]
    return cls(**kwargs)


def leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """The dotted paths of the leaf fields of ``cls`` (what ``build`` takes from the values)."""
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            keys += leaf_keys(kind, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def _plain(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {name: _plain(getattr(obj, name)) for name in obj.__dataclass_fields__}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj
