"""Read a tree ahead of its writer, in a second thread.

For CernVM-FS, reading a file is fetching its object, checking its hash and inflating it, which
costs about a third of what deflating the layer does. The walk and the reading of the small files
run in this thread while the layer writer builds tar headers, hashes and hands blocks to the
deflating threads: zlib and hashlib release the GIL, so both cores work. Entries come in batches
(one hand-over per few hundred files, not one per file); at most ``DEPTH`` batches of at most
``BATCH_BYTES`` each wait, so memory stays bounded. Files over ``SMALL`` bytes are not read here:
the writer streams them itself, as it would without read-ahead. A failure (the walk's or a file's)
is raised in the writer when it reaches that point of the tree.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from ..tree import FILE, Entry

SMALL = 1 << 20
BATCH_BYTES = 4 << 20
BATCH_ENTRIES = 256
DEPTH = 4

K = TypeVar("K")
#: one entry: its key (e.g. its layer), the entry, and its content read ahead, or why it could not be
Item = tuple[K, Entry, bytes | BaseException | None]


class _Stop(Exception):
    """The writer stopped listening (it failed, or is done)."""


def read_ahead(
    items: Iterator[tuple[K, Entry]], open_content: Callable[[Entry], BinaryIO]
) -> Iterator[tuple[K, Entry, bytes | BaseException | None]]:
    """``items`` as they come, each with the content of a regular file of at most ``SMALL``
    bytes read (one byte more is asked for: a file that grew is caught by the tar writer's size
    check), None for the others (and for the later paths of a hard-link group, whose content is
    not written again)."""
    q: queue.Queue[list[Item[K]] | BaseException | None] = queue.Queue(DEPTH)
    stop = threading.Event()

    def put(x: list[Item[K]] | BaseException | None) -> None:
        while True:
            if stop.is_set():
                raise _Stop
            try:
                q.put(x, timeout=0.1)
                return
            except queue.Full:
                continue

    def run() -> None:
        try:
            batch: list[Item[K]] = []
            size = 0
            links: set[object] = set()
            for key, e in items:
                data: bytes | BaseException | None = None
                if e.kind == FILE and 0 < e.size <= SMALL and (e.link_id is None or e.link_id not in links):
                    if e.link_id is not None:
                        links.add(e.link_id)
                    try:
                        with open_content(e) as f:
                            data = f.read(e.size + 1)
                    except Exception as err:  # raised by the writer when it reaches this file
                        data = err
                    size += e.size
                batch.append((key, e, data))
                if size >= BATCH_BYTES or len(batch) >= BATCH_ENTRIES:
                    put(batch)
                    batch, size = [], 0
            put(batch)
            put(None)
        except _Stop:
            pass
        except BaseException as err:  # the walk failed: the writer raises it at that point
            try:
                put(err)
            except _Stop:
                pass

    thread = threading.Thread(target=run, name="read-ahead", daemon=True)
    thread.start()
    try:
        while (got := q.get()) is not None:
            if isinstance(got, BaseException):
                raise got
            yield from got
    finally:
        stop.set()
        thread.join()
