"""What a stage hands on: a file it made, with format, hash and size."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import jsonable
from .fsutil import sha256_file


@dataclass(frozen=True)
class Artifact:
    path: Path
    format: str
    sha256: str
    size: int
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, path: Path, fmt: str, **meta: Any) -> Artifact:
        return cls(path=path, format=fmt, sha256=sha256_file(path), size=path.stat().st_size, meta=meta)

    def to_json(self) -> dict[str, Any]:
        return jsonable.to_json(self, omit=() if self.meta else ("meta",), name=self.path.name)
