"""A module's logger whose ``logging`` is imported on its first message.

``log = lazylog.get(__name__)`` stands for ``logging.getLogger(__name__)`` in the modules the
μCernVM initrd's mount imports (its reader core and FUSE daemon): they log only on rare paths (a
failed fetch, a stopped boot list), and ``logging`` with what it pulls in (traceback, linecache,
tokenize, string, weakref) was ~8 % of that process's import CPU, which under emulation is on the
boot's critical path. The messages, their loggers' names and levels are ``logging``'s own, and so is
the place a record names (file, line, function: the caller's, ``stacklevel``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's own flag costs the import of typing (mypy reads this one too)
if TYPE_CHECKING:
    import logging


class Logger:
    """``logging.getLogger(name)``, looked up on first use (``logger()``) and kept: ``--debug`` logs
    every FUSE request. Thread-safe: ``getLogger`` answers every thread the one logger of a name, so
    two threads' first messages at once at most both look it up."""

    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def logger(self) -> logging.Logger:
        found = self._logger
        if found is None:
            import logging  # deliberate lazy import (see the module's text)

            if logging.lastResort is not None and logging.lastResort.formatter is None:
                # Where nobody configured logging (the initrd's mount: its output is the log the init
                # shows), a record goes to logging's last-resort handler as it is: a server's answer
                # quoted in a read's error reached /tmp/cvmfs.log and the console raw (pr26b
                # finding 10). The CLI's own handler has the same formatter (``cli.app``).
                from .termtext import log_formatter

                logging.lastResort.setFormatter(log_formatter())
            found = self._logger = logging.getLogger(self.name)
        return found

    # stacklevel=2: the record names the line that logged, not this module's
    def debug(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self.logger().debug(msg, *args, exc_info=exc_info, stacklevel=2)

    def info(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self.logger().info(msg, *args, exc_info=exc_info, stacklevel=2)

    def warning(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self.logger().warning(msg, *args, exc_info=exc_info, stacklevel=2)

    def error(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self.logger().error(msg, *args, exc_info=exc_info, stacklevel=2)

    def exception(self, msg: str, *args: object) -> None:
        """An error with the exception being handled (call it in an ``except`` block)."""
        self.logger().exception(msg, *args, stacklevel=2)


def get(name: str) -> Logger:
    return Logger(name)
