"""launch's public API: everything ``cernvm-launch`` (and the demo) does, as typed calls.

Each call takes a ``Host`` (a libvirt connection and its accelerator; tests pass one on libvirt's
test driver) and returns data, never prints. libvirt errors nobody expected still become one-line
``LaunchError``s here, so no caller needs to know libvirt's exception type.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

import libvirt

from ..errors import LaunchError
from ..report import NULL_REPORTER, Reporter
from . import config, copy, create, forward, images, instances, ready, remote, ssh, storage, tunnel
from .host import Host

P = ParamSpec("P")
R = TypeVar("R")


def _one_line(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except libvirt.libvirtError as e:
            raise LaunchError(
                f"libvirt: {e.get_error_message()}", hint="run again with -vv for details"
            ) from None
        except SystemError as e:
            # Ctrl-C (or SIGTERM) delivered while libvirt ran our error callback inside one of its
            # calls: libvirt-python reports it as a SystemError caused by the interrupt. It is the
            # interrupt (exit 130 after the undo), not a crash.
            if isinstance(e.__cause__, KeyboardInterrupt):
                raise e.__cause__ from None
            raise

    return call


@_one_line
def create_instance(
    spec: create.InstanceSpec, *, host: Host, reporter: Reporter = NULL_REPORTER
) -> instances.Instance:
    return create.create_instance(spec, host=host, reporter=reporter)


@_one_line
def list_instances(host: Host, *, running_only: bool = False) -> list[instances.Instance]:
    return instances.list_instances(host.conn, running_only=running_only)


@_one_line
def get_instance(host: Host, name: str) -> instances.Instance:
    return instances.get(host.conn, name)[1]


@_one_line
def is_active(host: Host, name: str) -> bool:
    return bool(instances.get(host.conn, name)[0].isActive())


@_one_line
def start(host: Host, name: str, *, fresh: bool = False) -> instances.Instance:
    inst = instances.start(host.conn, name, fresh=fresh)
    if inst.state == "running":
        forward.reapply(host.conn.lookupByName(name))
    return inst


@_one_line
def add_forward(host: Host, name: str, host_port: int, guest_port: int) -> instances.Instance:
    """Forward 127.0.0.1:host_port to the instance's guest_port, now and on every later boot."""
    return forward.add(host.conn, name, (host_port, guest_port))


@_one_line
def stop(host: Host, name: str, *, mode: str = "save") -> instances.Instance:
    return instances.stop(host.conn, name, mode=mode)


@_one_line
def pause(host: Host, name: str) -> instances.Instance:
    return instances.pause(host.conn, name)


@_one_line
def destroy(host: Host, name: str, *, force: bool = False, home: Path) -> Path | None:
    """``home``: the launch home (``home_for``, as ``create`` used); returns a folder left in place (not the
    instance's own folder under it)."""
    return instances.destroy(host.conn, name, force=force, home=home)


@_one_line
def console_tail(host: Host, name: str, lines: int = 25) -> str:
    """The last ``lines`` of the serial console log (also from a remote hypervisor's pool)."""
    return instances.console_tail(host.conn, get_instance(host, name), lines)


@_one_line
def forward_command(host: Host, name: str, host_port: int) -> list[str] | None:
    """On a remote hypervisor, the ``ssh -L`` that brings its 127.0.0.1:host_port here; else None."""
    hop = tunnel.hop_of(host.uri)
    return hop.local_forward(host_port, host_port) if hop else None


@_one_line
def address(host: Host, name: str) -> tuple[str, int] | None:
    return instances.address(host.conn, name)


@_one_line
def wait_ready(
    host: Host,
    name: str,
    *,
    timeout: float,
    reporter: Reporter = NULL_REPORTER,
    user: str | None = None,
    remove_on_failure: Path | None = None,
    home: Path | None = None,
) -> ssh.Target:
    """Until SSH answers (``home``: the launch home, whose instance folder must be the one on record);
    ``ready.BootFailedError`` within seconds when the console shows a panic
    (the instance is then destroyed when ``remove_on_failure`` names its launch home, ``home_for``)."""
    return ready.wait(
        host.conn,
        name,
        timeout=timeout,
        phase=reporter.step,
        user=user,
        remove_on_failure=remove_on_failure,
        home=home,
    )


@_one_line
def ssh_run(
    host: Host,
    target: str,
    command: Sequence[str],
    *,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
    home: Path | None = None,
) -> int:
    """``home``: the launch home (``home_for``), whose instance folder must be the one on record."""
    return remote.run(host.conn, target, list(command), stdin=stdin, stdout=stdout, stderr=stderr, home=home)


@_one_line
def ssh_capture(
    host: Host, target: str, command: Sequence[str], *, home: Path | None = None
) -> remote.CommandResult:
    return remote.capture(host.conn, target, list(command), home=home)


@_one_line
def ssh_interactive(host: Host, target: str, command: Sequence[str] = (), *, home: Path | None = None) -> int:
    return remote.interactive(host.conn, target, list(command), home=home)


@_one_line
def openssh_argv(
    host: Host,
    target: str,
    command: Sequence[str],
    *,
    x11: str | None = None,
    tty: bool | None = None,
    home: Path | None = None,
) -> list[str]:
    """OpenSSH's own client for ``[user@]NAME``, with the instance's key and pinned host key."""
    return remote.openssh_argv(host.conn, target, list(command), x11=x11, tty=tty, home=home)


@_one_line
def scp(
    host: Host, source: str | Sequence[str], dest: str, *, recursive: bool = False, home: Path | None = None
) -> list[str]:
    """Copy SOURCE(s) to DEST as scp does (``[user@]NAME:PATH`` on one side); where they landed."""
    sources = [source] if isinstance(source, str) else list(source)
    return copy.copy(host.conn, sources, dest, recursive=recursive, home=home)


# -- images -----------------------------------------------------------------------------------------


def image_cache(settings: config.Settings, uri: str) -> images.ImageCache:
    return images.ImageCache(create.home_for(settings, uri))


def import_ova(host: Host, settings: config.Settings, ova: Path) -> images.Image:
    """The boot disk of an OVA appliance (checked against its manifest) as a cached hdd image."""
    return image_cache(settings, host.uri).add_ova(ova)


@_one_line
def remove_image(host: Host, cache: images.ImageCache, name: str, *, pool: str = "") -> None:
    """Remove a cached image unless an instance boots from it; on a remote hypervisor also its copy
    in the storage pool ``pool`` (kept there after the last instance that booted it, so the next
    create does not upload it again)."""
    image = cache.get(name)
    users = [
        i.name
        for i in instances.list_instances(host.conn)
        if image is not None
        and i.meta
        and (Path(i.meta.image) == image.path or (i.meta.pool and i.meta.image_sha256 == image.sha256))
    ]
    cache.remove(name, in_use_by=users)
    if image is not None and pool and host.remote:
        found = instances.pool_of(host.conn, pool)
        if found is not None:
            storage.delete(found, storage.image_volumes(storage.image_volume_name(name, image.sha256)))
