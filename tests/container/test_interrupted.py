"""A build killed half-way leaves no output under a final name; the next run finishes the job."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from cernvm_build.container.build import BuildRequest, build
from cernvm_build.container.image import ImageSpec
from cernvm_build.container.source import LocalTree

from .trees import make_tree

SPEC = ImageSpec("localhost", "killed", "1", created=0)
FORMATS = ["oci", "docker-archive", "apptainer"]


def test_killed_build_then_rerun(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from cernvm_build.container.build import BuildRequest, build
        from cernvm_build.container.image import ImageSpec
        from cernvm_build.container.source import LocalTree

        class Dying(LocalTree):
            opened = 0
            def open(self, entry):
                Dying.opened += 1
                if Dying.opened == {{n}}:
                    os.kill(os.getpid(), signal.SIGKILL)
                return super().open(entry)

        spec = ImageSpec("localhost", "killed", "1", created=0)
        build(BuildRequest(Dying(Path({str(tree)!r})), spec, {FORMATS!r}, Path({str(out)!r}), "k"))
    """)
    # killed while writing the layer (the tree has 7 files to read), then while unpacking the sandbox
    for n, expected in ((3, set()), (12, {"k.oci", "k.oci.tar", "k.docker.tar"})):
        proc = subprocess.run([sys.executable, "-c", script.replace("{n}", str(n))], capture_output=True)
        assert proc.returncode == -9, proc.stderr
        names = set(os.listdir(out))
        assert {x for x in names if not x.startswith(".")} == expected
    assert any(n.startswith(".k.sandbox.") for n in os.listdir(out))  # the killed run's temporary
    build(BuildRequest(LocalTree(tree), SPEC, FORMATS, out, "k"))
    assert sorted(os.listdir(out)) == ["k.docker.tar", "k.oci", "k.oci.tar", "k.sandbox"]
    # and the outputs are the ones an uninterrupted build makes
    clean = tmp_path / "clean"
    build(BuildRequest(LocalTree(tree), SPEC, FORMATS, clean, "k"))
    for name in ("k.oci.tar", "k.docker.tar"):
        assert (out / name).read_bytes() == (clean / name).read_bytes()
