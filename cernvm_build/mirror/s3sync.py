"""Sync a local tree to ``s3://bucket/prefix``: planned by content hash, published in a safe order.

Planning. Each object we write carries its SHA-256 in ``x-amz-meta-sha256``. An ETag is never read as
an MD5 (multipart uploads, SSE and some servers break that); it is only an opaque "this object has not
changed" token. A manifest object (``.cernvm-sync.json`` under the prefix) caches key → (ETag, size,
SHA-256) from the last sync, so a re-sync costs one LIST plus one GET: an object whose listed ETag and
size still match the manifest has the recorded hash; any other object of the same size as the local
file is asked (HEAD) for its stored hash. So same-size edits are found, and unchanged files cost nothing.

Publishing, in this order, so that no reader ever sees an index naming an absent object:
1. new objects not named by ``last`` (packages, hash-named metadata), in parallel;
2. objects whose content changes under the same name (rewrites), in one batch right before
3. the ``last`` files (fixed-name indexes such as ``repomd.xml``, ``InRelease``), pattern by pattern;
4. deletions of stale objects, except the objects the previous ``keep`` generations referenced;
5. the manifest.
With a ``gate`` (the mirror verifying its source beside the sync), step 1 holds each new object until
the gate allows it, and steps 2–5 wait for the whole verification; when the gate refuses the source,
every object this run created is deleted again, so the bucket ends as it was (see ``gate``).
With ``immutable`` (package mirrors: a published name never changes content) rewrites are refused
before anything is written unless ``allow_rewrite``; then the batch is the only time the live index
can name bytes that no longer match it, and ``SyncReport.rewritten``/``exposure_s`` say how long.
Every write is conditioned on the state the plan saw: ``If-None-Match: *`` for new keys and
``If-Match: <ETag>`` for changed ones, so two publishers cannot interleave (412 → ConflictError).
Servers that ignore or refuse conditional headers are detected with a probe object; for them the
``last`` files are checked with a HEAD just before they are written (narrower, but not zero, race).
Interrupted anywhere, a re-run plans again from what is there and finishes the job.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .. import jsonable
from ..errors import MirrorError
from ..paths import cache_dir
from .hashcache import HashCache
from .indexwriter import IndexWriter
from .s3client import S3Client, S3Url, make_client, parse_s3_url, watching
from .s3plan import (
    MANIFEST,
    Action,
    LocalFile,
    Manifest,
    Plan,
    Progress,
    check_key_lengths,
    last_rank,
    make_plan,
    matches,
    scan_local,
)
from .s3write import (
    Conditions,
    ConflictError,
    Writer,
    content_type,
    delete_objects,
    run_parallel,
    server_conditions,
    write_manifest,
)
from .uploads import ABORT_OLDER_THAN, UploadLog, sweep

__all__ = [
    "MANIFEST",
    "Checkpoint",
    "ConflictError",
    "LocalFile",
    "Progress",
    "RewriteRefused",
    "SyncReport",
    "content_type",
    "last_rank",
    "matches",
    "sync_tree",
]


@dataclass
class SyncReport:
    dest: str
    actions: list[Action] = field(default_factory=list)
    unchanged: int = 0
    kept: list[str] = field(default_factory=list)
    dry_run: bool = False
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0
    conditional_writes: bool | None = None
    requests: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: objects whose content changed under the same name, written in one batch before the indexes
    rewritten: list[str] = field(default_factory=list)
    #: seconds from the first rewrite to the last index written (0 without rewrites)
    exposure_s: float = 0.0
    #: keys of unfinished multipart uploads aborted (killed syncs' own, and old ones under the prefix)
    aborted_uploads: list[str] = field(default_factory=list)

    @property
    def uploads(self) -> list[Action]:
        return [a for a in self.actions if a.op != "delete"]

    @property
    def deletions(self) -> list[Action]:
        return [a for a in self.actions if a.op == "delete"]

    def to_json(self) -> dict[str, Any]:
        return jsonable.to_json(self)


#: ``checkpoint(event, key)`` after each step of a sync: "planned", "uploaded" (each new object),
#: "rewritten" (each), "index" (each), "deleted", "manifest". Tests pass one to stop a sync at a
#: chosen point (e.g. SIGKILL after the Nth upload).
Checkpoint = Callable[[str, str], None]


class RewriteRefused(MirrorError):
    """Published objects would change content under the same name; ``files`` lists them."""

    def __init__(self, dest: str, files: list[str]):
        shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        super().__init__(
            f"{dest}: {len(files)} published file(s) would change content under the same name: {shown}",
            hint="a published name never changes content (readers holding the current index would get "
            "hash errors): give the rebuild a new version or release, or pass --allow-rewrite to "
            "replace them in one batch right before the index switch",
        )
        self.files = files

    def json_details(self) -> dict[str, object]:
        return {"ok": False, "rewrites": self.files}


class UploadGate(Protocol):
    """A verification running beside the sync (``gate.VerifyGate``)."""

    def allow(self, rel: str) -> None:
        """Blocks until ``rel`` may be uploaded; raises when the source is refused."""
        ...

    def finish(self) -> object:
        """Blocks until the whole source is verified; raises when it is refused."""
        ...


def _noop(event: str, key: str) -> None:
    pass


#: parallel transfers by default: S3 gateways answer each request with some latency, so more requests in
#: flight is what makes a sync of many small packages fast (rclone's default is 4 + 8 checkers).
JOBS = 16


def sync_tree(
    local_dir: Path,
    dest: str,
    *,
    endpoint_url: str | None = None,
    last: Sequence[str] = (),
    delete: bool = True,
    dry_run: bool = False,
    progress: Progress | None = None,
    client: S3Client | None = None,
    profile: str | None = None,
    jobs: int = JOBS,
    keep: int = 0,
    generation: Collection[str] | None = None,
    protect: Collection[str] = (),
    acl: str | None = None,
    conditional: bool | None = None,
    hash_cache: HashCache | None = None,
    fallback_protect: Callable[[], Collection[str]] | None = None,
    immutable: bool = False,
    allow_rewrite: bool = False,
    checkpoint: Checkpoint | None = None,
    exclude: Sequence[str] = (),
    detached_index: bool = False,
    gate: UploadGate | None = None,
    upload_log: UploadLog | None = None,
    abort_uploads_older_than: int | None = ABORT_OLDER_THAN,
) -> SyncReport:
    """Make ``dest`` hold exactly ``local_dir`` (plus what the kept generations still reference).

    ``last``: names or globs (a pattern without ``/`` matches the file name) uploaded after everything
    else, pattern by pattern, e.g. ``("repomd.xml", "repomd.xml.asc")``. ``keep``: how many previous
    generations' objects survive deletion; ``generation`` names the keys this publication's indexes
    reference (default: all its files). ``conditional``: force or forbid precondition headers (default:
    probe the server once). ``immutable``: refuse to change the content of a published non-``last``
    object (RewriteRefused, nothing written) unless ``allow_rewrite``. ``exclude``: local files left out
    (patterns as ``last``'s). ``detached_index``: two or more ``last`` files are written by a helper process
    that a SIGKILL of this one does not stop midway (see ``indexwriter``), so signed index pairs are
    never left mixed by a killed sync. ``gate``: new objects wait for its ``allow``, everything after
    them for its ``finish``; when it raises, the objects this run created are deleted and it re-raises.
    ``upload_log``: where multipart uploads are recorded while they run (default: the cache's
    ``mirror/uploads``); before uploading, the uploads dead syncs recorded there for this bucket are
    aborted, and so are those under the prefix older than ``abort_uploads_older_than`` seconds (None:
    no such sweep); see ``uploads``.
    """
    url = parse_s3_url(dest)
    if client is None:
        client = make_client(endpoint_url=endpoint_url, profile=profile, max_connections=jobs + 4)
    counts: Counter[str] = Counter()

    def count(method: str, path: str) -> None:
        counts[method] += 1

    with watching(client, count):
        report = _sync(
            client,
            url,
            local_dir,
            last,
            delete,
            dry_run,
            progress,
            jobs,
            keep,
            generation,
            protect,
            acl,
            conditional,
            hash_cache,
            fallback_protect,
            immutable and not allow_rewrite,
            checkpoint or _noop,
            exclude,
            detached_index,
            gate,
            upload_log,
            abort_uploads_older_than,
        )
    report.requests = dict(sorted(counts.items()))
    return report


def _sync(
    client: S3Client,
    url: S3Url,
    local_dir: Path,
    last: Sequence[str],
    delete: bool,
    dry_run: bool,
    progress: Progress | None,
    jobs: int,
    keep: int,
    generation: Collection[str] | None,
    protect: Collection[str],
    acl: str | None,
    conditional: bool | None,
    hash_cache: HashCache | None,
    fallback_protect: Callable[[], Collection[str]] | None,
    refuse_rewrites: bool,
    checkpoint: Checkpoint,
    exclude: Sequence[str],
    detached_index: bool,
    gate: UploadGate | None,
    upload_log: UploadLog | None,
    abort_older_than: int | None,
) -> SyncReport:
    local = scan_local(local_dir, jobs=jobs, progress=progress, cache=hash_cache, exclude=exclude)
    check_key_lengths(url, local)
    plan = make_plan(
        client,
        url,
        local,
        last=last,
        delete=delete,
        protect=protect,
        keep=keep,
        jobs=jobs,
        progress=progress,
        fallback_protect=fallback_protect,
    )
    report = SyncReport(str(url), plan.actions, plan.unchanged, plan.kept, dry_run)
    new_gen = sorted(generation) if generation is not None else sorted(local)
    gens = plan.manifest.generations
    gen_changed = not gens or gens[0] != new_gen
    # A same-size object without our stored hash was published by another tool: its content is
    # unknown, so it is rewritten (in the batch) rather than refused.
    rewrites = [a for a in report.uploads if a.op == "update" and not a.last]
    changed = [a.rel for a in rewrites if a.reason != "no stored hash"]
    if refuse_rewrites and changed:
        if gate is not None:
            gate.finish()  # a refused source is said first, as when it was verified before planning
        raise RewriteRefused(str(url), changed)
    if dry_run:
        return report
    checkpoint("planned", "")

    # The parts killed runs left (billed for ever otherwise): before this run starts its own. The
    # recorded ones cost no request unless there are some; the sweep (one LIST) comes with a run that
    # writes, so an unchanged re-sync stays one LIST and one GET.
    log = upload_log or UploadLog(cache_dir("mirror") / "uploads")
    report.aborted_uploads = log.reclaim(client, url)
    problems = log.problems
    if abort_older_than is not None and report.actions:
        try:
            report.aborted_uploads += sweep(client, url, abort_older_than)
        except MirrorError as e:  # e.g. credentials that may write but not list uploads: not this sync's job
            problems.append(str(e))
    if problems:
        report.notes.append(f"unfinished multipart uploads not aborted: {problems[0]}")
    if report.aborted_uploads:
        report.notes.append(
            f"aborted {len(report.aborted_uploads)} unfinished multipart upload(s) of interrupted syncs"
        )

    uploads = report.uploads
    conditions = Conditions(bool(conditional))
    if uploads and conditional is None:
        conditions = server_conditions(client, url)
        conditional = conditions.honoured
    report.conditional_writes = conditional
    if conditional is False and uploads:
        report.notes.append(
            "the server does not honour conditional writes: indexes are checked with HEAD before replacing"
        )

    writer = Writer(
        client,
        url,
        conditional=bool(conditional),
        acl=acl,
        conditions=conditions,
        total=sum(a.size for a in uploads),
        progress=progress,
        upload_log=log,
    )

    def uploader(event: str) -> Callable[[Action], None]:
        def up(a: Action) -> None:
            if gate is not None and event == "uploaded":
                gate.allow(a.rel)
            writer.upload(a, local[a.rel])
            checkpoint(event, a.rel)

        return up

    ranked: dict[int, list[Action]] = {}
    for a in uploads:
        if a.last:
            ranked.setdefault(last_rank(a.rel, last) or 0, []).append(a)
    # Started now, so that its start-up overlaps the uploads; idle until it gets the index files.
    helper = IndexWriter(client, url, conditional=bool(conditional), conditions=conditions, acl=acl) \
        if detached_index and sum(map(len, ranked.values())) > 1 else None  # fmt: skip
    try:
        # 1. new content, 2. rewrites in one batch, 3. indexes pattern by pattern, 4. deletions, 5. manifest.
        # Biggest first: a big package started last would be the long pole of the whole run.
        creates = sorted((a for a in uploads if a.op == "create" and not a.last), key=lambda a: -a.size)
        if gate is None:
            run_parallel(jobs, uploader("uploaded"), creates)
        else:
            step1 = lambda: run_parallel(jobs, uploader("uploaded"), creates)  # noqa: E731
            _gated(gate, step1, client, url, writer, progress)
        started = time.monotonic()
        run_parallel(jobs, uploader("rewritten"), sorted(rewrites, key=lambda a: -a.size))
        report.rewritten = [a.rel for a in rewrites]
        if helper is not None:

            def written(rel: str, etag: str) -> None:
                writer.record(rel, etag, local[rel].size)
                checkpoint("index", rel)

            helper.write([[(a, local[a.rel]) for a in ranked[r]] for r in sorted(ranked)], written)
        else:
            for rank in sorted(ranked):
                run_parallel(jobs, uploader("index"), ranked[rank])
    finally:
        if helper is not None:
            helper.close()
    if rewrites:
        report.exposure_s = round(time.monotonic() - started, 3)
    report.uploaded = list(writer.etags)
    report.bytes_uploaded = sum(local[r].size for r in report.uploaded)

    dels = [a.rel for a in report.deletions]
    if dels:
        delete_objects(client, url, dels, progress)
        report.deleted = dels
        checkpoint("deleted", "")

    if uploads or dels or gen_changed or not _manifest_vouches(plan):
        objects: dict[str, tuple[str, int, str]] = {}
        for rel, lf in local.items():
            etag = writer.etags.get(rel) or plan.remote[rel].etag
            objects[rel] = (etag, lf.size, lf.sha256)
        for rel in plan.kept:
            ro = plan.remote[rel]
            if ro.sha256:
                objects[rel] = (ro.etag, ro.size, ro.sha256)
        generations = [new_gen, *gens[:keep]] if gen_changed else gens[: keep + 1]
        manifest = Manifest(objects, generations, plan.manifest.etag)
        if not write_manifest(client, url, manifest, bool(conditional), conditions):
            report.notes.append("another publisher replaced the sync manifest; it is only a cache")
        checkpoint("manifest", "")
    return report


def _gated(gate: UploadGate, creates: Callable[[], None], client: S3Client, url: S3Url, writer: Writer,
           progress: Progress | None) -> None:  # fmt: skip
    """Step 1 under a gate, then the whole verification's verdict. An upload error is raised as today
    (a re-run finishes the job), unless the source is refused meanwhile: its error wins."""
    try:
        creates()
    except Exception:
        _undo_if_refused(gate, client, url, writer, progress)
        raise
    _undo_if_refused(gate, client, url, writer, progress)


def _undo_if_refused(gate: UploadGate, client: S3Client, url: S3Url, writer: Writer,
                     progress: Progress | None) -> None:  # fmt: skip
    """Waits for the verification; refused, the objects this run created (new keys only: nothing the
    live index names was written yet) are deleted before its error goes on."""
    try:
        gate.finish()
    except BaseException:
        created = list(writer.etags)
        if created:
            delete_objects(client, url, created, progress)
        raise


def _manifest_vouches(plan: Plan) -> bool:
    m = plan.manifest.objects
    for rel, lf in plan.local.items():
        ro = plan.remote.get(rel)
        cached = m.get(rel)
        if ro is None or cached is None or cached != (ro.etag, ro.size, lf.sha256):
            return False
    return True
