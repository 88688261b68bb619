"""Readiness: an address first, then SSH answering with the host key launch generated.

An open TCP port proves nothing under user-mode networking (QEMU accepts on the forwarded port before
the guest listens), so readiness is a full SSH login with the pinned key running ``true``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import NotReadyError, SSHError
from . import instances, ssh

Phase = Callable[[str], None]


def target(conn: Any, name: str, user: str | None = None) -> ssh.Target | None:
    _dom, inst = instances.get(conn, name)
    meta = inst.meta
    assert meta is not None
    addr = instances.address(conn, name)
    if addr is None:
        return None
    return ssh.Target(addr[0], addr[1], user or meta.ssh_user, meta.host_key, Path(meta.client_key))


def wait(
    conn: Any, name: str, *, timeout: float, phase: Phase = lambda _: None, user: str | None = None
) -> ssh.Target:
    """Block until ``ssh NAME -- true`` works; NotReadyError (with the console's tail) on timeout."""
    deadline = time.monotonic() + timeout
    last = "no address yet"
    phase("waiting for an address")
    while True:
        dom, inst = instances.get(conn, name)
        if inst.broken:
            raise NotReadyError(
                f"instance '{name}' is broken: {inst.broken}",
                hint=f"remove it with 'cernvm-launch destroy {name}'",
            )
        if not dom.isActive():
            raise NotReadyError(
                f"instance '{name}' is {inst.state}",
                hint=f"start it: 'cernvm-launch start {name}'",
                console_tail=instances.console_tail(inst),
            )
        t = target(conn, name, user)
        if t is not None:
            phase(f"waiting for SSH on {t.host}:{t.port}")
            try:
                client = ssh.connect(t, timeout=min(10.0, max(1.0, deadline - time.monotonic())))
            except ssh.NotYet as e:
                last = str(e)
            else:
                try:
                    if ssh.run(client, "true") == 0:
                        return t
                    last = "'true' failed"
                finally:
                    client.close()
        if time.monotonic() >= deadline:
            raise NotReadyError(
                f"instance '{name}' did not answer SSH within {timeout:g} s ({last})",
                hint=f"see the console above, 'cernvm-launch console {name}', or wait longer with --timeout",
                console_tail=instances.console_tail(inst),
            )
        time.sleep(1.0)


def connect(conn: Any, name: str, user: str | None = None) -> Any:
    """An SSH client to a running instance, or one clear line why not."""
    dom, inst = instances.get(conn, name)
    if inst.broken:
        raise SSHError(f"instance '{name}' is broken: {inst.broken}", hint=f"'cernvm-launch destroy {name}'")
    if not dom.isActive() or inst.state != "running":
        raise SSHError(f"instance '{name}' is {inst.state}", hint=f"'cernvm-launch start {name}'")
    t = target(conn, name, user)
    if t is None:
        raise SSHError(f"instance '{name}' has no address yet", hint=f"'cernvm-launch wait {name}'")
    try:
        return ssh.connect(t)
    except ssh.NotYet as e:
        raise SSHError(
            f"instance '{name}' does not answer SSH on {t.host}:{t.port}: {e}",
            hint=f"it may still be booting: 'cernvm-launch wait {name}'",
        ) from None
