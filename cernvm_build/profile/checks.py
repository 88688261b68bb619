"""Checks across settings, each with an actionable message: what is wrong, where, what to do."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .. import utcdate
from ..bootloader import userdata
from ..errors import CvmfsError, ProfileError
from ..fsutil import TooLarge, read_capped
from ..table import Invalid, is_url, suggest
from .convert import Values, resolve_path
from .model import is_rolling_tag
from .yamlnodes import Pos, display, location

VSYSCALL = "vsyscall=emulate"

#: What a kernel command line argument may hold (boot loaders' configs split on spaces and quotes;
#: ``image build`` checks every argument it writes with the same): letters, digits and these
KERNEL_ARG = re.compile(r"[A-Za-z0-9@%+,./:;=_|-]+")
#: the kernel command line argument each setting becomes (``image/build.py`` ``kernel_cmdline``, which
#: names the setting when it refuses an argument); every other argument comes from bootloader.cmdline
KERNEL_ARG_KEYS = {
    "cvmfs_repos": "cvmfs.repository",
    "cernvm_path": "cvmfs.path",
    "cvmfs_server": "cvmfs.servers",
    "cvmfs_repository_tag": "cvmfs.snapshot.tag",
    "cvmfs_repository_date": "cvmfs.snapshot.date",
    "cvmfs_root_hash": "cvmfs.snapshot.root_hash",
    "cvmfs_http_proxy": "cvmfs.http_proxy",
}
#: every word the init (``00-setup.sh``) reads for a setting's value, and that setting: a
#: bootloader.cmdline word with one of these keys would override (the init keeps the last) what the
#: build verified and recorded, bypassing its checks (cvmfs.path's ``..``)
SETTING_WORDS = {**KERNEL_ARG_KEYS, "cvmfs_proxy": "cvmfs.http_proxy"}
#: the settings that become kernel command line arguments
KERNEL_ARG_SETTINGS = (*KERNEL_ARG_KEYS.values(), "bootloader.cmdline")


def kernel_arg_refused(value: str) -> tuple[str, str]:
    """The message and hint for a setting's value the kernel command line cannot carry."""
    return (
        f"{value!r} has characters a kernel command line cannot carry",
        "use letters, digits and @ % + , . / : ; = _ | - only; for an IPv6 address give a host name",
    )


def _fail(v: Values, key: str, message: str, hint: str, pos: Pos | None = None) -> None:
    v.errors.append(ProfileError(message, where=location(pos or v.pos(key), key), hint=hint))


def check(v: Values) -> None:
    """Append the semantic errors of ``v`` (only settings that converted cleanly are looked at)."""
    val = v.values
    _snapshot(v)
    if val["preservation.frozen"] is True:
        tag, date, root_hash = (val[f"cvmfs.snapshot.{k}"] for k in ("tag", "date", "root_hash"))
        if tag and is_rolling_tag(tag) and not (date or root_hash):
            key = v.blame("preservation.frozen", "cvmfs.snapshot.tag")
            origin = v.pos("cvmfs.snapshot.tag")
            inherited = (
                f" (set at {location(origin)})" if origin is not None and origin.file != v.leaf else ""
            )
            _fail(
                v,
                key,
                f"a frozen profile cannot follow the rolling tag {tag!r}{inherited}",
                "pin a named snapshot (cvmfs.snapshot.tag), a date or a root_hash, or set "
                "preservation.frozen: false",
            )
        elif not (tag or date or root_hash):
            _fail(
                v,
                "preservation.frozen",
                "a frozen profile must pin a snapshot",
                "set cvmfs.snapshot.tag (a named snapshot), cvmfs.snapshot.date or cvmfs.snapshot.root_hash",
            )
    _family(v)
    _vsyscall(v)
    _servers(v)
    _keys(v)
    _blacklist(v)
    _kernel(v)
    _kernel_args(v)
    path = val["cvmfs.path"]
    if isinstance(path, str) and ".." in path.split("/"):
        _fail(v, "cvmfs.path", f"'..' is not allowed in {path!r}", "give the path from the repository root")
    _context(v)
    for name, value in (val["context"] or {}).items():
        if "\n" in value or "\r" in value:
            _fail(
                v,
                f"context.{name}",
                "context values must be one line",
                "the bootloader reads user data line by line; put multi-line data into a file",
                pos=_child_pos(v, "context", name),
            )


def _context(v: Values) -> None:
    """Context keys must be ones the bootloader honours, with values it accepts (it ignores others).

    The bootloader's own table (``bootloader.userdata.SETTINGS``) decides: one list of keys.
    """
    for name, value in (v.values["context"] or {}).items():
        if "\n" in value or "\r" in value:
            continue  # reported below
        try:
            userdata.check(name, value)
        except Invalid as e:
            known = name in userdata.SPEC
            message = (
                e.message
                if known
                else f"the bootloader does not know this key{suggest(name, list(userdata.SPEC))}"
            )
            _fail(v, f"context.{name}", message, e.hint, pos=_child_pos(v, "context", name, at_key=not known))


def _child_pos(v: Values, key: str, name: str, *, at_key: bool = False) -> Pos | None:
    node = v.nodes.get(key)
    if node is not None and node.kind == "map" and name in node.value:
        child = node.value[name]
        return child.key_pos if at_key else child.pos  # type: ignore[no-any-return]
    return v.pos(key)


def _snapshot(v: Values) -> None:
    keys = [f"cvmfs.snapshot.{k}" for k in ("tag", "date", "root_hash")]
    chosen = [k for k in keys if v.values[k] is not None]
    if len(chosen) > 1:
        _fail(
            v,
            chosen[1],
            f"two snapshot selectors: {' and '.join(k.rsplit('.', 1)[1] for k in chosen)}",
            "set only one of cvmfs.snapshot.tag, .date, .root_hash (set the others to null to drop "
            "inherited ones)",
        )
    date = v.values["cvmfs.snapshot.date"]
    if isinstance(date, str):
        try:
            utcdate.parse(date)
        except ValueError:
            hint = "expected a real UTC time, YYYY-MM-DDTHH:MM:SSZ"
            _fail(v, "cvmfs.snapshot.date", f"no such date: {date!r}", hint)


#: Each OS family's releases and distributions (the table's range is the union of all families).
FAMILIES: dict[str, tuple[range, tuple[str, ...]]] = {
    "el": (range(4, 10), ("SLC", "SL", "CentOS", "CC", "RHEL", "AlmaLinux", "Rocky", "Demo")),
    "debian": (range(10, 14), ("Debian",)),
}


def _family(v: Values) -> None:
    family, release, dist = (v.values[f"os.{k}"] for k in ("family", "release", "distribution"))
    if family not in FAMILIES:
        return
    releases, dists = FAMILIES[family]
    if isinstance(release, int) and release not in releases:
        key = v.blame("os.release", "os.family")
        _fail(
            v,
            key,
            f"{release} is not a release of the '{family}' family ({releases.start}..{releases.stop - 1})",
            f"set os.release to one of {releases.start}..{releases.stop - 1}, or os.family to the "
            "release's family",
        )
    if isinstance(dist, str) and dist not in dists:
        others = [f for f, (_, names) in FAMILIES.items() if dist in names]
        key = v.blame("os.distribution", "os.family")
        _fail(
            v,
            key,
            f"{dist} is not a distribution of the '{family}' family",
            f"set os.family: {others[0]}" if others else f"use one of {', '.join(dists)}",
        )


def _vsyscall(v: Values) -> None:
    release = v.values["os.release"]
    # EL's old glibc only: a debian profile's release 5 is already refused for its family
    if not isinstance(release, int) or release > 6 or v.values["os.family"] != "el":
        return
    cmdline = v.values["bootloader.cmdline"]
    reason = v.values["bootloader.no_vsyscall_reason"]
    if reason is not None and not reason.strip():
        hint = "say why vsyscall=emulate is not needed"
        _fail(v, "bootloader.no_vsyscall_reason", "the reason is empty", hint)
        return
    if cmdline is None or VSYSCALL in cmdline or reason:
        return
    key = v.blame("bootloader.cmdline", "os.release")
    pos = v.pos(key)
    if pos is None or pos.file != v.leaf:
        key = "os.release"
    _fail(
        v,
        key,
        f"EL{release} userlands need '{VSYSCALL}' on the kernel command line of modern kernels "
        "(their glibc calls the vsyscall page, which current kernels disable)",
        f"add '{VSYSCALL}' to bootloader.cmdline, or set bootloader.no_vsyscall_reason to say why not",
    )


def _servers(v: Values) -> None:
    servers = v.values["cvmfs.servers"]
    if servers is None:
        return
    if not servers:
        _fail(
            v, "cvmfs.servers", "no Stratum-1 server", "list at least one URL, e.g. http://host/cvmfs/@fqrn@"
        )
        return
    repository = v.values["cvmfs.repository"]
    for url in servers:  # each is an http(s) URL already (the table's URL kind)
        pos = _pos_of(v, "cvmfs.servers", url)
        if "@fqrn@" not in url and not (repository and repository in url):
            _fail(
                v,
                "cvmfs.servers",
                f"{url!r} names no repository",
                "end the URL with /cvmfs/@fqrn@ (the client puts the repository name there)",
                pos=pos,
            )
        if url.lower().startswith("https://"):
            # The μCernVM initrd's Python runtime has no ssl module (no OpenSSL, no CA bundle), so
            # an https Stratum could never be reached at boot: refuse it here, not as a boot panic.
            _fail(
                v,
                "cvmfs.servers",
                f"{url!r}: the μCernVM bootloader cannot fetch over https",
                "use http:// (every object is verified against the signed manifest and its hash) "
                "and an https proxy outside the VM if the transport must be encrypted",
                pos=pos,
            )
    _proxy(v)


def _proxy(v: Values) -> None:
    """``CVMFS_HTTP_PROXY``: groups split by ';' (fail-over), members by '|' (load balance)."""
    value = v.values["cvmfs.http_proxy"]
    if not isinstance(value, str):
        return
    for member in (m.strip() for group in value.split(";") for m in group.split("|")):
        if member in ("DIRECT", "auto"):
            continue
        url = member if "://" in member else f"http://{member}"
        if not is_url(url, ("http",)) or urlsplit(url).path not in ("", "/"):
            _fail(
                v,
                "cvmfs.http_proxy",
                f"not a proxy: {member!r}",
                "write DIRECT, auto, or proxies like 'http://squid1:3128|http://squid2:3128;DIRECT'",
            )
            return


def _pos_of(v: Values, key: str, text: str) -> Pos | None:
    """The position of the list item of ``key`` written as ``text`` (lists may have lost duplicates)."""
    node = v.nodes.get(key)
    if node is not None and node.kind == "seq":
        for item in node.value:
            if item.text == text or item.value == text:
                return item.pos  # type: ignore[no-any-return]
    return v.pos(key)


def _keys(v: Values) -> None:
    keys: list[Path] | None = v.values["cvmfs.public_keys"]
    if keys is None:
        return
    if not keys:
        _fail(v, "cvmfs.public_keys", "no public key", "list the repository's master public key (.pub)")
        return
    # each item where it was written (lists merged from several files keep their items' positions)
    node = v.nodes.get("cvmfs.public_keys")
    items = node.value if node is not None and node.kind == "seq" else []
    written = {resolve_path(n.text, n.pos): n.pos for n in items if n.text is not None}
    for path in keys:
        problem = _pem_problem(path)
        if problem:
            _fail(
                v,
                "cvmfs.public_keys",
                f"{problem}: {display(path)}",
                "relative key paths are relative to the profile file; a key is a PEM RSA 'BEGIN PUBLIC KEY'",
                pos=written.get(path),
            )


def _blacklist(v: Values) -> None:
    """The blacklist file reads (a bad line is refused here, not by the image's mount at boot)."""
    path: Path | None = v.values["cvmfs.blacklist"]
    if path is not None:
        from ..cvmfs import blacklist  # only for a profile that names one

        try:
            blacklist.load([path])
        except CvmfsError as e:
            _fail(v, "cvmfs.blacklist", e.message, e.hint or "")


MAX_PUBLIC_KEY = 64 * 1024  # bytes: a PEM public key is < 1 KiB (an RSA-4096 one ~800 bytes)


def _pem_problem(path: Path) -> str | None:
    try:  # a regular file, bounded: /dev/zero filled the memory, a FIFO was waited on for ever
        data = read_capped(path, MAX_PUBLIC_KEY)
    except FileNotFoundError:
        return "public key file not found"
    except TooLarge as e:
        return f"not a PEM public key ({e.strerror})"
    except OSError as e:
        return f"cannot read public key ({e.strerror})"
    if b"-----BEGIN PUBLIC KEY-----" not in data:
        return "not a PEM public key (no BEGIN PUBLIC KEY)"
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError):
        return "corrupt PEM public key"
    if not isinstance(key, rsa.RSAPublicKey):  # CernVM-FS whitelists are RSA-signed: the boot refuses it
        return "not an RSA public key (CernVM-FS signs with RSA only)"
    return None


DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _kernel_args(v: Values) -> None:
    """What ``image build`` would refuse at the end of its checks, at the setting's position."""
    for key in KERNEL_ARG_SETTINGS:
        value = v.values.get(key)
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and text.strip("/") and not KERNEL_ARG.fullmatch(text.strip("/")):
                message, hint = kernel_arg_refused(text)
                _fail(v, key, message, hint, pos=_pos_of(v, key, text))
    for word in v.values.get("bootloader.cmdline") or []:
        owner = SETTING_WORDS.get(word.partition("=")[0]) if isinstance(word, str) else None
        if owner is not None:
            _fail(
                v,
                "bootloader.cmdline",
                f"{word!r} is {owner}'s to write: the image would boot another value than the one "
                "the build checked and recorded",
                f"set {owner} instead and remove the word from bootloader.cmdline",
                pos=_pos_of(v, "bootloader.cmdline", word),
            )


def _kernel(v: Values) -> None:
    vmlinuz, modules = v.values["kernel.vmlinuz"], v.values["kernel.modules"]
    package, arch = v.values["kernel.package"], v.values["os.arch"]
    if vmlinuz is None and isinstance(package, str) and arch in DEBIAN_ARCH:
        # Debian names kernel packages by architecture: a mismatch would boot nothing
        for other_arch, deb in DEBIAN_ARCH.items():
            if other_arch != arch and package.endswith(f"-{deb}"):
                key = v.blame("kernel.package", "os.arch")
                wanted = package.removesuffix(deb) + DEBIAN_ARCH[arch]
                _fail(
                    v,
                    key,
                    f"kernel.package {package!r} is for {other_arch}, but os.arch is {arch}",
                    f"use the {DEBIAN_ARCH[arch]} package, e.g. {wanted}",
                )
    if vmlinuz is None and modules is None:
        if package is None:
            hint = "set kernel.package, or kernel.vmlinuz and kernel.modules"
            _fail(v, "kernel.package", "no kernel", hint)
        return
    if vmlinuz is None or modules is None:
        missing = "kernel.modules" if modules is None else "kernel.vmlinuz"
        present = "kernel.vmlinuz" if modules is None else "kernel.modules"
        _fail(v, present, f"{present} needs {missing}", f"set {missing} too, or use kernel.package instead")
        return
    if v.explicit("kernel.package"):
        _fail(
            v,
            "kernel.package",
            "set either kernel.package or kernel.vmlinuz + kernel.modules, not both",
            "set kernel.package: null to use your own vmlinuz",
        )
    if not vmlinuz.is_file():
        hint = "relative paths are relative to the profile file"
        _fail(v, "kernel.vmlinuz", f"file not found: {display(vmlinuz)}", hint)
    if not modules.is_dir():
        hint = "give the lib/modules/<version> folder"
        _fail(v, "kernel.modules", f"folder not found: {display(modules)}", hint)
