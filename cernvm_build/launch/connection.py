"""Opening libvirt: the default URI, and one clear line for each way a connection fails."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import libvirt

from ..errors import ConnectError

# libvirt prints every error to stderr by default; launch turns the ones that matter into one-line
# LaunchErrors, and probes (lookups of names that may not exist) must stay quiet. Here, because every
# libvirt call runs on a connection, and every Host's connection comes through this module (host.py).
libvirt.registerErrorHandler(lambda ctx, err: None, None)

DEFAULT_URI_ENV = "LIBVIRT_DEFAULT_URI"


def default_uri(explicit: str | None = None) -> str:
    """``--connect`` > ``$LIBVIRT_DEFAULT_URI`` > qemu:///system as root, qemu:///session otherwise."""
    if explicit:
        return explicit
    env = os.environ.get(DEFAULT_URI_ENV)
    if env:
        return env
    return "qemu:///system" if os.geteuid() == 0 else "qemu:///session"


def open_connection(uri: str) -> Any:
    """A read-write connection to ``uri``, or a ConnectError naming the cause and the fix."""
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise _connect_error(uri, e) from None


def _host_of(uri: str) -> str:
    try:
        return urlsplit(uri).hostname or ""
    except ValueError:  # a malformed authority ('[::1'): libvirt said what is wrong
        return ""


def _connect_error(uri: str, e: Any) -> ConnectError:
    msg = str(e.get_error_message() or e)
    low = msg.lower()
    # Non-root users on qemu:///system are authorised by polkit, over D-Bus; with neither running
    # (containers) the refusal reads as a D-Bus failure, which is still a permission problem.
    auth = e.get_error_code() in (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_CANCELLED) or (
        e.get_error_domain() in (libvirt.VIR_FROM_DBUS, libvirt.VIR_FROM_POLKIT)
    )
    if "permission denied" in low and not _host_of(uri) and urlsplit(uri).path.rstrip("/") == "/session":
        # the user's own daemon could not make its folders under $HOME: joining a group or using
        # qemu:///session (the hint below) is no answer to that (pr24b finding 15)
        return ConnectError(
            f"libvirt's session daemon cannot start for {uri}: {msg[:200]}",
            hint="it keeps its files under your home (~/.cache/libvirt, ~/.config/libvirt; $XDG_CACHE_HOME,"
            " $XDG_CONFIG_HOME, $XDG_RUNTIME_DIR): make that place writable, or point those variables at one",
        )
    if "permission denied" in low or "authentication" in low or auth:
        return ConnectError(
            f"no permission to use libvirt at {uri}",
            hint="run as root, join the 'libvirt' group, or use --connect qemu:///session",
        )
    host = _host_of(uri)
    if host:  # the daemon is on another machine: the way there failed, or nothing listens there
        over = " over SSH" if "+ssh" in urlsplit(uri).scheme else ""
        return ConnectError(
            f"cannot reach {host}{over} for {uri}: {msg[:200]}",
            hint=f"check that '{host}' is reachable{over} and runs libvirtd, and the URI's user and port",
        )
    if "no such file" in low or "connection refused" in low or "failed to connect socket" in low:
        return ConnectError(
            f"libvirt daemon is not running for {uri}",
            hint="start it ('systemctl start libvirtd', or 'libvirtd -d' and 'virtlogd -d' without systemd)",
        )
    if e.get_error_code() == libvirt.VIR_ERR_NO_CONNECT or "no connection driver" in low:
        return ConnectError(
            f"libvirt has no driver for {uri}",
            hint="install libvirt-daemon-system and qemu-system-x86, or check the URI",
        )
    return ConnectError(
        f"cannot connect to libvirt at {uri}: {msg}", hint="check --connect / $LIBVIRT_DEFAULT_URI"
    )


def is_missing_domain(e: Any) -> bool:
    return bool(e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN)
