"""The mount daemon's start on a reboot (issue 13: μCernVM's mount is on the boot's critical path), on
the host: this tree beside a reference tree (``--ref DIR``: e.g. ``git archive main cernvm_build | tar
-x -C DIR``), in alternating rounds.

A small tree is published and served on 127.0.0.1 from its own process; a first start (cache on a
fresh folder, not counted) fills the cache as a first boot does, and its root hash is pinned. Each
round then starts as the initrd does on a reboot (pinned by ``--snapshot-file``, warm cache,
``--no-magic-xattrs --prefetch-in-order``) in a fresh interpreter, up to the repository being open
and verified (the manifest, whitelist, certificate and signatures, the pin, the cache taken stock
of), without FUSE. Figures: the process's CPU milliseconds of the imports and of the open, and
how many modules the open imported, as medians over the rounds, ours beside the reference's. Both
trees are byte-compiled first (as the initrd ships them); the children run from /tmp, so that the
working directory does not shadow ``PYTHONPATH``. CPU, not wall time: other work shares the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))  # run as a script

from bench.common import Result, flags, print_table  # noqa: E402
from bench.cvmfs_read import _server_process, publish  # noqa: E402

FQRN = "start.cernvm.test"
SOURCE = Path(json.__file__).parent  # a small tree: ~10 files

_CHILD = """
import sys, time
t0 = time.process_time()
from cernvm_build.cvmfs import mount
t1 = time.process_time()
args = mount.build_parser().parse_args(sys.argv[1:])
before = len(sys.modules)
t2 = time.process_time()
repo = mount._open(args)
t3 = time.process_time()
print((t1 - t0) * 1000, (t3 - t2) * 1000, len(sys.modules) - before)
"""


def _start(tree: str, argv: list[str]) -> tuple[float, float, int]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPATH": tree}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd="/tmp",
        timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the start from {tree} failed: {out.stderr.strip().splitlines()[-1:]}")
    imports, opened, modules = out.stdout.split()
    return float(imports), float(opened), int(modules)


def _pin(stratum: Path, pin: Path) -> None:
    """What the first boot's mount leaves in ``--snapshot-file``: the root hash it mounted."""
    for line in (stratum / ".cvmfspublished").read_bytes().split(b"\n"):
        if line.startswith(b"C"):
            pin.write_text(f"{line[1:].decode()}\n\n")
            return
    raise RuntimeError(f"{stratum}: no root hash in the manifest")


def run(quick: bool = True, rounds: int | None = None, ref: str | None = None) -> list[Result]:
    if rounds is None:
        rounds = 5 if quick else 30
    trees = {"this": str(ROOT)} | ({"ref": ref} if ref else {})
    for tree in trees.values():
        subprocess.run([sys.executable, "-m", "compileall", "-q", f"{tree}/cernvm_build"], check=True)
    with tempfile.TemporaryDirectory(prefix="mount-start-") as tmp:
        work = Path(tmp)
        shutil.copytree(SOURCE, work / "tree" / "json")
        stratum, pub = publish(work, work / "tree", FQRN)
        (work / "mnt").mkdir()
        got: dict[str, list[tuple[float, float, int]]] = {k: [] for k in trees}
        with _server_process(stratum.parent) as url:
            argv = ["--fqrn", FQRN, "--server", f"{url}/cvmfs/{FQRN}", "--public-key", str(pub)]
            argv += ["--cache", str(work / "cache"), "--snapshot-file", str(work / "pin")]
            argv += ["--no-magic-xattrs", "--prefetch-in-order", str(work / "mnt")]
            _start(trees["this"], argv)  # the first boot's: fills the cache (not counted)
            _pin(stratum, work / "pin")
            for r in range(rounds):
                for name in list(trees) if r % 2 == 0 else list(reversed(trees)):
                    got[name].append(_start(trees[name], argv))
    results = []
    for i, (metric, unit) in enumerate(
        (("imports", "ms CPU"), ("open", "ms CPU"), ("modules imported by the open", ""))
    ):
        med = {name: statistics.median(row[i] for row in rows) for name, rows in got.items()}
        results.append(
            Result(
                "cvmfs.mount_start",
                metric,
                med["this"],
                unit,
                reference="ref tree" if ref else None,
                reference_value=med.get("ref"),
                extra={"rounds": rounds},
            )
        )
    return results


if __name__ == "__main__":
    flags(__doc__, {"--ref": "DIR: the reference tree (PYTHONPATH)", "--rounds": "N (default 30)"})
    parser = argparse.ArgumentParser()
    parser.add_argument("--ref")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    print(f"load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        rows = run(quick=False, rounds=args.rounds, ref=args.ref)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print_table(rows)
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
