"""The errors of cernvm-launch, each mapped to the original tool's exit codes by the CLI.

The original ``cernvm-launch`` exits 1 for wrong arguments, 2 for a bad parameter file, 3 for an
unknown operation and 4 for everything that fails at run time. Inside ``cernvm-build`` these stay
``LaunchError`` (exit 8) like every other launch failure.
"""

from __future__ import annotations

from ..errors import LaunchError

__all__ = [
    "ConfigFileError",
    "ConnectError",
    "ImageError",
    "InstanceError",
    "LaunchError",
    "NotReadyError",
    "SSHError",
]


class ConfigFileError(LaunchError):
    """``~/.cernvm-launch.conf`` or a per-create CONFIGURATION_FILE is malformed (original exit 2)."""


class ConnectError(LaunchError):
    """libvirt cannot be reached at the URI: daemon down, no permission, bad URI."""


class InstanceError(LaunchError):
    """An instance does not exist, exists already, or is in the wrong state."""


class ImageError(LaunchError):
    """A boot image is missing, unknown or fails verification."""


class SSHError(LaunchError):
    """SSH to an instance failed: no answer, wrong host key, no authentication."""


class NotReadyError(LaunchError):
    """The guest did not come up in time; carries the serial console's tail."""

    def __init__(self, message: str, *, hint: str | None = None, console_tail: str = "") -> None:
        super().__init__(message, hint=hint)
        self.console_tail = console_tail
