"""bench/site_timeline.py: the steps it wraps exist, and a forked build's timeline comes out whole."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from bench import site_timeline
from bench.site_corpus import generate


@pytest.mark.parametrize(("owner", "attr"), site_timeline.STEPS)
def test_every_step_the_timeline_wraps_is_in_the_code(owner: str, attr: str) -> None:
    # a renamed step would be skipped without a word (the tracer measures older trees too)
    module, *classes = owner.split(".")
    where: object = importlib.import_module(f"cernvm_build.site.{module}")
    for name in classes:
        where = getattr(where, name)
    assert callable(getattr(where, attr, None))


def test_a_forked_builds_timeline_has_both_processes_in_both_forked_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = generate(tmp_path / "corpus", 60)["ours"]  # over parallel.PARALLEL_MIN: both steps fork
    events = site_timeline._trace(Path(__file__).resolve().parents[2], site, tmp_path, 2)
    parent = events[0][0]
    steps = {e[1] for e in events if e[0] == parent}
    assert {"imports", "scan", "render_markdown", "plan", "execute", "update", "_build"} <= steps
    # the parent and one child per forked step: the lexers (the corpus's Python, bash and YAML blocks,
    # ``markdown.warm_lexers``), the render and the write step
    assert len({e[0] for e in events if e[1] == "_work"}) == 4
    site_timeline._report(events)
    out = capsys.readouterr().out
    assert out.count("parent ") == 3 and "serial CPU" in out and "critical path" in out


def test_a_one_page_rebuilds_timeline_shows_the_render_childs_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = generate(tmp_path / "corpus", 30)["ours"]
    [events] = site_timeline._rebuilds(Path(__file__).resolve().parents[2], site, tmp_path, 2, 1, idle=True)
    parent = events[0][0]
    child = {e[1] for e in events if e[0] != parent}
    assert {"warm", "_write_shards"} <= child  # the child's templates (jinjaless) and the search shard
    assert {"recorded", "render", "end_call"} <= {e[1] for e in events if e[0] == parent}
    site_timeline._report(events)
    out = capsys.readouterr().out
    assert "other processes" in out and "the parent's waits for them" in out


def test_the_tree_measured_has_its_bytecode_even_where_none_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # else each traced build compiled the modules from source: a cost the site bench (and an installed
    # copy) does not have, shown as the critical path's
    here = Path(__file__).resolve().parents[2] / "cernvm_build"
    tree = tmp_path / "tree"
    shutil.copytree(here, tree / "cernvm_build", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    argv = ["site_timeline", "--pages", "20", "--tree", str(tree), "--work", str(tmp_path / "w")]
    monkeypatch.setattr(sys, "argv", argv)
    site_timeline.main()
    assert "critical path" in capsys.readouterr().out
    source = tree / "cernvm_build" / "site" / "build.py"
    assert Path(importlib.util.cache_from_source(str(source))).is_file()
