"""Search engines for the site, measured on the shipped site: Pagefind (what the build uses) against
lunr (lunr.py, the Python port of lunr.js), on index size, bytes a first query loads, query time and
where the expected heading ranks for a set of real queries.

Both index the same thing: each page split at its h2/h3 headings (lunr: one document per section;
Pagefind: its sub-results), English stemming. Pagefind runs in headless Chromium over a local HTTP
server (what a reader's browser does); lunr runs in Python (lunr.js does the same work in the browser,
and must load its whole index first).

    python bench/site_search.py
"""

from __future__ import annotations

import html
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, print_table

#: (query, the page#heading it should land on): the acceptance test's queries and a few more
QUERIES = (
    ("configuring a squid proxy", "/docs/guides/replication/#configuring-a-squid-proxy"),
    ("stratum 1", "/docs/guides/replication/#stratum-1-a-replica"),
    ("pin a tag", "/docs/guides/snapshots/#pin-a-tag-on-the-client"),
    ("DUCC", "/docs/guides/containers/#ducc-publishing-images-unpacked"),
    ("garbage collection", "/docs/guides/publishing/#garbage-collection"),
    ("alien cache", "/docs/guides/cache/#alien-cache"),
    ("whitelist expired", "/docs/guides/publishing/#keys-certificates-and-the-whitelist"),
    ("apptainer", "/docs/guides/containers/#apptainer-from-cvmfs"),
    ("rollback", "/docs/guides/snapshots/#roll-back"),
    ("openstack", "/docs/guides/clouds/#upload-to-openstack"),
)

HEADING = re.compile(r'<h([23])[^>]*\bid="([^"]+)"[^>]*>(.*?)</h\1>', re.S)
TAG = re.compile(r"<[^>]+>")


def sections(out: Path) -> list[dict[str, str]]:
    """Every searchable page (``data-pagefind-body``) split at its headings: id, url, title, text."""
    docs = []
    for page in sorted(out.rglob("index.html")):
        raw = page.read_text()
        if "data-pagefind-body" not in raw:
            continue
        main = raw.split("data-pagefind-body>", 1)[1].split("</main>", 1)[0]
        main = re.sub(r"<(aside|nav|details)\b.*?</\1>", " ", main, flags=re.S)
        url = "/" + page.parent.relative_to(out).as_posix() + "/"
        url = "/" if url == "/./" else url
        title = html.unescape(TAG.sub("", re.search(r"<h1[^>]*>(.*?)</h1>", raw, re.S).group(1))).strip()  # type: ignore[union-attr]
        cuts = [(m.start(), m.group(2), m.group(3)) for m in HEADING.finditer(main)]
        bounds = [(0, "", title), *cuts]
        for i, (start, hid, head) in enumerate(bounds):
            end = bounds[i + 1][0] if i + 1 < len(bounds) else len(main)
            text = html.unescape(TAG.sub(" ", main[start:end]))
            heading = html.unescape(TAG.sub("", head)).replace("#", "").strip()
            docs.append(
                {"id": url + (f"#{hid}" if hid else ""), "title": heading, "text": re.sub(r"\s+", " ", text)}
            )
    return docs


def lunr_measure(docs: list[dict[str, str]]) -> dict[str, object]:
    from lunr import lunr

    t0 = time.perf_counter()
    index = lunr(ref="id", fields=[{"field_name": "title", "boost": 10}, "text"], documents=docs)
    build_s = time.perf_counter() - t0
    size = len(json.dumps(index.serialize(), separators=(",", ":")).encode())
    ranks, times = [], []
    for q, want in QUERIES:
        t = time.perf_counter()
        hits = [h["ref"] for h in index.search(q)]
        times.append(time.perf_counter() - t)
        ranks.append(hits.index(want) + 1 if want in hits else None)
    return {
        "index_bytes": size,
        "first_query_bytes": size,
        "build_s": build_s,
        "ranks": ranks,
        "times": times,
    }


def pagefind_measure(out: Path, tmp: Path) -> dict[str, object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from cernvm_build.site.build import Builder
    from cernvm_build.site.serve import Preview

    size = sum(p.stat().st_size for p in (out / "pagefind").rglob("*") if p.is_file())
    preview = Preview(Builder(out.parent / "site", out), port=0, interval=3600)
    preview.start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp / 'chromium'}",
    ):  # fmt: skip
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
    try:
        d.get(preview.url + "search/")
        script = """
        const [queries, done] = [arguments[0], arguments[arguments.length - 1]];
        (async () => {
          const t0 = performance.now();
          const pf = await import('/pagefind/pagefind.js');
          await pf.init();
          const out = {init_ms: performance.now() - t0, rows: []};
          for (const q of queries) {
            const t = performance.now();
            const res = await pf.search(q);
            const data = await Promise.all(res.results.slice(0, 10).map(r => r.data()));
            out.rows.push({ms: performance.now() - t, data: data.map(x => ({url: x.url,
              subs: x.sub_results.map(s => ({url: s.url, title: s.title,
                w: s.weighted_locations.reduce((a, l) => a + (l.balanced_score || 0), 0)}))}))});
          }
          out.bytes = performance.getEntriesByType('resource').filter(e => e.name.includes('/pagefind/'))
            .reduce((a, e) => a + (e.encodedBodySize || e.transferSize || 0), 0);
          done(out);
        })();
        """
        d.set_script_timeout(120)
        got = d.execute_async_script(script, [q for q, _ in QUERIES])
    finally:
        d.quit()
        preview.stop()
    ranks = []
    for (q, want), row in zip(QUERIES, got["rows"], strict=True):
        # the site's rule (site.js): per page, the section whose heading names the query, else the
        # heaviest; pages in Pagefind's order
        words = [w[:5] for w in re.split(r"[^\w]+", q.lower()) if len(w) > 1 or w.isdigit()]
        flat = []
        for page in row["data"]:
            subs = sorted(page["subs"], key=lambda s: -s["w"])
            named = [
                s
                for s in subs
                if "#" in s["url"]
                and all(any(h.startswith(w) for h in re.split(r"[^\w]+", s["title"].lower())) for w in words)
            ]
            flat.append((named or subs or [{"url": page["url"]}])[0]["url"])
        ranks.append(flat.index(want) + 1 if want in flat else None)
    return {
        "index_bytes": size,
        "first_query_bytes": got["bytes"],
        "init_ms": got["init_ms"],
        "ranks": ranks,
        "times": [r["ms"] / 1000 for r in got["rows"]],
    }


def run(quick: bool = True) -> list[Result]:
    import shutil

    from cernvm_build.cli.reference import GENERATORS
    from cernvm_build.paths import data_dir
    from cernvm_build.site.build import build_site

    with tempfile.TemporaryDirectory(prefix="site-search-bench-") as t:
        tmp = Path(t)
        shutil.copytree(data_dir("site"), tmp / "site")
        out = tmp / "out"
        t0 = time.perf_counter()
        build_site(tmp / "site", out, generators=GENERATORS, cache_dir=tmp / "cache")
        docs = sections(out)
        lu = lunr_measure(docs)
        pf = pagefind_measure(out, tmp)
        del t0
    rows = []
    for name, m in (("pagefind", pf), ("lunr", lu)):
        ranks = m["ranks"]
        top1 = sum(1 for r in ranks if r == 1)  # type: ignore[union-attr]
        found = [r for r in ranks if r]  # type: ignore[union-attr]
        mrr = sum(1 / r for r in found) / len(QUERIES)
        times = sorted(m["times"])  # type: ignore[type-var,arg-type]
        extra = {"ranks": " ".join(str(r or "-") for r in ranks), "sections": len(docs)}  # type: ignore[union-attr]
        rows += [
            Result(f"site.search.{name}", "expected heading first", top1, f"of {len(QUERIES)}", extra=extra),
            Result(f"site.search.{name}", "mean reciprocal rank", round(mrr, 3), ""),
            Result(f"site.search.{name}", "index size", m["index_bytes"] / 1024, "KiB"),  # type: ignore[operator]
            Result(f"site.search.{name}", "loaded by the first query", m["first_query_bytes"] / 1024, "KiB"),  # type: ignore[operator]
            Result(f"site.search.{name}", "median query time", times[len(times) // 2] * 1000, "ms"),
        ]
    return rows


if __name__ == "__main__":
    rows = run()
    print_table(rows)
    for r in rows:
        for key, value in r.extra.items():
            print(f"  {r.bench} {r.metric}: {key} = {value}")
