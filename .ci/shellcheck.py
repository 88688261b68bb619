#!/usr/bin/env python3
"""shellcheck over the shell code the toolkit ships (``make shellcheck``, part of ``make lint``).

The μCernVM ``/init`` is checked as the initrd runs it: ``init.head.sh`` and the ``init.d/NN-*.sh``
fragments fused into one busybox-sh script (a fragment alone uses variables and functions of the
head). Findings are reported at the fragment's own file:line. Every other ``#!/bin/sh`` script under
``cernvm_build/data/`` (udhcpc hooks, the demo OS's rc scripts) is checked on its own.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cernvm_build.bootloader.initrd import fused_init  # noqa: E402
from cernvm_build.paths import DATA_AREAS, data_dir  # noqa: E402

MARKER = re.compile(r"^# ---- (?P<name>\S+) ----$")


def _origin(fused: list[str], line: int) -> tuple[Path, int]:
    """The fragment file and line a line of the fused init comes from."""
    boot = data_dir("bootloader")
    line = min(line, len(fused))  # a parse error is reported one line past the end
    for n in range(line, 0, -1):
        m = MARKER.match(fused[n - 1])
        if m:
            return boot / "init.d" / m["name"], line - n
    return boot / "init.head.sh", line


def _shellcheck(files: list[Path]) -> list[dict[str, object]]:
    proc = subprocess.run(
        ["shellcheck", "--shell=sh", "--format=json1", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 1):
        raise SystemExit(f"shellcheck failed: {proc.stderr.strip()}")
    comments: list[dict[str, object]] = json.loads(proc.stdout or "{}").get("comments", [])
    return comments


def _scripts() -> list[Path]:
    boot = data_dir("bootloader")
    fused = {boot / "init.head.sh", *(boot / "init.d").glob("*.sh")}
    found = []
    for area in DATA_AREAS:
        for f in sorted(data_dir(area).rglob("*")):
            if f.is_file() and f not in fused:
                with f.open("rb") as fh:
                    if fh.readline().startswith((b"#!/bin/sh", b"#!/bin/bash", b"#!/bin/busybox sh")):
                        found.append(f)
    return found


def _finding(file: Path, line: int, c: dict[str, object]) -> str:
    where = file.relative_to(ROOT) if file.is_relative_to(ROOT) else file
    return f"{where}:{line}:{c['column']}: {c['level']}: {c['message']} [SC{c['code']}]"


def main() -> int:
    if shutil.which("shellcheck") is None:
        print(
            "shellcheck: not installed (Debian package 'shellcheck'; `make apt` installs it)", file=sys.stderr
        )
        return 4
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        init = Path(tmp) / "init"
        text = fused_init().decode()
        init.write_text(text)
        lines = text.splitlines()
        for c in _shellcheck([init]):
            file, line = _origin(lines, int(str(c["line"])))
            problems.append(_finding(file, line, c))
    scripts = _scripts()
    for c in _shellcheck(scripts):
        file = Path(str(c["file"]))
        problems.append(_finding(file, int(str(c["line"])), c))
    for p in problems:
        print(p)
    print(
        f"shellcheck: the fused /init ({len(lines)} lines) and {len(scripts)} scripts: "
        f"{len(problems)} finding(s)",
        file=sys.stderr,
    )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
