"""The local demo repository ``demo.cernvm.test``: the demo OS published with the throwaway demo keys.

Its layout is a Stratum directory per repository under one root (``<root>/demo.cernvm.test/…``), which
``cvmfs.serve`` serves as ``http://127.0.0.1:PORT/cvmfs/demo.cernvm.test``. Publishing again is
incremental: an unchanged OS writes (almost) nothing new, and each release of the demo OS gets a tag.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import cachekey, debpkg
from ..bootloader.kernel import Kernel
from ..cvmfs import whitelist
from ..cvmfs.keys import KeySet, load_keys
from ..cvmfs.publish import PublishResult, create_repository, publish_tree, resign_whitelist
from ..cvmfs.repository import SnapshotSpec, forget_signed, open_repository
from ..errors import CernVMError
from ..fsutil import sha256_file
from ..paths import cache_dir, data_dir
from . import DEMO_FQRN
from .os_tree import DEFAULT_EPOCH, PACKAGES, ROOTFS, build_demo_os

KEYS_DIR = data_dir("profiles") / "keys" / "demo"
PUBLIC_KEY = data_dir("profiles") / "keys" / f"{DEMO_FQRN}.pub"
#: Re-sign the whitelist when it has less than this left (it is valid for 30 days).
WHITELIST_MARGIN = dt.timedelta(days=7)


@dataclass(frozen=True)
class DemoRepository:
    root: Path  # what to serve: holds <fqrn>/
    stratum: Path
    fqrn: str
    public_key: Path
    revision: int
    root_hash: str
    tag: str | None
    objects_written: int


def demo_root() -> Path:
    return cache_dir("demo", "repo")


def demo_keys() -> KeySet:
    return load_keys(KEYS_DIR, DEMO_FQRN)


def _keep_whitelist_fresh(stratum: Path, keys: KeySet) -> None:
    path = stratum / ".cvmfswhitelist"
    try:
        wl = whitelist.parse(path.read_bytes(), str(path))
    except Exception:  # a damaged whitelist is replaced by a good one
        resign_whitelist(stratum, DEMO_FQRN, keys)
        return
    if wl.expires - dt.datetime.now(dt.UTC) < WHITELIST_MARGIN:
        resign_whitelist(stratum, DEMO_FQRN, keys)


def _inputs_digest(release: str, tag: str, extra_files: dict[str, str], epoch: int) -> str:
    """What the published tree is made of: packages (by hash), the rootfs files, release, extras
    (``cachekey``: the key of the inputs, compared by the resume marker)."""
    return cachekey.key(
        {
            "release": release,
            "tag": tag,
            "packages": [sha256 for _name, _version, _arch, sha256 in debpkg.resolve_many(PACKAGES)],
            "rootfs": {
                str(p.relative_to(ROOTFS)): sha256_file(p) for p in sorted(ROOTFS.rglob("*")) if p.is_file()
            },
            "extra_files": extra_files,
            "epoch": epoch,
        }
    )


def _current(root: Path, stratum: Path, tag: str, objects: int = 0) -> DemoRepository | None:
    try:
        with open_repository(
            stratum, fqrn=DEMO_FQRN, public_keys=[PUBLIC_KEY], snapshot=SnapshotSpec(tag=tag)
        ) as r:
            return DemoRepository(
                root, stratum, DEMO_FQRN, PUBLIC_KEY, r.revision, r.root_hash, r.tag, objects
            )
    except CernVMError:
        return None


def publish_demo(
    root: Path | None = None,
    *,
    release: str = "1",
    tag: str | None = None,
    extra_files: dict[str, str] | None = None,
    epoch: int = DEFAULT_EPOCH,
) -> DemoRepository:
    """Build the demo OS ``release`` and publish it as a new revision tagged ``tag`` (``demo-<release>``).

    ``extra_files`` (path → text) are added to the tree, e.g. to make a revision that differs; ``epoch``
    is every file's time (part of the inputs' key, like everything else the tree is made of).
    """
    tag = tag or f"demo-{release}"
    digest = _inputs_digest(release, tag, extra_files or {}, epoch)

    def publish(stratum: Path, keys: KeySet) -> PublishResult:
        with tempfile.TemporaryDirectory(prefix="demo-os-") as tmp:
            tree = build_demo_os(Path(tmp) / "os", release=release, epoch=epoch).root
            for rel, text in (extra_files or {}).items():
                target = tree / rel.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            return publish_tree(
                stratum,
                DEMO_FQRN,
                keys,
                tree,
                tag=tag,
                move_tag=True,  # a re-run of other inputs replaces what the demo's tag names
                description=f"CernVM demo OS {release}",
                normalize_owner=True,
                epoch=epoch,
            )

    return _publish_once(root or demo_root(), tag, digest, publish, epoch)


def publish_debian(
    root: Path | None = None,
    *,
    release: str = "12",
    tag: str | None = None,
    epoch: int = DEFAULT_EPOCH,
    kernel: Kernel | None = None,
    offline: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> DemoRepository:
    """Publish the Debian ``release`` tree (``osbuild.debian``, with ``kernel``'s modules) into the demo
    repository under ``tag`` (``debian<release>``); owners are kept (system users own files there)."""
    from ..osbuild.debian import build_debian_tree, reading

    tag = tag or f"debian{release}"
    tree = build_debian_tree(release, epoch=epoch, kernel=kernel, offline=offline, say=say)

    def publish(stratum: Path, keys: KeySet) -> PublishResult:
        with reading(tree.root, say):  # a build of other inputs does not remove it meanwhile
            return publish_tree(
                stratum,
                DEMO_FQRN,
                keys,
                tree.root,
                tag=tag,
                move_tag=True,
                description=f"Debian {release}",
                epoch=epoch,
            )

    return _publish_once(
        root or demo_root(), tag, cachekey.key({"tree": tree.key, "tag": tag}), publish, epoch
    )


def _publish_once(
    root: Path, tag: str, digest: str, publish: Callable[[Path, KeySet], PublishResult], epoch: int
) -> DemoRepository:
    """``publish`` a new revision tagged ``tag`` unless the tag already holds a tree of the same inputs
    (``digest``; one marker per tag, so the demo OS and a Debian tree live side by side).

    Revisions are dated from ``epoch`` (each one second after the last, as ``publish`` does for a
    build time), not the clock: a revision's time is in its catalog, so a publish dated now gave every
    fresh demo repository another root hash, and every release cut from it other image and container
    bytes (and the container's ``created``, the snapshot's time, was the day the demo ran)."""
    stratum = root / DEMO_FQRN
    keys = demo_keys()
    marker = root / f".{DEMO_FQRN}.{tag}.inputs"
    if (stratum / ".cvmfspublished").exists() and cachekey.read_marker(marker, digest) is not None:
        _keep_whitelist_fresh(stratum, keys)
        cached = _current(root, stratum, tag)
        if cached is not None:
            return cached  # same inputs already published: keep the snapshot (and what pins it)
    if not (stratum / ".cvmfspublished").exists():
        create_repository(stratum, DEMO_FQRN, keys, epoch=epoch)
        # a new history under the demo's name, dated from the same epoch: the readers' floor of the
        # last one (a demo repository removed, or another --out) would refuse it as a rollback
        forget_signed(cache_dir("cvmfs"), DEMO_FQRN)
    else:
        _keep_whitelist_fresh(stratum, keys)
    result = publish(stratum, keys)
    cachekey.write_marker(marker, digest, {"tag": tag})
    return DemoRepository(
        root=root,
        stratum=stratum,
        fqrn=DEMO_FQRN,
        public_key=PUBLIC_KEY,
        revision=result.revision,
        root_hash=result.root_hash,
        tag=result.tag,
        objects_written=result.objects_written,
    )
