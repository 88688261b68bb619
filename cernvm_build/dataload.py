"""Loading untrusted JSON or YAML text in bounded form: the one handler of what the parsers let
through as a traceback (site data files, config.yaml and front matter; the release index).

- a value nested ~1,000 levels deep: json's decoder, or keeping a YAML value (pickle, ``Memo``),
  raises ``RecursionError``;
- an integer of more than 4,300 digits: ``int()`` refuses it with a plain ``ValueError``, which
  PyYAML's and json's integer readers pass on (their own errors are subclasses, left to the caller).

Both become ``TooComplex``, one line and a hint; the caller adds the file (and what the text is) in
its own error class. The size is the reader's to bound (``fsutil.read_capped``, a site's caps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

NESTED = "nested too deeply"
DIGITS = "a number has more digits than Python reads (sys.get_int_max_str_digits)"


class TooComplex(ValueError):
    """What a loader could not keep: ``message`` is ``NESTED`` or ``DIGITS``, ``hint`` what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    @property
    def nested(self) -> bool:
        return self.message == NESTED


def load(loader: Callable[[T], Any], text: T) -> Any:
    """``loader(text)`` (``json.loads``, a YAML ``Memo.load``), its depth and digit failures raised
    as ``TooComplex``; its own errors (``JSONDecodeError``, ``YAMLError``) pass unchanged."""
    try:
        return loader(text)
    except RecursionError:
        raise TooComplex(NESTED, "nest lists and mappings a few levels deep, not hundreds") from None
    except ValueError as e:
        if type(e) is not ValueError or "integer string conversion" not in str(e):
            raise
        raise TooComplex(DIGITS, "quote it to keep it as text") from None
