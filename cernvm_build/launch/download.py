"""The bodies of HTTP downloads (release indexes, checksums, images) read against a deadline.

A per-read timeout does not bound a download: a server sending a byte every 29 s keeps it going for
ever. As the mirror's HTTP sources (``mirror/source.py``): a whole-transfer deadline of a floor plus
the body at ``MIN_RATE`` on average, moved forward as bytes arrive, enforced by the one watchdog
thread (``s3direct.watchdog``) shutting the socket down; a stalled read (the per-read timeout) is one
ImageError line too, not urllib3's ReadTimeoutError traceback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from ..errors import ImageError

#: seconds a body may take before the rate counts (``s3direct.deadline``)
FLOOR = 120.0
BLOCK = 1 << 20


def body(resp: Any, url: str, *, floor: float | None = None) -> Iterator[bytes]:
    """``resp``'s body (a streamed ``requests`` response) in blocks, decoded as requests decodes
    it; ImageError naming ``url`` when it stalls or falls below the rate. The caller caps the size."""
    import urllib3  # deliberate lazy imports: only downloads need them (not 'cernvm-launch --help')

    from ..mirror.s3direct import MIN_RATE, deadline, watchdog
    from ..mirror.source import _stop

    floor = FLOOR if floor is None else floor
    start = time.monotonic()
    got = 0
    token = watchdog.arm(deadline(start, floor, 0), lambda: _stop(resp))
    late = False
    try:
        try:
            for block in resp.raw.stream(BLOCK, decode_content=True):
                got += len(block)
                yield block
                watchdog.extend(token, deadline(start, floor, got))
        finally:
            late = watchdog.disarm(token)
    except (OSError, urllib3.exceptions.HTTPError) as e:
        if not late:
            raise ImageError(
                f"download failed: {type(e).__name__}", where=url, hint=str(e)[:200] or "check the server"
            ) from None
    if late:  # the socket was shut down: what was read may only look complete
        raise ImageError(
            f"the download fell below {MIN_RATE >> 10} KiB/s on average after the first {floor:g} s"
            f" ({got} bytes in {time.monotonic() - start:.0f} s): the server is stalled or trickling",
            where=url,
            hint="check the server, or try another mirror; nothing was kept",
        )


def read(resp: Any, url: str, limit: int, *, floor: float | None = None) -> bytes:
    """At most ``limit`` + 1 bytes of the body (one more than allowed shows it is too large)."""
    out = bytearray()
    for block in body(resp, url, floor=floor):
        out += block[: limit + 1 - len(out)]
        if len(out) > limit:
            break
    return bytes(out)
