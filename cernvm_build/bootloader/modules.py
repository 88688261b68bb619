"""Kernel modules for the initrd, with their dependencies, in load order.

Debian kernel packages ship no ``modules.dep`` (``depmod`` makes it at install time), so when it is
missing the dependencies are read from each module's own ``.modinfo`` (``depends=`` line) — the same
data depmod uses. Compressed modules (``.ko.xz``) are unpacked here so busybox ``insmod`` can load them.
"""

from __future__ import annotations

import lzma
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildError
from ..fsutil import NotRegularFile, read_regular

#: What a μCernVM guest needs from a modular kernel: virtio and IDE/SCSI disks and CD-ROMs, the
#: network, the filesystems of boot media, context drives and the scratch disk, overlay and FUSE,
#: and the shared-folder filesystems.
#: Names absent from a kernel (built in, or another flavour) are skipped.
WANTED = (
    "virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "virtio_console", "virtio_rng",
    "ata_piix", "ata_generic", "ahci", "sd_mod", "sr_mod", "cdrom",
    "e1000", "e1000e", "8139cp", "vmxnet3", "hv_netvsc", "hv_storvsc", "xen_blkfront", "xen_netfront", "nvme",
    "ext4", "isofs", "vfat", "nls_cp437", "nls_ascii", "nls_utf8", "nls_iso8859_1",
    "overlay", "fuse", "af_packet",
    # cernvm-launch's shared folders (9p over virtio, virtiofs): loaded here, mounted by the OS.
    "9pnet_virtio", "9p", "virtiofs",
)  # fmt: skip

_SUFFIXES = (".ko", ".ko.xz")

#: Buses whose devices are all enumerated by the time the initrd's module step looks (PCI, and the
#: virtio/vmbus/xen buses their drivers create): a module with aliases on these is a driver, loaded
#: in the initrd only when a present device matches one (its alias against /sys/.../modalias).
#: Other modules (filesystems, sd_mod/sr_mod whose SCSI devices appear asynchronously) always load.
_GATING_BUSES = ("pci:", "virtio:", "vmbus:", "xen:", "acpi")

#: Modules with no device aliases of their own that are only useful with a driver's device.
_GATED_WITH = {"9p": "9pnet_virtio"}

#: The IDE/SATA controllers every PC (i440fx, q35) has whether or not a disk or CD-ROM is on them, and
#: the disk and CD-ROM drivers: the kernel takes ~2.5 s under TCG to load this stack (libata,
#: scsi_mod, ata_piix, sr_mod...), and a guest whose context drive and scratch disk are virtio disks
#: (cernvm-launch, most clouds) never uses it in the initrd; nor vfat and its code pages (~0.5 s),
#: for a config drive in that format. These, and their dependencies that only they use, load only
#: when the init looks for a context drive or a scratch disk it did not find on the other disks
#: (01-modules.sh load_late_modules); the OS's udev loads them otherwise.
LATE = (
    "ata_piix", "ata_generic", "ahci", "sd_mod", "sr_mod", "cdrom",
    "vfat", "nls_cp437", "nls_ascii", "nls_utf8", "nls_iso8859_1",
)  # fmt: skip
#: In the listing (01-modules.sh reads both): the word after a late module's path, and the gate
#: pattern that is true in the late pass (an early dependency of late modules, e.g. scsi_mod).
LATE_MARK, LATE_PASS = "@late", "@late-pass"


def _norm(name: str) -> str:
    return name.replace("-", "_")


def _modname(p: Path) -> str:
    n = p.name
    for s in _SUFFIXES:
        if n.endswith(s):
            return _norm(n[: -len(s)])
    return _norm(n)


MAX_MODULE = 64 << 20  # bytes of one module, unpacked (the largest in-tree ones are a few MiB)


def _read(p: Path, moddir: Path) -> bytes:
    """A module file's contents, unpacked. A kernel tree a profile names is input: a module that is a
    link out of the modules folder (a host file in the initrd), not a regular file (a FIFO would
    block the build) or larger than MAX_MODULE unpacked (an xz bomb) is one BuildError naming it."""
    where = f"kernel module {p}"
    try:
        if not p.resolve().is_relative_to(moddir.resolve()):
            raise BuildError(f"{where} points out of the modules folder", hint="check the kernel tree")
        data = read_regular(p, MAX_MODULE)
    except NotRegularFile:
        raise BuildError(f"{where} is not a regular file", hint="check the kernel tree") from None
    except OSError as e:
        raise BuildError(f"cannot read {where}: {e.strerror}", hint="check the kernel tree") from None
    if p.name.endswith(".xz"):
        unpack = lzma.LZMADecompressor()
        try:
            data = unpack.decompress(data, max_length=MAX_MODULE + 1)
        except lzma.LZMAError as e:
            raise BuildError(f"{where} is not valid xz: {e}", hint="check the kernel tree") from None
        if not unpack.eof and unpack.needs_input:
            raise BuildError(f"{where} is a truncated xz file", hint="check the kernel tree")
    if len(data) > MAX_MODULE:  # read whole, or unpacked up to the cap with more output waiting
        raise BuildError(
            f"{where} is larger than {MAX_MODULE >> 20} MiB unpacked: not a kernel module",
            hint="check the kernel tree",
        )
    return data


@dataclass
class ModuleSet:
    """Modules to ship: path inside lib/modules/<v>/ -> host file, and their load order."""

    version: str
    files: dict[str, bytes] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    builtin: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    #: path -> the device aliases (glob patterns) that make the initrd load it; absent: always loaded
    gates: dict[str, list[str]] = field(default_factory=dict)
    #: paths of the modules loaded only when the init looks further for its disks (LATE)
    late: set[str] = field(default_factory=set)

    def listing(self) -> str:
        """/etc/ucernvm/modules: one module a line, load order, then ``LATE_MARK`` for a late one, then
        the patterns that gate it (``LATE_PASS`` among them: a word of its own, so that a gate list
        that begins with it never reads as the mark)."""
        return "".join(
            " ".join([rel, *([LATE_MARK] if rel in self.late else []), *self.gates.get(rel, [])]) + "\n"
            for rel in self.order
        )


def _index(moddir: Path) -> dict[str, Path]:
    return {_modname(p): p for p in sorted(moddir.rglob("*.ko*")) if p.name.endswith(_SUFFIXES)}


def _builtin(moddir: Path) -> set[str]:
    f = moddir / "modules.builtin"
    return {_modname(Path(line)) for line in f.read_text().split()} if f.exists() else set()


def _depends_from_dep(moddir: Path) -> dict[str, list[str]] | None:
    f = moddir / "modules.dep"
    if not f.exists():
        return None
    deps: dict[str, list[str]] = {}
    for line in f.read_text().splitlines():
        if ":" in line:
            mod, rest = line.split(":", 1)
            deps[_modname(Path(mod))] = [_modname(Path(d)) for d in rest.split()]
    return deps


def resolve(moddir: Path, version: str, wanted: tuple[str, ...] = WANTED) -> ModuleSet:
    """The wanted modules and everything they depend on, deepest dependencies first."""
    if not moddir.is_dir():
        raise BuildError(f"{moddir}: kernel modules folder not found", hint="check the kernel tree")
    index = _index(moddir)
    builtin = _builtin(moddir)
    depfile = _depends_from_dep(moddir)
    result = ModuleSet(version=version)
    data: dict[str, bytes] = {}

    def deps_of(name: str) -> list[str]:
        if depfile is not None and name in depfile:
            return depfile[name]
        if name not in data:  # not setdefault: its argument would read (and unpack) the file every call
            data[name] = _read(index[name], moddir)
        raw = data[name]
        m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", raw)
        return [_norm(d) for d in m.group(1).decode().split(",") if d] if m else []

    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in result.order or name in visiting:
            return
        visiting.add(name)
        for d in deps_of(name):
            if d in index:
                visit(d)
        result.order.append(name)

    for want in wanted:
        name = _norm(want)
        if name in index:
            visit(name)
        elif name in builtin:
            result.builtin.append(name)
        else:
            result.missing.append(name)
    for name in result.order:
        rel = index[name].relative_to(moddir).as_posix()
        if rel.endswith(".xz"):
            rel = rel[:-3]
        result.files[rel] = data.get(name) or _read(index[name], moddir)
    _gate(result, {_norm(w) for w in wanted}, deps_of)
    result.order = [next(rel for rel in result.files if _modname(Path(rel)) == name) for name in result.order]
    return result


def _aliases(raw: bytes) -> list[str]:
    found = (a.decode(errors="replace") for a in re.findall(rb"(?:^|\0)alias=([^\0]*)", raw))
    return [a for a in found if a.startswith(_GATING_BUSES) and not any(c.isspace() for c in a)]


def _gate(result: ModuleSet, wanted: set[str], deps_of: Callable[[str], list[str]]) -> None:
    """Which modules load late and which device aliases gate each (by name in result.order; rekeyed to
    paths by the caller's order). Late: a LATE module, or a mere dependency, that only late modules
    use (cdrom stays early for isofs). Gates: a module wanted for itself is gated only by its own
    aliases; a mere dependency by the union of its users' gates, and not at all if one user is not;
    a late user of an early dependency counts as the pattern ``LATE_PASS``, true in the late pass (scsi_mod:
    early for virtio_scsi's device, else only once sd_mod loads)."""
    rel_of = {_modname(Path(rel)): rel for rel in result.files}
    own: dict[str, list[str] | None] = {}
    for name in result.order:
        own[name] = _aliases(result.files[rel_of[name]]) or None
    for name, host in _GATED_WITH.items():
        if name in own and own[name] is None and own.get(host):
            own[name] = own[host]
    users: dict[str, list[str]] = {}
    for name in result.order:
        for d in deps_of(name):
            users.setdefault(d, []).append(name)
    late: set[str] = set()
    gates: dict[str, list[str] | None] = {}
    for name in reversed(result.order):  # users come after their dependencies
        us = users.get(name, [])
        if (name in LATE or (name not in wanted and us)) and all(u in late for u in us):
            late.add(name)
        if own[name] is None and name not in wanted and us:
            union: list[str] = []
            for u in us:
                g = [LATE_PASS] if u in late and name not in late else gates.get(u)
                if g is None:
                    union = []
                    break
                union += [p for p in g if p not in union]
            gates[name] = union or None
        else:
            gates[name] = own[name]
    result.gates = {rel_of[n]: g for n, g in gates.items() if g}
    result.late = {rel_of[n] for n in late}
