"""Verify yum/dnf repositories: ``repomd.xml`` (and its signature) → each metadata file's checksum and
size → each package's checksum and size from ``primary.xml(.gz|.xz|.bz2|.zst)``.

A source tree may hold many repositories (``cvmfs/EL/9/x86_64``, ``cvmfs/EL/8/x86_64`` …): every folder
with ``repodata/repomd.xml`` is one. Everything is checked and every finding collected before
anything is refused, so the user sees the whole list at once.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..errors import CernVMError
from ..fsutil import atomic_write
from ..gpg import Keyring
from .check import Checked, Expected, Progress, check_files, decompress
from .gate import VerifyGate
from .hashcache import CHECKSUM_TYPES
from .rpmsig import check_rpm_signatures
from .source import LocalSource, Source, safe_rel

REPO_NS = "{http://linux.duke.edu/metadata/repo}"
COMMON_NS = "{http://linux.duke.edu/metadata/common}"
REPOMD = "repodata/repomd.xml"
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"


#: checksum types that a signed repository may not rely on: md5 collisions take seconds. sha1 ("sha" in
#: old createrepo) stays accepted: the EL4-EL6 repositories kept for preservation are signed with it, a
#: sha1 collision is still a chosen-prefix attack on the repository's own builder, and every package
#: also carries its own rpm signature, checked against the same keys
WEAK_SUMS = frozenset({"md5"})

#: the most packages one primary.xml may list: the largest real repositories (EPEL, Fedora's
#: Everything) list under 100,000; each costs ~1 KB while checked, and minimal entries inflated up to
#: ``check.inflate_limit`` would be ~9 million
MAX_PACKAGES = 1_000_000


def find_repos(files: list[str] | None) -> list[str]:
    """Repository folders (relative, ``""`` for the top) in a source's list of files (``None``: the
    source cannot be listed, so just the top)."""
    if files is None:
        return [""]
    return sorted(f[: -len(REPOMD)].rstrip("/") for f in files if f == REPOMD or f.endswith("/" + REPOMD))


def _join(repo: str, rel: str) -> str:
    return f"{repo}/{rel}" if repo else rel


def _parse(data: bytes, what: str) -> ET.Element:
    try:
        return ET.fromstring(data)
    except ET.ParseError as e:
        raise _not_xml(e, what) from e


def _not_xml(e: ET.ParseError, what: str) -> _Bad:
    line, col = e.position
    return _Bad(f"{what}:{line}:{col}: not valid XML ({e.msg if hasattr(e, 'msg') else e})")


class _Bad(Exception):
    """One problem that stops checking the rest of this repository."""


def verify_yum(
    source: Source,
    *,
    keyring: Keyring | None = None,
    rpm_key: Path | None = None,
    jobs: int = 4,
    progress: Progress | None = None,
    gate: VerifyGate | None = None,
) -> Checked:
    """``rpm_key``: the public key signed packages must verify with (``rpm -K``), for sources whose
    files are on this machine (a folder, a downloaded HTTP source). ``gate``: told when every
    repository's signed metadata are sound, then each package's verdicts as they come (a folder's
    packages are uploaded as soon as they pass, see ``gate``)."""
    result = Checked("yum", source.name, signed=keyring is not None)
    files = source.list()  # once: a LIST of the whole bucket for a published (S3) source
    repos = find_repos(files)
    if not repos:
        result.problems.append(f"{source.name}: no repodata/repomd.xml anywhere")
        return result
    # Every repository's metadata first, then the packages: the indexes to publish last are all known
    # before the first package is judged (and may be uploaded).
    lists: list[list[Expected]] = []
    for repo in repos:
        try:
            packages = _verify_metadata(source, repo, files is not None, keyring, jobs, result)
        except _Bad as e:
            result.problems.append(str(e))
            continue
        if packages is not None:
            lists.append(packages)
    rpm_check = rpm_key is not None and keyring is not None
    overlap = rpm_check and isinstance(source, LocalSource)
    if gate is not None and not result.problems and isinstance(source, LocalSource):
        gate.metadata_checked(result, (e.rel for p in lists for e in p), 2 if overlap else 1)
    key = rpm_key if rpm_check else None
    for packages in lists:
        _verify_packages(source, packages, key, keyring, jobs, progress, result, gate)
    return result


def _verify_metadata(
    source: Source,
    repo: str,
    listable: bool,
    keyring: Keyring | None,
    jobs: int,
    result: Checked,
) -> list[Expected] | None:
    """Check one repository's signed metadata; its packages (None: its package list is unusable)."""
    result.repos.append(repo or ".")
    repomd_rel = _join(repo, REPOMD)
    repomd = source.read(repomd_rel)
    if repomd is None:
        raise _Bad(f"{repomd_rel}: missing")
    indexes = [repomd_rel]
    if keyring is not None:
        asc_rel = repomd_rel + ".asc"
        asc = source.read(asc_rel)
        if asc is None:
            result.problems.append(f"{asc_rel}: missing, but a signing key was given")
        else:
            result.problems.extend(_check_signature(keyring, repomd, asc, repomd_rel))
            indexes.append(asc_rel)
    else:
        for extra in (repomd_rel + ".asc",):
            if source.read(extra) is not None:
                indexes.append(extra)
    # Fixed-name files go last in this order: the repository's public key (so a new key is there before
    # anything signed by it), repomd.xml, its signature.
    key_rel = repomd_rel + ".key"
    if listable and source.read(key_rel) is not None:
        indexes.insert(0, key_rel)

    expected, primary = _metadata(repomd, repomd_rel, repo, result.problems)

    problems = check_files(source, expected, jobs=jobs)
    result.problems.extend(problems)
    result.referenced.update(e.rel for e in expected)
    result.indexes.extend(i for i in indexes if i not in result.indexes)
    result.referenced.update(indexes)
    if any(p.startswith(primary.rel + ":") for p in problems):
        return None  # the package list itself cannot be trusted

    packages = _packages(source, repo, primary)
    weak = sorted({e.algo.lower() for e in expected + packages} & WEAK_SUMS)
    if keyring is not None and weak:
        # the signature covers repomd.xml; what it names is bound to it only by these checksums
        result.problems.append(
            f"{repomd_rel}: {' and '.join(weak)} checksums cannot carry a signature (collisions can be made);"
            " re-create the repository with sha256 (createrepo_c's default)"
        )
    result.packages += len(packages)
    result.referenced.update(p.rel for p in packages)
    # Biggest first, the order the sync uploads new files in: their verdicts come when it needs them.
    return sorted(packages, key=lambda e: -(e.size or 0))


def _verify_packages(
    source: Source,
    packages: list[Expected],
    rpm_key: Path | None,
    keyring: Keyring | None,
    jobs: int,
    progress: Progress | None,
    result: Checked,
    gate: VerifyGate | None,
) -> None:
    def hashed(rel: str, problem: str | None) -> None:
        if gate is not None:
            gate.settle(rel, problem is None)

    with ThreadPoolExecutor(max_workers=1) as rpm_pool:
        signatures: Future[list[str]] | None = None
        if rpm_key is not None and keyring is not None and isinstance(source, LocalSource):
            # A folder's packages are all there: rpmkeys (its own processes, reading every payload) runs
            # while they are hashed. Its findings on packages whose bytes the index refuses are dropped.
            signatures = rpm_pool.submit(_rpm_signatures, source, packages, rpm_key, keyring, gate)
        package_problems = check_files(source, packages, jobs=jobs, progress=progress, on_result=hashed)
        result.problems.extend(package_problems)
        bad = {p.split(":", 1)[0] for p in package_problems}
        if signatures is not None:
            result.problems.extend(p for p in signatures.result() if p.split(":", 1)[0] not in bad)
        elif rpm_key is not None and keyring is not None:
            # Downloaded sources: their local copies exist only once hashed.
            good = [e for e in packages if e.rel not in bad]
            result.problems.extend(_rpm_signatures(source, good, rpm_key, keyring))


#: gpg's validity letters of a revoked and an expired key
_DEAD = ("r", "e")


def _rpm_signatures(
    source: Source, packages: list[Expected], rpm_key: Path, keyring: Keyring, gate: VerifyGate | None = None
) -> list[str]:
    """``check_rpm_signatures`` of the packages that have a local copy (verdicts to ``gate``)."""
    local = [(e.rel, path) for e in packages if (path := source.local_path(e.rel))]
    # rpmkeys (rpm 4.18's own OpenPGP parser) takes a revoked or expired key as good: only the keys
    # gpg holds valid now are handed to it, so a package signed by a dead one is refused; of a live
    # key, only its live subkeys (a revoked signing subkey verified before)
    dead = keyring.dead_primary_fingerprints()
    live = [f for f in keyring.primary_fingerprints() if f not in dead]
    subkeys = keyring.subkeys()
    dead_subs = {f: [s for s, v in subkeys.get(f, []) if v in _DEAD] for f in live}
    keys = [rpm_key]
    if dead or any(dead_subs.values()):
        keys = [keyring.home / f"rpm-{f}.asc" for f in live]
        for f, out in zip(live, keys, strict=True):
            alive = [s for s, v in subkeys.get(f, []) if v not in _DEAD]
            keyring.export(f, out, subkeys=alive if dead_subs[f] else None)
    gone = [*dead, *(f"subkey {s} of {f}" for f, subs in dead_subs.items() for s in subs)]
    note = f" (left out as revoked or expired: {', '.join(gone)})" if gone else ""
    # the remembered verdicts hold for this set of keys: a subkey revoked since is not "ok" from before
    tag = "-".join([*live, *(f"x{s}" for subs in dead_subs.values() for s in subs)])
    return check_rpm_signatures(
        local, keys, tag, getattr(source, "cache", None), on_result=gate.settle if gate else None,
        note=note,
    )  # fmt: skip


def published_references(source: Source, repos: list[str]) -> set[str]:
    """Everything the indexes now at ``source`` name (metadata, packages); nothing is hashed.

    Used to protect the previous publication from deletion when the sync manifest that records
    generations is missing."""
    out: set[str] = set()
    for repo in repos:
        repo = "" if repo == "." else repo
        rel = _join(repo, REPOMD)
        try:
            data = source.read(rel)
            if data is None:
                continue
            expected, primary = _metadata(data, rel, repo, [])
            out.update(e.rel for e in expected)
            out.update(p.rel for p in _packages(source, repo, primary))
        except (_Bad, CernVMError):
            continue
    return out


def _metadata(
    repomd: bytes, repomd_rel: str, repo: str, problems: list[str]
) -> tuple[list[Expected], Expected]:
    """The metadata files ``repomd.xml`` names, and which of them is the primary."""
    root = _parse(repomd, repomd_rel)
    expected: list[Expected] = []
    primary: Expected | None = None
    kinds: set[str] = set()
    for data in root.findall(f"{REPO_NS}data"):
        kind = data.get("type", "?")
        if kind in kinds:
            # dnf (librepo) reads the first record of a type, another reader may take the last:
            # what one of them uses would go unchecked
            problems.append(f"{repomd_rel}: data type '{kind}' is listed twice")
            continue
        kinds.add(kind)
        loc = data.find(f"{REPO_NS}location")
        csum = data.find(f"{REPO_NS}checksum")
        size = data.findtext(f"{REPO_NS}size")
        if loc is None or csum is None or not loc.get("href") or not (csum.text or "").strip():
            problems.append(f"{repomd_rel}: data type '{kind}' lacks a location or checksum")
            continue
        if loc.get(XML_BASE):
            problems.append(f"{repomd_rel}: data type '{kind}' points elsewhere (xml:base)")
            continue
        if csum.get("type", "sha256").lower() not in CHECKSUM_TYPES:
            unknown = f"{repomd_rel}: data type '{kind}': {_unknown(csum)}"
            if kind == "primary":
                raise _Bad(unknown)  # (not also "names no primary metadata")
            problems.append(unknown)
            continue
        try:
            rel = _join(repo, safe_rel(str(loc.get("href"))))
        except CernVMError as e:
            problems.append(f"{repomd_rel}: {e.message}")
            continue
        exp = Expected(rel, csum.get("type", "sha256"), (csum.text or "").strip(), _int(size), repomd_rel)
        expected.append(exp)
        if kind == "primary":
            primary = exp
    if primary is None:
        raise _Bad(f"{repomd_rel}: names no primary metadata")
    return expected, primary


def _packages(source: Source, repo: str, primary: Expected) -> list[Expected]:
    raw = source.read(primary.rel)
    if raw is None:
        raise _Bad(f"{primary.rel}: missing")
    out: list[Expected] = []
    seen: set[str] = set()
    for pkg in _package_elements(decompress(primary.rel, raw), primary.rel):
        name = pkg.findtext(f"{COMMON_NS}name", "?")[:200]
        loc = pkg.find(f"{COMMON_NS}location")
        csum = pkg.find(f"{COMMON_NS}checksum")
        size = pkg.find(f"{COMMON_NS}size")
        if loc is None or csum is None or size is None or not loc.get("href"):
            raise _Bad(f"{primary.rel}: package '{name}' lacks a location, checksum or size")
        if loc.get(XML_BASE):
            raise _Bad(f"{primary.rel}: package '{name}' points elsewhere (xml:base)")
        if csum.get("type", "sha256").lower() not in CHECKSUM_TYPES:
            raise _Bad(f"{primary.rel}: package '{name}': {_unknown(csum)}")
        try:
            rel = _join(repo, safe_rel(str(loc.get("href"))))
        except CernVMError as e:
            raise _Bad(f"{primary.rel}: package '{name}': {e.message}") from e
        if rel in seen:
            # one file is one package: a list naming it again (maybe with another checksum, which
            # one would a reader take?) is broken or hostile, and each copy was hashed and reported
            raise _Bad(f"{primary.rel}: package '{name}': {rel[:200]} is listed twice")
        seen.add(rel)
        if len(seen) > MAX_PACKAGES:
            raise _Bad(f"{primary.rel}: lists more than {MAX_PACKAGES:,} packages (broken or hostile)")
        out.append(
            Expected(
                rel,
                csum.get("type", "sha256"),
                (csum.text or "").strip(),
                _int(size.get("package")),
                primary.rel.rsplit("/", 1)[-1],
            )
        )
    return out


def _package_elements(data: bytes, rel: str) -> Iterator[ET.Element]:
    """The top-level ``<package>`` elements of a primary.xml, each dropped from the tree once used:
    the whole tree of a list inflated up to ``check.inflate_limit`` took ~23 times its size in
    memory (748 MiB for 32 MiB of XML, a 114 KB primary.xml.gz), the packages alone a fraction."""
    depth = 0
    root: ET.Element | None = None
    try:
        for event, elem in ET.iterparse(io.BytesIO(data), events=("start", "end")):
            if event == "start":
                depth += 1
                root = elem if root is None else root
                continue
            depth -= 1
            if depth == 1 and root is not None:
                if elem.tag == f"{COMMON_NS}package":
                    yield elem
                root.remove(elem)  # what is done with
    except ET.ParseError as e:
        raise _not_xml(e, rel) from e


def _check_signature(keyring: Keyring, data: bytes, signature: bytes, rel: str) -> list[str]:
    with_files = keyring.home / "verify"
    with_files.mkdir(exist_ok=True)
    d, s = with_files / "data", with_files / "data.asc"
    atomic_write(d, data)
    atomic_write(s, signature)
    try:
        keyring.verify_detached(s, d)
    except CernVMError as e:
        return [f"{rel}.asc: {e.message.split(': ', 1)[-1]}"]
    return []


def _unknown(csum: ET.Element) -> str:
    return f"unknown checksum type '{str(csum.get('type'))[:40]}' (supported: {', '.join(CHECKSUM_TYPES)})"


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
