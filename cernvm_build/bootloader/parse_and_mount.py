"""The user-data parser and the CernVM-FS mount in one Python start (the initrd's, under emulation).

    python3 -m cernvm_build.bootloader.parse_and_mount        (fd 3: the parse's answer, fd 4: requests)

The init starts it early on every boot, once the modules are loaded (``init.head.sh`` ``start_mount``,
from ``01-modules``): it imports the mount at once, so its imports (~1 s of CPU under TCG) fill the
init's waits (DHCP, the context drive, e2fsck) instead of following them (not the modules' loading: all
CPU, nothing to fill, and beside it the imports made the boot ~0.75 guest-s later), and a boot that
parses its user data starts Python once, not twice (~0.4 s each under TCG beyond the first one's
warm-up). It then reads fd 4. A boot that must parse its user data (a first boot, a seeded one, changed
user data; the lines an earlier boot kept on the scratch disk make it needless otherwise) writes
``parse``, ``USER_DATA`` and ``LINES`` (one a line): the process parses ``USER_DATA`` into ``LINES``
(what ``python3 -m cernvm_build.bootloader.userdata`` prints: checked ``key=value`` lines; its reports
on stderr), writes ``0`` (or ``1``: the parse failed, the lines are not to be kept) and a newline on fd
3. A first boot writes ``disk``, the number of arguments and one argument a line (``first-boot
[MB]``, or ``grow DISK`` when the disk grew); a boot that reads its user data from a cloud metadata
service or an OpenNebula CD writes ``cloudsource`` and its arguments the same way (``metadata OUT
--url URL``, ``opennebula CONTEXT_SH OUT``): the process runs what ``python3 -m
cernvm_build.bootloader.NAME ARGS`` would (its reports on stderr) and writes its status, a blank and
the first line of its output on fd 3 (each a second Python start, ~0.6-0.7 guest-s under TCG with
its imports: the mount's imports hold all of the disk code's, cloudsource adds http.client).
Then the mount's command line: a log file (stdout and stderr go there, as the init's redirection did),
the number of arguments, then one argument a line. It runs the mount as ``python3 -m
cernvm_build.cvmfs.mount`` would and exits with its status, without the interpreter's teardown
(``exit_now``). fd 4 at its end before a whole command line (the init went another way): exits 0,
nothing mounted. The init's side is ``parse_user_data`` and ``mount_cvmfs``.
"""

from __future__ import annotations

import gc
import os
import sys

from ..numtext import decimal
from ..procexit import end_process

TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import IO, NoReturn

DONE_FD = 3
ARGS_FD = 4


def _parse(source: str, lines: str) -> bool:
    # imported only when asked: a reboot with unchanged user data (the lines kept on the scratch disk)
    # never parses, and the parser with its settings table was ~0.2 guest-s of the imports under TCG
    from . import userdata

    try:
        with open(source, "rb") as f:
            parsed = userdata.parse(f.read())
        for msg in parsed.messages:
            sys.stderr.write(f"ucernvm: context: {msg}\n")
        text = userdata.render(parsed.values)
    except OSError as e:
        sys.stderr.write(f"ucernvm: context: {source}: {e.strerror}\n")
        text, ok = "", False
    except Exception as e:  # a parser bug must not kill the process that also mounts the OS
        why = f"{type(e).__name__}: {str(e)[:200]}"
        sys.stderr.write(f"ucernvm: context: {source}: cannot read the user data ({why}), ignored\n")
        text, ok = "", False
    else:
        ok = True
    sys.stderr.flush()
    with open(lines, "w", encoding="utf-8") as f:
        f.write(text)
    return ok


#: the helpers a request may name (``python3 -m cernvm_build.bootloader.NAME``), each with the init's
#: step its error line is under
HELPERS = {"disk": "devices", "cloudsource": "context"}


def _helper(name: str, args: list[str]) -> bytes:
    """``python3 -m cernvm_build.bootloader.NAME ARGS`` in this process: its status, a blank and the
    first line of what it printed. An error is reported on stderr, as that start's traceback was.
    Imported only when asked: cloudsource's import of http.client is no part of the mount's."""
    import contextlib
    import importlib
    import io

    out = io.StringIO()
    try:
        helper = importlib.import_module(f"{__package__}.{name}")
        with contextlib.redirect_stdout(out):
            status = helper.main(args)
    except Exception as e:  # the process that also mounts the OS goes on; the init decides
        sys.stderr.write(f"ucernvm: {HELPERS[name]}: {name} {' '.join(args)}: {type(e).__name__}: {e}\n")
        status = 1
    sys.stderr.flush()
    first = out.getvalue().partition("\n")[0]
    return f"{status} {first}\n".encode("utf-8", "surrogateescape")


def _lines(f: IO[str], count: str) -> list[str] | None:
    """``count`` (a line: the number of lines that follow) lines from ``f``, without their newlines;
    None when the count is not one or ``f`` ends first."""
    n = decimal(count.strip(), 6)
    if not count.endswith("\n") or n is None:
        return None
    lines = [f.readline() for _ in range(n)]
    if not all(a.endswith("\n") for a in lines):
        return None
    return [a[:-1] for a in lines]


def _mount_command(fd: int) -> tuple[str, list[str]] | None:
    """The log file and the mount's arguments from ``fd``, after the ``parse``, ``disk`` and
    ``cloudsource`` requests that come first (see the module's text), each answered on fd 3; None
    when it ends first."""
    with os.fdopen(fd, "r", encoding="utf-8", errors="surrogateescape") as f:
        log = f.readline()
        while log == "parse\n" or log[:-1] in HELPERS:
            if log == "parse\n":
                source, lines = f.readline(), f.readline()
                if not (source.endswith("\n") and lines.endswith("\n")):
                    return None
                os.write(DONE_FD, b"0\n" if _parse(source[:-1], lines[:-1]) else b"1\n")
            else:
                args = _lines(f, f.readline())
                if args is None:
                    return None
                os.write(DONE_FD, _helper(log[:-1], args))
            log = f.readline()
        args = _lines(f, f.readline())
    if not log.endswith("\n") or args is None:
        return None
    return log[:-1], args


_shown: object = None  # the buffer /proc/PID/cmdline reads from once _show_mount_command set it


def _show_mount_command(args: list[str]) -> None:
    """``ps`` and ``/proc/PID/cmdline`` show the daemon as the init's ``py_storage`` would have
    started the mount (``@ucernvm-cvmfs ... -m cernvm_build.cvmfs.mount ARGS``: its arguments, where
    one looks for them), not as the parser it began as. ``prctl(PR_SET_MM)`` points the kernel at a
    new argument area (root may; the initrd is root). Where that is refused the command line stays
    the parser's; argv[0], which marks a root-storage daemon for systemd, is the same either way."""
    global _shown
    try:
        import ctypes

        with open("/proc/self/cmdline", "rb") as f:
            words = f.read().split(b"\0")
        head = words[: words.index(b"-m") + 1]
        text = b"\0".join([*head, b"cernvm_build.cvmfs.mount", *(os.fsencode(a) for a in args)]) + b"\0"
        buf = ctypes.create_string_buffer(text, len(text))
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_mm, arg_start, arg_end = 35, 8, 9
        start = ctypes.addressof(buf)
        # the new area lies below the old one (heap below stack): start first keeps start <= end
        if libc.prctl(pr_set_mm, arg_start, ctypes.c_ulong(start), 0, 0) == 0:
            libc.prctl(pr_set_mm, arg_end, ctypes.c_ulong(start + len(text)), 0, 0)
        _shown = buf
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    if argv:
        sys.stderr.write("usage: python3 -m cernvm_build.bootloader.parse_and_mount (no arguments)\n")
        return 2
    # imported while the init goes on (modules, network, the scratch disk): its wait is shorter.
    # Without the cyclic GC: its passes over the imports' objects (modules, classes, functions, all
    # kept for the daemon's life) were 6.6 M of their 90 M instructions (callgrind, the initrd's
    # Python), ~0.05 guest-s under TCG on the boot's critical path; frozen (never collected, as they
    # would not be), the daemon's later full collections do not walk them again.
    gc.disable()
    from ..cvmfs import mount

    gc.freeze()
    gc.enable()

    command = _mount_command(ARGS_FD)
    try:  # the requests are answered: the done fifo is not the mount's to keep
        os.close(DONE_FD)
    except OSError:
        pass
    if command is None:
        return 0
    log, args = command
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    _show_mount_command(args)
    return mount.main(args)


def exit_now(status: int) -> NoReturn:
    """End the process without the interpreter's teardown (freeing every module's objects: 0.27 s of
    the initrd's one CPU under TCG, between the daemon's "ready" and the init going on, measured
    under icount). What this process leaves is written through by then: the lines file is closed
    after the parse, the mount's line is printed and flushed, the FUSE daemon is a child of its own;
    only the standard streams' buffers are flushed. No atexit hook is run: this process registers
    none the init relies on. The status is the mount's: the streams are only its log."""
    end_process(status, run_atexit=False, output_is_result=False)


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
