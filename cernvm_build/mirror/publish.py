"""Mirror a yum or apt repository to S3: verify the source, then sync it in the safe order.

A refused source leaves the bucket as it was. A folder's signed metadata are verified first; then its
packages are uploaded as each passes its own checks while the rest is verified, and nothing the live
index names changes (no rewrite, index or deletion) until the whole source has passed (``gate``);
a refusal deletes what the run created. Other sources are verified completely before anything moves.
The published indexes (``repomd.xml``, ``InRelease`` …) go last, and the objects the previous ``keep``
publications referenced survive deletion, so readers holding an older index still find everything it
names.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MirrorError
from ..gpg import Keyring
from ..paths import cache_dir
from .apt import published_references as apt_refs
from .apt import verify_apt
from .check import Checked, Progress, SourceBroken
from .gate import VerifyGate
from .hashcache import HashCache, local_error, probe_writable
from .s3client import S3Client, S3Url, make_client, parse_s3_url, s3_error
from .s3sync import JOBS, Checkpoint, SyncReport, sync_tree
from .s3write import prefetch_conditions, settle_probe
from .source import HttpSource, LocalSource, S3Source, Source, open_source
from .uploads import ABORT_OLDER_THAN
from .yum import published_references as yum_refs
from .yum import verify_yum

KINDS = ("yum", "apt")


@dataclass
class MirrorReport:
    checked: Checked
    sync: SyncReport | None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.checked.to_json(), "sync": self.sync.to_json() if self.sync else None}


@contextlib.contextmanager
def keyring_for(gpg_key: Path | None) -> Iterator[Keyring | None]:
    if gpg_key is None:
        yield None
        return
    if not gpg_key.is_file():
        raise MirrorError(f"{gpg_key}: no such key file", hint="give the repository's public key (--gpg-key)")
    with Keyring([gpg_key]) as kr:
        yield kr


def verify_source(
    kind: str,
    source: Source,
    *,
    gpg_key: Path | None = None,
    suites: list[str] | None = None,
    jobs: int = JOBS,
    progress: Progress | None = None,
    gate: VerifyGate | None = None,
) -> Checked:
    """Check a repository completely; the result lists every problem (empty when it is sound).
    ``gate``: verdicts as they come, for a sync running beside (yum; apt hands over none)."""
    if kind not in KINDS:
        raise MirrorError(f"unknown repository kind '{kind}'", hint="use yum or apt")
    with keyring_for(gpg_key) as kr:
        if kind == "yum":
            return verify_yum(source, keyring=kr, rpm_key=gpg_key, jobs=jobs, progress=progress, gate=gate)
        return verify_apt(source, suites=suites, keyring=kr, jobs=jobs, progress=progress)


def verify_published(
    kind: str,
    dest: str,
    *,
    gpg_key: Path | None = None,
    suites: list[str] | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    jobs: int = JOBS,
    progress: Progress | None = None,
    client: S3Client | None = None,
) -> Checked:
    url = parse_s3_url(dest)
    client = client or make_client(endpoint_url=endpoint_url, profile=profile, max_connections=jobs + 4)
    # With a key, yum packages are kept (in a temporary folder) as they are hashed, for rpm -K.
    rpms = kind == "yum" and gpg_key is not None
    with tempfile.TemporaryDirectory(prefix="cernvm-verify-") as stage:
        source = S3Source(client, url, Path(stage) if rpms else None, (".rpm",))
        return verify_source(kind, source, gpg_key=gpg_key, suites=suites, jobs=jobs, progress=progress)


def published_references(kind: str, source: Source, repos: list[str]) -> set[str]:
    if kind == "yum":
        return yum_refs(source, repos)
    return apt_refs(source, repos)


def fnmatch_escape(path: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def mirror(
    kind: str,
    source_spec: str,
    dest: str,
    *,
    gpg_key: Path | None = None,
    suites: list[str] | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    jobs: int = JOBS,
    keep: int = 2,
    dry_run: bool = False,
    delete: bool = True,
    progress: Progress | None = None,
    client: S3Client | None = None,
    rehash: bool = False,
    allow_rewrite: bool = False,
    checkpoint: Checkpoint | None = None,
    abort_uploads_older_than: int | None = ABORT_OLDER_THAN,
) -> MirrorReport:
    """Verify ``source_spec`` (folder or URL) and publish it to ``dest``; SourceBroken if unsound.

    File hashes are remembered by file identity between runs (see ``hashcache``) unless ``rehash``.
    A package whose content changed under a published name is refused (``RewriteRefused``) unless
    ``allow_rewrite``; ``checkpoint`` is called after each step (see ``s3sync.Checkpoint``).
    Unfinished multipart uploads of killed runs, and under ``dest`` those older than
    ``abort_uploads_older_than`` seconds, are aborted (see ``uploads``).
    """
    url = parse_s3_url(dest)
    if kind not in KINDS:
        raise MirrorError(f"unknown repository kind '{kind}'", hint="use yum or apt")
    where = cache_dir("mirror")
    probe_writable(where)  # a full or read-only cache fails here, before anything is read or written
    cache = HashCache(None if rehash else where / "hashes.json")
    # Credentials, endpoint and bucket are checked before the (possibly long) verification.
    client = client or make_client(endpoint_url=endpoint_url, profile=profile, max_connections=jobs + 4)
    check_access(client, url)
    if not dry_run:
        prefetch_conditions(client, url)  # overlaps the verification
    try:
        report = _mirror(kind, source_spec, url, cache, gpg_key, suites, jobs, keep, dry_run, delete,
                         progress, client, allow_rewrite, checkpoint or (lambda e, k: None),
                         abort_uploads_older_than)  # fmt: skip
    except OSError as e:
        raise local_error(e) from e
    finally:
        settle_probe(client, url)
    try:
        cache.save()
    except OSError as e:
        if report.sync is not None:
            report.sync.notes.append(
                f"hash cache not saved ({local_error(e)}); the next run reads every file"
            )
    return report


def check_access(client: S3Client, url: S3Url) -> None:
    """One cheap LIST: bad credentials, a missing bucket or an unreachable endpoint fail here."""
    import botocore.exceptions

    try:
        client.list_objects_v2(Bucket=url.bucket, Prefix=url.list_prefix, MaxKeys=1)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        raise s3_error(e, str(url)) from e


def _mirror(
    kind: str,
    source_spec: str,
    url: S3Url,
    cache: HashCache,
    gpg_key: Path | None,
    suites: list[str] | None,
    jobs: int,
    keep: int,
    dry_run: bool,
    delete: bool,
    progress: Progress | None,
    client: S3Client,
    allow_rewrite: bool,
    checkpoint: Checkpoint,
    abort_older_than: int | None,
) -> MirrorReport:
    source = open_source(source_spec, cache_dir("mirror", "staging"), cache)
    if isinstance(source, LocalSource) and not dry_run:
        # The packages of a folder are uploaded as soon as each has passed its checks, while the rest
        # of the source is verified (see ``gate``).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cernvm-verify") as pool:
            gate = VerifyGate(lambda: checkpoint("verified", ""))
            gate.verification = pool.submit(
                _verify_local, kind, source, gpg_key, suites, jobs, progress, gate
            )
            if gate.wait_metadata():
                assert gate.checked is not None
                return MirrorReport(
                    gate.checked,
                    _sync(kind, source.root, url, gate.checked, client, jobs, keep, dry_run, delete, progress,
                          cache, allow_rewrite, checkpoint, gate, abort_older_than),
                )  # fmt: skip
            checked = gate.finish()  # refused before anything was planned, or not handed over
    else:
        prehash = source.prehashing(os.cpu_count() or 1) if isinstance(source, LocalSource) else nullcontext()
        with prehash:
            checked = verify_source(kind, source, gpg_key=gpg_key, suites=suites, jobs=jobs,
                                    progress=progress)  # fmt: skip
        if checked.problems:
            raise SourceBroken(source.name, checked.problems)
        checkpoint("verified", "")
    if isinstance(source, HttpSource):
        source.prune(checked.referenced)
        tree = source.staging
    else:
        assert isinstance(source, LocalSource)
        tree = source.root
    return MirrorReport(
        checked,
        _sync(kind, tree, url, checked, client, jobs, keep, dry_run, delete, progress, cache, allow_rewrite,
              checkpoint, None, abort_older_than),
    )  # fmt: skip


def _verify_local(
    kind: str,
    source: LocalSource,
    gpg_key: Path | None,
    suites: list[str] | None,
    jobs: int,
    progress: Progress | None,
    gate: VerifyGate,
) -> Checked:
    """The verification thread of a folder: hashed into the cache in the background, verdicts to
    ``gate``; the gate learns when it ends, whatever the outcome (nothing waits forever)."""
    try:
        with source.prehashing(os.cpu_count() or 1):
            return verify_source(
                kind, source, gpg_key=gpg_key, suites=suites, jobs=jobs, progress=progress, gate=gate
            )
    finally:
        gate.ended()


def _sync(
    kind: str,
    tree: Path,
    url: S3Url,
    checked: Checked,
    client: S3Client,
    jobs: int,
    keep: int,
    dry_run: bool,
    delete: bool,
    progress: Progress | None,
    cache: HashCache,
    allow_rewrite: bool,
    checkpoint: Checkpoint,
    gate: VerifyGate | None,
    abort_older_than: int | None,
) -> SyncReport:
    return sync_tree(
        tree,
        str(url),
        client=client,
        last=[fnmatch_escape(i) for i in checked.indexes],
        delete=delete,
        dry_run=dry_run,
        progress=progress,
        jobs=jobs,
        keep=keep,
        generation=checked.referenced,
        hash_cache=cache,
        fallback_protect=lambda: published_references(kind, S3Source(client, url), checked.repos),
        immutable=True,
        allow_rewrite=allow_rewrite,
        checkpoint=checkpoint,
        # Signed index sets are what a killed sync must not leave mixed (unsigned index files have no
        # signature to disagree with; apt's by-hash readers never read the fixed-name ones).
        detached_index=any(i.endswith((".asc", ".gpg", "InRelease")) for i in checked.indexes),
        gate=gate,
        abort_uploads_older_than=abort_older_than,
    )
