"""A synthetic documentation corpus: N Markdown pages with headings, code, tables, links and anchors,
laid out for three generators at once (this toolkit's site builder, Hugo, MkDocs) so they build the
very same pages.

    python bench/site_corpus.py 1000 /tmp/corpus     # writes /tmp/corpus/{ours,hugo,mkdocs}
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

PER_SECTION = 50
WORDS = [
    "cache",
    "catalog",
    "chunk",
    "client",
    "manifest",
    "mount",
    "proxy",
    "repository",
    "revision",
    "snapshot",
    "squid",
    "stratum",
    "whitelist",
    "signature",
    "hash",
    "overlay",
    "kernel",
    "initrd",
    "image",
    "profile",
    "bootloader",
    "context",
    "volume",
    "release",
    "publish",
    "transaction",
    "tag",
    "replica",
    "mirror",
    "fuse",
    "autofs",
    "quota",
    "entry",
    "object",
    "compression",
    "file",
    "tree",
]
CODE = {
    "python": (
        "def fetch(repo: str, path: str) -> bytes:\n"
        "    catalog = open_catalog(repo)\n"
        "    entry = catalog.lookup(path)\n"
        "    if entry is None:\n"
        "        raise FileNotFoundError(path)\n"
        "    return download(entry.hash, size={n})\n"
    ),
    "bash": (
        "export CVMFS_HTTP_PROXY='http://squid-{n}.example.org:3128'\n"
        "cvmfs_config probe sft.cern.ch && ls /cvmfs/sft.cern.ch/lcg/views | head -n {n}\n"
        'for r in atlas cms lhcb; do echo "$r: $(cvmfs_config stat -v $r.cern.ch | grep Revision)"; done\n'
    ),
    "yaml": (
        "name: el{n}\nextends: el9\ncvmfs:\n  repository: cernvm-prod.cern.ch\n  snapshot: {{tag: t{n}}}\n"
    ),
}


def section_of(i: int) -> int:
    return i // PER_SECTION


def rel_path(i: int) -> str:
    return f"docs/s{section_of(i):03d}/p{i:05d}.md"


def page_text(i: int, n: int, rng: random.Random) -> str:
    def sentence() -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 16))]
        return " ".join(words).capitalize() + "."

    def para() -> str:
        return " ".join(sentence() for _ in range(rng.randint(3, 5)))

    me = rel_path(i)
    here = me.rsplit("/", 1)[0]

    def link_to(j: int, anchor: str) -> str:
        target = rel_path(j)
        tdir, tname = target.rsplit("/", 1)
        path = tname if tdir == here else f"../{tdir.rsplit('/', 1)[1]}/{tname}"
        return f"[page {j}]({path}#{anchor})"

    out = [f"---\ntitle: Page {i} about {rng.choice(WORDS)}\nweight: {i}\n---\n"]
    out.append(para() + "\n")
    for h in range(3):
        out.append(f"## Topic {h} of page {i}\n")
        out.append(para() + "\n")
        j = rng.randrange(n)
        out.append(f"See {link_to(j, f'topic-1-of-page-{j}')} and [above](#topic-0-of-page-{i}). {para()}\n")
        lang = rng.choice(sorted(CODE))
        out.append(f"```{lang}\n{CODE[lang].format(n=i)}```\n")
        out.append(f"### Details {h}\n")
        out.append(para() + "\n")
    out.append("| key | value | note |\n|---|---|---|\n")
    for r in range(6):
        out.append(f"| `k{r}` | {rng.randint(0, 9999)} | {rng.choice(WORDS)} {rng.choice(WORDS)} |\n")
    out.append("\n" + para() + "\n")
    return "\n".join(out)


def write_ours(root: Path, n: int, texts: dict[str, str]) -> Path:
    from cernvm_build.paths import data_dir

    site = root / "ours"
    for sub in ("templates", "static"):
        shutil.copytree(data_dir("site") / sub, site / sub)
    (site / "config.yaml").write_text(
        "title: Bench\ndescription: synthetic corpus\nbase_url: https://bench.example/\n"
        "author: {name: Bench}\nmenu:\n  - {title: Docs, url: /docs/}\n"
        "sections:\n  docs: {title: Docs, layout: doc, list_layout: doc, sidebar: true}\n"
    )
    content = site / "content"
    (content / "docs").mkdir(parents=True)
    (content / "index.md").write_text("---\ntitle: Bench\nlayout: page\n---\nThe corpus.\n")
    for rel, text in texts.items():
        (content / rel).parent.mkdir(parents=True, exist_ok=True)
        (content / rel).write_text(text)
    return site


HUGO_BASEOF = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ .Title }} · {{ .Site.Title }}</title>
<link rel="stylesheet" href="/site.css"></head>
<body><header><a href="/">{{ .Site.Title }}</a></header>
<main>{{ block "main" . }}{{ end }}</main></body></html>
"""
HUGO_SINGLE = """{{ define "main" }}
<nav class="sidebar"><ul>
{{ range .Site.Sections }}{{ range .Sections }}<li><a href="{{ .RelPermalink }}">{{ .Title }}</a>
{{ if eq .Section $.Section }}{{ if eq .RelPermalink $.Parent.RelPermalink }}<ul>
{{ range .Pages }}<li><a href="{{ .RelPermalink }}">{{ .Title }}</a></li>{{ end }}</ul>{{ end }}{{ end }}
</li>{{ end }}{{ end }}
</ul></nav>
<article><h1>{{ .Title }}</h1>{{ .Content }}</article>
<aside>{{ .TableOfContents }}</aside>
{{ with .PrevInSection }}<a href="{{ .RelPermalink }}">{{ .Title }}</a>{{ end }}
{{ with .NextInSection }}<a href="{{ .RelPermalink }}">{{ .Title }}</a>{{ end }}
{{ end }}
"""
HUGO_LIST = """{{ define "main" }}<h1>{{ .Title }}</h1>{{ .Content }}
<ul>{{ range .Pages }}<li><a href="{{ .RelPermalink }}">{{ .Title }}</a></li>{{ end }}</ul>{{ end }}
"""


def write_hugo(root: Path, n: int, texts: dict[str, str]) -> Path:
    site = root / "hugo"
    (site / "layouts" / "_default").mkdir(parents=True)
    (site / "config.toml").write_text(
        'baseURL = "https://bench.example/"\ntitle = "Bench"\ndisableKinds = ["taxonomy", "term", "RSS"]\n'
        "[markup.highlight]\nnoClasses = false\n[markup.tableOfContents]\nstartLevel = 2\nendLevel = 3\n"
    )
    (site / "layouts" / "_default" / "baseof.html").write_text(HUGO_BASEOF)
    (site / "layouts" / "_default" / "single.html").write_text(HUGO_SINGLE)
    (site / "layouts" / "_default" / "list.html").write_text(HUGO_LIST)
    (site / "layouts" / "index.html").write_text(
        HUGO_LIST.replace('{{ define "main" }}', "").replace("{{ end }}\n", "")
    )
    content = site / "content"
    for rel, text in texts.items():
        (content / rel).parent.mkdir(parents=True, exist_ok=True)
        (content / rel).write_text(text)
    for s in sorted({rel.rsplit("/", 1)[0] for rel in texts}):
        (content / s / "_index.md").write_text(f"---\ntitle: Section {s}\n---\n")
    (content / "docs" / "_index.md").write_text("---\ntitle: Docs\n---\n")
    return site


def write_mkdocs(root: Path, n: int, texts: dict[str, str]) -> Path:
    site = root / "mkdocs"
    docs = site / "docs"
    docs.mkdir(parents=True)
    (site / "mkdocs.yml").write_text(
        "site_name: Bench\nsite_url: https://bench.example/\ndocs_dir: docs\ntheme: {name: mkdocs}\n"
        "markdown_extensions:\n  - toc: {permalink: true}\n  - tables\n  - admonition\n"
        "  - fenced_code\n  - codehilite\n"
    )
    (docs / "index.md").write_text("# Bench\n\nThe corpus.\n")
    for rel, text in texts.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text(text)
    return site


def generate(root: Path, n: int, seed: int = 7) -> dict[str, Path]:
    """Write the corpus for all three generators under ``root``; returns their site folders."""
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(seed)
    texts = {rel_path(i): page_text(i, n, rng) for i in range(n)}
    return {
        "ours": write_ours(root, n, texts),
        "hugo": write_hugo(root, n, texts),
        "mkdocs": write_mkdocs(root, n, texts),
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    dest = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp/site-corpus")
    for name, path in generate(dest, count).items():
        print(f"{name}: {path}")
