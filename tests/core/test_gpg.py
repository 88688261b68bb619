"""Signatures with the real gpg: good ones name their key, anything else is an IntegrityError."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build import gpg
from cernvm_build.errors import IntegrityError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return gpg.generate_test_key(tmp_path_factory.mktemp("keys"))


def test_detached_and_clearsigned_round_trip(keys: tuple[Path, Path], tmp_path: Path) -> None:
    secret, public = keys
    data = tmp_path / "SHA256SUMS"
    data.write_text("abc  file\n")
    with gpg.Keyring([secret]) as kr:
        kr.sign_detached(data, tmp_path / "SHA256SUMS.asc")
        kr.clearsign(data, tmp_path / "InRelease")
        fpr = kr.secret_fingerprints()[0]
    with gpg.Keyring([public]) as kr:
        assert kr.verify_detached(tmp_path / "SHA256SUMS.asc", data) == fpr
        signer, content = kr.verify_clearsigned(tmp_path / "InRelease")
        assert signer == fpr and content == b"abc  file\n"
        data.write_text("abd  file\n")  # one byte flipped
        with pytest.raises(IntegrityError, match="bad signature"):
            kr.verify_detached(tmp_path / "SHA256SUMS.asc", data)


def test_signature_by_another_key_is_refused(keys: tuple[Path, Path], tmp_path: Path) -> None:
    other_secret, _ = gpg.generate_test_key(tmp_path / "other", name="Someone Else")
    data = tmp_path / "f"
    data.write_text("x")
    with gpg.Keyring([other_secret]) as kr:
        kr.sign_detached(data, tmp_path / "f.asc")
    with gpg.Keyring([keys[1]]) as kr, pytest.raises(IntegrityError, match="unknown key"):
        kr.verify_detached(tmp_path / "f.asc", data)
