"""File contents compressed, hashed and stored on a worker pool while the tree is staged."""

from __future__ import annotations

import errno
import os
import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from ..errors import CvmfsError
from ..fsutil import NotRegularFile, open_regular
from .objwrite import SMALL, ObjectWriter, StoredFile, _SizeChanged
from .options import Options
from .stage import Stage


class ContentStore:
    """Compresses and stores file contents on a thread pool, then records them in the stage."""

    def __init__(self, store: ObjectWriter, stage: Stage, opts: Options):
        self.store = store
        self.stage = stage
        self.opts = opts
        # Two threads per core: compression and hashing release the GIL, and a thread that waits
        # for the kernel (creating an object file, or throttled while dirty pages are written
        # back) leaves its core to the other one. Measured on 2 cores: the cores stay busy.
        self.workers = max(2, min(8, 2 * len(os.sched_getaffinity(0))))
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="publish")
        self.pending: dict[Future[StoredFile], str] = {}
        self.done: queue.SimpleQueue[Future[StoredFile]] = queue.SimpleQueue()
        self.results: list[tuple[str, StoredFile]] = []  # recorded in the stage in batches
        self.done_bytes = 0
        self.total_bytes = 0
        self.stored_count = 0

    def _apply(self, fut: Future[StoredFile]) -> None:
        path = self.pending.pop(fut)
        stored = fut.result()
        self.results.append((path, stored))
        if len(self.results) >= 256:
            self._flush()
        self.done_bytes += stored.size
        if self.opts.progress:
            self.opts.progress(self.done_bytes, self.total_bytes)
        self.stored_count += 1
        if self.stored_count == 1:
            self.opts.reached("objects")

    def _flush(self) -> None:
        self.stage.set_contents(self.results)
        self.results = []

    def _submit(self, job: Callable[[], StoredFile], repo_path: str) -> None:
        self._wait(4 * self.workers)
        fut = self.pool.submit(job)
        self.pending[fut] = repo_path
        fut.add_done_callback(self.done.put)

    def _wait(self, limit: int) -> None:
        while len(self.pending) > limit:
            self._apply(self.done.get())

    def submit_file(self, repo_path: str, fs_path: str, size: int, ident: tuple[int, int]) -> None:
        """Store the regular file the scan saw at ``fs_path`` (device and inode ``ident``)."""
        small = size <= SMALL and not self.opts.chunking.should_chunk(size)

        def job() -> StoredFile:
            try:
                with _open_scanned(fs_path, ident) as f:
                    if small:
                        return self.store.put_small_file(f.fileno(), size)
                    return self.store.put_stream(f, size, self.opts.chunking)
            except (_SizeChanged, _Replaced) as e:
                raise CvmfsError(
                    f"{fs_path}: file changed while publishing ({e})", hint="publish again when it is quiet"
                ) from None
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    # the store's write, not the source's read: the line blamed the source file and
                    # hinted at its permissions (pr24b finding 9)
                    raise CvmfsError(
                        f"cannot store {fs_path} in the repository: {e.strerror}",
                        hint="free some space where the repository is, then publish again (the re-run"
                        " finishes the job)",
                    ) from e
                raise CvmfsError(f"{fs_path}: cannot read: {e.strerror}", hint="check permissions") from e

        self._submit(job, repo_path)

    def submit_bytes(self, repo_path: str, data: bytes) -> None:
        def job() -> StoredFile:
            name = self.store.put_bytes(data)
            return StoredFile(bytes.fromhex(name[:40]), (), len(data))

        self._submit(job, repo_path)

    def record(self, repo_path: str, stored: StoredFile) -> None:
        self.stage.set_content(repo_path, stored.digest, stored.chunks)
        self.done_bytes += stored.size
        if self.opts.progress:
            self.opts.progress(self.done_bytes, self.total_bytes)

    def settle(self) -> None:
        """Record every pending content now: before a path whose content is pending is staged
        again (a tar stream naming it twice), or the late result would land on the new entry."""
        self._wait(0)
        self._flush()

    def finish(self) -> None:
        try:
            self._wait(0)
            self._flush()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


_OTHER_FILE = "replaced by another file since the scan; nothing outside the source is read"


class _Replaced(Exception):
    """The path no longer names the regular file the scan saw."""


def _open_scanned(fs_path: str, ident: tuple[int, int]) -> BinaryIO:
    """The file the scan saw at ``fs_path``, open. Between the scan and this read the tree may change
    under the publisher: the last part swapped for a symbolic link (never followed), for a FIFO
    (never waited on: ``open_regular``), or a directory above it swapped for a link out of the tree;
    the file opened must be the very one scanned (device and inode), so nothing outside the source is
    ever published (a file read through a swapped link was)."""
    try:
        f = open_regular(Path(fs_path), follow_links=False)
    except NotRegularFile:
        raise _Replaced(_OTHER_FILE) from None
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise _Replaced("removed since the scan") from None
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _Replaced("replaced by a link since the scan; it is not followed") from None
        raise
    st = os.fstat(f.fileno())
    if (st.st_dev, st.st_ino) != ident:
        f.close()
        raise _Replaced(_OTHER_FILE)
    return f
