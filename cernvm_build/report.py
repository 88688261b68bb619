"""The one reporter protocol: how a stage tells what it is doing, without printing.

A stage takes a ``Reporter`` (usually as ``BuildContext.reporter``) and calls ``step`` when it starts a
step, ``progress`` while counting through work, ``warn`` for what the user should know. The library's
default is ``NULL_REPORTER`` (silent); the CLI's implementation (``cli.app.Output.reporter()``) prints
steps, draws progress bars and, with ``--json``, keeps stdout for the result. ``scoped`` prefixes every
message, e.g. with a profile's name while a release builds profiles in parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

#: the progress half of a Reporter (``reporter.progress``), for engines that only count (the mirror)
ProgressFn = Callable[[str, int, int | None], None]


class Reporter(Protocol):
    def step(self, message: str) -> None:
        """A step starts (one line: 'kernel: linux-image-6.1 (cached)')."""

    def progress(self, what: str, done: int, total: int | None) -> None:
        """``done`` of ``total`` units of ``what`` ('pages', 'bytes', 'files'); total None when unknown."""

    def warn(self, message: str) -> None:
        """Something the user should know that does not stop the work."""


class NullReporter:
    """Says nothing: the library's default."""

    def step(self, message: str) -> None:
        pass

    def progress(self, what: str, done: int, total: int | None) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


NULL_REPORTER: Reporter = NullReporter()


# The reporters are plain classes, not dataclasses: every command imports this module, and a dataclass
# costs ~0.5 ms to create (its methods are made with ``exec``).


class Scoped:
    """``inner`` with ``prefix: `` before every step and warning and ``prefix `` before progress labels."""

    __slots__ = ("inner", "prefix")

    def __init__(self, inner: Reporter, prefix: str):
        self.inner = inner
        self.prefix = prefix

    def step(self, message: str) -> None:
        self.inner.step(f"{self.prefix}: {message}")

    def progress(self, what: str, done: int, total: int | None) -> None:
        self.inner.progress(f"{self.prefix} {what}", done, total)

    def warn(self, message: str) -> None:
        self.inner.warn(f"{self.prefix}: {message}")


def scoped(reporter: Reporter, prefix: str) -> Reporter:
    return Scoped(reporter, prefix)


class Recorder:
    """Keeps everything it is told, in order (tests, and callers that report after the fact)."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def step(self, message: str) -> None:
        self.events.append(("step", message))

    def progress(self, what: str, done: int, total: int | None) -> None:
        self.events.append(("progress", what, str(done), str(total)))

    def warn(self, message: str) -> None:
        self.events.append(("warn", message))

    def steps(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "step"]


class LineReporter:
    """Steps and warnings as lines to ``say`` (indented), progress left out: for callers that log lines.
    ``warn``: where warnings go instead (the CLI's ``Output.warn``: -q hides steps, not warnings)."""

    __slots__ = ("indent", "say", "warn_to")

    def __init__(
        self, say: Callable[[str], None], indent: str = "  ", *, warn: Callable[[str], None] | None = None
    ):
        self.say = say
        self.indent = indent
        self.warn_to = warn

    def step(self, message: str) -> None:
        self.say(f"{self.indent}{message}")

    def progress(self, what: str, done: int, total: int | None) -> None:
        pass

    def warn(self, message: str) -> None:
        if self.warn_to is not None:
            self.warn_to(message)
            return
        self.say(f"{self.indent}warning: {message}")
