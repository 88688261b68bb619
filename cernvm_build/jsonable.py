"""One way to turn result data into JSON: ``to_json(obj)`` walks dataclass fields with one encoder.

A result dataclass's ``to_json()`` is ``jsonable.to_json(self)`` — plus ``omit`` for fields that are not
part of the answer (in-process handles, big maps) and keyword overrides for values shown differently
(rounded seconds, a computed ``ok``). The encoder: dataclasses by their fields (recursively, nested
``to_json()`` methods win), ``Path`` → str, tuple/set → list, ``Enum`` → value, dates → ISO 8601,
bytes → hex. ``cachekey`` hashes inputs through the same encoder.
"""

from __future__ import annotations

import datetime as dt
import enum
import sys
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any


def encode(obj: Any) -> Any:
    """``obj`` as plain JSON data (dict, list, str, int, float, bool, None)."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if _is_dataclass(obj):
        own = getattr(obj, "to_json", None)
        return own() if callable(own) else to_json(obj)
    if isinstance(obj, Mapping):
        return {str(k): encode(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [encode(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted(encode(v) for v in obj)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return encode(obj.value)
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"{type(obj).__name__} has no JSON form")


def _is_dataclass(obj: Any) -> bool:
    """Whether ``obj`` is a dataclass instance. ``dataclasses`` is not imported for the question: it
    imports ``inspect`` (~10 ms), and a command whose results are no dataclasses (a site rebuild's)
    never needs it; where no module has imported it, nothing is a dataclass."""
    dataclasses = sys.modules.get("dataclasses")
    return dataclasses is not None and dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def to_json(obj: Any, *, omit: tuple[str, ...] = (), **overrides: Any) -> dict[str, Any]:
    """The dataclass ``obj`` as a dict of its fields (minus ``omit``), with ``overrides`` applied."""
    import dataclasses  # (imported already: ``obj`` is a dataclass)

    out = {
        f.name: encode(getattr(obj, f.name))
        for f in dataclasses.fields(obj)
        if f.name not in omit and f.name not in overrides
    }
    out.update({k: encode(v) for k, v in overrides.items()})
    return out
