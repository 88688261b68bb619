"""Instances: list, start, stop, pause, destroy the libvirt domains that boot a μCernVM image.

An instance is a libvirt domain plus a folder ``<home>/run/<name>/`` holding its scratch disk, context
ISO, login key and console log. Everything ``list`` shows is in the domain's ``<metadata>``; the
folder goes away with ``destroy``. ``create`` (in ``create.py``) either finishes or leaves nothing;
an older launch could leave a domain whose files were removed by an interrupted create: such an
instance is listed as ``broken`` and ``destroy`` removes it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import os
import posixpath
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import libvirt

from .. import paths
from ..errors import InstanceError, LaunchError, UsageError
from ..fsutil import held_lock, open_regular
from ..paths import launch_root
from . import domain, storage, tunnel
from .domain import Metadata

STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "stopping",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


def default_home(uri: str) -> Path:
    """Where images and instances live. The system daemon's qemu runs as another user, so its files
    must sit outside root's 0700 home; a session daemon's qemu is the user, whose data folder
    (``$XDG_DATA_HOME/cernvm-launch``, ``~/.local/share/cernvm-launch``) it can use. A ``~/.cernvm``
    made by an earlier launch stays in use, so its instances are not lost."""
    variable, path = launch_root()
    if variable == "CERNVM_LAUNCH_HOME":
        # A relative one was a different home in every working folder, and the instance made there
        # was broken at once (its folder on record is not absolute: ``_foreign_paths``)
        if not path.is_absolute():
            raise UsageError(
                f"$CERNVM_LAUNCH_HOME {os.environ[variable][:200]!r} is not an absolute path",
                hint="set it to the full path of the launch home, e.g. $HOME/cernvm-launch",
            )
        return path
    if uri.startswith("qemu:///system") and os.geteuid() == 0:
        return Path("/var/lib/cernvm-launch")
    legacy = paths.home() / ".cernvm"
    if legacy.is_dir():
        return legacy
    return path


@dataclass(frozen=True)
class Instance:
    name: str
    state: str
    meta: Metadata | None
    uuid: str = ""
    saved: bool = False  # a managed save image exists (``stop`` keeps the running state)
    broken: str = ""  # why the instance cannot run (its files are gone), or ""

    def to_json(self) -> dict[str, Any]:
        m = self.meta
        return {
            "name": self.name,
            "state": self.state,
            "saved": self.saved,
            "broken": self.broken or None,
            "uuid": self.uuid,
            "managed": m is not None,
            **(
                {
                    "image": m.image,
                    "image_sha256": m.image_sha256,
                    "profile": m.profile,
                    "snapshot": m.snapshot,
                    "network": m.network,
                    "ssh_port": m.ssh_port or None,
                    "ssh_user": m.ssh_user,
                    "host_fingerprint": m.host_fingerprint,
                    "cpus": m.cpus,
                    "memory": m.memory,
                    "disk": m.disk,
                    "shared_folder": m.shared_folder or None,
                    "home": m.home,
                    "created": m.created,
                }
                if m
                else {}
            ),
        }


def describe(dom: Any) -> Instance:
    state, _reason = dom.state()
    try:
        saved = bool(dom.hasManagedSaveImage(0))
    except libvirt.libvirtError:
        saved = False
    meta = domain.metadata_of(dom.XMLDesc(0))
    broken = ""
    if meta is not None:
        broken = f"its launcher metadata is malformed ({meta.malformed})" if meta.malformed else ""
        broken = broken or _bad_host_key(meta) or _foreign_paths(dom.name(), meta)
        broken = broken or _missing_files(dom, meta)
    if broken:
        label = "broken"
    elif saved and state == libvirt.VIR_DOMAIN_SHUTOFF:
        label = "saved"
    else:
        label = STATES.get(state, "unknown")
    return Instance(dom.name(), label, meta, uuid=dom.UUIDString(), saved=saved, broken=broken)


_ED25519_BLOB = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"  # then the 32-byte key


def _bad_host_key(meta: Metadata) -> str:
    """Why the guest's pinned host key on record is not an ed25519 public key (what create
    writes), or "": without one no login can check whom it talks to."""
    parts = meta.host_key.split()
    try:
        blob = base64.b64decode(parts[1], validate=True) if parts[:1] == ["ssh-ed25519"] else b""
    except (IndexError, binascii.Error):
        blob = b""
    if len(blob) != len(_ED25519_BLOB) + 32 or not blob.startswith(_ED25519_BLOB):
        return f"its host key on record ({meta.host_key[:80]!r}) is not an ed25519 public key"
    return ""


def _foreign_paths(name: str, meta: Metadata) -> str:
    """Why the metadata's folder or login key is not an instance folder launch made (``run/NAME``
    or ``hosts/SLUG/NAME``, not itself a link: ``_resolved_folder``) holding ``id_ed25519``, or "".
    The metadata is not trusted (``own_folder``): a shared or remote hypervisor naming
    ``~/.ssh/id_ed25519`` would have ``ssh -X`` log in with the user's own key and replace
    ``~/.ssh/known_hosts`` beside it."""
    if not meta.home:
        return ""  # _missing_files says so
    folder = Path(meta.home)
    layout = folder.parent.name == "run" or folder.parent.parent.name == "hosts"
    made = layout and folder.name == name and folder.is_absolute()
    if not made or (os.path.lexists(folder) and _resolved_folder(folder) is None):
        return f"its instance folder on record ({meta.home[:200]!r}) is not one launch made for it"
    if meta.client_key and Path(meta.client_key) != folder / "id_ed25519":
        return f"its login key on record ({meta.client_key[:200]!r}) is not in its instance folder"
    if not meta.pool and meta.console_log and Path(meta.console_log) != folder / "console.log":
        # ``console`` shows the file and ``wait`` reads it: one named elsewhere showed any file of
        # the user's (a key), /dev/zero filled the memory
        return f"its console log on record ({meta.console_log[:200]!r}) is not in its instance folder"
    return ""


def _missing_files(dom: Any, meta: Metadata) -> str:
    """What of the instance's own files is gone (a create interrupted under an older launch); on a
    remote hypervisor its disks are volumes of the pool there, its login key is here."""
    if not meta.home:
        return "it has no instance folder on record"
    folder = Path(meta.home)
    needed = [] if meta.pool else [folder / "scratch.qcow2", folder / "context.iso"]
    if meta.client_key:
        needed.append(Path(meta.client_key))
    gone = [p.name for p in needed if not p.exists()]
    if gone:
        return f"{', '.join(gone)} missing in {folder}"
    if meta.pool:
        p = pool_of(dom.connect(), meta.pool)
        lost = [v for v in _own_volumes(meta)[:2] if p is None or storage.lookup(p, v) is None]
        return f"{', '.join(lost)} missing in the pool '{meta.pool}'" if lost else ""
    return ""


def _own_volumes(meta: Metadata) -> list[str]:
    return [v for v in meta.volumes.split(",") if v]


def pool_of(conn: Any, name: str) -> Any | None:
    """The storage pool ``name``, None when there is none."""
    try:
        return conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return None
        raise


def list_instances(conn: Any, *, running_only: bool = False, managed_only: bool = True) -> list[Instance]:
    flags = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE if running_only else 0
    found = []
    for dom in conn.listAllDomains(flags):
        try:
            found.append(describe(dom))
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            # another client undefined it between the listing and now: it is not there
    if managed_only:
        found = [i for i in found if i.meta is not None]
    return sorted(found, key=lambda i: i.name)


def lookup(conn: Any, name: str) -> Any:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise InstanceError(f"no instance named '{name}'", hint="see 'cernvm-launch list'") from None
        raise LaunchError(f"libvirt: {e.get_error_message()}") from None


def get(conn: Any, name: str) -> tuple[Any, Instance]:
    dom = lookup(conn, name)
    try:
        inst = describe(dom)
    except libvirt.libvirtError as e:  # undefined between the lookup and now
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise InstanceError(f"instance '{name}' is gone", hint="see 'cernvm-launch list'") from None
        raise
    if inst.meta is None:
        raise InstanceError(
            f"domain '{name}' was not created by cernvm-launch", hint="manage it with virsh instead"
        )
    return dom, inst


# -- ports ------------------------------------------------------------------------------------------


def port_free(port: int) -> bool:
    """Whether this machine's 127.0.0.1 ``port`` can be bound; a number that is no port is not free
    (never an OverflowError: a port may come from an edited domain's metadata)."""
    if not 0 < port <= 65535:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_at(conn: Any, port: int) -> bool:
    """Whether ``port`` is free on the hypervisor's 127.0.0.1: this machine's, or another's probed
    through it (``tunnel.listening``)."""
    hop = tunnel.hop_of_connection(conn)
    return port_free(port) if hop is None else not tunnel.listening(hop, port)


def pick_port(taken: set[int]) -> int:
    """A free 127.0.0.1 port that no other instance has on record."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            return port
    raise LaunchError("no free port on 127.0.0.1 for SSH forwarding")


# -- life cycle -------------------------------------------------------------------------------------


def _refuse_broken(inst: Instance) -> None:
    if inst.broken:
        raise InstanceError(
            f"instance '{inst.name}' is broken: {inst.broken}",
            hint=f"it cannot run; remove it with 'cernvm-launch destroy {inst.name}'",
        )


def start(conn: Any, name: str, *, fresh: bool = False) -> Instance:
    dom, inst = get(conn, name)
    _refuse_broken(inst)
    if inst.state == "paused":
        dom.resume()
        return describe(dom)
    if dom.isActive():
        raise InstanceError(f"instance '{name}' is running already")
    if fresh and inst.saved:
        dom.managedSaveRemove(0)
        inst = describe(dom)
    meta = inst.meta
    assert meta is not None
    if meta.network == "user" and not free_at(conn, meta.ssh_port):
        hop = tunnel.hop_of_connection(conn)
        where = f" on {hop.host}" if hop else ""
        if inst.saved:
            raise InstanceError(
                f"port 127.0.0.1:{meta.ssh_port}{where} of instance '{name}' is busy",
                hint=f"free it, or discard the saved state: 'cernvm-launch start --fresh {name}'",
            )
        taken = {i.meta.ssh_port for i in list_instances(conn) if i.meta and i.name != name}
        port = pick_port(taken | {meta.ssh_port})
        conn.defineXML(
            domain.set_forwarded_port(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), port, meta.api_port)
        )
        dom = conn.lookupByName(name)
    try:
        dom.create()
    except libvirt.libvirtError as e:
        raise LaunchError(f"instance '{name}' did not start: {e.get_error_message()}") from None
    return describe(dom)


def stop(conn: Any, name: str, *, mode: str = "save") -> Instance:
    """``save``: keep the running state on disk (the original's VirtualBox savestate); ``shutdown``:
    ask the guest (ACPI); ``poweroff``: pull the plug."""
    dom, _inst = get(conn, name)
    if not dom.isActive():
        raise InstanceError(f"instance '{name}' is not running")
    if mode == "save" and "type='virtiofs'" in dom.XMLDesc(0).replace('"', "'"):
        # QEMU cannot save a vhost-user device's state; say so before libvirt's migration jargon.
        raise InstanceError(
            f"instance '{name}' has a virtiofs shared folder, whose running state cannot be saved",
            hint=f"sync in the guest, then 'cernvm-launch stop --force {name}' (or --shutdown); "
            "the scratch disk keeps its data",
        )
    try:
        if mode == "save":
            dom.managedSave(0)
        elif mode == "shutdown":
            dom.shutdown()
        else:
            dom.destroy()
    except libvirt.libvirtError as e:
        raise LaunchError(f"cannot stop '{name}': {e.get_error_message()}") from None
    return describe(dom)


def pause(conn: Any, name: str) -> Instance:
    dom, inst = get(conn, name)
    if inst.state != "running":
        raise InstanceError(f"instance '{name}' is not running (it is {inst.state})")
    dom.suspend()
    return describe(dom)


def undefine(dom: Any) -> None:
    flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    try:
        dom.undefineFlags(flags | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError:
        dom.undefineFlags(flags)  # drivers without NVRAM support reject the flag


def destroy(conn: Any, name: str, *, force: bool = False, home: Path) -> Path | None:
    """Remove the domain, its own volumes on a remote hypervisor (and the boot image there when it is
    not from the image cache and this was its last instance) and the instance folder (what is left
    of it) when it is the instance's own folder under the launch ``home`` (default: the URI's);
    returns the folder the metadata names when it was left in place because it is not."""
    get(conn, name)  # (no lock file is made for a name that is no instance)
    with name_lock(home, conn.getURI(), name, "destroy", make_home=False):
        return _destroy(conn, name, force, home)


def _destroy(conn: Any, name: str, force: bool, home: Path) -> Path | None:
    dom, inst = get(conn, name)
    if dom.isActive() and not inst.broken and not force:
        raise InstanceError(
            f"instance '{name}' is {inst.state}", hint=f"'cernvm-launch destroy --force {name}'"
        )
    if dom.isActive():
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
    undefine(dom)
    if inst.meta and inst.meta.pool:
        _remove_volumes(conn, inst.meta)
    folder = Path(inst.meta.home) if inst.meta and inst.meta.home else None
    if folder is None or not (folder.is_dir() or folder.is_symlink()):
        return None
    uri = conn.getURI()
    if not own_folder(folder, instance_folder(home, uri, name)):
        return folder
    shutil.rmtree(folder)
    return None


def not_its_folder(conn: Any, name: str, meta: Metadata, home: Path) -> str:
    """Why the folder on record is not the one ``instance_folder`` gives for this connection under
    the user's launch ``home``, or "". ``describe`` (which knows no home) checks the layout only; a
    verb that logs in with the key there, or writes the ``known_hosts`` beside it (``ssh -X``), checks
    this too: another instance's folder (another hypervisor's ``hosts/SLUG/NAME``, a ``run/NAME``
    elsewhere) holds another key."""
    expected = instance_folder(home, conn.getURI(), name)
    if meta.home and own_folder(Path(meta.home), expected):
        return ""
    return f"its instance folder on record ({meta.home[:200]!r}) is not {expected}"


def instance_folder(home: Path, uri: str, name: str) -> Path:
    """The one folder an instance on the hypervisor ``uri`` names has: ``<home>/run/<name>`` for a
    local URI, ``<home>/hosts/<slug>/<name>`` for a remote one (its keys are that host's). ``create``
    makes it and ``destroy`` removes only it, so another hypervisor's folder is never touched."""
    remote = bool(urlsplit(uri).hostname)
    return home / "hosts" / _slug(uri) / name if remote else home / "run" / name


@contextlib.contextmanager
def name_lock(home: Path, uri: str, name: str, what: str, *, make_home: bool = True) -> Iterator[None]:
    """One command at a time makes or removes the instance ``name``: an exclusive ``flock`` of
    ``.<name>.lock`` beside its folder (a name never starts with '.'), or one line naming the command
    that holds it. Two creates of one name both passed the "exists already" check: the second took
    the first's folder for a killed create's and removed it, and the one that failed undid the other's
    domain (the kernel drops the lock when its holder dies: a killed create never blocks the next; the
    file goes when released). ``make_home``: else, where the folder above is missing, no lock."""

    def refuse(holder: str) -> None:
        raise InstanceError(
            f"instance '{name}' is busy: {holder} is working on it",
            hint="wait for that command to finish, or pick another --name",
        )

    parent = instance_folder(home, uri, name).parent
    if not make_home and not parent.is_dir():
        yield  # no create made it, so none runs (a destroy does not make the launch home)
        return
    with held_lock(parent / f".{name}.lock", f"{what} {name}", refuse, remove=True):
        yield


def _slug(uri: str) -> str:
    """A folder name for the hypervisor a remote URI names (its instances' keys live under it)."""
    parts = urlsplit(uri)
    return "".join(c if c.isalnum() or c in ".-_" else "_" for c in f"{parts.hostname}_{parts.port or 22}")


def own_folder(folder: Path, expected: Path) -> bool:
    """Whether ``folder`` is the instance's own folder ``expected`` (``instance_folder``): not itself
    a symbolic link, the same folder once links above it are followed. The domain's metadata is not
    trusted: anyone who can define domains on the hypervisor (a shared system daemon, ``virsh
    edit``) could otherwise name ``/etc``, or another hypervisor's instance folder, and have destroy
    remove it."""
    if folder.name != expected.name:
        return False
    real = _resolved_folder(folder)
    try:
        return real is not None and real == expected.resolve(strict=True)
    except (OSError, RuntimeError):
        return False


def _resolved_folder(folder: Path) -> Path | None:
    """``folder``'s real path, if it exists, is absolute and is not itself a symbolic link; else
    None. A link further up is followed (``own_folder`` compares with the expected real path)."""
    if folder.is_symlink() or not folder.is_absolute():
        return None
    try:
        real = folder.resolve(strict=True)
        # resolve() also removes "..": the folder's own parent must resolve to where it says it is
        return real if real == folder.parent.resolve() / folder.name else None
    except (OSError, RuntimeError):
        return None


def _remove_volumes(conn: Any, meta: Metadata) -> None:
    """The instance's own volumes. A boot image from the image cache stays in the pool (the next
    create that boots it does not upload it again; ``images remove`` deletes it); one given as a
    file goes with the last instance that boots it."""
    p = pool_of(conn, meta.pool)
    if p is None:
        return
    doomed = _own_volumes(meta)
    if not meta.image_cached and not [
        i for i in list_instances(conn) if i.meta and i.meta.pool == meta.pool and i.meta.image == meta.image
    ]:
        doomed += storage.image_volumes(posixpath.basename(meta.image))
    storage.delete(p, doomed)


def address(conn: Any, name: str) -> tuple[str, int] | None:
    """Where SSH answers: the forwarded 127.0.0.1 port, or the DHCP lease on a libvirt network."""
    dom, inst = get(conn, name)
    meta = inst.meta
    assert meta is not None
    if meta.network == "user":
        return ("127.0.0.1", meta.ssh_port)
    if not dom.isActive():
        return None
    try:
        ifaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
    except libvirt.libvirtError:
        return None
    for iface in (ifaces or {}).values():
        for addr in iface.get("addrs") or []:
            if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                return (str(addr["addr"]), meta.api_port)
    return None


def console_bytes(conn: Any, meta: Metadata, limit: int) -> bytes:
    """The last ``limit`` bytes of the serial console log: a file here, or a volume of the remote
    hypervisor's pool read through libvirt (b"" when there is none yet)."""
    if not meta.console_log:
        return b""
    if meta.pool:
        p = pool_of(conn, meta.pool)
        return storage.tail(conn, p, posixpath.basename(meta.console_log), limit) if p else b""
    try:
        with open_regular(Path(meta.console_log)) as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - limit))
            return f.read(limit)
    except OSError:
        return b""


class ConsoleLog:
    """The serial console log read as it grows, for watching a boot: each ``read`` fetches only what
    was appended since the last one (on a remote hypervisor one size query and, when it grew, one
    stream of the new bytes) and returns the last ``limit`` bytes. ``wait`` looks twice a second;
    reading the whole tail each time moved the log through the hypervisor's SSH connection again
    and again while the guest booted. A log rewritten from the start (the bytes before the old end
    differ) or shortened is read again from its tail."""

    OVERLAP = 64  # bytes before the old end read again, to notice a rewritten log

    def __init__(self, conn: Any, meta: Metadata, limit: int = 256 << 10) -> None:
        self.conn, self.meta, self.limit = conn, meta, limit
        self.buf = b""  # the log's bytes up to ``end`` (at most ``limit``)
        self.end = 0
        self.fetched = 0  # bytes read from the log so far (what crossed the connection)
        self._vol: Any = None

    def read(self) -> bytes:
        size = self._size()
        if size == self.end:
            return self.buf
        if size < self.end:
            self.buf, self.end = b"", 0
        again = min(self.OVERLAP, len(self.buf))
        start = max(self.end - again, size - self.limit, 0)
        data = self._range(start, size)
        if start < self.end and data[: self.end - start] != self.buf[len(self.buf) - (self.end - start) :]:
            start = max(size - self.limit, 0)  # rewritten: the tail as it is now
            self.buf, data = b"", self._range(start, size)
        kept = self.buf[: len(self.buf) - (self.end - start)] if start < self.end else b""
        self.buf = (kept + data)[-self.limit :]
        self.end = start + len(data)
        return self.buf

    def _size(self) -> int:
        if not self.meta.console_log:
            return 0
        if not self.meta.pool:
            try:
                return os.stat(self.meta.console_log).st_size
            except OSError:
                return 0
        if self._vol is None:
            p = pool_of(self.conn, self.meta.pool)
            self._vol = p and storage.lookup(p, posixpath.basename(self.meta.console_log))
            if self._vol is None:
                return 0
        return storage.size_of(self._vol)

    def _range(self, start: int, end: int) -> bytes:
        if self.meta.pool:
            data = storage.read_range(self.conn, self._vol, start, end)
        else:
            try:
                with open_regular(Path(self.meta.console_log)) as f:
                    f.seek(start)
                    data = f.read(end - start)
            except OSError:
                data = b""
        self.fetched += len(data)
        return data


def console_tail(conn: Any, inst: Instance, lines: int = 25) -> str:
    if not inst.meta or _foreign_paths(inst.name, inst.meta):  # its log is not its own: not read
        return ""
    text = console_bytes(conn, inst.meta, 64 * 1024).decode(errors="replace").replace("\r", "")
    return "\n".join(text.splitlines()[-lines:])
