"""A folder's packages are uploaded while the rest of it is verified (``mirror/gate.py``); a source
whose N-th package is refused must still leave the bucket exactly as it was: the packages uploaded
before the refusal are deleted again, and the live index is never switched."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cernvm_build.mirror.check import SourceBroken
from cernvm_build.mirror.gate import VerifyGate
from cernvm_build.mirror.publish import mirror

from .conftest import Target
from .repos import make_rpm, make_yum_repo, sign_rpm

pytestmark = pytest.mark.integration

BAD = "Packages/cvm-p2-1.0-1.noarch.rpm"


@pytest.fixture(scope="module")
def packages(
    tmp_path_factory: pytest.TempPathFactory, signing_key: tuple[Path, Path], other_key: tuple[Path, Path]
) -> dict[str, Path]:
    """cvm-p0 … cvm-p4, biggest first (the order of the upload); cvm-p2 also signed by another key."""
    w = tmp_path_factory.mktemp("refused")
    out = {}
    for i in range(5):
        rpm = make_rpm(w / f"b{i}", f"cvm-p{i}", payload=bytes([65 + i]) * (40_000 - 5_000 * i))
        out[f"p{i}"] = sign_rpm(rpm, signing_key[0], w / f"good{i}" / rpm.name)
        if i == 2:
            out["p2-other"] = sign_rpm(rpm, other_key[0], w / "other" / rpm.name)
    return out


CASES = [
    pytest.param("moto", "signature", id="moto-signature"),
    pytest.param("moto", "bytes", id="moto-bytes"),
    pytest.param("rgw", "signature", id="rgw-signature"),
]


@pytest.mark.parametrize(("target", "bad"), CASES, indirect=["target"])
def test_a_source_whose_nth_package_is_bad_leaves_the_bucket_as_it_was(
    target: Target,
    bad: str,
    packages: dict[str, Path],
    signing_key: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret, public = signing_key
    src = tmp_path / "src"
    make_yum_repo(src, [packages["p0"]], secret_key=secret)
    mirror("yum", str(src), target.url("r"), client=target.client, gpg_key=public)
    before = target.objects()

    # The next publication: five packages, the third (in upload order) refused by rpm -K or by its hash.
    if bad == "signature":
        make_yum_repo(src, [packages[p] for p in ("p1", "p2-other", "p3", "p4")], secret_key=secret)
    else:
        make_yum_repo(src, [packages[p] for p in ("p1", "p2", "p3", "p4")], secret_key=secret)
        damaged = bytearray((src / BAD).read_bytes())
        damaged[-100] ^= 0xFF  # same size, other bytes than primary.xml names
        (src / BAD).write_bytes(bytes(damaged))

    # The refusal is held back until a package of this run has been uploaded, so that the test always
    # covers the clean-up (without it, a fast verification could refuse before the first upload).
    uploaded: list[str] = []
    first_upload = threading.Event()
    real_settle = VerifyGate.settle

    def settle(self: VerifyGate, rel: str, ok: bool) -> None:
        if not ok:
            assert first_upload.wait(60), "no package was uploaded before the refusal"
        real_settle(self, rel, ok)

    def seen(event: str, key: str) -> None:
        if event == "uploaded":
            uploaded.append(key)
            if key.startswith("Packages/"):
                first_upload.set()

    monkeypatch.setattr(VerifyGate, "settle", settle)
    with pytest.raises(SourceBroken) as err:
        mirror("yum", str(src), target.url("r"), client=target.client, gpg_key=public, checkpoint=seen)
    assert [p.split(":", 1)[0] for p in err.value.problems] == [BAD]
    assert BAD not in uploaded  # the refused package itself never left the machine
    assert any(k.startswith("Packages/") for k in uploaded)  # others did, and were taken back:
    assert target.objects() == before
