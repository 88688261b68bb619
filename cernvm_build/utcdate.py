"""The one form of a point in time the toolkit reads: UTC to the second, ``YYYY-MM-DDTHH:MM:SSZ``
(CernVM-FS snapshot dates, the release index's date, a profile's ``cvmfs.snapshot.date``).

Stdlib-only and tiny: the initrd's mount imports it (a pinned ``--date``), and ``datetime`` only when
a date is parsed (the runtime ships it: ``bootloader/runtime.EXTRA_MODULES``).
"""

from __future__ import annotations

import re

FORM = "YYYY-MM-DDTHH:MM:SSZ"
HINT = "write it in UTC like 2026-11-25T04:21:43Z"
#: ASCII digits only: strptime's ``\\d`` takes any Unicode digit (Arabic-Indic, fullwidth ...)
PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")


def parse(text: str) -> int:
    """``text`` (exactly ``YYYY-MM-DDTHH:MM:SSZ``) as a Unix timestamp. ValueError says whether the
    form or the calendar is wrong (``2026-02-30T00:00:00Z``), quoting at most 40 characters; the
    caller adds what and where, and ``HINT``."""
    if not PATTERN.match(text):
        raise ValueError(f"{text[:40]!r} is not {FORM}")
    import datetime as dt

    try:
        y, mo, d, h, mi, sec = (int(text[a : a + 4 if a == 0 else a + 2]) for a in (0, 5, 8, 11, 14, 17))
        return int(dt.datetime(y, mo, d, h, mi, sec, tzinfo=dt.UTC).timestamp())
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a real date") from None


def text(timestamp: int) -> str:
    """``timestamp`` in the form ``parse`` reads (the year at most 9999: ``context.MAX_EPOCH``)."""
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
