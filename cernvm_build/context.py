"""The build context: what every build stage shares, passed explicitly instead of read from the environment.

``epoch`` is the build time (``SOURCE_DATE_EPOCH``): every timestamp a stage writes into an output
(cpio, zip, ISO and FAT dates, container ``created``, the image manifest) comes from it, so it is an
input like any other and part of the keys of results that contain it (``cachekey``). The CLI reads
``SOURCE_DATE_EPOCH`` and its flags once (``from_environment``) and hands the context down; threads and
worker processes get it as an argument, never through ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .numtext import decimal
from .paths import cache_dir
from .report import NULL_REPORTER, Reporter


@dataclass(frozen=True)
class BuildContext:
    epoch: int  # seconds since 1970 (UTC): the build time written into outputs
    cache: Path = field(default_factory=cache_dir)  # $CERNVM_CACHE_DIR (verified inputs, runtimes)
    reporter: Reporter = field(default=NULL_REPORTER, compare=False)
    jobs: int = 1  # parallel work where a stage has it (release profiles)

    @classmethod
    def from_environment(
        cls,
        *,
        default_epoch: int = 0,
        epoch: int | None = None,
        reporter: Reporter | None = None,
        jobs: int | None = None,
    ) -> BuildContext:
        """The context a command runs with: ``epoch`` if given, else ``SOURCE_DATE_EPOCH``, else
        ``default_epoch``; the cache root from ``$CERNVM_CACHE_DIR``."""
        if epoch is None:
            from_env = env_epoch()
            epoch = from_env if from_env is not None else default_epoch
        return cls(epoch=epoch, cache=cache_dir(), reporter=reporter or NULL_REPORTER, jobs=max(1, jobs or 1))

    def replace(self, **changes: Any) -> BuildContext:
        return dataclasses.replace(self, **changes)


def env_epoch() -> int | None:
    """``SOURCE_DATE_EPOCH`` when it is set (a bad value is a usage error), else None: for the CLI,
    which hands it to the library as an argument."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    # ASCII digits of a time before the year 10000: '²' is isdigit() but no int(), 5000 digits are past
    # int()'s limit (both tracebacks), and a later time is past what datetime and tar headers hold
    epoch = decimal(raw, 12)
    if raw and (epoch is None or epoch > MAX_EPOCH):
        raise UsageError(
            f"SOURCE_DATE_EPOCH={raw[:40]!r} is not a number of seconds (before the year 10000)",
            hint="set it to an integer such as $(date +%s), or unset it",
        )
    return int(raw) if raw else None


#: 9999-12-31T23:59:59Z, the last second datetime can show
MAX_EPOCH = 253402300799
