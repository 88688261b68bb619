"""The Benchmarks page shows what `make bench` wrote, escaped, and says so when there is nothing yet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sitehelpers import Builder

from cernvm_build.errors import BuildError
from cernvm_build.paths import data_dir


def _build(tmp_path: Path, results: dict[str, object] | None) -> str:
    site = tmp_path / "site"
    shutil.copytree(data_dir("site"), site)
    (site / "data" / "benchmarks.json").unlink(missing_ok=True)
    if results is not None:
        (site / "data" / "benchmarks.json").write_text(json.dumps(results))
    builder = Builder(site, tmp_path / "out")
    builder.build()
    return (tmp_path / "out" / "docs" / "reference" / "benchmarks" / "index.html").read_text()


def test_results_are_listed_next_to_their_reference(tmp_path: Path) -> None:
    row = {
        "bench": "cvmfs.publish<script>alert(1)</script>", "metric": "throughput", "value": 4.43,
        "unit": "MB/s", "reference": "zlib+SHA-1 limit", "reference_value": 4.04, "aim": ">= 60 %",
        "ok": True, "ratio": 1.0965,
    }  # fmt: skip
    meta = {"date": "2026-11-25T08:00:00Z", "cores": "2", "mode": "full", "python": "3.11"}
    page = _build(tmp_path, {"meta": meta, "results": [row], "failures": []})
    assert "4.43 MB/s" in page and "4.04 MB/s (zlib+SHA-1 limit)" in page and "1.10" in page
    assert "<script>alert(1)</script>" not in page
    assert "cvmfs.publish&lt;script&gt;" in page


def test_without_results_the_page_says_how_to_get_them(tmp_path: Path) -> None:
    page = _build(tmp_path, None)
    assert "No figures yet" in page and "<table>" not in page


def test_a_result_whose_value_is_text_stops_the_build_naming_it(tmp_path: Path) -> None:
    row = {"bench": "b", "metric": "m", "value": "fast", "unit": "s", "reference_value": None, "ratio": None}
    with pytest.raises(BuildError) as e:
        _build(tmp_path, {"meta": {}, "results": [row], "failures": []})
    assert str(e.value.where).endswith("benchmarks.json: results[0].value")
