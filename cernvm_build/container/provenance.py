"""Verify a container image against the CernVM-FS snapshot its labels name (``verify_image``).

The labels are the image's provenance (``origin``): repository, path, root catalog hash, and the
servers and profile it was built from. Years later the same snapshot is re-opened by its root hash
— from the given sources, else the recorded servers, else the profile's — and every entry compared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import profile as profile_mod
from ..cvmfs.repository import SnapshotSpec
from ..errors import BuildError, CernVMError, IntegrityError, UsageError
from . import origin as origin_mod
from . import verify as verify_mod
from .image import LABEL_PATH, LABEL_REPOSITORY, LABEL_ROOT_HASH, LABEL_SERVER
from .thin import LABEL_THIN_HUB

Progress = Callable[[int, int], None]  # (bytes compared, total bytes)


@dataclass(frozen=True)
class ImageVerification:
    report: verify_mod.VerifyReport
    signatures_checked: bool  # False: no public key, contents checked against the root hash only
    snapshot: str  # "<fqrn><path>@<root hash>"

    @property
    def ok(self) -> bool:
        return self.report.ok

    def raise_for_differences(self) -> None:
        if not self.report.ok:
            first = self.report.differences[0]
            raise IntegrityError(
                f"{self.report.image}: {len(self.report.differences)} difference(s) from the snapshot; "
                f"first: {first}",
                hint="the image is not the frozen environment it claims to be; rebuild it from the snapshot",
            )


def verify_image(
    image: Path,
    *,
    sources: Sequence[str] = (),
    keys: Sequence[Path] = (),
    progress: Progress | None = None,
) -> ImageVerification:
    """Compare ``image`` (oci, oci-archive, docker-archive or sandbox) with the snapshot it names."""
    contents = verify_mod.read_image(image)
    labels = contents.labels
    if labels.get(LABEL_THIN_HUB):
        raise BuildError(
            f"{image}: a thin image holds no files, only thin.json naming layers in {labels[LABEL_THIN_HUB]}",
            hint="verify the full image (oci, docker-archive or sandbox) built from the same snapshot",
        )
    missing = [k for k in (LABEL_REPOSITORY, LABEL_PATH, LABEL_ROOT_HASH) if not labels.get(k)]
    if missing:
        raise BuildError(
            f"{image}: the image does not record its origin (no label {missing[0]})",
            hint="only images made by 'cernvm-build container' from a repository can be verified",
        )
    prof = None
    if labels.get(origin_mod.LABEL_PROFILE):
        with contextlib.suppress(CernVMError):  # the profile may be long gone; the labels suffice
            prof = profile_mod.load(labels[origin_mod.LABEL_PROFILE])
    found = list(sources) or labels.get(LABEL_SERVER, "").split()
    if not found and prof is not None and prof.cvmfs.repository == labels[LABEL_REPOSITORY]:
        found = prof.cvmfs.server_urls()
    trusted = list(keys) or (list(prof.cvmfs.public_keys) if prof is not None else [])
    if not found:
        raise UsageError(f"{image}: no repository source recorded; pass --source URL|DIR")
    origin = origin_mod.open_origin(
        found,
        fqrn=labels[LABEL_REPOSITORY],
        path=labels[LABEL_PATH],
        public_keys=trusted,
        snapshot=SnapshotSpec(root_hash=labels[LABEL_ROOT_HASH]),
        verify_signatures=bool(trusted),
        blacklist=prof.cvmfs.blacklist if prof is not None else None,
    )
    try:
        total = sum(e.size for e in origin.tree.entries() if e.kind == "file")
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        report = verify_mod.compare(contents, origin.tree, name=str(image), progress=advance)
    finally:
        origin.close()
    where = f"{labels[LABEL_REPOSITORY]}{labels[LABEL_PATH]}@{labels[LABEL_ROOT_HASH]}"
    return ImageVerification(report, bool(trusted), where)
