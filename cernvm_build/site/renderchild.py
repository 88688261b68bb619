"""A forked process that imports jinja2 and renders templates for a one-shot build's few pages.

A one-page rebuild through the CLI renders one page and a sidebar, and importing jinja2 for that (its
compiler, parser and nodes come with ``jinja2.environment`` even when every template is loaded from
the bytecode cache) was ~0.02-0.03 s of its ~0.16-0.19 s wall, on the one core the build used. A
one-shot build (the CLI's, with more than one job) that finds a few sources edited right after its
scan, while a core is idle at that moment (``idle_core``), forks this child (``start``,
``Builder._build``): it imports jinja2 and makes the environment on the second core while the parent
reads the metadata, renders the Markdown, loads the data and plans; the parent then sends each render
(template name and context, pickled: ~15 KB for a docs page) through a pipe and gets the HTML back,
and never imports jinja2 itself. A cold, a no-change and a many-page build fork nothing.

It also runs a call while the parent goes on (``start_call``, ``end_call``): the one stale search shard
of a one-page rebuild (``search.offload``), made after the parent wrote the pages, while it walks the
output for strays (its postings merged again and its files written: ~14 % of the parent's instructions).

Correctness does not depend on the child: it writes no page (the parent writes them, as before), only
a shard's files by rename after the manifest's row is forgotten (``build._write``: a child killed
half-way leaves an index the next build makes again), and when it is gone or fails in any way but a
template's own error (killed, a context that does not pickle, an unexpected exception), ``render``
returns None and the caller renders in-process, as a build without the child does (``end_call``: the
caller makes the shard); a template's error (a ``CernVMError``) comes back as its parts and
is raised here, one line like any other. The child ends at the end of its pipe (the parent closed it,
or died) and is killed and reaped by ``close``; SIGINT and SIGTERM end it without a word (the parent
reports them). Only the process that forked it uses it: a forked write worker renders itself.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
from pathlib import Path
from typing import Any, NoReturn

from ..errors import BuildError, CernVMError

_FRAME = struct.Struct("=Q")  # the length of a pickled message


def _send(fd: int, message: object) -> None:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    view = memoryview(_FRAME.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read(fd: int, n: int) -> bytes | None:
    """``n`` bytes, or None at the pipe's end."""
    buf = bytearray()
    while len(buf) < n:
        got = os.read(fd, n - len(buf))
        if not got:
            return None
        buf += got
    return bytes(buf)


def _receive(fd: int) -> Any:
    """The next message; raises EOFError at the pipe's end (also in the middle of a message)."""
    head = _read(fd, _FRAME.size)
    body = None if head is None else _read(fd, _FRAME.unpack(head)[0])
    if body is None:
        raise EOFError
    return pickle.loads(body)


#: the modules of the call that follows the renders (the search shard's, ``search.offload``): imported
#: by the child once no request came ``IDLE_WAIT`` seconds after a render, while the parent writes the
#: pages, where unpickling the call imported them on the rebuild's critical path (~15M instructions)
IDLE_IMPORTS = (f"{__package__}.search",)
IDLE_WAIT = 0.002


def _serve(requests: int, replies: int, folder: Path, cache: Path | None) -> None:
    import importlib
    import select

    from . import jinjaless, templates

    # the templates' code from jinja2's bytecode cache, run without jinja2's compiler (``jinjaless``);
    # jinja2 itself only where that cannot render a page
    fast = jinjaless.Fast(folder, cache)
    fast.warm()
    env = templates.environment(folder, cache)
    idle = list(IDLE_IMPORTS)
    # poll, not select: the pipe's descriptor is ≥ 1024 in a process with many files open (``site
    # serve`` watching many folders), which select refuses (ValueError: the child died after a render)
    waiting = select.poll()
    waiting.register(requests, select.POLLIN)
    kind = ""
    while True:
        # (back-to-back renders, a page's and its sidebar's, are not held up by the imports)
        while idle and kind == "render" and not waiting.poll(IDLE_WAIT * 1000):
            importlib.import_module(idle.pop())
        try:
            kind, what, args = _receive(requests)
        except EOFError:  # the parent is done (or gone)
            return
        try:
            got = _render(fast, env, what, args) if kind == "render" else what(*args)
            reply: tuple[str, Any] = ("ok", got)
        except CernVMError as e:  # a template's error: its parts (where and hint do not pickle with it)
            reply = ("error", (e.message, e.where, e.hint))
        except Exception as e:  # anything else: the parent renders itself and meets it there
            reply = ("fail", f"{type(e).__name__}: {e}")
        _send(replies, reply)


def _render(fast: Any, env: Any, name: str, ctx: dict[str, Any]) -> str:
    got = fast.render(name, ctx)
    if got is None:
        from . import jinjaless

        jinjaless.complete()
        got = env.render(name, ctx)
    return str(got)


def _child(
    requests: int, replies: int, mask: set[int | signal.Signals], folder: Path, cache: Path | None
) -> NoReturn:
    """The child's whole life: never returns (``os._exit``), so nothing of the parent's stack (its
    ``finally`` blocks, the state's connection, atexit handlers, buffered output) runs twice."""
    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _serve(requests, replies, folder, cache)
    except BaseException:  # the parent sees the pipe end and renders itself
        code = 1
    finally:
        os._exit(code)


#: the kernel's load figures; the fourth field is "runnable/total" scheduling entities right now
LOADAVG = "/proc/loadavg"


def idle_core() -> bool:
    """Whether a core is free for the child now: fewer threads runnable at this moment (the reader of
    ``LOADAVG``, this process, among them) than the cores this process may use. On a machine whose
    cores are all busy the child only adds its CPU (~0.04 s: its own jinja2 import, copy-on-write
    faults) to the others' and waits for a core itself (measured at load 4-10 on 2 cores: one-page
    rebuilds slower, wall and CPU). Not the 1-minute load average: it lags a minute behind a burst,
    and builds run one after another (an editor's save hook, a benchmark) keep it near 1 by
    themselves, which on 2 cores read as busy and never forked where the second core was idle."""
    try:
        with open(LOADAVG, encoding="ascii") as f:
            runnable = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):  # no such figure: assume busy
        return False
    return runnable < len(os.sched_getaffinity(0))


class RenderChild:
    """The forked renderer (``start``); ``render`` a template there, ``close`` it."""

    def __init__(self, pid: int, requests: int, replies: int):
        self.pid = pid
        self.owner = os.getpid()
        self.requests = requests  # this process's ends of the two pipes
        self.replies = replies
        self.pending = False  # a request sent (``start_call``) whose reply is not read yet

    @classmethod
    def start(cls, folder: Path, cache: Path | None) -> RenderChild | None:
        """Fork the child for the templates in ``folder`` (``cache``: jinja2's bytecode cache); None:
        the fork failed, the build renders in-process."""
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
        pid = -1
        try:
            # SIGTERM and SIGINT blocked across the fork: a child signalled before ``_child`` resets
            # its handlers would run the parent's (raise) and unwind the parent's stack in the child
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
            pid = os.fork()
            if pid == 0:
                os.close(req_w)
                os.close(rep_r)
                _child(req_r, rep_w, mask, folder, cache)
        except OSError:  # EAGAIN, ENOMEM: no child
            pass
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                os.close(req_r)
                os.close(rep_w)
        if pid <= 0:
            os.close(req_w)
            os.close(rep_r)
            return None
        return cls(pid, req_w, rep_r)

    def render(self, name: str, ctx: dict[str, Any]) -> str | None:
        """The page the child rendered, or None: render it here (the child is gone, failed, or this is
        not the process that forked it). Raises the ``BuildError`` of a template's error."""
        if not self.start_call("render", name, ctx):
            return None
        done, got = self.end_call()
        return str(got) if done else None

    def start_call(self, kind: str, what: Any, args: Any) -> bool:
        """Send the child a render (``kind`` "render": template name, context) or a call (``kind``
        "call": a module-level function and its arguments' tuple, e.g. ``search.update``'s shards,
        made there while this process goes on); its result is ``end_call``'s. False: the child is gone,
        busy with another, or this is not the process that forked it (then do it here)."""
        if self.pid <= 0 or os.getpid() != self.owner or self.pending:
            return False
        try:
            _send(self.requests, (kind, what, args))
        except (OSError, pickle.PicklingError, TypeError, AttributeError, ValueError):
            self.close()  # arguments that do not pickle, or the child gone: done here from now on
            return False
        self.pending = True
        return True

    def end_call(self) -> tuple[bool, Any]:
        """(True, the result) of the request ``start_call`` sent, or (False, None): the child is gone or
        failed (do it here, where the error is met as without the child). Raises the ``BuildError`` of
        a template's or a call's own error (a ``CernVMError`` there)."""
        if not self.pending:
            return False, None
        self.pending = False
        try:
            kind, got = _receive(self.replies)
        except (OSError, EOFError, pickle.UnpicklingError, TypeError, AttributeError, ValueError):
            self.close()
            return False, None
        if kind == "ok":
            return True, got
        if kind == "error":
            message, where, hint = got
            raise BuildError(message, where=where, hint=hint)
        self.close()  # "fail"
        return False, None

    def close(self) -> None:
        """End the child and reap it (once; only in the process that forked it)."""
        if self.pid <= 0 or os.getpid() != self.owner:
            return
        pid, self.pid = self.pid, -1
        self.pending = False
        for fd in (self.requests, self.replies):
            os.close(fd)
        try:
            os.kill(pid, signal.SIGKILL)  # nothing of its own to finish: it writes no file
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # reaped already (a SIGCHLD handler of a caller's)
            pass
