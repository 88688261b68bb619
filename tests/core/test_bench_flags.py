"""A benchmark's ``--help`` teaches and an unknown flag is refused, before anything runs: a benchmark
boots guests or builds corpora for minutes (``bench/osboot.py --help`` used to start a whole run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(ROOT / "bench" / script), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize("script", ["osboot.py", "site.py", "cvmfs_read.py", "launch.py"])
def test_help_prints_what_the_benchmark_does_and_its_flags(script: str) -> None:
    r = _bench(script, "--help")
    assert r.returncode == 0, r.stderr
    assert "flags:" in r.stdout
    assert "--quick" in r.stdout or "--full" in r.stdout
    assert r.stdout.splitlines()[0].strip(), "the docstring's first line says what it measures"


def test_an_unknown_flag_is_refused_before_anything_runs() -> None:
    r = _bench("osboot.py", "--quik")
    assert r.returncode == 2
    assert "unknown flag '--quik'" in r.stderr and "--help" in r.stderr
    assert "load average" not in r.stderr  # the run did not start


@pytest.mark.parametrize("value", ["--cpus", "--cpus=", "--cpus=1", "--cpus=two", "--cpus=-2"])
def test_osboot_refuses_a_vcpu_count_it_cannot_use_before_anything_runs(value: str) -> None:
    """``--cpus=N`` adds the N-vCPU boots (N >= 2: one vCPU is what the other rows measure)."""
    r = _bench("osboot.py", value)
    assert r.returncode == 2
    assert r.stderr.startswith("error: --cpus=") and "hint: --cpus=2" in r.stderr
    assert "load average" not in r.stderr and len(r.stderr.splitlines()) == 1
