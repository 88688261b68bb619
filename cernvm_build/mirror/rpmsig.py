"""Per-package OpenPGP signatures of RPMs, checked with the real ``rpmkeys -K`` against the --gpg-key.

dnf with ``gpgcheck=1`` refuses a package whose header signature does not verify, so a mirror must
not publish one. Packages are checked in a private rpm database (the key imported there, the host's
untouched), many per ``rpmkeys`` call. An unsigned package is left to the repository's signed index
(what ``repo_gpgcheck`` covers); a signed one must verify with the given key. Results are remembered
in the hash cache per file state and key, so an unchanged package is not checked again.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..proc import run
from .hashcache import HashCache

#: packages per ``rpmkeys`` call: small enough that the first verdicts come early (the mirror uploads
#: each package once it passed), big enough that starting rpmkeys (~7 ms) stays small beside reading
BATCH = 32


def check_rpm_signatures(
    packages: Iterable[tuple[str, Path]],
    keys: Sequence[Path],
    fingerprint: str,
    cache: HashCache | None,
    *,
    on_result: Callable[[str, bool], None] | None = None,
    procs: int | None = None,
    note: str = "",
) -> list[str]:
    """One problem line per package (``rel``, local path) whose signature does not verify with one of
    ``keys`` (none: every signed package is refused); ``fingerprint`` names them in the cache, and
    ``note`` ends each problem line. ``on_result(rel, ok)`` as each package is judged; ``procs``
    rpmkeys at once (default: one per core, at most 2: they read every payload, with the hashing and
    the upload beside them)."""
    fact = f"rpmsig-{fingerprint}"
    todo = []
    for rel, p in packages:
        if cache is not None and cache.fact(p, fact) == "ok":
            if on_result:
                on_result(rel, True)
        else:
            todo.append((rel, p))
    if not todo:
        return []
    with tempfile.TemporaryDirectory(prefix="cernvm-rpmdb-") as db:
        if keys:
            # "--": a relative name beginning with '-' (a source folder './-x' is '-x/...' as a Path)
            # was rpmkeys' "unknown option", every package "no answer from rpmkeys"
            run(["rpmkeys", "--dbpath", db, "--import", "--", *(str(k) for k in keys)])

        def batch(chunk: list[tuple[str, Path]]) -> list[str]:
            out = run(["rpmkeys", "--dbpath", db, "-K", "--", *(str(p) for _, p in chunk)], check=False)
            verdicts = _verdicts(out.stdout.decode(errors="replace"))
            problems = []
            for rel, p in chunk:
                verdict = verdicts.get(str(p), "no answer from rpmkeys")
                ok = "NOT OK" not in verdict and not verdict.startswith("no answer")
                if not ok:
                    problems.append(
                        f"{rel}: package signature does not verify with the given key"
                        f" (rpm -K: {verdict}){note}"
                    )
                elif cache is not None:
                    cache.remember_fact(p, fact, "ok")
                if on_result:
                    on_result(rel, ok)
            return problems

        chunks = [todo[i : i + BATCH] for i in range(0, len(todo), BATCH)]
        workers = procs or min(2, os.cpu_count() or 1)
        # rpmkeys only reads the database (the key was imported above), so calls can share it.
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return [line for found in pool.map(batch, chunks) for line in found]


def _verdicts(text: str) -> dict[str, str]:
    """``path: digests signatures OK`` lines by path."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        path, sep, verdict = line.rpartition(": ")
        if sep and path:
            out[path] = verdict.strip()
    return out
