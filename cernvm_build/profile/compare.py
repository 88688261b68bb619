"""Which settings two profiles differ in: what ``profiles diff`` shows.

Only what a profile asks for counts: its name, description, file and what it extends do not, and
public keys are compared by content (a moved key file is the same key), as in ``fingerprint``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..fsutil import sha256_file
from .model import Profile

#: fields that say where a profile is and what it is called, not what it asks for
IDENTITY = ("name", "description", "source", "extends", "inputs")


@dataclass(frozen=True)
class SettingDifference:
    key: str  # dotted: "cvmfs.snapshot.tag"
    a: Any  # None when the setting is absent
    b: Any


def comparable(p: Profile) -> dict[str, Any]:
    """The resolved settings as dotted keys, without identity, with keys named by their content."""
    data = p.to_dict()
    for k in IDENTITY:
        data.pop(k)
    data["cvmfs"]["public_keys"] = [f"{k.name} (sha256 {sha256_file(k)[:12]})" for k in p.cvmfs.public_keys]
    return _flatten(data)


def diff(a: Profile, b: Profile) -> list[SettingDifference]:
    """The settings whose values differ, in the order they first appear."""
    left, right = comparable(a), comparable(b)
    keys = dict.fromkeys([*left, *right])
    return [SettingDifference(k, left.get(k), right.get(k)) for k in keys if left.get(k) != right.get(k)]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        flat: dict[str, Any] = {}
        for k, v in data.items():
            flat.update(_flatten(v, f"{prefix}{k}."))
        return flat
    return {prefix.rstrip("."): data}
