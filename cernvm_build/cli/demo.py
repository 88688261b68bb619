"""``cernvm-build demo``: what ``make run`` calls — the whole flow on the embedded demo repository.

The flow itself is ``cernvm_build.demo.flow``; ``--plan`` only shows the resolved profile and what it
would build.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import profile
from . import areas, extras
from .app import Output, seconds, styled, subparser, tcp_port
from .inputs import profile_ref

# Handlers import the modules of their area when they run (deliberate lazy imports): `--help` and
# the other commands start without loading every area, and a missing optional extra only stops the
# command that needs it.

DESCRIPTION = """\
The whole flow on a local demo repository, without the internet: publish the demo OS into the
CernVM-FS repository demo.cernvm.test, serve it on 127.0.0.1, build the demo release (μCernVM
images, reference container, SHA256SUMS, index) and verify it, boot the image with cernvm-launch
(TCG when KVM is unusable), run a command over SSH, and stop everything it started.

  cernvm-build demo                     the whole flow (what 'make run' does)
  cernvm-build demo --no-boot           publish, serve and build, but boot nothing
  cernvm-build demo --os debian12       the same with Debian 12 (systemd, cloud-init) built from
                                        verified packages (root; first run fetches ~190 packages)
  cernvm-build demo --json              the run's steps, timings and locations, for scripts
  cernvm-build demo --plan              only the resolved profile and what it would build
  cernvm-build demo --plan --os debian12   ... for the Debian 12 run
  cernvm-build demo --plan --profile el9   the plan for another profile

A second run reuses the caches (packages, kernel, the published snapshot, a verified release built
from the same snapshot) and prints its timings next to the previous run's."""


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
    from ..demo.flow import demo_profile

    if not args.plan:
        if args.profile is not None:  # the run boots --os: a --profile there was silently not used
            from ..errors import UsageError

            raise UsageError(
                "--profile only chooses the profile --plan shows",
                hint="the run publishes and boots --os (demo or debian12); add --plan to see a profile",
            )
        return _run(args, out)
    # without --profile: the profile the run would use (--os, and --port's server), as the run does
    p = profile.load(args.profile) if args.profile is not None else demo_profile(args.port, args.os)
    steps = plan(p)
    # the run's --port is a --server override: the stage commands need it too (they said port 8000)
    servers = (
        "".join(f" --server {s}" for s in p.cvmfs.servers)
        if args.profile is None and args.port != 8000
        else ""
    )
    commands = [f"cernvm-build image {p.name}{servers}", f"cernvm-build container {p.name}{servers}"]
    data: dict[str, Any] = {"profile": p.to_dict(), "plan": [asdict(s) for s in steps], "commands": commands}

    snap = p.cvmfs.snapshot

    def render(_: Any) -> None:
        out.print(styled((f"profile {p.name}", "bold"), f": {p.description}"))
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
        out.print(styled(("plan", "bold")))
        for s in steps:
            # two prints: each is one line (a newline inside one is shown as \x0a since pr26b 13)
            out.print(f"  {s.stage:<11} {s.action}", markup=False)
            out.print(f"  {'':<11} -> {s.output}", markup=False)
        out.print(styled(("stage by stage", "bold")))
        for c in commands:
            out.print(f"  {c}", markup=False)

    out.data(data, render)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparser(
        sub,
        "demo",
        help=areas.HELP["demo"],
        description=DESCRIPTION,
        json=True,
        handler=cmd_demo,
    )
    p.add_argument(
        "--plan", action="store_true", help="show the profile and what it would build; run nothing"
    )
    p.add_argument(
        "--profile",
        type=profile_ref,
        metavar="NAME",
        help="profile for --plan (default: the one of --os, with --port's server)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("build/demo"), help="output folder (default: %(default)s)"
    )
    p.add_argument(
        "--port", type=tcp_port, default=8000, help="port for the repository server (default: 8000)"
    )
    p.add_argument("--no-boot", action="store_true", help="build and verify, but boot no VM")
    p.add_argument(
        "--boot-timeout",
        type=seconds,
        default=900.0,
        metavar="SECONDS",
        help="how long the boot may take to answer SSH (default: 900; a real OS under TCG on a busy "
        "host can need more)",
    )
    p.add_argument(
        "--os",
        choices=("demo", "debian12"),
        default="demo",
        help="the OS to publish and boot: the small demo OS (default), or Debian 12 built from verified "
        "packages (systemd, cloud-init; needs root)",
    )
    p.add_argument(
        "--version", default="", help="release version (default: 2026.01-1, the demo OS's fixed date)"
    )


def _run(args: argparse.Namespace, out: Output) -> int:
    from ..demo.flow import DemoOptions, run_demo

    # Booting needs the 'launch' extra: say so before minutes of building, not at the boot step.
    if not args.no_boot and extras.missing_module("launch") is not None:
        raise extras.error("cernvm-build demo", "launch")

    opts = DemoOptions(
        out=args.out.resolve(),
        port=args.port,
        boot=not args.no_boot,
        version=args.version,
        os=args.os,
        boot_timeout=args.boot_timeout,
    )
    run = run_demo(opts, out.info, out.warn)  # a warning is no step: -q keeps it (QUIET_HELP)

    def render(_: Any) -> None:
        rows = []
        for s in run.steps:
            before = run.previous.get(s.name)
            rows.append([s.name, f"{s.seconds:.1f}", "-" if before is None else f"{before:.1f}", s.detail])
        before_total = run.previous.get("total")
        rows.append(["total", f"{run.total:.1f}", "-" if before_total is None else f"{before_total:.1f}", ""])
        out.table(["step", "seconds", "previous run", "what happened"], rows, title="cernvm-build demo")
        if run.accelerator:
            out.print(f"accelerator: {run.accelerator}")
        for what, where in run.locations.items():
            out.print(f"{what:>15}: {where}")
        if run.os_release:
            out.print(
                "\nthe guest's /etc/os-release over SSH:\n" + run.os_release.rstrip(),
                lines=True,
                markup=False,
            )

    out.data(run.to_json(), render)
    return 0
