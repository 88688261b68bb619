"""A hostile mirror source folder of links fanning out (``d0/{a,b} -> ../d1``, ... ``d21``: 2^23
paths, no loop, nothing leaving the folder): the CPU seconds ``s3plan.walk_files`` takes to reach
its 2 M-entry cap, the current code next to the code before it (``git archive f93b2ac~1
cernvm_build``: os.walk and a realpath per deep path) in the same run, each in its own process.
The reference walks only ``--ref-limit`` entries (100,000; its full cap takes minutes); the
per-entry costs are printed side by side. Aim: the cap in seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import flags  # noqa: E402 (the repository's root just put on the path)
from tests.support import link_farm  # noqa: E402

BEFORE = "f93b2ac~1"  # before the walk read each real folder once

CHILD = r"""
import sys, time
from pathlib import Path
from cernvm_build.mirror.s3plan import walk_files
from cernvm_build.errors import MirrorError
limit = int(sys.argv[2])
t = time.process_time()
try:
    for _ in walk_files(Path(sys.argv[1]), limit=limit):
        pass
except MirrorError:
    pass
print(time.process_time() - t)
"""


def cpu(code: Path, top: Path, limit: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(top), str(limit)], env=env, check=True, cwd=top,
                         capture_output=True, text=True).stdout  # fmt: skip
    return float(out)


def main() -> None:
    ref_limit = int(sys.argv[sys.argv.index("--ref-limit") + 1]) if "--ref-limit" in sys.argv else 100_000
    with tempfile.TemporaryDirectory(prefix="linkfarm-") as tmp:
        before = Path(tmp) / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "cernvm_build"],
                                 check=True, capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        top = link_farm(Path(tmp) / "farm", 22)
        load = os.getloadavg()[0]
        ref = cpu(before, top, ref_limit)
        now_ref = cpu(ROOT, top, ref_limit)
        now_cap = cpu(ROOT, top, 2_000_000)
    per = 1e6 / ref_limit
    print(f"load average {load:.1f}; CPU seconds of walk_files on a link farm")
    print(f"  before ({BEFORE}), {ref_limit:,} entries: {ref:.2f} s ({ref * per:.0f} us/entry)")
    print(f"  current, {ref_limit:,} entries: {now_ref:.2f} s ({now_ref * per:.1f} us/entry)")
    print(f"  current, the 2,000,000 cap: {now_cap:.2f} s (aim: seconds)")


if __name__ == "__main__":
    flags(__doc__, {"--ref-limit": "--ref-limit N: entries the code before walks (default 100,000)"})
    main()
