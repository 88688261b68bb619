"""proc.streamed: a tool's stdout read as it comes, its exit code and last stderr line kept."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from cernvm_build import proc
from cernvm_build.errors import ToolError
from cernvm_build.proc import run, streamed


def test_streamed_gives_stdout_code_and_the_last_stderr_line() -> None:
    script = (
        "echo out; i=0; while [ $i -lt 200 ]; do echo noise $i >&2; i=$((i+1)); done; echo why >&2; exit 3"
    )
    with streamed(["sh", "-c", script]) as tool:
        assert tool.stdout.read() == b"out\n"
    assert (tool.code, tool.why) == (3, "why")


def test_streamed_without_stderr_has_no_why() -> None:
    with streamed(["sh", "-c", "exit 0"]) as tool:
        assert tool.stdout.read() == b""
    assert (tool.code, tool.why) == (0, "")


def test_streamed_waits_for_a_tool_whose_reader_stopped_early() -> None:
    with pytest.raises(RuntimeError), streamed(["sh", "-c", "yes"]) as tool:
        tool.stdout.read(10)
        raise RuntimeError("the reader fails")
    assert tool.proc.returncode is not None  # waited for: stdout closed, yes ended on SIGPIPE


def test_streamed_names_a_missing_tool() -> None:
    missing = pytest.raises(ToolError, match="required tool 'no-such-tool-x' is not installed")
    with missing, streamed(["no-such-tool-x"]):
        pass


def test_a_tool_found_outside_path_runs_with_the_system_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # $PATH without /usr/bin: `which` found syslinux in /usr/bin, and syslinux, which runs mtools by
    # $PATH, failed "failed to create ldlinux.sys" (pr28b finding 4); the child's $PATH now ends
    # with the folders `which` looked in
    monkeypatch.setenv("PATH", str(tmp_path))
    assert proc.run(["sh", "-c", "command -v ls"]).stdout.strip() in (b"/usr/bin/ls", b"/bin/ls")
    done = proc.run(["sh", "-c", 'echo "$PATH"'], env={"PATH": "/x"}).stdout.decode().strip()
    assert done.split(":")[0] == "/x" and "/usr/bin" in done.split(":")
    with proc.streamed(["sh", "-c", "command -v ls"]) as s:
        assert s.stdout.read().strip() in (b"/usr/bin/ls", b"/bin/ls")


def test_every_tool_the_code_runs_names_its_debian_package() -> None:
    # `which` hints "apt-get install <package>"; a tool missing from TOOL_PACKAGES hinted its own name:
    # "apt-get install mke2fs", "… busybox" (the initrd needs busybox-static), "… virsh", "… ldd",
    # none of them the package to install (pr28b finding 5)
    import re

    from cernvm_build.image.build import TOOLS, check_tools

    src = Path(proc.__file__).parent
    named = set()
    for path in src.rglob("*.py"):
        text = path.read_text()
        named.update(re.findall(r'\b(?:run|streamed|which)\(\s*\[?\s*"([a-z0-9_.+-]+)"', text))
    named.update(t for tools in TOOLS.values() for t in tools)
    named.update(re.findall(r'"([a-z0-9_.+-]+)"', inspect.getsource(check_tools)))
    named -= {
        "ceph",
        "ceph-authtool",
        "ceph-mon",
        "ceph-osd",
        "monmaptool",
        "radosgw-admin",
    }  # localrgw's own
    assert sorted(named - set(proc.TOOL_PACKAGES)) == []


def test_a_tool_that_fills_a_disk_is_told_to_free_space(tmp_path: Path) -> None:
    # pr28a finding 13: an image build whose output filled ended "'mcopy' failed: error in fat_write:
    # No space left on device" with only the command line as its hint
    src = tmp_path / "src"
    src.write_text("x\n")
    with pytest.raises(ToolError, match="No space left on device") as e:
        run(["cp", src, "/dev/full"])
    assert str(e.value.hint).startswith("the disk it writes to is full: free space there")
    with pytest.raises(ToolError) as e:
        run(["cp", tmp_path / "absent", tmp_path / "x"])
    assert str(e.value.hint).startswith("command was: ")
