"""``cernvm-build demo``: what ``make run`` calls.

For now it shows the resolved demo profile and the plan of what will be built from it; the release
area grows it into the whole flow (publish the demo repository, serve it, build, boot).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from .. import profile
from .app import Output, subparser

DESCRIPTION = """\
The whole flow on a local demo repository, without the internet.

  cernvm-build demo                     the demo profile and the plan of what it builds
  cernvm-build demo --json              the same, for scripts
  cernvm-build demo --profile el9       the plan for another profile"""


@dataclass(frozen=True)
class Step:
    stage: str
    action: str
    output: str


def plan(p: profile.Profile) -> list[Step]:
    """What building ``p`` produces, in order (names as the stages write them)."""
    steps: list[Step] = []
    snap = p.cvmfs.snapshot
    pin = snap.tag or snap.date or snap.root_hash or "newest revision"
    keys = ", ".join(k.name for k in p.cvmfs.public_keys)
    steps.append(
        Step(
            "cvmfs",
            f"verify {p.cvmfs.repository} (keys: {keys}), pin {pin}",
            f"{p.cvmfs.server_urls()[0]} {p.cvmfs.path}",
        )
    )
    kernel = p.kernel.package or f"{p.kernel.vmlinuz} + {p.kernel.modules}"
    steps.append(Step("bootloader", f"μCernVM kernel ({kernel}) + initrd", f"{p.artifact_stem}.initrd"))
    for fmt in p.image.formats:
        steps.append(Step("image", f"boot image ({fmt})", f"{p.artifact_stem}.{fmt}"))
    for fmt in p.container.formats:
        steps.append(Step("container", f"reference container ({fmt})", f"cernvm-{p.name}:{fmt}"))
    return steps


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    p = profile.load(args.profile)
    steps = plan(p)
    data: dict[str, Any] = {"profile": p.to_dict(), "plan": [asdict(s) for s in steps]}

    snap = p.cvmfs.snapshot

    def render(_: Any) -> None:
        out.print(f"[bold]profile {p.name}[/bold]: {p.description}")
        out.table(
            ["setting", "value"],
            [
                ["os", f"{p.os.distribution} {p.os.release} ({p.os.family}, {p.os.arch})"],
                ["repository", f"{p.cvmfs.repository} {p.cvmfs.path}"],
                ["servers", " ".join(p.cvmfs.server_urls())],
                [
                    "snapshot",
                    snap.tag or snap.date or snap.root_hash or "newest",
                ],
                ["bootloader", f"{p.bootloader.branch} {p.bootloader.version}-{p.bootloader.release}"],
                ["cmdline", " ".join(p.bootloader.cmdline) or "-"],
                ["context", " ".join(f"{k}={v}" for k, v in p.context.items()) or "-"],
                ["frozen", "yes" if p.preservation.frozen else "no"],
                ["file", str(p.source)],
            ],
        )
        out.print()
        out.print("[bold]plan[/bold]")
        for s in steps:
            out.print(f"  {s.stage:<11} {s.action}\n  {'':<11} -> {s.output}", markup=False)

    out.data(data, render)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparser(
        sub,
        "demo",
        help="the whole flow on a local demo repository (make run)",
        description=DESCRIPTION,
        json=True,
        handler=cmd_demo,
    )
    p.add_argument("--profile", default="demo", metavar="NAME", help="profile to use (default: demo)")
