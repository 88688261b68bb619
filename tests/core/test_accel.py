"""The accelerator probe: a real qemu boot-sector guest decides between KVM and TCG."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build import accel


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
