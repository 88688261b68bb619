"""Map a function over items in forked worker processes, handing them what they need as arguments.

``shared`` (templates, rendered HTML, the page set) reaches the workers through ``fork``: it is an
argument of each worker's target, inherited with the process, never pickled and never a module global.
This process works too and forks ``jobs - 1`` children (with two jobs one fork, not two while this
process only waited: each forked worker cost CPU of its own, its copy-on-write page faults, its start
and exit). The items are cut into runs of consecutive items (``RUN_ITEMS`` at most), and every process
takes the next run when it is done with its last (a number read from a pipe all share, which the
kernel hands to one reader), so a process slowed by others' load, or by the serial work
this one does first (``meanwhile``), takes fewer runs instead of being waited for; and neighbouring
items (a folder's pages, which share a sidebar) stay in one process. A child sends each run's results
back as soon as they are made (pickled, length-prefixed, through a pipe of its own made as big as the
kernel allows) and this process reads whatever has arrived between its own runs: the pickling, the copy
through the pipe and the unpickling of a render step's ~7 MB happen while both processes work, not
after the last run while a core idles. Below ``PARALLEL_MIN`` items, or with one job, everything runs
in this process (forking costs more than it saves).
"""

from __future__ import annotations

import fcntl
import functools
import os
import pickle
import signal
import struct
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from ..errors import BuildError, CernVMError

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

#: fewer items than this are handled in-process
PARALLEL_MIN = 48
#: the most items in a run a process takes at once: a page is ~1 ms of work, so the processes end
#: within a run's time of each other, and the runs are few (a read of the shared pipe each)
RUN_ITEMS = 8
_RUN = struct.Struct("=I")  # a run's number in the shared pipe: fixed size, one read takes one whole
#: the most runs: their numbers must fit in the pipe before any process reads one (a pipe holds one
#: 4 KiB page at least: what Linux gives a user past its pipe buffer quota)
MAX_RUNS = 4096 // _RUN.size
_FRAME = struct.Struct("=Q")  # the length of a child's message (one pickled run, or its last word)
#: a child's pipe: room for many runs' results, so a child never waits for this process to read
PIPE_BYTES = 1 << 20


def both(first: Callable[[], object], then: Callable[[], object]) -> Callable[[], None]:
    """One ``meanwhile`` of two pieces of work, in this order (a partial: ``args`` names them)."""
    return functools.partial(_in_turn, first, then)


def _in_turn(first: Callable[[], object], then: Callable[[], object]) -> None:
    first()
    then()


def run_size(n: int, jobs: int) -> int:
    """The items in a run: ``RUN_ITEMS``, fewer where there are few items (each process then gets ~16
    runs to balance with), more where ``MAX_RUNS`` runs would not hold them all."""
    return max(1, min(RUN_ITEMS, n // (jobs * 16)), -(-n // MAX_RUNS))


def _next_run(fd: int) -> int | None:
    data = os.read(fd, _RUN.size)  # the runs were all written before any reader started
    return _RUN.unpack(data)[0] if len(data) == _RUN.size else None


def _work(
    fn: Callable[[Any, Any], Any],
    shared: Any,
    items: Sequence[Any],
    size: int,
    runs: int,
    each: Callable[[tuple[int, list[Any]]], object] | None = None,
    keep: Callable[[list[Any]], list[Any]] | None = None,
) -> list[Any]:
    """``(run number, results)`` of each run this process takes from the shared pipe ``runs``; ``each``
    is called with each as it is made; ``keep``: ``fork_map``'s."""
    done = []
    while (run := _next_run(runs)) is not None:
        results = [fn(shared, item) for item in items[run * size : (run + 1) * size]]
        done.append((run, keep(results) if keep is not None else results))
        if each is not None:
            each(done[-1])
    return done


#: a worker's exceptions that reach the parent as themselves (the rest as text): a user's error, and
#: the machine's (a full disk, a read-only cache: the file they name, and the CLI's hint for them)
_FORWARDED = (CernVMError, OSError)


def _sqlite(e: BaseException) -> bool:
    """An SQLite error (the build state's full disk: ``site.build`` names the state for it); by module,
    so that no worker imports sqlite3 for this."""
    return type(e).__module__ == "sqlite3"


def _crossing(e: BaseException) -> BaseException | str:
    """What the parent is sent of a worker's exception: itself (``_FORWARDED``, an SQLite error) where
    it is made again from its pickle, else its text. A class whose ``__init__`` takes other arguments
    than its ``args`` (``model.LinkErrors``) pickles but does not unpickle: the parent read that as a
    garbled message, "a site build worker process died", the error's own words lost."""
    text = f"{type(e).__name__}: {e}"
    if not (isinstance(e, _FORWARDED) or _sqlite(e)):
        return text
    try:
        pickle.loads(pickle.dumps(e, pickle.HIGHEST_PROTOCOL))
    except Exception:  # (it does not pickle, or does not unpickle)
        return text
    return e


def _send(fd: int, message: object) -> None:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    view = memoryview(_FRAME.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


class _Inbox:
    """A child's messages, read as they arrive (``drain``, between this process's runs) or to the end
    (``finish``): ``(run number, results)`` of each run, then ``("end", None)``, or ``("error", text)``.
    ``arrived``: called with each run's (number, results) as it is read; ``keep``: ``fork_map``'s."""

    def __init__(
        self,
        fd: int,
        arrived: Callable[[int, list[Any]], object] | None = None,
        keep: Callable[[list[Any]], list[Any]] | None = None,
    ):
        self.fd = fd
        self.keep = keep
        self.buf = bytearray()
        self.runs: list[tuple[int, list[Any]]] = []
        self.error: str | BaseException | None = None
        self.ended = False
        self.arrived = arrived
        self.garbled = False  # a message did not unpickle: nothing after it is read

    def _parse(self) -> None:
        while not self.garbled and len(self.buf) >= _FRAME.size:
            (n,) = _FRAME.unpack_from(self.buf)
            if len(self.buf) < _FRAME.size + n:
                return
            try:
                tag, payload = pickle.loads(self.buf[_FRAME.size : _FRAME.size + n])
            except Exception:  # (not ``arrived``'s exceptions: those end the map)
                self.garbled = True
                return
            del self.buf[: _FRAME.size + n]
            if tag == "end":
                self.ended = True
            elif tag == "error":
                self.error = payload
            else:
                if self.keep is not None:
                    payload = self.keep(payload)
                self.runs.append((tag, payload))
                if self.arrived is not None:
                    self.arrived(tag, payload)

    def drain(self) -> None:
        """What has arrived, without waiting (the read end is non-blocking)."""
        while True:
            try:
                data = os.read(self.fd, PIPE_BYTES)
            except BlockingIOError:
                break
            if not data:
                break
            self.buf += data
        self._parse()

    def finish(self) -> list[tuple[int, list[Any]]]:
        """Everything, to the child's end; raises ``BuildError`` for a failed or dead child."""
        os.set_blocking(self.fd, True)
        while data := os.read(self.fd, PIPE_BYTES):
            self.buf += data
            self._parse()  # each run as it comes (``arrived``), while the child goes on
        if self.garbled:  # a truncated or garbled message: the child ended in the middle of one
            self.ended = False
        if isinstance(self.error, BaseException):
            raise self.error
        if self.error is not None:
            raise BuildError(f"a site build worker failed: {self.error}", hint="run again with --jobs 1")
        if not self.ended or self.buf:
            raise BuildError("a site build worker process died", hint="run again with --jobs 1 to see why")
        return self.runs


def _child(
    fn: Callable[[Any, Any], Any],
    shared: Any,
    items: Sequence[Any],
    size: int,
    runs: int,
    fd: int,
    parents: list[int],
    mask: set[int | signal.Signals],
) -> NoReturn:
    """The forked child's whole life: never returns (``os._exit``), so nothing of the parent's stack
    (its ``finally`` blocks, pytest, atexit handlers, buffered output) runs twice. ``parents``: the
    parent's pipe ends this child closes; ``mask``: the signal mask to restore (SIGTERM and SIGINT came
    blocked)."""
    code = 0
    try:
        # Both unblocked only once reset, inside this try. SIGTERM ends a worker quietly: the CLI's
        # handler (raise, so undo stacks run) came with the fork, and the parent terminates workers
        # when it stops early. SIGINT (Ctrl-C reaches the whole process group): Python's own, whatever
        # the parent had (e.g. an undo's hold-back), so it raises inside this try (exit 1: "died").
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for other in parents:
            os.close(other)
        try:
            _work(fn, shared, items, size, runs, lambda done: _send(fd, done))
            _send(fd, ("end", None))
        except BaseException as e:  # reported to the parent, which raises it
            # a user's error (a BuildError, a full disk's OSError naming its file) crosses as itself,
            # so the CLI says what and where with its own hint; a bug as its text ("run with --jobs 1")
            _send(fd, ("error", _crossing(e)))
    except BaseException:  # the parent sees no end: "worker process died"
        code = 1
    finally:
        os._exit(code)


def _pipe() -> tuple[int, int]:
    """A child's pipe: as big as ``PIPE_BYTES`` where the kernel allows (else its default), the read
    end non-blocking (``_Inbox.drain``)."""
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # over the system's or this user's pipe limit: the default size works too
        pass
    os.set_blocking(r, False)
    return r, w


def fork_map(
    fn: Callable[[S, T], R],
    shared: S,
    items: Sequence[T],
    jobs: int,
    least: int = PARALLEL_MIN,
    meanwhile: Callable[[], object] | None = None,
    *,
    size: int | None = None,
    first: bool = True,
    arrived: Callable[[int, list[Any]], object] | None = None,
    keep: Callable[[list[Any]], list[Any]] | None = None,
) -> list[R]:
    """``[fn(shared, item) for item in items]``, in up to ``jobs`` processes (this one and forked
    children); order kept. ``least``: fewer items run in this process (items that are each much work:
    fewer). ``meanwhile``: work of this process's own (not of the items) that it does once the children
    are at work, first (before the items when nothing is forked). ``size``: the items in a run (items
    already cut into runs of their own: 1; else ``run_size``'s). ``first``: the first item is done before
    the fork (False: the caller did that warm-up work itself). ``arrived``: called in this process with
    each forked child's run, (run number, results), as it is read: between this process's runs, and
    while it waits for the children at the end (an exception it raises ends the map, as one here).
    ``keep``: called in this process with each run's results (this process's as it makes them, a
    child's as it reads them) before they are held; what it returns is held in their place (the render
    step keeps the HTML past its budget in the state: a site's rendered pages are not all held)."""
    if jobs <= 1 or len(items) < least:
        if meanwhile is not None:
            meanwhile()
        if keep is None:
            return [fn(shared, item) for item in items]
        return [r for item in items for r in keep([fn(shared, item)])]
    # The first item before the fork: what it makes on first use (lazy imports, compiled patterns,
    # parsers, caches) is then made once and inherited, not again in every child.
    done: list[tuple[int, list[Any]]] = []
    rest = items
    if first:
        results = [fn(shared, items[0])]
        done.append((-1, keep(results) if keep is not None else results))
        rest = items[1:]
    size = max(size or run_size(len(rest), jobs), -(-len(rest) // MAX_RUNS))
    count = -(-len(rest) // size)
    runs, wr = os.pipe()
    children: list[tuple[int, _Inbox]] = []  # (pid, what it sent)
    try:
        with os.fdopen(wr, "wb") as feed:  # all of them now: never more than the pipe holds
            feed.write(b"".join(_RUN.pack(run) for run in range(count)))
        # The mask to come back to, read once (a query): the restore then does not depend on a block
        # call that an interrupt could cut short.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
        for _w in range(1, min(jobs, len(items))):
            r, wr = _pipe()
            # SIGTERM and SIGINT blocked across the fork: a child signalled before ``_child`` resets its
            # handlers would otherwise run the parent's (raise), unwinding this stack (its finally
            # blocks) in the child. A signal meant for this process is delivered when it unblocks, only
            # once the new child is in ``children`` (so the finally below ends and reaps it).
            pid = -1  # not forked
            try:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
                pid = os.fork()
                if pid == 0:
                    _child(fn, shared, rest, size, runs, wr, [r, *(o.fd for _pid, o in children)], mask)
                children.append((pid, _Inbox(r, arrived, keep)))
                os.close(wr)
            finally:
                if pid == -1:  # not forked (EAGAIN, ENOMEM, an interrupt): no child to hand the pipe to
                    os.close(r)
                    os.close(wr)
                if pid != 0:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)

        def drain(_done: object) -> None:
            for _pid, inbox in children:
                inbox.drain()

        if meanwhile is not None:
            meanwhile()
        done += _work(fn, shared, rest, size, runs, drain, keep)
        while children:
            # pop before reading: the read end is closed here whatever happens
            pid, inbox = children.pop(0)
            try:
                done += inbox.finish()
            finally:
                os.close(inbox.fd)
                os.waitpid(pid, 0)
        out: list[Any] = []
        for _run, results in sorted(done, key=lambda d: d[0]):
            out += results
        if len(out) != len(items):  # a child took a run and ended without sending it
            raise BuildError("a site build worker process died", hint="run again with --jobs 1 to see why")
        return out
    finally:
        os.close(runs)
        # stopped early (an error here or in a child, an interrupt): end the children still running
        for pid, inbox in children:
            os.close(inbox.fd)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
