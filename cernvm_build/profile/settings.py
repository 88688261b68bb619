"""The table of profile settings (instances of the one settings type, ``cernvm_build.table``).

Each ``Setting`` declares a key once: its type, default, allowed values, help and command-line flag.
Parsing, validation, defaults, the typed model (``model.py``'s dataclasses are filled from it by
``build``), ``cernvm-build profiles schema`` (JSON Schema), the reference page and the override flags
of ``image``/``profiles`` are all derived from ``SETTINGS`` and ``SECTIONS``; nothing else lists keys.
"""

from __future__ import annotations

from typing import Any

from ..table import REQUIRED, Kind, Setting, aliases, by_key

__all__ = [
    "ALIASES",
    "BY_KEY",
    "REQUIRED",
    "SECTIONS",
    "SETTINGS",
    "Kind",
    "Setting",
    "children",
    "default_of",
]


IMAGE_FORMATS = ("iso", "hdd", "qcow2", "vmdk", "vdi", "vhd")
CONTAINER_FORMATS = ("oci", "docker-archive", "apptainer", "thin", "cvmfs")

#: the profile format this cernvm-build writes and reads; older files are upgraded (``upgrade.py``)
FORMAT = 1


#: mappings that group settings; the help text heads their part of the reference
SECTIONS: dict[str, str] = {
    "": "Top-level keys.",
    "os": "The operating system whose root tree the repository serves.",
    "cvmfs": "The CernVM-FS repository that serves the root tree, and where to get it from.",
    "cvmfs.snapshot": (
        "Which revision of the repository to mount. Set at most one of `tag`, `date`, `root_hash`; "
        "none means the newest revision."
    ),
    "bootloader": "The μCernVM bootloader: its version and the kernel command line.",
    "kernel": (
        "The kernel the bootloader carries: a Debian kernel package, or a `vmlinuz` plus its `modules` tree."
    ),
    "image": "Boot images to produce.",
    "container": "Reference containers to produce from the same root tree.",
    "preservation": "Long-term preservation: what must never change, and what must be proven.",
}

FQRN_PATTERN = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?){2,}"
ROOT_HASH_PATTERN = r"[0-9a-f]{40}(-rmd160|-shake128)?"
DATE_PATTERN = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "format",
        Kind.INT,
        f"Version of the profile format the file is written in. A file without it is read as format 1; "
        f"older formats are upgraded when read, newer ones are refused. Never inherited (each file "
        f"says its own). This cernvm-build reads formats 1..{FORMAT}.",
        default=FORMAT,
        minimum=1,
        maximum=FORMAT,
        inherit=False,
        example=str(FORMAT),
    ),
    Setting(
        "name",
        Kind.STR,
        "Profile name, shown in listings and used in artifact names. Defaults to the file name "
        "without `.yaml`; never inherited.",
        default=None,
        pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*",
        pattern_help="letters, digits, '.', '_' or '-', starting with a letter or digit",
        inherit=False,
        example="el9",
    ),
    Setting(
        "abstract",
        Kind.BOOL,
        "A building block for other profiles (like `base`): never built or listed, and checked only "
        "for known keys and types. Never inherited.",
        default=False,
        inherit=False,
    ),
    Setting("description", Kind.STR, "One line saying what the platform is for.", default=""),
    Setting(
        "extends",
        Kind.LIST_STR,
        "Parent profiles (names or paths), merged in order before this file: scalars override, "
        "mappings merge, lists append (`!replace` replaces). A single name may be given as a string.",
        default=[],
        single_ok=True,
        inherit=False,
        example="[base]",
    ),
    # -- os --------------------------------------------------------------------------------------
    Setting(
        "os.family",
        Kind.STR,
        "OS family: `el` (Enterprise Linux, releases 4..9) or `debian` (releases 10..13).",
        default="el",
        choices=("el", "debian"),
    ),
    Setting(
        "os.release",
        Kind.INT,
        "Major release of the OS (the family's checks narrow it: EL 4..9, Debian 10..13).",
        minimum=4,
        maximum=13,
        example="7",
    ),
    Setting(
        "os.distribution",
        Kind.STR,
        "Distribution name (`Demo`: the toolkit's own minimal busybox userland that `make run` publishes; "
        "`Debian` goes with the `debian` family, the others with `el`).",
        choices=("SLC", "SL", "CentOS", "CC", "RHEL", "AlmaLinux", "Rocky", "Demo", "Debian"),
        example="SL",
    ),
    Setting(
        "os.arch",
        Kind.STR,
        "CPU architecture.",
        default="x86_64",
        choices=("x86_64",),
        unsupported=(("aarch64", "the μCernVM initrd and its busybox are built for x86-64 only"),),
    ),
    # -- cvmfs -----------------------------------------------------------------------------------
    Setting(
        "cvmfs.repository",
        Kind.STR,
        "Fully qualified repository name (FQRN).",
        pattern=FQRN_PATTERN,
        pattern_help="a fully qualified repository name like 'name.domain.tld' (lower case)",
        example="cernvm-prod.cern.ch",
    ),
    Setting(
        "cvmfs.servers",
        Kind.LIST_URL,
        "Stratum-1 base URLs; `@fqrn@` stands for the repository name. Tried in order.",
        unique=True,
        pattern_help="the server's base URL, e.g. http://cvmfs-stratum-one.cern.ch/cvmfs/@fqrn@",
        example="[http://cvmfs-stratum-one.cern.ch/cvmfs/@fqrn@]",
        flag="--server",
        metavar="URL",
    ),
    Setting(
        "cvmfs.path",
        Kind.STR,
        "Directory inside the repository that is the OS root (`/` for the whole repository).",
        default="/",
        pattern=r"/|(/[A-Za-z0-9._-]+)+",
        pattern_help="an absolute path like '/cvm4' without '..' or a trailing '/'",
        example="/cvm4",
    ),
    Setting(
        "cvmfs.public_keys",
        Kind.LIST_PATH,
        "PEM public keys (`BEGIN PUBLIC KEY`) that may sign the repository's whitelist; relative "
        "paths are relative to the profile file that names them.",
        unique=True,
        example="[keys/cern-it1.cern.ch.pub]",
    ),
    Setting(
        "cvmfs.http_proxy",
        Kind.STR,
        "`CVMFS_HTTP_PROXY`: proxies in CernVM-FS syntax (`|` load-balance, `;` fail-over), or `DIRECT`.",
        default="DIRECT",
    ),
    Setting(
        "cvmfs.snapshot.tag",
        Kind.STR,
        "A named snapshot. Rolling tags (`trunk`, `HEAD`, `HEAD4`) move: they do not pin.",
        default=None,
        nullable=True,
        pattern=r"[A-Za-z0-9][A-Za-z0-9._+-]*",
        pattern_help="a CernVM-FS tag name (letters, digits, '.', '_', '+', '-')",
        example="HEAD4",
    ),
    Setting(
        "cvmfs.snapshot.date",
        Kind.STR,
        "A point in time (UTC): the newest revision published at or before it.",
        default=None,
        nullable=True,
        pattern=DATE_PATTERN,
        pattern_help="YYYY-MM-DDTHH:MM:SSZ (UTC), e.g. 2019-06-30T00:00:00Z",
        example="2019-06-30T00:00:00Z",
    ),
    Setting(
        "cvmfs.snapshot.root_hash",
        Kind.STR,
        "The root catalog hash of one revision (what the manifest's `C` line says).",
        default=None,
        nullable=True,
        pattern=ROOT_HASH_PATTERN,
        pattern_help="40 lower-case hex digits, optionally with '-rmd160' or '-shake128'",
    ),
    Setting(
        "cvmfs.blacklist",
        Kind.PATH,
        "A certificate blacklist (`/etc/cvmfs/blacklist`'s format: fingerprints of revoked signing "
        "certificates, `<REPOSITORY N` revision floors; relative to the profile file). The image's "
        "initrd carries it and its mount refuses what it lists (user data `cvmfs_blacklist` can add "
        "entries, never remove them); the build's own reads of the repository apply it too, and only "
        "it: the host's `/etc/cvmfs/blacklist` is not read for an image (name it here to carry it).",
        default=None,
        nullable=True,
        example="blacklist",
        flag="--blacklist",
        metavar="FILE",
    ),
    # -- bootloader ------------------------------------------------------------------------------
    Setting(
        "bootloader.branch",
        Kind.STR,
        "Bootloader branch, part of image names (`ucernvm-<branch>.<version>-<release>...`).",
        pattern=r"[a-z0-9][a-z0-9_-]{0,31}",
        pattern_help="up to 32 lower-case letters, digits, '_' or '-'",
        example="v4prod",
    ),
    Setting(
        "bootloader.version",
        Kind.STR,
        "Bootloader version, `YYYY.MM`.",
        pattern=r"\d{4}\.(0[1-9]|1[0-2])",
        pattern_help="YYYY.MM, e.g. 2026.11",
        example="2026.11",
    ),
    # bounded: the release and the branch are parts of every image's file name (255 bytes at most)
    Setting(
        "bootloader.release",
        Kind.INT,
        "Release number within the version.",
        default=1,
        minimum=1,
        maximum=9999,
    ),
    Setting(
        "bootloader.cmdline",
        Kind.LIST_STR,
        "Extra kernel parameters, appended to the bootloader's own.",
        default=[],
        unique=True,
        pattern=r"[^\s\"'`$\\;&|<>]+",
        pattern_help="one parameter without spaces, quotes or shell characters",
        example="[vsyscall=emulate]",
    ),
    Setting(
        "bootloader.no_vsyscall_reason",
        Kind.STR,
        "EL ≤ 6 userlands need `vsyscall=emulate` on modern kernels; set this to say why a profile "
        "does without it (e.g. a kernel built with `CONFIG_LEGACY_VSYSCALL_EMULATE`).",
        default=None,
        nullable=True,
    ),
    # -- kernel ----------------------------------------------------------------------------------
    Setting(
        "kernel.package",
        Kind.STR,
        "Debian kernel package to take `vmlinuz` and modules from; used when `vmlinuz` is not set.",
        default="linux-image-cloud-amd64",
        nullable=True,
        pattern=r"[a-z0-9][a-z0-9.+-]+",
        pattern_help="a Debian package name",
    ),
    Setting(
        "kernel.vmlinuz",
        Kind.PATH,
        "A kernel image file (relative to the profile file); needs `modules`.",
        default=None,
        nullable=True,
    ),
    Setting(
        "kernel.modules",
        Kind.PATH,
        "The `lib/modules/<version>` tree that belongs to `vmlinuz`.",
        default=None,
        nullable=True,
    ),
    # -- image / container -----------------------------------------------------------------------
    Setting(
        "image.formats",
        Kind.LIST_STR,
        "Boot image formats.",
        default=["iso"],
        choices=IMAGE_FORMATS,
        unique=True,
    ),
    Setting(
        "container.formats",
        Kind.LIST_STR,
        "Container formats (`thin`: a tiny image that mounts the root tree at run time; `cvmfs`: the "
        "unpacked tree published to a repository).",
        default=[],
        choices=CONTAINER_FORMATS,
        unique=True,
    ),
    Setting(
        "container.entrypoint",
        Kind.LIST_STR,
        "Container entry point (`[]`: none, the command runs as given).",
        default=[],
    ),
    Setting(
        "container.cmd",
        Kind.LIST_STR,
        "Default command, arguments to the entry point (null: `/bin/sh` when the tree has it, else none).",
        default=None,
        nullable=True,
        example="[/bin/sh, -l]",
    ),
    Setting(
        "container.env",
        Kind.DICT_STR,
        "Container environment.",
        default={},
        pattern=r"[A-Za-z_][A-Za-z0-9_]*",
        pattern_help="an environment variable name",
    ),
    Setting("container.labels", Kind.DICT_STR, "OCI labels (annotations) of the container.", default={}),
    # -- context ---------------------------------------------------------------------------------
    Setting(
        "context",
        Kind.DICT_STR,
        'Default `[ucernvm-begin]` user-data keys (e.g. `resize_rootfs: "on"`); user data given at '
        "launch time overrides them.",
        default={},
        pattern=r"[A-Za-z_][A-Za-z0-9_]*",
        pattern_help="a user-data key the bootloader honours (`cernvm_build.bootloader.userdata`)",
        example='{resize_rootfs: "on"}',
    ),
    # -- preservation ----------------------------------------------------------------------------
    Setting(
        "preservation.frozen",
        Kind.BOOL,
        "The platform is frozen: the snapshot must be pinned (a fixed tag, a date or a root hash).",
        default=False,
    ),
    Setting(
        "preservation.read_only",
        Kind.BOOL,
        "Launch VMs without a persistent writable layer over the root tree.",
        default=False,
    ),
    Setting(
        "preservation.checksums_required",
        Kind.BOOL,
        "Every input (kernel, packages, objects) must be verified against a recorded checksum.",
        default=False,
    ),
    Setting(
        "preservation.signer_sha256",
        Kind.STR,
        "The SHA-256 of the certificate that signs this platform's images (`signer_sha256` in "
        "`cernvm-build image inspect --json`): `cernvm-launch` then boots only images signed by it, with "
        "no `--cert` needed. Without it (and without `--cert`) any valid signature is taken, and the "
        "`.sha256` published beside the image is the only check of who made it.",
        default=None,
        nullable=True,
        pattern=r"[0-9a-f]{64}",
        pattern_help="64 lower-case hex digits",
        example="3f5c…",
    ),
)

BY_KEY: dict[str, Setting] = by_key(SETTINGS)
#: renamed settings: deprecated key → current key (read with a warning)
ALIASES: dict[str, str] = aliases(SETTINGS)


def children(section: str) -> list[str]:
    """The keys directly under ``section`` (settings and subsections), by their last component."""
    prefix = f"{section}." if section else ""
    names: list[str] = []
    for key in [s.key for s in SETTINGS] + [k for k in SECTIONS if k]:
        if key.startswith(prefix):
            head = key[len(prefix) :].split(".")[0]
            if head not in names:
                names.append(head)
    return names


def default_of(setting: Setting) -> Any:
    """A fresh copy of the default (lists and dicts are never shared)."""
    return setting.fresh_default()
