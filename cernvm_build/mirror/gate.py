"""Upload a package while the rest of the source is still being verified, never before its own checks.

The mirror verifies a local source in a thread beside the sync. The verifier first checks the signed
metadata (the index signature, every metadata file's hash, the package list), then hands the gate the
packages it will judge and how many checks each must pass (its hash against the signed list, and
``rpm -K`` where packages are checked so). From then on the sync plans and uploads new objects: each
package is held until it has passed every check; anything else (a file no index names, a package
that failed, anything after a refusal) waits for the whole verification. Rewrites, indexes and
deletions wait for the whole verification too (``finish``), so the live index is never switched to a
source that was refused.

When the source is refused the sync deletes every object this run created (``s3sync``), so the bucket
ends as it was; what a SIGKILL leaves behind is only verified packages and metadata that no index
names, which the next good sync publishes or deletes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future

from .check import Checked, SourceBroken


class VerifyGate:
    """Verdicts of a verification running beside the upload (verifier side: ``metadata_checked``,
    ``settle``; sync side: ``allow``, ``finish``)."""

    def __init__(self, on_verified: Callable[[], None] = lambda: None):
        self._cond = threading.Condition()
        self._pending: dict[str, int] = {}  # package → checks still to pass
        self._passed: set[str] = set()
        self._refused = False
        self._metadata = threading.Event()
        self._on_verified = on_verified
        self._verified = False
        self.checked: Checked | None = None
        self.verification: Future[Checked] | None = None

    # --- the verifier's side ---------------------------------------------------------------------

    def metadata_checked(self, checked: Checked, packages: Iterable[str], checks: int) -> None:
        """The signed metadata are sound (``checked.indexes`` and ``checked.referenced`` are complete);
        each of ``packages`` gets ``checks`` verdicts through ``settle``. The other files the metadata
        name (hash-named metadata files) have passed already; the indexes go last anyway."""
        with self._cond:
            self.checked = checked
            self._pending = dict.fromkeys(packages, checks)
            self._passed = set(checked.referenced) - set(self._pending) - set(checked.indexes)
        self._metadata.set()

    def settle(self, rel: str, ok: bool) -> None:
        """One check of one package passed (``ok``) or failed."""
        with self._cond:
            left = self._pending.get(rel)
            if left is None:
                return
            if not ok:
                self._refused = True
                del self._pending[rel]
            elif left <= 1:
                del self._pending[rel]
                self._passed.add(rel)
            else:
                self._pending[rel] = left - 1
            self._cond.notify_all()

    def ended(self) -> None:
        """The verification is over (its result is in ``verification``), whatever its outcome."""
        with self._cond:
            self._pending.clear()
            self._cond.notify_all()
        self._metadata.set()

    # --- the sync's side -------------------------------------------------------------------------

    def wait_metadata(self) -> bool:
        """Blocks until the metadata are checked; False when the verification ended before (a refused
        source, or a verifier that does not hand packages over: then ``finish`` has the whole result)."""
        self._metadata.wait()
        assert self.verification is not None
        return self.checked is not None and not self.verification.done()

    def allow(self, rel: str) -> None:
        """Blocks until ``rel`` may be uploaded; raises (SourceBroken …) when the source is refused."""
        with self._cond:
            while rel in self._pending and not self._refused:
                self._cond.wait()
            if rel in self._passed and not self._refused:
                return
        self.finish()  # not a package that passed: the whole source must be verified first

    def finish(self) -> Checked:
        """The whole verification's result; raises SourceBroken with every problem when refused."""
        assert self.verification is not None
        checked = self.verification.result()
        if checked.problems:
            raise SourceBroken(checked.source, checked.problems)
        with self._cond:
            first = not self._verified
            self._verified = True
        if first:
            self._on_verified()
        return checked
