"""What is in a package repository, read from its own metadata (never typed by hand).

yum: ``repodata/repomd.xml`` -> the ``primary`` file (checksum verified) -> packages.
apt: ``dists/<suite>/Release`` -> ``<component>/binary-<arch>/Packages[.gz|.xz]`` (SHA256 verified).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..debpkg import iter_deb822, parse_deb822
from ..errors import BuildError, Location
from ..fsutil import TooLarge, read_capped
from ..mirror.hashcache import CHECKSUM_TYPES
from ..vercmp import debian_key, rpm_compare

REPO_NS = "{http://linux.duke.edu/metadata/repo}"
COMMON_NS = "{http://linux.duke.edu/metadata/common}"


@dataclass(frozen=True)
class Package:
    name: str
    version: str  # "[epoch:]version-release" for rpm, the Debian version for deb
    arch: str
    summary: str


@dataclass
class Platform:
    """One installable slice: a yum directory (``EL/9/x86_64``) or an apt suite (``bookworm-prod``).

    Only the newest version of each (name, arch) is kept while the metadata is read, so a list of
    millions of entries costs the memory of its distinct packages (audit17c: a 50 KB Packages.xz held
    5 GB when every entry was kept)."""

    path: str
    kind: str  # "yum" or "apt": which version order decides the newest
    count: int = 0  # package entries the metadata lists (every version)
    best: dict[tuple[str, str], Package] = field(default_factory=dict)

    def add(self, p: Package) -> None:
        self.count += 1
        key = (p.name, p.arch)
        old = self.best.get(key)
        if old is None or (p.version != old.version and self._newer(p.version, old.version)):
            self.best[key] = p

    def _newer(self, a: str, b: str) -> bool:
        if self.kind == "apt":
            return debian_key(a) > debian_key(b)
        return rpm_compare(a, b) > 0

    def latest(self) -> list[Package]:
        """The newest version of each package name (per arch), sorted by name."""
        return sorted(self.best.values(), key=lambda p: (p.name, p.arch))


#: unpacked bytes one package list may hold; the largest real ones (EPEL primary.xml, Debian main
#: Packages) are well under 100 MiB, and past this a tiny compressed file could take minutes and GBs
MAX_UNPACKED = 256 << 20
#: one line of a Packages file; real ones are a few KiB at most
_MAX_LINE = 1 << 20
_DAMAGED = (ET.ParseError, OSError, EOFError, lzma.LZMAError, zlib.error, ValueError)


class _TooBig(Exception):
    pass


#: the most of a repomd.xml or a Release file read: real ones are a few KiB (Debian's Release ~200 KiB)
MAX_RELEASE = 16 << 20


def _read_index(path: Path) -> bytes:
    """A repomd.xml or Release file, read only if it is a regular file of at most ``MAX_RELEASE``
    bytes: a FIFO there blocked the site build for ever."""
    try:
        return read_capped(path, MAX_RELEASE)
    except TooLarge as e:
        raise BuildError(
            f"{path.name} is {e.strerror}",
            where=str(path),
            hint="this is not real repository metadata; sync the mirror again",
        ) from None
    except OSError as e:
        raise BuildError(
            f"{path.name} cannot be read: {e.strerror}", where=str(path), hint="copy the repository again"
        ) from None


class _Capped(io.RawIOBase):
    """A decompressing reader that stops past ``MAX_UNPACKED`` bytes (a decompression bomb)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self._left = MAX_UNPACKED

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self._inner.read(min(len(buf), self._left + 1))
        if len(data) > self._left:
            raise _TooBig
        self._left -= len(data)
        buf[: len(data)] = data
        return len(data)


@contextmanager
def _reading(path: Path, where: Location | str) -> Iterator[IO[bytes]]:
    """``path`` unpacked and capped; every way a damaged or hostile file fails is one BuildError."""
    try:
        with _open(path) as raw, io.BufferedReader(_Capped(raw)) as f:
            yield f
    except _TooBig:
        raise BuildError(
            f"{path.name} unpacks to more than {MAX_UNPACKED >> 20} MiB",
            where=where,
            hint="this is not a real package list (a decompression bomb?); sync the mirror again",
        ) from None
    except _DAMAGED as e:
        raise BuildError(
            f"{path.name} cannot be read: {e}",
            where=where,
            hint="the metadata is damaged or half-copied; sync the mirror again",
        ) from None


def _sha(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _open(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if path.name.endswith(".xz"):
        return lzma.open(path, "rb")
    return open(path, "rb")


def read_yum(root: Path) -> list[Platform]:
    platforms: list[Platform] = []
    for repomd in sorted(root.rglob("repodata/repomd.xml")):
        base = repomd.parent.parent
        where = str(repomd)
        try:
            doc = ET.fromstring(_read_index(repomd))
        except ET.ParseError as e:
            raise BuildError(
                f"repomd.xml is not valid XML: {e}",
                where=where,
                hint="regenerate the repository metadata with createrepo_c",
            ) from None
        primary = None
        for data in doc.findall(f"{REPO_NS}data"):
            if data.get("type") == "primary":
                primary = data
        if primary is None:
            raise BuildError("repomd.xml lists no primary metadata", where=where, hint="run createrepo_c")
        loc = primary.find(f"{REPO_NS}location")
        csum = primary.find(f"{REPO_NS}checksum")
        if loc is None or csum is None or not loc.get("href") or not csum.text:
            raise BuildError("primary entry lacks location or checksum", where=where, hint="run createrepo_c")
        ppath = base / str(loc.get("href"))
        ctype = csum.get("type") or "sha256"
        # the mirror's list: another name hashlib knows (shake_128) had no hexdigest() without a length
        algo = CHECKSUM_TYPES.get(ctype.lower())
        if algo is None:
            raise BuildError(
                f"unknown checksum type '{ctype[:40]}'",
                where=Location(file=where, key="data[primary].checksum"),
                hint="use sha256 metadata",
            )
        if not ppath.is_file():
            raise BuildError(
                f"primary metadata {loc.get('href')} is missing",
                where=where,
                hint="copy the whole repodata/ folder",
            )
        if _sha(ppath, algo) != csum.text.strip():
            raise BuildError(
                f"{ppath.name} does not match its {algo} in repomd.xml",
                where=Location(file=where, key="data[primary].checksum"),
                hint="the metadata is damaged or half-copied; sync it again",
            )
        platform = Platform(base.relative_to(root).as_posix(), "yum")
        with _reading(ppath, str(ppath)) as f:
            root_el = None
            for event, el in ET.iterparse(f, events=("start", "end")):
                if root_el is None:
                    root_el = el
                if event != "end" or el.tag != f"{COMMON_NS}package":
                    continue
                ver = el.find(f"{COMMON_NS}version")
                name = el.findtext(f"{COMMON_NS}name") or ""
                arch = el.findtext(f"{COMMON_NS}arch") or ""
                if ver is not None and name:
                    epoch = ver.get("epoch") or "0"
                    v = f"{ver.get('ver')}-{ver.get('rel')}"
                    if epoch != "0":
                        v = f"{epoch}:{v}"
                    summary = (el.findtext(f"{COMMON_NS}summary") or "").strip()
                    platform.add(Package(name, v, arch, summary))
                root_el.clear()  # drop the packages read so far (el.clear() alone leaves them in the root)
        platforms.append(platform)
    return platforms


def read_apt(root: Path) -> list[Platform]:
    platforms: list[Platform] = []
    for release in sorted(root.glob("dists/*/Release")):
        suite_dir = release.parent
        text = _read_index(release).decode("utf-8", errors="replace")
        fields = parse_deb822(text, str(release))
        if not fields:
            raise BuildError("Release file is empty", where=str(release), hint="regenerate it")
        sums: dict[str, str] = {}
        for line in fields[0].get("SHA256", "").splitlines():
            parts = line.split()
            if len(parts) == 3:
                sums[parts[2]] = parts[0]
        if not sums:
            raise BuildError(
                "Release lists no SHA256 checksums",
                where=Location(file=str(release), key="SHA256"),
                hint="generate it with apt-ftparchive release or reprepro",
            )
        platform = Platform(suite_dir.name, "apt")
        index_names = sorted(
            {n.rsplit("/Packages", 1)[0] for n in sums if "/binary-" in n and "/Packages" in n}
        )
        for stem in index_names:
            chosen = None
            for suffix in ("", ".gz", ".xz"):
                cand = suite_dir / f"{stem}/Packages{suffix}"
                if cand.is_file() and f"{stem}/Packages{suffix}" in sums:
                    chosen = (cand, f"{stem}/Packages{suffix}")
                    break
            if chosen is None:
                continue
            cand, rel = chosen
            if _sha(cand, "sha256") != sums[rel]:
                raise BuildError(
                    f"{rel} does not match its SHA256 in Release",
                    where=Location(file=str(release), key=f"SHA256[{rel}]"),
                    hint="the metadata is damaged or half-copied; sync it again",
                )
            with _reading(cand, str(cand)) as f:
                for st in _stanzas(f, str(cand)):
                    if "Package" in st and "Version" in st:
                        platform.add(
                            Package(
                                st["Package"],
                                st["Version"],
                                st.get("Architecture", ""),
                                st.get("Description", ""),
                            )
                        )
        platforms.append(platform)
    return platforms


def _stanzas(f: IO[bytes], where: str) -> Iterator[dict[str, str]]:
    """The fields the page shows from each stanza of a Packages file, read from the stream by
    ``debpkg.iter_deb822`` (its rules: field names in any case, a repeated field refused), each
    the first line (only the Description's first line is shown), lines bounded here."""
    return iter_deb822(_lines(f, where), where, keep=_APT_FIELDS)


def _lines(f: IO[bytes], where: str) -> Iterator[str]:
    lineno = 0
    while line := f.readline(_MAX_LINE):
        lineno += 1
        if len(line) == _MAX_LINE and not line.endswith(b"\n"):
            raise BuildError(
                f"a line longer than {_MAX_LINE >> 20} MiB",
                where=Location(file=where, line=lineno),
                hint="this is not a real package list; sync the mirror again",
            )
        yield line.decode("utf-8", errors="replace").rstrip("\r\n")


_APT_FIELDS = frozenset(("Package", "Version", "Architecture", "Description"))
