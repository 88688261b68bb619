"""Preservation rules for booting: which images a profile accepts, and which snapshot it pins.

A frozen profile (or one that requires checksums) boots only an image whose sha256 is published
beside it (or given as ``diskChecksum``) and whose μCernVM signature block verifies — by the given
certificate when there is one, else by the profile's signer when it names one
(``preservation.signer_sha256``). A frozen profile's own snapshot pin applies unless the user names
another snapshot or date.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes

from ..errors import CernVMError, ImageError
from ..image import signature
from ..profile import Profile
from .images import Image, verify_checksum


@dataclass(frozen=True)
class Pin:
    """The snapshot an instance is pinned to: a label for ``list`` and the ucernvm keys that pin it."""

    label: str = ""  # "tag:NAME" or "date:YYYY-MM-DD"; "" when the OS follows the repository
    ucernvm: dict[str, str] = field(default_factory=dict)


def verify_image(
    image: Image,
    *,
    profile: Profile | None,
    checksum: str | None,
    cert: Path | None,
    warn: Callable[[str], None] = lambda _: None,
) -> str:
    """The image's verified sha256; an ImageError when the profile's rules or ``cert`` refuse it.
    ``warn`` hears that the signing certificate has expired since the image was built (and signed)."""
    strict = profile is not None and (profile.preservation.frozen or profile.preservation.checksums_required)
    side = image.path.with_name(image.path.name + ".sha256")
    if strict and profile is not None and not side.exists() and not checksum:
        raise ImageError(
            f"profile '{profile.name}' is frozen and the image has no .sha256 to verify",
            where=str(image.path),
            hint="use the published image with its .sha256, or give diskChecksum",
        )
    digest = verify_checksum(image.path, checksum)
    signer = profile.preservation.signer_sha256 if profile is not None else None
    if strict or cert or signer:
        if image.format not in ("iso", "hdd"):
            raise ImageError(
                "only iso/hdd images carry a signature to verify",
                where=str(image.path),
                hint="use the published iso or hdd image",
            )
        _verify_signature(image.path, cert, None if cert else signer, warn)
    return digest


def _verify_signature(
    path: Path, cert: Path | None, signer_sha256: str | None, warn: Callable[[str], None]
) -> None:
    """By ``cert`` when given, else by the profile's signer when it names one; the certificate was
    valid at the image's recorded build time (``signature.verify``)."""
    try:
        trusted = signature.load_certificate(cert) if cert else None
        made = signature.verify(path, trusted)
        v = signature.validity(made)
        if v is not None and v.expired_on:
            warn(f"{path}: image certificate valid when signed ({v.build_time}); expired on {v.expired_on}")
        elif v is not None and v.valid_when_signed is None:
            warn(
                f"{path}: the image's signature block records no build time: certificate validity not checked"
            )
        by = made.certificate.fingerprint(hashes.SHA256()).hex() if made.certificate else ""
        if signer_sha256 is not None and by != signer_sha256:
            raise ImageError(
                f"image signature is by certificate {by[:16]}…, not by the profile's signer "
                f"(preservation.signer_sha256 {signer_sha256[:16]}…)",
                where=str(path),
                hint="use the platform's published image, or give the signer's certificate with --cert",
            )
    except ImageError:
        raise
    except CernVMError as e:
        raise ImageError(
            f"image signature does not verify: {e.message.replace(f'{path}: ', '')}",
            where=str(path),
            hint=e.hint,
        ) from None


def pin(profile: Profile | None, *, tag: str | None = None, date: str | None = None) -> Pin:
    """An explicit tag or date wins; else a frozen profile's own snapshot; else no pin."""
    if tag:
        return Pin(f"tag:{tag}", {"cvmfs_tag": tag})
    if date:
        return Pin(f"date:{date}", {"cvmfs_date": date})
    if profile is not None and profile.preservation.frozen:
        snap = profile.cvmfs.snapshot
        if snap.tag:
            return Pin(f"tag:{snap.tag}", {"cvmfs_tag": snap.tag})
        if snap.date:
            return Pin(f"date:{snap.date}", {"cvmfs_date": snap.date})
    return Pin()
