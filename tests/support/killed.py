"""A child Python process killed with SIGKILL in the middle of a write: what an interrupted run leaves
behind, for the tests of "the re-run finishes the job and removes the dead run's half"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_killed(script: str, *args: object) -> None:
    """Run ``script`` (``python -c``, the project importable, ``sys.argv[1:]`` the ``args``), which
    ends itself with SIGKILL; anything else (it finished, or raised) fails the test."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-c", script, *map(str, args)]
    proc = subprocess.run(argv, env=env, capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode(errors="replace")


def killed_in_atomic_file(path: Path, data: bytes, mode: int | None = None) -> None:
    """A process killed inside ``fsutil.atomic_file(path)`` once ``data`` is written and flushed: its
    temporary is left beside ``path``, as a real run's is after a SIGKILL."""
    opened = (
        "atomic_file(Path(sys.argv[1]))" if mode is None else f"atomic_file(Path(sys.argv[1]), {mode:#o})"
    )
    run_killed(
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from cernvm_build.fsutil import atomic_file\n"
        f"with {opened} as f:\n"
        "    f.write(bytes.fromhex(sys.argv[2]))\n"
        "    f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n",
        path,
        data.hex(),
    )
