"""Preservation: frozen profiles boot only verified, signed images, pinned to their snapshot."""

from __future__ import annotations

import datetime
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from cernvm_build.cli.launch import main
from cernvm_build.image import signature
from tests.launch.support import driver_host

URI = "test:///default"


@pytest.fixture
def conn(launch_env: Path) -> Iterator[libvirt.virConnect]:
    c = libvirt.open(URI)
    yield c
    for dom in c.listAllDomains(0):
        if dom.name().startswith("pres-"):
            dom.destroy()
            dom.undefine()
    c.close()


def _signer(tmp: Path, cn: str, years: tuple[int, int] = (2026, 2036)) -> tuple[signature.Signer, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    start, end = (datetime.datetime(y, 1, 1, tzinfo=datetime.UTC) for y in years)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(start).not_valid_after(end)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = tmp / f"{cn}.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return signature.Signer(key, cert), pem


#: the build time an image records, under its signature (2026-11-30)
BUILT = 1796000000


def _publish(image: Path, signer: signature.Signer | None, built: int = BUILT) -> Path:
    """Append the signature block (if any) and write the .sha256, as a release does."""
    if signer is not None:
        meta = {"ucernvm-version": "2026.11-1", signature.BUILD_TIME: built}
        trailer = signature.trailer_bytes(image, meta, signer)
        with open(image, "ab") as f:
            f.write(trailer)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    image.with_name(image.name + ".sha256").write_text(f"{digest}  {image.name}\n")
    return image


def _user_data(home: Path, name: str, tmp: Path) -> str:
    out = tmp / f"x-{name}"
    iso = home / "run" / name / "context.iso"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", out], check=True, capture_output=True
    )
    return (out / "user-data").read_text()


def test_frozen_profile_boots_a_signed_image_pinned_to_its_snapshot(
    conn: libvirt.virConnect,
    launch_env: Path,
    image: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    signer, pem = _signer(tmp_path, "release-signer")
    _publish(image, signer)
    argv = ["--connect", URI, "create", "--profile", "el4", "--iso", str(image), "--yes", "--no-wait"]
    assert main([*argv, "--name", "pres-a", "--cert", str(pem)], connect=driver_host) == 0
    assert "[ucernvm-begin]\ncvmfs_tag=slc4-frozen\n[ucernvm-end]" in _user_data(
        launch_env, "pres-a", tmp_path
    )
    assert main(["--connect", URI, "list", "--json"]) == 0
    capsys.readouterr()
    # An explicit snapshot or date wins over the profile's pin.
    assert main([*argv, "--name", "pres-b", "--date", "2011-06-01"], connect=driver_host) == 0
    assert "cvmfs_date=2011-06-01" in _user_data(launch_env, "pres-b", tmp_path)
    assert main(["--connect", URI, "list", "pres-b"]) == 0
    assert "snapshot: date:2011-06-01" in capsys.readouterr().out


def test_an_image_whose_certificate_expired_since_it_was_signed_boots_with_a_warning(
    conn: libvirt.virConnect, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A frozen image years later: built (and signed) in 2012 with a certificate valid 2010-2015.
    Its validity is checked at the recorded build time, not the clock's: it boots, and says so."""
    signer, pem = _signer(tmp_path, "release-signer", years=(2010, 2015))
    _publish(image, signer, built=1340000000)
    argv = ["--connect", URI, "create", "--profile", "el4", "--iso", str(image), "--yes", "--no-wait"]
    assert main([*argv, "--name", "pres-old", "--cert", str(pem)], connect=driver_host) == 0
    err = capsys.readouterr().err
    assert "valid when signed (2012-06-18T06:13:20Z); expired on 2015-01-01" in err, err


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unsigned", "image signature does not verify: no μCernVM signature block"),
        ("no-sha256", "profile 'el4' is frozen and the image has no .sha256 to verify"),
        ("modified", "image signature does not verify: signature does not match the image"),
        ("bad-sha256", "image checksum mismatch"),
        ("other-signer", "not by the given certificate"),
        (
            "cert-not-valid-then",
            "valid from 2026-01-01T00:00:00Z to 2036-01-01T00:00:00Z, not at the "
            "image's build time 2020-09-13T12:26:40Z",
        ),
    ],
)
def test_frozen_profile_refuses_unverified_images(
    conn: libvirt.virConnect,
    image: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    message: str,
) -> None:
    signer, pem = _signer(tmp_path, "release-signer")
    argv = ["--connect", URI, "create", "--profile", "el4", "--name", "pres-x", "--iso", str(image), "--yes"]
    if case == "unsigned":
        _publish(image, None)
    elif case == "no-sha256":
        _publish(image, signer)
        image.with_name(image.name + ".sha256").unlink()
    elif case == "modified":
        _publish(image, signer)
        data = bytearray(image.read_bytes())
        data[600] ^= 1
        image.write_bytes(bytes(data))
        _publish(image, None)  # a fresh .sha256 cannot hide the change from the signature
    elif case == "bad-sha256":
        _publish(image, signer)
        image.with_name(image.name + ".sha256").write_text("0" * 64 + "\n")
    elif case == "cert-not-valid-then":  # signed by hand: the toolkit refuses to sign so
        _publish(image, signer, built=1600000000)
    elif case == "other-signer":
        _publish(image, _signer(tmp_path, "someone-else")[0])
        argv += ["--cert", str(pem)]
    assert main(argv, connect=driver_host) == 8
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "pres-x" not in [d.name() for d in conn.listAllDomains(0)]


def test_a_profile_naming_its_signer_refuses_any_other_signer_without_cert(
    conn: libvirt.virConnect,
    image: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """pr18c's leftover: with no --cert a frozen profile took an image signed by any self-made
    certificate. ``preservation.signer_sha256`` names the release signer's certificate."""
    signer, _ = _signer(tmp_path, "release-signer")
    fingerprint = signer.certificate.fingerprint(hashes.SHA256()).hex()
    profile = tmp_path / "el4-signed.yaml"
    profile.write_text(
        f"format: 1\nextends: [el4]\ndescription: el4 and its signer\n"
        f"preservation:\n  signer_sha256: {fingerprint}\n"
    )
    argv = ["--connect", URI, "create", "--profile", str(profile), "--iso", str(image), "--yes", "--no-wait"]
    _publish(image, _signer(tmp_path, "someone-else")[0])
    assert main([*argv, "--name", "pres-other"], connect=driver_host) == 8
    err = capsys.readouterr().err
    assert "not by the profile's signer (preservation.signer_sha256" in err and "Traceback" not in err
    assert "pres-other" not in [d.name() for d in conn.listAllDomains(0)]
    fresh = tmp_path / "fresh.iso"
    fresh.write_bytes(image.read_bytes()[: -signature.TRAILER])
    _publish(fresh, signer)
    argv[argv.index(str(image))] = str(fresh)
    assert main([*argv, "--name", "pres-signed"], connect=driver_host) == 0, capsys.readouterr().err
    assert "pres-signed" in [d.name() for d in conn.listAllDomains(0)]
