"""Launch settings: the original ``key=value`` files, their keys, and the precedence between them.

Precedence, as in the original ``cernvm-launch``: command line > per-create CONFIGURATION_FILE >
global ``~/.cernvm-launch.conf`` > built-in defaults (1 CPU, 2048 MB, 20000 MB). The keys are
declared once in ``KEYS``, in the one settings type (``cernvm_build.table``); that table drives
parsing, ranges and units (``memory=4G``), the ``--help`` listing and the ``create`` flags, which go
through the same conversions (``--memory -5`` is refused like ``memory=-5``, naming the flag).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from .. import paths, table
from ..errors import ConfigFileError, ImageError, InputMissing, Location, UsageError
from ..fsutil import NotRegularFile, open_regular
from ..table import Kind, Setting, by_key
from .names import USER_PATTERN, image_name

GLOBAL_CONF_ENV = "CERNVM_LAUNCH_CONF"
#: less memory than this does not boot a μCernVM image (the kernel, initrd and CernVM-FS cache need it)
MIN_MEMORY = 256


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
    # ``image`` came from a per-create file: only a cached image's name, never a file in the caller's
    # folder (``image=.netrc`` would boot that file as the disk); images.resolve honours it.
    image_cached_only: bool = False
    # ``disk_url`` came from a per-create file: only an image already pulled from that URL is booted;
    # the host never fetches a URL a handed file names (it would reach hosts the user can, as the user)
    disk_url_cached_only: bool = False
    wait_timeout: int = 900  # seconds; TCG boots are slow
    shared_folder_driver: str = "auto"  # virtiofs on system daemons, 9p on session ones (create.py)
    image_indexes: tuple[str, ...] = ()  # release index.json URLs that 'images pull NAME' searches
    release_keys: tuple[Path, ...] = ()  # OpenPGP public keys a release's SHA256SUMS must be signed by
    storage_pool: str = "cernvm-launch"  # libvirt pool on a remote hypervisor for the disks
    seed: Path | None = None  # a pre-warmed scratch disk (qcow2) backing the instance's own (launch/seed.py)

    def merged(self, overrides: Mapping[str, Any]) -> Settings:
        """A copy with every non-None override applied (later sources win)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


DEFAULTS = Settings()

#: The keys of the original's config files (camelCase) and launch's own, in the one settings type.
#: ``flag`` is the command-line spelling where ``create``/``import`` take the setting as a flag too.
KEYS: tuple[Setting, ...] = (
    Setting("name", Kind.STR, "instance name", default=None, nullable=True, flag="--name", metavar="NAME"),
    Setting("cpus", Kind.INT, "virtual CPUs", default=DEFAULTS.cpus, minimum=1, maximum=512, flag="--cpus",
            metavar="N"),
    Setting("memory", Kind.SIZE, "memory", default=DEFAULTS.memory, unit="M", minimum=MIN_MEMORY,
            maximum=4 << 20, flag="--memory", example="4G"),
    Setting("disk", Kind.SIZE, "scratch disk, sparse", default=DEFAULTS.disk, unit="M", minimum=100,
            maximum=64 << 20, flag="--disk", example="20G"),
    Setting("apiPort", Kind.INT, "guest port reached through the forwarded port", default=DEFAULTS.api_port,
            minimum=1, maximum=65535, field="api_port"),
    Setting("cernvmVersion", Kind.STR, "image version to use", default=DEFAULTS.cernvm_version,
            field="cernvm_version"),
    Setting("sharedFolder", Kind.PATH, "host folder shared with the guest", default=None, nullable=True,
            field="shared_folder", flag="--sharedFolder", metavar="PATH"),
    Setting("launchHomeFolder", Kind.PATH, "where images and instances are kept", default=None,
            nullable=True, field="launch_home_folder"),
    Setting("executionCap", Kind.INT, "percent of a host CPU each vCPU may use",
            default=DEFAULTS.execution_cap, minimum=1, maximum=100, field="execution_cap"),
    Setting("flags", Kind.INT, "VirtualBox-era feature bits; accepted, mostly unused", default=DEFAULTS.flags,
            minimum=0, maximum=511),
    Setting("diskURL", Kind.URL, "URL of a boot image to download (with URL.sha256)", default=None,
            nullable=True, field="disk_url"),
    Setting("diskChecksum", Kind.STR, "expected sha256 of the boot image", default=None, nullable=True,
            pattern="[0-9a-f]{64}", pattern_help="64 lower-case hex digits", field="disk_checksum"),
    Setting("diskPath", Kind.PATH, "local boot image", default=None, nullable=True, field="disk_path"),
    # -- launch's own ----------------------------------------------------------------------------
    Setting("connect", Kind.STR, "libvirt URI (qemu:///system as root, else qemu:///session)",
            default=None, nullable=True, pattern=r"[a-z0-9+]+:///?\S*", pattern_help="a libvirt URI",
            example="qemu:///session"),
    # a network name goes into the domain XML: a control character was libvirt's "PCDATA invalid
    # Char" about line 11 of a document the user never saw; libvirt's names have no '/'
    Setting("network", Kind.STR, "'user' (127.0.0.1 port forward) or a libvirt network",
            default=DEFAULTS.network, flag="--network", metavar="user|NET",
            pattern="[^/\x00-\x1f\x7f-\x9f]{1,200}", pattern_help="a libvirt network's name"),
    Setting("sshPort", Kind.INT, "host port forwarded to apiPort (default: a free one)", default=None,
            nullable=True, minimum=1, maximum=65535, field="ssh_port", flag="--ssh-port", metavar="PORT"),
    Setting("sshUser", Kind.STR, "user for ssh/scp", default=DEFAULTS.ssh_user, field="ssh_user",
            flag="--user", metavar="USER", pattern=USER_PATTERN, pattern_help="a user name"),
    Setting("profile", Kind.STR, "profile whose image to boot (e.g. demo, el7)", default=None, nullable=True,
            flag="--profile", metavar="NAME"),
    Setting("image", Kind.STR, "image path or cached image name", default=None, nullable=True,
            flag="--image", metavar="PATH|NAME"),
    Setting("waitTimeout", Kind.DURATION, "time to wait for SSH after start", default=DEFAULTS.wait_timeout,
            minimum=1, maximum=86400, field="wait_timeout", flag="--timeout", example="15m"),
    Setting("sharedFolderDriver", Kind.STR, "shared folder transport (auto: system virtiofs, session 9p)",
            default=DEFAULTS.shared_folder_driver, choices=("auto", "9p", "virtiofs"),
            field="shared_folder_driver"),
    Setting("imageIndexes", Kind.LIST_URL, "release index.json URLs 'images pull NAME' searches, in order",
            default=(), field="image_indexes", example="https://example.org/releases/2026.11-1/index.json"),
    Setting("releaseKeys", Kind.LIST_PATH, "OpenPGP public keys that sign the releases' SHA256SUMS",
            default=(), field="release_keys", example="/etc/cernvm/release-key.asc"),
    Setting("storagePool", Kind.STR, "libvirt storage pool for the disks on a remote hypervisor (made when "
            "missing)", default=DEFAULTS.storage_pool, field="storage_pool",
            pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*", pattern_help="a pool name"),
    Setting("seed", Kind.PATH, "pre-warmed scratch disk ('cernvm-build image seed') backing the instance's "
            "scratch disk, read-only; uploaded once into a remote hypervisor's pool", default=None,
            nullable=True, flag="--seed",
            metavar="SEED.qcow2"),
)  # fmt: skip

BY_KEY: dict[str, Setting] = by_key(KEYS)


def _typed(s: Setting, text: str | list[str]) -> Any:
    """The table's conversion; paths made absolute (a config file's relative path is refused)."""
    value = table.from_text(s, text)
    if s.kind is Kind.PATH and value is not None:
        return _absolute(value)
    if s.kind is Kind.LIST_PATH and value is not None:
        # each as a single path: releaseKeys=~/key.asc was looked for in a folder named '~', and a
        # relative key was whichever file of that name the working folder held (trusted as a signer)
        return tuple(_absolute(v) for v in value)
    return value


def _absolute(value: str) -> Path:
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        raise table.Invalid(f"{value!r} is not an absolute path", "write the full path, e.g. /srv/data")
    return path


def from_flags(given: Iterable[tuple[Setting, str | list[str]]]) -> dict[str, Any]:
    """Typed values of the flags given, keyed by Settings field; a bad one is a usage error naming it.

    Relative paths on the command line are relative to the working directory, as usual. A path flag
    names an input (``--sharedFolder``, ``--seed``): one that is not there is exit 2 as the line is
    parsed (``cli.inputs``), not exit 8 after the image was resolved and verified.
    """
    values: dict[str, Any] = {}
    for s, text in given:
        if s.kind is Kind.PATH and isinstance(text, str) and text.strip():
            if not os.path.lexists(os.path.expanduser(text.strip())):
                raise InputMissing(text)
            text = str(Path(os.path.expanduser(text.strip())).resolve())
        try:
            values[s.name] = _typed(s, text)
        except table.Invalid as e:
            raise UsageError(
                e.message, where=s.flag, hint=e.hint or "see 'cernvm-launch create --help'"
            ) from None
    return values


MAX_CONF = 1 << 20  # bytes: a configuration file is a few lines
# The only connect= query parameters a per-create CONFIGURATION_FILE (which someone may have handed
# over) may set: they name the daemon, its socket or the known_hosts file, none runs a program, picks
# a login key, a TLS CA or an auth method, or skips the host key check (command, keyfile, no_verify,
# known_hosts_verify, pkipath, sshauth, netcat, proxy...). The user's own global file and the command
# line may set any, as ~/.ssh/config may name a ProxyCommand.
_CONNECT_HANDED_OK = frozenset({"name", "socket", "mode", "no_tty", "known_hosts"})
# Keys that reach the host's files, keys or trust: a handed file may not set them (sharedFolder would
# give the guest read-write access to ~, diskPath/seed a host file as a disk, releaseKeys and
# imageIndexes decide which releases are trusted, launchHomeFolder where keys and instances live).
_HOST_SIDE_KEYS = ("sharedFolder", "launchHomeFolder", "releaseKeys", "imageIndexes", "diskPath", "seed")


def connect_params(uri: str) -> list[str]:
    """The parameter names of ``uri``'s query as libvirt reads them (virURIParseParams): split on
    ``&`` and ``;``, ``+`` and %-escapes decoded, case folded. Everything after the first ``?`` counts
    (a ``#`` included), so no spelling hides a parameter from the check."""
    _, sep, query = uri.partition("?")
    names = []
    for chunk in re.split(r"[&;]", query) if sep else []:
        name = unquote_plus(chunk.partition("=")[0]).strip().casefold()
        if name:
            names.append(name)
    return names


def _looks_like_path(name: str) -> bool:
    # imported here: the profile package loads cryptography, which `cernvm-launch --help` must not
    from ..profile.resolve import looks_like_path

    return looks_like_path(name)


def _refused_from_handed(spec: Setting, value: Any) -> str:
    """Why a per-create file may not set ``spec`` to ``value`` ('' if it may)."""
    if spec.key in _HOST_SIDE_KEYS:
        return "not taken from a per-create file (it reaches this host's files or trust)"
    if spec.name == "image" and value:
        try:
            image_name(value, "")
        except ImageError:
            return "not a cached image's name: not taken from a per-create file (a file is the host's)"
    if spec.name == "profile" and value and _looks_like_path(value):
        return "a profile file is not taken from a per-create file (only a profile name)"
    if spec.name == "connect" and value:
        bad = [n for n in connect_params(value) if n not in _CONNECT_HANDED_OK]
        if bad:
            names = ", ".join(repr(n + "=") for n in dict.fromkeys(bad))
            ok = ", ".join(sorted(_CONNECT_HANDED_OK))
            return f"URI parameters {names} not taken from a per-create file (only {ok})"
    return ""


def _private_group(gid: int, owner: int) -> bool:
    """Whether group ``gid`` has exactly one member, this user, who owns the file (OpenSSH's
    ``secure_permissions``): the user-private group umask 002 gives files on Fedora, RHEL and
    Ubuntu, so a group-writable file in it is writable by no one else."""
    import grp  # deliberate lazy imports: only a group-writable file asks
    import pwd

    uid = os.geteuid()
    try:
        members = grp.getgrgid(gid).gr_mem
        owner_name = pwd.getpwuid(owner).pw_name
    except KeyError:
        return False
    primary = [p.pw_uid for p in pwd.getpwall() if p.pw_gid == gid]
    if any(u != uid for u in primary) or members not in ([], [owner_name]):
        return False
    return bool(primary or members)


def _read_conf(path: Path) -> str:
    """The file's text, if it is one this user may trust (OpenSSH's rule for its config: owned by
    the user or root, writable by no one else) and a regular file (``open_regular``: a FIFO is
    refused rather than waited on) of at most MAX_CONF bytes."""
    try:
        f = open_regular(path)
    except FileNotFoundError:
        raise ConfigFileError(
            "configuration file not found", where=str(path), hint="give an existing file"
        ) from None
    except NotRegularFile:
        raise ConfigFileError(
            "configuration file is not a regular file", where=str(path), hint="give a key=value file"
        ) from None
    except OSError as e:
        raise ConfigFileError(
            f"cannot read configuration file: {e.strerror}", where=str(path), hint="check its permissions"
        ) from None
    with f:
        st = os.fstat(f.fileno())
        problem = (
            f"is owned by another user (uid {st.st_uid})"
            if st.st_uid not in (os.geteuid(), 0)
            else "is writable by other users"
            if st.st_mode & 0o002 or (st.st_mode & 0o020 and not _private_group(st.st_gid, st.st_uid))
            else ""
        )
        if problem:
            raise ConfigFileError(
                f"configuration file {problem}",
                where=str(path),
                hint="it must be your own (or root's) and writable by no one else (a group only if it is"
                " yours alone): 'chmod go-w' it",
            )
        try:
            data = f.read(MAX_CONF + 1)
        except OSError as e:
            raise ConfigFileError(f"cannot read configuration file: {e.strerror}", where=str(path)) from None
    if len(data) > MAX_CONF:
        raise ConfigFileError(
            f"configuration file is larger than {MAX_CONF >> 20} MiB",
            where=str(path),
            hint="give a key=value file",
        )
    try:
        # utf-8-sig: an editor's byte-order mark was part of the first key ("unknown key '\ufeffcpus'")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        where = Location(str(path), line)
        raise ConfigFileError(
            f"byte 0x{data[e.start]:02x} is not UTF-8", where=where, hint="save it as UTF-8"
        ) from None


def parse_conf(path: Path, *, handed: bool = False) -> dict[str, Any]:
    """Read one ``key=value`` file (``#`` comments); typed values keyed by Settings field name.
    ``handed``: a per-create file, which may not set host-side keys nor a ``connect=`` that runs a
    program or chooses keys (``_refused_from_handed``)."""
    text = _read_conf(path)
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
        spec = BY_KEY.get(key)
        if spec is None:
            raise ConfigFileError(
                f"unknown key '{key}'{table.suggest(key, list(BY_KEY))}",
                where=Location(str(path), lineno, 1, key),
                hint="known keys: " + ", ".join(BY_KEY),
            )
        try:
            values[spec.name] = _typed(spec, value)
        except table.Invalid as e:
            col = raw.index("=") + 2
            raise ConfigFileError(
                e.message, where=Location(str(path), lineno, col, key), hint=e.hint
            ) from None
        refused = _refused_from_handed(spec, values[spec.name]) if handed else ""
        if refused:
            raise ConfigFileError(
                refused,
                where=Location(str(path), lineno, raw.index("=") + 2, key),
                hint="if you mean it, put it in your own ~/.cernvm-launch.conf"
                + (
                    f" or pass {spec.flag}" if spec.flag else " or pass --connect" if key == "connect" else ""
                ),
            )
    if handed and values.get("image"):
        values["image_cached_only"] = True
    if handed and values.get("disk_url"):
        values["disk_url_cached_only"] = True
    return values


def global_conf_path() -> Path:
    env = os.environ.get(GLOBAL_CONF_ENV)
    return Path(env) if env else paths.home() / ".cernvm-launch.conf"


def resolve(
    cli: Mapping[str, Any] | None = None,
    create_file: Path | None = None,
    global_file: Path | None = None,
) -> Settings:
    """Settings after precedence: ``cli`` > ``create_file`` > ``global_file`` (if it exists) > defaults."""
    settings = Settings()
    gpath = global_file if global_file is not None else global_conf_path()
    try:
        present = gpath.exists()
        dangling = not present and gpath.is_symlink()
    except OSError as e:  # e.g. a home folder this user may not enter
        raise ConfigFileError(f"cannot read configuration file: {e.strerror}", where=str(gpath)) from None
    if dangling:
        # a link to a file on a disk not mounted, or a loop: its settings were left out in silence
        raise ConfigFileError(
            "configuration file is a symbolic link to nothing (or a loop)",
            where=str(gpath),
            hint="point the link at the file, or remove it",
        )
    if present:
        settings = settings.merged(parse_conf(gpath))
    if create_file is not None:
        settings = settings.merged(parse_conf(create_file, handed=True))
    settings = settings.merged(cli or {})
    if (cli or {}).get("image") is not None:  # the user's own --image may name a file
        settings = dataclasses.replace(settings, image_cached_only=False)
    return settings


def keys_help() -> str:
    """The configuration keys, for ``--help``."""
    width = max(len(s.key) for s in KEYS)
    lines = []
    for s in KEYS:
        default = f" (default {table.render(s, s.default)})" if s.default not in (None, "") else ""
        rule = table.allowed_text(s, files=False).replace("`", "")
        lines.append(f"  {s.key:<{width}}  {s.help}{default}{'; ' + rule if rule else ''}")
    return "configuration keys (~/.cernvm-launch.conf and CONFIGURATION_FILE, key=value):\n" + "\n".join(
        lines
    )
