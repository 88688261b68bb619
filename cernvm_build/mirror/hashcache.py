"""File hashes remembered by file identity, so an unchanged tree is not read again.

A hash is reused only while the file's (device, inode, size, mtime, ctime) are exactly what they
were when it was hashed. ctime cannot be set back by users, so any write to the file (even one that
keeps size and mtime, as a same-size package rebuild with a restored timestamp does) forces a re-hash;
this is the check git's index relies on. Files changed in the last two seconds are not remembered,
because a further write within the same timestamp tick would be invisible. ``--rehash`` bypasses it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import MirrorError
from ..fsutil import atomic_write, reclaim_dead_named

#: the checksum types of yum metadata (createrepo_c's names, "sha" is old createrepo's sha1) and apt's,
#: by hashlib name. Only these: another name hashlib knows is no repository checksum, and the
#: shake_* ones take a length for their digest (a repomd.xml saying "shake_128" was a TypeError)
CHECKSUM_TYPES = {
    "md5": "md5",
    "sha": "sha1",
    "sha1": "sha1",
    "sha224": "sha224",
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
}


def new_hash(algo: str) -> hashlib._Hash:
    name = CHECKSUM_TYPES.get(algo.lower())
    if name is None:
        raise MirrorError(
            f"unknown checksum type '{algo[:40]}'",
            hint="supported: md5, sha1, sha224, sha256, sha384, sha512",
        )
    return hashlib.new(name)


def hash_stream(chunks: Iterable[bytes], algo: str) -> tuple[str, int]:
    h = new_hash(algo)
    size = 0
    for block in chunks:
        h.update(block)
        size += len(block)
    return h.hexdigest(), size


Sig = tuple[int, ...]
RACY_NS = 2_000_000_000


def signature(st: os.stat_result) -> Sig:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def probe_writable(directory: Path) -> None:
    """Raise the OSError a write under ``directory`` would meet (full disk, read-only, permissions).

    The probe is as big as the hash store already is (plus a margin), so a file system with no room
    for the store fails here, before a sync, and not after the upload.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        reclaim_dead_named(directory, r"\.probe-(\d+)")  # a killed run's (64 KiB and more) stayed for ever
        store = directory / "hashes.json"
        size = (store.stat().st_size if store.is_file() else 0) + 65536
        probe = directory / f".probe-{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * size)
                f.flush()
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)
    except OSError as e:
        raise local_error(e) from e


def local_error(e: OSError) -> MirrorError:
    """One line for a local file-system failure (full disk, read-only cache, permissions)."""
    where = e.filename or "local file"
    hints = {
        errno.ENOSPC: "free space there or point CERNVM_CACHE_DIR elsewhere; nothing was published",
        errno.EROFS: "the cache is on a read-only file system: point CERNVM_CACHE_DIR at a writable folder",
        errno.EACCES: "check the permissions, or point CERNVM_CACHE_DIR at a writable folder",
    }
    return MirrorError(
        f"{where}: {e.strerror or e}",
        hint=hints.get(e.errno or 0, "fix it and re-run; a re-run finishes the job"),
    )


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            yield block


class HashCache:
    """Thread-safe; ``path=None`` keeps it in memory only (for one run)."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.lock = threading.Lock()
        self.entries: dict[str, tuple[Sig, str]] = {}
        self.dirty = False
        self.hits = 0
        self.misses = 0
        self._busy: dict[str, threading.Event] = {}  # files being hashed now, by key
        if path is not None and path.is_file():
            try:
                raw = json.loads(path.read_text())
                for key, (sig, digest) in raw.items():
                    self.entries[key] = (tuple(int(x) for x in sig), str(digest))
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
                # a damaged cache only costs a re-hash (JSON that is no mapping has no .items(), and
                # json recurses per nesting level: both were tracebacks)
                self.entries = {}

    def remembered(self, path: Path, algo: str = "sha256") -> tuple[str, int, Sig] | None:
        """The remembered hash if the file is unchanged since, else None (costs one stat)."""
        key = f"{algo}:{os.path.abspath(path)}"
        with self.lock:
            hit = self.entries.get(key)
        if hit is None:
            return None
        try:
            sig = signature(os.stat(path))
        except OSError:
            return None
        if hit[0] != sig:
            return None
        with self.lock:
            self.hits += 1
        return hit[1], sig[2], sig

    def digest(self, path: Path, algo: str = "sha256") -> tuple[str, int, Sig]:
        """``(hex digest, size, signature)``; the signature is the file's state the digest belongs to.
        A file another thread is hashing is waited for, not read twice (``prehash`` runs beside the
        verification)."""
        key = f"{algo}:{os.path.abspath(path)}"
        reads = 0
        while reads < 3:
            sig = signature(os.stat(path))
            with self.lock:
                hit = self.entries.get(key)
                if hit is not None and hit[0] == sig:
                    self.hits += 1
                    return hit[1], sig[2], sig
                busy = self._busy.get(key)
                if busy is None:
                    self._busy[key] = mine = threading.Event()
            if busy is not None:
                busy.wait()  # then look again: remembered, or (racy, changed) read here
                continue
            reads += 1
            try:
                digest, size = hash_stream(_chunks(path), algo)
                if signature(os.stat(path)) != sig or size != sig[2]:
                    continue  # written while we read it: read again
                with self.lock:
                    self.misses += 1
                    if max(sig[3], sig[4]) < time.time_ns() - RACY_NS:
                        self.entries[key] = (sig, digest)
                        self.dirty = True
                return digest, size, sig
            finally:
                with self.lock:
                    del self._busy[key]
                mine.set()
        raise OSError(f"{path}: keeps changing while it is read")

    def fact(self, path: Path, name: str) -> str | None:
        """Something found about the file (e.g. its signature verified) while it is unchanged since."""
        return hit[0] if (hit := self.remembered(path, name)) else None

    def remember_fact(self, path: Path, name: str, value: str) -> None:
        """Remember ``value`` for this state of the file (not for files changed in the racy window)."""
        try:
            sig = signature(os.stat(path))
        except OSError:
            return
        if max(sig[3], sig[4]) < time.time_ns() - RACY_NS:
            with self.lock:
                self.entries[f"{name}:{os.path.abspath(path)}"] = (sig, value)
                self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        with self.lock:
            live = {k: v for k, v in self.entries.items() if os.path.exists(k.split(":", 1)[1])}
            doc = {k: [list(sig), d] for k, (sig, d) in live.items()}
            self.dirty = False
        atomic_write(self.path, json.dumps(doc, separators=(",", ":")).encode())
