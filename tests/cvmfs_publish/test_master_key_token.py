"""A master key on a token: the whitelist is signed through OpenSSL's PKCS#11 engine from a SoftHSM2 token
that the test creates, and the stdlib reader verifies it.

Needs the Debian packages softhsm2 and libengine-pkcs11-openssl (Makefile APT_PACKAGES).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import manifest, rsa, whitelist
from cernvm_build.cvmfs.keys import generate_keys, load_keys
from cernvm_build.cvmfs.masterkey import Pkcs11MasterKey, Pkcs11Uri
from cernvm_build.cvmfs.repository import open_repository
from cernvm_build.errors import CvmfsError

FQRN = "token.cernvm.test"
MODULES = (Path("/usr/lib/softhsm/libsofthsm2.so"), Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"))
MODULE = next((p for p in MODULES if p.exists()), None)
ENGINE = Path("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so")

pytestmark = pytest.mark.skipif(
    MODULE is None or not ENGINE.exists() or shutil.which("softhsm2-util") is None,
    reason="needs softhsm2 and libengine-pkcs11-openssl (apt-get install softhsm2 libengine-pkcs11-openssl)",
)


def _pkcs8(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, None)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """Keys for FQRN whose master key lives only on a fresh SoftHSM2 token; returns (keys dir, URI)."""
    conf = tmp_path / "softhsm2.conf"
    (tmp_path / "tokens").mkdir()
    conf.write_text(
        f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    keys = tmp_path / "keys"
    generate_keys(FQRN).save(keys)
    master = keys / f"{FQRN}.masterkey"
    (tmp_path / "m.p8").write_bytes(_pkcs8(master.read_bytes()))
    hsm = ["softhsm2-util", "--pin", "1234"]
    subprocess.run([*hsm, "--init-token", "--free", "--label", "cvmfs", "--so-pin", "5678"], check=True,
                   capture_output=True)  # fmt: skip
    imported = [
        *hsm,
        "--import",
        str(tmp_path / "m.p8"),
        "--token",
        "cvmfs",
        "--label",
        "master",
        "--id",
        "01",
    ]
    subprocess.run(imported, check=True, capture_output=True)
    (tmp_path / "m.p8").unlink()
    master.unlink()  # from now on the master key exists only on the token
    return keys, f"pkcs11:token=cvmfs;object=master;type=private?module-path={MODULE}&pin-value=1234"


def _whitelist_verifies(stratum: Path, keys: Path) -> whitelist.Whitelist:
    signed = manifest.split_signed((stratum / ".cvmfswhitelist").read_bytes(), "w")
    pub = rsa.load_public_key((keys / f"{FQRN}.pub").read_bytes())
    assert rsa.verify_raw([pub], signed.hash_text.encode(), signed.signature)
    return whitelist.parse(signed.body)


def test_create_and_resign_with_the_master_key_on_a_token(tmp_path: Path, token: tuple[Path, str]) -> None:
    keys, uri = token
    stratum = tmp_path / "srv" / FQRN
    args = ["--keys", str(keys), "--master-key", uri, "-q"]
    assert main(["cvmfs", "create", str(stratum), "--fqrn", FQRN, *args]) == 0
    first = _whitelist_verifies(stratum, keys)
    # The reader (stdlib only) opens the repository: the whole signature chain checks out.
    with open_repository(stratum, fqrn=FQRN, public_keys=[keys / f"{FQRN}.pub"]) as repo:
        assert repo.revision == 1
    assert main(["cvmfs", "resign", str(stratum), "--days", "7", *args]) == 0
    again = _whitelist_verifies(stratum, keys)
    assert (again.expires - again.created).days == 7 and (first.expires - first.created).days == 30


def test_token_errors_are_one_line(
    tmp_path: Path, token: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    keys, uri = token
    stratum = tmp_path / "srv" / FQRN
    bad_pin = uri.replace("pin-value=1234", "pin-value=0000")
    assert (
        main(["cvmfs", "create", str(stratum), "--fqrn", FQRN, "--keys", str(keys), "--master-key", bad_pin])
        == 5
    )
    err = capsys.readouterr().err
    assert "signing with pkcs11:token=cvmfs;object=master;type=private failed" in err
    assert "0000" not in err and "Traceback" not in err, "the PIN never appears in messages"
    assert not (stratum / ".cvmfswhitelist").exists()
    # A token key that is not the repository's master key: refused after signing, nothing written.
    other = generate_keys(FQRN)
    (keys / f"{FQRN}.pub").write_bytes(other.public_key_pem)
    with pytest.raises(CvmfsError, match="does not verify with the repository's public key"):
        load_keys(keys, FQRN, master_key=uri).sign_whitelist("ab" * 20)


def test_uri_parts() -> None:
    p = Pkcs11Uri.parse("pkcs11:token=a;object=b;pin-value=9?module-path=/m.so&x=1")
    assert (p.key_uri, p.module, p.pin) == ("pkcs11:token=a;object=b?x=1", Path("/m.so"), "9")
    assert Pkcs11MasterKey("pkcs11:token=a;pin-value=9").description == "pkcs11:token=a"
    with pytest.raises(CvmfsError, match="not a pkcs11: URI"):
        Pkcs11Uri.parse("file:/x")
