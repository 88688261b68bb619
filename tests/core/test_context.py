"""The build context is made once from the environment; reporters scope and record what stages say."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cernvm_build.context import BuildContext
from cernvm_build.errors import UsageError
from cernvm_build.release.build import release_context, version_epoch
from cernvm_build.releaseindex import ReleaseError
from cernvm_build.report import NULL_REPORTER, LineReporter, Recorder, scoped


def test_epoch_comes_from_source_date_epoch_or_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert BuildContext.from_environment(default_epoch=7).epoch == 7
    assert BuildContext.from_environment().cache == tmp_path
    assert release_context("2026.11-1").epoch == version_epoch("2026.11-1") == 1793491200
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert BuildContext.from_environment(default_epoch=7).epoch == 1700000000
    assert release_context("2026.11-1", jobs=3).epoch == 1700000000
    assert BuildContext.from_environment(epoch=5).epoch == 5, "an explicit epoch wins"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH='yesterday' is not a number"):
        BuildContext.from_environment()
    # '²' is isdigit() but no int(), 5000 digits are past int()'s limit: both were tracebacks
    for raw in ("²", "9" * 5000, "253402300800"):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", raw)
        with pytest.raises(UsageError, match=f"SOURCE_DATE_EPOCH='{raw[:20]}.*' is not a number"):
            BuildContext.from_environment()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "253402300799")
    assert BuildContext.from_environment().epoch == 253402300799


def test_bad_release_version_is_refused_before_any_epoch() -> None:
    with pytest.raises(ReleaseError, match="2026-11"):
        release_context("2026-11")


def test_reporters() -> None:
    rec = Recorder()
    el9 = scoped(scoped(rec, "el9"), "image")
    el9.step("initrd")
    el9.progress("bytes", 1, 2)
    el9.warn("slow")
    assert rec.events == [
        ("step", "el9: image: initrd"),
        ("progress", "el9 image bytes", "1", "2"),
        ("warn", "el9: image: slow"),
    ]
    lines: list[str] = []
    LineReporter(lines.append).step("x")
    LineReporter(lines.append).warn("y")
    NULL_REPORTER.step("nothing")
    assert lines == ["  x", "  warning: y"]
    ctx = BuildContext(epoch=1, reporter=rec)
    assert ctx.replace(epoch=2).reporter is rec and ctx == BuildContext(epoch=1, cache=ctx.cache)


def _reads_the_epoch(node: ast.AST) -> bool:
    """``os.environ.get("SOURCE_DATE_EPOCH")``, ``os.getenv(…)``, ``os.environ[…]`` or ``source_date_epoch()``
    (passing it to a tool's environment is not reading it)."""
    key = "SOURCE_DATE_EPOCH"
    if isinstance(node, ast.Call):
        name = getattr(node.func, "id", getattr(node.func, "attr", None))
        if name == "source_date_epoch":
            return True
        first = node.args[0] if node.args else None
        return name in ("get", "getenv") and isinstance(first, ast.Constant) and first.value == key
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        return isinstance(node.slice, ast.Constant) and node.slice.value == key
    return False


def test_build_stages_take_the_epoch_as_an_argument() -> None:
    """No other module reads the build time from the environment: stages get ``BuildContext.epoch``."""
    import cernvm_build

    root = Path(cernvm_build.__file__).parent
    readers = {
        str(path.relative_to(root.parent))
        for path in root.rglob("*.py")
        if any(_reads_the_epoch(n) for n in ast.walk(ast.parse(path.read_text())))
    }
    # context.py is where the CLI reads it (BuildContext.from_environment, env_epoch)
    assert readers == {"cernvm_build/context.py"}
