"""Debian's package index as a verified build input: signed ``InRelease`` → ``Packages`` → each ``.deb``.

The lists apt downloaded (``/var/lib/apt/lists``) are read, never trusted: each suite's ``InRelease`` is
checked with gpg against the Debian archive keyring, the ``Packages`` list against the SHA256 and size
that the signed text records, and every package we use carries the SHA256 of that list, which the
``.deb`` is checked against before it is unpacked (``debpkg.fetch_verified``). So the chain is the one
apt itself follows, re-checked by us, and a build needs apt only to download files into the cache.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..debpkg import parse_deb822
from ..errors import BuildError, IntegrityError
from ..gpg import Keyring
from ..proc import run

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


def _relations(field: str) -> tuple[tuple[Relation, ...], ...]:
    groups = []
    for group in field.split(","):
        alts = []
        for alt in group.split("|"):
            m = re.match(r"\s*([^\s(:]+)(?::\S+)?\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\))?", alt)
            if m and m.group(1):
                alts.append((m.group(1), m.group(2) or "", m.group(3) or ""))
        if alts:
            groups.append(tuple(alts))
    return tuple(groups)


def satisfies(version: str, op: str, wanted: str) -> bool:
    """Whether ``version`` meets the relation ``op wanted`` (``<<``, ``<=``, ``=``, ``>=``, ``>>``);
    an unversioned provide (``version`` '') meets only a relation without one."""
    if not op:
        return True
    if not version:
        return False
    a, b = version_key(version), version_key(wanted)
    return {"<<": a < b, "<=": a <= b, "<": a <= b, "=": a == b, ">=": a >= b, ">>": a > b, ">": a >= b}[op]


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
        if len(parts) == 3 and parts[2] == rel and parts[1].isdigit():
            return parts[0].lower(), int(parts[1])
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


def _version_key(part: str) -> list[tuple[int, int | str]]:
    """dpkg's ordering of one version part: alternating non-digit (with ``~`` lowest) and digit runs."""
    key: list[tuple[int, int | str]] = []
    for nondigit, digit in re.findall(r"(\D*)(\d*)", part):
        if not nondigit and not digit:
            continue
        key.append((0, "".join(_char_order(c) for c in nondigit) + "\x02"))
        key.append((1, int(digit or 0)))
    key.append((0, "\x01"))  # the end of the part: after '~', before anything else
    return key


def _char_order(c: str) -> str:
    # '~' sorts before the end of a part, letters before other characters (dpkg's order)
    if c == "~":
        return "\x00"
    if c.isalpha():
        return chr(0x100 + ord(c))
    return chr(0x200 + ord(c))


def version_key(version: str) -> tuple[int, list[tuple[int, int | str]], list[tuple[int, int | str]]]:
    """A sort key giving Debian's version order (epoch, upstream, revision)."""
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
    return int(epoch or 0), _version_key(upstream), _version_key(revision)


def _parse_packages(text: str, suite: str, arch: str) -> Iterable[IndexPackage]:
    for st in parse_deb822(text):
        if st.get("Architecture") not in (arch, "all") or "SHA256" not in st:
            continue
        yield IndexPackage(
            name=st["Package"],
            version=st["Version"],
            arch=st["Architecture"],
            sha256=st["SHA256"].lower(),
            size=int(st.get("Size", "0")),
            suite=suite,
            essential=st.get("Essential") == "yes",
            priority=st.get("Priority", ""),
            depends=_relations(st.get("Pre-Depends", "") + "," + st.get("Depends", "")),
            provides=tuple(r for g in _relations(st.get("Provides", "")) for r in g),
        )


def load_index(
    suites: tuple[str, ...], *, arch: str = "amd64", lists: Path = LISTS, keyring: Path = KEYRING
) -> Index:
    """The verified index of ``suites`` (later suites' newer versions win, as apt's candidates do)."""
    checked: list[SuiteIndex] = []
    packages: dict[str, IndexPackage] = {}
    with Keyring([keyring]) as kr:
        for suite in suites:
            release = _find_release(lists, suite)
            signer, content = kr.verify_clearsigned(release)
            signed = content.decode(errors="replace")
            rel = f"{COMPONENT}/binary-{arch}/Packages"
            want, size = _release_entry(signed, rel, str(release))
            listed = _list_file(lists, release.name[: -len("_InRelease")], rel)
            data = run(["/usr/lib/apt/apt-helper", "cat-file", listed]).stdout
            got = hashlib.sha256(data).hexdigest()
            if got != want or len(data) != size:
                raise IntegrityError(
                    f"{listed}: sha256 {got} ({len(data)} B) is not {release.name}'s {want} ({size} B)",
                    hint="the list is stale or damaged: run 'apt-get update'",
                )
            checked.append(SuiteIndex(suite, release, signer, want))
            for pkg in _parse_packages(data.decode(errors="replace"), suite, arch):
                old = packages.get(pkg.name)
                if old is None or version_key(pkg.version) > version_key(old.version):
                    packages[pkg.name] = pkg
    providers: dict[str, list[tuple[str, str]]] = {}
    for pkg in packages.values():
        for virtual, _, version in pkg.provides:
            providers.setdefault(virtual, []).append((pkg.name, version))
    return Index(tuple(checked), packages, {k: tuple(sorted(v)) for k, v in providers.items()})
