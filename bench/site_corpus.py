"""A synthetic documentation corpus: N Markdown pages with headings, code, tables, links and anchors,
laid out for three generators at once (this toolkit's site builder, Hugo, MkDocs) so they build the
very same pages.

    python bench/site_corpus.py 1000 /tmp/corpus     # writes /tmp/corpus/{ours,hugo,mkdocs}
    python bench/site_corpus.py 1000 /tmp/corpus --kind prose

``--kind`` picks inputs the default has not: ``prose`` (real prose: paragraphs from the Markdown long
descriptions of the installed packages' METADATA and /usr/share/doc's READMEs, ~4,300 distinct words,
code in 18 languages), ``tiny`` (one short paragraph a page), ``big`` (every 100th page 1-5 MB of prose
and code), ``deep`` (prose pages eight folders deep). The default (``synthetic``) stays byte-identical
to what the earlier figures were measured on.
"""

from __future__ import annotations

import email.parser
import os
import random
import re
import shutil
import sys
import sysconfig
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


KINDS = ("synthetic", "prose", "tiny", "big", "deep")

#: Code in the languages real docs show, several of which Pygments lexes through its generic loop.
MORE_CODE = {
    **CODE,
    "c": (
        "#include <stdio.h>\n"
        "int main(int argc, char **argv) {\n"
        "    for (int i = 0; i < {n}; i++)\n"
        '        printf("%d: %s\\n", i, argv[0]);\n'
        "    return 0;\n"
        "}\n"
    ),
    "cpp": (
        "#include <vector>\n"
        "template <typename T> T sum(const std::vector<T>& v) {\n"
        "    T s{};\n"
        "    for (auto& x : v) s += x * {n};\n"
        "    return s;\n"
        "}\n"
    ),
    "go": (
        "package main\n"
        "\n"
        'import "fmt"\n'
        "\n"
        "func main() {\n"
        "\tfor i := 0; i < {n}; i++ {\n"
        '\t\tfmt.Println("chunk", i)\n'
        "\t}\n"
        "}\n"
    ),
    "rust": (
        "fn main() {\n"
        "    let v: Vec<u64> = (0..{n}).map(|x| x * 2).collect();\n"
        '    println!("{:?}", v.iter().sum::<u64>());\n'
        "}\n"
    ),
    "js": (
        "const url = `https://cvmfs.example/${{n}}`;\n"
        "fetch(url).then((r) => r.json()).then((d) => {\n"
        "  console.log(d.revision, {n});\n"
        "});\n"
    ),
    "json": (
        "{\n"
        '  "repository": "sft.cern.ch",\n'
        '  "revision": {n},\n'
        '  "tags": ["prod", "v{n}"],\n'
        '  "gc": false\n'
        "}\n"
    ),
    "toml": ('[repository]\nname = "sft.cern.ch"\nrevision = {n}\n\n[proxy]\nurls = ["http://squid:3128"]\n'),
    "ini": ("[cvmfs]\nCVMFS_REPOSITORIES = sft.cern.ch\nCVMFS_QUOTA_LIMIT = {n}\n; a comment\n"),
    "dockerfile": (
        "FROM almalinux:9\n"
        "RUN dnf -y install cvmfs && dnf clean all\n"
        "ENV CVMFS_QUOTA={n}\n"
        'CMD ["/bin/bash"]\n'
    ),
    "make": (
        "all: image-{n}.qcow2\n"
        "\n"
        "image-%.qcow2: profile.yaml\n"
        "\tcernvm-build image build --profile $< --out $@\n"
    ),
    "sql": (
        "SELECT path, size FROM catalog\n"
        "WHERE revision = {n} AND flags & 4 = 0\n"
        "ORDER BY size DESC LIMIT 10;\n"
    ),
    "diff": (
        "--- a/default.local\n"
        "+++ b/default.local\n"
        "@@ -1,2 +1,2 @@\n"
        "-CVMFS_QUOTA_LIMIT=4000\n"
        "+CVMFS_QUOTA_LIMIT={n}\n"
        " CVMFS_HTTP_PROXY=DIRECT\n"
    ),
    "console": (
        "$ cvmfs_config probe\n"
        "Probing /cvmfs/sft.cern.ch... OK\n"
        "$ df -h /cvmfs/sft.cern.ch\n"
        "Filesystem  Size  Used Avail Use% Mounted on\n"
        "cvmfs2       {n}G  1.2G   3G  29% /cvmfs/sft.cern.ch\n"
    ),
    "html": (
        '<!doctype html>\n<html><body>\n  <a href="/docs/{n}/" class="nav">Page {n}</a>\n</body></html>\n'
    ),
    "xml": (
        '<?xml version="1.0"?>\n'
        '<repomd revision="{n}">\n'
        '  <data type="primary"><location href="repodata/p.xml.gz"/></data>\n'
        "</repomd>\n"
    ),
}

_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_PLAIN = re.compile(r"[A-Za-z][^<>|{}\[\]#*_\\]+")


def prose_paragraphs() -> list[str]:
    """Plain paragraphs of the installed packages' long descriptions and /usr/share/doc's READMEs and
    NEWS (links reduced to their text, so no page links outside the corpus); sorted, so the corpus
    depends only on what is installed."""
    site = Path(sysconfig.get_paths()["purelib"])
    bodies: list[str] = []
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        body = email.parser.Parser().parsestr(meta.read_text(errors="replace")).get_payload()
        if isinstance(body, str):
            bodies.append(body)
    docs = Path("/usr/share/doc")
    for name in ("README", "README.md", "README.txt", "NEWS", "NEWS.md", "FAQ", "TODO"):
        bodies.extend(p.read_text(errors="replace") for p in sorted(docs.glob(f"*/{name}")))
    paras: set[str] = set()
    for body in bodies:
        for block in re.split(r"\n\s*\n", body):
            if block.startswith((" ", "\t")):
                continue  # indented code
            text = " ".join(line.strip() for line in block.splitlines())
            text = _LINK.sub(r"\1", text)
            if len(text) < 80 or text.count("`") % 2 or not _PLAIN.fullmatch(text):
                continue
            paras.add(text)
    if not paras:
        raise SystemExit("no Markdown long descriptions found in the installed packages")
    return sorted(paras)


def kind_path(kind: str, i: int) -> str:
    if kind == "deep":
        parts = [f"d{(i >> (2 * k)) % 4}" for k in range(8)]  # 8 levels, 4 folders a level
        return "docs/" + "/".join(parts) + f"/p{i:05d}.md"
    return rel_path(i)


def kind_text(kind: str, i: int, n: int, rng: random.Random, paras: list[str]) -> str:
    me = kind_path(kind, i)
    if kind == "tiny":
        return f"---\ntitle: Note {i}\nweight: {i}\n---\n\n{rng.choice(paras)}\n"

    def link_to(j: int, anchor: str) -> str:
        rel = os.path.relpath(kind_path(kind, j), me.rsplit("/", 1)[0])
        return f"[page {j}]({rel}#{anchor})"

    title = " ".join(rng.choice(paras).split()[:6]).strip(" ,.;:")
    out = [f"---\ntitle: {json_str(title)}\nweight: {i}\n---\n"]
    out.append(rng.choice(paras) + "\n")
    sections = 3
    if kind == "big" and i % 100 == 0:
        sections = 800 * (1 + (i // 100) % 5)  # 800..4,000 sections: ~1-5 MB
    for h in range(sections):
        out.append(f"## Part {h} of note {i}\n")
        out.append(" ".join(rng.choice(paras) for _ in range(rng.randint(1, 3))) + "\n")
        j = rng.randrange(n)
        out.append(f"See {link_to(j, 'part-1-of-note-' + str(j))} and [above](#part-0-of-note-{i}).\n")
        lang = rng.choice(sorted(MORE_CODE))
        out.append(f"```{lang}\n{MORE_CODE[lang].replace('{n}', str(i))}```\n")
        out.append(f"### More on part {h}\n")
        out.append(rng.choice(paras) + "\n")
        out.append("- " + "\n- ".join(rng.choice(paras)[:120] for _ in range(3)) + "\n")
    return "\n".join(out)


def json_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


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


def generate(root: Path, n: int, seed: int = 7, kind: str = "synthetic") -> dict[str, Path]:
    """Write the corpus for all three generators under ``root``; returns their site folders."""
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(seed)
    if kind == "synthetic":
        texts = {rel_path(i): page_text(i, n, rng) for i in range(n)}
    else:
        paras = prose_paragraphs()
        texts = {kind_path(kind, i): kind_text(kind, i, n, rng, paras) for i in range(n)}
    return {
        "ours": write_ours(root, n, texts),
        "hugo": write_hugo(root, n, texts),
        "mkdocs": write_mkdocs(root, n, texts),
    }


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.common import flags

    flags(
        __doc__, {"--kind": "KIND: " + ", ".join(KINDS) + " (then COUNT DEST, default 100 /tmp/site-corpus)"}
    )
    args = sys.argv[1:]
    kind = "synthetic"
    if "--kind" in args:
        at = args.index("--kind")
        kind = args[at + 1]
        del args[at : at + 2]
        if kind not in KINDS:
            raise SystemExit(f"--kind {kind}: one of {', '.join(KINDS)}")
    count = int(args[0]) if args else 100
    dest = Path(args[1]) if len(args) > 1 else Path("/tmp/site-corpus")
    for name, path in generate(dest, count, kind=kind).items():
        print(f"{name}: {path}")
