"""The ``[ucernvm-begin]`` … ``[ucernvm-end]`` block of the user data: which keys count, and how to read it.

Runs on the build host (validation, the site's reference table) and inside the initrd, where the
init calls ``python3 -m cernvm_build.bootloader.userdata FILE``: it prints one ``key=value`` line per
honoured key, already checked, and the init assigns them through a ``case`` table — values are data,
never evaluated or sourced as shell. Unknown keys and bad values are reported and ignored.
Standard library only: this module is part of the initrd runtime.
"""

from __future__ import annotations

import gzip
import re
import sys
from dataclasses import dataclass, field

BEGIN = "[ucernvm-begin]"
END = "[ucernvm-end]"

_HOST = r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?"
_HOSTS = re.compile(rf"^{_HOST}(,{_HOST})*$")
_PROXY = r"(DIRECT|auto|https?://[A-Za-z0-9._:/-]+|[A-Za-z0-9._-]+:[0-9]{1,5})"
_URLISH = re.compile(rf"^{_PROXY}([;|]{_PROXY})*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FQRN = re.compile(r"^[a-z0-9][a-z0-9-]*(\.[a-z0-9-]+)+$")
_PATH = re.compile(r"^(?!(.*/)?\.\.?(/|$))[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")  # no . or .. parts
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?Z?)?$")
_B64 = re.compile(r"^[A-Za-z0-9+/=]+$")
_TRUE = {"1", "yes", "on", "true"}
_FALSE = {"0", "no", "off", "false"}


@dataclass(frozen=True)
class Key:
    help: str
    pattern: re.Pattern[str] | None = None  # None: a boolean
    example: str = ""


#: The keys the bootloader honours (the real μCernVM's names), with what each does.
SPEC: dict[str, Key] = {
    "resize_rootfs": Key(
        "on (default): the scratch partition and ext4 grow to fill the disk at boot; off: keep the size",
        None,
        "off",
    ),
    "cvmfs_server": Key(
        "comma-separated Stratum-1 hosts (host[:port]) serving the OS repository; replaces the image's list",
        _HOSTS,
        "cvmfs-stratum-one.cern.ch,10.0.2.2:8000",
    ),
    "cvmfs_cdn": Key("CDN hosts (host[:port]); like cvmfs_server, used when no server is given", _HOSTS),
    "cvmfs_http_proxy": Key(
        "HTTP proxy chain for CernVM-FS (CVMFS_HTTP_PROXY syntax: 'http://p:3128;DIRECT')",
        _URLISH,
        "http://squid.example:3128;DIRECT",
    ),
    "cvmfs_branch": Key("the OS repository to boot (its fully qualified name)", _FQRN, "cernvm-prod.cern.ch"),
    "cvmfs_tag": Key(
        "boot this named snapshot of the repository and pin it (long-term preservation)",
        _NAME,
        "cernvm-system-4.5.0.0",
    ),
    "cvmfs_date": Key(
        "boot the snapshot that was current at this UTC date (YYYY-MM-DD[THH:MM[:SS]]) and pin it",
        _DATE,
        "2021-01-15",
    ),
    "cernvm_path": Key("the OS root folder inside the repository", _PATH, "cvm4"),
    "cernvm_inject": Key(
        "base64 of a .tar.gz unpacked into / once, on the first boot that sees it", _B64, "H4sIAAAA…"
    ),
    "cvmfs_wait_on_squid": Key(
        "seconds to wait for the network to come up before mounting", re.compile(r"^[0-9]{1,4}$"), "30"
    ),
}

#: name -> help text, for the site's reference page and ``--help``.
KEYS: dict[str, str] = {name: k.help for name, k in SPEC.items()}


@dataclass
class Parsed:
    values: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    found: bool = False  # whether a block was present at all


def _text(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def parse(data: bytes | str) -> Parsed:
    """The checked key/values of the first ``[ucernvm-begin]`` block of ``data``."""
    text = data if isinstance(data, str) else _text(data)
    out = Parsed()
    inside = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not inside:
            inside = line == BEGIN
            out.found = out.found or inside
            continue
        if line == END:
            break
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            out.messages.append(f"line {lineno}: not key=value, ignored: {line[:60]!r}")
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        spec = SPEC.get(key)
        if spec is None:
            out.messages.append(f"line {lineno}: unknown key '{key[:40]}' ignored (known: {', '.join(SPEC)})")
            continue
        if spec.pattern is None:
            low = value.lower()
            if low in _TRUE:
                value = "1"
            elif low in _FALSE:
                value = "0"
            else:
                out.messages.append(f"line {lineno}: {key}: '{value[:40]}' is not on/off, ignored")
                continue
        elif not spec.pattern.match(value):
            out.messages.append(f"line {lineno}: {key}: invalid value '{value[:60]}' ignored")
            continue
        out.values[key] = value
    return out


def render(values: dict[str, str]) -> str:
    """The ``key=value`` lines the init reads (one per line, values already checked)."""
    return "".join(f"{k}={v}\n" for k, v in values.items())


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python3 -m cernvm_build.bootloader.userdata USER_DATA_FILE\n")
        return 2
    with open(argv[0], "rb") as f:
        parsed = parse(f.read())
    for msg in parsed.messages:
        sys.stderr.write(f"ucernvm: context: {msg}\n")
    sys.stdout.write(render(parsed.values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
