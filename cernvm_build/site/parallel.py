"""Map a function over items in forked worker processes, handing them what they need as arguments.

``shared`` (templates, rendered HTML, the page set) reaches the workers through ``fork``: it is an
argument of each worker's target, inherited with the process, never pickled and never a module global.
Only the items' results travel back, through one pipe per worker. Below ``PARALLEL_MIN`` items, or
with one job, everything runs in this process (forking costs more than it saves).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import BuildError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

#: fewer items than this are handled in-process
PARALLEL_MIN = 48


def _worker(fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any], conn: Connection) -> None:
    # SIGTERM ends a worker quietly: the CLI's handler (raise, so undo stacks run) came with the fork,
    # and the parent terminates a worker still exiting after its results arrived (a traceback each)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        conn.send(("ok", [fn(shared, item) for item in items]))
    except BaseException as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def fork_map(
    fn: Callable[[S, T], R], shared: S, items: Sequence[T], jobs: int, least: int = PARALLEL_MIN
) -> list[R]:
    """``[fn(shared, item) for item in items]``, in up to ``jobs`` forked processes; order kept.
    ``least``: fewer items run in this process (items that are each much work: fewer)."""
    if jobs <= 1 or len(items) < least:
        return [fn(shared, item) for item in items]
    import multiprocessing  # here: a small rebuild never forks, and the import costs it ~10 ms

    ctx = multiprocessing.get_context("fork")
    n = min(jobs, len(items))
    workers: list[tuple[Any, Connection]] = []
    try:
        for w in range(n):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(fn, shared, items[w::n], send), daemon=True)
            proc.start()
            send.close()
            workers.append((proc, recv))
        out: list[Any] = [None] * len(items)
        for w, (_proc, recv) in enumerate(workers):
            try:
                status, payload = recv.recv()
            except EOFError:
                raise BuildError(
                    "a site build worker process died", hint="run again with --jobs 1 to see why"
                ) from None
            if status != "ok":
                raise BuildError(f"a site build worker failed: {payload}", hint="run again with --jobs 1")
            out[w::n] = payload
        return out
    finally:
        for proc, recv in workers:
            recv.close()
            if proc.is_alive():
                proc.terminate()
            proc.join()
