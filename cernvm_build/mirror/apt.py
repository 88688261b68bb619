"""Verify apt repositories: ``InRelease``/``Release`` (+ ``Release.gpg``) → each index's SHA256 and size →
each ``.deb``'s SHA256 and size from ``Packages(.gz|.xz|.bz2)``, and each source package's files
(``.dsc``, ``.orig.tar.*``, ``.debian.tar.*`` …) from ``Checksums-Sha256`` in ``Sources(.gz|…)``.

The source root holds ``dists/`` and ``pool/``; each ``dists/<suite>`` with a Release file is checked
(an HTTP source cannot be listed, so its suites are named by the caller). The publication order keeps
readers safe: pool files and ``by-hash`` indexes first, then the fixed-name indexes, then ``Release``,
``Release.gpg`` and ``InRelease`` last.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from ..debpkg import parse_deb822
from ..errors import CernVMError
from ..fsutil import atomic_write
from ..gpg import Keyring
from ..numtext import decimal
from .check import Checked, Expected, Progress, check_files, decompress
from .source import Source, safe_rel

COMPRESSIONS = ("", ".gz", ".xz", ".bz2", ".lzma", ".zst")
#: in publication order, after every other file
RELEASE_FILES = ("Release", "Release.gpg", "InRelease")


@dataclass
class ReleaseEntry:
    sha256: str
    size: int
    path: str  # relative to dists/<suite>/


def find_suites(files: list[str] | None) -> list[str]:
    """The suites (``dists/<suite>/Release`` or ``InRelease``) in a source's list of files (``None``:
    the source cannot be listed, so none)."""
    if files is None:
        return []
    found = set()
    for f in files:
        m = re.fullmatch(r"dists/(.+)/(InRelease|Release)", f)
        if m:
            found.add(m.group(1))
    # Debian and Ubuntu also publish component Release files (dists/<suite>/main/binary-amd64/Release):
    # they belong to the suite above them, they are not suites
    return sorted(s for s in found if not any(s.startswith(t + "/") for t in found))


def strip_clearsign(text: str) -> str:
    """The signed text of a clearsigned message (only for reading; verification uses gpg)."""
    if not text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        return text
    body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    body = body.split("\n-----BEGIN PGP SIGNATURE-----", 1)[0]
    return "\n".join(ln[2:] if ln.startswith("- ") else ln for ln in body.splitlines()) + "\n"


def verify_apt(
    source: Source,
    *,
    suites: list[str] | None = None,
    keyring: Keyring | None = None,
    jobs: int = 4,
    progress: Progress | None = None,
) -> Checked:
    result = Checked("apt", source.name, signed=keyring is not None)
    files = None if suites else source.list()  # once: a LIST of the whole bucket for an S3 source
    found = suites or find_suites(files)
    if not found:
        hint = " (name them with --suite for an HTTP source)" if files is None else ""
        result.problems.append(f"{source.name}: no dists/<suite>/Release or InRelease{hint}")
        return result
    last_group: list[str] = []
    # a pool file's first (hash, size) claim by any suite: the suites share the pool, so another
    # suite's other claim is a conflict (an HTTP server can answer each suite's download with bytes
    # matching that suite's claim, and only one of them is published)
    claims: dict[str, tuple[str, Expected]] = {}
    for suite in found:
        try:
            release_files = _verify_suite(source, suite, keyring, jobs, progress, result, claims)
        except CernVMError as e:
            result.problems.append(e.message)
            continue
        last_group.extend(release_files)
    # Release files of all suites go after every suite's indexes.
    result.indexes.extend(last_group)
    result.referenced.update(last_group)
    return result


def _verify_suite(
    source: Source,
    suite: str,
    keyring: Keyring | None,
    jobs: int,
    progress: Progress | None,
    result: Checked,
    claims: dict[str, tuple[str, Expected]],
) -> list[str]:
    base = f"dists/{safe_rel(suite)}"
    result.repos.append(suite)
    inrelease = source.read(f"{base}/InRelease")
    release = source.read(f"{base}/Release")
    release_gpg = source.read(f"{base}/Release.gpg") if release is not None else None
    if inrelease is None and release is None:
        raise CernVMError(f"{base}: neither InRelease nor Release exists")
    text: str | None = None
    if keyring is not None:
        if inrelease is not None:
            text = _verified_clearsigned(keyring, inrelease, f"{base}/InRelease", result)
        if release is not None:
            if release_gpg is None:
                if inrelease is None:
                    result.problems.append(f"{base}/Release.gpg: missing, but a signing key was given")
            else:
                _verified_detached(keyring, release, release_gpg, f"{base}/Release.gpg", result)
    if (
        inrelease is not None
        and release is not None
        and strip_clearsign(inrelease.decode(errors="replace")) != release.decode(errors="replace")
    ):
        result.problems.append(f"{base}/InRelease: says something else than {base}/Release")
    if text is None:
        text = strip_clearsign((inrelease or release or b"").decode(errors="replace"))
    stanzas = parse_deb822(text, f"{base}/Release")
    if not stanzas:
        raise CernVMError(f"{base}/Release: empty")
    fields = stanzas[0]
    entries = _entries(fields.get("SHA256", ""), f"{base}/Release", result)
    if not entries:
        result.problems.append(f"{base}/Release: no SHA256 list of index files")
    by_hash = fields.get("Acquire-By-Hash", "").lower() == "yes"

    expected: list[Expected] = []
    present: set[str] = set()
    good: set[str] = set()  # present and matching Release: only these are read for packages
    fixed: list[str] = []
    for e in entries:
        rel = f"{base}/{e.path}"
        got = source.digest(rel, "sha256", e.sha256, e.size)
        if got is None:
            continue  # Release may list uncompressed variants that are not published
        present.add(e.path)
        fixed.append(rel)
        if got[1] != e.size:
            result.problems.append(f"{rel}: size {got[1]}, but {base}/Release says {e.size}")
        elif got[0] != e.sha256:
            result.problems.append(f"{rel}: sha256 mismatch with {base}/Release")
        else:
            good.add(e.path)
        if by_hash:
            folder = f"{base}/{e.path}".rsplit("/", 1)[0]
            bh = f"{folder}/by-hash/SHA256/{e.sha256}"
            expected.append(Expected(bh, "sha256", e.sha256, e.size, f"{base}/Release (by-hash)"))
    for e in entries:
        stem = _strip_compression(e.path)
        if not any(stem + c in present for c in COMPRESSIONS) and _is_index(stem):
            result.problems.append(f"{base}/{e.path}: missing (named by {base}/Release)")
    result.problems.extend(check_files(source, expected, jobs=jobs))
    result.referenced.update(x.rel for x in expected)

    debs: list[Expected] = []
    for stem in sorted({_strip_compression(p) for p in good if _is_packages(p)}):
        variant = next(stem + c for c in COMPRESSIONS if stem + c in good)
        raw = source.read(f"{base}/{variant}")
        if raw is None:
            continue
        try:
            debs.extend(_packages(decompress(variant, raw), f"{base}/{variant}", result))
        except CernVMError as err:
            result.problems.append(err.message)
    sources: list[Expected] = []
    for stem in sorted({_strip_compression(p) for p in good if _is_sources(p)}):
        variant = next(stem + c for c in COMPRESSIONS if stem + c in good)
        raw = source.read(f"{base}/{variant}")
        if raw is None:
            continue
        try:
            count, files = _sources(decompress(variant, raw), f"{base}/{variant}", result)
        except CernVMError as err:
            result.problems.append(err.message)
            continue
        result.source_packages += count
        sources.extend(files)
    result.packages += len({d.rel for d in debs})
    # Every distinct (file, hash, size) is checked: a file named twice with two hashes (two stanzas,
    # or binary-all beside binary-amd64) would fail for the apt client that reads the other entry.
    unique = {(x.rel, x.digest, x.size): x for x in debs + sources}
    named: dict[str, list[Expected]] = {}
    for x in unique.values():
        named.setdefault(x.rel, []).append(x)
    for rel, mine in sorted(named.items()):
        said = [(base, c) for c in mine]
        first = claims.setdefault(rel, said[0])
        if (first[1].digest, first[1].size) != (mine[0].digest, mine[0].size):
            said.insert(0, first)  # another suite claimed it first
        if len(said) > 1:
            says = ", ".join(f"{b} {c.named_by} says {c.digest[:16]}… size {c.size}" for b, c in said)
            result.problems.append(f"{rel}: conflicting hashes ({says})")
    result.problems.extend(check_files(source, list(unique.values()), jobs=jobs, progress=progress))
    result.referenced.update(named)

    # Per suite: the plain-named indexes (apt without by-hash reads these) before the Release files.
    for rel in sorted(fixed):
        if rel not in result.indexes:
            result.indexes.append(rel)
    result.referenced.update(fixed)
    release_files = [f"{base}/{n}" for n in RELEASE_FILES]
    have = {f"{base}/Release": release, f"{base}/Release.gpg": release_gpg, f"{base}/InRelease": inrelease}
    return [r for r in release_files if have[r] is not None]


def published_references(source: Source, suites: list[str]) -> set[str]:
    """Everything the suites' Release files now at ``source`` name (indexes, by-hash, .debs); nothing
    is hashed. Protects the previous publication when the sync manifest is missing."""
    out: set[str] = set()
    scratch = Checked("apt", source.name)
    for suite in suites:
        base = f"dists/{suite}"
        try:
            raw = source.read(f"{base}/InRelease") or source.read(f"{base}/Release")
            if raw is None:
                continue
            stanzas = parse_deb822(strip_clearsign(raw.decode(errors="replace")), base)
            fields = stanzas[0] if stanzas else {}
            for e in _entries(fields.get("SHA256", ""), base, scratch):
                out.add(f"{base}/{e.path}")
                out.add(f"{base}/{e.path}".rsplit("/", 1)[0] + f"/by-hash/SHA256/{e.sha256}")
                if _is_packages(e.path) or _is_sources(e.path):
                    data = source.read(f"{base}/{e.path}")
                    if data is not None:
                        text = decompress(e.path, data)
                        where = f"{base}/{e.path}"
                        named = (
                            _packages(text, where, scratch)
                            if _is_packages(e.path)
                            else _sources(text, where, scratch)[1]
                        )
                        out.update(d.rel for d in named)
        except CernVMError:
            continue
    return out


def _entries(block: str, where: str, result: Checked) -> list[ReleaseEntry]:
    out = []
    for line in block.splitlines():
        parts = line.split()
        if not parts:
            continue
        size = decimal(parts[1]) if len(parts) == 3 else None  # None: no ASCII digits of an int64
        if size is None or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            result.problems.append(f"{where}: malformed SHA256 line '{line.strip()[:300]}'")
            continue
        try:
            out.append(ReleaseEntry(parts[0].lower(), size, safe_rel(parts[2])))
        except CernVMError as e:
            result.problems.append(f"{where}: {e.message}")
    return out


def _packages(text: bytes, where: str, result: Checked) -> list[Expected]:
    out = []
    for i, st in enumerate(parse_deb822(text.decode(errors="replace"), where)):
        name = st.get("Package", f"stanza {i + 1}")
        filename, sha, size = st.get("Filename"), st.get("SHA256"), decimal(st.get("Size") or "")
        if not filename or not sha or size is None:
            result.problems.append(f"{where}: package '{name}' lacks Filename, SHA256 or Size")
            continue
        try:
            rel = safe_rel(filename)
        except CernVMError as e:
            result.problems.append(f"{where}: package '{name}': {e.message}")
            continue
        out.append(Expected(rel, "sha256", sha.lower(), size, where.rsplit("/", 1)[-1]))
    return out


def _sources(text: bytes, where: str, result: Checked) -> tuple[int, list[Expected]]:
    """(source packages, their files) from a Sources index: ``Directory`` + ``Checksums-Sha256``."""
    count = 0
    out = []
    for i, st in enumerate(parse_deb822(text.decode(errors="replace"), where)):
        name = st.get("Package", f"stanza {i + 1}")
        directory, files = st.get("Directory"), st.get("Checksums-Sha256", "").strip()
        if not directory or not files:
            result.problems.append(f"{where}: source package '{name}' lacks Directory or Checksums-Sha256")
            continue
        count += 1
        for line in files.splitlines():
            parts = line.split()
            size = decimal(parts[1]) if len(parts) == 3 else None
            if size is None or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
                result.problems.append(
                    f"{where}: source package '{name}': malformed line '{line.strip()[:300]}'"
                )
                continue
            try:
                rel = safe_rel(f"{directory.rstrip('/')}/{parts[2]}")
            except CernVMError as e:
                result.problems.append(f"{where}: source package '{name}': {e.message}")
                continue
            out.append(Expected(rel, "sha256", parts[0].lower(), size, where.rsplit("/", 1)[-1]))
    return count, out


def _is_sources(path: str) -> bool:
    return _strip_compression(path).rsplit("/", 1)[-1] == "Sources"


def _strip_compression(path: str) -> str:
    for c in COMPRESSIONS[1:]:
        if path.endswith(c):
            return path[: -len(c)]
    return path


def _is_packages(path: str) -> bool:
    return fnmatch.fnmatchcase(_strip_compression(path).rsplit("/", 1)[-1], "Packages")


def _is_index(stem: str) -> bool:
    return stem.rsplit("/", 1)[-1] in ("Packages", "Sources")


def _verified_clearsigned(keyring: Keyring, data: bytes, rel: str, result: Checked) -> str | None:
    path = keyring.home / "InRelease"
    atomic_write(path, data)
    try:
        _, content = keyring.verify_clearsigned(path)
    except CernVMError as e:
        result.problems.append(f"{rel}: {e.message.split(': ', 1)[-1]}")
        return None
    return content.decode(errors="replace")


def _verified_detached(keyring: Keyring, data: bytes, sig: bytes, rel: str, result: Checked) -> None:
    d, s = keyring.home / "Release", keyring.home / "Release.gpg"
    atomic_write(d, data)
    atomic_write(s, sig)
    try:
        keyring.verify_detached(s, d)
    except CernVMError as e:
        result.problems.append(f"{rel}: {e.message.split(': ', 1)[-1]}")
