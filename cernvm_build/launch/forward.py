"""Port forwards ``HOST:GUEST`` from 127.0.0.1 into an instance on user-mode networking.

At create they are part of QEMU's ``-netdev user`` (``domain.netdev``); on a running instance they
are added through the QEMU monitor (``hostfwd_add``), and written into the persistent definition and
its metadata so that the next boot has them too. A restored saved state runs the command line it
was saved with, so ``start`` adds the recorded ones again (``reapply``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import libvirt
import libvirt_qemu

from ..errors import InstanceError, UsageError
from . import domain, tunnel
from .instances import Instance, describe, free_at, get, list_instances


def parse(spec: str, *, flag: str = "--forward") -> tuple[int, int]:
    """``8080:80`` (or ``8080``: the same port inside) -> (8080, 80); a UsageError naming ``flag``."""
    host, sep, guest = spec.partition(":")
    try:
        pair = (int(host), int(guest) if sep else int(host))
    except ValueError:
        raise UsageError(f"{flag} {spec!r}: expected HOST_PORT:GUEST_PORT, e.g. 8080:80") from None
    for port in pair:
        if not 1 <= port <= 65535:
            raise UsageError(f"{flag} {spec!r}: port {port} is not in 1..65535")
    return pair


def taken_ports(conn: Any, *, but: str = "") -> set[int]:
    """Every 127.0.0.1 port another instance has on record (its SSH forward and its user forwards)."""
    ports: set[int] = set()
    for inst in list_instances(conn):
        if inst.meta and inst.name != but:
            ports.add(inst.meta.ssh_port)
            ports.update(h for h, _g in domain.parse_forwards(inst.meta.forwards))
    return ports


def check_free(conn: Any, pairs: tuple[tuple[int, int], ...], *, but: str = "") -> None:
    """Refuse a port another instance has on record or one that something listens on, on the
    hypervisor's 127.0.0.1 (this machine's, or another's probed through it)."""
    taken = taken_ports(conn, but=but)
    seen: set[int] = set()
    remote = tunnel.hop_of_connection(conn)
    where = f" on {remote.host}" if remote else ""
    for host, _guest in pairs:
        if host in taken or host in seen or not free_at(conn, host):
            raise InstanceError(
                f"port 127.0.0.1:{host}{where} is busy",
                hint="pick another HOST_PORT for --forward HOST:GUEST",
            )
        seen.add(host)


def _hmp(dom: Any, command: str) -> str:
    return str(
        libvirt_qemu.qemuMonitorCommand(dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    )


def add(conn: Any, name: str, pair: tuple[int, int]) -> Instance:
    """Forward 127.0.0.1:HOST to the running instance's GUEST port now and on every later boot."""
    dom, inst = get(conn, name)
    meta = inst.meta
    assert meta is not None
    if meta.network != "user":
        raise InstanceError(
            f"instance '{name}' is on the libvirt network '{meta.network}'",
            hint="its ports are reachable at its address directly ('cernvm-launch ip')",
        )
    current = domain.parse_forwards(meta.forwards)
    if pair in current:
        return inst
    check_free(conn, (pair,), but=name)
    if dom.isActive():
        answer = _hmp(dom, f"hostfwd_add cvmnet0 tcp:127.0.0.1:{pair[0]}-:{pair[1]}").strip()
        if answer:  # HMP answers nothing on success
            raise InstanceError(f"QEMU refused the forward {pair[0]}:{pair[1]}: {answer}")
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    conn.defineXML(domain.set_forwards(xml, meta.ssh_port, meta.api_port, (*current, pair)))
    return describe(conn.lookupByName(name))


def reapply(dom: Any) -> None:
    """After a restore: add the forwards recorded in the persistent definition that the saved
    command line lacks (QEMU refuses the ones it has already, which is fine)."""
    meta = domain.metadata_of(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    if meta is None or meta.network != "user":
        return
    for host, guest in domain.parse_forwards(meta.forwards):
        with contextlib.suppress(libvirt.libvirtError):
            _hmp(dom, f"hostfwd_add cvmnet0 tcp:127.0.0.1:{host}-:{guest}")
