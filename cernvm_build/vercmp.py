"""Package version order: Debian's (dpkg) and RPM's (rpmvercmp), the one implementation of each.

Used where a version decides something (the Debian tree's package choice and its dependency
relations, ``osbuild/aptindex``) and where one is shown as the newest (the site's repository pages,
``site/repos``). Both must agree with the real tools: ``1.0~rc1`` is older than ``1.0``, an epoch
beats everything after it, ``1.0-1+b1`` is newer than ``1.0-1``. Versions read from metadata are
input: neither function raises on any string (a malformed epoch counts as 0).
"""

from __future__ import annotations

import re

from .numtext import decimal

_DEB_PART = re.compile(r"(\D*)(\d*)", re.ASCII)
_RPM_SEGMENT = re.compile(r"[0-9]+|[A-Za-z]+", re.ASCII)
#: a part's runs: (0, non-digits as ordered) or (1, (length, digits) without leading zeros): a digit
#: run compared as text of its length, never int() (which refuses more than 4,300 digits)
DebPart = list[tuple[int, str | tuple[int, str]]]
DebKey = tuple[int, DebPart, DebPart]


def debian_key(version: str) -> DebKey:
    """A sort key giving dpkg's order: epoch, then upstream version, then Debian revision."""
    epoch, colon, rest = version.partition(":")
    if not colon:
        epoch, rest = "0", version
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, "0"
    return _epoch(epoch), _deb_part(upstream), _deb_part(revision)


def _deb_part(part: str) -> DebPart:
    """dpkg's order of one version part: alternating non-digit (with ``~`` lowest) and digit runs."""
    key: DebPart = []
    for nondigit, digit in _DEB_PART.findall(part):
        if not nondigit and not digit:
            continue
        key.append((0, "".join(_deb_char(c) for c in nondigit) + "\x02"))
        number = digit.lstrip("0")
        key.append((1, (len(number), number)))
    key.append((0, "\x01"))  # the end of the part: after '~', before anything else
    return key


def _deb_char(c: str) -> str:
    # '~' sorts before the end of a part, letters before other characters (dpkg's order)
    if c == "~":
        return "\x00"
    if c.isascii() and c.isalpha():
        return chr(0x100 + ord(c))
    return chr(0x200 + ord(c))


def rpm_compare(a: str, b: str) -> int:
    """-1, 0 or 1 as ``[epoch:]version-release`` ``a`` is older than, as new as or newer than ``b``
    (rpm's EVR order: the epoch, then ``rpmvercmp`` of the versions, then of the releases)."""
    ea, va, ra = _evr(a)
    eb, vb, rb = _evr(b)
    if ea != eb:
        return 1 if ea > eb else -1
    return rpmvercmp(va, vb) or rpmvercmp(ra, rb)


def _evr(evr: str) -> tuple[int, str, str]:
    epoch, colon, rest = evr.partition(":")
    if not colon:
        epoch, rest = "0", evr
    version, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return _epoch(epoch), version, release


def _epoch(text: str) -> int:
    # past 18 digits no tool takes it (dpkg: an int, rpm: 32 bits): malformed, so 0 as any other
    return decimal(text) or 0


def rpmvercmp(a: str, b: str) -> int:
    """rpm's ``rpmvercmp``: alphanumeric segments compared in turn (other characters only separate
    them), a number newer than letters, numbers by value; ``~`` sorts before anything, even the end,
    and ``^`` after the end but before anything else; the one with segments left over is newer."""
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        i, j = _skip(a, i), _skip(b, j)
        ta, tb = a[i : i + 1], b[j : j + 1]
        if ta == "~" or tb == "~":
            if ta != "~":
                return 1
            if tb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if ta == "^" or tb == "^":
            if not ta:
                return -1
            if not tb:
                return 1
            if ta != "^":
                return 1
            if tb != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not ta or not tb:
            break
        sa, sb = _RPM_SEGMENT.match(a, i), _RPM_SEGMENT.match(b, j)
        assert sa is not None and sb is not None  # _skip stopped on an ASCII letter or digit
        numeric = sa.group()[0].isdigit()
        if numeric != sb.group()[0].isdigit():
            return 1 if numeric else -1  # rpm: a number is newer than letters
        x, y = sa.group(), sb.group()
        if numeric:
            x, y = x.lstrip("0"), y.lstrip("0")
            if len(x) != len(y):
                return 1 if len(x) > len(y) else -1
        if x != y:
            return 1 if x > y else -1
        i, j = sa.end(), sb.end()
    if i >= len(a) and j >= len(b):
        return 0
    return 1 if i < len(a) else -1


def _skip(s: str, i: int) -> int:
    """Past the characters that only separate segments (not ASCII letters or digits, ``~``, ``^``)."""
    while i < len(s) and not (s[i].isascii() and s[i].isalnum()) and s[i] not in "~^":
        i += 1
    return i
