"""The one cache rule: a result is keyed by the content of its inputs, and reused only under that key.

``key(inputs)`` is the SHA-256 of the inputs' canonical JSON (sorted keys, no spaces, UTF-8): the
settings that shape the result, the build time (``SOURCE_DATE_EPOCH``) where it appears in the output,
the content hashes of input files (never their paths or mtimes) and, where the code shapes the bytes,
``code_version()``. Two runs with equal inputs share the key; any difference makes a new one.

The one resume rule: a finished step leaves a marker (``write_marker``) holding its key and its result;
``read_marker`` returns the result only when the marker's key equals the key of the inputs now, so a
step whose inputs changed is built again instead of being trusted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import __version__, jsonable
from .fsutil import atomic_write

#: marker format; a marker written by another format is not trusted
MARKER_SCHEMA = 1


def canonical_json(obj: Any) -> str:
    """``obj`` as canonical JSON (``jsonable.encode``, then sorted keys and no whitespace)."""
    return json.dumps(jsonable.encode(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def key(inputs: Mapping[str, Any]) -> str:
    """The content key of ``inputs`` (hex SHA-256 of their canonical JSON)."""
    return hashlib.sha256(canonical_json(inputs).encode("utf-8")).hexdigest()


def code_version() -> str:
    """The toolkit's version, for keys of results whose bytes the code shapes."""
    return __version__


def write_marker(path: Path, inputs_key: str, result: Any) -> None:
    """Record that the step keyed ``inputs_key`` finished with ``result`` (atomically)."""
    body = {"schema": MARKER_SCHEMA, "key": inputs_key, "result": result}
    atomic_write(path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())


def read_marker(path: Path, inputs_key: str) -> Any | None:
    """The result recorded at ``path`` if it was made from the same inputs, else None (build again)."""
    try:
        body = json.loads(path.read_text())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("schema") != MARKER_SCHEMA or body.get("key") != inputs_key:
        return None
    return body.get("result")
