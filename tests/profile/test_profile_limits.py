"""Hostile profiles cost bounded memory and time: the real CLI, in a subprocess whose address space is
capped, refuses each with its one-line error, and its peak RSS is measured (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build import profile
from cernvm_build.profile.yamlnodes import MAX_FILE_BYTES

BROKEN = Path(__file__).parent / "broken"
WORKTREE = Path(__file__).resolve().parents[2]
HOSTILE = [
    "template_huge_loop",
    "template_center",
    "template_repeat",
    "template_format_width",
    "template_macro_recursion",
    "template_doubling",
    "template_endless_macro",
    "deep_nesting",
    "alias_bomb",
]
PEAK_RSS_MB = 256

#: the CLI under an address-space cap (so a runaway allocation fails instead of swapping the host),
#: reporting its own peak RSS on stderr as it exits
RUNNER = """
import json, resource, runpy, sys
cap = 1 << 30
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
try:
    runpy.run_module("cernvm_build.cli.main", run_name="__main__", alter_sys=True)
finally:
    # VmHWM, not ru_maxrss: Linux carries the parent's (pytest's) high-water mark across fork and exec
    hwm = [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
    sys.stderr.write("\\n" + json.dumps({"peak_rss_mb": int(hwm[0]) // 1024}) + "\\n")
"""


def run_validate(path: Path) -> tuple[int, str, int]:
    """(exit code, output without the RSS line, peak RSS in MB) of `profiles validate PATH`."""
    res = subprocess.run(
        [sys.executable, "-c", RUNNER, "profiles", "validate", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400", "PYTHONPATH": str(WORKTREE)},
        timeout=120,
    )
    *lines, last = res.stderr.rstrip("\n").split("\n")
    rss = json.loads(last)["peak_rss_mb"]
    return res.returncode, res.stdout + "\n".join(lines), rss


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_profile_is_refused_in_bounded_memory(name: str) -> None:
    code, output, rss = run_validate(BROKEN / f"{name}.yaml")
    assert code == 3, output
    assert "Traceback" not in output and f"{name}.yaml:" in output, output
    assert rss < PEAK_RSS_MB, f"peak RSS {rss} MB"


def test_a_200_mb_profile_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as f:
        f.write("extends: el7\ndescription: |\n")
        line = "  " + "lol " * 25 + "\n"
        for _ in range(200 * 1024 * 1024 // len(line)):
            f.write(line)
    code, output, rss = run_validate(big)
    assert code == 3, output
    assert f"big.yaml:1:1: the file is {big.stat().st_size} bytes" in output
    assert f"at most {MAX_FILE_BYTES} bytes" in output
    assert rss < PEAK_RSS_MB, f"peak RSS {rss} MB"


def test_the_largest_allowed_profile_parses_in_bounded_memory(tmp_path: Path) -> None:
    """Just under the size cap, the worst YAML for the parser (one tiny value per two bytes) is stopped by
    the value count, within the memory bound: the file cap is what bounds the parser."""
    text = "extends: el7\ncontext: ["
    text += "0," * ((MAX_FILE_BYTES - len(text) - 2) // 2) + "0]\n"
    path = tmp_path / "wide.yaml"
    path.write_text(text)
    assert path.stat().st_size <= MAX_FILE_BYTES
    code, output, rss = run_validate(path)
    assert code == 3 and "more than 20000 values" in output, output
    assert rss < PEAK_RSS_MB, f"peak RSS {rss} MB"


def test_a_file_one_byte_over_the_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "over.yaml"
    path.write_text("extends: el7\n" + "#" * (MAX_FILE_BYTES - 13) + "\n")
    assert path.stat().st_size == MAX_FILE_BYTES + 1
    with pytest.raises(profile.ProfileError, match=r"over.yaml:1:1: the file is 262145 bytes"):
        profile.load(path)
    path.write_text("extends: el7\n" + "#" * (MAX_FILE_BYTES - 14) + "\n")
    assert profile.load(path).name == "over"


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"format: 1\nextends: el7\ndescription: caf\xe9\n", r"bad.yaml:3:17: byte 0xe9 is not UTF-8"),
        (b"format: 1\nextends: el7\n\xc3\xa9\xff: 1\n", r"bad.yaml:3:2: byte 0xff is not UTF-8"),
        (
            b"format: 1\nextends: el7\ndescription: \xc3\xa9a\0b\n",
            r"bad.yaml:3:16: YAML syntax error: character '\\x00' \(#x0000\) is not allowed",
        ),
    ],
    ids=["latin1-value", "after-a-two-byte-char", "raw-nul"],
)
def test_a_byte_that_is_not_profile_text_is_named_at_its_line_and_column(
    tmp_path: Path, content: bytes, said: str
) -> None:
    """The column counts characters (a two-byte 'é' is one), as every other profile error does."""
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(profile.ProfileError, match=said) as e:
        profile.load(path)
    assert "\n" not in str(e.value) and e.value.hint


@pytest.mark.parametrize("key", ["/dev/zero", "fifo.pub", "big.pub"])
def test_a_public_key_file_is_read_bounded_and_only_if_regular(tmp_path: Path, key: str) -> None:
    """``cvmfs.public_keys: [/dev/zero]`` filled the memory and a FIFO was waited on for ever; the
    profile is refused at the key's line instead (in the capped CLI, as the other hostile inputs)."""
    os.mkfifo(tmp_path / "fifo.pub")
    (tmp_path / "big.pub").write_bytes(b"-----BEGIN PUBLIC KEY-----\n" + b"A" * (1 << 20))
    path = tmp_path / "keyed.yaml"
    path.write_text(f"extends: el7\ncvmfs:\n  public_keys: !replace [{key}]\n")
    code, output, rss = run_validate(path)
    assert code == 3, output
    assert "keyed.yaml:3:" in output and "cvmfs.public_keys" in output and "Traceback" not in output, output
    assert rss < PEAK_RSS_MB, f"peak RSS {rss} MB"


def test_an_extends_chain_is_bounded(tmp_path: Path) -> None:
    """Each level of ``extends`` recursed (and copied the chain): 1,500 files each extending the next
    were a RecursionError traceback. A chain past MAX_EXTENDS_DEPTH is one line at its ``extends``."""
    from cernvm_build.profile.resolve import MAX_EXTENDS_DEPTH

    n = 1500
    for i in range(n):
        (tmp_path / f"c{i}.yaml").write_text(f"extends: {f'c{i + 1}' if i < n - 1 else 'el7'}\n")
    code, output, rss = run_validate(tmp_path / "c0.yaml")
    assert code == 3 and "Traceback" not in output, output
    assert f"c{MAX_EXTENDS_DEPTH - 1}.yaml:1:10: extends: extends chain deeper than" in output, output
    assert rss < PEAK_RSS_MB, f"peak RSS {rss} MB"
    assert profile.load(tmp_path / f"c{n - 10}.yaml").name == f"c{n - 10}"  # a short chain loads
