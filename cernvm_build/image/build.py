"""``cernvm-build image PROFILE``: from a profile to μCernVM images, checksums and a build manifest.

Order: check the formats and tools (fail before any work), ask the repository which snapshot the
profile's selector names right now (the build records it), get the kernel, assemble the initrd,
make the iso/hdd, sign them, convert the hdd to the hypervisor formats, then move every output
into place (manifest last). All work happens in a hidden folder inside the output folder, so a
failed or interrupted build leaves no half-written file, and a re-run starts clean (it also removes the
work folder of a build that was killed).

The switch to the new set is one committed step (``_commit``): once every output is whole and durable
in the work folder, a ``SWITCH`` file there lists them; the earlier build's manifest is removed, the
outputs are renamed into place and the new manifest last. A build killed between two of those renames
leaves no manifest (the folder holds files of two builds, and nothing claims them as a set); the next
build into that folder finishes the dead build's switch from its work folder before anything else
(``_remove_stale_work``), so the set is whole again, with its manifest.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, jsonable, utcdate
from ..artifact import Artifact
from ..bootloader import cpio
from ..bootloader.initrd import DEFAULT_LEVEL, InitrdInputs, build_initrd
from ..bootloader.kernel import Kernel, fetch_debian_kernel, kernel_from_tree
from ..bootloader.runtime import default_python
from ..context import BuildContext
from ..cvmfs import blacklist, bootlist
from ..cvmfs.repository import SnapshotSpec, open_repository
from ..errors import BuildError, CernVMError
from ..fsutil import atomic_write, fsync_dir, held_lock, process_alive, sha256_file
from ..proc import run, which
from ..profile import Profile, checks
from . import disks, signature

TOOLS: dict[str, tuple[str, ...]] = {
    "iso": ("xorriso",),
    "hdd": ("mformat", "mcopy", "mmd", "syslinux"),
    **{fmt: ("mformat", "mcopy", "mmd", "syslinux", "qemu-img") for fmt in disks.CONVERT},
}


@dataclass(frozen=True)
class Snapshot:
    """What the repository said at build time."""

    fqrn: str
    revision: int
    root_hash: str
    tag: str | None
    servers: list[str]

    def to_json(self) -> dict[str, Any]:
        return jsonable.to_json(self)


@dataclass
class BuildResult:
    artifacts: list[Artifact]
    manifest: Path
    snapshot: Snapshot
    initrd_size: int
    initrd_payload: int
    kernel: Kernel
    timings: dict[str, float] = field(default_factory=dict)
    #: the boot list in the initrd: names, bytes (0, 0: none)
    boot_list: tuple[int, int] = (0, 0)


def parse_formats(text: str | list[str] | None, default: list[str]) -> list[str]:
    """``iso,hdd`` → ``["iso", "hdd"]``, checked against the formats this builder makes."""
    items = default if text is None else (text.split(",") if isinstance(text, str) else text)
    wanted = [f.strip().lower() for f in items if f.strip()]
    for f in wanted:
        if f not in disks.FORMATS:
            raise BuildError(
                f"unknown image format '{f}'",
                hint=f"choose from {', '.join(disks.FORMATS)}",
                where="--format",
            )
    if not wanted:
        raise BuildError("no image format given", hint=f"choose from {', '.join(disks.FORMATS)}")
    return sorted(set(wanted), key=disks.FORMATS.index)


def check_tools(formats: list[str]) -> None:
    """Every tool the build will call, up front: a missing one fails before any work is done."""
    needed = {"lz4", "dpkg-deb", "apt-get", "apt-cache", "ldd", "busybox", "mke2fs", "e2fsck", "resize2fs"}
    for f in formats:
        needed.update(TOOLS[f])
    for tool in sorted(needed):
        which(tool)


def _cmd_server(url: str, fqrn: str) -> str:
    """The short ``host[:port]`` form the real images use, when the URL has the standard shape."""
    m = re.fullmatch(r"http://([A-Za-z0-9.-]+(?::\d+)?)/cvmfs/" + re.escape(fqrn), url)
    return m.group(1) if m else url.replace(fqrn, "@fqrn@")


#: options for the kernel's own start (not μCernVM's), also given to bench/osboot.py's plain boot so
#: the same kernel starts alike in both. cryptomgr.notests: the kernel's crypto self-tests
#: (crypto_algapi_init, run before /init on every boot) took 5.9 of the kernel's 12 s to /init under
#: TCG (icount guest-s, Debian 12's cloud kernel); a kernel in FIPS mode runs them anyway
KERNEL_OWN = ("cryptomgr.notests",)


def kernel_cmdline(profile: Profile) -> str:
    """The kernel command line: repository, path, servers and snapshot, like the real images."""
    c = profile.cvmfs
    args = [f"cvmfs_repos={c.repository}"]
    if c.path.strip("/"):
        args.append(f"cernvm_path={c.path.strip('/')}")
    args.append("cvmfs_server=" + ",".join(_cmd_server(u, c.repository) for u in c.server_urls()))
    if c.snapshot.tag:
        args.append(f"cvmfs_repository_tag={c.snapshot.tag}")
    if c.snapshot.date:
        args.append(f"cvmfs_repository_date={c.snapshot.date}")
    if c.snapshot.root_hash:
        args.append(f"cvmfs_root_hash={c.snapshot.root_hash}")
    if c.http_proxy and c.http_proxy != "DIRECT":
        args.append(f"cvmfs_http_proxy={c.http_proxy}")
    args += ["console=tty0", "console=ttyS0,115200", "quiet", *KERNEL_OWN, *profile.bootloader.cmdline]
    for a in args:  # profiles validate checks each setting alike (checks.KERNEL_ARG): a backstop
        if not checks.KERNEL_ARG.fullmatch(a):
            message, hint = checks.kernel_arg_refused(a)
            key = checks.KERNEL_ARG_KEYS.get(a.partition("=")[0], "bootloader.cmdline")
            raise BuildError(message, hint=hint, where=f"{profile.source}: {key}")
    return " ".join(args)


def query_snapshot(profile: Profile, timeout: float = 10) -> Snapshot:
    """Open the profile's repository (signatures checked) at its snapshot selector, as the guest will."""
    c = profile.cvmfs
    urls = c.server_urls()
    try:
        with open_repository(
            urls if len(urls) > 1 else urls[0],
            fqrn=c.repository,
            public_keys=list(c.public_keys),
            proxy=None if c.http_proxy == "DIRECT" else c.http_proxy,
            snapshot=SnapshotSpec(tag=c.snapshot.tag, date=c.snapshot.date, root_hash=c.snapshot.root_hash),
            timeout=timeout,
            retries=1,
            blacklist=blacklist.of_image(c.blacklist),
        ) as repo:
            return Snapshot(c.repository, repo.revision, repo.root_hash, repo.tag, urls)
    except CernVMError as e:
        raise BuildError(
            f"repository {c.repository} cannot be read at build time: {e}",
            hint="the build records the snapshot it pins; check the servers in the profile and the network",
            where=f"{profile.source}: cvmfs.servers",
        ) from e


def get_kernel(profile: Profile, cache: Path | None) -> Kernel:
    k = profile.kernel
    if k.vmlinuz is not None or k.modules is not None:
        if k.vmlinuz is None or k.modules is None:
            raise BuildError(
                "kernel.vmlinuz and kernel.modules go together", where=f"{profile.source}: kernel"
            )
        return kernel_from_tree(k.modules, k.vmlinuz)
    if not k.package:
        raise BuildError("the profile names no kernel", where=f"{profile.source}: kernel.package")
    return fetch_debian_kernel(k.package, cache)


def _tool_versions() -> dict[str, str]:
    # The build tools, and the Debian packages the initrd copies files from (interpreter, stdlib, libfuse,
    # libdeflate).
    pkgs = ["xorriso", "syslinux", "isolinux", "mtools", "qemu-utils", "lz4", "busybox-static", "e2fsprogs"]
    pkgs += ["python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libfuse3-3", "libc6"]
    pkgs += ["libdeflate0"]
    proc = run(["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *pkgs], check=False)
    return dict(line.split(" ", 1) for line in proc.stdout.decode().splitlines() if " " in line)


#: in a work folder, written once its outputs are whole and durable: the names to move into place,
#: in order (the manifest last); from then on the switch is committed and a re-run finishes it
SWITCH = "SWITCH"


#: the lock file of a switch (and of a killed build's switch finished), in the output folder while held
SWITCH_LOCK = ".switch.lock"


def _switching(out_dir: Path, say: Callable[[str], object]) -> contextlib.AbstractContextManager[None]:
    """One switch into ``out_dir`` at a time: two builds into one folder that committed at once
    interleaved their renames, and the manifest left claimed a file the other build had put there.
    A second waits (told who holds it); the lock file goes with the release."""
    what = f"image build into {out_dir}"
    return held_lock(
        out_dir / SWITCH_LOCK, what, lambda holder: say(f"waiting for {holder} to finish"), remove=True
    )


def _remove_stale_work(out_dir: Path, say: Callable[[str], object] = str) -> None:  # (str: heard by nobody)
    """Work folders of builds that were killed (their process is gone): a re-run cleans up after them,
    first finishing the switch of one killed while moving its outputs into place (and its lock file)."""
    with _switching(out_dir, say):
        for d in sorted(out_dir.glob(".build-*-*")):
            pid = d.name.split("-")[1]
            if not pid.isascii() or not pid.isdigit() or process_alive(int(pid)):
                continue
            names = _switch_names(d)
            if names is not None:
                _switch(d, out_dir, names)
            shutil.rmtree(d, ignore_errors=True)


def _switch_names(work: Path) -> list[str] | None:
    try:
        names = json.loads((work / SWITCH).read_text())
    except (OSError, ValueError):
        return None  # not committed (killed while building): nothing of it is an output
    ok = isinstance(names, list) and all(isinstance(n, str) and n and "/" not in n for n in names)
    return names if ok and names else None


def _commit(work: Path, out_dir: Path, names: list[str]) -> None:
    """Move ``names`` (the manifest last) from ``work`` into ``out_dir`` as one committed switch."""
    for name in names:
        with open(work / name, "rb") as f:
            os.fsync(f.fileno())
    atomic_write(work / SWITCH, json.dumps(names).encode())
    _switch(work, out_dir, names)


def _switch(work: Path, out_dir: Path, names: list[str]) -> None:
    """The renames of a committed switch; run again after a kill, it moves what is left. The earlier
    build's manifest goes first: while the folder holds files of two builds no manifest claims them."""
    if not (work / names[-1]).exists():
        return  # the new manifest, moved last, is in place: the switch was done
    (out_dir / names[-1]).unlink(missing_ok=True)
    fsync_dir(out_dir)
    for name in names:
        src = work / name
        if src.exists():
            src.replace(out_dir / name)
    fsync_dir(out_dir)


def _disk_error(e: OSError, where: Path) -> BuildError:
    # the folder as the error's ``where``, not in its message: ``--json`` carried null there
    if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list) and e.args[0]:
        # copytree's errors, each (src, dst, why) in a list: the line was that list's repr (pr28a
        # finding 14: "[('…/tree/cernvm/initrd.img', '…/iso-tree/…', '[Errno 28] No space left on
        # device')]" on a full --out); its first error is said instead
        why = str(e.args[0][0][-1]) if isinstance(e.args[0][0], tuple) else str(e.args[0][0])
        if os.strerror(errno.ENOSPC) in why or os.strerror(errno.EDQUOT) in why:
            e = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        else:
            return BuildError(why, where=str(where))
    if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return BuildError(
            f"no space left for the image ({e.strerror})",
            where=str(where),
            hint="free space there or choose another --out folder",
        )
    return BuildError(str(e.strerror or e), where=str(where))


def check_epoch(epoch: int) -> None:
    """The build time must fit the initrd: a newc header holds 8 hex digits (up to 2106-02-07); a later
    ``SOURCE_DATE_EPOCH`` (accepted up to the year 9999: tars hold it) wrote a 9-digit field, a shifted
    header, an initrd the kernel unpacks as junk, and the build said nothing."""
    if epoch > cpio.MAX_FIELD:
        raise BuildError(
            f"build time {epoch} ({utcdate.text(epoch)}) is after {utcdate.text(cpio.MAX_FIELD)}, "
            "the last time an initrd's cpio (newc) header holds",
            hint="set SOURCE_DATE_EPOCH to an earlier time",
        )


def build_image(
    profile: Profile,
    out_dir: Path,
    *,
    ctx: BuildContext,
    formats: list[str] | None = None,
    kernel_cache: Path | None = None,
    signer: signature.Signer | None = None,
    python: str | None = None,
    initrd_level: int | None = None,
    boot_list: tuple[bytes, int] | None = None,
) -> BuildResult:
    """Build ``formats`` of ``profile`` into ``out_dir``; see the module docstring for the order.

    ``ctx.epoch`` dates everything inside the outputs; ``ctx.cache`` holds the kernel (unless
    ``kernel_cache``) and the initrd's Python runtime; steps go to ``ctx.reporter``. ``boot_list``:
    object names, one a line, and how many (``bootloader.seed.boot_list``), under a header naming the snapshot
    (``bootlist.header``), carried in the initrd for the first
    boot's mount to fetch ahead; recorded in the manifest (count and sha256)."""
    say = ctx.reporter.step
    fmts = parse_formats(formats, list(profile.image.formats))
    check_tools(fmts)
    check_epoch(ctx.epoch)
    if signer is not None:  # the build time is the signing time: refused before anything is built
        signature.check_signing_time(signer.certificate, ctx.epoch)
    if out_dir.is_dir():
        _remove_stale_work(out_dir, say)
    stem = profile.artifact_stem
    b = profile.bootloader
    version = f"{b.branch} {b.version}-{b.release}"
    cmdline = kernel_cmdline(profile)

    say(f"repository {profile.cvmfs.repository}: reading the snapshot")
    snap = query_snapshot(profile)
    listed, names = boot_list if boot_list is not None else (None, 0)
    if listed is not None:  # which repository and revision its names are of: the daemon checks
        listed = bootlist.header(snap.fqrn, snap.revision, snap.root_hash).encode() + listed
    say(f"kernel: {profile.kernel.package or profile.kernel.vmlinuz}")
    kernel = get_kernel(profile, kernel_cache or ctx.cache / "kernel")

    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".build-{os.getpid()}-", dir=out_dir))
    except OSError as e:
        raise _disk_error(e, out_dir) from e
    try:
        try:
            say("initrd: busybox, modules, Python runtime, keys")
            keys = {p.name.removesuffix(".pub"): p for p in profile.cvmfs.public_keys}
            revoked = blacklist.read(profile.cvmfs.blacklist)[0] if profile.cvmfs.blacklist else None
            initrd = build_initrd(
                InitrdInputs(
                    kernel=kernel,
                    keys=keys,
                    version=version,
                    epoch=ctx.epoch,
                    python=python or default_python(),
                    runtime_cache=ctx.cache / "initrd-runtime",
                    level=initrd_level or DEFAULT_LEVEL,
                    boot_list=listed,
                    boot_list_names=names,
                    blacklist=revoked,
                ),
                work / "initrd.img",
            )
            tree = work / "tree"
            disks.stage_tree(tree, kernel.vmlinuz, initrd.path, version)
            config = disks.boot_config(cmdline, version, b.branch)
            meta = {
                "ucernvm-version": f"{b.version}-{b.release}",
                "branch": b.branch,
                "os-repo": profile.cvmfs.repository,
                "os-path": profile.cvmfs.path,
                "snapshot": snap.root_hash,
                "snapshot-revision": snap.revision,
                "snapshot-tag": snap.tag,
                "kernel": kernel.version,
                # the signing time, under the signature: verify checks the certificate against it
                signature.BUILD_TIME: ctx.epoch,
            }
            made: dict[str, Path] = {}
            if "iso" in fmts:
                say("iso: xorriso + isolinux")
                iso_tree = work / "iso-tree"
                shutil.copytree(tree, iso_tree)
                made["iso"] = work / f"{stem}.iso"
                disks.make_iso(iso_tree, config, made["iso"], "UCERNVM", ctx.epoch)
            if any(f != "iso" for f in fmts):
                say("hdd: MBR + FAT + syslinux (mtools)")
                raw = work / "raw.hdd"
                disks.make_hdd(tree, config, raw, "UCERNVM", ctx.epoch)
                for f in fmts:
                    if f in disks.CONVERT:
                        say(f"{f}: qemu-img convert")
                        made[f] = work / f"{stem}.{f}"
                        disks.convert(raw, f, made[f])
                if "hdd" in fmts:
                    made["hdd"] = work / f"{stem}.hdd"
                    raw.rename(made["hdd"])
            for f in ("iso", "hdd"):
                if f in made:
                    say(f"{f}: signature block" + (" (signed)" if signer else " (unsigned)"))
                    trailer = signature.trailer_bytes(made[f], {**meta, "format": f}, signer)
                    with open(made[f], "ab") as fh:
                        fh.write(trailer)
            artifacts: list[Artifact] = []
            for f in fmts:
                a = Artifact.of(made[f], f)
                (work / f"{made[f].name}.sha256").write_text(f"{a.sha256}  {made[f].name}\n")
                artifacts.append(a)
            manifest = {
                "schema": "cernvm-build/image-manifest/1",
                "name": stem,
                "version": version,
                "toolkit": __version__,
                "source_date_epoch": ctx.epoch,
                "profile": {"name": profile.name, "sha256": profile.fingerprint()},
                "repository": snap.to_json(),
                "kernel": {**kernel.to_json(), "cmdline": cmdline},
                "initrd": {
                    "sha256": sha256_file(initrd.path),
                    "size": initrd.size,
                    "payload_size": initrd.payload_size,
                    "members": initrd.members,
                    **initrd.info,
                    "keys": {k: sha256_file(p) for k, p in sorted(keys.items())},
                },
                "tools": _tool_versions(),
                "signed_by": signer.certificate.subject.rfc4514_string() if signer else None,
                "outputs": [
                    {"name": a.path.name, "format": a.format, "sha256": a.sha256, "size": a.size}
                    for a in artifacts
                ],
            }
            manifest_name = f"{stem}.manifest.json"
            (work / manifest_name).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            # Whole files into place as one committed switch; the manifest last says the set is complete.
            outputs = [n for a in artifacts for n in (a.path.name, f"{a.path.name}.sha256")]
            with _switching(out_dir, say):
                _commit(work, out_dir, [*outputs, manifest_name])
            final = [Artifact(out_dir / a.path.name, a.format, a.sha256, a.size) for a in artifacts]
        except OSError as e:
            raise _disk_error(e, out_dir) from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildResult(
        artifacts=final,
        manifest=out_dir / manifest_name,
        snapshot=snap,
        initrd_size=initrd.size,
        initrd_payload=initrd.payload_size,
        kernel=kernel,
        boot_list=(names, len(listed)) if listed is not None else (0, 0),
    )
