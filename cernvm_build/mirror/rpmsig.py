"""Per-package OpenPGP signatures of RPMs, checked with the real ``rpmkeys -K`` against the --gpg-key.

dnf with ``gpgcheck=1`` refuses a package whose header signature does not verify, so a mirror must
not publish one. Packages are checked in a private rpm database (the key imported there, the host's
untouched), many per ``rpmkeys`` call. An unsigned package is left to the repository's signed index
(what ``repo_gpgcheck`` covers); a signed one must verify with the given key. Results are remembered
in the hash cache per file state and key, so an unchanged package is not checked again.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..proc import run
from .hashcache import HashCache

BATCH = 200


def check_rpm_signatures(
    packages: Iterable[tuple[str, Path]], key: Path, fingerprint: str, cache: HashCache | None
) -> list[str]:
    """One problem line per package (``rel``, local path) whose signature does not verify with ``key``."""
    fact = f"rpmsig-{fingerprint}"
    todo = [(rel, p) for rel, p in packages if cache is None or cache.fact(p, fact) != "ok"]
    if not todo:
        return []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cernvm-rpmdb-") as db:
        run(["rpmkeys", "--dbpath", db, "--import", str(key)])
        for start in range(0, len(todo), BATCH):
            chunk = todo[start : start + BATCH]
            out = run(["rpmkeys", "--dbpath", db, "-K", *(str(p) for _, p in chunk)], check=False)
            verdicts = _verdicts(out.stdout.decode(errors="replace"))
            for rel, p in chunk:
                verdict = verdicts.get(str(p), "no answer from rpmkeys")
                if "NOT OK" in verdict or verdict.startswith("no answer"):
                    problems.append(
                        f"{rel}: package signature does not verify with the given key (rpm -K: {verdict})"
                    )
                elif cache is not None:
                    cache.remember_fact(p, fact, "ok")
    return problems


def _verdicts(text: str) -> dict[str, str]:
    """``path: digests signatures OK`` lines by path."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        path, sep, verdict = line.rpartition(": ")
        if sep and path:
            out[path] = verdict.strip()
    return out
