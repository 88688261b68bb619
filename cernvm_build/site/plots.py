"""Static SVG line plots, made when the site is built (readable without JavaScript).

``publish_dashboard(stats)`` turns what ``cernvm-build cvmfs stats --out`` wrote
(``site/data/publish_stats.json``) into plain data for the ``publish_stats`` layout: per repository
the table rows and the plots as SVG text. Every piece of text in an SVG is escaped here (names and
numbers come from repositories); the SVG is built from data, so it is part of the page's fingerprint
like any other context value.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass
from html import escape
from typing import Any

from ..errors import BuildError

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 36
COLOURS = ("#1f6feb", "#d1242f", "#9a6700", "#1a7f37")


@dataclass(frozen=True)
class Series:
    label: str
    values: tuple[float, ...]


def _nice_max(top: float) -> float:
    if top <= 0:
        return 1.0
    step = 10.0 ** len(str(int(top))) / 10
    for mult in (1, 2, 2.5, 5, 10):
        if top <= step * mult:
            return step * mult
    return top


def _fmt(v: float, unit: str) -> str:
    if unit == "B":
        for suffix, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if v >= size:
                return f"{v / size:.3g} {suffix}"
        return f"{v:.0f} B"
    if unit == "s":
        return f"{v:.3g} s"
    return f"{v:.0f}" if v == int(v) else f"{v:.3g}"


def line_plot(title: str, xs: list[str], series: list[Series], unit: str = "") -> str:
    """One SVG: a line and a dot per value (each dot's <title> names revision, series and value)."""
    n = len(xs)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_max(max((v for s in series for v in s.values), default=0.0))

    def x(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / n if n else 0)

    def y(v: float) -> float:
        return TOP + plot_h - plot_h * v / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'class="plot" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="16" class="plot-title">{escape(title)}</text>',
    ]
    for k in range(5):
        v = top * k / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{escape(_fmt(v, unit))}</text>'
        )
    every = max(1, n // 10)
    for i, label in enumerate(xs):
        if i % every == 0 or i == n - 1:
            parts.append(
                f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{escape(label)}</text>'
            )
    parts.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle">revision</text>')
    for j, s in enumerate(series):
        colour = COLOURS[j % len(COLOURS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.values))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, v in enumerate(s.values):
            tip = f"revision {xs[i]}: {s.label} {_fmt(v, unit)}"
            dot = f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}">'
            parts.append(f"{dot}<title>{escape(tip)}</title></circle>")
        lx = WIDTH - RIGHT - 84 * (len(series) - j)
        parts.append(
            f'<rect x="{lx}" y="6" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="15">{escape(s.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _seconds(row: dict[str, Any]) -> float:
    try:
        start = dt.datetime.fromisoformat(str(row["start_time"]))
        finish = dt.datetime.fromisoformat(str(row["finish_time"]))
        return max(0.0, (finish - start).total_seconds())
    except (KeyError, ValueError, TypeError):  # TypeError: one time with a zone, one without
        return 0.0


#: the largest value plotted: the JSON is data (NaN, Infinity, 1e308 parse); a counter never gets here
MAX_VALUE = float(1 << 62)


def _num(row: dict[str, Any], key: str) -> float:
    v = row.get(key)
    if not isinstance(v, int | float) or isinstance(v, bool):
        return 0.0
    f = float(min(max(v, 0), MAX_VALUE))  # negative counts are damage: shown as 0
    return f if math.isfinite(f) else 0.0


def _series(rows: list[dict[str, Any]], label: str, key: str) -> Series:
    return Series(label, tuple(_num(r, key) for r in rows))


#: the row fields the table shows: a row from elsewhere may lack any (shown empty, not a template error)
_TABLE_KEYS = (
    "revision", "finish_time", "files_added", "files_removed", "files_changed", "directories_added",
    "directories_removed", "directories_changed", "sz_bytes_added", "sz_bytes_removed", "chunks_added",
    "catalogs_added",
)  # fmt: skip


def publish_dashboard(stats: Any, source: str = "publish_stats.json") -> list[dict[str, Any]]:
    repos = stats.get("repositories") if isinstance(stats, dict) else None
    if not isinstance(repos, list):
        raise BuildError(
            "'repositories' must be a list",
            where=source,
            hint="write the file with 'cernvm-build cvmfs stats --out'",
        )
    out = []
    for i, repo in enumerate(repos):
        rows = repo.get("publishes") if isinstance(repo, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise BuildError(f"repositories[{i}].publishes must be a list of rows", where=source)
        xs = [str(r.get("revision", "?")) for r in rows]

        s = functools.partial(_series, rows)
        name = str(repo.get("fqrn") or f"repository {i + 1}")
        plots = [
            line_plot(
                f"{name}: files",
                xs,
                [s("added", "files_added"), s("removed", "files_removed"), s("changed", "files_changed")],
            ),
            line_plot(
                f"{name}: bytes",
                xs,
                [
                    s("added", "sz_bytes_added"),
                    s("removed", "sz_bytes_removed"),
                    s("uploaded", "sz_bytes_uploaded"),
                ],
                "B",
            ),
            line_plot(
                f"{name}: objects written",
                xs,
                [s("content", "chunks_added"), s("catalogs", "catalogs_added")],
            ),
            line_plot(f"{name}: duration", xs, [Series("publish", tuple(_seconds(r) for r in rows))], "s"),
        ]
        table = [{**dict.fromkeys(_TABLE_KEYS), **r, "duration": _seconds(r)} for r in rows]
        out.append(
            {"fqrn": name, "source": str(repo.get("source", "")), "plots": plots, "rows": table[-20:][::-1]}
        )
    return out
