"""``vercmp``: the one Debian and the one RPM version order, checked against the real tools
(``dpkg --compare-versions``; rpm's own ``rpm.vercmp`` through ``rpm --eval``'s Lua) on versions
where a naive order goes wrong: pre-releases (``~``), epochs, binNMUs (``+b1``), snapshots (``^``),
leading zeros, letters against numbers, separators that differ."""

from __future__ import annotations

import itertools
import shutil
import subprocess

import pytest

from cernvm_build import vercmp

DEB = [
    "1.0", "1.0-1", "1.0-1+b1", "1.0~rc1", "1.0~rc1-1", "1:0.9", "1.0+deb12u1", "1.0a", "1.0.1",
    "2.36-9+deb12u14", "2.36-9", "1.0-1~bpo12+1", "01.0", "1.0~~", "0:1.0-0",
]  # fmt: skip
RPM = [
    "1.0-1", "1.0~rc1-1", "1.0-1.el9", "1.0-1.el9_4", "1:0.9-1", "0:1.0-1", "1.0^git1-1", "1.0.1-1",
    "1.0a-1", "1.0-10", "1.0-9", "1.01-1", "1.0_1-1", "2.0-1", "1.0~~-1", "1.0-1^post",
]  # fmt: skip


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg")
def test_debian_order_is_dpkgs() -> None:
    for a, b in itertools.product(DEB, repeat=2):
        lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
        assert (vercmp.debian_key(a) < vercmp.debian_key(b)) == lt, (a, b)


@pytest.mark.skipif(shutil.which("rpm") is None, reason="needs rpm")
def test_rpm_order_is_rpms() -> None:
    pairs = list(itertools.product(RPM, repeat=2))
    lua = "".join(f'print(rpm.vercmp("{a}", "{b}"), " ")' for a, b in pairs)  # EVR strings
    got = subprocess.run(
        ["rpm", "--eval", f"%{{lua: {lua}}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(got) == len(pairs)
    for (a, b), want in zip(pairs, got, strict=True):
        assert vercmp.rpm_compare(a, b) == int(want), (a, b)


def test_the_cases_a_naive_order_gets_wrong() -> None:
    assert vercmp.debian_key("1.0~rc1") < vercmp.debian_key("1.0") < vercmp.debian_key("1.0-1")
    assert vercmp.debian_key("1.0-1") < vercmp.debian_key("1.0-1+b1")
    assert vercmp.debian_key("1:0.1") > vercmp.debian_key("9.9")
    assert vercmp.rpm_compare("1.0~rc1-1", "1.0-1") == -1 and vercmp.rpm_compare("1:0.1-1", "9.9-1") == 1
    assert vercmp.rpm_compare("1.0^git1-1", "1.0-1") == 1 and vercmp.rpm_compare("1.0-10", "1.0-9") == 1


@pytest.mark.parametrize(
    "v", ["", ":", "x:1", "-", "1:-", "²:1", "1.0-", "~", "^", "\x00", "٣", "1" * 5000, "9" * 5000 + ":1"]
)
def test_any_string_has_a_place(v: str) -> None:
    """Versions are read from metadata: no string raises, whatever it holds."""
    vercmp.debian_key(v) < vercmp.debian_key("1.0")  # noqa: B015
    assert vercmp.rpm_compare(v, "1.0-1") in (-1, 0, 1) and vercmp.rpm_compare(v, v) == 0


def test_long_digit_runs_keep_their_order() -> None:
    """Digit runs past int()'s 4,300 digits (a ValueError, pr19b finding 1) compare by value."""
    big, bigger = "1" + "0" * 5000, "2" + "0" * 5000
    assert vercmp.debian_key(f"1.{big}") < vercmp.debian_key(f"1.{bigger}")
    assert vercmp.debian_key(f"1.00{big}") == vercmp.debian_key(f"1.{big}") > vercmp.debian_key("1.9")
