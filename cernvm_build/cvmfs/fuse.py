"""The read-only FUSE filesystem over a Repository: its parts shared by the daemon (``fuse_inodes``
on the kernel's protocol, ``fuse_lowlevel``) and mfusepy's libfuse 2 front end (``fuse_libfuse2``).

Contents are fetched on demand through the repository's object store and cache. Inodes are stable
per path and shared by hard links; the kernel may cache everything for long because a mounted
revision never changes. Like the real client, every path carries the extended attributes
``user.fqrn``, ``user.revision``, ``user.root_hash`` and ``user.tag`` (files also ``user.hash``).
"""

from __future__ import annotations

import bisect
import collections
import errno
import os
import posixpath
from collections.abc import Callable, Iterator, Mapping, Sequence
from stat import S_IFDIR, S_IFLNK, S_IFREG

from .. import lazylog
from ..errors import CernVMError, CvmfsError
from . import follows
from .catalog import DirEntry
from .catalog_rows import FLAG_EXTERNAL, path_inode
from .prefetch import BATCH, MAX_LISTING, MAX_PENDING, WINDOW_FILES, Prefetcher
from .repository import Repository
from .store import AHEAD_ITEM
from .variant import expand

TYPE_CHECKING = False  # typing's own costs importing typing (see lazylog)
if TYPE_CHECKING:
    from typing import Any

    from .prefetch import _Listing

log = lazylog.get(__name__)


def _target(e: DirEntry) -> str:
    """A symlink's target as the real client shows it: variant ``$(NAME)`` parts expanded from the
    mount's environment (``variant.py``)."""
    return expand(e.symlink, os.environ)


ENOATTR = getattr(errno, "ENOATTR", errno.ENODATA)
#: entries kept for getattr after readdir (a DirEntry is about 1 KiB with its strings)
ENTRY_CACHE = 50_000
VIRTUAL_XATTRS = ("user.fqrn", "user.revision", "user.root_hash", "user.tag")


def shown_size(e: DirEntry) -> int:
    """``st_size`` as the real client shows it (a symlink's: its expanded target's length)."""
    kind = e.kind
    if kind in (S_IFREG, S_IFDIR):
        return e.size
    return len(_target(e).encode("utf-8", "surrogateescape")) if kind == S_IFLNK else 0


def xattr_names(entry: DirEntry, magic: bool = True) -> list[str]:
    """The virtual attributes every path carries (unless not ``magic``), then the entry's own."""
    names = list(VIRTUAL_XATTRS) if magic else []
    if entry.content_hash and magic:
        names.append("user.hash")
    names.extend(k for k in sorted(entry.xattrs) if k not in names)
    return names


def xattr_value(repo: Repository, entry: DirEntry, name: str, magic: bool = True) -> bytes | None:
    """The built-in attributes first (when ``magic``), as the real client answers them: a file's own
    ``user.root_hash`` or ``user.revision``, written by whoever published it, must not pass for the
    mount's verified ones (``attr -g root_hash`` to see which revision is mounted)."""
    if magic:
        if name == "user.fqrn":
            return repo.fqrn.encode()
        if name == "user.revision":
            return str(repo.revision).encode()
        if name == "user.root_hash":
            return repo.root_hash.encode()
        if name == "user.tag":
            return (repo.tag or "").encode()
        if name == "user.hash" and entry.content_hash:
            return entry.content_hash.encode()
    return entry.xattrs.get(name)


def has_own_xattrs(repo: Repository) -> bool:
    """Whether any entry of the mounted revision has extended attributes of its own, from the root
    catalog's counters (nested catalogs' included); a catalog without the counter may have some."""
    stats = repo.statistics()
    if "self_xattr" not in stats:
        return True
    return stats["self_xattr"] + stats.get("subtree_xattr", 0) > 0


#: in-order opens in a row in one directory before its next files are fetched ahead (see below)
IN_ORDER_RUN = 2
#: directories whose last open is remembered for that
IN_ORDER_DIRS = 256
#: opens in a row of cached files, nothing fetched ahead meanwhile, after which opens of cached files
#: are not followed (a warm cache); two windows: an in-order reader on a cold cache has its window
#: topped up (a fetch) at least once in that many opens
IN_ORDER_QUIET = 2 * WINDOW_FILES
#: cold ``.pyc`` opens folded with their source found not to check it, after which no more are
PYC_UNCHECKED = 8
#: a directory's other small files are fetched ahead at once when its files were opened cold at least
#: DENSE_MISSES times, those opens are at least DENSE_SHARE (per ten) of its small files, and it has
#: at most DENSE_FILES of them (see _dense)
DENSE_MISSES = 3
DENSE_SHARE = 5
DENSE_FILES = 128
#: files fetched ahead for one file opened cold that names what its reader loads next, at most (a
#: program's libraries and theirs, a unit's units and theirs: see _follow)
FOLLOW_MAX = 64
#: files whose names were followed once, remembered (a program's libc is not read again)
FOLLOW_SEEN = 4096


def _foldable(e: DirEntry) -> bool:
    """A file whose whole object one pipelined batch may carry (``store.AHEAD_ITEM``)."""
    return 0 < e.size <= AHEAD_ITEM and not e.chunks and not e.flags & FLAG_EXTERNAL


class InOrderPrefetcher(Prefetcher):
    """Fetches a directory's next small files ahead only for a reader that goes through it in name
    order: when an open is the next small file after the previous open there, ``IN_ORDER_RUN``
    times in a row, and the directory was listed (tar, ``cp -r``, ``find | xargs cat``, udev's rules).
    A boot opens files here and there (libraries, units, modules by import): opening one does not
    mean its neighbours are next, and in a CPU-starved guest (TCG) every copy fetched, inflated
    and written ahead for nothing costs the boot (fetching ahead on every open, the Debian boot made
    2,295 copies by SSH where it needs ~1,485: docs/ARCHITECTURE.md μCernVM). A sequential reader's
    next chunk is fetched ahead as always."""

    def __init__(self, repo: Repository, entries: Mapping[int, DirEntry] | None = None):
        super().__init__(repo)
        #: the FUSE layer's entries by inode, if it keeps them (``fuse_inodes``): a pyc's source,
        #: looked up by Python just before, is found there without a catalog query (see _fold)
        self._entries = entries
        self._runs: collections.OrderedDict[str, tuple[str, int]] = collections.OrderedDict()
        #: files opened in a row that were in the plain cache while nothing was fetched ahead
        self._warm = 0
        #: cold pycs folded with their source that did not check it (see _fold)
        self._pyc_unchecked = 0
        #: cold opens by directory and its small files' count (-1: not counted yet); the opens -1 once
        #: its files were fetched ahead or found too many (see _dense)
        self._cold: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self._cache = repo.store.plain_cache
        #: files whose names were followed, and how names resolve (see _follow)
        self._followed: set[str] = set()
        self._follower = follows.Follower(repo.lookup_normal, repo.listing)

    def listed(self, path: str, children: Sequence[DirEntry]) -> None:
        # kept even when the prefetcher has gone quiet (a warm cache): the run needs the order
        self._keep(path, children)

    def opened(self, entry: DirEntry) -> None:
        # A warm cache: after IN_ORDER_QUIET opens in a row of cached files with nothing fetched
        # ahead meanwhile, an open of a cached file does nothing more (the run bookkeeping below was
        # up to 15 % of a warm READ's instructions); the first open of a file not cached restarts
        # run detection, so a reader entering a cold part meets IN_ORDER_RUN + 1 files cold first.
        # Any fetch ahead (``_submit_job``) counts again from zero: an in-order reader on a cold
        # cache reads the files fetched ahead for it, cached, but the window keeps moving on.
        h = entry.content_hash
        cold = False  # this open's file is not cached yet
        if self._warm >= IN_ORDER_QUIET:  # a GIL-held counter: a lost update is harmless
            held = self._cache.held if self._cache else None  # PlainCache.has inline: every open
            if held is not None and h in held:
                return
            if h is None or entry.chunks or self._have(h, ""):
                return
            self._warm = self._quiet = 0  # the base's quiet too: a missing file ends it
            cold = True
        elif h is not None and self._have(h, ""):
            self._warm += 1
        else:
            self._warm = 0
            cold = h is not None
        parent = entry.path.rpartition("/")[0] or "/"  # posixpath.dirname: four calls, on every open
        with self._lock:
            listing = self._dirs.get(parent)
            prev = self._runs.get(parent)
            run = 0
            if listing is not None and prev is not None and prev[0] < entry.name:
                i = bisect.bisect_right(listing.names, prev[0])
                if i < len(listing.names) and listing.names[i] == entry.name:
                    run = prev[1] + 1
            self._runs[parent] = (entry.name, run)
            self._runs.move_to_end(parent)
            while len(self._runs) > IN_ORDER_DIRS:
                self._runs.popitem(last=False)
        if run >= IN_ORDER_RUN:
            super().opened(entry)
        elif cold and self._cache is not None:
            if _foldable(entry):
                self._fold(entry)
                self._dense(parent, entry)
            if follows.may_load(entry) or follows.is_unit(entry):
                self._submit_job((self._follow, entry), [])

    def _fold(self, entry: DirEntry) -> None:
        """``entry``'s file is not cached and its reader is about to fetch it (a round trip of its
        own, and under TCG one costs the guest ~3x an object of a pipelined batch: issue 13): when
        the object read next is known, fetch it here with it, in one pipelined request
        (``ObjectStore.fetch_ahead_many``; the read that follows takes its contents as handed over).
        Known: a ``__pycache__/*.pyc``'s ``.py``, which Python reads right after a pyc that checks
        its source's hash (Debian's py3compile writes those under SOURCE_DATE_EPOCH: the Debian 12
        boot read 454 sources for that, 374 of them right after their pyc), until PYC_UNCHECKED
        folded pycs turn out not to check it (a tree of timestamp pycs). Not the directory's next
        files: replayed on the Debian boot's trace, 3 of them per cold open saved 930 round trips
        for 575 objects (12 MB) never read. Every object still goes through the store's checks;
        the file's own fetch is not retried here (``retry`` False: a failure gives its claim back
        and the read fetches it itself, with fail-over)."""
        if self._pyc_unchecked >= PYC_UNCHECKED:
            return
        folder, pycache, name = entry.path.rpartition("/__pycache__/")
        if not pycache or not name.endswith(".pyc"):
            return
        path = f"{folder}/{name.partition('.')[0]}.py"
        if self._entries is not None:  # Python stat'ed it before reading the pyc: a LOOKUP kept it
            source = self._entries.get(path_inode(path))
            if source is not None and source.path != path:
                source = None  # a hard link's shared inode: not worth a query
        else:
            try:
                source = self.repo.lookup_normal(path)
            except CernVMError:
                return
        if source is None or source.content_hash is None or not _foldable(source):
            return
        if self._have(source.content_hash, ""):
            return
        mine = (source.content_hash, "", source.size, source.compressed, f"file {source.path}")
        if self._fold_fetch(entry, [mine]):
            # the pyc's flags (PEP 552): bit 1 set, it checks its source (then read next)
            head = self.repo.store.handed_over(entry.content_hash or "", 16)
            if head is not None and not (len(head) == 16 and head[4] & 2):
                self._pyc_unchecked += 1

    def _dense(self, parent: str, entry: DirEntry) -> None:
        """``entry``, a small file of ``parent``, was opened cold (its reader fetches it, a round trip
        of its own: issue 13). A boot reads most of some directories whole but not in name order
        (systemd's units, udev's rules, a Python package's modules by import, the libraries of
        ``/usr/lib/x86_64-linux-gnu``), and little of others (``/usr/bin``, the standard library):
        once a directory's cold opens are DENSE_MISSES and a DENSE_SHARE of its at most DENSE_FILES
        small files, the rest of them are fetched ahead in pipelined batches, once per directory.
        Replayed on the Debian boot's trace (its first-fetch order): 1,325 -> 989 round trips, 146
        objects (1.35 MB) fetched that the boot did not read (2 cold opens instead of 3: 964 for
        161, but two reads in a small directory say little: a few files of /etc); the next files in
        name order saved fewer for more waste (see _fold). Half of a directory, not 3/10 as first:
        an object fetched ahead saves ~3 guest-ms if read and wastes ~8 if not, so the rest must be
        read with a chance above ~73 %; replayed on a boot's opens (``bench/prefetch_replay.py``),
        3/10 of up to 64 files fetched 367 ahead of which 105 were never read, half of up to 128
        fetched 415 (with ``_follow``'s) of which 59. The catalog says which files, every object
        is checked as any read's, and the waste is bounded by the directories' size (128 x 128 KiB
        at most each)."""
        with self._lock:
            misses, small = self._cold.get(parent, (0, -1))
            if misses < 0:
                return
            misses += 1
            self._cold[parent] = (misses, small)
            self._cold.move_to_end(parent)
            while len(self._cold) > IN_ORDER_DIRS:
                self._cold.popitem(last=False)
            listing = self._dirs.get(parent)
        if misses < DENSE_MISSES or (small >= 0 and misses * 10 < DENSE_SHARE * small):
            return  # not dense yet (its small files counted already: no catalog query)
        files = self._small(parent, listing)
        if files is not None and len(files) > DENSE_FILES:
            files = None  # never fetched ahead
        own = entry.content_hash
        todo: list[DirEntry] = []
        with self._lock:
            if files is not None and misses * 10 < DENSE_SHARE * len(files):
                self._cold[parent] = (misses, len(files))  # a later cold open may make it dense
                return
            self._cold[parent] = (-1, 0)  # fetched ahead now, or never
            for e in files or ():
                h = e.content_hash
                if h is None or h == own or h in self._pending or self._have(h, ""):
                    continue
                if len(self._pending) >= MAX_PENDING:
                    break
                self._pending.add(h)
                todo.append(e)
        for k in range(0, len(todo), BATCH):
            batch = todo[k : k + BATCH]
            self._submit_job((self._fetch_batch, batch), [e.content_hash or "" for e in batch])

    def _follow(self, entry: DirEntry) -> None:
        """``entry``, opened cold, names what its reader loads next (``follows``): a program or library
        the dynamic loader is about to load (its DT_NEEDED libraries, theirs...), a unit systemd
        loads (the units it names, theirs...); each of those a round trip of its own otherwise
        (issue 13). A pool job: ``entry``'s copy is the one its reader makes (waited for here). The
        files named and not cached are fetched ahead in pipelined batches, up to FOLLOW_MAX, and
        followed in turn; a file followed once is not read again (libc). Every object is checked
        as any read's; what cannot be resolved is left to the reader."""
        todo = [entry]
        found = 0
        while todo and found < FOLLOW_MAX:
            more: list[DirEntry] = []
            for e in todo:
                for f in self._named(e):
                    h = f.content_hash
                    if h is None or h in self._followed or found >= FOLLOW_MAX:
                        continue
                    if len(self._followed) < FOLLOW_SEEN:
                        self._followed.add(h)
                    more.append(f)
                    found += 1
            fetch: list[DirEntry] = []
            with self._lock:
                for f in more:
                    h = f.content_hash or ""
                    if h in self._pending or self._have(h, "") or len(self._pending) >= MAX_PENDING:
                        continue
                    self._pending.add(h)
                    fetch.append(f)
            for k in range(0, len(fetch), BATCH):
                self._fetch_batch(fetch[k : k + BATCH])
            todo = more

    def _named(self, e: DirEntry) -> list[DirEntry]:
        """The files ``e`` names that its reader loads next, read from its copy in the plain cache
        (made, or waited for, here); none if it cannot be read."""
        try:
            fd = self.repo.inflated_fd(e, 0)
        except CernVMError as err:
            log.debug("follow: %s: %s", e.path, err)
            return []
        try:
            return self._follower.files(e, lambda offset, n: os.pread(fd, n, offset))
        except OSError as err:
            log.debug("follow: %s: %s", e.path, err)
            return []
        finally:
            os.close(fd)

    def _small(self, parent: str, listing: _Listing | None) -> list[DirEntry] | None:
        """``parent``'s files one pipelined batch may carry: from its kept listing (readdir's), else
        from its catalog, not kept (a listing kept is what the in-order runs follow); None if the
        directory is too large to be listed ahead or its listing fails."""
        if listing is not None:
            return [e for e in listing.entries if _foldable(e)]
        try:
            children = self.repo.listing(parent, MAX_LISTING)
        except CernVMError as err:
            log.debug("dense: listing %s failed: %s", parent, err)
            return None
        return None if children is None else [e for e in children if _foldable(e)]

    def _fold_fetch(self, entry: DirEntry, more: list[tuple[str, str, int, bool, str]]) -> bool:
        """``entry``'s object and ``more`` in one pipelined fetch; False if it failed."""
        own = entry.content_hash or ""
        with self._lock:
            if own in self._pending:
                return False  # fetched ahead already: the read waits for that
            self._pending.add(own)
        try:
            first = (own, "", entry.size, entry.compressed, f"file {entry.path}")
            self.repo.store.fetch_ahead_many([first, *more], retry=False)
            return True
        except CernVMError as err:  # the read meets (and reports) its own file's error itself
            log.debug("fold of %s failed: %s", entry.path, err)
            return False
        finally:
            with self._lock:
                self._pending.discard(own)

    def _submit_job(self, job: tuple[Any, ...], keys: list[str]) -> None:
        self._warm = 0  # fetching ahead: not quiet (see opened)
        super()._submit_job(job, keys)


class Serving:
    """How a mount serves beyond what the revision says, the same for both front ends.
    ``magic_xattrs`` off: no virtual attributes (``user.fqrn``...), only the entries' own; when the
    revision has none either, GETXATTR and LISTXATTR are answered ENOSYS, after which the kernel sends
    none for the mount's life (the μCernVM root: overlayfs and exec ask for attributes of every
    file, and FUSE caches none). ``prefetch_in_order``: a directory's files are fetched ahead only
    for a reader going through it in name order (``InOrderPrefetcher``). Not to be changed once made
    (a plain class, not a dataclass: ``dataclasses`` cost the mount ~30 M instructions, issue 13)."""

    __slots__ = ("magic_xattrs", "prefetch_in_order")

    def __init__(self, magic_xattrs: bool = True, prefetch_in_order: bool = False) -> None:
        self.magic_xattrs = magic_xattrs
        self.prefetch_in_order = prefetch_in_order

    def prefetcher(self, repo: Repository, entries: Mapping[int, DirEntry] | None = None) -> Prefetcher:
        """``entries``: the front end's entries by inode, if it keeps them."""
        return InOrderPrefetcher(repo, entries) if self.prefetch_in_order else Prefetcher(repo)

    def any_xattrs(self, repo: Repository) -> bool:
        """Whether the mount has attributes to show at all."""
        return self.magic_xattrs or has_own_xattrs(repo)


def statfs_numbers(repo: Repository) -> dict[str, int]:
    """Sizes from the root catalog's counters (the whole revision); nothing free: read-only."""
    stats = repo.statistics()
    size = stats.get("self_file_size", 0) + stats.get("subtree_file_size", 0)
    files = sum(
        stats.get(f"{scope}_{kind}", 0)
        for scope in ("self", "subtree")
        for kind in ("regular", "dir", "symlink", "special")
    )
    return {
        "f_bsize": 4096,
        "f_frsize": 4096,
        "f_blocks": (size + 4095) // 4096,
        "f_files": files,
        "f_namemax": 255,
    }


def children(
    repo: Repository, directory: str | DirEntry, prefetch: Prefetcher, remember: Callable[[DirEntry], None]
) -> Iterator[tuple[str, DirEntry | None]]:
    """``.``, ``..`` (no entry) and the children of ``directory`` (a path, or its entry: not looked
    up again); entries of nested catalog mount points are the parent's (the nested root, loaded on
    lookup, is the one to show)."""
    # A generator: taken one by one, so a huge directory is never a list here.
    path = directory if isinstance(directory, str) else directory.path
    kept = prefetch.take_children(path)  # read ahead of the reader already: not read again
    try:
        listing = iter(kept) if kept is not None else repo.iterdir(directory)
    except CernVMError as e:
        if repo.lookup(path) is None:
            raise OSError(errno.ENOENT, path) from e
        raise _os_error(e) from e
    yield ".", None
    yield "..", None
    listed: list[DirEntry] | None = [] if kept is None else None  # the prefetcher has it
    try:
        for c in listing:
            if listed is not None:
                listed.append(c)
                if len(listed) > MAX_LISTING:
                    listed = None
            if not c.is_nested_mountpoint:
                remember(c)
            yield c.name, c
    except CernVMError as e:
        raise _os_error(e) from e
    if listed is not None:
        prefetch.listed(path, listed)


def dot_inode(path: str, name: str) -> int:
    """The inode of ``.`` or ``..`` in directory ``path`` (directories are never hard links, so the
    path's; a directory entry with inode 0 is one that libc's readdir leaves out)."""
    return path_inode(path if name == "." else posixpath.dirname(path))


def _os_error(e: CernVMError) -> OSError:
    log.error("%s", e)
    return OSError(errno.EIO, str(e))


def run_fuse(
    repo: Repository,
    mountpoint: str,
    *,
    on_ready: Callable[[], None] | None = None,
    allow_other: bool | None = None,
    debug: bool = False,
    stats: str | None = None,
    serving: Serving = Serving(),
) -> None:
    """Mount and serve until unmounted (blocks). ``stats``: a file for the request counts;
    ``serving``: the mount's choices (``Serving``).

    The daemon speaks the kernel's protocol itself (``fuse_lowlevel``, ``fuse_inodes``). Only where
    ``FUSE_LIBRARY_PATH`` names libfuse 2 (a host, to compare with: tests, ``bench/cvmfs_read.py``)
    mfusepy's high-level API serves instead (``fuse_libfuse2``).
    """
    if allow_other is None:
        allow_other = os.geteuid() == 0
    if "libfuse.so.2" in os.environ.get("FUSE_LIBRARY_PATH", ""):
        from .fuse_libfuse2 import run_libfuse2

        try:
            run_libfuse2(
                repo, mountpoint, on_ready=on_ready, allow_other=allow_other, debug=debug, serving=serving
            )
        except RuntimeError as e:  # mfusepy's report of a failed fuse_main
            raise _mount_failed(repo, mountpoint, e) from e
        return
    from . import fuse_inodes

    flags = ["ro", "default_permissions", f"fsname=cvmfs2:{repo.fqrn}", "subtype=cvmfs"]
    flags += ["allow_other"] if allow_other else []
    try:
        fuse_inodes.serve_lowlevel(
            repo, mountpoint, flags, on_ready=on_ready, debug=debug, stats=stats, serving=serving
        )
    except RuntimeError as e:
        raise _mount_failed(repo, mountpoint, e) from e


def _mount_failed(repo: Repository, mountpoint: str, e: RuntimeError) -> CvmfsError:
    return CvmfsError(
        f"{repo.fqrn}: mounting on {mountpoint} failed ({e})",
        hint="is /dev/fuse there, the mount point empty and not mounted already?",
    )
