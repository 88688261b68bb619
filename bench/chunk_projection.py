"""Issue 13: what an un-seeded first boot would fetch and inflate with smaller chunks for big files.

Input: a ``.resident`` trace (``bench/traces/debian12-first-boot*.resident``): at the end of a first
boot, for every file over 128 KiB, the 4 KiB pages the guest's page cache held (``MINCORE_SCRIPT`` run
in the guest: what the FUSE READs delivered, the mount's read-ahead included). The files are the
bench's debian12 tree (``build_debian_tree``, cached); each is cut with the real server's rule
(``chunking.split_points``) for each setting of ``SETTINGS``, and a chunk counts as fetched and
inflated when a resident page overlaps it (its compressed size: zlib level 6, the publisher's). A file
at most ``min_size`` is one object, as the publisher stores it.
A lower bound of what smaller chunks save: a file fetched ahead and never read has no resident page
and is not counted (boots with 128K/256K/512K chunks inflated 12.6 MB less, this projects ~4: ob34b).

The guest-s column prices the difference to today's 4/8/16 MiB with figures measured in the guest
under ``-icount shift=3`` (ob34b): libdeflate inflates at ~95 guest-ns a byte (~12 instructions),
a big object's write ~0.022 guest-s a MB, the built-in SHA-1 of the stored bytes ~0.18 s a MB (22
instructions a byte, ob33a), an extra object fetched on demand ~10 guest-ms (``~fetch``: 6.57 s for
662). Not a ``make bench`` row (no ``run``).
Usage: ``python bench/chunk_projection.py bench/traces/debian12-first-boot.resident``
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cernvm_build import profile
from cernvm_build.bootloader.kernel import fetch_debian_kernel
from cernvm_build.cvmfs.chunking import ChunkingSettings, chunk_ranges, split_points
from cernvm_build.demo.os_tree import DEFAULT_EPOCH
from cernvm_build.osbuild.debian import build_debian_tree

KiB = 1 << 10
PAGE = 4096
SETTINGS = {
    "4M/8M/16M": ChunkingSettings(),
    "2M/4M/8M": ChunkingSettings(True, 2048 * KiB, 4096 * KiB, 8192 * KiB),
    "512K/1M/2M": ChunkingSettings(True, 512 * KiB, 1024 * KiB, 2048 * KiB),
    "256K/512K/1M": ChunkingSettings(True, 256 * KiB, 512 * KiB, 1024 * KiB),
    "128K/256K/512K": ChunkingSettings(True, 128 * KiB, 256 * KiB, 512 * KiB),
}
#: guest-s per inflated byte (libdeflate), per inflated MB written, per stored MB hashed, per object
INFLATE_S, WRITE_S_MB, SHA1_S_MB, OBJECT_S = 95e-9, 0.022, 0.18, 0.010

#: run in the guest with its python3 once the boot is done (``ssh root@guest python3 - <script``)
MINCORE_SCRIPT = r"""
import ctypes, mmap, os
libc = ctypes.CDLL(None, use_errno=True)
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
for top in ("/usr", "/var", "/etc"):
    for d, _, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            st = os.lstat(p)
            if st.st_mode & 0o170000 != 0o100000 or st.st_size <= 131072:
                continue
            fd = os.open(p, os.O_RDONLY)
            mm = mmap.mmap(fd, st.st_size, access=mmap.ACCESS_COPY)  # a mapping reads nothing
            n = (st.st_size + 4095) // 4096
            vec = ctypes.create_string_buffer(n)
            ptr = ctypes.c_char.from_buffer(mm)
            libc.mincore(ctypes.addressof(ptr), st.st_size, vec)
            del ptr
            mm.close(); os.close(fd)
            bits = [b & 1 for b in vec.raw]
            runs, s = [], None
            for i, b in enumerate(bits + [0]):
                if b and s is None: s = i
                if not b and s is not None: runs.append(f"{s}-{i}"); s = None
            if runs:
                print("mc", p, st.st_size, sum(bits) * 4096, ",".join(runs))
"""


def main(trace: Path) -> None:
    prof = profile.load("debian12")
    kernel = fetch_debian_kernel(prof.kernel.package or "linux-image-cloud-amd64")
    root = build_debian_tree("12", epoch=DEFAULT_EPOCH, kernel=kernel).root
    totals = {k: [0, 0, 0] for k in SETTINGS}  # objects, inflated bytes, stored bytes
    files = resident = size_all = 0
    for line in trace.read_text().splitlines():
        if not line.startswith("mc "):
            continue
        _, path, size_s, res_s, runs = line.split(" ", 4)
        size = int(size_s)
        try:
            data = (root / path.lstrip("/")).read_bytes()
        except OSError:
            continue
        if len(data) != size:
            continue
        files, resident, size_all = files + 1, resident + int(res_s), size_all + size
        pages = [(int(a) * PAGE, int(b) * PAGE) for a, b in (r.split("-") for r in runs.split(","))]
        for name, s in SETTINGS.items():
            cuts = split_points(data, s) if s.should_chunk(size) else [size]
            for start, n in chunk_ranges(cuts):
                if any(a < start + n and b > start for a, b in pages):
                    t = totals[name]
                    t[0] += 1
                    t[1] += n
                    t[2] += len(zlib.compress(data[start : start + n], 6))
    print(f"{files} files, {resident / 1e6:.2f} MB resident of {size_all / 1e6:.2f} MB")
    base = totals["4M/8M/16M"]
    for name, (objects, inflated, stored) in totals.items():
        delta = (
            (inflated - base[1]) * INFLATE_S
            + (inflated - base[1]) / 1e6 * WRITE_S_MB
            + (stored - base[2]) / 1e6 * SHA1_S_MB
            + (objects - base[0]) * OBJECT_S
        )
        print(f"{name:15} objects {objects:5}  inflated {inflated / 1e6:6.2f} MB"
              f"  stored {stored / 1e6:6.2f} MB  {delta:+6.2f} guest-s")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: chunk_projection.py TRACE.resident", file=sys.stderr)
        raise SystemExit(2)
    main(Path(sys.argv[1]))
