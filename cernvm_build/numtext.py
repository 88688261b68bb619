"""Decimal numbers in untrusted text (headers, index files, listings, tar headers).

``str.isdigit()`` is true for '²', '٣' and other Unicode digits that ``int()`` refuses, and ``int()``
refuses more than 4,300 digits: a check by ``isdigit()`` then ``int()`` was a ValueError traceback in
each parser that did it. Standard library only: the initrd's runtime imports this.
"""

from __future__ import annotations

#: digits of every value below 10^18 (every size, count and length this project reads; an int64
#: holds all of them, though not every 19-digit number)
INT64_DIGITS = 18


def decimal(text: str, max_digits: int = INT64_DIGITS) -> int | None:
    """``text`` as a non-negative int when it is 1 to ``max_digits`` ASCII digits, else None."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None
