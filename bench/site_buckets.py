"""The search index's buckets (``search._cut``, cut where the words' hashes say) against the greedy cut
by size they replaced (16 KiB each, the reference): bucket count, mean and largest bucket (a query
loads one bucket per word, so the largest matters), and how many bucket files a single edit rewrites.

The words and their postings are those of a real build: the shipped site, and a 1,000-page corpus
(``site_corpus.py``). Edits are simulated on each shard's word list at random places (seeded): a word
whose postings grow by 40 bytes (a page gains it), a word removed (its last page lost it), a word
added; counted: the bucket files written (a file gone costs an unlink). Greedy buckets were named by
index: a file is written when the bucket of its index holds other bytes; ours are named by content:
the buckets new (what they would be named by index is in the last row's extra).

    python bench/site_buckets.py [--quick]    (--quick: the shipped site only)
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, flags, print_table

GREEDY_BYTES = 16 * 1024


def greedy(pieces: list[str]) -> list[int]:
    """The former cut: a new bucket once the next word would pass 16 KiB."""
    cuts: list[int] = []
    size = GREEDY_BYTES
    for i, piece in enumerate(pieces):
        if size + len(piece) > GREEDY_BYTES:
            cuts.append(i)
            size = 0
        size += len(piece) + 1
    return cuts


def shard_words(out: Path) -> list[tuple[list[str], list[str]]]:
    """Each shard's words in order and their JSON pieces, read back from its bucket files."""
    index = out / "search-index"
    got = []
    for shard in json.loads((index / "shards.json").read_bytes())["shards"]:
        words: list[str] = []
        pieces: list[str] = []
        for name in shard["buckets"]:
            bucket = json.loads((index / f"{shard['bundle']}b/{name}.json").read_bytes())
            for w, v in bucket.items():
                words.append(w)
                pieces.append(json.dumps(w) + ":" + json.dumps(v, separators=(",", ":")))
        got.append((words, pieces))
    return got


def buckets(cut: list[int], pieces: list[str]) -> list[tuple[str, ...]]:
    ends = [*cut[1:], len(pieces)]
    return [tuple(pieces[a:b]) for a, b in zip(cut, ends, strict=True)]


def measure(name: str, out: Path, edits: int = 300) -> list[Result]:
    from cernvm_build.site import search

    rows: list[Result] = []
    shards = shard_words(out)
    rng = random.Random(17)
    for label, cutter in (("greedy", lambda w, p: greedy(p)), ("content", search._cut)):
        sizes: list[int] = []
        rewritten: list[int] = []
        by_index: list[int] = []  # the content cut's, were its files named by index
        for words, pieces in shards:
            base = buckets(cutter(words, pieces), pieces)
            sizes += [sum(len(p) + 1 for p in b) + 1 for b in base]
            for e in range(edits // len(shards)):
                w2, p2 = list(words), list(pieces)
                k = rng.randrange(len(words))
                if e % 3 == 0:
                    p2[k] = p2[k][:-1] + ",[9999,[1,2,3,4,5,6,7,8,9,10,11,12,13,14]]]"
                elif e % 3 == 1 and len(words) > 1:
                    del w2[k], p2[k]
                else:
                    w2.insert(k + 1, words[k] + "zq")
                    p2.insert(k + 1, f'"{words[k]}zq":[[9999,[1,2,3,4,5,6,7,8,9,10,11,12,13]]]')
                after = buckets(cutter(w2, p2), p2)
                if label == "greedy":  # files named by index: one whose bucket's bytes changed
                    changed = sum(1 for i, b in enumerate(after) if i >= len(base) or base[i] != b)
                    rewritten.append(changed)
                else:  # files named by content: the new ones
                    by_index.append(sum(1 for i, b in enumerate(after) if i >= len(base) or base[i] != b))
                    rewritten.append(len(set(after) - set(base)))
        rewritten.sort()
        ref = "greedy 16 KiB" if label == "content" else None
        tag = f"site.buckets.{name}.{label}"
        rows += [
            Result(tag, "buckets", len(sizes), "files", ref),
            Result(tag, "mean bucket", sum(sizes) / len(sizes) / 1024, "KiB", ref),
            Result(tag, "largest bucket", max(sizes) / 1024, "KiB", ref),
            Result(tag, "written per edit: mean", sum(rewritten) / len(rewritten), "files", ref),
            Result(tag, "written per edit: 90th pct", rewritten[len(rewritten) * 9 // 10], "files", ref),
            Result(tag, "edits writing > 3 files", sum(1 for r in rewritten if r > 3), "edits", ref),
        ]
        if by_index:
            extra = {"named by index: mean": sum(by_index) / len(by_index)}
            extra["named by index: > 3"] = sum(1 for r in by_index if r > 3)
            rows[-1].extra = extra
    # the reference's value beside each of ours
    greedy_rows = {r.metric: r.value for r in rows if r.bench.endswith(".greedy")}
    for r in rows:
        if r.reference:
            r.reference_value = greedy_rows[r.metric]
    return [r for r in rows if r.reference]


def run(quick: bool = True) -> list[Result]:
    import shutil

    from bench.site_corpus import generate
    from cernvm_build.cli.reference import GENERATORS
    from cernvm_build.paths import data_dir
    from cernvm_build.site.build import build_site

    rows = []
    with tempfile.TemporaryDirectory(prefix="site-buckets-bench-") as t:
        tmp = Path(t)
        shutil.copytree(data_dir("site"), tmp / "site")
        build_site(tmp / "site", tmp / "out", generators=GENERATORS, cache_dir=tmp / "cache")
        rows += measure("shipped", tmp / "out")
        if not quick:
            site = generate(tmp / "corpus", 1000)["ours"]
            build_site(site, tmp / "out1000", cache_dir=tmp / "cache1000")
            rows += measure("corpus1000", tmp / "out1000")
    return rows


if __name__ == "__main__":
    flags(__doc__, {"--quick": "the shipped site only"})
    print_table(run(quick="--quick" in sys.argv[1:]))
