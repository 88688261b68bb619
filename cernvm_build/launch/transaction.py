"""An undo stack: each step of a multi-step change registers how to take it back.

``create`` writes files, defines a domain and starts it; if anything goes wrong — an error, Ctrl-C,
SIGTERM (which the CLI turns into an exception) — every step done so far is undone, newest first,
so nothing half-made is left. While undoing, further SIGINT/SIGTERM are held back (in the main
thread) so that a second Ctrl-C cannot leave the undo itself half-done; they are delivered after.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)


class Transaction:
    """``with Transaction() as tx: ...; tx.on_undo(fn)``; undone unless the block finishes."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], Any]]] = []

    def on_undo(self, what: str, fn: Callable[[], Any]) -> None:
        self._undo.append((what, fn))

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self._undo.clear()
            return
        with _signals_held():
            self.rollback()

    def rollback(self) -> None:
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except Exception as e:  # undo the rest anyway; the original error is what the user sees
                log.warning("could not undo %s: %s", what, e)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        saved[sig] = signal.getsignal(sig)
        signal.signal(sig, lambda num, _frame: pending.append(num))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if pending:  # delivered now, to the handler the program had (Ctrl-C still means Ctrl-C)
            log.info("signal %s arrived while undoing; the undo finished first", pending[0])
            signal.raise_signal(pending[0])
