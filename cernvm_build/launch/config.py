"""Launch settings: the original ``key=value`` files, their keys, and the precedence between them.

Precedence, as in the original ``cernvm-launch``: command line > per-create CONFIGURATION_FILE >
global ``~/.cernvm-launch.conf`` > built-in defaults (1 CPU, 2048 MB, 20000 MB). The keys are
declared once in ``KEYS``; that table drives parsing, type checks and the ``--help`` listing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigFileError, Location

GLOBAL_CONF_ENV = "CERNVM_LAUNCH_CONF"


@dataclass(frozen=True)
class Settings:
    """Everything ``create`` needs to know besides the user data; field names are snake_case keys."""

    name: str | None = None
    cpus: int = 1
    memory: int = 2048  # MB
    disk: int = 20000  # MB, the sparse scratch disk
    api_port: int = 22  # guest port that is forwarded to 127.0.0.1
    cernvm_version: str = "latest"
    shared_folder: Path | None = None
    launch_home_folder: Path | None = None
    execution_cap: int = 100  # percent of each host CPU a vCPU may use
    flags: int = 49
    disk_url: str | None = None
    disk_checksum: str | None = None
    disk_path: Path | None = None
    # Additions for libvirt.
    connect: str | None = None
    network: str = "user"  # "user" (forwarded 127.0.0.1 port) or a libvirt network name
    ssh_port: int | None = None  # host port; None picks a free one
    ssh_user: str = "root"
    profile: str | None = None
    image: str | None = None
    wait_timeout: int = 900  # seconds; TCG boots are slow
    shared_folder_driver: str = "9p"

    def merged(self, overrides: Mapping[str, Any]) -> Settings:
        """A copy with every non-None override applied (later sources win)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _abs_path(text: str) -> Path:
    path = Path(os.path.expanduser(text.strip()))
    if not path.is_absolute():
        raise ValueError("must be an absolute path")
    return path


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.strip() not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return text.strip()

    return parse


@dataclass(frozen=True)
class Key:
    field: str
    parse: Callable[[str], Any]
    help: str
    original: bool = True  # a key of the original cernvm-launch


KEYS: dict[str, Key] = {
    "name": Key("name", _text, "instance name"),
    "cpus": Key("cpus", _int(1, 512), "virtual CPUs (default 1)"),
    "memory": Key("memory", _int(64, 4 * 1024 * 1024), "memory in MB (default 2048)"),
    "disk": Key("disk", _int(100, 64 * 1024 * 1024), "scratch disk in MB, sparse (default 20000)"),
    "apiPort": Key("api_port", _int(1, 65535), "guest port reached through the forwarded port (22)"),
    "cernvmVersion": Key("cernvm_version", _text, "image version to use (latest)"),
    "sharedFolder": Key("shared_folder", _abs_path, "host folder shared with the guest"),
    "launchHomeFolder": Key("launch_home_folder", _abs_path, "where images and instances are kept"),
    "executionCap": Key("execution_cap", _int(1, 100), "percent of a host CPU each vCPU may use"),
    "flags": Key("flags", _int(0, 511), "VirtualBox-era feature bits; accepted, mostly unused"),
    "diskURL": Key("disk_url", _text, "URL of a boot image to download (with URL.sha256)"),
    "diskChecksum": Key("disk_checksum", _text, "expected sha256 of the boot image"),
    "diskPath": Key("disk_path", _abs_path, "local boot image"),
    "connect": Key("connect", _text, "libvirt URI (qemu:///system as root, else qemu:///session)", False),
    "network": Key("network", _text, "'user' (127.0.0.1 port forward) or a libvirt network", False),
    "sshPort": Key("ssh_port", _int(1, 65535), "host port forwarded to apiPort (default: a free one)", False),
    "sshUser": Key("ssh_user", _text, "user for ssh/scp (default root)", False),
    "profile": Key("profile", _text, "profile whose image to boot (e.g. demo, el7)", False),
    "image": Key("image", _text, "image path or cached image name", False),
    "waitTimeout": Key("wait_timeout", _int(1, 86400), "seconds to wait for SSH after start (900)", False),
    "sharedFolderDriver": Key("shared_folder_driver", _choice("9p", "virtiofs"), "9p or virtiofs", False),
}


def parse_conf(path: Path) -> dict[str, Any]:
    """Read one ``key=value`` file (``#`` comments); typed values keyed by Settings field name."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(
            "configuration file not found", where=str(path), hint="give an existing file"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"cannot read configuration file: {e}", where=str(path)) from None
    values: dict[str, Any] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigFileError(
                "expected key=value",
                where=Location(str(path), lineno, 1),
                hint="each line is key=value; '#' starts a comment",
            )
        spec = KEYS.get(key)
        if spec is None:
            raise ConfigFileError(
                f"unknown key '{key}'",
                where=Location(str(path), lineno, 1, key),
                hint="known keys: " + ", ".join(KEYS),
            )
        try:
            values[spec.field] = spec.parse(value)
        except ValueError as e:
            col = raw.index("=") + 2
            raise ConfigFileError(
                f"bad value {value.strip()!r}: {e}", where=Location(str(path), lineno, col, key)
            ) from None
    return values


def global_conf_path() -> Path:
    env = os.environ.get(GLOBAL_CONF_ENV)
    return Path(env) if env else Path.home() / ".cernvm-launch.conf"


def resolve(
    cli: Mapping[str, Any] | None = None,
    create_file: Path | None = None,
    global_file: Path | None = None,
) -> Settings:
    """Settings after precedence: ``cli`` > ``create_file`` > ``global_file`` (if it exists) > defaults."""
    settings = Settings()
    gpath = global_file if global_file is not None else global_conf_path()
    if gpath.exists():
        settings = settings.merged(parse_conf(gpath))
    if create_file is not None:
        settings = settings.merged(parse_conf(create_file))
    return settings.merged(cli or {})


def keys_help() -> str:
    """The configuration keys, for ``--help``."""
    width = max(len(k) for k in KEYS)
    lines = [f"  {k:<{width}}  {spec.help}" for k, spec in KEYS.items()]
    return "configuration keys (~/.cernvm-launch.conf and CONFIGURATION_FILE, key=value):\n" + "\n".join(
        lines
    )
