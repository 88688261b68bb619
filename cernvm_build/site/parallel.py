"""Map a function over items in forked worker processes, handing them what they need as arguments.

``shared`` (templates, rendered HTML, the page set) reaches the workers through ``fork``: it is an
argument of each worker's target, inherited with the process, never pickled and never a module global.
This process works one share itself and forks ``jobs - 1`` children for the others (with two jobs one
fork, not two while this process only waited: each forked worker cost CPU of its own, its
copy-on-write page faults, its start and exit). A child's results travel back as one pickled bytes
object through its own pipe. Below ``PARALLEL_MIN`` items, or with one job, everything runs in this
process (forking costs more than it saves).
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from ..errors import BuildError

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

#: fewer items than this are handled in-process
PARALLEL_MIN = 48


def _child(fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any], fd: int) -> NoReturn:
    """The forked child's whole life: never returns (``os._exit``), so nothing of the parent's stack
    (its ``finally`` blocks, pytest, atexit handlers, buffered output) runs twice."""
    code = 0
    try:
        # SIGTERM ends a worker quietly: the CLI's handler (raise, so undo stacks run) came with the
        # fork, and the parent terminates workers when it stops early
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            data = pickle.dumps(("ok", [fn(shared, item) for item in items]), pickle.HIGHEST_PROTOCOL)
        except BaseException as e:  # reported to the parent, which raises it
            data = pickle.dumps(("error", f"{type(e).__name__}: {e}"), pickle.HIGHEST_PROTOCOL)
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(data)
    except BaseException:  # the parent sees a short read: "worker process died"
        code = 1
    finally:
        os._exit(code)


def _receive(fd: int) -> Any:
    with os.fdopen(fd, "rb") as pipe:
        data = pipe.read()
    try:
        status, payload = pickle.loads(data)
    except Exception:  # nothing or a truncated result: the child ended before it sent all
        raise BuildError(
            "a site build worker process died", hint="run again with --jobs 1 to see why"
        ) from None
    if status != "ok":
        raise BuildError(f"a site build worker failed: {payload}", hint="run again with --jobs 1")
    return payload


def fork_map(
    fn: Callable[[S, T], R], shared: S, items: Sequence[T], jobs: int, least: int = PARALLEL_MIN
) -> list[R]:
    """``[fn(shared, item) for item in items]``, in up to ``jobs`` processes (this one and forked
    children); order kept. ``least``: fewer items run in this process (items that are each much work:
    fewer)."""
    if jobs <= 1 or len(items) < least:
        return [fn(shared, item) for item in items]
    n = min(jobs, len(items))
    # The first item before the fork: what it makes on first use (lazy imports, compiled patterns,
    # parsers, caches) is then made once and inherited, not again in every child.
    first = fn(shared, items[0])
    children: list[tuple[int, int, int]] = []  # (share, pid, read end of its pipe)
    try:
        for w in range(1, n):
            r, wr = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                for _w, _pid, other in children:
                    os.close(other)
                _child(fn, shared, items[w::n], wr)
            os.close(wr)
            children.append((w, pid, r))
        out: list[Any] = [None] * len(items)
        out[0::n] = [first, *(fn(shared, item) for item in items[n::n])]
        while children:
            # pop before reading: the read end is closed by _receive whatever happens
            w, pid, r = children.pop(0)
            try:
                out[w::n] = _receive(r)
            finally:
                os.waitpid(pid, 0)
        return out
    finally:
        # stopped early (an error here or in a child, an interrupt): end the children still running
        for _w, pid, r in children:
            os.close(r)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
