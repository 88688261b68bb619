"""The μCernVM initrd: busybox, kernel modules, e2fsprogs, the Python runtime with the CernVM-FS
FUSE client, CA certificates, repository keys and the fused ``/init``, as a sorted, fixed-time cpio
compressed with lz4 (or zstd, xz).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BuildError
from ..fsutil import atomic_write, sha256_file
from ..paths import data_dir
from ..proc import run, which
from . import modules as kmod
from .cpio import Tree, write_newc
from .kernel import Kernel
from .runtime import ENTRY_MODULES, cached_runtime, default_python, ldd

RT_DIR = "usr/lib/ucernvm-rt"
E2FSPROGS = ("mke2fs", "e2fsck", "resize2fs")
#: where the image carries its boot list: the initrd's 10-cvmfs.sh passes it to the mount
BOOT_LIST = "etc/cvmfs/boot.list"
#: where the image carries its certificate blacklist (the real client's default path): 10-cvmfs.sh
#: passes it to the mount, with the user data's additions
BLACKLIST = "etc/cvmfs/blacklist"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
COMPRESSORS = ("lz4", "zstd", "xz")
#: lz4 by default: the kernel unpacks the initrd before it runs /init, on the boot's one CPU. Under TCG
#: (icount, guest seconds, the 25 MB Debian 12 initrd) zstd -19 took 3.9 s to unpack, lz4 -12 1.4 s,
#: none 0.7 s. lz4's 11.7 MB (zstd 8.1 MB) are read by the boot loader: from the hdd on virtio (what
#: cernvm-launch boots) that costs less than it saves — 12 paired TCG boots to "ucernvm: setup", qemu
#: CPU median per pair -0.37 s (never more), guest clock -0.42 s; from the iso's IDE CD-ROM about as
#: much as it saves (+0.2 s CPU, 4 pairs). The level is the compressor's, capped to its range (lz4
#: 1-12, zstd 1-19, xz 0-9): the highest packs smallest and unpacks as fast; tests use a low level.
DEFAULT_LEVEL = 19


@dataclass
class InitrdInputs:
    kernel: Kernel
    keys: dict[str, Path]  # key name (file stem) -> public key file
    version: str  # what /version says, e.g. "demo 2026.11-1"
    epoch: int  # the build time: every member's mtime
    python: str = field(default_factory=default_python)
    compression: str = "lz4"
    level: int = DEFAULT_LEVEL
    extra_modules: tuple[str, ...] = ()
    entries: tuple[str, ...] = ENTRY_MODULES  # Python modules the init runs
    runtime_cache: Path | None = None  # default: <cache>/initrd-runtime
    boot_list: bytes | None = None  # object names the mount fetches ahead (cvmfs/bootlist.py)
    boot_list_names: int = 0  # how many (``seed.boot_list`` counted them: not counted again)
    #: a certificate blacklist (``cvmfs/blacklist.py``), checked: ``/etc/cvmfs/blacklist``, which the
    #: init hands the mount (with the user data's additions)
    blacklist: bytes | None = None


@dataclass
class Initrd:
    path: Path
    size: int
    payload_size: int  # the uncompressed cpio
    members: int
    info: dict[str, Any]


def fused_init(src: Path | None = None) -> bytes:
    """``init.head.sh`` followed by every ``init.d/NN-*.sh`` in order: the initrd's ``/init``."""
    src = src or data_dir("bootloader")
    parts = [(src / "init.head.sh").read_text()]
    for frag in sorted((src / "init.d").glob("[0-9][0-9]-*.sh")):
        parts.append(f"\n# ---- {frag.name} ----\n{frag.read_text()}")
    parts.append("\npanic 'init fell through'\n")
    return "".join(parts).encode()


def _tool_version(package: str) -> str:
    proc = run(["dpkg-query", "-W", "-f", "${Version}", package], check=False)
    return proc.stdout.decode().strip() or "unknown"


def _busybox(tree: Tree) -> str:
    bb = Path(which("busybox"))
    if run(["ldd", bb], check=False).returncode == 0:
        raise BuildError(f"{bb} is not statically linked", hint="install busybox-static")
    tree.file("bin/busybox", bb, 0o755)
    for applet in run([bb, "--list-full"]).stdout.decode().split():
        if applet not in ("bin/busybox", "linuxrc"):
            tree.symlink(applet, "/bin/busybox")
    return _tool_version("busybox-static")


def runtime_id(root: Path) -> bytes:
    """What the runtime's code is: the sha256 of its modules' pycs, each by path and content, in name
    order (``/etc/ucernvm/runtime-id``). A boot reuses the user-data parser's output that an earlier
    boot saved only when made by the same code (init.head.sh read_user_data)."""
    lib = root / "lib"
    pycs = sorted(lib.glob("python*/**/*.pyc"))
    if not pycs:
        raise BuildError(f"{root}: the runtime has no Python modules", hint="remove the runtime cache")
    listing = "".join(f"{p.relative_to(lib).as_posix()} {sha256_file(p)}\n" for p in pycs)
    return (hashlib.sha256(listing.encode()).hexdigest() + "\n").encode()


def assemble(inputs: InitrdInputs, hold: contextlib.ExitStack) -> tuple[Tree, dict[str, Any]]:
    """The initrd's members (and what went in, for the manifest); the runtime comes from its cache,
    its entry held until ``hold`` closes (the members are read from it when the cpio is written)."""
    tree = Tree()
    for d in (
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
        "mnt",
        "etc/cvmfs/keys",
        "usr/share/udhcpc",
        "usr/share/ucernvm",
    ):
        tree.dir(d)
    tree.chardev("dev/console", 5, 1)
    tree.chardev("dev/null", 1, 3, 0o666)
    busybox_version = _busybox(tree)

    rt = cached_runtime(python=inputs.python, entries=inputs.entries, cache=inputs.runtime_cache, hold=hold)
    tree.tree(RT_DIR, rt.root)
    tree.data("etc/ucernvm/runtime-id", runtime_id(rt.root))
    tree.symlink("lib64/ld-linux-x86-64.so.2", f"/{RT_DIR}/lib/ld-linux-x86-64.so.2")
    libs: set[Path] = set()
    for tool in E2FSPROGS:
        exe = Path(which(tool))
        tree.file(f"sbin/{tool}", exe, 0o755)
        libs.update(ldd(exe))
    for lib in sorted(libs):
        tree.file(f"{RT_DIR}/lib/{lib.name}", lib.resolve(), 0o755)
    if Path("/etc/mke2fs.conf").exists():
        tree.file("etc/mke2fs.conf", Path("/etc/mke2fs.conf"), 0o644)

    mods = kmod.resolve(inputs.kernel.modules, inputs.kernel.version, kmod.WANTED + inputs.extra_modules)
    for rel, data in mods.files.items():
        tree.data(f"lib/modules/{inputs.kernel.version}/{rel}", data)
    tree.data("etc/ucernvm/modules", mods.listing().encode())

    if CA_BUNDLE.exists():
        tree.file("etc/ssl/certs/ca-certificates.crt", CA_BUNDLE, 0o644)
    for name, key in sorted(inputs.keys.items()):
        if not key.is_file():
            raise BuildError(f"{key}: public key not found", where="cvmfs.public_keys")
        tree.file(f"etc/cvmfs/keys/{name}.pub", key, 0o644)

    src = data_dir("bootloader")
    tree.file("usr/share/udhcpc/default.script", src / "udhcpc.script", 0o755)
    tree.file("usr/share/ucernvm/shutdown", src / "shutdown.sh", 0o755)
    # The demo OS's cloud-config reader, for OSes without cloud-init (init.d/26-ssh-keys.sh).
    awk = data_dir("demo") / "rootfs/usr/libexec/demo/apply-user-data.awk"
    tree.file("usr/share/ucernvm/apply-user-data.awk", awk, 0o644)
    if inputs.boot_list is not None:
        tree.data(BOOT_LIST, inputs.boot_list)
    if inputs.blacklist is not None:
        tree.data(BLACKLIST, inputs.blacklist, 0o644)
    tree.data("init", fused_init(src), 0o755)
    tree.data("version", (inputs.version + "\n").encode())
    info = {
        "busybox": busybox_version,
        "e2fsprogs": _tool_version("e2fsprogs"),
        "python": {"interpreter": rt.python, "version": rt.version, "modules": len(rt.modules)},
        "runtime_libraries": rt.libraries,
        "kernel_modules": [m.rsplit("/", 1)[-1] for m in mods.order],
        "kernel_modules_builtin": mods.builtin,
        "keys": sorted(inputs.keys),
    }
    if inputs.blacklist is not None:
        info["blacklist"] = {
            "bytes": len(inputs.blacklist),
            "sha256": hashlib.sha256(inputs.blacklist).hexdigest(),
        }
    if inputs.boot_list is not None:
        info["boot_list"] = {
            "names": inputs.boot_list_names,
            "bytes": len(inputs.boot_list),
            "sha256": hashlib.sha256(inputs.boot_list).hexdigest(),
        }
    return tree, info


def build_initrd(inputs: InitrdInputs, dest: Path) -> Initrd:
    """Write the compressed initrd to ``dest`` atomically."""
    if inputs.compression not in COMPRESSORS:
        raise BuildError(
            f"unknown initrd compression '{inputs.compression}'", hint=f"use one of {', '.join(COMPRESSORS)}"
        )
    check_kernel_unpacks(inputs.kernel, inputs.compression)
    with contextlib.ExitStack() as hold:
        tree, info = assemble(inputs, hold)
        buf = io.BytesIO()
        payload = write_newc(tree.members.values(), buf, inputs.epoch)
    packed = compress(buf.getvalue(), inputs.compression, inputs.level)
    atomic_write(dest, packed)
    info["compression"] = f"{inputs.compression} -{level_of(inputs.compression, inputs.level)}"
    return Initrd(path=dest, size=len(packed), payload_size=payload, members=len(tree.members), info=info)


#: each compressor's levels, lowest and highest
LEVELS = {"lz4": (1, 12), "zstd": (1, 19), "xz": (0, 9)}
#: the kernel option that lets a kernel unpack an initrd of each compressor
KERNEL_OPTION = {"lz4": "CONFIG_RD_LZ4", "zstd": "CONFIG_RD_ZSTD", "xz": "CONFIG_RD_XZ"}


def check_kernel_unpacks(kernel: Kernel, method: str) -> None:
    """Refuse an initrd the kernel could not unpack (its boot would end at "Initramfs unpacking
    failed"), where the kernel's config lies beside it (``boot/config-VERSION``, as Debian's and most
    distributions' packages have it); a kernel given without one is taken on trust."""
    config = kernel.vmlinuz.parent / f"config-{kernel.version}"
    try:
        lines = config.read_text(errors="replace").splitlines()
    except OSError:
        return
    option = KERNEL_OPTION[method]
    if f"{option}=y" not in lines:
        raise BuildError(
            f"kernel {kernel.version} cannot unpack a {method} initrd: {option} is not set",
            where=str(config),
            hint=f"use a kernel built with {option}=y, or the initrd compression its config has",
        )


def level_of(method: str, level: int) -> int:
    """``level`` within ``method``'s range (the default 19 is lz4's 12): what the build records too."""
    low, high = LEVELS[method]
    return min(max(level, low), high)


def compress(data: bytes, method: str, level: int = DEFAULT_LEVEL) -> bytes:
    """lz4 (the legacy frame, the only one the kernel unpacks), zstd (its multi-threaded output does not
    depend on the number of workers) or xz."""
    n = level_of(method, level)
    if method == "lz4":
        cmd = ["lz4", "-l", "-q", f"-{n}", "-c"]
    elif method == "zstd":
        cmd = ["zstd", "-q", f"-{n}", "-T0", "-c"]
    else:
        cmd = ["xz", f"-{n}", "--check=crc32", "-T1", "-c"]
    # xz adds XZ_DEFAULTS and XZ_OPT to its options (a builder's XZ_OPT=--block-size=… made another
    # initrd); lz4's and zstd's variables yield to the level given here
    return run(cmd, input=data, env={"XZ_DEFAULTS": "", "XZ_OPT": ""}).stdout
