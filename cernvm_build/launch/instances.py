"""Instances: create, list, start, stop, pause, destroy libvirt domains that boot a μCernVM image.

An instance is a libvirt domain plus a folder ``<home>/run/<name>/`` holding its scratch disk, context
ISO, login key and console log. Everything ``list`` shows is in the domain's ``<metadata>``; the
folder goes away with ``destroy``. ``create`` either finishes or leaves nothing behind, and a stale
folder from an interrupted ``create`` is replaced on the next one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt

from .. import proc
from ..fsutil import atomic_write
from . import context, domain, keys, userdata
from .config import Settings
from .domain import Metadata
from .errors import InstanceError, LaunchError
from .names import validate_name

Phase = Callable[[str], None]

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
    must sit outside root's 0700 home; a session daemon's qemu is the user and can use ``~/.cernvm``."""
    env = os.environ.get("CERNVM_LAUNCH_HOME")
    if env:
        return Path(env)
    if uri.startswith("qemu:///system") and os.geteuid() == 0:
        return Path("/var/lib/cernvm-launch")
    return Path.home() / ".cernvm"


@dataclass(frozen=True)
class Instance:
    name: str
    state: str
    meta: Metadata | None
    uuid: str = ""
    saved: bool = False  # a managed save image exists (``stop`` keeps the running state)

    def to_json(self) -> dict[str, Any]:
        m = self.meta
        return {
            "name": self.name,
            "state": self.state,
            "saved": self.saved,
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


def _describe(dom: Any) -> Instance:
    state, _reason = dom.state()
    try:
        saved = bool(dom.hasManagedSaveImage(0))
    except libvirt.libvirtError:
        saved = False
    name = dom.name()
    return Instance(
        name=name,
        state=STATES.get(state, "unknown")
        if not (saved and state == libvirt.VIR_DOMAIN_SHUTOFF)
        else "saved",
        meta=domain.metadata_of(dom.XMLDesc(0)),
        uuid=dom.UUIDString(),
        saved=saved,
    )


def list_instances(conn: Any, *, running_only: bool = False, managed_only: bool = True) -> list[Instance]:
    flags = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE if running_only else 0
    found = [_describe(d) for d in conn.listAllDomains(flags)]
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
        inst = _describe(dom)
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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def pick_port(taken: set[int]) -> int:
    """A free 127.0.0.1 port that no other instance has on record."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            return port
    raise LaunchError("no free port on 127.0.0.1 for SSH forwarding")


# -- create -----------------------------------------------------------------------------------------


@dataclass
class CreateRequest:
    settings: Settings
    name: str
    image: Path
    image_format: str
    image_sha256: str
    domain_type: str
    home: Path
    user_data: bytes  # the user's file (or the default context)
    user_data_source: str = "user data"
    ucernvm: dict[str, str] = field(default_factory=dict)  # keys launch adds to the ucernvm block
    snapshot: str = ""
    profile: str = ""
    start: bool = True
    context_label: str = "CONFIG-2"


def create(conn: Any, req: CreateRequest, phase: Phase = lambda _: None) -> Instance:
    s = req.settings
    name = validate_name(req.name)
    with contextlib.suppress(libvirt.libvirtError):
        conn.lookupByName(name)
        raise InstanceError(
            f"an instance named '{name}' exists already",
            hint=f"pick another --name, or 'cernvm-launch destroy {name}' first",
        )
    if not req.image.is_file():
        raise InstanceError(
            "boot image not found", where=str(req.image), hint="see 'cernvm-launch images list'"
        )
    port = 0
    if s.network == "user":
        taken = {i.meta.ssh_port for i in list_instances(conn) if i.meta}
        if s.ssh_port:
            if s.ssh_port in taken or not port_free(s.ssh_port):
                raise InstanceError(
                    f"port 127.0.0.1:{s.ssh_port} is busy",
                    hint="pick another sshPort / --ssh-port, or leave it out to get a free one",
                )
            port = s.ssh_port
        else:
            port = pick_port(taken)
    if s.shared_folder is not None and not s.shared_folder.is_dir():
        raise InstanceError("shared folder does not exist", where=str(s.shared_folder))
    ud = userdata.parse(req.user_data, req.user_data_source)

    inst_dir = req.home / "run" / name
    phase("preparing disks and context")
    if inst_dir.exists():  # left by an interrupted create: no domain owns it (checked above)
        shutil.rmtree(inst_dir)
    inst_dir.mkdir(parents=True)
    for d in (req.home, req.home / "run", inst_dir):
        os.chmod(d, 0o711)  # the system daemon's qemu user must reach the disks, not list them
    try:
        client = keys.generate(f"cernvm-launch@{name}")
        host = keys.generate(f"root@{name}")
        client_key = inst_dir / "id_ed25519"
        atomic_write(client_key, client.private_openssh.encode(), mode=0o600)
        atomic_write(inst_dir / "id_ed25519.pub", (client.public_openssh + "\n").encode())
        merged = userdata.merge(
            ud,
            hostname=name,
            authorized_keys=[client.public_openssh],
            host_key_private=host.private_openssh,
            host_key_public=host.public_openssh,
            ucernvm=req.ucernvm,
        )
        instance_id = str(uuid.uuid4())
        context.build_iso(
            inst_dir / "context.iso",
            userdata.render(merged),
            name=name,
            instance_id=instance_id,
            public_keys={"launch": client.public_openssh},
            label=req.context_label,
        )
        scratch = inst_dir / "scratch.qcow2"
        proc.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", scratch, f"{s.disk}M"]
        )
        os.chmod(scratch, 0o600)
        console_log = inst_dir / "console.log"
        spec = domain.DomainSpec(
            name=name,
            title=req.profile or req.image.name,
            domain_type=req.domain_type,
            cpus=s.cpus,
            memory=s.memory,
            image=req.image,
            image_format=req.image_format,
            scratch=scratch,
            context_iso=inst_dir / "context.iso",
            console_log=console_log,
            network=s.network,
            ssh_port=port,
            api_port=s.api_port,
            execution_cap=s.execution_cap,
            shared_folder=s.shared_folder,
            shared_folder_driver=s.shared_folder_driver,
        )
        meta = Metadata(
            image=str(req.image),
            image_sha256=req.image_sha256,
            image_format=req.image_format,
            profile=req.profile,
            snapshot=req.snapshot,
            network=s.network,
            ssh_port=port,
            api_port=s.api_port,
            ssh_user=s.ssh_user,
            host_key=host.public_openssh,
            host_fingerprint=host.fingerprint,
            client_key=str(client_key),
            home=str(inst_dir),
            console_log=str(console_log),
            shared_folder=str(s.shared_folder or ""),
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            cpus=s.cpus,
            memory=s.memory,
            disk=s.disk,
        )
        xml = domain.render(spec, meta)
        phase("defining the domain")
        try:
            dom = conn.defineXML(xml)
        except libvirt.libvirtError as e:
            raise LaunchError(f"libvirt refused the domain: {e.get_error_message()}") from None
        if req.start:
            phase("starting")
            try:
                dom.create()
            except libvirt.libvirtError as e:
                _undefine(dom)
                raise LaunchError(
                    f"instance '{name}' did not start: {e.get_error_message()}",
                    hint="see 'cernvm-launch create -v'; nothing was kept",
                ) from None
        return _describe(dom)
    except BaseException:
        shutil.rmtree(inst_dir, ignore_errors=True)
        raise


# -- life cycle -------------------------------------------------------------------------------------


def start(conn: Any, name: str, *, fresh: bool = False) -> Instance:
    dom, inst = get(conn, name)
    if inst.state == "paused":
        dom.resume()
        return _describe(dom)
    if dom.isActive():
        raise InstanceError(f"instance '{name}' is running already")
    if fresh and inst.saved:
        dom.managedSaveRemove(0)
        inst = _describe(dom)
    meta = inst.meta
    assert meta is not None
    if meta.network == "user" and not port_free(meta.ssh_port):
        if inst.saved:
            raise InstanceError(
                f"port 127.0.0.1:{meta.ssh_port} of instance '{name}' is busy",
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
    return _describe(dom)


def stop(conn: Any, name: str, *, mode: str = "save") -> Instance:
    """``save``: keep the running state on disk (the original's VirtualBox savestate); ``shutdown``:
    ask the guest (ACPI); ``poweroff``: pull the plug."""
    dom, _inst = get(conn, name)
    if not dom.isActive():
        raise InstanceError(f"instance '{name}' is not running")
    try:
        if mode == "save":
            dom.managedSave(0)
        elif mode == "shutdown":
            dom.shutdown()
        else:
            dom.destroy()
    except libvirt.libvirtError as e:
        raise LaunchError(f"cannot stop '{name}': {e.get_error_message()}") from None
    return _describe(dom)


def pause(conn: Any, name: str) -> Instance:
    dom, inst = get(conn, name)
    if inst.state != "running":
        raise InstanceError(f"instance '{name}' is not running (it is {inst.state})")
    dom.suspend()
    return _describe(dom)


def _undefine(dom: Any) -> None:
    flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    try:
        dom.undefineFlags(flags | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError:
        dom.undefineFlags(flags)  # drivers without NVRAM support reject the flag


def destroy(conn: Any, name: str, *, force: bool = False) -> Path | None:
    """Remove the domain and the instance folder; returns the folder that was removed."""
    dom, inst = get(conn, name)
    if dom.isActive():
        if not force:
            raise InstanceError(
                f"instance '{name}' is {inst.state}", hint=f"'cernvm-launch destroy --force {name}'"
            )
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
    _undefine(dom)
    home = Path(inst.meta.home) if inst.meta and inst.meta.home else None
    if home is not None and home.name == name and home.is_dir():
        shutil.rmtree(home)
    return home


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


def console_tail(inst: Instance, lines: int = 25) -> str:
    if not inst.meta or not inst.meta.console_log:
        return ""
    try:
        data = Path(inst.meta.console_log).read_bytes()[-64 * 1024 :]
    except OSError:
        return ""
    text = data.decode(errors="replace").replace("\r", "")
    return "\n".join(text.splitlines()[-lines:])
