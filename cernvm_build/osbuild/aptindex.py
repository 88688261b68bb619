"""Debian's package index as a verified build input: signed ``InRelease`` → ``Packages`` → each ``.deb``.

The lists apt downloaded (``/var/lib/apt/lists``) are read, never trusted: each suite's ``InRelease`` is
checked with gpg against the Debian archive keyring, the ``Packages`` list against the SHA256 and size
that the signed text records, and every package we use carries the SHA256 of that list, which the
``.deb`` is checked against before it is unpacked (``debpkg.fetch_verified``). So the chain is the one
apt itself follows, re-checked by us, and a build needs apt only to download files into the cache.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..debpkg import NAME, VERSION, parse_deb822
from ..errors import BuildError, IntegrityError
from ..gpg import Keyring
from ..numtext import decimal
from ..proc import streamed
from ..vercmp import debian_key

LISTS = Path("/var/lib/apt/lists")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
COMPONENT = "main"


@dataclass(frozen=True)
class IndexPackage:
    """One package as the verified index describes it."""

    name: str
    version: str
    arch: str
    sha256: str
    size: int
    suite: str
    essential: bool
    priority: str
    #: Pre-Depends + Depends: each group a tuple of alternatives (``:any`` dropped)
    depends: tuple[tuple[Relation, ...], ...]
    provides: tuple[Relation, ...]  # (name, '=' and version, or '' '')


@dataclass(frozen=True)
class SuiteIndex:
    suite: str
    release_file: Path
    signer: str  # fingerprint of the key that signed InRelease
    packages_sha256: str


@dataclass(frozen=True)
class Index:
    suites: tuple[SuiteIndex, ...]
    packages: dict[str, IndexPackage]  # name → newest version over the suites
    providers: dict[str, tuple[tuple[str, str], ...]]  # virtual → (provider, provided version or '')


Relation = tuple[str, str, str]  # name, operator ('' when any version), version


#: One alternative of a binary package's relation field: name, arch qualifier, (operator version).
_RELATION = re.compile(r"\s*([^\s(:]+)(?::[a-z0-9-]+)?\s*(?:\(\s*(<<|<=|=|>=|>>)\s*([^\s)]+)\s*\))?\s*")


def _relations(field: str) -> tuple[tuple[Relation, ...], ...]:
    """Groups of alternatives; a ValueError names what is not a relation."""
    groups = []
    for group in field.split(","):
        if not group.strip():
            continue  # nothing between two commas (or an empty field)
        alts = []
        for alt in group.split("|"):
            m = _RELATION.fullmatch(alt)
            if not m:
                raise ValueError(
                    f"{alt.strip()[:80]!r} is not a relation (name, then (<< <= = >= >> version))"
                )
            name, op, version = m.group(1), m.group(2) or "", m.group(3) or ""
            if not NAME.fullmatch(name) or (op and not VERSION.fullmatch(version)):
                raise ValueError(f"{alt.strip()[:80]!r} names no Debian package name and version")
            alts.append((name, op, version))
        groups.append(tuple(alts))
    return tuple(groups)


def satisfies(version: str, op: str, wanted: str) -> bool:
    """Whether ``version`` meets the relation ``op wanted`` (``<<``, ``<=``, ``=``, ``>=``, ``>>``);
    an unversioned provide (``version`` '') meets only a relation without one."""
    if not op:
        return True
    if not version:
        return False
    a, b = debian_key(version), debian_key(wanted)
    return {"<<": a < b, "<=": a <= b, "=": a == b, ">=": a >= b, ">>": a > b}[op]


def _release_entry(signed: str, rel: str, where: str) -> tuple[str, int]:
    """SHA256 and size of ``rel`` in the SHA256 section of a Release text."""
    lines = signed.splitlines()
    if "SHA256:" not in lines:
        raise IntegrityError(
            f"{where}: no SHA256 section", hint="the Release file is damaged; run apt-get update"
        )
    for line in lines[lines.index("SHA256:") + 1 :]:
        if not line.startswith(" "):
            break
        parts = line.split()
        size = decimal(parts[1]) if len(parts) == 3 else None
        if size is not None and parts[2] == rel:
            return parts[0].lower(), size
    raise IntegrityError(f"{where}: no SHA256 for {rel}", hint="the Release file does not list this index")


def _list_file(lists: Path, suite_prefix: str, rel: str) -> Path:
    stem = f"{suite_prefix}_{rel.replace('/', '_')}"
    for suffix in ("", ".lz4", ".xz", ".gz", ".zst", ".bz2"):
        if (lists / (stem + suffix)).is_file():
            return lists / (stem + suffix)
    raise BuildError(
        f"{lists}: no list {stem}[.lz4|.xz|.gz] for {rel}",
        hint="run 'apt-get update' once on this machine (the suite must be in apt's sources)",
    )


def _find_release(lists: Path, suite: str) -> Path:
    found = sorted(p for p in lists.glob(f"*_dists_{suite}_InRelease") if "debian" in p.name)
    if not found:
        raise BuildError(
            f"{lists}: no InRelease of the Debian suite '{suite}'",
            hint="add the suite to apt's sources and run 'apt-get update' once on this machine",
        )
    return found[0]


def _parse_packages(text: str, suite: str, arch: str, where: Path) -> Iterable[IndexPackage]:
    """The list's packages of ``arch`` (and ``all``), each stanza checked once: the list is signed,
    but what it says must still be a package dpkg could name (an IntegrityError names the stanza)."""
    for n, st in enumerate(parse_deb822(text, str(where)), 1):
        if st.get("Architecture") not in (arch, "all"):
            continue
        try:
            yield _package(st, suite)
        except ValueError as e:
            raise IntegrityError(
                f"{where}: stanza {n}: {e}",
                hint="the signed list holds an entry no Debian tool writes: use another mirror",
            ) from None


def _package(st: dict[str, str], suite: str) -> IndexPackage:
    for field, pattern in (("Package", NAME), ("Version", VERSION), ("SHA256", _SHA256), ("Size", _SIZE)):
        value = st.get(field)
        if value is None or not pattern.fullmatch(value):
            raise ValueError(
                f"{field} is missing" if value is None else f"{field} {value[:80]!r} is not valid"
            )
    try:
        depends = _relations(st.get("Pre-Depends", "") + "," + st.get("Depends", ""))
        provides = tuple(r for g in _relations(st.get("Provides", "")) for r in g)
    except ValueError as e:
        raise ValueError(f"package {st['Package']}: {e}") from None
    return IndexPackage(
        name=st["Package"],
        version=st["Version"],
        arch=st["Architecture"],
        sha256=st["SHA256"].lower(),
        size=int(st["Size"]),
        suite=suite,
        essential=st.get("Essential") == "yes",
        priority=st.get("Priority", ""),
        depends=depends,
        provides=provides,
    )


_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_SIZE = re.compile(r"[0-9]{1,18}")
#: apt refuses a Release dated ahead of the clock by more than this (and so do we)
MAX_FUTURE = 86400


def _check_release(signed: str, suite: str, where: Path, now: float, *, expiry: bool) -> None:
    """The signed Release is this suite's and current, as apt requires: its Codename (or Suite) is
    ``suite``, its Date is not more than a day ahead and (with ``expiry``) its Valid-Until has not
    passed. A validly signed but old Release (replayed, or a stale mirror) would otherwise build old
    packages."""
    stanzas = parse_deb822(signed, str(where))
    fields = stanzas[0] if stanzas else {}
    if suite not in (fields.get("Codename"), fields.get("Suite")):
        raise IntegrityError(
            f"{where}: the signed Release is of suite {fields.get('Suite', '?')[:40]!r} "
            f"(codename {fields.get('Codename', '?')[:40]!r}), not {suite!r}",
            hint="the list was renamed or replaced: run 'apt-get update' (on the mirror, if it serves one)",
        )
    stale = "the mirror is stale or replays an old Release: run 'apt-get update' (on the mirror too)"
    for field in ("Date", "Valid-Until"):
        raw = fields.get(field)
        if raw is None:
            continue
        try:
            when = email.utils.parsedate_to_datetime(raw).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            raise IntegrityError(f"{where}: {field} {raw[:60]!r} is not a date", hint=stale) from None
        clock = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        if field == "Valid-Until" and expiry and when < now:
            raise IntegrityError(
                f"{where}: the signed Release expired ({field}: {raw}; now {clock})", hint=stale
            )
        if field == "Date" and when > now + MAX_FUTURE:
            raise IntegrityError(
                f"{where}: the signed Release is dated {raw}, over a day after this clock ({clock})",
                hint="check the clock; else " + stale,
            )


def _read_list(listed: Path, want: str, size: int, release: str) -> bytes:
    """The decompressed list, hashed while read and never more than the signed size + 1 bytes in
    memory (a small file that inflates to gigabytes is refused at that point)."""
    h, blocks, n = hashlib.sha256(), [], 0
    with streamed(["/usr/lib/apt/apt-helper", "cat-file", listed]) as tool:
        while n <= size and (block := tool.stdout.read(min(1 << 20, size + 1 - n))):
            h.update(block)
            blocks.append(block)
            n += len(block)
        if n > size:
            tool.proc.kill()
    if n > size:
        raise IntegrityError(
            f"{listed}: longer than the {size} B that {release} records (reading stopped there)",
            hint="the list is stale or damaged: run 'apt-get update'",
        )
    if tool.code != 0:
        raise IntegrityError(
            f"{listed}: cannot be read: {tool.why or f'apt-helper exit {tool.code}'}",
            hint="the list is damaged: run 'apt-get update'",
        )
    got = h.hexdigest()
    if got != want or n != size:
        raise IntegrityError(
            f"{listed}: sha256 {got} ({n} B) is not {release}'s {want} ({size} B)",
            hint="the list is stale or damaged: run 'apt-get update'",
        )
    return b"".join(blocks)


def load_index(
    suites: tuple[str, ...],
    *,
    arch: str = "amd64",
    lists: Path = LISTS,
    keyring: Path = KEYRING,
    now: float | None = None,
) -> Index:
    """The verified index of ``suites`` (later suites' newer versions win, as apt's candidates do).
    ``now``: the time the Releases must be current at (default: this machine's clock, as apt's; not
    the build's SOURCE_DATE_EPOCH, which dates the files and precedes the lists).

    Valid-Until is checked when the lists were not acquired by this machine's apt (another ``lists``
    folder), or when ``now`` is given. apt's own lists passed that check when ``apt-get update``
    fetched them (it refuses an expired Release), and apt installs from them later without checking
    again; doing more here would refuse every build a week after the last update (bookworm-security
    is valid for 7 days) although nothing was replayed. A replay into /var/lib/apt/lists needs root."""
    expiry = now is not None or lists.resolve() != LISTS.resolve()
    now = time.time() if now is None else now
    checked: list[SuiteIndex] = []
    packages: dict[str, IndexPackage] = {}
    with Keyring([keyring]) as kr:
        for suite in suites:
            release = _find_release(lists, suite)
            signer, content = kr.verify_clearsigned(release)
            signed = content.decode(errors="replace")
            _check_release(signed, suite, release, now, expiry=expiry)
            rel = f"{COMPONENT}/binary-{arch}/Packages"
            want, size = _release_entry(signed, rel, str(release))
            listed = _list_file(lists, release.name[: -len("_InRelease")], rel)
            data = _read_list(listed, want, size, release.name)
            checked.append(SuiteIndex(suite, release, signer, want))
            for pkg in _parse_packages(data.decode(errors="replace"), suite, arch, listed):
                old = packages.get(pkg.name)
                if old is None or debian_key(pkg.version) > debian_key(old.version):
                    packages[pkg.name] = pkg
    providers: dict[str, list[tuple[str, str]]] = {}
    for pkg in packages.values():
        for virtual, _, version in pkg.provides:
            providers.setdefault(virtual, []).append((pkg.name, version))
    return Index(tuple(checked), packages, {k: tuple(sorted(v)) for k, v in providers.items()})
