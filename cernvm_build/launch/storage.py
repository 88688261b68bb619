"""Disks on a remote hypervisor: one libvirt storage pool, volumes written through libvirt's stream
API (``virStorageVolUpload``/``Download``), so nothing assumes the client and the hypervisor share a
filesystem.

The pool (``storagePool``, default ``cernvm-launch``) is a directory pool, made on first use beside
the daemon's ``default`` pool (``/var/lib/libvirt/<pool>`` on a system daemon). Per instance it holds
``NAME.scratch.qcow2``, ``NAME.context.iso`` and ``NAME.console.log`` (made empty here so that the
daemon's log writer appends to a volume launch can read back); boot images are shared by every
instance of the pool under a name that carries their sha256, uploaded once; one from the client's image
cache is kept after the last instance that boots it (the next create of that image does not send it
again: the demo ISO's 23 MB took 0.2-0.7 s of every remote create here, minutes on a slow uplink),
until ``images remove`` deletes it with the cached image; one given as a file goes with its last
instance. A volume exists (at its full size) from the moment its upload starts,
so a shared image counts as there only with its marker ``NAME.complete``, an empty volume made after
the upload finished: an upload killed half-way (SIGKILL, a lost connection) is uploaded again by the
next create instead of booting a torn image.
"""

from __future__ import annotations

import contextlib
import posixpath
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from ..errors import LaunchError

SYSTEM_PARENT = "/var/lib/libvirt"
CHUNK = 1 << 20


def volume_names(name: str) -> tuple[str, str, str]:
    """(scratch disk, context ISO, console log) of instance ``name``."""
    return f"{name}.scratch.qcow2", f"{name}.context.iso", f"{name}.console.log"


def image_volume_name(file_name: str, sha256: str) -> str:
    return f"{sha256[:16]}-{file_name}"


def image_volumes(name: str) -> list[str]:
    """A shared boot image's volumes: the image and its completion marker."""
    return [name, f"{name}.complete"]


def _missing(e: Any, code: int) -> bool:
    return bool(e.get_error_code() == code)


def pool(conn: Any, name: str, *, session: bool) -> Any:
    """The pool ``name``, defined (a directory beside the ``default`` pool), built and started when
    missing; autostarted, as libvirt's own default pool."""
    try:
        found = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as e:
        if not _missing(e, libvirt.VIR_ERR_NO_STORAGE_POOL):
            raise
        found = None
    if found is None:
        path = posixpath.join(_parent(conn, session), name)
        xml = (
            f"<pool type='dir'><name>{escape(name)}</name><target><path>{escape(path)}</path>"
            "<permissions><mode>0711</mode></permissions></target></pool>"
        )
        found = conn.storagePoolDefineXML(xml, 0)
        found.build(0)
        found.setAutostart(1)
    if not found.isActive():
        found.create(0)
    return found


def _parent(conn: Any, session: bool) -> str:
    """Where a new pool's directory goes: beside the daemon's default pool (the session daemon's is
    in the remote user's home, which only the daemon knows), else /var/lib/libvirt."""
    with contextlib.suppress(libvirt.libvirtError):
        target = pool_path(conn.storagePoolLookupByName("default"))
        if target:
            return posixpath.dirname(target.rstrip("/"))
    if session:
        raise LaunchError(
            "the remote session daemon has no 'default' storage pool to put the instance's disks beside",
            hint="define one there (virsh pool-define-as default dir --target "
            "~/.local/share/libvirt/images), or name an existing pool with storagePool=",
        )
    return SYSTEM_PARENT


def pool_path(p: Any) -> str:
    path = ET.fromstring(p.XMLDesc(0)).findtext("./target/path")
    return path or ""


def _volume_xml(name: str, capacity: int, fmt: str, mode: int, backing: str = "") -> str:
    features = "<features><lazy_refcounts/></features>" if fmt == "qcow2" else ""
    # a qcow2 backed by another volume of the pool (create --seed): libvirt runs qemu-img there
    chain = (
        f"<backingStore><path>{escape(backing)}</path><format type='qcow2'/></backingStore>"
        if backing
        else ""
    )
    return (
        f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{capacity}</capacity>"
        f"<target><format type='{fmt}'/><permissions><mode>{mode:04o}</mode></permissions>"
        f"{features}</target>{chain}</volume>"
    )


def lookup(p: Any, name: str) -> Any | None:
    try:
        return p.storageVolLookupByName(name)
    except libvirt.libvirtError as e:
        if _missing(e, libvirt.VIR_ERR_NO_STORAGE_VOL):
            return None
        raise


def create(p: Any, name: str, capacity: int, fmt: str = "raw", mode: int = 0o600, backing: str = "") -> Any:
    """A new volume (a qcow2 one sparse, with lazy refcounts as the local scratch disks; ``backing``:
    the path of the qcow2 volume it is backed by)."""
    return p.createXML(_volume_xml(name, capacity, fmt, mode, backing), 0)


def upload(
    conn: Any,
    p: Any,
    name: str,
    src: Path,
    *,
    mode: int = 0o600,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """A new raw volume with ``src``'s bytes, sent through a libvirt stream."""
    size = src.stat().st_size
    vol = create(p, name, size, "raw", mode)
    stream = conn.newStream(0)
    sent = 0
    try:
        vol.upload(stream, 0, size, 0)
        with open(src, "rb") as f:
            while block := f.read(CHUNK):
                _send(stream, block)
                sent += len(block)
                if progress:
                    progress(sent, size)
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise
    return vol


def shared_image(
    conn: Any,
    p: Any,
    name: str,
    src: Path,
    *,
    before_upload: Callable[[], None] = lambda: None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Any, bool]:
    """The pool's copy of boot image ``src`` under ``name``: (volume, whether it was uploaded now;
    ``before_upload`` runs first then). A copy without its completion marker is a torn upload:
    deleted and uploaded again."""
    vol, marker = (lookup(p, n) for n in image_volumes(name))
    if vol is not None and marker is not None:
        return vol, False
    before_upload()
    delete(p, image_volumes(name))
    vol = upload(conn, p, name, src, mode=0o644, progress=progress)
    create(p, image_volumes(name)[1], 0, "raw", 0o644)
    return vol, True


def _send(stream: Any, block: bytes) -> None:
    view = memoryview(block)
    while view:
        n = stream.send(view.tobytes())
        if n < 0:
            raise LaunchError("libvirt stream refused data (the upload was aborted)")
        view = view[n:]


def tail(conn: Any, p: Any, name: str, limit: int) -> bytes:
    """The last ``limit`` bytes of a volume (b"" when it is missing or empty)."""
    vol = lookup(p, name)
    if vol is None:
        return b""
    size = size_of(vol)
    return read_range(conn, vol, max(0, size - limit), size) if size > 0 else b""


def size_of(vol: Any) -> int:
    """A file volume's size, refreshed by the daemon on every call."""
    return int(vol.info()[1])


def read_range(conn: Any, vol: Any, start: int, end: int) -> bytes:
    """The volume's bytes from ``start`` to ``end``, through a libvirt stream."""
    stream = conn.newStream(0)
    chunks: list[bytes] = []
    try:
        vol.download(stream, start, end - start, 0)
        while True:
            data = stream.recv(CHUNK)
            if not isinstance(data, bytes) or not data:
                break
            chunks.append(data)
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise
    return b"".join(chunks)


def delete(p: Any, names: list[str]) -> None:
    """Delete the named volumes that exist."""
    for n in names:
        vol = lookup(p, n)
        if vol is not None:
            with contextlib.suppress(libvirt.libvirtError):
                vol.delete(0)
