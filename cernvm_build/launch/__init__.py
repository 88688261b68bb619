"""cernvm-launch: CernVM instances on libvirt (see docs/ARCHITECTURE.md, section "launch").

The public API is re-exported here from ``api`` (calls), ``create`` (what to create), ``host`` (the
hypervisor) and ``images``; the CLI and the demo use nothing else.
"""

from __future__ import annotations

import libvirt

# libvirt prints every error to stderr by default; launch turns the ones that matter into one-line
# LaunchErrors and probes (lookups of names that may not exist) must stay quiet.
libvirt.registerErrorHandler(lambda ctx, err: None, None)

from .api import (  # noqa: E402 - the handler above must be in place before any libvirt call
    add_forward,
    address,
    console_tail,
    create_instance,
    destroy,
    forward_command,
    get_instance,
    image_cache,
    import_ova,
    is_active,
    list_instances,
    openssh_argv,
    pause,
    remove_image,
    scp,
    ssh_capture,
    ssh_interactive,
    ssh_run,
    start,
    stop,
    wait_ready,
)
from .connection import default_uri  # noqa: E402
from .create import STEPS, InstanceSpec, default_user_data, home_for  # noqa: E402
from .forward import parse as parse_forward  # noqa: E402
from .host import Host, connect  # noqa: E402
from .instances import Instance  # noqa: E402
from .ready import BootFailedError  # noqa: E402
from .remote import CommandResult  # noqa: E402

__all__ = [
    "STEPS",
    "BootFailedError",
    "CommandResult",
    "Host",
    "Instance",
    "InstanceSpec",
    "add_forward",
    "address",
    "connect",
    "console_tail",
    "create_instance",
    "default_uri",
    "default_user_data",
    "destroy",
    "forward_command",
    "get_instance",
    "home_for",
    "image_cache",
    "import_ova",
    "is_active",
    "list_instances",
    "openssh_argv",
    "parse_forward",
    "pause",
    "remove_image",
    "scp",
    "ssh_capture",
    "ssh_interactive",
    "ssh_run",
    "start",
    "stop",
    "wait_ready",
]
