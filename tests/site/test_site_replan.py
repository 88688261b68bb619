"""A one-page rebuild planned from the state's recorded plan parts (``site.replan``): no page set made,
the output a clean build's; a state without the rows, or with a damaged or forged one, plans as before."""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sitehelpers import Edit, build_site, tree

from cernvm_build.site import pages as site_pages
from cernvm_build.site.build import LinkErrors
from cernvm_build.site.cache import PLACES
from cernvm_build.site.plan import SIDEBAR_ROW

PAGE = "content/docs/guides/preservation.md"
LINKED = "docs/guides/cache.md"


def _clean(site: Path, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    with monkeypatch.context() as m:
        m.setenv("CERNVM_CACHE_DIR", str(tmp_path / f"cache-{name}"))
        build_site(site, tmp_path / name)
    return tree(tmp_path / name)


def _page_sets(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the page sets the builder makes (``pages.make_pages``)."""
    made: list[int] = []
    real = site_pages.make_pages

    def counted(*a: Any, **kw: Any) -> Any:
        made.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(site_pages, "make_pages", counted)
    return made


def _state(tmp_path: Path) -> sqlite3.Connection:
    [path] = (tmp_path / "cache").rglob("state.sqlite")
    return sqlite3.connect(path, isolation_level=None)


@pytest.fixture
def built(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Edit) -> Path:
    """The site built once, the edited page linking to a heading of another page (a link to check and
    resolve), built again."""
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache"))
    build_site(site, tmp_path / "out")
    edit(site / PAGE, "## The idea", "See [the alien cache](cache.md#alien-cache).\n\n## The idea")
    build_site(site, tmp_path / "out")
    return tmp_path / "out"


def test_a_one_page_rebuild_makes_no_page_set_and_writes_a_clean_builds_bytes(
    site: Path, tmp_path: Path, built: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _page_sets(monkeypatch)
    first = build_site(site, built)  # (nothing changed)
    edit(site / PAGE, "no longer receive security updates", "no longer get security updates")
    report = build_site(site, built)
    assert made == []
    assert (report.pages_planned, report.rendered, report.markdown_rendered) == (1, 1, 1)
    assert (report.pages, report.outputs) == (first.pages, first.outputs)
    assert report.sources["docs/guides/preservation/index.html"].endswith(PAGE)
    # again, from the row that build recorded
    edit(site / PAGE, "no longer get security updates", "no longer see security updates")
    assert build_site(site, built).pages_planned == 1 and made == []
    with monkeypatch.context() as m:
        m.setattr(site_pages, "make_pages", _real_make_pages)
        assert tree(built) == _clean(site, tmp_path, "clean", monkeypatch)
    # a link to a heading that is not there fails the build as before
    edit(site / PAGE, "cache.md#alien-cache", "cache.md#no-such-heading")
    with pytest.raises(LinkErrors, match=r"preservation\.md:.*no heading '#no-such-heading'"):
        build_site(site, built)
    assert made == []


_real_make_pages = site_pages.make_pages


def _damage_places(db: sqlite3.Connection, change: Callable[[dict[str, str]], Any]) -> None:
    (blob,) = db.execute("SELECT blob FROM memo WHERE name = ?", (PLACES,)).fetchone()
    places = pickle.loads(blob)
    got = change(places)
    db.execute(
        "UPDATE memo SET blob = ? WHERE name = ?",
        (got if isinstance(got, bytes) else pickle.dumps(places), PLACES),
    )


def _damage_row(db: sqlite3.Connection, change: Callable[[tuple[Any, ...]], Any]) -> None:
    src = PAGE.removeprefix("content/")
    (blob,) = db.execute("SELECT blob FROM plan_parts WHERE key = ?", (src,)).fetchone()
    got = change(pickle.loads(blob))
    db.execute(
        "UPDATE plan_parts SET blob = ? WHERE key = ?",
        (got if isinstance(got, bytes) else pickle.dumps(got), src),
    )


def _forged_title(row: tuple[Any, ...]) -> tuple[Any, ...]:
    version, path, out, key, rest, fed = row
    rest["page"]["title"] = "Forged"
    return (version, path, out, key, rest, fed)


def _forged_sidebar(db: sqlite3.Connection) -> None:
    (blob,) = db.execute(
        "SELECT blob FROM plan_parts WHERE key = ?", (PAGE.removeprefix("content/"),)
    ).fetchone()
    bar = SIDEBAR_ROW + pickle.loads(blob)[4]["sidebar"].key
    items = [{"title": "Forged", "url": "/", "open": True, "children": []}]
    assert (
        db.execute("UPDATE plan_parts SET blob = ? WHERE key = ?", (pickle.dumps(items), bar)).rowcount == 1
    )


def _other_row(db: sqlite3.Connection) -> None:
    (blob,) = db.execute("SELECT blob FROM plan_parts WHERE key = ?", (LINKED,)).fetchone()
    db.execute("UPDATE plan_parts SET blob = ? WHERE key = ?", (blob, PAGE.removeprefix("content/")))


def _no_rows(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM plan_parts")
    db.execute("DELETE FROM memo WHERE name = ?", (PLACES,))


DAMAGE: dict[str, Callable[[sqlite3.Connection], None]] = {
    "no rows (an older state)": _no_rows,
    "a row of garbage": lambda db: _damage_row(db, lambda _row: b"\x80\x05garbage"),
    "a row of another format": lambda db: _damage_row(db, lambda _row: ("x", 1)),
    "another page's row": _other_row,
    "a forged context": lambda db: _damage_row(db, _forged_title),
    "a forged sidebar": _forged_sidebar,
    "places of garbage": lambda db: _damage_places(db, lambda _p: b"junk"),
    # (rv27a: a row not a blob was bytes(text)'s TypeError traceback; a number, bytes(n) of n bytes)
    "places as text": lambda db: db.execute("UPDATE memo SET blob = 'junk' WHERE name = ?", (PLACES,)),
    "places as a number": lambda db: db.execute("UPDATE memo SET blob = 1 << 40 WHERE name = ?", (PLACES,)),
    "the page's place moved": lambda db: _damage_places(
        db, lambda p: p.__setitem__(PAGE.removeprefix("content/"), "/elsewhere/")
    ),
    "a linked page's place forged": lambda db: _damage_places(
        db, lambda p: p.__setitem__(LINKED, p["docs/guides/site.md"])
    ),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_state_without_its_rows_or_with_a_damaged_one_plans_as_before(
    site: Path, tmp_path: Path, built: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    with _state(tmp_path) as db:
        DAMAGE[damage](db)
    made = _page_sets(monkeypatch)
    edit(site / PAGE, "no longer receive security updates", "no longer get security updates")
    report = build_site(site, built)  # no traceback, no wrong page
    assert made == [1] and report.pages_planned == 1  # (the plan of ``plan.Delta``, as before)
    monkeypatch.setattr(site_pages, "make_pages", _real_make_pages)
    assert tree(built) == _clean(site, tmp_path, "clean", monkeypatch)


def test_an_output_deleted_or_edited_is_repaired_by_a_one_page_rebuild(
    site: Path, tmp_path: Path, built: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    (built / "docs/guides/cache/index.html").unlink()
    (built / "docs/guides/site/index.html").write_text("changed")
    edit(site / PAGE, "no longer receive security updates", "no longer get security updates")
    build_site(site, built)
    assert tree(built) == _clean(site, tmp_path, "clean", monkeypatch)


def test_a_one_page_rebuild_unpickles_only_the_heads_it_uses(
    site: Path, built: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild planned from the state reads every page's head row but unpickles only the edited
    page's and its links' targets' (``cache.Meta``), and prunes no code row by the whole set when no
    block of the edited page went (``Builder._tail``): every head was unpickled, ~3.5 % of a one-page
    rebuild's instructions at 1,000 pages."""
    from cernvm_build.site import cache

    heads = _db_heads(built, monkeypatch)
    unpickled: list[bytes] = []
    real = cache.pickle.loads

    def loads(blob: bytes, *a: Any, **kw: Any) -> Any:
        unpickled.append(bytes(blob))
        return real(blob, *a, **kw)

    monkeypatch.setattr(cache, "pickle", _Pickle(loads))
    edit(site / PAGE, "no longer receive security updates", "no longer get security updates")
    report = build_site(site, built)
    assert report.pages_planned == 1
    got = [b for b in unpickled if b in heads]
    assert 0 < len(got) <= 3 < len(heads)  # the former version's, the linked page's (of ~20)


class _Pickle:
    """The ``pickle`` module as ``cache`` sees it, its ``loads`` counted."""

    def __init__(self, loads: Callable[..., Any]):
        self.loads = loads

    def __getattr__(self, name: str) -> Any:
        return getattr(pickle, name)


def _db_heads(out: Path, monkeypatch: pytest.MonkeyPatch) -> set[bytes]:
    [path] = (out.parent / "cache").rglob("state.sqlite")
    db = sqlite3.connect(path)
    try:
        return {bytes(blob) for (blob,) in db.execute("SELECT head FROM md_head")}
    finally:
        db.close()


def _keys(cache: Path, table: str) -> set[str]:
    [path] = cache.rglob("state.sqlite")
    db = sqlite3.connect(path)
    try:
        return {key for (key,) in db.execute(f"SELECT key FROM {table}")}
    finally:
        db.close()


def test_a_one_page_rebuild_after_a_failed_build_keeps_a_clean_builds_code_rows(
    site: Path, tmp_path: Path, built: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build that fails after rendering the edited page keeps its Markdown and code blocks (the next
    build need not render them again); when the page is edited again before that build, its block is
    stale: a rebuild planned from the state whose edited page lost no block of the last complete
    build's pruned no code row and kept it (214 rows where a clean build has 213)."""
    block = "```python\nstale_block = 'only in the failed build'\n```\n\n"
    edit(site / PAGE, "cache.md#alien-cache", "cache.md#no-such-heading")
    edit(site / PAGE, "## The idea", block + "## The idea")
    with pytest.raises(LinkErrors):
        build_site(site, built)
    edit(site / PAGE, "cache.md#no-such-heading", "cache.md#alien-cache")
    edit(site / PAGE, block, "")
    edit(site / PAGE, "no longer receive security updates", "no longer get security updates")
    assert build_site(site, built).pages_planned == 1
    clean = _clean(site, tmp_path, "clean", monkeypatch)
    assert tree(built) == clean
    for table in ("code", "md_head"):
        assert _keys(tmp_path / "cache", table) == _keys(tmp_path / "cache-clean", table), table
