"""What an archivist runs years later: every artifact against the index, SHA256SUMS and its signature."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import gpg, jsonable
from .. import releaseindex as idx
from ..errors import CernVMError
from ..fsutil import sha256_file
from . import sums


@dataclass
class Finding:
    artifact: str
    problem: str
    #: what to do, where the check knows (a revoked or expired key: ``gpg.valid_signer``'s hint)
    hint: str | None = None


@dataclass
class VerifyReport:
    version: str
    checked: int = 0
    signer: str | None = None
    #: the index says the release is signed (its signature is checked only with a key: ``signer``)
    signed: bool = False
    #: the checked signature: who, when, and when its key expired since (a warning, not a finding:
    #: the release was signed while the key was valid, ``gpg.Keyring.verify_archived``)
    signature: gpg.Signed | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, object]:
        return jsonable.to_json(self, ok=self.ok)


def locate_index(target: str, releases_dir: Path) -> Path:
    """``target`` is an index.json, a release directory, or a version under ``releases_dir``."""
    p = Path(target)
    if p.is_file():
        return p
    if p.is_dir():
        return p / "index.json"
    if idx.VERSION_RE.match(target):
        return releases_dir / target / "index.json"
    raise idx.ReleaseError(
        f"{target}: no such release index, folder or version",
        hint=f"give an index.json, a release folder, or a version (YYYY.MM-N) under {releases_dir}",
    )


def verify(index_path: Path, *, public_keys: Sequence[Path] = ()) -> VerifyReport:
    """Check sizes and hashes of every artifact, SHA256SUMS against the index, and the signature.

    With ``public_keys`` a signed release must carry a good signature by one of them; a release that
    says it was signed but whose signature is missing or bad is a finding either way.
    """
    release = idx.load(index_path)
    root = index_path.parent
    report = VerifyReport(version=release.version, signed=bool(release.signature))
    for a in release.artifacts:
        path = root / a.path
        report.checked += 1
        if not path.is_file():
            report.findings.append(Finding(a.name, f"missing: {a.path}"))
            continue
        size = path.stat().st_size
        if size != a.size:
            report.findings.append(Finding(a.name, f"size {size} != {a.size} in the index"))
            continue
        digest = sha256_file(path)
        if digest != a.sha256:
            report.findings.append(Finding(a.name, f"sha256 {digest} != {a.sha256} in the index"))
    sums_path = root / sums.NAME
    if not sums_path.is_file():
        report.findings.append(Finding(sums.NAME, "missing"))
    else:
        listed = sums.parse(sums_path)
        expected = {a.path: a.sha256 for a in release.artifacts}
        if listed != expected:
            diff = sorted(set(listed.items()) ^ set(expected.items()))
            report.findings.append(Finding(sums.NAME, f"differs from the index at {diff[0][0]}"))
        if release.signature:
            sig = root / release.signature
            if not sig.is_file():
                report.findings.append(
                    Finding(release.signature, "the index says the release is signed; no signature")
                )
            elif public_keys:
                try:
                    with gpg.Keyring(public_keys) as kr:
                        report.signature = kr.verify_archived(sig, sums_path)
                        report.signer = report.signature.signer
                except Exception as e:  # an IntegrityError or a gpg failure: either way, not verified
                    hint = e.hint if isinstance(e, CernVMError) else None
                    report.findings.append(Finding(release.signature, str(e), hint))
                else:
                    if release.signer and report.signer != release.signer:
                        report.findings.append(
                            Finding(
                                release.signature, f"signed by {report.signer}, index names {release.signer}"
                            )
                        )
        elif public_keys:
            report.findings.append(
                Finding(sums.NAME, "a signing key was given but the release is not signed")
            )
    return report
