"""The benchmark's generated inputs stay valid profiles (so ``make bench`` measures, not fails)."""

from __future__ import annotations

from pathlib import Path

from bench.profiles import _chain
from cernvm_build import profile


def test_the_benchmark_extends_chain_is_a_valid_profile(tmp_path: Path) -> None:
    p = profile.load(_chain(tmp_path, 5))
    assert p.bootloader.cmdline == [f"opt{i}=1" for i in range(1, 6)]
    assert p.container.labels["k5"] == "p5"
