"""Errors a user can cause.

Every one carries a single-line message that says what is wrong and where, and a hint that says what
to do. The CLI prints ``error: <where>: <message>`` and ``hint: <hint>`` and exits non-zero without a
traceback. Internal bugs are not ``CernVMError`` and keep their tracebacks.
"""

from __future__ import annotations


class Location:
    """Where in a user's input the problem is: a file with optional line/column, and a key path.
    Compared and hashed by value.

    A plain class, neither a dataclass nor a NamedTuple: every command imports this module, and
    ``dataclasses`` imports ``inspect`` (with ``ast``, ``dis``, ``tokenize``), ~10 ms of each command's
    start, 5% of a one-page site rebuild (``tests/site/test_site_cli.py`` checks a rebuild never
    imports it); ``typing.NamedTuple`` costs importing ``typing``, which the initrd's mount start
    avoids (issue 13, ``tests/cvmfs/test_core.py``)."""

    __slots__ = ("column", "file", "key", "line")

    def __init__(
        self,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        key: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.key = key

    def _key(self) -> tuple[str | None, int | None, int | None, str | None]:
        return (self.file, self.line, self.column, self.key)

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if type(other) is Location else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Location(file={self.file!r}, line={self.line!r}, column={self.column!r}, key={self.key!r})"

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            pos = self.file
            if self.line is not None:
                pos += f":{self.line}"
                if self.column is not None:
                    pos += f":{self.column}"
            parts.append(pos)
        if self.key:
            parts.append(self.key)
        return ": ".join(parts)


class CernVMError(Exception):
    """A problem with the user's input or environment, explained in one line plus a hint."""

    #: process exit code the CLI uses for this kind of error
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, where: Location | str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where

    def __str__(self) -> str:
        where = str(self.where) if self.where else ""
        return f"{where}: {self.message}" if where else self.message

    def json_details(self) -> dict[str, object]:
        """Fields of ``--json``'s error document besides the five every error has (``cli.app``)."""
        return {}


class UsageError(CernVMError):
    """Wrong command-line use."""

    exit_code = 2


class InputMissing(UsageError):
    """A file or folder the command line names is not there: exit 2, as a bad argument is (grep, ls
    and diff say so too), whichever area's command it is (``cli.inputs``)."""

    def __init__(self, path: str, what: str = "file or folder", *, hint: str | None = None) -> None:
        super().__init__(f"no such {what}", where=path, hint=hint or "check the path")


class ProfileError(CernVMError):
    """A profile cannot be loaded, merged, rendered or validated."""

    exit_code = 3


class ToolError(CernVMError):
    """An external tool is missing or failed."""

    exit_code = 4


class MissingExtraError(ToolError):
    """A command needs an optional part of the toolkit (a pip extra) that is not installed."""


class CvmfsError(CernVMError):
    """A CernVM-FS repository cannot be read, verified or written."""

    exit_code = 5


class IntegrityError(CvmfsError):
    """A hash, size or signature does not match: the data must not be used."""

    exit_code = 6


class BuildError(CernVMError):
    """An image, container or site cannot be built from the given inputs."""

    exit_code = 7


class LaunchError(CernVMError):
    """A virtual machine cannot be created, reached or managed."""

    exit_code = 8


class ConfigFileError(ProfileError):
    """``~/.cernvm-launch.conf``, a CONFIGURATION_FILE or a user-data file is malformed: settings
    written by the user, so the same exit code as a bad profile."""


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


class MirrorError(CernVMError):
    """A package repository cannot be verified or mirrored."""

    exit_code = 9


def utf8_text(
    data: bytes, file: str, hint: str = "save the file as UTF-8", error: type[CernVMError] = BuildError
) -> str:
    """``data`` read from ``file`` as UTF-8 text; bytes that are not: an ``error`` (``BuildError``)
    naming the byte and its line (the site's config, data files and templates, the release's notes
    and SHA256SUMS, skopeo's configuration)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(
            f"not UTF-8 text (byte {e.start})",
            where=Location(file=file, line=data.count(b"\n", 0, e.start) + 1),
            hint=hint,
        ) from None


EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM

EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "error",
    2: "usage error (bad arguments; a file or folder named on the command line is not there)",
    3: "invalid profile or settings file (e.g. ~/.cernvm-launch.conf)",
    4: "external tool or pip extra missing, or a tool failed",
    5: "CernVM-FS repository error",
    6: "integrity failure (hash, size or signature mismatch)",
    7: "build failed",
    8: "launch failed (libvirt, instance, image, SSH)",
    9: "mirror failed",
    130: "interrupted (Ctrl-C)",
    143: "terminated (SIGTERM)",
}
