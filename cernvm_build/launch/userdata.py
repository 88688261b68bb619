"""User data: read what the user gives (amiconfig, cloud-config, MIME multipart, scripts, gzip), keep
it, and add what launch needs, as one MIME multipart document that every reader takes its part of.

The three agents in a CernVM read the same document (the μCernVM bootloader takes the
``[ucernvm-begin]`` block line by line, amiconfig its INI sections, cloud-init its ``#cloud-config``),
so every part launch writes is plain 7bit/8bit text — a transfer encoding would hide the block from
the bootloader's line parser. There is exactly one ucernvm block (the bootloader stops at the first
end marker) and exactly one cloud-config part (so list merging is launch's, not cloud-init's).
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import yaml

from .. import yamlerror
from ..bootloader import inject
from ..bootloader import userdata as bootloader_userdata
from ..errors import ConfigFileError, UsageError
from ..table import Invalid

BEGIN, END = "[ucernvm-begin]", "[ucernvm-end]"
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._:/,@+=%-]*")
#: separators a key's own syntax needs (the init assigns values through a case table, never evaluates
#: them; the bootloader's table pattern still bounds the value): the proxy chain's groups
_ALSO_SAFE = {"cvmfs_http_proxy": ";|"}


@dataclass
class Part:
    """One part of the final document: its MIME type, text, and headers kept from the user's file."""

    content_type: str
    text: str
    filename: str | None = None


@dataclass
class UserData:
    """The user's data taken apart: the ucernvm block's keys, one cloud-config mapping, other parts."""

    ucernvm: dict[str, str] = field(default_factory=dict)
    cloud_config: dict[str, Any] | None = None
    parts: list[Part] = field(default_factory=list)
    #: what is kept but likely not meant (a ucernvm key given twice: the bootloader takes the last)
    warnings: list[str] = field(default_factory=list)


def _decode(data: bytes, source: str) -> str:
    if data[:2] == b"\x1f\x8b":
        try:
            data = bootloader_userdata.gunzip(data)
        except ValueError as e:
            raise ConfigFileError(
                f"user data: {e}",
                where=source,
                hint="give the file as written, or gzip'd whole "
                f"(at most {bootloader_userdata.MAX_INFLATED} bytes inflated)",
            ) from None
    try:  # a BOM (Notepad) dropped as the guest's line reader drops it: kept, a cloud-config or MIME
        return data.decode("utf-8").removeprefix("\ufeff")  # document behind it was a plain part
    except UnicodeDecodeError as e:
        raise ConfigFileError(
            f"user data is not UTF-8 text (byte {e.start})", where=source, hint="save it as UTF-8"
        ) from None


#: warnings of keys given again shown one by one; the rest are counted in one line
MAX_REPEAT_WARNINGS = 10


def _split_block(text: str, source: str, warnings: list[str]) -> tuple[dict[str, str] | None, str]:
    """Take the ucernvm block out of ``text``: its keys in order, and the text without it; a key
    given twice adds to ``warnings`` (the last value counts, as in the bootloader)."""
    lines = bootloader_userdata.raw_lines(text)  # the guest's line rule, not str.splitlines
    starts = [i for i, line in enumerate(lines) if bootloader_userdata.bare(line) == BEGIN]
    if not starts:
        return None, text
    start = starts[0]
    try:
        end = next(i for i in range(start + 1, len(lines)) if bootloader_userdata.bare(lines[i]) == END)
    except StopIteration:
        raise ConfigFileError(
            f"'{BEGIN}' without '{END}'", where=f"{source}:{start + 1}", hint=f"close the block with {END}"
        ) from None
    keys: dict[str, str] = {}
    first: dict[str, int] = {}  # key -> the line it was first given on
    again = 0  # keys given again
    for n in range(start + 1, end):
        line = bootloader_userdata.bare(lines[n])
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigFileError(
                "expected key=value in the ucernvm block",
                where=f"{source}:{n + 1}",
                hint="e.g. cvmfs_tag=HEAD",
            )
        key, value = key.strip(), value.strip()
        try:
            bootloader_userdata.check(key, bootloader_userdata.unquote(value))
        except Invalid as e:
            # the bootloader would ignore it silently: say so now, where it was written
            # cut as the bootloader cuts them (key 40, message 80 characters): a 100 KB key or value
            # was echoed whole, a 100 KB "one line"
            what = e.message if len(e.message) <= 120 else f"{e.message[:100]}… ({len(value)} characters)"
            raise ConfigFileError(what, where=f"{source}:{n + 1}: {key[:40]}", hint=e.hint) from None
        if key == "cernvm_inject":
            _check_inject(bootloader_userdata.unquote(value), f"{source}:{n + 1}: {key}")
        if key in first:
            # the bootloader (and the real μCernVM) keeps the last silently: said here, where the
            # file is checked, so an edit below an old line is not lost without a word
            again += 1
            if again <= MAX_REPEAT_WARNINGS:
                warnings.append(
                    f"{source}:{n + 1}: {key[:40]} is given again (first on line {first[key]}); "
                    "the bootloader takes this last value"
                )
        else:
            first[key] = n + 1
        keys[key] = value
    if again > MAX_REPEAT_WARNINGS:  # a 1 MiB block of one key repeated was ~50,000 warning lines
        warnings.append(f"{source}: {again - MAX_REPEAT_WARNINGS} more keys given again in the ucernvm block")
    return keys, "".join(lines[:start] + lines[end + 1 :])


def _check_inject(payload: str, where: str) -> None:
    """The payload read as the guest's unpacker reads it: base64 that is no .tar.gz, or a member it
    refuses (``..``, a device), was called a valid context and only the boot console said otherwise."""
    try:
        inject.members(inject.decode(payload))
    except inject.Refused as e:
        raise ConfigFileError(
            f"the payload {e}; the guest would apply nothing",
            where=where,
            hint="base64 -w0 of a .tar.gz of files, folders and links (tar czf - -C DIR .)",
        ) from None


#: cloud-config lists launch adds its own entries to, and what one entry looks like
_MERGED_LISTS = {
    "ssh_authorized_keys": "one '- ssh-ed25519 AAAA... comment' line per key",
    "mounts": "one '- [tag, /mnt/dir, 9p, options]' entry per mount",
}


def _load_cloud_config(text: str, source: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = yamlerror.describe(e)
        where = f"{source}:{problem.line}:{problem.column}" if problem.line else source
        raise ConfigFileError(
            f"cloud-config is not valid YAML: {problem.what}",
            where=where,
            hint="check the indentation, close each [ and {, and quote values holding ': ' or ' #'",
        ) from None
    except (ValueError, OverflowError, RecursionError) as e:  # PyYAML's constructors: 2020-99-99, ...
        raise ConfigFileError(
            f"cloud-config has a value YAML cannot read: {e}",
            where=source,
            hint="quote values that only look like dates or numbers",
        ) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigFileError(
            "cloud-config must be a mapping", where=source, hint="start with '#cloud-config'"
        )
    for key in _MERGED_LISTS:  # checked here, where the file is known: create merged and refused
        # them naming only "user data", after `context` had called the file valid
        if loaded.get(key) is not None and not isinstance(loaded[key], list):
            raise ConfigFileError(
                f"cloud-config key {key} must be a list", where=f"{source}: {key}", hint=_MERGED_LISTS[key]
            )
    try:  # the dumper recurses deeper per level than the loader: 400 levels of [ loaded, then
        _dump_cloud_config(loaded)  # were a RecursionError traceback when launch wrote them back
    except RecursionError:
        raise ConfigFileError(
            "cloud-config is nested too deeply", where=source, hint="cloud-config needs a few levels"
        ) from None
    return loaded


#: an INI section line; a lone CR (old Mac) ends it too, as ``raw_lines`` reads lines
_SECTION = re.compile(r"(?:^|(?<=\r))[ \t]*\[[A-Za-z0-9_.-]+\][ \t]*(?:\r|$)", re.M)


def _kind(text: str) -> str:
    head = text.lstrip()
    if head.startswith("#cloud-config"):
        return "text/cloud-config"
    if head.startswith("#!"):
        return "text/x-shellscript"
    # blanks of one line only: `\s*` spans lines, and 160 KB of empty lines took 27 s (1 MiB: ~20 min)
    if _SECTION.search(text):
        return "text/amiconfig-user-data"
    return "text/plain"


def _add_text(ud: UserData, content_type: str, text: str, source: str, filename: str | None) -> None:
    block, rest = _split_block(text, source, ud.warnings)
    if block is not None:
        if ud.ucernvm:
            raise ConfigFileError(
                "user data has more than one ucernvm block", where=source, hint="merge them into one"
            )
        ud.ucernvm = block
    if content_type == "text/ucernvm" or not rest.strip():
        return
    if content_type == "text/cloud-config":
        if ud.cloud_config is not None:
            raise ConfigFileError(
                "user data has more than one cloud-config part", where=source, hint="merge them into one"
            )
        ud.cloud_config = _load_cloud_config(rest, source)
        return
    ud.parts.append(Part(content_type, rest, filename))


#: what the initrd reads at most (``init.head.sh`` ignores bigger user data whole, launch's keys
#: with it): the user's parts inflated, and the document launch writes
MAX_DOCUMENT = bootloader_userdata.MAX_INFLATED


def too_big(size: int, what: str, source: str) -> ConfigFileError:
    return ConfigFileError(
        f"{what} is {size} bytes; the bootloader ignores user data over {MAX_DOCUMENT} bytes",
        where=source,
        hint="make the user data smaller (launch adds about 1 KB: its SSH and host keys)",
    )


def parse(data: bytes, source: str = "user data") -> UserData:
    """Take the user's file apart (MIME multipart, cloud-config, amiconfig, script, gzip). The
    parts' inflated total is capped as it grows: each gzip part may inflate to MAX_DOCUMENT, and a
    hundred small ones were 105 MB in memory for a document no guest would read."""
    text = _decode(data, source)
    ud = UserData()
    total = 0
    head = text.lstrip()[:512].lower()
    if head.startswith(("content-type:", "mime-version:")):
        try:  # the parser and walk() recurse per nested multipart: 3,000 levels fit in 200 KB
            msg = email.message_from_string(text, policy=email.policy.compat32)
            subs = list(msg.walk()) if msg.is_multipart() else [msg]
        except RecursionError:
            raise ConfigFileError(
                "MIME parts are nested too deeply",
                where=source,
                hint="user data is a flat multipart/mixed of a few parts (cloud-init's make-mime)",
            ) from None
        for n, sub in enumerate(subs):
            if sub.is_multipart():
                continue
            payload = sub.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            part_source = f"{source} (MIME part {n})"
            ptext = _decode(payload, part_source)
            total += len(ptext.encode())
            if total > MAX_DOCUMENT:
                raise too_big(total, f"user data inflated (up to MIME part {n})", source)
            ctype = sub.get_content_type()
            if ctype in ("text/plain", "text/x-not-multipart"):
                ctype = _kind(ptext)
            _add_text(ud, ctype, ptext, part_source, _filename(sub))
    else:
        _add_text(ud, _kind(text), text, source, None)
    return ud


def _filename(msg: Message) -> str | None:
    name = msg.get_filename()
    return name if isinstance(name, str) else None


def check_ucernvm_value(key: str, value: str) -> str:
    """A value launch writes into the block, checked by the bootloader's own table (so the bootloader
    will not ignore it) and safe for its line parser (no spaces, quotes, ``;`` except in a proxy chain)."""
    spec = bootloader_userdata.SPEC.get(key)
    try:
        value = bootloader_userdata.check(key, value)
    except Invalid as e:
        where = spec.flag if spec is not None and spec.flag else key
        raise UsageError(e.message, where=where, hint=e.hint) from None
    if not _SAFE_VALUE.fullmatch(value.translate({ord(c): None for c in _ALSO_SAFE.get(key, "")})):
        raise UsageError(
            f"unsafe value for {key}: {value!r}",
            hint="use letters, digits and . _ : / , @ + = % - only",
        )
    return value


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings (PEM keys) as ``|`` blocks and list items indented under their key, the
    way people write cloud-config and the way simple line-based parsers (the demo OS's) read it."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str_presenter)


def _dump_cloud_config(cc: Mapping[str, Any]) -> str:
    # No line folding: an SSH key split over two lines is no key at all.
    return yaml.dump(cc, Dumper=_LiteralDumper, sort_keys=False, allow_unicode=True, width=1 << 20)


def merge(
    ud: UserData,
    *,
    hostname: str,
    authorized_keys: Sequence[str],
    host_key_private: str,
    host_key_public: str,
    ucernvm: Mapping[str, str] | None = None,
    mounts: Sequence[Sequence[str]] = (),
) -> UserData:
    """Add launch's keys: the login key, the pinned host key, the hostname and ucernvm settings, and
    cloud-config ``mounts`` entries (the shared folder) after the user's own."""
    cc: dict[str, Any] = dict(ud.cloud_config or {})
    cc.setdefault("hostname", hostname)
    existing = cc.get("ssh_authorized_keys") or []
    if not isinstance(existing, list):
        raise ConfigFileError("cloud-config key ssh_authorized_keys must be a list", where="user data")
    cc["ssh_authorized_keys"] = [*existing, *(k for k in authorized_keys if k not in existing)]
    # launch verifies the guest by this key; a user's own host keys would make that impossible.
    cc["ssh_keys"] = {"ed25519_private": host_key_private, "ed25519_public": host_key_public}
    cc.setdefault("disable_root", False)
    if mounts:
        own = cc.get("mounts") or []
        if not isinstance(own, list):
            raise ConfigFileError("cloud-config key mounts must be a list", where="user data")
        cc["mounts"] = [*own, *([*m] for m in mounts)]
    block = dict(ud.ucernvm)
    for key, value in (ucernvm or {}).items():
        block[key] = check_ucernvm_value(key, value)
    return UserData(ucernvm=block, cloud_config=cc, parts=list(ud.parts))


def _boundary(body: str) -> str:
    digest = hashlib.sha256(body.encode()).hexdigest()[:24]
    return f"==cernvm-launch-{digest}=="


def render(ud: UserData) -> bytes:
    """The final document: ucernvm block first, then cloud-config, then the user's other parts."""
    parts: list[Part] = []
    if ud.ucernvm:
        block = "\n".join([BEGIN, *(f"{k}={v}" for k, v in ud.ucernvm.items()), END]) + "\n"
        parts.append(Part("text/ucernvm", block, "ucernvm"))
    if ud.cloud_config is not None:
        body = _dump_cloud_config(ud.cloud_config)
        parts.append(Part("text/cloud-config", "#cloud-config\n" + body, "cloud-config"))
    parts.extend(ud.parts)
    chunks: list[str] = []
    for p in parts:
        text = p.text if p.text.endswith("\n") else p.text + "\n"
        encoding = "7bit" if text.isascii() else "8bit"
        charset = "us-ascii" if text.isascii() else "utf-8"
        headers = [
            f'Content-Type: {p.content_type}; charset="{charset}"',
            "MIME-Version: 1.0",
            f"Content-Transfer-Encoding: {encoding}",
        ]
        if p.filename:
            safe = re.sub(r'["\\\r\n]', "_", p.filename)
            headers.append(f'Content-Disposition: attachment; filename="{safe}"')
        chunks.append("\n".join(headers) + "\n\n" + text)
    boundary = _boundary("".join(chunks))
    out = [f'Content-Type: multipart/mixed; boundary="{boundary}"', "MIME-Version: 1.0", ""]
    for chunk in chunks:
        out.append(f"--{boundary}")
        out.append(chunk)
    out.append(f"--{boundary}--\n")
    return "\n".join(out).encode()


def render_within(ud: UserData, source: str) -> bytes:
    """``render``, refused when the guest would ignore the document whole (launch's keys with it,
    and launch would wait for SSH in vain): ``source`` names the user's file."""
    try:
        document = render(ud)
    except RecursionError:  # parse checked the user's part; a few frames deeper here, at the edge
        raise ConfigFileError(
            "cloud-config is nested too deeply", where=source, hint="cloud-config needs a few levels"
        ) from None
    if len(document) > MAX_DOCUMENT:
        raise too_big(len(document), "the user data launch writes (with its keys)", source)
    return document
