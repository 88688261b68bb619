"""Search engines for the site, measured on the shipped site: the site's own index (search.py, what
the build uses, queried by static/assets/search.js under node) against Pagefind (what it replaced) and
lunr (lunr.py, the Python port of lunr.js), on the CPU to make the index, index size, bytes a first
query loads, query time and where the expected heading ranks for a set of real queries.

All index the same thing: each page's article split at its h2/h3 headings (ours and lunr: one document
per section; Pagefind: its sub-results), English stemming. Pagefind runs in headless Chromium over a
local HTTP server (what a reader's browser does), over a copy of the site whose markers are renamed to
Pagefind's (``data-pagefind-body``/``-ignore``); lunr runs in Python (lunr.js does the same work in the
browser, and must load its whole index first).

    python bench/site_search.py
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, children_cpu, flags, print_table
from tests.site.sitehelpers import SEARCH_QUERIES as QUERIES  # the acceptance test's queries


def sections(out: Path) -> list[dict[str, str]]:
    """Every searchable page (``data-search-body``) in the sections the index step cuts it into
    (``search.sections``): id (URL and heading ``#id``), heading, text."""
    from cernvm_build.site import search

    docs = []
    for page in sorted(out.rglob("*.html")):
        raw = page.read_text()
        if "data-search-body" not in raw:
            continue
        url = search.page_url("/", page.relative_to(out).as_posix())
        _title, secs = search.sections(raw)
        docs += [
            {"id": url + (f"#{hid}" if hid else ""), "title": head, "text": text} for hid, head, text in secs
        ]
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


def ours_measure(out: Path, tmp: Path) -> dict[str, object]:
    """The site's own index: made again from the built pages with an empty state (CPU of the step),
    then queried by search.js under node."""
    import shutil
    import subprocess

    from cernvm_build.paths import data_dir
    from cernvm_build.site import search
    from cernvm_build.site.cache import State

    pages = {
        p.relative_to(out).as_posix(): "x"
        for p in out.rglob("*.html")
        if b"data-search-body" in p.read_bytes()
    }
    fresh = tmp / "ours"
    shutil.copytree(out, fresh)
    shutil.rmtree(fresh / "search-index")
    state = State(tmp / "ours-state.sqlite")
    cpu0 = time.process_time()
    kids0 = children_cpu()
    search.update(fresh, search.index_plan(fresh, {}, pages), pages, state, jobs=1)
    build_cpu = time.process_time() - cpu0 + children_cpu() - kids0
    state.close()
    size = sum(p.stat().st_size for p in (fresh / "search-index").rglob("*") if p.is_file())
    runner = Path(__file__).resolve().parent.parent / "tests/site/search_node.js"
    script = data_dir("site") / "static/assets/search.js"
    request = {"queries": [[q, 10] for q, _ in QUERIES]}
    proc = subprocess.run(
        ["node", str(runner), str(script), str(fresh / "search-index") + "/"],
        input=json.dumps(request), capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    got = json.loads(proc.stdout)["results"]
    ranks = []
    for (_q, want), row in zip(QUERIES, got, strict=True):
        urls = [h["url"] for h in row["hits"]]
        ranks.append(urls.index(want) + 1 if want in urls else None)
    return {
        "index_bytes": size,
        "first_query_bytes": got[0]["loaded"],
        "build_cpu_s": build_cpu,
        "pages": len(pages),
        "ranks": ranks,
        "times": [r["ms"] / 1000 for r in got],
    }


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def pagefind_measure(out: Path, tmp: Path) -> dict[str, object]:
    import shutil
    import subprocess

    import pagefind_bin_extended  # type: ignore[import-not-found]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Pagefind reads its own markers: a copy of the site with ours renamed, indexed by its binary
    copy = tmp / "pagefind-site"
    shutil.copytree(out, copy)
    for page in copy.rglob("*.html"):
        page.write_bytes(page.read_bytes().replace(b"data-search-", b"data-pagefind-"))
    kids0 = children_cpu()
    subprocess.run(
        [str(pagefind_bin_extended.get_executable()), "--site", str(copy), "--silent"],
        check=True,
        timeout=600,
    )
    build_cpu = children_cpu() - kids0
    size = sum(p.stat().st_size for p in (copy / "pagefind").rglob("*") if p.is_file())
    handler = functools.partial(QuietHandler, directory=str(copy))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
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
        d.get(url + "search/")
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
        server.shutdown()
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
        "build_cpu_s": build_cpu,
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
        build_site(tmp / "site", out, generators=GENERATORS, cache_dir=tmp / "cache")
        docs = sections(out)
        ours = ours_measure(out, tmp)
        lu = lunr_measure(docs)
        pf = pagefind_measure(out, tmp)
    rows = []
    for name, m in (("ours", ours), ("pagefind", pf), ("lunr", lu)):
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
            Result(
                f"site.search.{name}",
                "CPU to make the index",
                float(m.get("build_cpu_s", m.get("build_s", 0))),
                "s",
            ),  # type: ignore[arg-type]
        ]
    return rows


if __name__ == "__main__":
    flags(__doc__, {})
    rows = run()
    print_table(rows)
    for r in rows:
        for key, value in r.extra.items():
            print(f"  {r.bench} {r.metric}: {key} = {value}")
