"""cernvm-launch: CernVM instances on libvirt (see docs/ARCHITECTURE.md, section "launch").

The public API is re-exported here from ``api`` (calls), ``create`` (what to create), ``host`` (the
hypervisor) and ``images``; the CLI and the demo use nothing else. The re-exports are imported on
first use (PEP 562): ``cernvm_build.launch.config`` — the settings table `cernvm-build image seed`
reads for its ``--disk`` — must import without the 'launch' extra (libvirt, paramiko), and a command
should not pay for paramiko, cryptography or libvirt before it needs them (``cernvm-launch --help``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import (
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
    from .connection import default_uri
    from .create import STEPS, InstanceSpec, default_user_data, home_for
    from .forward import parse as parse_forward
    from .host import Host, connect
    from .instances import Instance
    from .ready import BootFailedError
    from .remote import CommandResult

#: re-export -> (submodule, name)
_WHERE = {
    "add_forward": ("api", "add_forward"),
    "address": ("api", "address"),
    "console_tail": ("api", "console_tail"),
    "create_instance": ("api", "create_instance"),
    "destroy": ("api", "destroy"),
    "forward_command": ("api", "forward_command"),
    "get_instance": ("api", "get_instance"),
    "image_cache": ("api", "image_cache"),
    "import_ova": ("api", "import_ova"),
    "is_active": ("api", "is_active"),
    "list_instances": ("api", "list_instances"),
    "openssh_argv": ("api", "openssh_argv"),
    "pause": ("api", "pause"),
    "remove_image": ("api", "remove_image"),
    "scp": ("api", "scp"),
    "ssh_capture": ("api", "ssh_capture"),
    "ssh_interactive": ("api", "ssh_interactive"),
    "ssh_run": ("api", "ssh_run"),
    "start": ("api", "start"),
    "stop": ("api", "stop"),
    "wait_ready": ("api", "wait_ready"),
    "default_uri": ("connection", "default_uri"),
    "STEPS": ("create", "STEPS"),
    "InstanceSpec": ("create", "InstanceSpec"),
    "default_user_data": ("create", "default_user_data"),
    "home_for": ("create", "home_for"),
    "Host": ("host", "Host"),
    "connect": ("host", "connect"),
    "Instance": ("instances", "Instance"),
    "BootFailedError": ("ready", "BootFailedError"),
    "CommandResult": ("remote", "CommandResult"),
    "parse_forward": ("forward", "parse"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


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
