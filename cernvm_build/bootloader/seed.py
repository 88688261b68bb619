"""A pre-warmed scratch disk ("seed"): the cache a first boot would fill, made ahead on the host.

A first boot of an OS through μCernVM spends most of its extra time in the guest's mount daemon
fetching, hashing, inflating and writing the ~1,400 objects the boot reads. A seed is a qcow2 disk
laid out exactly as the initrd lays out the scratch disk (``04-devices.sh``): an MBR with one Linux
partition at 1 MiB (``disk.mbr``), an ext4 labelled ``UROOT`` holding ``cache/<fqrn>/`` as the mount
daemon fills it, plus the empty ``aux/ persistent/ context/ work/``. An instance's scratch disk is
a qcow2 overlay on it, so one seed serves every instance read-only, and the boot takes the
initrd's "later boot" path (UROOT found: e2fsck, mount, grow).

What the cache holds, as the daemon keeps it (``cvmfs/mount.py``):
- the signed files last verified (manifest, whitelist, certificate: ``.cvmfssigned``); the
  certificate, the history database and every catalog of the revision, as stored objects in
  ``data/`` (compressed, self-verifying), so the daemon opens the revision without fetching any of
  them (and offline from the saved manifest);
  the catalogs (and the history) also inflated in ``plain/``, as the daemon keeps them, so that it
  opens them without hashing and inflating them again;
- file contents (whole files and chunks) only as the daemon serves them, inflated in ``plain/``
  (``plaincache.py``: the inflated bytes plus a checksum trailer), sized by the verified catalog; an
  object the revision does not name (a trace of another revision) goes to ``data/`` as stored: the
  daemon then inflates it without a fetch;
- no pin (``aux/cvmfs_snapshot``) and nothing else instance-specific: the first boot chooses its
  snapshot as without a seed; objects are content-addressed, so a seed made for one revision still
  serves whatever a newer one did not change.
The size limit's LRU (``quota.py``) orders files by mtime: objects get mtimes in the order the trace
first named them, catalogs and the rest older (they are never evicted anyway).

Which objects: names only, from a trace of one boot (the server's access log: ``cvmfs serve -vv``,
nginx or squid; or a plain list of names). Every object's bytes come from the repository through
the project's verified fetch path (``cvmfs/store.py``), never from the trace.

Built without root: ``mke2fs -d`` into a sparse file at the partition's offset, ``qemu-img
convert``. The work directory beside the destination is kept when a run is interrupted, so a re-run
goes on from the objects it has; the destination appears (renamed) only when everything succeeded.
Host side only: not part of the initrd runtime.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .. import jsonable, proc
from ..cvmfs import bootlist
from ..cvmfs.blacklist import Blacklist
from ..cvmfs.catalog import Catalog
from ..cvmfs.catalog_rows import ObjectRef
from ..cvmfs.fetch import NotFound
from ..cvmfs.limits import MAX_CATALOG_BYTES, MAX_HISTORY_BYTES, MAX_METAINFO_BYTES
from ..cvmfs.manifest import check_fqrn
from ..cvmfs.objects import SUFFIXES, parse_hash
from ..cvmfs.plaincache import PlainCache
from ..cvmfs.repository import Repository, SnapshotSpec, open_repository
from ..errors import CernVMError, CvmfsError, ToolError, UsageError
from ..fsutil import NotRegularFile, held_lock, open_regular
from ..report import NULL_REPORTER, Reporter
from . import disk

#: the folders 04-devices.sh makes on the scratch disk
FOLDERS = ("aux", "persistent", "cache", "context", "work")
LABEL = "UROOT"
MB = 1 << 20
#: the smallest seed disk: ext4 with a journal, and room for the cache
MIN_SIZE_MB = 64

_KIND = {"": "file", "P": "chunk", "C": "catalog", "H": "history database", "X": "certificate",
         "M": "metainfo", "L": "micro catalog"}  # fmt: skip
#: the most stored bytes of an object the revision does not describe, by kind (files: no bound
#: but the disk; the hash is still checked while it streams)
_LIMIT = {"C": MAX_CATALOG_BYTES, "H": MAX_HISTORY_BYTES, "X": 1 * MB, "M": MAX_METAINFO_BYTES,
          "L": MAX_CATALOG_BYTES}  # fmt: skip

# An object in a request path: /data/XX/<38 hex>[-rmd160|-shake128][suffix], then no name character.
_SUFFIX_CLASS = "[" + "".join(sorted(SUFFIXES - {"T"})) + "]"
# Under /cvmfs/<fqrn>/ where the server serves several repositories (a Stratum 1, ``cvmfs serve DIR``).
_IN_URL = re.compile(
    rf"(?:/cvmfs/([A-Za-z0-9._-]+))?/data/([0-9a-f]{{2}})/([0-9a-f]{{38}}(?:-rmd160|-shake128)?{_SUFFIX_CLASS}?)"
    r"(?![\w-])"
)
# A line of a plain list: the object name, or its data/XX/rest path.
_BARE = re.compile(
    rf"^\s*(?:/?data/)?([0-9a-f]{{2}})/?([0-9a-f]{{38}}(?:-rmd160|-shake128)?{_SUFFIX_CLASS}?)\s*$"
)
# A failed request in a log line: combined format ('"GET ..." 404 '), squid ('TCP_MISS/404 ').
_FAILED = re.compile(r'"\s+[45]\d\d\s|\b[A-Z_]+/[45]\d\d\s')


@dataclass(frozen=True)
class Seed:
    path: Path
    #: objects the trace named (each now in the cache)
    objects: int
    #: stored (compressed) bytes this run fetched (a re-run after an interruption: the rest)
    bytes: int
    #: bytes of the inflated copies the daemon serves from
    inflated: int
    #: the qcow2 file's size on disk, its virtual size in MB
    disk_bytes: int = 0
    size_mb: int = 0
    #: catalogs of the revision kept: the root and those of the subtrees the trace opened
    catalogs: int = 0
    #: traced objects the revision does not name (kept as stored objects, inflated by the daemon)
    foreign: int = 0
    fqrn: str = ""
    revision: int = 0
    root_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        return jsonable.to_json(self)


#: bounds of a trace file, checked while it is read: a boot's server log is a few MB, its longest
#: lines (a squid or combined log's user agent) well under a KB
MAX_TRACE_BYTES = 1 << 30
MAX_TRACE_LINE = 64 << 10


class TooManyNames(Exception):
    """``trace_objects`` found more than its ``limit``; ``where`` is the line that crossed it."""

    def __init__(self, where: str):
        super().__init__(where)
        self.where = where


def trace_objects(
    lines: Iterable[str],
    source: str = "trace",
    fqrn: str | None = None,
    limit: int | None = None,
    found: dict[str, str] | None = None,
) -> dict[str, str]:
    """Object names in first-seen order, each with where it was first seen (``source:line``).

    A line may be an access-log line (``cvmfs serve -vv``, nginx/apache combined, squid's native
    format: every ``/data/XX/...`` object in it; failed requests, 4xx/5xx, are skipped; with
    ``fqrn``, objects under ``/cvmfs/<another repository>/`` too) or a bare object name
    (``<hash>[suffix]`` or ``data/XX/<rest>``). Anything else is ignored. More than ``limit``
    names: ``TooManyNames`` at the line that crossed it (not after the whole trace is held).
    ``found``: names of earlier traces, added to (the limit counts them too)."""
    found = {} if found is None else found
    for n, line in enumerate(lines, 1):
        bare = _BARE.match(line)
        hits = [("", *bare.groups())] if bare else _IN_URL.findall(line)
        if not hits or (not bare and _FAILED.search(line)):
            continue
        for repo, head, rest in hits:
            if not (fqrn and repo and repo != fqrn):
                found.setdefault(head + rest, f"{source}:{n}")
        if limit is not None and len(found) > limit:
            raise TooManyNames(f"{source}:{n}")
    return found


def objects_from_trace(lines: Iterable[str], fqrn: str | None = None) -> list[str]:
    """Object names (hash + suffix) in first-seen order, deduplicated (``trace_objects``)."""
    return list(trace_objects(lines, fqrn=fqrn))


def _trace_lines(f: BinaryIO, source: str) -> Iterator[str]:
    """The lines of a trace, each bound checked as it is read (MAX_TRACE_LINE, MAX_TRACE_BYTES): a
    wrong file is one error naming where it crossed the bound, not all of it in memory first."""
    total = 0
    for n, raw in enumerate(iter(lambda: f.readline(MAX_TRACE_LINE + 1), b""), 1):
        total += len(raw)
        if len(raw) > MAX_TRACE_LINE:
            raise UsageError(
                f"{source}:{n}: a line over {MAX_TRACE_LINE:,} bytes: not a trace",
                hint="pass an access log or a list of object names",
            )
        if total > MAX_TRACE_BYTES:
            raise UsageError(
                f"{source}:{n}: the trace is over {MAX_TRACE_BYTES:,} bytes",
                hint="cut the log to the requests of one boot",
            )
        yield raw.decode("utf-8", errors="replace")


def read_trace(
    path: Path, fqrn: str | None = None, limit: int | None = None, found: dict[str, str] | None = None
) -> dict[str, str]:
    """``trace_objects`` of a file: a regular one (a FIFO or a device is refused at once, never read
    or waited on), text (undecodable bytes do not stop it), within the trace bounds."""
    try:
        f = open_regular(path)
    except NotRegularFile:
        raise UsageError(
            f"{path}: the trace is not a regular file", hint="save the log to a file first"
        ) from None
    except OSError as e:
        raise UsageError(
            f"{path}: trace cannot be read: {e.strerror}", hint="pass an access log or a list of object names"
        ) from e
    with f:
        try:
            return trace_objects(_trace_lines(f, str(path)), str(path), fqrn, limit, found)
        except OSError as e:
            raise UsageError(f"{path}: trace cannot be read: {e.strerror}", hint="check the file") from e


#: the most object names ``image seed`` reads from its traces together (10 boot lists: a seed
#: carries more than one boot reads, but not a whole repository: 1 GiB of trace would be ~26 M)
MAX_SEED_NAMES = 10 * bootlist.MAX_NAMES


def traces_objects(
    traces: Sequence[Path], fqrn: str | None, limit: int, what: str, hint: str
) -> dict[str, str]:
    """``read_trace`` of each trace into one dict, in first-seen order, at most ``limit`` names in
    all: one more is refused naming the trace line that crossed it (while reading, not after)."""
    names: dict[str, str] = {}
    try:
        for trace in traces:
            read_trace(trace, fqrn, limit=limit, found=names)
    except TooManyNames as e:
        raise UsageError(f"{e.where}: more than {limit:,} object names in the {what}", hint=hint) from None
    return names


def boot_list(traces: Sequence[Path], fqrn: str | None = None) -> tuple[bytes, int]:
    """The boot list an image carries (``cvmfs/bootlist.py``): the traces' object names in
    first-seen order, one a line, and how many. A trace that names none, or more than the daemon
    reads (``bootlist.MAX_NAMES``), is refused naming the file (and line). ``bootlist.MAX_BYTES``
    needs no check: MAX_NAMES names of at most ``_NAME_BYTES`` each are fewer bytes."""
    names = traces_objects(
        traces,
        fqrn,
        bootlist.MAX_NAMES,
        "boot list",
        "trace one boot only (a boot reads a few thousand objects); a seed carries more",
    )
    if not names:
        raise UsageError(
            f"{', '.join(map(str, traces))}:1: no object names in the trace",
            hint="an access log with GET /cvmfs/<fqrn>/data/XX/... lines, or one object name a line",
        )
    data = "".join(f"{n}\n" for n in names).encode()
    return data, len(names)


#: the longest line a boot list holds (40 hex digits, ``-shake128``, a suffix, a newline): what makes a
#: boot list of MAX_NAMES names fit bootlist.MAX_BYTES
_NAME_BYTES = 40 + len("-shake128") + 1 + 1
assert bootlist.MAX_NAMES * _NAME_BYTES <= bootlist.MAX_BYTES


def _split(name: str) -> tuple[str, str]:
    """(hash text, suffix) of an object name; ValueError if it is none."""
    suffix = name[-1] if name and name[-1] in SUFFIXES else ""
    h = name[: len(name) - len(suffix)]
    return str(parse_hash(h)), suffix


def make_seed(
    source: str | Path | Sequence[str],
    fqrn: str,
    public_keys: Sequence[Path],
    objects: Iterable[str],
    dest: Path,
    *,
    size_mb: int = 20000,
    reporter: Reporter | None = None,
    proxy: str | None = None,
    snapshot: SnapshotSpec | None = None,
    timeout: float = 10,
    retries: int = 2,
    jobs: int = 8,
    blacklist: Blacklist | None = None,
) -> Seed:
    """Make the seed disk ``dest`` (qcow2) whose cache holds ``objects`` of repository ``fqrn``.

    ``source``: the repository's Stratum URL(s) or a local Stratum directory; ``objects``: names as
    ``objects_from_trace`` gives them, or a mapping name -> where it was seen (``trace_objects``),
    named in errors. An object the repository lacks or whose bytes are wrong is one error naming
    it (and where the trace named it); then nothing is written at ``dest``. ``blacklist``: as for
    ``open_repository`` (the profile's, which the image's mount applies too)."""
    rep = reporter or NULL_REPORTER
    where: Mapping[str, str] = objects if isinstance(objects, Mapping) else {}
    names = list(dict.fromkeys(objects))
    parsed: list[tuple[str, str, str]] = []
    for name in names:
        try:
            h, suffix = _split(name)
        except ValueError:
            raise UsageError(
                f"{where.get(name, 'objects')}: {name!r} is not a CernVM-FS object name",
                hint="an object is named by its hash and kind, e.g. 0a1b...9f or 0a1b...9fC",
            ) from None
        parsed.append((name, h, suffix))
    try:
        check_fqrn(fqrn)  # the publisher's and the reader's rule
    except CvmfsError as e:
        raise UsageError(e.message, hint=e.hint) from None
    if size_mb < MIN_SIZE_MB:
        raise UsageError(f"seed size {size_mb} MB: too small", hint=f"at least {MIN_SIZE_MB} MB")
    mke2fs, debugfs, qemu_img = proc.which("mke2fs"), proc.which("debugfs"), proc.which("qemu-img")
    dest = Path(os.path.abspath(dest))
    if dest.is_dir():
        raise UsageError(f"{dest}: is a folder", hint="name the seed's file, e.g. -o debian12.seed.qcow2")

    # one run at a time per seed: two shared the work folder (one's disk.raw truncated and rewritten
    # under the other's mke2fs and qemu-img, one's end removing the other's files)
    def refuse(holder: str) -> None:
        raise UsageError(
            f"{dest}: another run is making this seed ({holder})",
            hint="wait for it to finish, or name another file with -o",
        )

    with held_lock(dest.with_name(f".{dest.name}.seed.lock"), f"seed {dest.name}", refuse, remove=True):
        work = dest.with_name(f".{dest.name}.seed-work")
        # what this run writes, the clean mark vouches for (a re-run's leftovers are checked on first
        # use); in whole seconds, as the image keeps the files' ctimes
        started = time.time_ns() // 10**9 * 10**9
        root = work / "root"
        for d in FOLDERS:
            (root / d).mkdir(parents=True, exist_ok=True)
        try:
            rep.step(f"seed: opening {fqrn}")
            repo = open_repository(
                source if isinstance(source, str | Path) else list(source),
                fqrn=fqrn,
                public_keys=public_keys,
                cache_dir=root / "cache",
                proxy=proxy,
                snapshot=snapshot,
                timeout=timeout,
                retries=retries,
                inflated=True,
                blacklist=blacklist,
            )
            try:
                seed = _fill(repo, parsed, where, rep, jobs, dest)
            finally:
                repo.close()
            cache = root / "cache" / fqrn
            with contextlib.suppress(OSError):
                (cache / "tmp").rmdir()  # the store's scratch parent: the daemon makes its own
            _order_for_lru(cache, [(h, s) for _, h, s in parsed])
            # made whole from verified streams and copied into an image that appears only complete
            # (mke2fs keeps the ctimes): the first boot trusts it as after a clean stop
            PlainCache(cache).mark_clean(sync=False, since=started)
            rep.step(f"seed: writing the {size_mb} MB disk")
            disk_bytes = _write_disk(root, dest, size_mb, (mke2fs, debugfs, qemu_img))
        except KeyboardInterrupt:  # and SIGTERM (the CLI raises it): a re-run goes on from what is here
            raise
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        shutil.rmtree(work, ignore_errors=True)
        return dataclasses.replace(seed, disk_bytes=disk_bytes, size_mb=size_mb)


@contextlib.contextmanager
def _named(name: str, what: str, where: Mapping[str, str]) -> Iterator[None]:
    """Errors about an object name it and the trace line that named it."""
    try:
        yield
    except NotFound:
        raise CvmfsError(
            f"{where.get(name, 'objects')}: {what} {name}: not in the repository",
            hint="the trace is of another repository, or the object was garbage-collected",
        ) from None
    except CernVMError as e:
        raise type(e)(f"{where.get(name, 'objects')}: {what} {name}: {e}", hint=e.hint) from None


def _fill(
    repo: Repository,
    parsed: list[tuple[str, str, str]],
    where: Mapping[str, str],
    rep: Reporter,
    jobs: int,
    dest: Path,
) -> Seed:
    """Every traced object into the repository's cache; the seed ``dest`` will be, but its disk."""
    store = repo.store
    cache = store.cache
    assert cache is not None and store.plain_cache is not None
    rep.step(f"seed: {repo.fqrn} revision {repo.revision}: reading the catalogs the trace names")
    # The catalogs of this revision for the subtrees the boot opened (a boot reaches a catalog only
    # through its parent): what the daemon would load, and the sizes of the files it read. Not the
    # whole revision (cernvm-prod.cern.ch has thousands of catalogs). Matched by hash, and by the
    # subtree a traced catalog is the root of: a trace of an older revision names older catalogs.
    traced = {h for _, h, suffix in parsed if suffix == "C"}
    subtrees: set[str] = set()
    for name, h, suffix in parsed:
        if suffix == "C":
            with _named(name, "catalog", where):
                db = store.database_file(h, suffix, size=None, what="catalog", cap=MAX_CATALOG_BYTES)
                cat = Catalog(db, name=h, where=repo.fqrn)  # the revision's own walk reuses the file
                subtrees.add(cat.root_prefix)
                cat.close()
    files: dict[str, ObjectRef] = {}
    catalogs = 0
    for cat in repo.catalogs(descend=lambda ref: ref.hash in traced or ref.path in subtrees):
        catalogs += 1
        for row in cat.objects():
            files.setdefault(row.name + row.suffix, row)

    def one(name: str, h: str, suffix: str) -> tuple[int, int]:
        """(inflated bytes, 1 if the revision does not name it) of one object, now in the cache."""
        what = _KIND.get(suffix, "object")
        with _named(name, what, where):
            ref = files.get(h + suffix)
            if ref is not None:
                os.close(store.inflated_fd(h, suffix, size=ref.size, compressed=ref.compressed, what=what))
                return ref.size, 0
            store.cached_path(h, suffix, what=what, limit=_LIMIT.get(suffix))
            return 0, int(suffix in ("", "P"))

    # Fetched by ``jobs`` threads (the store makes each object once, whoever asks); results taken
    # in trace order, so the error reported is the first the trace names.
    inflated = foreign = 0
    pool = concurrent.futures.ThreadPoolExecutor(max(1, jobs), "seed")
    try:
        futures = [pool.submit(one, *item) for item in parsed]
        for i, fut in enumerate(futures, 1):
            size, other = fut.result()
            inflated, foreign = inflated + size, foreign + other
            rep.progress("objects", i, len(parsed))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return Seed(
        path=dest,
        objects=len(parsed),
        bytes=store.stats["fetched_bytes"],
        inflated=inflated,
        catalogs=catalogs,
        foreign=foreign,
        fqrn=repo.fqrn,
        revision=repo.revision,
        root_hash=repo.root_hash,
    )


def _order_for_lru(cache: Path, traced: list[tuple[str, str]]) -> None:
    """mtimes in trace order (the quota's LRU evicts the oldest first; ``quota.Quota.scan``):
    everything else a second before the first traced object."""
    now = int(time.time())
    base = now - len(traced) - 1
    for top in ("data", "plain"):
        for dirpath, _dirs, names in os.walk(cache / top):
            for n in names:
                os.utime(os.path.join(dirpath, n), (base, base))
    plain = PlainCache(cache)
    for i, (h, suffix) in enumerate(traced, 1):
        t = base + i
        for p in (plain.where(h, suffix), str(cache / f"data/{h[:2]}/{h[2:]}{suffix}")):
            with contextlib.suppress(FileNotFoundError):
                os.utime(p, (t, t))


def _write_disk(root: Path, dest: Path, size_mb: int, tools: tuple[str, str, str]) -> int:
    """The scratch disk of ``size_mb`` MB at ``dest`` (qcow2): MBR, ext4 UROOT from ``root``."""
    mke2fs, debugfs, qemu_img = tools
    raw = root.parent / "disk.raw"
    total = size_mb * MB // disk.SECTOR
    with open(raw, "wb") as f:
        f.truncate(size_mb * MB)
        f.write(disk.mbr(total))
    # e2fsprogs' unix I/O: the partition in the file. Named relative to root's parent (debugfs runs
    # there): it cuts the name at the first '?', and a destination folder holding one was another
    # file's name (debugfs could not open it, pr26c 6)
    fs = f"{raw.name}?offset={disk.START * disk.SECTOR}"
    # The file system fills the partition mbr() describes; inode tables and the journal are
    # initialised now (zeros: sparse), so the guest's kernel has no lazy init to do at boot.
    proc.run([mke2fs, "-q", "-F", "-t", "ext4", "-L", LABEL, "-d", root, "-E",
              f"offset={disk.START * disk.SECTOR},lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0",
              raw, f"{(total - disk.START) * disk.SECTOR // 1024}k"])  # fmt: skip
    _root_owned(root, fs, debugfs)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        # both absolute (make_seed made dest so): no name qemu reads as a protocol (proc.qemu_file)
        proc.run([qemu_img, "convert", "-q", "-f", "raw", "-O", "qcow2", raw, tmp])
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        raw.unlink()
    return dest.stat().st_size


def _root_owned(root: Path, fs: str, debugfs: str) -> None:
    """Every inode ``mke2fs -d`` copied from ``root`` owned by root, folders 0755, files 0644, as
    the initrd (root, umask 022) makes them. ``mke2fs -d`` copies the builder's owners: a seed made
    by user 1000 would let the guest's user 1000 rewrite the cache the root daemon serves from, and
    own ``persistent/``, the overlay's upper folder, which is the OS's ``/``.
    ``fs``: the partition as debugfs names it, relative to ``root``'s parent, where it runs."""
    lines = []
    for dirpath, dirs, files in os.walk(root):
        rel = "/" + os.path.relpath(dirpath, root).removeprefix(".").lstrip("/")
        for name, mode in [("", "040755")] + [(d, "040755") for d in dirs] + [(f, "0100644") for f in files]:
            path = f"{rel.rstrip('/')}/{name}" if name else rel
            lines += [f"sif {path} uid 0", f"sif {path} gid 0", f"sif {path} mode {mode}"]
    script = root.parent / "owners.debugfs"
    script.write_text("\n".join(lines) + "\n")
    # debugfs reports a failed command on stderr and still exits 0: any output there is a failure
    r = proc.run([debugfs, "-w", "-f", script, fs], cwd=root.parent)
    problems = [
        x for x in r.stderr.decode(errors="replace").splitlines() if x and not x.startswith("debugfs ")
    ]
    if problems:
        raise ToolError(
            f"debugfs could not set the seed's owners: {problems[0]}",
            hint="nothing was written; check that e2fsprogs (mke2fs, debugfs) is installed whole",
        )
