"""Helpers for profile tests: small profiles in a temporary folder, on top of a complete one."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_build.paths import data_dir

MINIMAL = """\
os: {{release: 9, distribution: AlmaLinux}}
cvmfs:
  repository: demo.cernvm.test
  servers: [http://127.0.0.1:8000/cvmfs/@fqrn@]
  public_keys: [{key}]
bootloader: {{branch: demo, version: "2026.11"}}
"""


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """``write("name", yaml_text)`` -> ``tmp_path/name.yaml`` (dedented). ``minimal.yaml`` is there
    already: a complete profile without extends that test profiles can extend."""
    key = data_dir("profiles") / "keys" / "demo.cernvm.test.pub"
    (tmp_path / "minimal.yaml").write_text(MINIMAL.format(key=key))

    def _write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return _write
