"""The accelerator probe: a real qemu boot-sector guest decides between KVM and TCG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cernvm_build import accel
from cernvm_build.errors import UsageError


def test_override_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERNVM_ACCEL", "tcg")
    assert accel.detect().name == "tcg"
    assert accel.detect().libvirt_domain_type == "qemu"


@pytest.mark.integration
def test_real_probe_gives_a_reasoned_answer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CERNVM_ACCEL", raising=False)
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path))
    result = accel.detect(use_cache=False)
    assert result.name in ("kvm", "tcg")
    assert result.reason
    # The answer is cached for this host boot.
    assert accel.detect().reason.endswith("(cached)")


def test_kvm_without_hardware_virtualisation_is_not_trusted() -> None:
    # kvm-pvm hosts give /dev/kvm on a CPU without vmx/svm; a boot sector runs there, a stock kernel never
    # does, so the flag decides before any guest is tried.
    intel = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr vmx ept\n"
    amd = "processor\t: 0\nflags\t\t: fpu svm npt\n"
    pvm = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr hypervisor\nvmx flags\t: ept\n"
    assert accel.hardware_virtualisation(intel)
    assert accel.hardware_virtualisation(amd)
    assert not accel.hardware_virtualisation(pvm)
    assert not accel.hardware_virtualisation("")


@pytest.mark.integration
def test_the_probe_never_picks_kvm_where_a_kernel_cannot_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CERNVM_ACCEL", raising=False)
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path))
    if not accel.hardware_virtualisation(Path("/proc/cpuinfo").read_text()):
        assert accel.detect(use_cache=False).name == "tcg"
    # A cached answer from an older probe is not reused.
    old = {"boot_id": accel._boot_id(), "name": "kvm", "reason": "old"}
    (tmp_path / "accel.json").write_text(json.dumps(old))
    assert not accel.detect().reason.startswith("old")


@pytest.mark.parametrize(
    "record",
    [[1], {"name": "kvm", "reason": 5}, {"name": "xen'/><x", "reason": "r"}, {"name": "kvm", "reason": None}],
)
def test_a_damaged_cached_answer_is_probed_again_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, record: object
) -> None:
    """accel.json is the user's cache file: a list was an AttributeError, a reason that is no text a
    TypeError (every create and image build), a name that is no accelerator became the domain type."""
    monkeypatch.delenv("CERNVM_ACCEL", raising=False)
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(accel, "_probe_kvm", lambda qemu, timeout: (False, "probed"))  # the logic only
    if isinstance(record, dict):
        record = {"boot_id": accel._boot_id(), "probe": accel._PROBE_VERSION, **record}
    (tmp_path / "accel.json").write_text(json.dumps(record))
    assert accel.detect() == accel.Accel("tcg", "probed")
    assert accel.detect() == accel.Accel("tcg", "probed (cached)")  # rewritten


@pytest.mark.parametrize("value", ["bogus", "kvm2", "qemu"])
def test_a_cernvm_accel_that_is_no_accelerator_is_one_line(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A typo was silently ignored (the probe ran), the user believing it was set."""
    monkeypatch.setenv("CERNVM_ACCEL", value)
    with pytest.raises(UsageError, match=rf"\$CERNVM_ACCEL '{value}' is neither kvm nor tcg"):
        accel.detect()
    monkeypatch.setenv("CERNVM_ACCEL", " TCG ")
    assert accel.detect().name == "tcg"
