"""What one publish is asked to do, passed down its steps, and the hook that tests use to stop it
between two steps (``fault``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .chunking import ChunkingSettings
from .nesting import AutoCatalogs

Progress = Callable[[int, int], None]
#: Called with the name of each step as it completes: ``scanned``, ``objects`` (the first file
#: content stored), ``staged``, ``catalogs``, ``history``, ``reflog``. Tests kill the process there
#: to prove a publish interrupted at any step leaves the previous revision intact. ``committed`` (not
#: in ``STEPS``): the new revision is published, its statistics not yet recorded.
Fault = Callable[[str], None]
STEPS = ("scanned", "objects", "staged", "catalogs", "history", "reflog")


@dataclass
class Options:
    timestamp: int
    chunking: ChunkingSettings
    normalize_owner: bool
    progress: Progress | None
    warnings: list[str] = field(default_factory=list)
    fault: Fault | None = None
    autocatalogs: AutoCatalogs | None = None

    def reached(self, step: str) -> None:
        if self.fault is not None:
            self.fault(step)
