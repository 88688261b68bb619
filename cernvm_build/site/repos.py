"""What is in a package repository, read from its own metadata (never typed by hand).

yum: ``repodata/repomd.xml`` -> the ``primary`` file (checksum verified) -> packages.
apt: ``dists/<suite>/Release`` -> ``<component>/binary-<arch>/Packages[.gz|.xz]`` (SHA256 verified).
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..debpkg import parse_deb822
from ..errors import BuildError, Location

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
    """One installable slice: a yum directory (``EL/9/x86_64``) or an apt suite (``bookworm-prod``)."""

    path: str
    packages: list[Package] = field(default_factory=list)

    def latest(self) -> list[Package]:
        """The newest version of each package name (per arch), sorted by name."""
        best: dict[tuple[str, str], Package] = {}
        for p in self.packages:
            key = (p.name, p.arch)
            if key not in best or _vkey(p.version) > _vkey(best[key].version):
                best[key] = p
        return sorted(best.values(), key=lambda p: (p.name, p.arch))


def _vkey(v: str) -> tuple[tuple[int, object], ...]:
    # Good enough ordering for display (rpmvercmp/dpkg order differ in corner cases we do not show).
    out: list[tuple[int, object]] = []
    num = ""
    word = ""
    for ch in v + "\0":
        if ch.isdigit():
            if word:
                out.append((0, word))
                word = ""
            num += ch
        else:
            if num:
                out.append((1, int(num)))
                num = ""
            if ch.isalpha():
                word += ch
            elif word:
                out.append((0, word))
                word = ""
    return tuple(out)


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
            doc = ET.parse(repomd).getroot()
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
        algo = "sha1" if ctype == "sha" else ctype
        if algo not in hashlib.algorithms_available:
            raise BuildError(f"unknown checksum type '{ctype}'", where=where, hint="use sha256 metadata")
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
        opener = (
            gzip.open if ppath.name.endswith(".gz") else lzma.open if ppath.name.endswith(".xz") else open
        )
        packages: list[Package] = []
        with opener(ppath, "rb") as f:
            for _, el in ET.iterparse(f):
                if el.tag != f"{COMMON_NS}package":
                    continue
                ver = el.find(f"{COMMON_NS}version")
                name = el.findtext(f"{COMMON_NS}name") or ""
                arch = el.findtext(f"{COMMON_NS}arch") or ""
                if ver is None or not name:
                    continue
                epoch = ver.get("epoch") or "0"
                v = f"{ver.get('ver')}-{ver.get('rel')}"
                if epoch != "0":
                    v = f"{epoch}:{v}"
                summary = (el.findtext(f"{COMMON_NS}summary") or "").strip()
                packages.append(Package(name, v, arch, summary))
                el.clear()
        platforms.append(Platform(base.relative_to(root).as_posix(), packages))
    return platforms


def read_apt(root: Path) -> list[Platform]:
    platforms: list[Platform] = []
    for release in sorted(root.glob("dists/*/Release")):
        suite_dir = release.parent
        fields = parse_deb822(release.read_text(encoding="utf-8"))
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
        packages: list[Package] = []
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
            with _open(cand) as f:
                text = f.read().decode("utf-8", errors="replace")
            for st in parse_deb822(text):
                if "Package" in st and "Version" in st:
                    summary = st.get("Description", "").split("\n", 1)[0]
                    packages.append(
                        Package(st["Package"], st["Version"], st.get("Architecture", ""), summary)
                    )
        platforms.append(Platform(suite_dir.name, packages))
    return platforms
