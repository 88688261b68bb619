"""Ending a process without the interpreter's teardown (stdlib only: the initrd's mount process uses it).

Freeing every module's objects one by one costs a one-page ``site build`` ~10 ms of ~140 and the
initrd's mount process 0.27 s of its one CPU under TCG; the kernel takes the memory back at once.
"""

from __future__ import annotations

import atexit
import os
import sys
from contextlib import suppress

TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import NoReturn


def end_process(code: int, *, run_atexit: bool, output_is_result: bool) -> NoReturn:
    """Exit with ``code`` now, after flushing the standard streams.

    ``run_atexit``: run the atexit hooks first, as an ordinary exit does (logging's flush,
    ``weakref.finalize`` cleanups); a caller that registers none may skip them. Either way the caller
    must have closed its files and have no other thread to join (an ordinary exit would join them).
    ``output_is_result``: the output is what the command was run for (``> report.json``), so a failed
    write is one line on stderr and exit 1 at least; otherwise (a log) the status stays ``code``.
    A stream that is None (its fd was closed when Python started), closed or a broken pipe is skipped."""
    if run_atexit:
        atexit._run_exitfuncs()  # the first step of an ordinary exit, as Python runs it
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a closed pipe (`| head`) or stream: nothing to keep
            pass
        except OSError as e:  # a full disk
            if output_is_result:
                with suppress(OSError):
                    os.write(2, f"error: cannot write the output: {e.strerror or e}\n".encode())
                code = code or 1
    os._exit(code)
