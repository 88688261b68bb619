"""``create --seed``: a pre-warmed scratch disk (``cernvm-build image seed``) as the backing file of an
instance's scratch disk.

The seed is read-only for every instance it backs; each instance's own qcow2 holds only what that
instance writes, so one seed serves any number of instances and creation stays instant. The seed is
checked before anything is made: it exists, is a qcow2 with no backing file or external data file
(``qcow2.outside_file``: the guest would read files launch does not know about), and the hypervisor's QEMU can
read it. On a system daemon QEMU runs as its own user and libvirt's DAC driver would chown every
image of a disk's backing chain to that user (and never give a backing file back); the domain
therefore names the seed with ``relabel='no'`` (``domain.xml.j2``), and launch checks instead that
the seed is readable by others and its folders searchable. A session daemon's QEMU is the user.
On a remote hypervisor the disks are volumes of its storage pool: the seed is uploaded into the pool
once per content (its volume's name carries the sha256, as the boot images'), shared read-only by the
pool's instances, and each instance's scratch volume is a qcow2 backed by it (``create``).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .. import proc
from ..errors import InstanceError
from . import qcow2


@dataclass(frozen=True)
class SeedDisk:
    path: Path  # absolute
    virtual_size: int  # bytes


def check(path: Path, *, system: bool, remote: bool = False) -> SeedDisk:
    """The seed at ``path``, fit to back a scratch disk (``remote``: once uploaded into a hypervisor's
    pool, where the pool's permissions apply, not this file's); else one line + hint."""
    where = str(path)
    path = Path(os.path.abspath(path))
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InstanceError(
            "seed not found", where=where, hint="make one with 'cernvm-build image seed' or give its path"
        ) from None
    except OSError as e:
        raise InstanceError(f"cannot read the seed: {e.strerror}", where=where) from None
    if not stat.S_ISREG(st.st_mode):
        raise InstanceError("the seed is not a file", where=where, hint="give the seed's qcow2 file")
    if not os.access(path, os.R_OK):
        raise InstanceError("the seed is not readable", where=where, hint=f"chmod u+r {path}")
    info = qcow2.info(path, InstanceError, "seed")
    if info.get("format") != "qcow2":
        raise InstanceError(
            f"the seed is not a qcow2 image (qemu-img says {info.get('format', '?')})",
            where=where,
            hint="give the .qcow2 file 'cernvm-build image seed' wrote",
        )
    outside = qcow2.outside_file(info)
    if outside:  # a chain, or a data file: the guest would read files launch does not know about
        raise InstanceError(
            f"the seed reads {outside}; a seed must be one self-contained file",
            where=where,
            hint=qcow2.flatten_hint(path),
        )
    if system and not remote:
        _check_others_can_read(path)
    size = info.get("virtual-size")
    return SeedDisk(path, size if isinstance(size, int) else 0)


def _check_others_can_read(path: Path) -> None:
    """The system daemon's QEMU user (not root, not the file's owner) must open the seed: it is
    readable by others, and every folder above it searchable by others."""
    if not path.stat().st_mode & stat.S_IROTH:
        raise InstanceError(
            "the system daemon's QEMU user cannot read the seed (not readable by others)",
            where=str(path),
            hint=f"chmod o+r {path} (the seed is shared read-only; nothing in it is secret)",
        )
    for folder in path.parents:
        if not folder.stat().st_mode & stat.S_IXOTH:
            raise InstanceError(
                f"the system daemon's QEMU user cannot reach the seed ({folder} is not searchable by others)",
                where=str(path),
                hint=f"chmod o+x {folder}, or keep seeds where others may read them (/var/lib/cernvm-launch)",
            )


def scratch_size(disk_mb: int, seed: SeedDisk | None) -> int:
    """The scratch disk's virtual size in bytes: ``disk_mb``, or the seed's when that is larger (the
    seed's partition must fit; the initrd grows the file system to a larger disk)."""
    size = disk_mb << 20
    return max(size, seed.virtual_size) if seed else size


def create_scratch(dest: Path, size: int, seed: SeedDisk | None) -> None:
    """A sparse qcow2 of ``size`` bytes, backed by ``seed`` (absolute path, format named)."""
    cmd: list[str | Path] = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on"]
    if seed is not None:
        cmd += ["-b", proc.qemu_file(seed.path), "-F", "qcow2"]
    proc.run([*cmd, proc.qemu_file(dest), str(size)])
