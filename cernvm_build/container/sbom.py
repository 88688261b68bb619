"""An SPDX 2.3 SBOM of an image's tree, from the package database the tree carries.

Debian trees: ``var/lib/dpkg/status`` (stanzas of installed packages). EL trees: the rpm database
(``var/lib/rpm`` or ``usr/lib/sysimage/rpm``), copied to a scratch folder and read with the real
``rpm --dbpath`` (its format is Berkeley DB, NDB or SQLite depending on the release). A tree with
neither gets no SBOM, and the build says so: an empty list of packages would claim a fact nobody
checked.

The document is deterministic (packages sorted, the namespace derived from the tree's root hash or
the package list, ``created`` the image's date), so the same snapshot gives the same SBOM bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..errors import BuildError
from .image import ImageSpec, canonical, digest_of

if TYPE_CHECKING:
    from ..cvmfs.revision import Repository

DPKG_STATUS = "var/lib/dpkg/status"
RPM_DIRS = ("var/lib/rpm", "usr/lib/sysimage/rpm")
MEDIA_TYPE = "application/spdx+json"
#: the rpm query: one line per package, fields separated by tabs
_RPM_FORMAT = "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{LICENSE}\\t%{VENDOR}\\n"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str
    kind: str  # "deb" or "rpm"
    license: str = ""  # as the package database states it (rpm); dpkg records none
    supplier: str = ""

    @property
    def purl(self) -> str:
        ns = "debian" if self.kind == "deb" else "redhat"
        return f"pkg:{self.kind}/{ns}/{quote(self.name)}@{quote(self.version)}?arch={quote(self.arch)}"


@dataclass(frozen=True)
class Sbom:
    source: str  # where the packages were read: "dpkg:var/lib/dpkg/status", "rpm:var/lib/rpm"
    packages: tuple[Package, ...]

    def document(self, *, name: str, created_iso: str, namespace_seed: str) -> bytes:
        seed = hashlib.sha256(f"{namespace_seed} {self.source}".encode()).hexdigest()[:32]
        packages = []
        for i, p in enumerate(self.packages):
            licensed = p.license if p.license and _SPDX_ID.match(p.license) else "NOASSERTION"
            pkg = {
                "SPDXID": f"SPDXRef-Package-{i}",
                "name": p.name,
                "versionInfo": p.version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": licensed,
                "copyrightText": "NOASSERTION",
                "externalRefs": [
                    {
                        "referenceCategory": "PACKAGE-MANAGER",
                        "referenceType": "purl",
                        "referenceLocator": p.purl,
                    }
                ],
            }
            if p.license and licensed == "NOASSERTION":
                pkg["licenseComments"] = f"as the package states it: {p.license}"
            if p.supplier:
                pkg["supplier"] = f"Organization: {p.supplier}"
            packages.append(pkg)
        doc = {
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": name,
            "documentNamespace": f"https://cernvm.cern.ch/spdx/{quote(name, safe='')}-{seed}",
            "creationInfo": {"created": created_iso, "creators": ["Tool: cernvm-build"]},
            "comment": f"installed packages, read from {self.source}",
            "packages": packages,
            "relationships": [
                {
                    "spdxElementId": "SPDXRef-DOCUMENT",
                    "relationshipType": "DESCRIBES",
                    "relatedSpdxElement": p["SPDXID"],
                }
                for p in packages
            ],
        }
        return canonical(doc)


# a single SPDX license id (rpm's "GPLv2+" and friends are older Fedora names: kept as a comment)
_SPDX_ID = re.compile(r"^[A-Za-z0-9.+-]+\Z")


def parse_dpkg_status(text: str, where: str = DPKG_STATUS) -> list[Package]:
    """Installed packages of a dpkg status file (``Status: install ok installed``)."""
    out: list[Package] = []
    for n, stanza in enumerate(re.split(r"\n\s*\n", text)):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") and key:
                continue  # continuation lines (descriptions, conffiles)
            k, sep, v = line.partition(":")
            if not sep:
                raise BuildError(
                    f"{where}: stanza {n + 1}: the line {line[:60]!r} is not 'Field: value'",
                    hint="the tree's dpkg status file is damaged",
                )
            key = k.strip()
            fields[key] = v.strip()
        if not fields or fields.get("Status", "").split()[-1:] != ["installed"]:
            continue
        if "Package" not in fields or "Version" not in fields:
            raise BuildError(
                f"{where}: stanza {n + 1} has no Package or Version", hint="the status file is damaged"
            )
        supplier = fields.get("Maintainer", "").split("<", 1)[0].strip()
        out.append(
            Package(fields["Package"], fields["Version"], fields.get("Architecture", ""), "deb", "", supplier)
        )
    return sorted(out, key=lambda p: (p.name, p.arch, p.version))


#: rpm listing a database: its time, the memory it may map and the largest file it may write
RPM_TIMEOUT = 300.0
RPM_MEMORY = 4 << 30
RPM_FILE = 1 << 30


def _rpm_limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (RPM_MEMORY, RPM_MEMORY))
    resource.setrlimit(resource.RLIMIT_FSIZE, (RPM_FILE, RPM_FILE))


def read_rpmdb(files: dict[str, bytes], where: str) -> list[Package]:
    """Packages of an rpm database (``files``: its file names and contents) read with ``rpm``."""
    if shutil.which("rpm") is None:
        raise BuildError(f"{where}: reading the rpm database needs the rpm tool", hint="apt-get install rpm")
    with tempfile.TemporaryDirectory(prefix="cernvm-rpmdb-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        # The database is the tree's (hostile, maybe): an endless view in rpmdb.sqlite makes rpm
        # sort for ever, spilling to $TMPDIR. Its scratch stays in ours, capped in size and time.
        try:
            proc = subprocess.run(
                ["rpm", "--dbpath", tmp, "-qa", "--queryformat", _RPM_FORMAT],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=RPM_TIMEOUT,
                env={**os.environ, "TMPDIR": tmp, "SQLITE_TMPDIR": tmp},
                preexec_fn=_rpm_limits,
            )
        except subprocess.TimeoutExpired:
            raise BuildError(
                f"{where}: rpm took more than {RPM_TIMEOUT:.0f} s to list the database's packages; stopped",
                hint="a genuine database lists in seconds: this one is damaged or hostile",
            ) from None
    if proc.returncode != 0:
        raise BuildError(
            f"{where}: rpm cannot read the database: {proc.stderr.strip()[-300:]}",
            hint="the rpm on this machine may not know this database format",
        )
    out = []
    for line in proc.stdout.splitlines():
        name, epoch, version, arch, lic, vendor = (line.split("\t") + [""] * 6)[:6]
        if name == "gpg-pubkey":  # imported keys, not packages
            continue
        full = version if epoch in ("", "0", "(none)") else f"{epoch}:{version}"
        out.append(
            Package(
                name, full, arch, "rpm", "" if lic == "(none)" else lic, "" if vendor == "(none)" else vendor
            )
        )
    return sorted(out, key=lambda p: (p.name, p.arch, p.version))


def sbom_of(read: Callable[[str], bytes | None], listdir: Callable[[str], list[str] | None]) -> Sbom | None:
    """The SBOM of a tree given ``read(path)`` (a file's bytes, None when absent) and ``listdir``
    (a directory's file names, None when absent); None when the tree has no package database."""
    status = read(DPKG_STATUS)
    if status is not None:
        text = status.decode("utf-8", "replace")
        return Sbom(f"dpkg:{DPKG_STATUS}", tuple(parse_dpkg_status(text)))
    for d in RPM_DIRS:
        names = listdir(d)
        if names:
            if len(names) > MAX_DB_FILES:
                raise BuildError(
                    f"{d}: {len(names)} files is more than an rpm database has ({MAX_DB_FILES} at most)",
                    hint="the tree is not an OS tree, or is hostile",
                )
            files: dict[str, bytes] = {}
            total = 0
            for n in names:
                data = read(f"{d}/{n}")
                if data is None:
                    continue
                total += len(data)
                if total > MAX_DB_FILE:
                    raise BuildError(
                        f"{d}: the rpm database is bigger than {MAX_DB_FILE >> 20} MiB",
                        hint="the tree is not an OS tree, or is hostile",
                    )
                files[n] = data
            return Sbom(f"rpm:{d}", tuple(read_rpmdb(files, d)))
    return None


#: a package database file (or all of an rpm database's) bigger than this is refused, as is an rpm
#: database folder of more files (memory stays bounded on hostile trees)
MAX_DB_FILE = 512 << 20
MAX_DB_FILES = 64
#: Debian's status file of a big system is ~20 MB
MAX_DPKG_STATUS = 64 << 20


def repository_reader(
    repo: Repository, base: str
) -> tuple[Callable[[str], bytes | None], Callable[[str], list[str] | None]]:
    """``read`` and ``listdir`` for ``sbom_of`` over the snapshot's tree at ``base``."""
    top = base.rstrip("/")

    def read(path: str) -> bytes | None:
        e = repo.lookup(f"{top}/{path}")
        if e is None or not e.is_file:
            return None
        # a status file is parsed as text (decoded, split: three copies): its own, smaller cap
        if e.size > (MAX_DPKG_STATUS if path == DPKG_STATUS else MAX_DB_FILE):
            raise BuildError(
                f"{repo.fqrn}:{top}/{path}: {e.size} bytes is too big for a package database file",
                hint="the tree is not an OS tree, or is hostile",
            )
        return repo.read_bytes(e)

    def listdir(path: str) -> list[str] | None:
        e = repo.lookup(f"{top}/{path}")
        if e is None or not e.is_dir:
            return None
        return sorted(d.path.rsplit("/", 1)[-1] for d in repo.iterdir(f"{top}/{path}") if d.is_file)

    return read, listdir


LABEL_SBOM = "cvmfs.sbom"  # "sha256:<digest of the SPDX document>", or "none"
LABEL_SBOM_SOURCE = "cvmfs.sbom.source"  # where the packages were read, e.g. "dpkg:var/lib/dpkg/status"


def image_sbom(repo: Repository, base: str, spec: ImageSpec) -> tuple[bytes | None, str]:
    """The SPDX document of the snapshot's tree at ``base`` (None without a package database) and a
    sentence saying what was found."""
    sb = sbom_of(*repository_reader(repo, base))
    if sb is None:
        return None, "no SBOM: the tree has no package database (no dpkg status, no rpm database)"
    doc = sb.document(name=spec.reference, created_iso=spec.created_iso, namespace_seed=repo.root_hash)
    return doc, f"SBOM: {len(sb.packages)} packages from {sb.source}"


def sbom_labels(doc: bytes | None) -> dict[str, str]:
    if doc is None:
        return {LABEL_SBOM: "none"}
    data = json.loads(doc)
    return {LABEL_SBOM: digest_of(doc), LABEL_SBOM_SOURCE: str(data["comment"]).rsplit(" ", 1)[-1]}
