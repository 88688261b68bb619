"""``make bench``: run every benchmark in bench/, write one JSON file and an HTML report with plots.

Each benchmark runs in its own process (so peak-memory figures are its own) and returns its Results;
every figure is shown next to the reference it is compared to, measured in the same run.

    python bench/run_all.py [--quick] [--only cvmfs_publish,site] [--out bench/results]
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.common import Result, cores, print_table  # noqa: E402

NOT_BENCHMARKS = {"common", "run_all", "__init__"}
MARK = "@@BENCH-RESULTS@@"


def discover() -> list[str]:
    names = []
    for p in sorted(HERE.glob("*.py")):
        if p.stem in NOT_BENCHMARKS or p.stem.endswith("_corpus"):
            continue
        if "\ndef run(" in p.read_text():
            names.append(p.stem)
    return names


def run_one(name: str, quick: bool) -> tuple[list[Result], str | None]:
    code = (
        f"import json, bench.{name} as m, bench.common as c\n"
        f"r = m.run(quick={quick!r})\n"
        f"print({MARK!r} + c.dump(r))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode != 0 or MARK not in proc.stdout:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [], f"{name}: failed ({tail})"
    rows = json.loads(proc.stdout.split(MARK, 1)[1])
    for row in rows:
        row.pop("ratio", None)
    return [Result(**row) for row in rows], None


def plot(results: list[Result]) -> str:
    """One horizontal bar pair (ours vs reference) per comparable figure, as an inline PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r.reference_value is not None]
    if not rows:
        return ""
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.1 * len(rows) + 0.5), squeeze=False)
    for ax, r in zip(axes[:, 0], rows, strict=True):
        assert r.reference_value is not None
        ax.barh([1, 0], [r.value, r.reference_value], color=["#1f6feb", "#9aa4b2"])
        ax.set_yticks([1, 0], ["ours", str(r.reference)[:28]])
        ax.set_title(f"{r.bench}: {r.metric} ({r.unit})", fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def report_html(results: list[Result], failures: list[str], meta: dict[str, str]) -> str:
    e = html.escape
    rows = []
    for r in results:
        ref = f"{r.reference_value:.4g} ({e(str(r.reference))})" if r.reference_value is not None else "–"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "–"
        status = {True: "met", False: "missed", None: ""}[r.ok]
        rows.append(
            f"<tr><td>{e(r.bench)}</td><td>{e(r.metric)}</td><td>{r.value:.4g} {e(r.unit)}</td>"
            f"<td>{ref}</td><td>{ratio}</td><td>{e(r.aim or '')}</td><td class='{status}'>{status}</td></tr>"
        )
    png = plot(results)
    img = f'<img alt="figures next to their references" src="data:image/png;base64,{png}">' if png else ""
    fails = "".join(f"<li>{e(f)}</li>" for f in failures)
    meta_html = " · ".join(f"{e(k)}: {e(v)}" for k, v in meta.items())
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Benchmarks</title>
<style>body{{font:14px system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#1b1f24}}
table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #d0d7de;padding:4px 8px;text-align:left}}
.met{{color:#1a7f37}}.missed{{color:#cf222e;font-weight:600}}</style></head><body>
<h1>Benchmarks</h1><p>{meta_html}</p>
<table><tr><th>benchmark</th><th>metric</th><th>ours</th><th>reference</th><th>ratio</th><th>aim</th><th></th></tr>
{"".join(rows)}</table>{f"<h2>Failed</h2><ul>{fails}</ul>" if fails else ""}{img}</body></html>
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller inputs (minutes, not tens of minutes)")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument(
        "--site-data",
        type=Path,
        default=ROOT / "cernvm_build" / "data" / "site" / "data",
        help="also write the results there as benchmarks.json, for the site's Benchmarks page",
    )
    args = ap.parse_args()
    names = [n for n in discover() if not args.only or n in args.only.split(",")]
    results: list[Result] = []
    failures: list[str] = []
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        got, failure = run_one(name, args.quick)
        results += got
        if failure:
            failures.append(failure)
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cores": str(cores()),
        "python": platform.python_version(),
        "mode": "quick" if args.quick else "full",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    document = json.dumps(
        {"meta": meta, "results": [r.to_json() for r in results], "failures": failures}, indent=2
    )
    (args.out / "results.json").write_text(document)
    if args.site_data.is_dir():
        (args.site_data / "benchmarks.json").write_text(document)
    (args.out / "report.html").write_text(report_html(results, failures, meta))
    print_table(results)
    for f in failures:
        print(f"FAILED {f}")
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'report.html'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
