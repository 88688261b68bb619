"""The ``[ucernvm-begin]`` … ``[ucernvm-end]`` block of the user data: which keys count, and how to read it.

Runs on the build host (validation, the site's reference table) and inside the initrd, where the
init calls ``python3 -m cernvm_build.bootloader.userdata FILE``: it prints one ``key=value`` line per
honoured key, already checked, and the init assigns them through a ``case`` table — values are data,
never evaluated or sourced as shell. Unknown keys and bad values are reported and ignored.
Standard library only (with ``cernvm_build.table``, which is too): this module is part of the
initrd runtime.
"""

from __future__ import annotations

import re
import sys
import zlib

from .. import table
from ..table import Invalid, Kind, Setting, by_key, suggest

BEGIN = "[ucernvm-begin]"
END = "[ucernvm-end]"

#: 1..65535, as a pattern (the site's browser validator runs the same one)
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_HOST = rf"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:{_PORT})?"
#: a blacklist entry (``cvmfs/blacklist.py``): a certificate fingerprint or ``<REPOSITORY N``; no
#: more than ``blacklist.parse`` reads (a suffix it knows, a dotted name): what passed here and not
#: there stopped the boot at the mount instead of being reported as user data
_FQRN = r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+"
_SUFFIX = r"-([Rr][Mm][Dd]160|[Ss][Hh][Aa][Kk][Ee]128)"
_REVOKED = rf"([0-9A-Fa-f]{{2}}(:[0-9A-Fa-f]{{2}}){{19}}({_SUFFIX})?|<{_FQRN} [0-9]{{1,18}})"
_PROXY = rf"(DIRECT|auto|https?://[A-Za-z0-9._-]+(:{_PORT})?(/[A-Za-z0-9._/-]*)?|[A-Za-z0-9._-]+:{_PORT})"


def snapshot_date(text: str) -> str:
    """``cvmfs_date`` in the one form the mount's ``--date`` reads (``YYYY-MM-DDTHH:MM:SSZ``): the
    key's shorter spellings (``2021-01-15``, ``2021-01-15 10:30``) were passed on as written and
    every such boot panicked; a date no calendar has (``2021-99-99``) is refused here, so it is
    reported and ignored like any other bad value."""
    import datetime as dt  # only for this key: the init's other parses stay without it

    day, _, clock = text.rstrip("Z").replace(" ", "T").partition("T")
    year, month, mday = (int(p) for p in day.split("-"))
    hour, minute, second = ([int(p) for p in clock.split(":")] + [0, 0, 0])[:3] if clock else (0, 0, 0)
    try:
        when = dt.datetime(year, month, mday, hour, minute, second)
    except ValueError:  # the message is the context builder's too (site context.js): no Python text
        raise Invalid(f"{text!r} is not a date", "e.g. 2021-01-15 or 2021-01-15T10:30:00 (UTC)") from None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


#: The keys the bootloader honours (the real μCernVM's names), in the one settings type
#: (``cernvm_build.table``). The profile's ``context`` and cernvm-launch's ``--cvmfs-server``,
#: ``--snapshot`` and ``--date`` (``flag``) are checked against this same table.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "resize_rootfs",
        Kind.BOOL,
        "on (default): the scratch partition and ext4 grow to fill the disk at boot; off: keep the size",
        default=True,
        example="off",
    ),
    Setting(
        "cvmfs_server",
        Kind.STR,
        "comma-separated Stratum-1 hosts (host[:port]) serving the OS repository; replaces the image's list",
        default=None,
        pattern=rf"{_HOST}(,{_HOST})*",
        pattern_help="host[:port] (port 1..65535), comma-separated",
        example="cvmfs-stratum-one.cern.ch,10.0.2.2:8000",
        flag="--cvmfs-server",
        metavar="HOST[:PORT]",
    ),
    Setting(
        "cvmfs_cdn",
        Kind.STR,
        "CDN hosts (host[:port]); like cvmfs_server, used when no server is given",
        default=None,
        pattern=rf"{_HOST}(,{_HOST})*",
        pattern_help="host[:port] (port 1..65535), comma-separated",
    ),
    Setting(
        "cvmfs_http_proxy",
        Kind.STR,
        "HTTP proxy chain for CernVM-FS (CVMFS_HTTP_PROXY syntax: '|' shares the load within a group, "
        "';' fails over to the next group: 'http://p1:3128|http://p2:3128;DIRECT')",
        default=None,
        pattern=rf"{_PROXY}([;|]{_PROXY})*",
        pattern_help="DIRECT, auto or proxies (host:port, port 1..65535) joined by ';' and '|'",
        example="http://squid.example:3128;DIRECT",
        flag="--cvmfs-http-proxy",
        metavar="CHAIN",
    ),
    Setting(
        "cvmfs_branch",
        Kind.STR,
        "the OS repository to boot (its fully qualified name)",
        default=None,
        pattern=r"[a-z0-9][a-z0-9-]*(\.[a-z0-9-]+)+",
        pattern_help="a fully qualified repository name like 'name.domain.tld'",
        example="cernvm-prod.cern.ch",
    ),
    Setting(
        "cvmfs_quota_limit",
        Kind.INT,
        "size limit in MB of the OS repository's object cache on the scratch disk (CVMFS_QUOTA_LIMIT): "
        "least recently used objects are evicted, catalogs never",
        default=None,
        minimum=1,
        maximum=1 << 24,  # 16 TiB: no scratch disk is larger (the eviction's byte counts stay small)
        example="4000",
    ),
    Setting(
        "cvmfs_tag",
        Kind.STR,
        "boot this named snapshot of the repository and pin it (long-term preservation)",
        default=None,
        pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}",
        pattern_help="a snapshot tag (letters, digits, '.', '_', '-')",
        example="cernvm-system-4.5.0.0",
        field="snapshot",
        flag="--snapshot",
        metavar="TAG",
    ),
    Setting(
        "cvmfs_date",
        Kind.STR,
        "boot the snapshot that was current at this UTC date (YYYY-MM-DD[THH:MM[:SS]]) and pin it",
        default=None,
        pattern=r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?Z?)?",
        pattern_help="YYYY-MM-DD[THH:MM[:SS]] (UTC)",
        example="2021-01-15",
        canonical=snapshot_date,
        field="date",
        flag="--date",
        metavar="YYYY-MM-DD",
    ),
    Setting(
        "cernvm_path",
        Kind.STR,
        "the OS root folder inside the repository",
        default=None,
        pattern=r"(?!(.*/)?\.\.?(/|$))[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*",  # no . or .. parts
        pattern_help="a relative path without '.' or '..' parts",
        example="cvm4",
    ),
    Setting(
        "cernvm_inject",
        Kind.STR,
        "base64 of a .tar.gz (files, folders, links) unpacked into the OS's / on the first boot that sees"
        " it; links are followed as the OS follows them, and a bad member applies nothing",
        default=None,
        pattern=r"[A-Za-z0-9+/=]+",
        pattern_help="base64",
        example="H4sIAAAA…",
    ),
    Setting(
        "cvmfs_blacklist",
        Kind.STR,
        "comma-separated certificate blacklist entries added to the image's (/etc/cvmfs/blacklist's "
        "format): a revoked certificate's fingerprint (AB:CD:…, 20 bytes) or '<REPOSITORY N', which "
        "refuses the repository's revisions below N; the mount refuses what they list. Entries add up: "
        "user data cannot take back one of the image's",
        default=None,
        pattern=rf"{_REVOKED}(,{_REVOKED})*",
        pattern_help="fingerprints AB:CD:… (20 bytes) or '<REPOSITORY N', comma-separated",
        example="<cernvm-prod.cern.ch 1234",
    ),
    Setting(
        "cvmfs_wait_on_squid",
        Kind.INT,
        "seconds to wait for the network to come up before mounting",
        default=None,
        minimum=0,
        maximum=9999,
        example="30",
    ),
)

SPEC: dict[str, Setting] = by_key(SETTINGS)

#: name -> help text, for the site's reference page and ``--help``.
KEYS: dict[str, str] = {s.key: s.help for s in SETTINGS}


def unquote(value: str) -> str:
    """``'v'`` and ``"v"`` are ``v`` (people quote values as in shell)."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def check(key: str, value: str) -> str:
    """The value of ``key`` as the init reads it (on/off as 1/0); raises ``table.Invalid``."""
    spec = SPEC.get(key)
    if spec is None:
        raise Invalid(
            f"unknown key{suggest(key, list(SPEC))}", f"keys the bootloader honours: {', '.join(SPEC)}"
        )
    text = table.render(spec, table.from_text(spec, value))
    return spec.canonical(text) if spec.canonical is not None and text else text


class Parsed:
    """The checked key/values, what was wrong, and whether a block was present at all. A plain class:
    dataclasses' import costs seconds in the initrd under TCG."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.messages: list[str] = []
        self.found = False
        self.unreported = 0

    def note(self, message: str) -> None:
        """A bad line: the first MAX_MESSAGES are kept, the rest only counted (``parse`` ends with
        "... N more"). The init writes them to the console: 1 MiB of bad lines was 30 MB, ~45 min of
        boot at 115200 baud."""
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(message)
        else:
            self.unreported += 1


#: bad lines reported one by one; past them, one line says how many more
MAX_MESSAGES = 10
#: lines that start another part of the user data: a block missing its end marker stops there
#: (else every line of a following cloud-config is a bad line of the block)
_NOT_THE_BLOCK = ("#cloud-config", "#!", "--")


#: user data is small (clouds cap it at 16-64 KiB); more than this once inflated is a gzip bomb
MAX_INFLATED = 1 << 20


#: gzip members read one after the other (``cat a.gz b.gz``); a few in practice
MAX_MEMBERS = 64


def gunzip(data: bytes, limit: int = MAX_INFLATED) -> bytes:
    """gzip'd user data inflated, never more than ``limit`` bytes; ValueError when it is damaged, cut
    short or bigger (the standard library's gzip.decompress has no limit)."""
    out: list[bytes] = []
    size = 0
    for _ in range(MAX_MEMBERS):  # every member, as zcat and cloud-init read them: `gzip -c b >> a.gz`
        d = zlib.decompressobj(wbits=31)  # has two; the second ([ucernvm-begin]...) was dropped unsaid
        try:
            out.append(d.decompress(data, limit + 1 - size))
        except zlib.error as e:
            raise ValueError(f"damaged gzip data ({e})") from None
        size += len(out[-1])
        if size > limit:
            raise ValueError(f"gzip data inflates to more than {limit} bytes")
        if not d.eof:
            raise ValueError("gzip data is cut short")
        data = d.unused_data  # a copy of the rest: the member count bounds the copying
        if not data:
            return b"".join(out)
        if data[:2] != b"\x1f\x8b":
            raise ValueError(f"{len(data)} bytes after the gzip data are no gzip member")
    raise ValueError(f"gzip data of more than {MAX_MEMBERS} members")


def _text(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        data = gunzip(data)
    return data.decode("utf-8", errors="replace")


#: a line and its end: LF, CRLF (Windows) or a lone CR (old Mac), as cloud-init reads them (YAML and
#: the ``email`` parser take a lone CR for a line end); not ``str.splitlines``' U+2028, VT, FF...
_LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+")


def raw_lines(text: str) -> list[str]:
    """User data's lines as the init reads them, each with its line end: a BOM (Notepad) dropped, and
    LF, CRLF or a lone CR ends a line (``str.splitlines`` also splits at U+2028, VT, FF..., which
    would honour a key hidden in what looks like one comment). CR-only user data (old Mac) had no
    block to either side, and launch called it valid. The one rule for this parser and
    cernvm-launch's (``launch/userdata.py``), which writes back what it read."""
    return _LINE.findall(text.removeprefix("\ufeff"))


def bare(line: str) -> str:
    """A line without its spaces, tabs and line end (CRLF user data from Windows)."""
    return line.strip(" \t\r\n")


def parse(data: bytes | str) -> Parsed:
    """The checked key/values of the first ``[ucernvm-begin]`` block of ``data``."""
    out = Parsed()
    try:
        text = data if isinstance(data, str) else _text(data)
    except ValueError as e:
        out.messages.append(f"user data ignored: {e}")
        return out
    inside = False
    lines = [bare(raw) for raw in raw_lines(text)]
    # the last end marker's line number, once: a boundary line ends only a block left open
    # (looked up per boundary line, 300,000 '#!' lines of gzip'd user data took ~10 CPU-minutes)
    last_end = max((n for n, line in enumerate(lines, start=1) if line == END), default=0)
    for lineno, line in enumerate(lines, start=1):
        if not inside:
            inside = line == BEGIN
            out.found = out.found or inside
            continue
        if line == END:
            break
        if line.startswith(_NOT_THE_BLOCK) and lineno > last_end:
            out.note(f"line {lineno}: {line[:40]!r} before {END}: the block ends here")
            break
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            out.note(f"line {lineno}: not key=value, ignored: {line[:60]!r}")
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        value = unquote(value)
        if key not in SPEC:
            out.note(f"line {lineno}: unknown key {key[:40]!r} ignored (known: {', '.join(SPEC)})")
            continue
        try:
            out.values[key] = check(key, value)
        except Invalid as e:
            out.note(f"line {lineno}: {key}: {e.message[:80]}, ignored")
    if out.unreported:
        out.messages.append(f"... {out.unreported} more bad lines ignored")
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
