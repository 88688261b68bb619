"""What the yum and apt verifiers share: the result, expected-file checks in parallel, decompression."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .. import jsonable
from ..errors import MirrorError, ToolError
from ..proc import streamed
from ..report import ProgressFn
from .source import MAX_INDEX, Source

#: ``progress(stage, done, total)`` with stage "verify" (files).
Progress = ProgressFn  # see report.Reporter.progress


class SourceBroken(MirrorError):
    """The repository is inconsistent; ``problems`` lists every finding, one line each."""

    def __init__(self, name: str, problems: list[str]):
        n = len(problems)
        hint = "fix the repository (re-run createrepo_c / apt-ftparchive, re-sign) before mirroring it"
        if any(p.endswith("signed by an unknown key") for p in problems):  # most often the key given
            hint = "check that --gpg-key is the key the repository is signed with; else " + hint
        super().__init__(
            f"{name}: repository is broken ({n} problem{'s' if n != 1 else ''}); first: {problems[0]}",
            hint=hint,
        )
        self.problems = problems

    def json_details(self) -> dict[str, object]:
        return {"ok": False, "problems": self.problems}


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
        problem = compare(e, source.digest(e.rel, e.algo, e.digest, e.size))
        if on_result:
            on_result(e.rel, problem)
        with lock:
            done += 1
            if progress:
                progress("verify", done, len(expected))
        return problem

    if todo:
        # In windows: a future per file of a whole list at once took ~2 KB each (a hostile primary.xml
        # of 294,337 packages, 35 MiB of XML, held 712 MiB), the order of the results is kept
        window = max(1, jobs) * 256
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for start in range(0, len(todo), window):
                results.extend(pool.map(one, todo[start : start + window]))
    return [p for p in results if p]


def inflate_limit(compressed: int) -> int:
    """The most a compressed index of this size may inflate to: 200 times (XML and deb822 indexes
    compress 5 to 20 times), at least MAX_INDEX, at most 1 GiB. A bomb (200 MiB of zeros from
    200 KiB) stops here instead of taking that much memory."""
    return min(1 << 30, max(MAX_INDEX, 200 * compressed))


def decompress(rel: str, data: bytes) -> bytes:
    """The content of an index file compressed as its name says (gz, xz, bz2, zst, or none), read
    in a stream up to ``inflate_limit``: MirrorError past it."""
    limit = inflate_limit(len(data))
    raw = io.BytesIO(data)
    reader: io.BufferedIOBase | None = None
    try:
        if rel.endswith(".gz"):
            reader = gzip.GzipFile(fileobj=raw)
        elif rel.endswith((".xz", ".lzma")):
            reader = lzma.LZMAFile(raw)  # noqa: SIM115 (closed by the with below)
        elif rel.endswith(".bz2"):
            reader = bz2.BZ2File(raw)
        elif not rel.endswith(".zst"):
            return data
        if reader is not None:
            with reader:
                out = reader.read(limit + 1)
        else:
            out = _unzstd(data, limit)
    except (OSError, EOFError, lzma.LZMAError, ValueError, ToolError) as e:
        raise MirrorError(f"{rel}: cannot decompress: {e}", hint="the file is damaged") from e
    if len(out) > limit:
        raise MirrorError(
            f"{rel}: inflates beyond {limit >> 20} MiB ({len(data)} bytes compressed)",
            hint="the source is broken or hostile (a decompression bomb)",
        )
    return out


def _unzstd(data: bytes, limit: int) -> bytes:
    """``zstd -dc`` of ``data``, its output read up to ``limit`` + 1 bytes (the tool killed there)."""
    with tempfile.NamedTemporaryFile(suffix=".zst") as src:
        src.write(data)
        src.flush()
        with streamed(["zstd", "-dc", "-q", src.name]) as tool:
            out = tool.stdout.read(limit + 1)
            if len(out) > limit:
                tool.proc.kill()
        if len(out) <= limit and tool.code != 0:
            raise ToolError(f"'zstd' failed: {tool.why or f'exit code {tool.code}'}")
    return out
