"""HTTP downloads (release indexes, checksums, images) read against one deadline.

A per-read timeout does not bound a download: a server sending a byte every 29 s keeps it going for
ever, in its body or in its status line and headers. As the mirror's HTTP sources (``mirror/source.py``,
``Deadlined``): one whole-request deadline from the connect on, a floor plus the body at ``MIN_RATE``
on average, moved forward as bytes arrive, enforced by the one watchdog thread (``s3direct.watchdog``)
shutting the socket down; a stalled read (the per-read timeout) is one ImageError line too, not
urllib3's ReadTimeoutError traceback.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from ..errors import ImageError

#: seconds a request may take before the body's rate counts (``s3direct.deadline``)
FLOOR = 120.0
BLOCK = 1 << 20
#: seconds one read (or the connect) may wait
TIMEOUT = 30
#: the bytes as they are: no Content-Encoding asked for (``get``)
IDENTITY = {"Accept-Encoding": "identity"}


@contextlib.contextmanager
def get(url: str, *, floor: float | None = None) -> Iterator[tuple[Any, Any]]:
    """The streamed response to a GET of ``url`` and its ``Deadlined`` (for ``body``/``read``);
    the deadline covers the connect, status line and headers too. ``requests.RequestException``
    passes on to the caller, except when the deadline ended the request (one ImageError)."""
    import requests  # deliberate lazy imports: only downloads need them (not 'cernvm-launch --help')

    from ..mirror.source import Deadlined, deadline_session

    dl = Deadlined(FLOOR if floor is None else floor)
    with deadline_session() as session:
        try:
            # identity, as the mirror's downloads: requests asks for gzip and deflate by default, and
            # urllib3 before 2.6 (Debian 12 has 1.26) inflates each 1 MiB block read whole: a 2 MB
            # gzip bomb as a release index took 2.1 GB (pr24a #6). Every byte is checked anyway (a
            # sha256, a signature, the index's parser); an encoding a server sends unasked stays on.
            with dl.get(session, url, timeout=TIMEOUT, headers=IDENTITY) as resp:
                yield resp, dl
        except requests.RequestException:
            if dl.late:
                raise _late(url, dl) from None
            raise


def reason(e: BaseException) -> str:
    """What went wrong at the bottom of a requests/urllib3 error (``mirror.source.failure``), with
    what to check."""
    from ..mirror.source import failure

    return f"{failure(e)}; check the URL and that the server is up"


def _late(url: str, dl: Any) -> ImageError:
    from ..mirror.s3direct import MIN_RATE

    return ImageError(
        f"the download fell below {MIN_RATE >> 10} KiB/s on average after the first {dl.floor:g} s"
        f" ({dl.got} bytes in {time.monotonic() - dl.start:.0f} s): the server is stalled or trickling",
        where=url,
        hint="check the server, or try another mirror; nothing was kept",
    )


def body(resp: Any, url: str, dl: Any) -> Iterator[bytes]:
    """``resp``'s body (from ``get``) in blocks, as sent (no Content-Encoding inflated); ImageError
    naming ``url`` when it stalls or the deadline passes. The caller caps the size."""
    import urllib3

    try:
        for block in resp.raw.stream(BLOCK, decode_content=False):
            dl.moved(len(block))
            yield block
    except (OSError, urllib3.exceptions.HTTPError) as e:
        if not dl.late:
            raise ImageError(f"download failed: {type(e).__name__}", where=url, hint=reason(e)) from None
    if dl.late:  # the socket was shut down: what was read may only look complete
        raise _late(url, dl)


def read(resp: Any, url: str, dl: Any, limit: int) -> bytes:
    """At most ``limit`` + 1 bytes of the body (one more than allowed shows it is too large)."""
    out = bytearray()
    for block in body(resp, url, dl):
        out += block[: limit + 1 - len(out)]
        if len(out) > limit:
            break
    return bytes(out)
