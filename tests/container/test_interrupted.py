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
    # killed while writing the layer (the tree has 7 files to read), then while unpacking the sandbox:
    # the outputs made before it (oci, docker-archive) are not put in place either, without the rest
    for n in (3, 12):
        proc = subprocess.run([sys.executable, "-c", script.replace("{n}", str(n))], capture_output=True)
        assert proc.returncode == -9, proc.stderr
        assert {x for x in os.listdir(out) if not x.startswith(".")} == set()
    staged = os.listdir(out / ".k.work" / "out")  # the killed run's, cleared by the next
    assert {"k.oci", "k.oci.tar", "k.docker.tar"} < set(staged)
    assert any(n.startswith(".k.sandbox.") for n in staged)
    build(BuildRequest(LocalTree(tree), SPEC, FORMATS, out, "k"))
    assert sorted(os.listdir(out)) == ["k.docker.tar", "k.oci", "k.oci.tar", "k.sandbox"]
    # and the outputs are the ones an uninterrupted build makes
    clean = tmp_path / "clean"
    build(BuildRequest(LocalTree(tree), SPEC, FORMATS, clean, "k"))
    for name in ("k.oci.tar", "k.docker.tar"):
        assert (out / name).read_bytes() == (clean / name).read_bytes()


def test_a_build_of_a_name_being_built_is_refused_and_keeps_running_builds_files(tmp_path: Path) -> None:
    """A second build of one name into one folder removed the first's work folder and temporaries
    as a killed run's: the first ended in a FileNotFoundError traceback. And a build of 'k' removed
    the temporaries of a running build of 'k.1' (by name: '.k.*.tmp'). Refused / kept now."""
    import fcntl

    import pytest

    from cernvm_build.errors import BuildError

    tree = make_tree(tmp_path / "tree")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".k.work").mkdir()  # the running build's work folder
    fd = os.open(out / ".k.lock", os.O_RDWR | os.O_CREAT)  # and its hold
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"pid 4242 (container build k)\n")
        with pytest.raises(
            BuildError, match=r"out: k is being built there by pid 4242 \(container build k\)"
        ):
            build(BuildRequest(LocalTree(tree), SPEC, FORMATS, out, "k"))
        assert (out / ".k.work").is_dir()
    finally:
        os.close(fd)
    running = out / f".k.1.oci.tar.{os.getpid()}.abc.tmp"  # a running build of 'k.1' (this process)
    running.write_bytes(b"half")
    dead = out / ".k.oci.tar.4194305.abc.tmp"  # no such process: a killed build's
    dead.write_bytes(b"half")
    build(BuildRequest(LocalTree(tree), SPEC, FORMATS, out, "k"))
    assert sorted(os.listdir(out)) == sorted(
        ["k.docker.tar", "k.oci", "k.oci.tar", "k.sandbox", running.name]
    )
