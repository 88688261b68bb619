"""A module's logger whose ``logging`` is imported on its first message.

``log = lazylog.get(__name__)`` stands for ``logging.getLogger(__name__)`` in the modules the
μCernVM initrd's mount imports (its reader core and FUSE daemon): they log only on rare paths (a
failed fetch, a stopped boot list), and ``logging`` with what it pulls in (traceback, linecache,
tokenize, string, weakref) was ~8 % of that process's import CPU, which under emulation is on the
boot's critical path. The messages, their loggers' names and levels are ``logging``'s own.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's own flag costs the import of typing (mypy reads this one too)
if TYPE_CHECKING:
    import logging


class Logger:
    """``logging.getLogger(name)``, looked up on first use (``logger()``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def logger(self) -> logging.Logger:
        import logging  # deliberate lazy import (see the module's text)

        return logging.getLogger(self.name)

    def debug(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self.logger().debug(msg, *args, exc_info=exc_info)

    def info(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self.logger().info(msg, *args, exc_info=exc_info)

    def warning(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self.logger().warning(msg, *args, exc_info=exc_info)

    def error(self, msg: str, *args: object, exc_info: bool = False) -> None:
        self.logger().error(msg, *args, exc_info=exc_info)

    def exception(self, msg: str, *args: object) -> None:
        """An error with the exception being handled (call it in an ``except`` block)."""
        self.logger().exception(msg, *args)


def get(name: str) -> Logger:
    return Logger(name)
