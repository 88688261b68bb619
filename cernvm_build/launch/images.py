"""Boot images for launch: a cache of verified μCernVM images, found by name, profile or path.

Each cached image ``NAME`` sits in ``<home>/images/`` with ``NAME.sha256`` (verified when added or
pulled) and ``NAME.json`` (where it came from, which profile). Cached images are never written:
instances boot them read-only and keep their changes on their own scratch disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .. import jsonable, proc
from ..cvmfs.limits import human
from ..cvmfs.tar_limits import members as tar_members
from ..cvmfs.tar_limits import open_file
from ..errors import CvmfsError, ImageError
from ..fsutil import (
    TooLarge,
    atomic_file,
    atomic_write,
    held_lock,
    read_capped,
    reclaim_stale_in,
    sha256_file,
    temp_prefix,
)
from ..numtext import decimal
from ..report import NULL_REPORTER, Reporter
from . import download, qcow2
from .catalog import FORMATS
from .names import image_name

if TYPE_CHECKING:  # the profile package loads cryptography, which `cernvm-launch --help` must not
    from ..profile import Profile

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
MAX_SHA256_FILE = 4096  # bytes: '<64 hex>  NAME' and a line break
MAX_OVA_TEXT = 1 << 20  # bytes of an OVA's .ovf descriptor or .mf manifest (XML, a few KB)
MAX_SMALL_JSON = 1 << 20  # bytes: a cached image's NAME.json, a build manifest beside an added image
MAX_IMAGE = 32 << 30  # bytes a pull without a size from a verified index may write
Progress = Callable[[int, int | None], None]  # (bytes done, total or None)


@dataclass(frozen=True)
class Image:
    name: str
    path: Path
    format: str
    size: int
    sha256: str
    profile: str = ""
    source: str = ""
    added: str = ""

    def to_json(self) -> dict[str, Any]:
        return jsonable.to_json(self)


def detect_format(path: Path, *, bootable: bool = False) -> str:
    """iso, qcow2 or hdd (raw), from the file's magic numbers rather than its name. With ``bootable``
    a raw image must carry a boot sector (0x55AA) or a GPT header, and anything else is refused."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
            f.seek(0x8001)
            iso = f.read(5)
    except OSError as e:
        raise ImageError(f"cannot read image: {e.strerror}", where=str(path)) from None
    if head[:4] == b"QFI\xfb":
        outside = qcow2.outside_file(qcow2.info(path, ImageError, "image"))
        if outside:  # the guest would read that host file (the seeds' rule, launch/qcow2.py)
            raise ImageError(
                f"the qcow2 image reads {outside}; a boot image must be one self-contained file",
                where=str(path),
                hint=qcow2.flatten_hint(path),
            )
        return "qcow2"
    if iso == b"CD001":
        return "iso"
    if bootable and head[510:512] != b"\x55\xaa" and head[512:520] != b"EFI PART":
        raise ImageError(
            "not a bootable image (no ISO 9660, qcow2, boot sector or GPT)",
            where=str(path),
            hint="give an image that cernvm-build image made (iso, hdd or qcow2)",
        )
    return "hdd"


def read_sha256_file(path: Path) -> str:
    """The hash in a ``.sha256`` file (``HEX`` or ``HEX  NAME``): a regular file of at most
    MAX_SHA256_FILE bytes (a FIFO there was waited on for ever, a folder was a traceback)."""
    try:
        data = read_capped(path, MAX_SHA256_FILE)
    except TooLarge as e:
        raise ImageError(
            f"checksum file is {e.strerror}", where=str(path), hint="expected '<64 hex>  <file>'"
        ) from None
    except OSError as e:
        raise ImageError(
            f"cannot read the checksum file: {e.strerror}",
            where=str(path),
            hint="expected '<64 hex>  <file>'",
        ) from None
    text = data.decode(errors="replace").strip()
    word = text.split()[0] if text else ""
    if not _HEX64.fullmatch(word):
        raise ImageError("checksum file holds no sha256", where=str(path), hint="expected '<64 hex>  <file>'")
    return word.lower()


def verify_checksum(path: Path, expected: str | None = None) -> str:
    """sha256 of ``path``; checked against ``expected`` or the ``.sha256`` beside it when there is one."""
    side = path.with_name(path.name + ".sha256")
    if expected is None and side.exists():
        expected = read_sha256_file(side)
    actual = sha256_file(path)
    if expected is not None and actual != expected.lower():
        raise ImageError(
            f"image checksum mismatch: sha256 is {actual[:16]}…, expected {expected[:16]}…",
            where=str(path),
            hint="the image is damaged or not the one published; fetch it again",
        )
    return actual


def _nothing(holder: str) -> None:
    """(a silent wait)"""


class ImageCache:
    def __init__(self, home: Path) -> None:
        self.dir = home / "images"

    def _meta(self, name: str) -> dict[str, Any]:
        loaded = _small_json(self.dir / f"{name}.json")
        return loaded if isinstance(loaded, dict) else {}

    def list(self) -> list[Image]:
        if not self.dir.is_dir():
            return []
        found = []
        for path in sorted(self.dir.iterdir()):
            if path.name.startswith(".") or path.suffix in (".sha256", ".json") or not path.is_file():
                continue
            meta = self._meta(path.name)
            side = path.with_name(path.name + ".sha256")
            try:  # one damaged entry is shown without a hash, not the end of the listing
                digest = read_sha256_file(side) if side.exists() else ""
            except ImageError:
                digest = ""
            fmt = meta.get("format")
            found.append(
                Image(
                    name=path.name,
                    path=path,
                    format=fmt if fmt in FORMATS else detect_format(path),
                    size=path.stat().st_size,
                    sha256=digest,
                    profile=_text(meta, "profile"),
                    source=_text(meta, "source"),
                    added=_text(meta, "added"),
                )
            )
        return found

    def get(self, name: str) -> Image | None:
        return next((i for i in self.list() if i.name == name), None)

    def for_profile(self, profile: str, names: Sequence[str] = ()) -> Image | None:
        """The newest cached image recorded for ``profile`` (or named as one of ``names``)."""
        matches = [i for i in self.list() if i.profile == profile or (names and i.name in names)]
        return sorted(matches, key=lambda i: (i.added, i.name))[-1] if matches else None

    def _store(self, name: str, digest: str, fmt: str, source: str, profile: str) -> Image:
        if not profile:
            # the same image again (a pull of an image added with --profile, an add again): the
            # profile recorded for those bytes stays (the entry was replaced without it, and
            # `create --profile` no longer found the image)
            before = self.get(name)
            if before is not None and before.sha256 == digest:
                profile = before.profile
        atomic_write(self.dir / f"{name}.sha256", f"{digest}  {name}\n".encode())
        meta = {
            "format": fmt,
            "source": source,
            "profile": profile,
            "added": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        atomic_write(self.dir / f"{name}.json", (json.dumps(meta, indent=1) + "\n").encode())
        image = self.get(name)
        assert image is not None
        return image

    def _entry_lock(
        self, name: str, what: str, waiting: Callable[[str], object]
    ) -> contextlib.AbstractContextManager[None]:
        """One pull or add of the name ``name`` at a time (a flock of ``.<name>.lock``, removed when
        released; a second waits, told who holds it): two at once shared the ``.<name>.pull`` beside
        the entry, and the one whose file the other had moved into place failed ("cannot read image:
        No such file"); of two sources of one name, the recorded sha256 could be the other one's."""
        self._ensure_dir()
        return held_lock(self.dir / f".{name}.lock", what, waiting, remove=True)

    def add(
        self,
        path: Path,
        *,
        profile: str = "",
        name: str | None = None,
        waiting: Callable[[str], object] = _nothing,
    ) -> Image:
        """Copy a local image (a build of this toolkit, or any iso/hdd/qcow2) into the cache, verified."""
        if not path.is_file():
            raise ImageError(
                "image file not found", where=str(path), hint="give the path of an iso/hdd/qcow2"
            )
        name = image_name(name or path.name, "--as" if name else str(path))
        with self._entry_lock(name, f"add of {path}", waiting):
            return self._add(path, name, profile)

    def _add(self, path: Path, name: str, profile: str) -> Image:
        detect_format(path, bootable=True)  # before copying GBs: the copy is checked again below
        side = path.with_name(path.name + ".sha256")
        expected = read_sha256_file(side) if side.exists() else None
        if not profile:
            profile = _profile_from_manifest(path)
        # One read: the copy is hashed as it is written, and the hash and format recorded are the
        # copy's (the file was hashed, then read again to copy: twice the I/O, and what was
        # verified need not be what was copied when the file changed meanwhile).
        partial = self._ensure_dir() / f".{name}.add"
        h = hashlib.sha256()
        try:
            with atomic_file(partial, mode=0o644) as out, open(path, "rb") as src:
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
            digest = h.hexdigest()
            if expected is not None and digest != expected:
                raise ImageError(
                    f"image checksum mismatch: sha256 is {digest[:16]}…, expected {expected[:16]}…",
                    where=str(path),
                    hint="the image is damaged or not the one published; fetch it again",
                )
            try:
                fmt = detect_format(partial, bootable=True)
            except ImageError as e:
                raise ImageError(e.message, where=str(path), hint=e.hint) from None
            os.replace(partial, self.dir / name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        return self._store(name, digest, fmt, str(path.resolve()), profile)

    def pull(
        self,
        url: str,
        *,
        profile: str = "",
        progress: Progress | None = None,
        sha256: str | None = None,
        size: int | None = None,
        waiting: Callable[[str], object] = _nothing,
    ) -> Image:
        """Download ``url``; keep it only if it hashes to ``sha256`` (given by a verified release
        index, with its ``size``), else to what ``url.sha256`` says. At most ``size`` (else
        MAX_IMAGE) bytes are written: a server cannot fill the disk. ``waiting(holder)``: told when
        another pull or add of that name runs, which this one waits for (``_entry_lock``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ImageError(
                f"not an http(s) URL: {url}",
                hint="give https://HOST/PATH of an image; a local file goes to 'images add'",
            )
        name = Path(parts.path).name
        if not name:
            raise ImageError("URL names no file", where=url, hint="give the URL of the image file itself")
        name = image_name(name, url)
        with self._entry_lock(name, f"pull of {url}", waiting):
            return self._pull(url, name, profile, progress, sha256, size)

    def _pull(
        self,
        url: str,
        name: str,
        profile: str,
        progress: Progress | None,
        sha256: str | None,
        size: int | None,
    ) -> Image:
        import requests  # only pulls need it

        cap = size if size is not None else MAX_IMAGE
        try:
            if sha256 is None:
                with download.get(url + ".sha256") as (resp, dl):
                    if resp.status_code != 200:
                        raise ImageError(
                            f"no checksum published (HTTP {resp.status_code} for {name}.sha256)",
                            where=url,
                            hint="images are pulled only with a .sha256 beside them",
                        )
                    body = download.read(resp, url + ".sha256", dl, MAX_SHA256_FILE)
                if len(body) > MAX_SHA256_FILE:
                    raise ImageError(
                        f"checksum file is larger than {MAX_SHA256_FILE} bytes", where=url + ".sha256"
                    )
                words = body.decode(errors="replace").split()
                expected = words[0] if words else ""
            else:
                expected = sha256
            if not _HEX64.fullmatch(expected):
                raise ImageError("checksum file holds no sha256", where=url + ".sha256")
            self.dir.mkdir(parents=True, exist_ok=True)
            reclaim_stale_in(self.dir)  # a pull SIGKILLed mid-download left its GBs for ever
            # downloaded beside the cache's names (a leading dot: not listed) and moved into place
            # only once checked: a failed pull of a cached image's name removed that image
            partial = self.dir / f".{name}.pull"
            with download.get(url) as (r, dl):
                if r.status_code != 200:
                    raise ImageError(f"download failed: HTTP {r.status_code}", where=url)
                total = _length(r.headers)
                done = 0
                h = hashlib.sha256()
                with atomic_file(partial, mode=0o644) as out:  # an error here keeps nothing
                    for chunk in download.body(r, url, dl):
                        if done + len(chunk) > cap:
                            raise ImageError(
                                f"download is larger than {human(cap)}"
                                + (", the size its release index gives" if size is not None else ""),
                                where=url,
                                hint="nothing was kept" + ("" if size is not None else "; is this an image?"),
                            )
                        out.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
                    actual = h.hexdigest()
                    if actual != expected.lower():
                        raise ImageError(
                            f"download does not match its .sha256 ({actual[:16]}… != {expected[:16]}…)",
                            where=url,
                            hint="the download is corrupt or the mirror is stale; nothing was kept",
                        )
        except requests.RequestException as e:
            raise ImageError(
                f"download failed: {type(e).__name__}", where=url, hint=download.reason(e)
            ) from None
        try:
            fmt = detect_format(partial, bootable=True)
            os.replace(partial, self.dir / name)
        except ImageError as e:
            raise ImageError(e.message, where=url, hint=e.hint) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        os.chmod(self.dir, 0o755)
        return self._store(name, expected.lower(), fmt, url, profile)

    def add_ova(self, path: Path) -> Image:
        """The boot disk of an OVA appliance (the first disk its OVF names), checked against the
        OVA's manifest (``.mf``) when it has one, converted to a raw ``hdd`` image in the cache,
        named after the file (checked first, as ``images add`` checks its names: a name starting
        with '.' was cached hidden from ``images list``)."""
        name = image_name(f"{path.stem}.hdd", str(path))
        try:
            tar = open_file(path)
        except (OSError, tarfile.TarError) as e:
            raise ImageError(f"not an OVA (tar) file: {e}", where=str(path)) from None
        except CvmfsError as e:  # launch's own kind of error (its exit code), the same line
            raise ImageError(e.message, hint=e.hint) from None
        # a pid-named temporary (``.<name>.ova.<pid>.<rnd>.tmp``): an import SIGKILLed mid-conversion
        # left its ``.ova-<rnd>`` folder (the whole disk) for ever; ``_ensure_dir`` reclaims it now
        prefix = temp_prefix(self.dir / f"{name}.ova")
        with tar, tempfile.TemporaryDirectory(prefix=prefix, suffix=".tmp", dir=self._ensure_dir()) as tmp:
            # checked as read: a backward PAX size would loop tarfile's own walk (getmembers)
            try:
                found = tar_members(tar, str(path))
            except tarfile.TarError as e:
                raise ImageError(f"not an OVA (tar) file: {e}", where=str(path)) from None
            except CvmfsError as e:  # launch's own kind of error (its exit code), the same line
                raise ImageError(e.message, hint=e.hint) from None
            members = {m.name: m for m in found if m.isfile() and "/" not in m.name.strip("./")}
            ovf = next((n for n in members if n.endswith(".ovf")), None)
            disks = [n for n in members if n.lower().endswith(".vmdk")]
            if ovf is None or not disks:
                raise ImageError("OVA has no .ovf descriptor or no .vmdk disk", where=str(path))
            descriptor = _read_member(tar, members[ovf], path).decode(errors="replace")
            disks.sort(key=lambda n: descriptor.find(n) if n in descriptor else len(descriptor))
            disk = disks[0]
            manifest = next((n for n in members if n.endswith(".mf")), None)
            algorithm, expected = (
                _manifest_entry(
                    _read_member(tar, members[manifest], path).decode(errors="replace"), disk, path
                )
                if manifest is not None
                else (None, "")
            )
            vmdk = Path(tmp, "disk.vmdk")
            actual = _extract_disk(tar, members[disk], vmdk, algorithm, path)
            if actual != expected:
                raise ImageError(
                    f"{disk} does not match the OVA manifest ({(algorithm or '').upper()} {actual[:16]}…)",
                    where=str(path),
                    hint="the appliance is damaged; download it again",
                )
            _check_vmdk(vmdk, disk, path)
            raw = Path(tmp, name)
            proc.run(
                ["qemu-img", "convert", "-f", "vmdk", "-O", "raw", proc.qemu_file(vmdk), proc.qemu_file(raw)]
            )
            detect_format(raw, bootable=True)
            digest = sha256_file(raw)
            os.chmod(raw, 0o644)
            os.replace(raw, self.dir / name)
        return self._store(name, digest, "hdd", str(path.resolve()), "")

    def _ensure_dir(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        # an add (or pull) SIGKILLed mid-copy left ``..<name>.add.<pid>.<n>.tmp`` (GBs) for ever
        reclaim_stale_in(self.dir)
        return self.dir

    def remove(self, name: str, *, in_use_by: Sequence[str] = ()) -> None:
        """Remove a cached image; refused while instances (``in_use_by``) boot from it."""
        if self.get(name) is None:
            raise ImageError(f"no cached image '{name}'", hint="see 'cernvm-launch images list'")
        if in_use_by:
            raise ImageError(
                f"image '{name}' is in use by {', '.join(sorted(in_use_by))}",
                hint="destroy those instances first ('cernvm-launch destroy NAME')",
            )
        for suffix in ("", ".sha256", ".json"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / f"{name}{suffix}").unlink()


@dataclass(frozen=True)
class ImageChoice:
    """How the user named the boot image; the first that is set decides."""

    given: str | None = None  # a file, or the name of a cached image
    profile: Profile | None = None  # the newest cached image built for this profile
    url: str | None = None  # download it (with URL.sha256)
    version: str = "latest"  # else the newest cached image whose name holds this version
    cached_only: bool = False  # ``given`` came from a per-create file: a cached name, never a file
    url_cached_only: bool = False  # ``url`` came from a per-create file: an image pulled from it, no download


def resolve(cache: ImageCache, choice: ImageChoice, *, reporter: Reporter = NULL_REPORTER) -> Image:
    """The image ``choice`` names, or an ImageError saying how to get one."""
    if choice.given:
        path = Path(choice.given).expanduser()
        if not choice.cached_only and path.is_file():
            return Image(path.name, path.resolve(), detect_format(path), path.stat().st_size, "")
        cached = cache.get(choice.given)
        if cached:
            return cached
        if choice.cached_only:
            raise ImageError(
                f"image '{choice.given}' (from the configuration file) is not a cached image",
                hint="see 'cernvm-launch images list'; a file is booted only with --image PATH",
            )
        raise ImageError(
            f"image '{choice.given}' is neither a file nor a cached image",
            hint="see 'cernvm-launch images list', or 'cernvm-launch images add PATH'",
        )
    if choice.profile is not None:
        name = choice.profile.name
        stem = choice.profile.artifact_stem
        found = cache.for_profile(name, [f"{stem}.{fmt}" for fmt in FORMATS])
        if found:
            return found
        raise ImageError(
            f"no image for profile '{name}' in {cache.dir}",
            hint=f"build it ('cernvm-build image {name}') and 'cernvm-launch images add FILE'",
        )
    if choice.url and choice.url_cached_only:
        pulled = [i for i in cache.list() if i.source == choice.url]
        if pulled:
            return sorted(pulled, key=lambda i: (i.added, i.name))[-1]
        raise ImageError(
            f"diskURL '{choice.url}' (from the configuration file) is not downloaded from a per-create file",
            hint="pull it yourself first ('cernvm-launch images pull URL'),"
            " or put diskURL in ~/.cernvm-launch.conf",
        )
    if choice.url:
        reporter.step(f"pulling {choice.url}")
        return cache.pull(
            choice.url,
            progress=lambda done, total: reporter.progress("bytes", done, total),
            waiting=lambda holder: reporter.step(f"waiting for {holder} to finish"),
        )
    known = cache.list()
    if choice.version != "latest":
        known = [i for i in known if choice.version in i.name]
    if known:
        return sorted(known, key=lambda i: (i.added, i.name))[-1]
    raise ImageError(
        "no boot image: none given and none cached",
        hint="pass --image PATH|NAME or --profile NAME, or 'cernvm-launch images add|pull' one first",
    )


_VMDK_SPARSE = (b"KDMV", b"COWD")  # VMDK4 and VMDK3 sparse files: one file holds the disk


def _check_vmdk(vmdk: Path, disk: str, where: Path) -> None:
    """Refuse an OVA disk that is not one self-contained VMDK. A VMDK may be a text descriptor whose
    extents are any files (``RW 2048 FLAT "/home/u/.ssh/id_ed25519" 0``), or a sparse header of
    capacity 0 whose embedded descriptor does the same: qemu-img would copy those host files into
    the cached image (0644) that the appliance's guest then boots from."""
    with open(vmdk, "rb") as f:
        head = f.read(32)
    hint = "an appliance's disk must be one self-contained VMDK (monolithicSparse or streamOptimized)"
    if head[:4] not in _VMDK_SPARSE:
        raise ImageError(
            f"{disk} is no sparse VMDK file (a descriptor naming other files?)", where=str(where), hint=hint
        )
    if head[:4] == b"KDMV" and int.from_bytes(head[12:20], "little") == 0:
        raise ImageError(
            f"{disk} holds no disk of its own (capacity 0: a descriptor)", where=str(where), hint=hint
        )
    info = qcow2.info(vmdk, ImageError, f"OVA disk {disk}")
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    extents = data.get("extents") if isinstance(data, dict) else None
    names = [e.get("filename") for e in extents if isinstance(e, dict)] if isinstance(extents, list) else []
    outside = qcow2.outside_file(info) or next((f"{n}" for n in names if n != str(vmdk)), "")
    if info.get("format") != "vmdk" or outside:
        raise ImageError(
            f"{disk} reads another file ({outside or info.get('format')})", where=str(where), hint=hint
        )


def _read_member(tar: Any, member: Any, where: Path, limit: int = MAX_OVA_TEXT) -> bytes:
    """An OVA's descriptor or manifest: small text, read at most ``limit`` bytes."""
    if member.size > limit:
        raise ImageError(
            f"{member.name} is {member.size} bytes, more than an OVF text file's {limit}", where=str(where)
        )
    f = tar.extractfile(member)
    if f is None:
        raise ImageError(f"cannot read {member.name} from the OVA", where=str(where))
    data: bytes = f.read(limit + 1)
    return data


def _extract_disk(tar: Any, member: Any, dest: Path, algorithm: str | None, where: Path) -> str:
    """``member`` streamed into ``dest`` (its whole bytes were held in memory: an appliance's disk
    can be GBs), hashed with ``algorithm`` on the way; its hex digest ("" without one)."""
    f = tar.extractfile(member)
    if f is None:
        raise ImageError(f"cannot read {member.name} from the OVA", where=str(where))
    h = hashlib.new(algorithm) if algorithm else None
    with open(dest, "wb") as out:
        while chunk := f.read(1 << 20):
            out.write(chunk)
            if h is not None:
                h.update(chunk)
    return h.hexdigest() if h is not None else ""


def _manifest_entry(text: str, disk: str, where: Path) -> tuple[str, str]:
    """OVF manifests list ``SHA1(file)= hex`` or ``SHA256(file)= hex``: (algorithm, hex) of ``disk``."""
    for line in text.splitlines():
        m = re.fullmatch(r"\s*(SHA1|SHA256|SHA512)\((.+)\)\s*=\s*([0-9a-fA-F]+)\s*", line)
        if m and m.group(2) == disk:
            return m.group(1).lower(), m.group(3).lower()
    raise ImageError(f"the OVA manifest lists no hash for {disk}", where=str(where))


def _text(meta: dict[str, Any], key: str) -> str:
    """A string field of a cached image's record; another type (an edited file) reads as unset."""
    value = meta.get(key, "")
    return value if isinstance(value, str) else ""


def _small_json(path: Path, limit: int = MAX_SMALL_JSON) -> Any:
    """The JSON in ``path``, or None when it is no regular file (a FIFO is not waited on), holds more
    than ``limit`` bytes, or is no JSON (nested past the decoder's depth too)."""
    try:
        return json.loads(read_capped(path, limit))
    except (OSError, ValueError, RecursionError):
        return None


def _profile_from_manifest(path: Path) -> str:
    """The profile named by a build manifest next to the image (``*.json`` listing this output)."""
    for candidate in sorted(path.parent.glob("*.json")):
        data = _small_json(candidate)
        if isinstance(data, dict) and path.name in json.dumps(data.get("outputs", data.get("artifacts", ""))):
            profile = data.get("profile")
            if isinstance(profile, dict):
                profile = profile.get("name")
            if isinstance(profile, str):
                return profile
    return ""


def _length(headers: Any) -> int | None:
    """The download's size for the progress bar: its Content-Length when that is one number (one
    repeated with the same value, joined by commas, is that value, as urllib3 takes it). Only for
    the bar: a bad value (urllib3 reads on past it) or a repeated one was a ValueError traceback;
    the cap and the sha256 judge the body."""
    value = headers.get("content-length")
    if value is None:
        return None
    values = {decimal(v.strip()) for v in value.split(",")}
    return (values.pop() or None) if len(values) == 1 else None
