"""Images by name: ``images pull el9`` looks the name up in the release indexes the user configured
(``imageIndexes``: the ``index.json`` that ``cernvm-build release`` publishes) and pulls the image
the newest matching release lists — only after the release's ``SHA256SUMS`` verified against one of
``releaseKeys`` and lists the image with the index's sha256. The download itself is checked against
that sha256 (``ImageCache.pull``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from .. import gpg, releaseindex
from ..errors import CernVMError, ImageError
from ..fsutil import NotRegularFile, read_regular
from ..release import sums
from . import download

#: the image formats, best first: of a release's several images, ``images pull NAME`` takes the first
#: (``find``). hdd first: the launcher attaches it read-only on virtio (``domain.xml.j2``), and
#: SeaBIOS's virtio-blk driver reads the kernel and initrd from it; an iso goes on an emulated IDE
#: CD-ROM, read by ATAPI PIO, which under TCG cost 2.5-2.8 s more qemu CPU per boot before the kernel
#: started (22 MB, paired rounds, issue 13). Both carry the same kernel and initrd, which finds the
#: scratch disk and the context drive on virtio either way; the hdd is ~10 MB more to download.
#: Defined here, not in ``images``: ``cernvm-launch --help`` imports this module, never the profile
#: machinery ``images`` needs.
FORMATS = ("hdd", "iso", "qcow2")


@dataclass(frozen=True)
class CatalogImage:
    name: str  # the file name
    url: str
    sha256: str
    size: int
    format: str
    profile: str
    release: str  # the release version
    #: SHA256SUMS's signature: its key, the date it signed, and the date the key expired since (a
    #: warning: a frozen release outlives its key)
    signed: gpg.Signed


def _http(url: str, limit: int) -> bytes:
    import requests  # only pulls need it

    try:
        with download.get(url) as (r, dl):
            if r.status_code != 200:
                raise ImageError(f"HTTP {r.status_code} for {url}")
            return download.read(r, url, dl, limit)
    except requests.RequestException as e:
        raise ImageError(f"cannot fetch {url}: {type(e).__name__}", hint=download.reason(e)) from None


def fetch(url: str, dest: Path, *, limit: int = 64 << 20) -> Path:
    """``url`` (http, https, file or a plain path) into ``dest``; one ImageError line on failure."""
    scheme = urlsplit(url).scheme
    if scheme in ("", "file"):
        src = Path(urlsplit(url).path if scheme else url)
        try:
            data = read_regular(src, limit)  # a FIFO is refused, not waited on
        except NotRegularFile:
            raise ImageError(f"{src} is not a regular file", hint="name a release file") from None
        except OSError as e:
            raise ImageError(f"cannot read {src}: {e.strerror}") from None
    elif scheme not in ("http", "https"):
        raise ImageError(
            f"not an http(s) or file URL: {url}", hint="e.g. https://example.org/releases/index.json"
        )
    else:
        data = _http(url, limit)
    if len(data) > limit:
        raise ImageError(f"{url} is larger than {limit >> 20} MiB: not a release file")
    dest.write_bytes(data)
    return dest


def find(name: str, indexes: Sequence[str], keys: Sequence[Path], *, fmt: str | None = None) -> CatalogImage:
    """The image ``name`` (a profile or an image file name) of the first index that lists it."""
    if not indexes:
        raise ImageError(
            f"'{name}' is not a URL and no release index is configured",
            hint="set imageIndexes=URL_OF_index.json in ~/.cernvm-launch.conf, or pass --index URL",
        )
    seen: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cernvm-catalog-") as tmp:
        for n, index_url in enumerate(indexes):
            work = Path(tmp) / str(n)
            work.mkdir()
            try:
                release = releaseindex.load(fetch(index_url, work / "index.json"))
            except CernVMError as e:
                raise ImageError(f"release index {index_url}: {e.message}", hint=e.hint) from None
            images = [a for a in release.artifacts if a.kind == "image"]
            seen += sorted({a.profile for a in images})
            matching = [a for a in images if name in (a.profile, a.name) and (fmt is None or a.format == fmt)]
            if not matching:
                continue
            art = min(
                matching, key=lambda a: FORMATS.index(a.format) if a.format in FORMATS else len(FORMATS)
            )
            signed = _verify_sums(release, index_url, work, keys, art.path, art.sha256)
            return CatalogImage(
                art.name, urljoin(index_url, art.path), art.sha256, art.size, art.format, art.profile,
                release.version, signed,
            )  # fmt: skip
    listed = ", ".join(sorted(set(seen))) or "none"
    raise ImageError(f"no image named '{name}' in the release indexes", hint=f"they list: {listed}")


def _verify_sums(
    release: releaseindex.ReleaseIndex,
    index_url: str,
    work: Path,
    keys: Sequence[Path],
    path: str,
    sha256: str,
) -> gpg.Signed:
    if not release.signature:
        raise ImageError(
            f"release {release.version} is not signed",
            where=index_url,
            hint="only signed releases are pulled by name",
        )
    if not keys:
        raise ImageError(
            f"release {release.version} is signed, and no release key is configured to check it",
            hint="set releaseKeys=/path/to/release-key.asc in ~/.cernvm-launch.conf, or pass --key FILE",
        )
    sums_path = fetch(urljoin(index_url, sums.NAME), work / sums.NAME)
    sig = fetch(urljoin(index_url, release.signature), work / "SHA256SUMS.sig")
    try:
        with gpg.Keyring(keys) as kr:
            signed = kr.verify_archived(sig, sums_path)  # a release's signature is a past one
        listed = sums.parse(sums_path)
    except CernVMError as e:
        raise ImageError(f"release {release.version}: {e.message}", where=index_url, hint=e.hint) from None
    if release.signer and signed.signer != release.signer:
        raise ImageError(
            f"release {release.version} is signed by {signed.signer}, its index names {release.signer}"
        )
    if listed.get(path) != sha256:
        raise ImageError(
            f"release {release.version}: SHA256SUMS does not list {path} with the index's sha256",
            where=index_url,
            hint="the index and the signed sums disagree: the release is damaged or tampered with",
        )
    return signed
