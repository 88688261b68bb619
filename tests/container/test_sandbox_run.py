"""The sandbox's scripts run the way Apptainer runs them: env scripts sourced, then the action."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cernvm_build.container.build import BuildRequest, build
from cernvm_build.container.image import ImageSpec
from cernvm_build.container.source import LocalTree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root (CI runs as root)")


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", tree / "bin" / "busybox")
    for applet in ("sh", "echo", "env"):
        os.symlink("busybox", tree / "bin" / applet)
    spec = ImageSpec(
        "localhost", "busybox", "1", created=0,
        entrypoint=("/bin/sh", "-c"), cmd=('echo "default: $GREETING"',),
        env={"GREETING": "it's \"quoted\" $HOME", "PATH": "/bin"},
    )  # fmt: skip
    build(BuildRequest(LocalTree(tree), spec, ["apptainer"], tmp_path / "out", "bb"))
    return tmp_path / "out" / "bb.sandbox"


def run_in(sandbox: Path, *argv: str) -> str:
    env = {"PATH": "/bin"}
    chroot = shutil.which("chroot", path="/usr/sbin:/sbin:/usr/bin:/bin") or "chroot"
    return subprocess.run([chroot, str(sandbox), *argv], env=env, capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def test_run_action_uses_entrypoint_and_default_command(sandbox: Path) -> None:
    assert run_in(sandbox, "/.singularity.d/actions/run") == 'default: it\'s "quoted" $HOME\n'


def test_run_action_arguments_replace_the_command(sandbox: Path) -> None:
    assert run_in(sandbox, "/.singularity.d/actions/run", "echo given") == "given\n"


def test_exec_action_sees_the_image_environment(sandbox: Path) -> None:
    lines = run_in(sandbox, "/.singularity.d/actions/exec", "env").splitlines()
    assert 'GREETING=it\'s "quoted" $HOME' in lines
