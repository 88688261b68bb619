"""Run one mirror and SIGKILL this process at a chosen step: ``python -m tests.mirror.killrun JSON``.

JSON: kind, source, dest, endpoint, event, n (kill at the n-th ``event`` checkpoint), allow_rewrite,
keep, and optionally ``"helper": false`` (the index files written by this process, not by the index
writer that outlives it: the control case). The kill point is handed to the library explicitly (its
``checkpoint`` argument), not through the environment. Exits 0 if the sync finished before reaching
the point.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter

from cernvm_build.mirror.publish import mirror


def main() -> int:
    spec = json.loads(sys.argv[1])
    if not spec.get("helper", True):
        from cernvm_build.mirror import s3sync

        s3sync.IndexWriter = lambda *a, **k: None  # type: ignore[assignment,misc]
    seen: Counter[str] = Counter()

    def checkpoint(event: str, key: str) -> None:
        seen[event] += 1
        if event == spec["event"] and seen[event] == spec["n"]:
            os.kill(os.getpid(), signal.SIGKILL)

    mirror(
        spec["kind"],
        spec["source"],
        spec["dest"],
        endpoint_url=spec["endpoint"],
        allow_rewrite=spec["allow_rewrite"],
        keep=spec["keep"],
        jobs=2,
        checkpoint=checkpoint,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
