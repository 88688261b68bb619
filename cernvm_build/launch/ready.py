"""Readiness: an address first, then SSH answering with the host key launch generated.

An open TCP port proves nothing under user-mode networking (QEMU accepts on the forwarded port before
the guest listens), so readiness is a full SSH login with the pinned key running ``true``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from ..errors import NotReadyError, SSHError
from . import bootwatch, instances, ssh, tunnel

Phase = Callable[[str], None]
STAGGER = 1.0  # seconds between the starts of SSH attempts while earlier ones still wait
RETRY = 0.5  # seconds from an attempt the guest refused to the next one
POLL = 0.5  # seconds between looks at the console and the domain's state
MAX_ATTEMPTS = 3


def _loggable(conn: Any, name: str, home: Path | None) -> tuple[Any, instances.Instance]:
    """The domain and instance, unless its key or host key on record is not to be used (also by
    OpenSSH's argv): broken, or (``home`` given) its folder is not its own under the launch home."""
    dom, inst = instances.get(conn, name)
    meta = inst.meta
    broken = inst.broken or (instances.not_its_folder(conn, name, meta, home) if meta and home else "")
    if broken:
        raise SSHError(f"instance '{name}' is broken: {broken}", hint=f"'cernvm-launch destroy {name}'")
    return dom, inst


def target(conn: Any, name: str, user: str | None = None, home: Path | None = None) -> ssh.Target | None:
    """Where and how to log in; ``home``: the user's launch home (``create.home_for``), whose
    instance folder for this connection must be the one on record (``instances.not_its_folder``)."""
    return _target_of(conn, name, _loggable(conn, name, home)[1], user)


def _target_of(conn: Any, name: str, inst: instances.Instance, user: str | None) -> ssh.Target | None:
    """``target`` for an instance ``_loggable`` passed."""
    meta = inst.meta
    assert meta is not None
    addr = instances.address(conn, name)
    if addr is None:
        return None
    hop = tunnel.hop_of_connection(conn)  # the address is the hypervisor's: go through it
    via = tuple(hop.proxy(*addr)) if hop else ()
    return ssh.Target(addr[0], addr[1], user or meta.ssh_user, meta.host_key, Path(meta.client_key), via)


class BootFailedError(NotReadyError):
    """The console shows the boot failed (a panic): the instance was powered off (or removed)."""


def wait(
    conn: Any,
    name: str,
    *,
    timeout: float,
    phase: Phase = lambda _: None,
    user: str | None = None,
    remove_on_failure: Path | None = None,
    home: Path | None = None,
) -> ssh.Target:
    """Block until ``ssh NAME -- true`` works (``home``: as for ``target``, whose folder check the
    login with the key on record then passes first); NotReadyError (with the console's tail) on timeout,
    BootFailedError as soon as the console shows a panic (the instance is then powered off, or
    destroyed when ``remove_on_failure`` names its launch home, ``create.home_for``)."""
    deadline = time.monotonic() + timeout
    phase("waiting for an address")
    dom, inst = instances.get(conn, name)  # what it is does not change while it boots: asked once
    if inst.broken:
        raise NotReadyError(
            f"instance '{name}' is broken: {inst.broken}",
            hint=f"remove it with 'cernvm-launch destroy {name}'",
        )
    assert inst.meta is not None
    console = instances.ConsoleLog(conn, inst.meta)
    last = "no address yet"
    # An SSH attempt can block for its whole timeout (slirp accepts and then waits for the guest while
    # its network is not up): each runs in a daemon thread (nothing waits for it at exit). The loop
    # wakes when one ends (a guest that answers is seen at once), starts the next RETRY seconds after
    # a refusal, and one more next to those still waiting every STAGGER seconds (at most
    # MAX_ATTEMPTS), so a hung attempt does not hide a guest that came up. The console and the
    # domain's state are looked at every POLL seconds: on a remote hypervisor each look is a round
    # trip through its SSH connection, and the console only its new bytes (``ConsoleLog``).
    attempts: list[_Attempt] = []
    ended = threading.Event()  # set by an attempt's thread when it ends
    t: ssh.Target | None = None
    started = refused = looked = 0.0
    while True:
        now = time.monotonic()
        if now - looked >= POLL:
            looked = now
            _check_booting(conn, dom, name, inst, console, remove_on_failure)
        if t is None:
            t = target(conn, name, user, home)  # a libvirt network's lease comes when the guest asks
            if t is not None:
                phase(f"waiting for SSH on {t.host}:{t.port}")
        if t is not None and _more(attempts) and now >= _due(attempts, started, refused):
            attempts.append(_Attempt(t, min(10.0, max(1.0, deadline - now)), ended))
            started = now
        ended.clear()  # before looking: an attempt that ends after the look makes the wait below return
        for attempt in [a for a in attempts if a.done]:
            attempts.remove(attempt)
            if attempt.error is not None:
                raise attempt.error  # wrong host key, refused login: no point in retrying
            last = attempt.why_not
            if not last:
                return attempt.target
            refused = time.monotonic()
        if time.monotonic() >= deadline:
            raise NotReadyError(
                f"instance '{name}' did not answer SSH within {timeout:g} s ({last})",
                hint=f"see the console above, 'cernvm-launch console {name}', or wait longer with --timeout",
                console_tail=instances.console_tail(conn, inst),
            )
        wake = looked + POLL
        if t is not None and _more(attempts):
            wake = min(wake, _due(attempts, started, refused))
        ended.wait(max(0.0, wake - time.monotonic()))


def _more(attempts: list[_Attempt]) -> bool:
    """Whether another attempt may start: fewer than MAX_ATTEMPTS wait, and none of them has heard
    the guest's sshd (one it answered is being served; a second login would only slow the booting
    guest down, as two or three key exchanges at once did under TCG)."""
    return len(attempts) < MAX_ATTEMPTS and not any(a.heard for a in attempts)


def _due(attempts: list[_Attempt], started: float, refused: float) -> float:
    """When the next attempt starts: STAGGER after the last one while attempts wait, else RETRY
    after the last refusal."""
    return started + STAGGER if attempts else refused + RETRY


def _check_booting(
    conn: Any,
    dom: Any,
    name: str,
    inst: instances.Instance,
    console: instances.ConsoleLog,
    remove: Path | None,
) -> None:
    """BootFailedError when the console shows a panic; NotReadyError when the domain stopped."""
    meta = inst.meta
    assert meta is not None
    text = console.read().decode(errors="replace")
    failure = bootwatch.check(text, name=name, cvmfs_server=meta.cvmfs_server)
    if failure is not None:
        _give_up(conn, dom, name, remove)
        kept = "removed" if remove else f"powered off (start it again: 'cernvm-launch start {name}')"
        raise BootFailedError(
            f"instance '{name}' failed to boot: {failure.reason}; it was {kept}",
            hint=failure.hint,
            console_tail=failure.lines,
        )
    if not dom.isActive():
        _dom, now = instances.get(conn, name)
        raise NotReadyError(
            f"instance '{name}' is {now.state}",
            hint=f"start it: 'cernvm-launch start {name}'",
            console_tail=instances.console_tail(conn, now),
        )


class _Attempt:
    """One ``ssh -- true`` in a daemon thread: ``why_not`` is "" when it worked."""

    def __init__(self, t: ssh.Target, timeout: float, ended: threading.Event) -> None:
        self.target, self.timeout, self.ended = t, timeout, ended
        self.why_not: str = "not yet"
        self.error: Exception | None = None
        self.done = False
        self.heard = False  # the guest's sshd answered this attempt (its banner arrived)
        threading.Thread(target=self._run, daemon=True, name=f"ssh-ready-{t.port}").start()

    def _run(self) -> None:
        try:
            client = ssh.connect(self.target, timeout=self.timeout, heard=self._heard)
        except ssh.NotYet as e:
            self.why_not = str(e) or "not yet"
        except Exception as e:  # SSHError: handed to the waiting thread
            self.error = e
        else:
            try:
                self.why_not = "" if ssh.run(client, "true") == 0 else "'true' failed"
            except Exception as e:
                self.why_not = str(e) or type(e).__name__
            finally:
                client.close()
        self.done = True
        self.ended.set()

    def _heard(self) -> None:
        self.heard = True
        self.ended.set()  # the waiting loop looks again: no new attempt while this one is served


def _give_up(conn: Any, dom: Any, name: str, home: Path | None) -> None:
    """Power the domain off; destroy it too when ``home`` (its launch home) is given."""
    with contextlib.suppress(libvirt.libvirtError):
        if dom.isActive():
            dom.destroy()
    if home is not None:
        instances.destroy(conn, name, force=True, home=home)


def connect(conn: Any, name: str, user: str | None = None, home: Path | None = None) -> Any:
    """An SSH client to a running instance, or one clear line why not (``home``: see ``target``)."""
    dom, inst = _loggable(conn, name, home)
    if not dom.isActive() or inst.state != "running":
        raise SSHError(f"instance '{name}' is {inst.state}", hint=f"'cernvm-launch start {name}'")
    t = _target_of(conn, name, inst, user)  # the instance checked once, above
    if t is None:
        raise SSHError(f"instance '{name}' has no address yet", hint=f"'cernvm-launch wait {name}'")
    try:
        return ssh.connect(t)
    except ssh.NotYet as e:
        raise SSHError(
            f"instance '{name}' does not answer SSH on {t.host}:{t.port}: {e}",
            hint=f"it may still be booting: 'cernvm-launch wait {name}'",
        ) from None
