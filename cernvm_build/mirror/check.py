"""What the yum and apt verifiers share: the result, expected-file checks in parallel, decompression."""

from __future__ import annotations

import bz2
import gzip
import lzma
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .. import jsonable
from ..errors import MirrorError, ToolError
from ..proc import run
from ..report import ProgressFn
from .source import Source

#: ``progress(stage, done, total)`` with stage "verify" (files).
Progress = ProgressFn  # see report.Reporter.progress


class SourceBroken(MirrorError):
    """The repository is inconsistent; ``problems`` lists every finding, one line each."""

    def __init__(self, name: str, problems: list[str]):
        n = len(problems)
        super().__init__(
            f"{name}: repository is broken ({n} problem{'s' if n != 1 else ''}); first: {problems[0]}",
            hint="fix the repository (re-run createrepo_c / apt-ftparchive, re-sign) before mirroring it",
        )
        self.problems = problems


@dataclass
class Expected:
    rel: str
    algo: str
    digest: str
    size: int | None
    named_by: str


@dataclass
class Checked:
    """A verified repository: what to publish last, and everything its indexes name."""

    kind: str  # "yum" | "apt"
    source: str
    repos: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)  # fixed-name files, in publication order
    referenced: set[str] = field(default_factory=set)
    packages: int = 0
    source_packages: int = 0  # apt: from Sources indexes
    signed: bool = False
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return jsonable.to_json(
            self, omit=("indexes", "referenced"), files=len(self.referenced), ok=not self.problems
        )


def compare(e: Expected, got: tuple[str, int] | None) -> str | None:
    """The problem with one file (missing, wrong size, wrong hash), or None."""
    if got is None:
        return f"{e.rel}: missing (named by {e.named_by})"
    digest, size = got
    if e.size is not None and size != e.size:
        return f"{e.rel}: size {size}, but {e.named_by} says {e.size}"
    if digest != e.digest.lower():
        return f"{e.rel}: {e.algo} mismatch (got {digest[:16]}…, {e.named_by} says {e.digest[:16]}…)"
    return None


def check_files(
    source: Source,
    expected: list[Expected],
    *,
    jobs: int = 4,
    progress: Progress | None = None,
    on_result: Callable[[str, str | None], None] | None = None,
) -> list[str]:
    """Hash every expected file (in parallel); one problem line per missing or mismatched file.
    ``on_result(rel, problem or None)`` as each file is judged (the mirror's upload gate)."""
    # Files whose hash is remembered (unchanged since hashed) are checked without the thread pool.
    results: list[str | None] = []
    todo: list[Expected] = []
    for e in expected:
        got = source.remembered(e.rel, e.algo)
        if got is None:
            todo.append(e)
        else:
            results.append(compare(e, got))
            if on_result:
                on_result(e.rel, results[-1])
    done = len(results)
    if progress and done:
        progress("verify", done, len(expected))
    lock = threading.Lock()

    def one(e: Expected) -> str | None:
        nonlocal done
        problem = compare(e, source.digest(e.rel, e.algo, e.digest))
        if on_result:
            on_result(e.rel, problem)
        with lock:
            done += 1
            if progress:
                progress("verify", done, len(expected))
        return problem

    if todo:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results.extend(pool.map(one, todo))
    return [p for p in results if p]


def decompress(rel: str, data: bytes) -> bytes:
    """The content of an index file compressed as its name says (gz, xz, bz2, zst, or none)."""
    try:
        if rel.endswith(".gz"):
            return gzip.decompress(data)
        if rel.endswith((".xz", ".lzma")):
            return lzma.decompress(data)
        if rel.endswith(".bz2"):
            return bz2.decompress(data)
        if rel.endswith(".zst"):
            return run(["zstd", "-dc", "-q"], input=data).stdout
    except (OSError, EOFError, lzma.LZMAError, ValueError, ToolError) as e:
        raise MirrorError(f"{rel}: cannot decompress: {e}", hint="the file is damaged") from e
    return data
