"""The whole mission on one machine: what ``make run`` does (through ``cernvm-build demo``).

publish the demo OS into the local repository → serve it on 127.0.0.1 → build the demo release
(μCernVM images + reference container, signed sums, index) and verify it → boot the image with the
launch library (TCG when KVM is unusable) → run a command over SSH → stop everything it started.

Each step is timed; the timings of the previous run are kept so a second run can show what the caches
saved. Steps report through ``say`` and never print.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CernVMError, InstanceError, LaunchError
from ..launch.catalog import FORMATS
from ..paths import cache_dir
from ..profile import Override, Profile, load
from ..report import LineReporter, scoped

if TYPE_CHECKING:
    from .. import launch

Say = Callable[[str], None]
INSTANCE = "cernvm-demo"


@dataclass
class StepResult:
    name: str
    seconds: float
    detail: str


@dataclass
class DemoRun:
    steps: list[StepResult] = field(default_factory=list)
    previous: dict[str, float] = field(default_factory=dict)
    locations: dict[str, str] = field(default_factory=dict)
    os_release: str = ""
    accelerator: str = ""

    @property
    def total(self) -> float:
        return sum(s.seconds for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": [
                dataclasses.asdict(s) | {"previous_seconds": self.previous.get(s.name)} for s in self.steps
            ],
            "total_seconds": round(self.total, 1),
            "previous_total_seconds": self.previous.get("total"),
            "locations": self.locations,
            "guest_os_release": self.os_release,
            "accelerator": self.accelerator,
        }


@dataclass(frozen=True)
class DemoOptions:
    out: Path
    port: int = 8000
    boot: bool = True
    version: str = ""  # default: DEFAULT_VERSION
    boot_timeout: float = 900
    os: str = "demo"  # or "debian12": the Debian tree (osbuild.debian) under the debian12 profile


@contextmanager
def _timed(run: DemoRun, name: str, say: Say) -> Iterator[dict[str, str]]:
    box = {"detail": ""}
    say(f"{name} …")
    start = time.monotonic()
    yield box
    seconds = time.monotonic() - start
    run.steps.append(StepResult(name, round(seconds, 1), box["detail"]))
    say(f"{name}: {box['detail']} ({seconds:.1f} s)")


#: ``--os`` → the profile that boots it
OS_PROFILES = {"demo": "demo", "debian12": "debian12"}


def demo_profile(port: int, os_name: str = "demo", tag: str | None = None) -> Profile:
    """The profile of ``os_name`` (``demo``), serving on ``port`` (the shipped profiles say 8000),
    pinned to the snapshot ``tag`` when given (what the run published)."""
    return load(OS_PROFILES[os_name], overrides=demo_overrides(port, tag))


def demo_overrides(port: int, tag: str | None = None) -> list[Override]:
    """What the demo lays over its shipped profile (the release records it, so that ``release
    rebuild`` resolves the same profile)."""
    overrides = []
    if port != 8000:
        # the same layer as cernvm-build's --server: checked like the profile's own servers
        overrides.append(Override("cvmfs.servers", [f"http://127.0.0.1:{port}/cvmfs/@fqrn@"], "--port"))
    if tag is not None:
        # Both OSes are published into the one demo repository: the demo profile's 'trunk' is the
        # other OS's tree after its run, when this run's publish had nothing new to add (a make run
        # after a 'demo --os debian12' booted Debian).
        overrides.append(Override("cvmfs.snapshot.tag", tag, "the published tag"))
    return overrides


def _reuse_release(release_dir: Path, prof: Profile, root_hash: str) -> bool:
    """An earlier demo release is reused when it verifies and was cut from the same snapshot and recipe."""
    from .. import releaseindex as idx
    from ..release.build import for_release, profile_hash
    from ..release.verify import verify

    try:
        release = idx.load(release_dir / "index.json")
    except CernVMError:
        return False
    rec = next((p for p in release.profiles if p.name == prof.name), None)
    return (
        rec is not None
        and rec.snapshot.root_hash == root_hash
        and rec.profile_sha256 == profile_hash(for_release(prof, release.version))
        and verify(release_dir / "index.json").ok
    )


def previous_timings(state: Path) -> dict[str, float]:
    """The seconds of each step of the last run, as ``run_demo`` saved them; what is not (a damaged
    file: a list, a step's time as text) is no timing. Shown with ``:.1f``, a text was a ValueError
    traceback after a whole successful run (pr19b finding 17)."""
    try:
        saved = json.loads(state.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    return {
        k: float(v)
        for k, v in saved.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
    }


#: the demo's release when --version is not given: the month of the demo OS's fixed date
#: (os_tree.DEFAULT_EPOCH), not the clock's, so two demo runs a month apart name the same release
DEFAULT_VERSION = "2026.01-1"


def release_version(requested: str) -> str:
    return requested or DEFAULT_VERSION


def run_demo(opts: DemoOptions, say: Say, warn: Say | None = None) -> DemoRun:
    """The demo's steps, each told to ``say``; the release's and the boot's warnings to ``warn`` (else
    ``say``)."""
    from ..cvmfs.serve import serve
    from ..demo.repository import publish_debian, publish_demo
    from ..release.build import ReleaseOptions, build_release, release_context
    from ..report import LineReporter

    suffix = "" if opts.os == "demo" else f"-{opts.os}"  # each OS its own timings and releases
    state = cache_dir("demo") / f"last-run{suffix}.json"
    run = DemoRun(previous=previous_timings(state))
    from ..releaseindex import check_version

    # checked before any work: the release folder under --out is removed when it is not reusable,
    # and --version ../../x or /home/me named a folder outside it (pr19b finding 10)
    version = check_version(release_version(opts.version), where="--version")
    prof = demo_profile(opts.port, opts.os)
    with ExitStack() as stack:
        with _timed(run, f"publish {opts.os} OS", say) as box:
            if opts.os == "demo":
                repo = publish_demo()
            else:
                from ..bootloader.kernel import fetch_debian_kernel

                kernel = fetch_debian_kernel(prof.kernel.package) if prof.kernel.package else None
                repo = publish_debian(release=str(prof.os.release), kernel=kernel, say=say)
            box["detail"] = (
                f"{repo.fqrn} revision {repo.revision}, tag {repo.tag}, {repo.objects_written} new objects"
            )
        run.locations["repository"] = str(repo.stratum)
        prof = demo_profile(opts.port, opts.os, tag=repo.tag)  # the release is cut from this run's snapshot
        with _timed(run, "serve repository", say) as box:
            try:
                server = stack.enter_context(serve(repo.root, port=opts.port))
            except OSError as e:
                raise CernVMError(
                    f"cannot serve the demo repository on 127.0.0.1:{opts.port}: {e.strerror}",
                    hint="free that port or pass --port N",
                ) from None
            box["detail"] = f"{server.url}/cvmfs/{repo.fqrn}"
        run.locations["repository_url"] = f"{server.url}/cvmfs/{repo.fqrn}"
        releases = opts.out / f"releases{suffix}"
        release_dir = releases / version
        with _timed(run, "build release", say) as box:
            if release_dir.exists() and _reuse_release(release_dir, prof, repo.root_hash):
                box["detail"] = f"{version} already built from this snapshot (verified, reused)"
            else:
                shutil.rmtree(release_dir, ignore_errors=True)
                release, release_dir = build_release(
                    ReleaseOptions(
                        version=version,
                        profiles=(prof,),
                        out=releases,
                        overrides={prof.name: demo_overrides(opts.port, repo.tag)},
                    ),
                    release_context(version, reporter=LineReporter(say, warn=warn)),
                )
                box["detail"] = f"{version}: {len(release.artifacts)} artifacts"
        run.locations["release"] = str(release_dir)
        # the format cernvm-launch pulls from a release (the hdd: it boots faster than the iso)
        image = next(p for fmt in FORMATS for p in sorted(release_dir.glob(f"images/*/*.{fmt}")))
        run.locations["image"] = str(image)
        run.locations["container"] = str(next(release_dir.glob("containers/*/*.oci.tar"), ""))
        if opts.boot:
            _boot(run, image, opts, say, stack, warn)
    run_state = {s.name: s.seconds for s in run.steps} | {"total": round(run.total, 1)}
    state.write_text(json.dumps(run_state))
    return run


def _boot(
    run: DemoRun, image: Path, opts: DemoOptions, say: Say, stack: ExitStack, warn: Say | None = None
) -> None:
    """create → wait for SSH → ``cat /etc/os-release`` → destroy, through the launch library."""
    # deliberate lazy import: booting needs the 'launch' extra (libvirt-python); --no-boot does not
    from .. import launch
    from ..launch import config, daemon

    started = daemon.ensure()
    stack.callback(daemon.stop, started)
    settings = config.resolve({"name": INSTANCE, "memory": 1024, "disk": 2000})
    host = launch.connect(settings.connect)
    stack.callback(host.close)
    run.accelerator = f"{host.accel.name} ({host.accel.reason})"
    say(f"accelerator: {run.accelerator}")
    home = launch.home_for(settings, host.uri)  # create's: destroy removes the folder create made
    _destroy_leftover(host, home)  # from an interrupted run
    stack.callback(_destroy_leftover, host, home)
    user_data, source = launch.default_user_data()
    spec = launch.InstanceSpec(
        settings=settings,
        name=INSTANCE,
        user_data=user_data,
        user_data_source=source,
        image=str(image),
        cvmfs_server=f"10.0.2.2:{opts.port}",
    )
    with _timed(run, "boot + ssh ready", say) as box:
        reporter = scoped(LineReporter(say, warn=warn), INSTANCE)
        launch.create_instance(spec, host=host, reporter=reporter)
        launch.wait_ready(host, INSTANCE, timeout=opts.boot_timeout, reporter=reporter, home=home)
        box["detail"] = f"instance {INSTANCE} answers on SSH"
    with _timed(run, "ssh command", say) as box:
        result = launch.ssh_capture(host, INSTANCE, ["cat", "/etc/os-release"])
        if result.exit_status != 0:
            err = result.stderr.decode(errors="replace").strip().splitlines()
            raise LaunchError(
                f"'cat /etc/os-release' on {INSTANCE} exited {result.exit_status}: {err[-1] if err else ''}"
            )
        run.os_release = result.text
        pretty = next(
            (
                ln.split("=", 1)[1].strip('"')
                for ln in result.text.splitlines()
                if ln.startswith("PRETTY_NAME=")
            ),
            "?",
        )
        box["detail"] = f"guest says: {pretty}"
    with _timed(run, "destroy", say) as box:
        launch.destroy(host, INSTANCE, force=True, home=home)
        box["detail"] = "instance, disks, context ISO and keys removed"


def _destroy_leftover(host: launch.Host, home: Path) -> None:
    from .. import launch

    with contextlib.suppress(InstanceError):
        launch.destroy(host, INSTANCE, force=True, home=home)
