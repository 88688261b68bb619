"""The bench's other corpora (bench/site_corpus.py ``--kind``): real prose, code in 18 languages, tiny
pages, deep folders, 1-5 MB pages. The build is the same with one worker or two and after an edit as
from clean; the default corpus, which the earlier figures were measured on, stays what it was."""

from __future__ import annotations

import filecmp
import hashlib
import random
import re
from pathlib import Path

import pytest
from sitehelpers import build_site

from bench.site_corpus import (
    KINDS,
    MORE_CODE,
    generate,
    kind_path,
    kind_text,
    page_text,
    prose_paragraphs,
    rel_path,
)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_default_corpus_is_the_one_the_figures_were_measured_on() -> None:
    rng, digest = random.Random(7), hashlib.sha256()
    for i in range(300):
        digest.update(rel_path(i).encode() + page_text(i, 1000, rng).encode())
    assert digest.hexdigest() == "42ee03e9e698c261572347ff4861c37a29f82547a279650fa0f2c05cce335371"


def test_big_pages_are_megabytes_and_prose_has_real_words() -> None:
    paras = prose_paragraphs()
    words = {w.lower() for p in paras for w in p.split()}
    assert len(words) > 3000  # the default corpus has 37
    sizes = [len(kind_text("big", i, 500, random.Random(1), paras)) for i in (0, 400)]
    assert 0.8e6 < sizes[0] < 1.2e6 and 4e6 < sizes[1] < 6e6
    assert len(kind_path("deep", 5).split("/")) == 10  # docs/ + 8 folders + the page


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in ("synthetic", "big")])
def test_a_kind_builds_the_same_with_two_workers_and_after_an_edit(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = generate(tmp_path / "corpus", 60, kind=kind)["ours"]  # 60 pages: past the in-process limit

    def build(out: str, cache: str, jobs: int) -> Path:
        monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / cache))
        build_site(site, tmp_path / out, jobs=jobs)
        return tmp_path / out

    one, two = build("one", "c1", 1), build("two", "c2", 2)
    assert _tree(one) == _tree(two)
    if kind != "tiny":  # every language's blocks were lexed: Pygments' classes in each block
        html = "".join(p.read_text() for p in two.rglob("index.html"))
        blocks = re.findall(r'<code class="language-([^"]+)">(.*?)</code></pre>', html, re.S)
        assert {lang for lang, _body in blocks} == set(MORE_CODE) and len(MORE_CODE) == 18
        assert {lang for lang, body in blocks if '<span class="' not in body} == set()
    page = site / "content" / kind_path(kind, 30)
    page.write_text(page.read_text().replace("\n\n", "\n\nEdited. ", 1))
    build("two", "c2", 2)
    clean = build("clean", "c3", 2)
    assert not filecmp.dircmp(two, clean).diff_files and _tree(two) == _tree(clean)
    assert b"Edited. " in (clean / kind_path(kind, 30).removesuffix(".md") / "index.html").read_bytes()
