"""The root mount's fetch-ahead rules replayed on a recorded boot (issue 13): which objects a rule
turns from demand fetches (one round trip each, ~11.5 guest-CPU-ms under TCG) into pipelined
ones (~8.4 ms), and what it fetches that the boot never reads (~8 ms each for nothing).

The trace is the boot's opens in order, one a line: ``<monotonic s> <thread> <cold 0/1> <hash>
<size> <chunks> <path>`` (recorded by a mount whose prefetcher fetched nothing ahead, so every
object of it was a demand fetch: the boot's own order, no predictor's). The repository is the same
tree published the same way (``demo.repository.publish_debian``: the same content hashes). The
real ``fuse.InOrderPrefetcher`` runs over it, its catalog queries on the real catalogs; only what
it fetches is simulated: at once and always good (an object fetched ahead is there before the next
open: the best case for every rule alike). Chunked files are left out (their chunks' reads are not
in the trace). Prints, per rule set: demand fetches, folded (the reader's own object in a pipelined
request), fetched ahead, of those never read, MB fetched and MB never read (stored sizes), and the
guest-CPU estimate from the per-object costs of docs/ARCHITECTURE.md (ob17).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.common import flags
from cernvm_build import profile
from cernvm_build.bootloader.kernel import fetch_debian_kernel
from cernvm_build.cvmfs import fuse
from cernvm_build.cvmfs.catalog import DirEntry
from cernvm_build.cvmfs.repository import Repository, open_repository
from cernvm_build.demo.repository import publish_debian

#: guest-CPU-ms per object under TCG (ob17): fetched by its reader, fetched in a pipelined batch
DEMAND_MS = 6.8 + 1.4 + 3.3
PIPELINED_MS = 2.7 + 1.9 + 3.8


@dataclasses.dataclass
class Open:
    time: float
    thread: int
    hash: str
    size: int
    chunks: int
    path: str


def read_trace(path: Path) -> list[Open]:
    opens = []
    for line in path.read_text().splitlines():
        parts = line.split(" ", 6)
        if line.startswith("#") or len(parts) != 7 or parts[3] == "None":
            continue
        t, thread, _cold, h, size, chunks, p = parts
        opens.append(Open(float(t), int(thread), h, int(size), int(chunks), p))
    return opens


@dataclasses.dataclass
class Tally:
    demand: int = 0
    folded: int = 0
    ahead: int = 0
    fetched_bytes: int = 0
    ahead_keys: set[str] = dataclasses.field(default_factory=set)
    read: set[str] = dataclasses.field(default_factory=set)
    demand_paths: list[str] = dataclasses.field(default_factory=list)
    have: set[str] = dataclasses.field(default_factory=set)

    def unread(self) -> set[str]:
        return self.ahead_keys - self.read


class _Plain:
    """The plain cache's ``has`` over the replay's objects."""

    held = None

    def __init__(self, tally: Tally):
        self.tally = tally

    def has(self, name: str, suffix: str) -> bool:
        return name + suffix in self.tally.have


class _Store:
    """What the prefetcher asks of the store, answered from the replay's state and the stratum."""

    plain_full = False

    def __init__(self, tally: Tally, stratum: Path):
        self.tally, self.stratum = tally, stratum
        self.plain_cache = _Plain(tally)

    def stored(self, key: str) -> bytes:
        return (self.stratum / "data" / key[:2] / key[2:]).read_bytes()

    def contents(self, key: str, n: int) -> bytes:
        return zlib.decompressobj().decompress(self.stored(key), n)

    def make(self, key: str, *, own: str = "") -> None:
        t = self.tally
        if key in t.have:
            return
        t.have.add(key)
        t.fetched_bytes += len(self.stored(key))
        if key == own:
            t.folded += 1
        else:
            t.ahead += 1
            t.ahead_keys.add(key)

    def fetch_ahead_many(self, items: Sequence[tuple[str, str, int, bool, str]], **_: Any) -> tuple[int, int]:
        for name, suffix, *_rest in items:
            self.make(name + suffix)
        return len(items), 0

    def handed_over(self, key: str, n: int) -> bytes | None:
        return self.contents(key, n) if key in self.tally.have else None


class _Repo:
    """The real revision's tree with the replay's store."""

    def __init__(self, real: Repository, store: _Store):
        self.real, self.store = real, store

    def listing(self, path: str | DirEntry, limit: int) -> list[DirEntry] | None:
        return self.real.listing(path, limit)

    def iterdir(self, path: str | DirEntry = "/") -> Iterator[DirEntry]:
        return self.real.iterdir(path)

    def lookup_normal(self, path: str) -> DirEntry | None:
        return self.real.lookup_normal(path)

    def lookup(self, path: str) -> DirEntry | None:
        return self.real.lookup(path)

    def readlink(self, path: str) -> str:
        return self.real.readlink(path)

    def fetch_ahead_many(self, entries: Sequence[DirEntry]) -> None:
        for e in entries:
            self.store.make(e.content_hash or "")

    def inflated_fd(self, entry: DirEntry, part: int) -> int:
        """The copy a pool job reads (``InOrderPrefetcher._elf``): made as its reader makes it (a
        demand fetch) unless made already."""
        key = entry.content_hash or ""
        t = self.store.tally
        if key not in t.have:
            t.have.add(key)
            t.demand += 1
            t.fetched_bytes += len(self.store.stored(key))
        fd = os.memfd_create("replay")
        os.write(fd, zlib.decompress(self.store.stored(key)) if entry.compressed else self.store.stored(key))
        return fd


class _Replay(fuse.InOrderPrefetcher):
    """The shipped prefetcher, its jobs run at once in the caller's thread."""

    def _submit_job(self, job: tuple[Any, ...], keys: list[str]) -> None:
        self._warm = 0
        job[0](*job[1:])

    def _fold_fetch(self, entry: DirEntry, more: list[tuple[str, str, int, bool, str]]) -> bool:
        store: _Store = self.repo.store  # type: ignore[assignment]
        store.make(entry.content_hash or "", own=entry.content_hash or "")
        for name, suffix, *_rest in more:
            store.make(name + suffix)
        return True


def replay(
    real: Repository, stratum: Path, opens: list[Open], upto: float | None = None
) -> tuple[Tally, int]:
    tally = Tally()
    store = _Store(tally, stratum)
    pf = _Replay(_Repo(real, store))  # type: ignore[arg-type]
    chunked = 0
    for o in opens:
        if upto is not None and o.time > upto:
            break
        if o.chunks:
            chunked += 1
            continue
        entry = real.lookup_normal(o.path)
        if entry is None or entry.content_hash != o.hash:
            continue
        pf.opened(entry)
        if o.hash not in tally.have:
            tally.have.add(o.hash)
            tally.demand += 1
            tally.fetched_bytes += len(store.stored(o.hash))
            tally.demand_paths.append(o.path)
        tally.read.add(o.hash)
    return tally, chunked


def report(name: str, t: Tally, store_root: Path) -> str:
    unread = t.unread()
    unread_b = sum((store_root / "data" / k[:2] / k[2:]).stat().st_size for k in unread)
    cpu = DEMAND_MS * t.demand + PIPELINED_MS * (t.folded + t.ahead)
    return (
        f"{name:28} demand {t.demand:5}  folded {t.folded:4}  ahead {t.ahead:5}  never read {len(unread):4} "
        f"({unread_b / 1e6:5.2f} MB)  fetched {t.fetched_bytes / 1e6:6.2f} MB  "
        f"est. guest CPU {cpu / 1e3:6.2f} s"
    )


#: the rule sets compared: fuse's constants each sets (the rest as shipped)
VARIANTS: dict[str, dict[str, int]] = {
    "nothing fetched ahead": {"FOLLOW_MAX": 0, "DENSE_FILES": 0, "PYC_UNCHECKED": 0},
    "ob26a: dense 64 / 3 of 10": {"FOLLOW_MAX": 0, "DENSE_FILES": 64, "DENSE_SHARE": 3},
    "+ follows (ELF, units)": {"DENSE_FILES": 64, "DENSE_SHARE": 3},
    "+ dense 128 / 3 of 10": {"DENSE_SHARE": 3},
    "shipped": {},
}
TRACE = Path(__file__).resolve().parent / "traces" / "debian12-first-boot.opens"


def compare(trace: Path, stratum: Path, key: Path, cache: Path, folders: int) -> list[str]:
    real = open_repository(stratum, public_keys=[key], cache_dir=cache)
    opens = read_trace(trace)
    lines = [f"{len(opens)} opens of {trace.name}"]
    for name, values in VARIANTS.items():
        saved = {k: getattr(fuse, k) for k in values}
        try:
            for k, v in values.items():
                setattr(fuse, k, v)
            t, chunked = replay(real, stratum, opens)
        finally:
            for k, v in saved.items():
                setattr(fuse, k, v)
        lines.append(report(name, t, stratum) + (f" ({chunked} chunked opens left out)" if chunked else ""))
    by_folder = collections.Counter(p.rpartition("/")[0] for p in t.demand_paths)
    lines += [f"{n:6} demand fetches in {folder} (shipped)" for folder, n in by_folder.most_common(folders)]
    return lines


if __name__ == "__main__":
    flags(
        __doc__,
        {
            "--trace": f"=FILE: the opens to replay (default: {TRACE.relative_to(TRACE.parents[2])})",
            "--repo": "=DIR: the Debian tree published already (a demo repository root: kept, reused)",
            "--folders": "=N: the N folders of most demand fetches left by the shipped rules (default 20)",
        },
    )
    opt = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    with tempfile.TemporaryDirectory(prefix="replay-", dir="/var/tmp") as work:
        prof = profile.load("debian12")
        kernel = fetch_debian_kernel(prof.kernel.package or "linux-image-cloud-amd64")
        repo = publish_debian(Path(opt.get("--repo", work)), kernel=kernel)
        print(*compare(Path(opt.get("--trace", TRACE)), repo.stratum, repo.public_key, Path(work) / "cache",
                   int(opt.get("--folders", "20"))), sep="\n")  # fmt: skip
