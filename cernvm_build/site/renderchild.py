"""A forked process that imports jinja2 and renders templates for a one-shot build's few pages.

A one-page rebuild through the CLI renders one page and a sidebar, and importing jinja2 for that (its
compiler, parser and nodes come with ``jinja2.environment`` even when every template is loaded from
the bytecode cache) was ~0.03 s of its ~0.16 s wall, on the one core the build used. The builder forks
this child as soon as it knows Markdown will be rendered by one process (``Builder._build``): the
child imports jinja2 and makes the environment while the parent renders the Markdown, loads the data
and plans; the parent then sends each render (template name and context, pickled: ~15 KB for a docs
page) through a pipe and gets the HTML back. The parent never imports jinja2 on that path.

Correctness does not depend on the child: it writes nothing (the parent writes every output, as
before), and when it is gone or fails in any way but a template's own error (killed, a context that
does not pickle, an unexpected exception), ``render`` returns None and the caller renders in-process,
as a build without the child does; a template's error (a ``CernVMError``) comes back as its parts and
is raised here, one line like any other. The child ends at the end of its pipe (the parent closed it,
or died) and is killed and reaped by ``close``; SIGINT and SIGTERM end it without a word (the parent
reports them). Only the process that forked it uses it: a forked write worker renders itself.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import BuildError, CernVMError

if TYPE_CHECKING:
    from .templates import Environment

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


def _serve(env: Environment, requests: int, replies: int) -> None:
    env.warm()  # jinja2 imported and the environment made while the parent plans
    while True:
        try:
            name, ctx = _receive(requests)
        except EOFError:  # the parent is done (or gone)
            return
        try:
            reply: tuple[str, Any] = ("ok", env.render(name, ctx))
        except CernVMError as e:  # a template's error: its parts (where and hint do not pickle with it)
            reply = ("error", (e.message, e.where, e.hint))
        except Exception as e:  # anything else: the parent renders itself and meets it there
            reply = ("fail", f"{type(e).__name__}: {e}")
        _send(replies, reply)


def _child(env: Environment, requests: int, replies: int, mask: set[int | signal.Signals]) -> NoReturn:
    """The child's whole life: never returns (``os._exit``), so nothing of the parent's stack (its
    ``finally`` blocks, the state's connection, atexit handlers, buffered output) runs twice."""
    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _serve(env, requests, replies)
    except BaseException:  # the parent sees the pipe end and renders itself
        code = 1
    finally:
        os._exit(code)


class RenderChild:
    """The forked renderer (``start``); ``render`` a template there, ``close`` it."""

    def __init__(self, pid: int, requests: int, replies: int):
        self.pid = pid
        self.owner = os.getpid()
        self.requests = requests  # this process's ends of the two pipes
        self.replies = replies

    @classmethod
    def start(cls, env: Environment) -> RenderChild | None:
        """Fork the child for ``env`` (None: the fork failed; the build renders in-process)."""
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
                _child(env, req_r, rep_w, mask)
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
        if self.pid <= 0 or os.getpid() != self.owner:
            return None
        try:
            _send(self.requests, (name, ctx))
            kind, got = _receive(self.replies)
        except (OSError, EOFError, pickle.PicklingError, TypeError, AttributeError, ValueError):
            self.close()  # a context that does not pickle, or the child gone: rendered here from now on
            return None
        if kind == "ok":
            return str(got)
        if kind == "error":
            message, where, hint = got
            raise BuildError(message, where=where, hint=hint)
        self.close()  # "fail": rendered here, where the error is met as without the child
        return None

    def close(self) -> None:
        """End the child and reap it (once; only in the process that forked it)."""
        if self.pid <= 0 or os.getpid() != self.owner:
            return
        pid, self.pid = self.pid, -1
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
