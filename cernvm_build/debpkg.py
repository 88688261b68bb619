"""Debian packages as verified build inputs.

``apt-get download`` fetches a package through apt's signed index (Release → Packages), and we check the
file once more against the SHA256 apt's index records for that exact version before using it, so a
stale or tampered cache entry is never unpacked. Packages are cached by name_version_arch.deb.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cachekey, jsonable
from .errors import BuildError, IntegrityError
from .fsutil import atomic_write, reclaim_stale_in, sha256_file, temp_prefix
from .paths import cache_dir
from .proc import run

#: What a Debian package name, version and architecture may hold (Debian policy 5.6.1, 5.6.12; dpkg):
#: checked wherever they come from an index, so none can become a path outside a cache or a huge int.
NAME = re.compile(r"[a-z0-9][a-z0-9+.-]{1,127}")
VERSION = re.compile(r"[0-9]{1,9}:[A-Za-z0-9][A-Za-z0-9.+~:-]{0,255}|[A-Za-z0-9][A-Za-z0-9.+~-]{0,255}")
ARCH = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    arch: str
    path: Path
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return jsonable.to_json(self, omit=("path",))


#: field names Debian does not spell as capitalised words (``_field``)
_SPELLED = {"md5sum": "MD5Sum", "sha1": "SHA1", "sha256": "SHA256", "sha512": "SHA512"}


#: names seen, as ``_field`` spells them: a dict look-up per line (a Packages list has ~1.2 M), the
#: spelling made once per name; cleared past 4096 (a hostile list's made-up names stay bounded)
_FIELDS: dict[str, str] = {}


def _field(name: str) -> str:
    """One spelling of a field name: names are case-insensitive (Policy 5.1), so ``valid-until``
    and ``Valid-Until`` are one field, and apt reads either (audit13d finding 8). Each word
    capitalised (``Pre-Depends``, ``Checksums-Sha256``, as Debian writes them), but ``_SPELLED``."""
    key = name.casefold()
    spelled = _SPELLED.get(key) or "-".join(w[:1].upper() + w[1:] for w in key.split("-"))
    if len(_FIELDS) >= 4096:
        _FIELDS.clear()
    _FIELDS[name] = spelled
    return spelled


def parse_deb822(text: str, where: str = "Debian control data") -> list[dict[str, str]]:
    """Stanzas of a Debian control file; continuation lines are kept (joined with newlines). Field
    names are spelled one way (``_field``: look them up as ``Valid-Until``, ``SHA256``); a field
    given twice in a stanza is an IntegrityError naming ``where``: which one would count is a
    guess (this parser kept the last, apt refuses), and a signed Release with ``Valid-Until`` past
    then future must not pass as current."""
    return list(iter_deb822(text.splitlines(), where))


def iter_deb822(
    lines: Iterable[str], where: str = "Debian control data", keep: frozenset[str] | None = None
) -> Iterator[dict[str, str]]:
    """``parse_deb822`` one stanza at a time, from lines (without their ends) read as they come:
    a list too big to hold is read in constant memory. ``keep``: only these fields are returned,
    each its first line (no continuation line is joined); every field is still checked for repeats."""
    cur: dict[str, str] = {}
    key = None
    n = 0
    for line in lines:
        if not line.strip():
            if cur:
                n += 1
                yield cur if keep is None else {k: v for k, v in cur.items() if k in keep}
            cur, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                cur[key] += "\n" + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            name = name.strip()
            field = _FIELDS.get(name) or _field(name)
            if field in cur:
                raise IntegrityError(
                    f"{where}: stanza {n + 1}: field {name[:60]!r} appears twice",
                    hint="no Debian tool writes a field twice in one stanza: use another mirror or archive",
                )
            cur[field] = value.strip()
            key = field if keep is None else None
    if cur:
        yield cur if keep is None else {k: v for k, v in cur.items() if k in keep}


_RECORDS: dict[str, dict[str, str]] = {}
_MEMO_STATE: str | None = None


def _apt_state() -> str:
    """Changes whenever apt's package index does (``apt-get update``): names, sizes, mtimes of the lists."""
    lists = Path("/var/lib/apt/lists")
    files = sorted(lists.glob("*")) if lists.is_dir() else []
    return cachekey.key({"apt_lists": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]})


def _memo() -> Path:
    return cache_dir("debs") / "apt-records.json"


def _load_memo() -> None:
    """Asking apt takes seconds; its answers are remembered per state of its index."""
    global _MEMO_STATE
    state = _apt_state()
    if state == _MEMO_STATE:
        return
    _RECORDS.clear()
    try:
        saved = json.loads(_memo().read_text())
        if saved.get("state") == state and _usable(saved["records"]):
            _RECORDS.update(saved["records"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    _MEMO_STATE = state


def _usable(records: object) -> bool:
    """Whether a memo's records are as ``_index_records`` wrote them (apt's records, with the fields
    read from them): a damaged memo (a list, a record that is a number) was a TypeError traceback
    in every build that asked for a package; it is asked of apt again."""
    return isinstance(records, dict) and all(
        isinstance(r, dict) and all(isinstance(r.get(k), str) for k in ("Package", "Version", "SHA256"))
        for r in records.values()
    )


def _index_records(specs: tuple[str, ...], what: str = "Debian package") -> tuple[dict[str, str], ...]:
    """apt's index records for the specs, in order; one ``apt-cache`` call for all (it is slow)."""
    _load_memo()
    todo = [s for s in specs if s not in _RECORDS]
    if todo:
        proc = run(["apt-cache", "show", "--no-all-versions", *todo], check=False)
        for rec in parse_deb822(proc.stdout.decode(errors="replace")):
            if "Package" not in rec:
                continue
            _RECORDS.setdefault(rec["Package"], rec)
            _RECORDS.setdefault(f"{rec['Package']}={rec.get('Version', '')}", rec)
        with contextlib.suppress(OSError):
            atomic_write(_memo(), json.dumps({"state": _MEMO_STATE, "records": _RECORDS}).encode())
    missing = [s for s in specs if s not in _RECORDS]
    if missing:
        raise BuildError(
            f"{what} '{missing[0]}' is not known to apt",
            hint="check the name in the profile, and run 'apt-get update' once on this machine",
        )
    return tuple(_RECORDS[s] for s in specs)


def _index_record(spec: str) -> dict[str, str]:
    """The apt index record for ``name`` or ``name=version`` (the candidate when no version)."""
    return _index_records((spec,))[0]


def resolve(spec: str) -> tuple[str, str, str, str]:
    """``(name, version, arch, sha256)`` of a package spec."""
    rec = _index_record(spec)
    return rec["Package"], rec["Version"], rec.get("Architecture", "amd64"), rec["SHA256"]


def resolve_many(specs: list[str] | tuple[str, ...]) -> list[tuple[str, str, str, str]]:
    """``resolve`` for several specs with one apt index look-up."""
    _index_records(tuple(specs))
    return [resolve(s) for s in specs]


def fetch_many(specs: list[str] | tuple[str, ...], cache: Path) -> list[DebPackage]:
    """``fetch`` for several packages, resolving them with one apt index look-up."""
    _index_records(tuple(specs))  # warms the cache that fetch() reads
    return [fetch(s, cache) for s in specs]


def fetch(spec: str, cache: Path) -> DebPackage:
    """Download (or reuse from ``cache``) the package and verify it against apt's SHA256."""
    return fetch_verified(*resolve(spec), cache)


def fetch_verified(
    name: str, version: str, arch: str, want: str, cache: Path, *, offline: bool = False
) -> DebPackage:
    """The package ``name`` ``version`` whose SHA256 must be ``want``: reused from ``cache`` when its
    bytes match, else downloaded with ``apt-get download`` (never when ``offline``) and checked."""
    for what, value, pattern in (
        ("name", name, NAME),
        ("version", version, VERSION),
        ("architecture", arch, ARCH),
    ):
        if not pattern.fullmatch(value):
            raise IntegrityError(
                f"package {name[:80]!r}: {value[:80]!r} is not a Debian package {what}",
                hint="the index that named it is damaged or hostile; it is not fetched",
            )
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
    if dest.exists():
        h = sha256_file(dest)
        if h == want:
            return DebPackage(name, version, arch, dest, want)
        if offline:
            raise IntegrityError(
                f"package {name} {version} in {dest}: sha256 {h} does not match the signed index's {want}",
                hint="the cached file was changed or damaged: delete it and run 'make deps' again",
            )
    elif offline:
        raise BuildError(
            f"package {name} {version} is not in {cache} (offline build)",
            hint="run 'make deps' (or the build without --offline) once to fetch it",
        )
    # named for our pid (``.<deb>.<pid>.<rnd>.tmp``): a download SIGKILLed in apt-get left its
    # ``.dl-<rnd>`` folder for ever, which no later run could tell from a running one's
    reclaim_stale_in(cache)
    with tempfile.TemporaryDirectory(dir=cache, prefix=temp_prefix(dest), suffix=".tmp") as tmp:
        run(
            ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{name}={version}"],
            cwd=Path(tmp),
        )
        got = [p for p in Path(tmp).iterdir() if p.suffix == ".deb"]
        if len(got) != 1:
            raise BuildError(f"apt-get download of '{name}={version}' produced no package file")
        h = sha256_file(got[0])
        if h != want:
            raise IntegrityError(
                f"package {name} {version}: sha256 {h} does not match apt's index {want}",
                hint="run 'apt-get update' and try again; if it persists the mirror is serving a bad file",
            )
        shutil.move(str(got[0]), dest)
    return DebPackage(name, version, arch, dest, want)


def extract(pkg: DebPackage, dest: Path) -> Path:
    """Unpack the package's data into ``dest`` (no maintainer scripts run)."""
    dest.mkdir(parents=True, exist_ok=True)
    # "--": a relative cache ('CERNVM_CACHE_DIR=./-c' is '-c/...' as a Path) was dpkg-deb's options
    run(["dpkg-deb", "-x", "--", pkg.path, dest])
    return dest


def kernel_package(spec: str) -> str:
    """The real kernel package behind a meta package such as ``linux-image-cloud-amd64``."""
    rec = _index_records((spec,), "kernel package")[0]
    if rec["Package"].startswith("linux-image-") and rec["Package"][len("linux-image-") :][:1].isdigit():
        return rec["Package"]
    for dep in rec.get("Depends", "").split(","):
        name = dep.strip().split(" ")[0]
        if name.startswith("linux-image-") and name[len("linux-image-") :][:1].isdigit():
            return name
    raise BuildError(
        f"'{spec}' is not a Linux kernel package and names none in its Depends",
        hint="use a linux-image-* package, e.g. linux-image-cloud-amd64",
    )
