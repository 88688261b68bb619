"""Creating repositories and publishing revisions (the Stratum-0 side of CernVM-FS).

A publish runs in three steps, under the repository's lock (``lock.py``):

1. *stage*: the source tree (a directory or a tar stream) is scanned into an on-disk staging
   database (``stage.py``); unchanged files (same size, mtime and mode as in the previous
   revision) keep their old content hashes, the others are compressed and hashed in parallel and
   written as objects (``objwrite.py``). With ``base_path`` the rest of the previous revision is
   copied in unchanged, and nested catalogs outside the path are reused by hash without reading.
2. *build*: catalogs are written bottom-up from the stage (``catalog_write.py``); a nested catalog
   whose entries did not change keeps its old object.
3. *commit*: certificate, history (``history_write.py``), reflog, a file-system sync, and the
   signed manifest LAST, by rename. Until that rename, readers see the previous revision; a
   killed publish leaves only scratch files in ``data/txn`` and the next run completes the job.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.serialization import Encoding

from .. import utcdate
from ..errors import CvmfsError
from ..fsutil import atomic_write, read_capped
from . import manifest as mf
from . import pubstats
from . import rsa as rsa_raw
from .catalog import Catalog
from .catalog_write import (
    ChunkRow,
    Entry,
)
from .chunking import ChunkingSettings
from .commit import (
    PublishResult,
    check_whitelist,
    check_whitelist_days,
    commit,
    history_db,
    previous_history,
    read_current,
    sign_manifest,
    whitelist_bytes,
    write_reflog,
)
from .content import ContentStore
from .history import History
from .history_write import RESERVED, HistoryWriter, Tag
from .keys import KeySet, check_fqrn, make_folder
from .limits import MAX_HOLE_BYTES, MAX_MTIME, MAX_TAG_TEXT, MAX_WHITELIST_BYTES, human
from .lock import publish_lock
from .nesting import DIRTAB, AutoCatalogs, Placed, place_catalogs
from .objects import object_path, parse_hash
from .objwrite import ObjectWriter
from .options import Fault, Options, Progress
from .parts import Part, replaced_bases, stage_parts
from .previous import PreviousTree, read_object
from .scan import dir_entry, ensure_dirs, norm_base, scan_dir, stage_outside
from .scan_tar import scan_tar
from .stage import Stage
from .tar_limits import TarLimits

TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}\Z")


def _check_tag_name(name: str) -> None:
    if not TAG_RE.match(name) or name in RESERVED or name.startswith("generic-"):
        raise CvmfsError(
            f"invalid tag name {name!r}",
            hint="use letters, digits and . _ : + - ; 'trunk', 'trunk-previous' and 'generic-*' are reserved",
        )


def _check_description(description: str) -> None:
    """A tag's description the reader reads back: at most MAX_TAG_TEXT bytes (``history.History``
    refuses a longer value, and with it the repository's whole tag list)."""
    try:
        size = len(description.encode("utf-8"))
    except UnicodeEncodeError:  # an argument of bytes that are no UTF-8: a traceback from SQLite
        raise CvmfsError(
            f"tag description {description[:80]!r} is not valid UTF-8",
            hint="write --description/-m as UTF-8 text (the history stores it as text)",
        ) from None
    if size > MAX_TAG_TEXT:
        raise CvmfsError(
            f"tag description of {size:,} bytes: longer than {human(MAX_TAG_TEXT)}",
            hint="shorten --description/-m (readers refuse a history holding a longer value)",
        )


def _refuse_moving(stratum: Path, fqrn: str, current: mf.Manifest, scratch: Path, tag: str) -> None:
    """A publish ``--tag NAME`` of a name that tags a revision already would move it: archivists pin
    names like 'slc5-frozen', so that is said and done only when asked (``move_tag``). Checked before
    any work (the lock is held: no other publish can add the name meanwhile)."""
    db = previous_history(stratum, scratch, current)
    if db is None:
        return
    history = History(db, where=f"{fqrn} history")
    try:
        old = history.by_name(tag)
    finally:
        history.close()
    if old is not None:
        raise CvmfsError(
            f"{fqrn}: tag {tag!r} already names revision {old.revision} ({old.root_hash}); "
            "publishing would move it to the new revision",
            hint="pass --move-tag to move it, or choose another --tag name",
        )


def _default_timestamp(timestamp: int | None, epoch: int | None) -> int:
    """The revision time: ``timestamp`` (strict), else the build time ``epoch`` (lenient), else now."""
    if timestamp is not None:
        return timestamp
    if epoch is not None and epoch > MAX_MTIME:
        # SOURCE_DATE_EPOCH is read up to the year 9999 (tars hold it); a revision dated after this
        # was published, exit 0, with a manifest every reader refuses: the repository unreadable
        raise CvmfsError(
            f"build time {epoch} ({utcdate.text(epoch)}) is after {utcdate.text(MAX_MTIME)}, the last "
            "publish time a CernVM-FS reader accepts",
            hint="set SOURCE_DATE_EPOCH to an earlier time, or give --timestamp",
        )
    return epoch if epoch is not None else int(time.time())


def _check_timestamp(
    timestamp: int | None, effective: int, current: mf.Manifest, warnings: list[str]
) -> None:
    """Revision times only grow. An explicit time before the previous revision's is refused (a
    silent change would make the revision lie about when it was published, and a date lookup find
    the wrong revision); the same time is moved on by one second per publish, so a series of
    publishes with one SOURCE_DATE_EPOCH stays reproducible; an older SOURCE_DATE_EPOCH is a warning."""
    if effective >= current.timestamp:
        return
    if timestamp is not None:
        raise CvmfsError(
            f"timestamp {timestamp} ({utcdate.text(timestamp)}) is earlier than revision "
            f"{current.revision} of {current.fqrn} ({current.timestamp}, {utcdate.text(current.timestamp)})",
            hint=f"give a time at or after {current.timestamp}, or leave it out to use the current time",
        )
    warnings.append(
        f"SOURCE_DATE_EPOCH {effective} is earlier than revision {current.revision} "
        f"({current.timestamp}): the new revision is dated {current.timestamp + 1}"
    )


def _place_catalogs(stratum: Path, store: ObjectWriter, stage: Stage, opts: Options) -> Placed:
    """Nested catalogs from /.cvmfsdirtab and the automatic split (``nesting.py``), as markers."""

    def read(e: Entry) -> bytes:
        if e.digest is None or e.chunks:
            raise CvmfsError(f"{DIRTAB}: {e.size} bytes is too big for a dirtab", hint="keep it short")
        return read_object(stratum, e.digest.hex(), "", DIRTAB)

    empty = bytes.fromhex(store.put_bytes(b"")[:40])
    return place_catalogs(stage, read, empty, opts.autocatalogs)


@contextlib.contextmanager
def _session(stratum: Path, what: str) -> Iterator[tuple[ObjectWriter, Path]]:
    with publish_lock(stratum, what):
        store = ObjectWriter(stratum)
        store.clean_txn()
        scratch = Path(tempfile.mkdtemp(prefix="stage.", dir=store.txn))
        try:
            yield store, scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


# -- the public API -------------------------------------------------------------------------------


def _refuse_existing(stratum: Path) -> None:
    if (stratum / ".cvmfspublished").exists():
        raise CvmfsError(
            f"{stratum}: a repository already exists here", hint="publish into it, or pick a new directory"
        )


def create_repository(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    *,
    whitelist_days: int = 30,
    timestamp: int | None = None,
    epoch: int | None = None,
) -> PublishResult:
    """A new, empty repository (revision 1: an empty root directory, tagged ``trunk``).

    The whitelist is dated ``timestamp`` when given, else now (not the build time ``epoch``: a
    whitelist from the past would already be expired).
    """
    check_fqrn(fqrn)
    check_whitelist_days(whitelist_days)  # before the directory is made
    if keys.fqrn != fqrn:
        raise CvmfsError(
            f"keys are for {keys.fqrn!r}, not {fqrn!r}", hint="generate keys for this repository"
        )
    _refuse_existing(stratum)
    make_folder(stratum, "STRATUM")
    ts = _default_timestamp(timestamp, epoch)
    wl_time = timestamp if timestamp is not None else int(time.time())
    opts = Options(ts, ChunkingSettings(), True, None)
    with _session(stratum, "create") as (store, scratch):
        # again under the lock: a create of this stratum that held it since the check above has made
        # the repository, which this one replaced (with its own keys) and both said "created"
        _refuse_existing(stratum)
        stage = Stage(scratch / "stage.db")
        try:
            stage.put(dir_entry("", ts))
            return commit(
                stratum,
                fqrn,
                keys,
                store,
                scratch,
                stage,
                None,
                None,
                opts,
                None,
                "",
                False,
                whitelist=whitelist_bytes(fqrn, keys, wl_time, whitelist_days),
            )
        finally:
            stage.close()


def _publish(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    fill: Callable[[Stage, PreviousTree, ContentStore, str, Options], None],
    *,
    tag: str | None,
    move_tag: bool = False,
    description: str,
    auto_tag: bool,
    timestamp: int | None,
    epoch: int | None,
    chunking: ChunkingSettings | None,
    base_path: str | tuple[str, ...],
    progress: Progress | None,
    normalize_owner: bool,
    fault: Fault | None,
    autocatalogs: AutoCatalogs | None,
) -> PublishResult:
    if tag is not None:
        _check_tag_name(tag)
    _check_description(description)
    # several bases: one revision replacing several subtrees (publish_parts); fill gets base ""
    bases = tuple(norm_base(b) for b in ((base_path,) if isinstance(base_path, str) else base_path))
    base = bases[0] if len(bases) == 1 else ""
    opts = Options(
        _default_timestamp(timestamp, epoch),
        chunking or ChunkingSettings(),
        normalize_owner,
        progress,
        fault=fault,
        autocatalogs=autocatalogs,
    )
    started = dt.datetime.now(dt.UTC)
    with _session(stratum, "publish") as (store, scratch):
        current = read_current(stratum, fqrn)
        if tag is not None and not move_tag:
            _refuse_moving(stratum, fqrn, current, scratch, tag)
        _check_timestamp(timestamp, opts.timestamp, current, opts.warnings)
        check_whitelist(stratum, keys, opts)
        prev = PreviousTree(stratum, current.root_hash, scratch)
        stage = Stage(scratch / "stage.db")
        content = ContentStore(store, stage, opts)
        try:
            if all(bases):
                stage_outside(stage, prev, bases)
            for b in bases:
                if b:
                    ensure_dirs(stage, b.rsplit("/", 1)[0], opts.timestamp)
            fill(stage, prev, content, base, opts)
            placed = _place_catalogs(stratum, store, stage, opts)
            opts.reached("staged")
            content_objects, content_bytes = store.objects_written, store.bytes_written
            result = commit(
                stratum, fqrn, keys, store, scratch, stage, prev, current, opts, tag, description, auto_tag
            )
            try:
                opts.reached("committed")
                row = pubstats.PublishRow(
                    start_time=pubstats.gmt(started),
                    finish_time=pubstats.gmt(dt.datetime.now(dt.UTC)),
                    revision=result.revision,
                    diff=pubstats.diff_tree(stage, prev, base),
                    chunks_added=content_objects,
                    catalogs_added=result.catalogs - result.catalogs_reused,
                    sz_bytes_uploaded=content_bytes,
                    sz_catalog_bytes_uploaded=store.bytes_written - content_bytes,
                )
                pubstats.record(stratum, fqrn, row, scratch)
            except (OSError, sqlite3.Error, KeyboardInterrupt) as e:
                # The revision is published; its statistics are a record, not part of it. Ctrl-C (or
                # SIGTERM) here ended with 'interrupted; re-run to finish', and the re-run published
                # the same tree again as another revision.
                why = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
                result = replace(
                    result, warnings=(*result.warnings, f"publish statistics not recorded: {why}")
                )
            return replace(result, nested_by_dirtab=tuple(placed.dirtab), nested_auto=tuple(placed.auto))
        finally:
            content.pool.shutdown(wait=True, cancel_futures=True)
            stage.close()
            prev.close()


def publish_tree(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    source: Path,
    *,
    tag: str | None = None,
    move_tag: bool = False,
    description: str = "",
    auto_tag: bool = False,
    timestamp: int | None = None,
    epoch: int | None = None,
    chunking: ChunkingSettings | None = None,
    base_path: str = "/",
    progress: Progress | None = None,
    normalize_owner: bool = False,
    fault: Fault | None = None,
    autocatalogs: AutoCatalogs | None = AutoCatalogs(),
    max_holes: int = MAX_HOLE_BYTES,
) -> PublishResult:
    """Publish the directory ``source`` as the new revision (or as the subtree at ``base_path``).

    ``progress(done_bytes, total_bytes)`` is called as file contents are stored; ``fault(step)``
    after each step (``options.STEPS``; tests stop the process there). Nested catalogs go where the
    tree has ``.cvmfscatalog`` markers, where its ``/.cvmfsdirtab`` says, and where a catalog would
    exceed ``autocatalogs.max_weight`` entries (``None``: no automatic split); see ``nesting.py``.
    A sparse file with more than ``max_holes`` bytes of holes is refused (they would be read).
    """

    def fill(stage: Stage, prev: PreviousTree, content: ContentStore, base: str, opts: Options) -> None:
        scan_dir(stage, prev, content, source, base, opts, max_holes)

    return _publish(
        stratum,
        fqrn,
        keys,
        fill,
        tag=tag,
        move_tag=move_tag,
        description=description,
        auto_tag=auto_tag,
        timestamp=timestamp,
        epoch=epoch,
        chunking=chunking,
        base_path=base_path,
        progress=progress,
        normalize_owner=normalize_owner,
        fault=fault,
        autocatalogs=autocatalogs,
    )


def publish_tar(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    tar_stream: BinaryIO,
    *,
    tag: str | None = None,
    move_tag: bool = False,
    description: str = "",
    auto_tag: bool = False,
    timestamp: int | None = None,
    epoch: int | None = None,
    chunking: ChunkingSettings | None = None,
    base_path: str = "/",
    progress: Progress | None = None,
    normalize_owner: bool = False,
    fault: Fault | None = None,
    autocatalogs: AutoCatalogs | None = AutoCatalogs(),
    limits: TarLimits = TarLimits(flag="tar"),
) -> PublishResult:
    """Publish a tar stream (plain or compressed, read once, front to back) as the new revision.

    ``progress(done_bytes, 0)``: the total is unknown for a stream. ``limits``: the caps on the
    tar's data and members (``--max-tar-bytes``/``--max-tar-entries``).
    """

    def fill(stage: Stage, prev: PreviousTree, content: ContentStore, base: str, opts: Options) -> None:
        scan_tar(stage, content, tar_stream, base, opts, limits)

    return _publish(
        stratum,
        fqrn,
        keys,
        fill,
        tag=tag,
        move_tag=move_tag,
        description=description,
        auto_tag=auto_tag,
        timestamp=timestamp,
        epoch=epoch,
        chunking=chunking,
        base_path=base_path,
        progress=progress,
        normalize_owner=normalize_owner,
        fault=fault,
        autocatalogs=autocatalogs,
    )


def publish_parts(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    parts: Sequence[Part],
    *,
    description: str = "",
    timestamp: int | None = None,
    epoch: int | None = None,
    chunking: ChunkingSettings | None = None,
    normalize_owner: bool = False,
    fault: Fault | None = None,
) -> PublishResult:
    """Several subtrees changed in one revision (``parts.py``: tars at base paths, copies of
    subtrees, removals), applied in order; the rest of the previous revision is kept. One lock, one
    catalog pass and one signature for all of them."""
    bases = replaced_bases(parts)

    def fill(stage: Stage, prev: PreviousTree, content: ContentStore, base: str, opts: Options) -> None:
        stage_parts(stage, prev, content.store, parts, opts)

    return _publish(
        stratum,
        fqrn,
        keys,
        fill,
        tag=None,
        description=description,
        auto_tag=False,
        timestamp=timestamp,
        epoch=epoch,
        chunking=chunking,
        base_path=bases,
        progress=None,
        normalize_owner=normalize_owner,
        fault=fault,
        autocatalogs=AutoCatalogs(),
    )


def _retag(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    edit: Callable[[HistoryWriter, mf.Manifest, Path], None],
    timestamp: int | None,
    epoch: int | None = None,
) -> mf.Manifest:
    with _session(stratum, "tag") as (store, scratch):
        current = read_current(stratum, fqrn)
        _check_timestamp(timestamp, _default_timestamp(timestamp, epoch), current, [])
        hist = history_db(stratum, scratch, current, fqrn)
        try:
            edit(hist, current, scratch)
        except BaseException:
            hist.db.execute("ROLLBACK")
            hist.db.close()
            raise
        hist.close()
        hist_name = store.put_path(scratch / "hist.new.db", "H")
        ts = max(_default_timestamp(timestamp, epoch), current.timestamp + 1)
        reflog = write_reflog(stratum, scratch, fqrn, [(hist_name, 2)], ts)
        store.sync()
        # A tag edit is not a new revision: the root catalog and S stay, T moves on.
        m = current.replace(history_hash=hist_name, reflog_hash=reflog, timestamp=ts)
        atomic_write(stratum / ".cvmfspublished", sign_manifest(m, keys))
        return m


def add_tag(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    name: str,
    root_hash: str | None = None,
    description: str = "",
    *,
    timestamp: int | None = None,
    epoch: int | None = None,
) -> tuple[Tag, Tag | None]:
    """Tag the trunk (or the revision whose root catalog is ``root_hash``) as ``name``: the new tag,
    and the one of that name it moved (None for a new name), so that a move is never silent."""
    _check_tag_name(name)
    _check_description(description)
    if root_hash is not None:
        try:
            parse_hash(root_hash)  # before it is looked up (bytes that are no UTF-8: a traceback)
        except ValueError:
            raise CvmfsError(
                f"--root-hash {root_hash!r} is not an object name",
                hint="give the root hash of a revision (cernvm-build cvmfs tag list shows them)",
            ) from None
    made: list[Tag] = []
    moved: list[Tag | None] = []

    def edit(hist: HistoryWriter, m: mf.Manifest, scratch: Path) -> None:
        if root_hash is None:
            head = hist.get("trunk")
            base = head or Tag("trunk", m.root_hash, m.revision, m.timestamp, m.root_size)
        else:
            row = hist.db.execute(
                "SELECT name, hash, revision, timestamp, size, description FROM tags WHERE hash = ? "
                "ORDER BY revision DESC LIMIT 1",
                (root_hash,),
            ).fetchone()
            base = Tag(*row) if row is not None else _tag_of_catalog(stratum, scratch, name, root_hash)
        tag = replace(base, name=name, description=description)
        moved.append(hist.get(name))
        hist.put(tag)
        made.append(tag)

    _retag(stratum, fqrn, keys, edit, timestamp, epoch)
    return made[0], moved[0]


def _tag_of_catalog(stratum: Path, scratch: Path, name: str, root_hash: str) -> Tag:
    """A tag of the root catalog ``root_hash`` that the history does not name. It must be a root
    catalog: a nested one's hash was signed as a tag that every reader then called damaged."""
    where = f"--root-hash {root_hash}"
    with contextlib.suppress(ValueError):  # a name that is no hash: read_object says so
        parse_hash(root_hash)
        if not (stratum / object_path(root_hash, "C")).exists():
            raise CvmfsError(
                f"{where}: no catalog of that hash in {stratum}/data",
                hint="give the root hash of a revision (cernvm-build cvmfs tag list shows them)",
            )
    data = read_object(stratum, root_hash, "C", f"root catalog {root_hash}")
    db = scratch / "cat.tagged.db"
    db.write_bytes(data)
    cat = Catalog(db, name=root_hash, where=where)
    try:
        if cat.root_prefix:
            raise CvmfsError(
                f"{where}: catalog {root_hash}C is the nested catalog of {cat.root_prefix},"
                " not a root catalog",
                hint="give the root hash of a revision (cernvm-build cvmfs tag list shows them)",
            )
        try:
            modified = int(cat.properties.get("last_modified", 0) or 0)
        except (TypeError, ValueError):
            modified = 0
        return Tag(name, root_hash, cat.revision, modified, len(data))
    finally:
        cat.close()


def remove_tag(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    name: str,
    *,
    timestamp: int | None = None,
    epoch: int | None = None,
) -> None:
    """Remove the named tag (``trunk`` and ``trunk-previous`` cannot be removed)."""
    if name in RESERVED:
        raise CvmfsError(f"tag {name!r} is maintained by the publisher and cannot be removed")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # no tag has it (bytes that are no UTF-8 were a traceback from SQLite)
        raise CvmfsError(
            f"{fqrn}: unknown tag {name!r}", hint="see the tags with 'cernvm-build cvmfs tag list'"
        ) from None

    def edit(hist: HistoryWriter, m: mf.Manifest, scratch: Path) -> None:
        if not hist.remove(name):
            known = ", ".join(hist.names()) or "none"
            raise CvmfsError(f"{fqrn}: unknown tag {name!r}", hint=f"tags are: {known}")

    _retag(stratum, fqrn, keys, edit, timestamp, epoch)


def resign_whitelist(
    stratum: Path,
    fqrn: str,
    keys: KeySet,
    days: int = 30,
    *,
    timestamp: int | None = None,
    new_certificate: bool = False,
    new_master_key: bool = False,
) -> Path:
    """Write a freshly signed whitelist valid for ``days`` from now (or from ``timestamp``).

    It lists the certificate of ``keys``; one other than the current manifest's is refused unless
    ``new_certificate`` (replacing a revoked or expiring certificate: the current revision, signed by
    the old one, is then refused by readers until the next publish signs one with the new one). The
    current whitelist must be signed by the same master key unless ``new_master_key`` (a rotation
    whose public key the clients already have)."""
    check_whitelist_days(days)
    with publish_lock(stratum, "resign"):
        m = read_current(stratum, fqrn)
        if m.certificate_hash:
            cert = read_object(stratum, m.certificate_hash, "X", "certificate")
            same = rsa_raw.load_certificate(cert).der == keys.certificate.public_bytes(Encoding.DER)
            if not same and not new_certificate:
                raise CvmfsError(
                    f"{stratum}: the repository is signed with another certificate than these keys",
                    hint="use the key directory the repository was created with; to replace its "
                    "certificate (revoked, blacklisted), pass --new-certificate, then publish",
                )
        path = stratum / ".cvmfswhitelist"
        if not new_master_key:
            _check_same_master_key(path, fqrn, keys)
        atomic_write(
            path, whitelist_bytes(fqrn, keys, timestamp if timestamp is not None else int(time.time()), days)
        )
        return path


def _check_same_master_key(path: Path, fqrn: str, keys: KeySet) -> None:
    """Clients verify the whitelist with the master public key they were given: a whitelist signed
    by another master key (a wrong .masterkey with its own .pub beside it) locked every client out,
    and resign wrote it without a word. A whitelist that cannot be read is not compared (re-signing
    is how it is repaired)."""
    try:
        current = mf.split_signed(read_capped(path, MAX_WHITELIST_BYTES), str(path))
        public = rsa_raw.load_public_key(keys.public_key_pem, f"{fqrn}.pub")
    except (OSError, CvmfsError):
        return
    if not rsa_raw.verify_raw([public], current.hash_text.encode("ascii"), current.signature):
        raise CvmfsError(
            f"{path}: the current whitelist is not signed by this master key ({fqrn}.pub does not"
            " verify it): clients hold the repository's master public key and would refuse the new one",
            hint="re-sign with the repository's master key; to move to a new one, give clients the new"
            " .pub first, then pass --new-master-key",
        )


__all__ = [
    "ChunkRow",
    "ChunkingSettings",
    "PublishResult",
    "add_tag",
    "create_repository",
    "publish_tar",
    "publish_tree",
    "remove_tag",
    "resign_whitelist",
]
