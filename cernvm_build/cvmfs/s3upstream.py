"""S3-backed repositories: the Stratum directory kept in a bucket (``s3://bucket/prefix``).

The layout is the real server's S3 upstream: the prefix holds exactly what a Stratum directory holds
(``.cvmfspublished``, ``.cvmfswhitelist``, ``.cvmfsreflog`` at the top, ``data/XX/<rest><suffix>``
objects); the real ``cvmfs_server`` puts a repository under ``<bucket>/<fqrn>/`` (a "flat" bucket: at
the top), so ``s3://bucket/<fqrn>`` is the same place. The S3 endpoint serves it over plain HTTP at
``<endpoint>/<bucket>/<prefix>`` (the bucket must allow anonymous GET), which clients use as the
Stratum URL.

The transaction's working state stays local, as with the real server's spool: publishing, tagging and
replicating work on a local Stratum directory (the *spool*), which is then pushed through the
mirror's sync engine (``mirror.s3sync.sync_tree``): new objects first, never rewritten (immutable),
then ``stats/stats.db``, ``.cvmfsreflog``, ``.cvmfswhitelist``, ``.cvmfspublished`` last, so a
reader of the bucket sees the old revision or the new one. ``data/txn/`` (locks, scratch, staging)
never leaves the spool. An interrupted push is finished by the next command on that spool (or by a
re-run); a spool behind the bucket (another publisher, a lost spool) is refused before anything is
written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import CvmfsError
from ..mirror.hashcache import HashCache
from ..mirror.s3client import S3Client, S3Url, error_code, make_client, parse_s3_url, s3_error
from ..mirror.s3sync import Checkpoint, SyncReport, sync_tree
from ..paths import cache_dir
from . import manifest as manifest_mod
from .fetch import too_large
from .limits import MAX_MANIFEST_BYTES
from .lock import TXN_DIR, held_lock
from .pubstats import STATS_PATH
from .repository import MANIFEST_FILE

#: uploaded after every object, in this order (the manifest last: it names the rest); these are the
#: files that change under their name (the publish statistics too), every other one is immutable
LAST = (STATS_PATH, ".cvmfsreflog", ".cvmfswhitelist", MANIFEST_FILE, ".cvmfs_last_snapshot")
#: the spool's working state, never published
EXCLUDE = (f"{TXN_DIR}/*", ".cvmfs_is_snapshotting")


def is_s3(target: str | os.PathLike[str]) -> bool:
    return str(target).startswith("s3://")


@dataclass(frozen=True)
class S3Upstream:
    url: S3Url
    spool: Path
    endpoint_url: str | None = None
    profile: str | None = None

    def client(self) -> S3Client:
        return make_client(endpoint_url=self.endpoint_url, profile=self.profile)


def upstream(
    target: str, *, spool: Path | None = None, endpoint_url: str | None = None, profile: str | None = None
) -> S3Upstream:
    """``s3://bucket/prefix`` with its spool: ``spool``, else one per endpoint and URL in the cache."""
    url = parse_s3_url(target)
    if spool is None:
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        digest = hashlib.sha256(f"{endpoint or ''}\n{url}".encode()).hexdigest()[:12]
        spool = cache_dir("cvmfs-s3", f"{url.bucket}.{url.prefix.replace('/', '.') or '_'}.{digest}")
    return S3Upstream(url, spool, endpoint_url, profile)


def remote_manifest(client: S3Client, up: S3Upstream) -> bytes | None:
    key = up.url.key(MANIFEST_FILE)
    try:
        data = bytes(client.get_object(Bucket=up.url.bucket, Key=key)["Body"].read(MAX_MANIFEST_BYTES + 1))
    except Exception as e:
        if error_code(e) in ("NoSuchKey", "404"):
            return None
        raise s3_error(e, f"s3://{up.url.bucket}/{key}") from e
    if len(data) > MAX_MANIFEST_BYTES:  # the bucket's object is anyone's with write access to it
        raise too_large(f"s3://{up.url.bucket}/{key}", "manifest", MAX_MANIFEST_BYTES)
    return data


def _revision(data: bytes, where: str) -> tuple[int, int, str]:
    m = manifest_mod.parse(manifest_mod.split_signed(data, where).body, where)
    return m.revision, m.timestamp, m.fqrn


def check_spool(up: S3Upstream, remote: bytes | None, *, creating: bool) -> None:
    """Refuse a spool that does not hold what the bucket publishes (nothing is written then)."""
    local_file = up.spool / MANIFEST_FILE
    local = local_file.read_bytes() if local_file.is_file() else None
    if creating:
        if local is not None:
            raise CvmfsError(
                f"{up.url}: its working copy {up.spool} already holds a repository (an interrupted create?)",
                hint="publish to the bucket to finish pushing it, or pass another --spool",
            )
        if remote is not None:
            rev, _, fqrn = _revision(remote, f"{up.url}/{MANIFEST_FILE}")
            raise CvmfsError(
                f"{up.url}: already holds repository {fqrn} (revision {rev})",
                hint="publish to it, or create the new repository under another prefix",
            )
        return
    if local is None:
        if remote is None:
            raise CvmfsError(
                f"{up.url}: no repository there (no {MANIFEST_FILE})",
                hint=f"create it first: cernvm-build cvmfs create {up.url} --fqrn NAME --keys DIR",
            )
        raise CvmfsError(
            f"{up.url}: its working copy {up.spool} is missing",
            hint="copy the bucket into it first: cernvm-build cvmfs replicate "
            f"<the bucket's http URL> {up.spool} --key <fqrn>.pub (or pass the --spool that published it)",
        )
    if remote is None or remote == local:
        return
    r_rev, r_ts, _ = _revision(remote, f"{up.url}/{MANIFEST_FILE}")
    l_rev, l_ts, _ = _revision(local, str(local_file))
    if (r_rev, r_ts) < (l_rev, l_ts):
        return  # an earlier push was interrupted: this one finishes it
    raise CvmfsError(
        f"{up.url}: the bucket publishes revision {r_rev}, its working copy {up.spool} revision {l_rev} "
        "(somebody else published)",
        hint="publish from the working copy that made the bucket's revision, or replicate the bucket "
        f"into {up.spool} first",
    )


def check_replica(up: S3Upstream, remote: bytes | None) -> None:
    """Refuse to push a replica's spool over a bucket that publishes a newer revision, or another
    repository: the replication's rollback floor is its spool's manifest, and a fresh spool (another
    machine, a lost cache) replicating a stale source rolled the bucket back (pr18d finding 9)."""
    local_file = up.spool / MANIFEST_FILE
    if remote is None or not local_file.is_file():
        return
    local = local_file.read_bytes()
    if remote == local:
        return
    r_rev, r_ts, r_fqrn = _revision(remote, f"{up.url}/{MANIFEST_FILE}")
    l_rev, l_ts, l_fqrn = _revision(local, str(local_file))
    if r_fqrn != l_fqrn:
        raise CvmfsError(
            f"{up.url}: the bucket publishes repository {r_fqrn}, not {l_fqrn}; nothing was pushed",
            hint="replicate each repository under its own prefix",
        )
    if (r_rev, r_ts) > (l_rev, l_ts):
        raise CvmfsError(
            f"{up.url}: the bucket publishes revision {r_rev}, newer than the replicated {l_rev} "
            "(a stale or rolled-back source); nothing was pushed",
            hint="replicate from the Stratum-0 (or a newer Stratum-1); the objects fetched are kept in "
            f"{up.spool}",
        )


def push(up: S3Upstream, client: S3Client | None = None, checkpoint: Checkpoint | None = None) -> SyncReport:
    """Upload what the bucket lacks from the spool; the signed files last."""
    hashes = HashCache(up.spool / "data" / "txn" / "s3-hashes.json")
    report = sync_tree(
        up.spool,
        str(up.url),
        client=client or up.client(),
        last=LAST,
        delete=False,
        immutable=True,
        exclude=EXCLUDE,
        hash_cache=hashes,
        checkpoint=checkpoint,
    )
    with contextlib.suppress(OSError):
        hashes.save()  # only a cache: the next push re-reads the files
    return report


@dataclass
class Session:
    spool: Path
    pushed: SyncReport | None = None  # set once the block succeeded and the push finished


@contextlib.contextmanager
def session(up: S3Upstream, *, creating: bool = False, replica: bool = False) -> Iterator[Session]:
    """The spool to work on, checked against the bucket first; pushed when the block succeeds.

    ``replica``: a Stratum-1 copy (``replicate`` makes the spool agree with its source itself)."""
    lock = up.spool / "data" / "txn" / "s3-upstream.lock"
    with held_lock(lock, f"push to {up.url}", f"{up.url}: another command is publishing through {up.spool}"):
        client = up.client()
        if not replica:
            check_spool(up, remote_manifest(client, up), creating=creating)
        held = Session(up.spool)
        yield held
        if replica:
            check_replica(up, remote_manifest(client, up))
        held.pushed = push(up, client)
