"""`cernvm-build` imports only the area a command runs: the others' libraries cost ~0.8 CPU-s a start.

Each command runs in a fresh interpreter through the real entry point; the modules loaded at exit are
compared with the heavy ones no such command needs (no timing, so a loaded machine cannot fail it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.cli.areas import HELP as AREAS

#: What a command outside cvmfs/launch/image/container must not pay for (0.3 s of it is launch alone).
HEAVY = ("paramiko", "cryptography", "libvirt", "cernvm_build.launch", "cernvm_build.cvmfs.repository")

CLI = "cernvm_build.cli."

#: Runs `cernvm-build ARGS...` as the entry point does, then writes sys.modules to the file argv[1].
WRAPPER = """
import json, sys
from cernvm_build.cli.main import main
try:
    code = main(sys.argv[2:])
except SystemExit as e:
    code = e.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def loaded_by(argv: list[str], tmp_path: Path) -> tuple[int, set[str]]:
    """The exit code of `cernvm-build ARGV` and the modules it imported."""
    record = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(record), *argv], capture_output=True, text=True, check=False
    )
    assert record.exists(), proc.stderr
    result = json.loads(record.read_text())
    return result["code"], set(result["modules"])


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize(
    ("argv", "area"),
    [
        (["--version"], None),
        (["--help"], None),
        (["site", "build", "--help"], "cernvm_build.cli.site"),
        (["os", "--help"], "cernvm_build.cli.os"),
        (["mirror", "--help"], "cernvm_build.cli.mirror"),
    ],
)
def test_command_imports_only_its_area(argv: list[str], area: str | None, tmp_path: Path) -> None:
    code, modules = loaded_by(argv, tmp_path)
    assert code in (0, None)
    assert heavy_in(modules) == []
    areas = {m for m in modules if m.startswith(CLI) and m[len(CLI) :] in AREAS}
    assert areas == ({area} if area else set())


def test_area_help_still_loads_what_it_describes(tmp_path: Path) -> None:
    """The check above can fail: an area that needs the heavy modules does import them."""
    code, modules = loaded_by(["cvmfs", "--help"], tmp_path)
    assert code in (0, None)
    assert "cernvm_build.cvmfs.repository" in heavy_in(modules)
