"""Building the site: outputs, reproducibility, incremental rebuilds equal to clean builds, errors."""

from __future__ import annotations

import functools
import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sitehelpers import Builder, Edit, build_site, fragments, tree, write_release

from cernvm_build.cli import reference as cli_reference
from cernvm_build.errors import BuildError
from cernvm_build.site.build import LinkErrors
from cernvm_build.site.cache import State


def test_real_site_builds_with_every_kind_of_output(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = build_site(site, out)
    files = tree(out)
    for must in (
        "index.html",
        "docs/index.html",
        "docs/quickstart/client/index.html",
        "docs/reference/cli/index.html",
        "news/index.html",
        "downloads/index.html",
        "repositories/index.html",
        "search/index.html",
        "404.html",
        "tags/index.html",
        "atom.xml",
        "sitemap.xml",
        "robots.txt",
        "search-index/shards.json",
        "search-index/meta.json",
        "assets/site.css",
        "assets/site.js",
        "assets/search.js",
        "assets/pygments.css",
    ):
        assert must in files, must
    assert report.rendered + report.search_files == len(files)
    client = files["docs/quickstart/client/index.html"].decode()
    # breadcrumbs, sidebar with the current page marked, table of contents, previous/next
    assert '<nav class="crumbs"' in client and 'href="/docs/quickstart/"' in client
    assert '<a href="/docs/quickstart/client/" aria-current="page">' in client
    assert 'href="#configure"' in client
    # previous/next follow the reading order: the folder's index, its pages by weight, sub-folders
    pager = client.split('class="pager"')[1]
    assert 'class="prev" href="/docs/quickstart/"' in pager
    assert 'class="next" href="/docs/quickstart/launch/"' in pager
    # the generated CLI reference comes from the real argument parser
    cli = files["docs/reference/cli/index.html"].decode()
    assert "cernvm-build site build" in cli and "--repo-metadata" in cli
    # robots points at the sitemap; the sitemap lists pages but not the 404 or the search page
    assert b"Sitemap: https://cvmfs.io/sitemap.xml" in files["robots.txt"]
    locs = [
        e.text
        for e in ET.fromstring(files["sitemap.xml"]).iter("{http://www.sitemaps.org/schemas/sitemap/0.9}loc")
    ]
    assert "https://cvmfs.io/docs/quickstart/client/" in locs
    assert not any("404" in (u or "") for u in locs)
    # the search index covers the articles (menus, sidebars and tables of contents are left out)
    assert "data-search-body" in client and '<aside class="sidebar" data-search-ignore>' in client
    frags = fragments(out / "search-index")
    assert len(frags) >= 30 and len(list((out / "search-index/f").iterdir())) < len(frags)  # packed
    assert not any("playground" in f["u"] for f in frags)


def test_atom_feed_has_real_metadata(site: Path, tmp_path: Path) -> None:
    build_site(site, tmp_path / "out")
    ns = {"a": "http://www.w3.org/2005/Atom"}
    feed = ET.parse(tmp_path / "out" / "atom.xml").getroot()
    assert feed.findtext("a:title", namespaces=ns) == "CernVM-FS and CernVM news"
    assert feed.findtext("a:id", namespaces=ns) == "https://cvmfs.io/atom.xml"
    assert feed.find("a:author/a:name", ns) is not None
    entries = feed.findall("a:entry", ns)
    dates = [e.findtext("a:updated", namespaces=ns) for e in entries]
    assert dates == sorted(dates, reverse=True) and len(entries) >= 3
    assert feed.findtext("a:updated", namespaces=ns) == dates[0]
    first = entries[0]
    assert first.findtext("a:id", namespaces=ns).startswith("tag:cvmfs.io,")  # type: ignore[union-attr]
    content = first.find("a:content", ns)
    assert content is not None and content.get("type") == "html" and "<p>" in (content.text or "")


def _not_called(*a: object) -> object:
    raise AssertionError("called")


def test_same_inputs_same_bytes(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cernvm_build.site import sources, write

    real = sources.fork_map
    warm: list[bool] = []

    def render_map(*a: Any, meanwhile: Any = None, **kw: Any) -> Any:
        out = real(*a, meanwhile=meanwhile, **kw)
        aside, then = meanwhile.args
        warming = then.args[0] if isinstance(then, functools.partial) else then  # (then the imports)
        warm.append("env" in warming.__self__.__dict__)  # jinja2's environment made meanwhile
        # and the plan's inputs that need no rendered Markdown (data, stylesheet, asset digests)
        warm.append(aside.cache_info().currsize == 1)
        return out

    monkeypatch.setattr(sources, "fork_map", render_map)

    with monkeypatch.context() as m:
        # a full build rendered every page now: it never searches the contexts for pages to read back
        m.setattr(write, "_lates", _not_called)
        build_site(site, tmp_path / "a", jobs=1)
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "other-cache"))
    build_site(site, tmp_path / "b", jobs=2)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert warm == [True, True, True, True]


def _clean(site: Path, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    with monkeypatch.context() as m:
        m.setenv("CERNVM_CACHE_DIR", str(tmp_path / f"cache-{name}"))
        build_site(site, tmp_path / name)
    return tree(tmp_path / name)


def test_one_page_edit_rerenders_only_what_depends_on_it(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    build_site(site, out)
    again = build_site(site, out)
    assert again.rendered == 0 and again.markdown_rendered == 0 and again.search_files == 0

    page = site / "content" / "docs" / "guides" / "preservation.md"
    edit(page, "no longer receive security updates", "no longer get security updates")
    report = build_site(site, out)
    assert report.markdown_rendered == 1
    # the page itself (and the search index's files that cover it): its title and excerpt did not
    # change, so no sidebar, tag list or feed entry moved
    assert report.rendered == 1 and 0 < report.search_files < 10
    assert b"no longer get security updates" in (out / "docs/guides/preservation/index.html").read_bytes()
    # an edit in the excerpt also changes the tag pages that list it
    edit(page, "Experiments stop, but", "Experiments end, but")
    report = build_site(site, out)
    assert report.rendered == 1 + 5  # + tags cernvm, el4, el5, el6, preservation
    assert tree(out) == _clean(site, tmp_path, "clean1", monkeypatch)

    # a changed title is in every sidebar of its section and in previous/next: those re-render too
    edit(page, "title: Preserving EL4–EL6 environments", "title: Preserving old environments")
    report = build_site(site, out)
    assert 2 < report.rendered < 60
    assert b"Preserving old environments" in (out / "docs/guides/site/index.html").read_bytes()
    assert tree(out) == _clean(site, tmp_path, "clean2", monkeypatch)


def test_template_data_and_deletion_are_tracked(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    build_site(site, out)
    # a template used only by the tag pages
    edit(site / "templates" / "tags.html", "<h1>Tags</h1>", "<h1>All tags</h1>")
    report = build_site(site, out)
    assert report.rendered == 1
    assert b"All tags" in (out / "tags/index.html").read_bytes()
    # release data: the downloads page, the home page and a new release page change
    write_release(site, "2026.11-1", "2026-11-20", {"cernvm-el9-2026.11-1.iso": b"iso" * 100})
    report = build_site(site, out)
    assert (out / "releases/2026.11-1/index.html").is_file()
    assert b"cernvm-el9-2026.11-1.iso" in (out / "downloads/index.html").read_bytes()
    # deleting a page deletes its output, its tag page when it was the only member, and its links
    edit(
        site / "content" / "docs" / "guides" / "_index.md",
        "- [Building and publishing this site](site.md)",
        "",
    )
    (site / "content" / "docs" / "guides" / "site.md").unlink()
    build_site(site, out)
    assert not (out / "docs/guides/site").exists()
    # junk in the output folder does not survive a build either
    (out / "stray.html").write_text("x")
    build_site(site, out)
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)


def test_downloads_and_release_pages_come_from_the_index(site: Path, tmp_path: Path) -> None:
    write_release(site, "2026.10-1", "2026-10-01", {"cernvm-el9-2026.10-1.iso": b"a" * 10})
    write_release(
        site,
        "2026.11-1",
        "2026-11-20",
        {"cernvm-el9-2026.11-1.iso": b"b" * 2048, "cernvm-el6-2026.11-1.oci": b"c" * 10},
        previous="2026.10-1",
    )
    out = tmp_path / "out"
    build_site(site, out)
    downloads = (out / "downloads/index.html").read_text()
    latest = downloads.split('id="older"')[0]
    assert "CernVM 2026.11-1" in latest and "cernvm-el9-2026.11-1.iso" in latest
    assert 'href="/dist/2026.11-1/cernvm-el9-2026.11-1.iso"' in latest
    assert "2.0 KiB" in latest and "frozen" in latest
    assert "2026.10-1" in downloads.split('id="older"')[1]
    page = (out / "releases/2026.11-1/index.html").read_text()
    assert "Scientific Linux 6" in page and "SHA256SUMS" in page
    assert "releases/2026.10-1/" in page
    feed = (out / "atom.xml").read_text()
    assert "CernVM 2026.11-1" in feed
    home = (out / "index.html").read_text()
    assert "CernVM 2026.11-1" in home


def test_a_missing_or_changed_artifact_fails_the_build(site: Path, tmp_path: Path) -> None:
    write_release(site, "2026.11-1", "2026-11-20", {"cernvm-el9-2026.11-1.iso": b"iso"})
    (site / "static/dist/2026.11-1/cernvm-el9-2026.11-1.iso").write_bytes(b"isx")
    with pytest.raises(BuildError, match="does not match the size/sha256") as e:
        build_site(site, tmp_path / "out")
    assert "2026.11-1.json" in str(e.value.where)
    (site / "static/dist/2026.11-1/cernvm-el9-2026.11-1.iso").unlink()
    with pytest.raises(BuildError, match=r"is not at /dist/2026\.11-1/cernvm-el9-2026\.11-1\.iso"):
        build_site(site, tmp_path / "out")


def test_broken_links_fail_with_file_and_line(site: Path, tmp_path: Path, edit: Edit) -> None:
    page = site / "content" / "docs" / "quickstart" / "launch.md"
    good = page.read_text()
    edit(
        page,
        "[user-data reference](../reference/user-data.md)",
        "[user-data reference](../reference/nope.md)",
    )
    edit(page, "(../reference/cli.md#cernvm-launch)", "(../reference/cli.md#no-such-heading)")
    with pytest.raises(LinkErrors) as e:
        build_site(site, tmp_path / "out")
    lines = page.read_text().splitlines()
    bad = next(i for i, line in enumerate(lines, 1) if "nope.md" in line)
    assert f"{page}:{bad}: link to 'docs/reference/nope.md', which is not a page" in e.value.problems
    assert any("has no heading '#no-such-heading'" in p for p in e.value.problems)
    assert not (tmp_path / "out" / "index.html").exists()
    # the pages rendered before the links were checked were kept: the fixed build renders the fixed one
    page.write_text(good)
    assert build_site(site, tmp_path / "out").markdown_rendered == 1


def test_bad_front_matter_names_file_and_line(site: Path, tmp_path: Path) -> None:
    page = site / "content" / "news" / "bad.md"
    page.write_text("---\ntitle: ok\ndate: [unclosed\n---\nbody\n")
    with pytest.raises(BuildError) as e:
        build_site(site, tmp_path / "out")
    assert str(e.value.where).startswith(f"{page}:")
    page.write_text("---\ntitle: A post\n---\nno date\n")
    with pytest.raises(BuildError, match="need a date") as e2:
        build_site(site, tmp_path / "out")
    assert str(page) in str(e2.value.where)
    # a date or an update given is parsed, whatever its value, and named when it is none
    for fm, key in (
        ('date: ""', "date"),
        ("date: soon", "date"),
        ('date: 2026-01-01\nupdated: ""', "updated"),
    ):
        page.write_text(f"---\ntitle: A post\n{fm}\n---\nbody\n")
        with pytest.raises(BuildError, match=f"'{key}' is not a date"):
            build_site(site, tmp_path / "out")
    page.write_text("---\ntitle: A post\ndate: 2026-01-01\nupdated: 2026-03-04\ntags: []\n---\nbody\n")
    build_site(site, tmp_path / "out")
    assert "2026-03-04" in (tmp_path / "out" / "sitemap.xml").read_text()


def test_lazy_metadata_reads_like_a_mapping(tmp_path: Path) -> None:
    """``cache.Meta``: the head at hand, the rest read on use, a key neither holds the default (also
    once the row is gone)."""
    state = State(tmp_path / "state.sqlite")
    state.put_md([("k", {"fm": {}, "code": ["c1"], "toc": [1]}, "<p>x</p>")])
    meta = state.md_meta({"k"}, lazy=True)["k"]
    assert (meta.get("code"), meta.get("toc"), meta.get("nope", 5), meta["toc"]) == (["c1"], [1], 5, [1])
    gone = state.md_meta({"k"}, lazy=True)["k"]
    state.prune_md(set())
    assert (gone.get("code"), gone.get("toc", "d")) == (["c1"], "d")
    state.close()


def test_everything_from_content_is_escaped(site: Path, tmp_path: Path) -> None:
    (site / "content" / "news" / "x.md").write_text(
        '---\ntitle: "<script>alert(1)</script> & co"\ndate: 2026-01-01\ntags: ["<b>"]\n---\nBody.\n'
    )
    out = tmp_path / "out"
    build_site(site, out)
    page = (out / "news/x/index.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "<b>" not in (out / "tags/index.html").read_text()
    ET.parse(out / "atom.xml")  # still well-formed XML


def test_refuses_to_clear_a_foreign_folder(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(BuildError, match="holds no site this tool built"):
        build_site(site, out)
    assert (out / "thesis.tex").read_text() == "years of work"


def test_base_url_prefix_applies_to_every_link(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_site(site, out, base_url="https://example.org/cvmfs/")
    home = (out / "index.html").read_text()
    assert 'href="/cvmfs/docs/"' in home and 'href="/docs/' not in home
    assert "https://example.org/cvmfs/sitemap.xml" in (out / "robots.txt").read_text()
    from cernvm_build.site.check import check_site

    assert check_site(out, "https://example.org/cvmfs/").problems == []


def test_an_interrupted_build_is_finished_by_the_next(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    from cernvm_build.site import write as write_mod

    calls = {"n": 0}
    real = write_mod.write_output

    def flaky(dest: Path, blob: bytes, made: set[str] | None = None) -> tuple[int, int]:
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return real(dest, blob, made)

    monkeypatch.setattr(write_mod, "write_output", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_site(site, out, jobs=1)
    # a build into a new folder leaves nothing: no half a site, no temporary sibling
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "site"]
    monkeypatch.setattr(write_mod, "write_output", real)
    build_site(site, out)
    # into an existing folder: interrupted after some pages were replaced
    base = site / "templates/base.html"
    base.write_text(base.read_text() + "{# every page is written again #}\n")
    calls["n"] = 0
    monkeypatch.setattr(write_mod, "write_output", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_site(site, out, jobs=1)
    monkeypatch.setattr(write_mod, "write_output", real)
    build_site(site, out)
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)
    assert not [p for p in out.rglob(".*tmp*")]


def test_parallel_writers_give_the_serial_bytes(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cernvm_build.site import parallel

    def serial(name: str) -> dict[str, bytes]:
        with monkeypatch.context() as m:
            m.setenv("CERNVM_CACHE_DIR", str(tmp_path / f"cache-{name}"))
            build_site(site, tmp_path / name, jobs=1)
        return tree(tmp_path / name)

    monkeypatch.setattr(parallel, "PARALLEL_MIN", 2)  # the shipped site is small: fork anyway
    first = build_site(site, tmp_path / "parallel", jobs=2)
    assert first.markdown_rendered > 2 and first.rendered > 2
    assert tree(tmp_path / "parallel") == serial("serial")
    # into an existing folder (atomic writes), after a change that every page sees
    base = site / "templates/base.html"
    base.write_text(base.read_text() + "{# every page is written again #}\n")
    assert build_site(site, tmp_path / "parallel", jobs=2).rendered > 2
    assert tree(tmp_path / "parallel") == serial("serial2")


def test_the_rendered_markdown_past_its_budget_is_not_held_and_the_bytes_are_the_same(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The render step hands the write step at most ``HELD_MAX`` of rendered Markdown in
    memory: a site's pages past it are kept in the state at once and read back a write unit
    at a time (it held every page: ~15 KB a page to the build's end). Same bytes, forked or not."""
    from cernvm_build.site import build as build_mod
    from cernvm_build.site import parallel, sources

    def clean(name: str, jobs: int) -> dict[str, bytes]:
        with monkeypatch.context() as m:
            m.setenv("CERNVM_CACHE_DIR", str(tmp_path / f"cache-{name}"))
            build_site(site, tmp_path / name, jobs=jobs)
        return tree(tmp_path / name)

    monkeypatch.setattr(parallel, "PARALLEL_MIN", 2)  # the shipped site is small: fork anyway
    want = clean("default", 1)
    handed: list[int] = []
    render = build_mod.render_markdown

    def rendering(*a: Any, **kw: Any) -> Any:
        fresh, texts, store = render(*a, **kw)
        held = sum(len(h) for h in fresh.values() if h is not None)
        held += sum(len(t.lead) + sum(len(x) for s in t.sections for x in s[1:]) for t in texts.values())
        handed.append(held)
        assert any(h is None for h in fresh.values())
        return fresh, texts, store

    monkeypatch.setattr(build_mod, "render_markdown", rendering)
    monkeypatch.setattr(sources, "HELD_MAX", 8_000)
    for jobs in (1, 2):
        assert clean(f"held{jobs}", jobs) == want
    assert len(handed) == 2 and all(0 < n <= 8_000 for n in handed), handed
    # a template every page shows edited: the pages are written again from the state's Markdown
    monkeypatch.setattr(build_mod, "render_markdown", render)
    base = site / "templates/base.html"
    base.write_text(base.read_text() + "{# every page is written again #}\n")
    with monkeypatch.context() as m:
        m.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache-held2"))
        assert build_site(site, tmp_path / "held2", jobs=2).rendered > 2
    monkeypatch.setattr(sources, "HELD_MAX", 1 << 26)
    assert tree(tmp_path / "held2") == clean("default2", 1)


def test_copy_of_site_without_templates_is_an_error(site: Path, tmp_path: Path) -> None:
    shutil.rmtree(site / "templates")
    with pytest.raises(BuildError, match="templates"):
        build_site(site, tmp_path / "out")


def test_template_error_names_the_template(site: Path, tmp_path: Path, edit: Edit) -> None:
    edit(site / "templates" / "post.html", "{{ page.date_human }}", "{{ page.no_such_field }}")
    with pytest.raises(BuildError, match="undefined value") as e:
        build_site(site, tmp_path / "out", jobs=2)
    assert "post.html" in str(e.value.where)


def test_add_release_puts_index_and_notes_on_the_site(site: Path, tmp_path: Path) -> None:
    from cernvm_build.site.releases import add_release

    staging = tmp_path / "staging"
    index = write_release(staging, "2026.12-1", "2026-12-01", {"cernvm-el9-2026.12-1.iso": b"x" * 64})
    shutil.copytree(staging / "static" / "dist", site / "static" / "dist")
    (site / "config.yaml").write_text(
        (site / "config.yaml")
        .read_text()
        .replace("https://ecsft.cern.ch/dist/cernvm/{version}/", "/dist/{version}/")
    )
    written = add_release(site, index, notes="First release of the year.\n\n## Changes\n\nMany.")
    assert [p.relative_to(site).as_posix() for p in written] == [
        "data/releases/2026.12-1.json",
        "content/releases/2026.12-1.md",
        "content/docs-2026.12-1",
    ]
    out = tmp_path / "out"
    build_site(site, out)
    page = (out / "releases/2026.12-1/index.html").read_text()
    assert "First release of the year." in page and "cernvm-el9-2026.12-1.iso" in page
    assert "CernVM 2026.12-1" in (out / "atom.xml").read_text()


def test_list_and_tag_pages_show_excerpts_as_html_not_escaped(site: Path, tmp_path: Path) -> None:
    (site / "content/news/2026-12-01-excerpt.md").write_text(
        "---\ntitle: Excerpt\ndate: 2026-12-01\ntags: [probe]\n---\nSee **bold** and `code` here.\n"
    )
    out = tmp_path / "out"
    build_site(site, out)
    for rel in ("news/index.html", "tags/probe/index.html", "index.html"):
        page = (out / rel).read_text()
        assert "<strong>bold</strong>" in page and "<code>code</code>" in page, rel
        assert "&lt;p&gt;" not in page and "&lt;strong&gt;" not in page, rel


def test_raw_html_links_are_checked_and_resolved_by_build(site: Path, tmp_path: Path) -> None:
    page = site / "content" / "docs" / "raw.md"
    page.write_text(
        "---\ntitle: Raw\n---\nText.\n\n"
        '<div class="box">\n<a href="quickstart/client.md#configure">ok</a>\n'
        '<img src="/assets/nothere.png">\n</div>\n\nInline <a href="missing.md">link</a>.\n'
    )
    with pytest.raises(LinkErrors) as e:
        build_site(site, tmp_path / "out")
    assert f"{page}:8: '/assets/nothere.png' is not part of the site" in e.value.problems
    assert f"{page}:11: link to 'docs/missing.md', which is not a page" in e.value.problems
    page.write_text(
        page.read_text()
        .replace('<img src="/assets/nothere.png">\n', "")
        .replace(' <a href="missing.md">link</a>', "")
    )
    build_site(site, tmp_path / "out")
    html = (tmp_path / "out/docs/raw/index.html").read_text()
    assert '<a href="/docs/quickstart/client/#configure">ok</a>' in html


def test_a_link_that_is_not_a_url_is_one_line_per_link(site: Path, tmp_path: Path) -> None:
    """urlsplit refuses ``http://[oops/`` (ValueError): it was a traceback from the build. (A Markdown
    link's is percent-encoded by markdown-it: ``http://%5Bmd/``.)"""
    page = site / "content" / "docs" / "bad.md"
    page.write_text(
        '---\ntitle: Bad\n---\nText [md](http://[md/).\n\n<div>\n<a href="http://[oops/">x</a>\n</div>\n\n'
        'Inline <a href="//[::1">y</a>.\n'
    )
    with pytest.raises(LinkErrors) as e:
        build_site(site, tmp_path / "out")
    assert e.value.problems == [
        f"{page}:7: link 'http://[oops/' is not a URL (fix or escape it)",
        f"{page}:10: link '//[::1' is not a URL (fix or escape it)",
    ]


def test_a_release_keeps_its_docs_version_with_a_switcher(site: Path, tmp_path: Path, edit: Edit) -> None:
    from cernvm_build.site.releases import snapshot_docs

    real_cli = cli_reference.GENERATORS["cli"]
    generators = {**cli_reference.GENERATORS, "cli": lambda: real_cli() + "\n## Commands of release one\n"}
    assert snapshot_docs(site, "2026.12-1", generators) == site / "content/docs-2026.12-1"
    assert snapshot_docs(site, "2026.12-1", generators) is None  # kept once, never overwritten
    frozen_cli = (site / "content/docs-2026.12-1/reference/cli.md").read_text()
    assert "generate:" not in frozen_cli and "## Commands of release one" in frozen_cli
    # the live docs move on: a page only the latest has, and a changed page
    (site / "content/docs/guides/new-guide.md").write_text("---\ntitle: New guide\n---\nNew.\n")
    edit(site / "content/docs/guides/snapshots.md", "Every publish makes", "Each publish makes")
    out = tmp_path / "out"
    build_site(site, out)
    old = (out / "docs-2026.12-1/guides/snapshots/index.html").read_text()
    new = (out / "docs/guides/snapshots/index.html").read_text()
    assert "Every publish makes" in old and "Each publish makes" in new
    # the switcher: the same page in each version, the version's home where the page did not exist
    assert '<option value="/docs/guides/snapshots/">Latest</option>' in old
    assert '<option value="/docs-2026.12-1/guides/snapshots/" selected>2026.12-1</option>' in old
    assert "This is the documentation of release 2026.12-1." in old and "version-note" not in new
    fresh = (out / "docs/guides/new-guide/index.html").read_text()
    assert '<option value="/docs-2026.12-1/">2026.12-1</option>' in fresh
    # an archived page has its own sidebar and is not in the search index
    assert 'href="/docs-2026.12-1/guides/publishing/"' in old and "data-search-body" not in old
    assert (
        'href="/docs/guides/publishing/"' not in old.split('<aside class="sidebar"')[1].split("</aside>")[0]
    )
    assert "data-search-body" in new


def test_the_docs_kept_for_a_release_keep_links_as_links_and_refuse_a_fifo(
    site: Path, tmp_path: Path
) -> None:
    """snapshot_docs copied with shutil.copytree following links (a link's target became a regular
    page of the copy, which the build's link check then never saw) and a FIFO was a shutil traceback."""
    import shutil

    from cernvm_build.site.releases import snapshot_docs

    outside = tmp_path / "outside.md"
    outside.write_text("---\ntitle: Outside\n---\nNot part of the site.\n")
    (site / "content/docs/linked.md").symlink_to(outside)
    dest = snapshot_docs(site, "2026.12-1", {})
    assert dest is not None and (dest / "linked.md").is_symlink()
    assert outside.read_text().endswith("Not part of the site.\n")  # never written through the link
    shutil.rmtree(dest)
    (site / "content/docs/linked.md").unlink()
    os.mkfifo(site / "content/docs/pipe.md")
    with pytest.raises(BuildError, match="not a regular file, folder or link") as e:
        snapshot_docs(site, "2026.12-1", {})
    assert e.value.where == str(site / "content/docs/pipe.md") and not dest.exists()


def test_a_version_folder_with_a_digit_that_is_no_number_builds(site: Path, tmp_path: Path) -> None:
    """A version folder's name matches ARCHIVE with any Unicode digit; '²' is isdigit() but int()
    refuses it: sorting the switcher's versions was a ValueError traceback."""
    for version in ("1.²", "1.2"):
        (site / f"content/docs-{version}").mkdir()
        (site / f"content/docs-{version}/index.md").write_text("---\ntitle: Old\n---\nOld.\n")
    out = tmp_path / "out"
    build_site(site, out)
    page = (out / "docs-1.²/index.html").read_text()
    assert page.index(">Latest</option>") < page.index(">1.²</option>") < page.index(">1.2</option>")


def test_a_failed_index_step_leaves_no_half_site_and_the_next_build_finishes(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Edit
) -> None:
    from cernvm_build.site import search

    real = search.shard_files

    def broken(*a: object, **kw: object) -> object:
        raise BuildError("the index step broke")

    monkeypatch.setattr(search, "shard_files", broken)
    out = tmp_path / "out"
    with pytest.raises(BuildError, match="the index step broke"):
        build_site(site, out)
    assert not out.exists()  # a new folder appears only complete
    monkeypatch.setattr(search, "shard_files", real)
    report = build_site(site, out)
    assert report.markdown_rendered == 0 and report.search_files > 10  # the Markdown was kept
    # into an existing folder whose index is gone: the pages stay, the index is made again
    shutil.rmtree(out / "search-index")
    monkeypatch.setattr(search, "shard_files", broken)
    with pytest.raises(BuildError, match="the index step broke"):
        build_site(site, out)
    assert (out / "index.html").is_file()
    monkeypatch.setattr(search, "shard_files", real)
    report = build_site(site, out)  # nothing else changed, yet the index is made
    assert report.rendered == 0 and report.search_files > 10
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)
    # a page changes and the index step fails: the next build still brings the index up to date
    edit(site / "content/docs/guides/cache.md", "Every object a client reads", "Each object a client reads")
    monkeypatch.setattr(search, "shard_files", broken)
    with pytest.raises(BuildError, match="the index step broke"):
        build_site(site, out)
    monkeypatch.setattr(search, "shard_files", real)
    report = build_site(site, out)
    assert report.rendered == 0 and report.search_files > 0
    assert tree(out) == _clean(site, tmp_path, "clean2", monkeypatch)


def test_search_index_in_shards_one_page_edit_indexes_one_shard(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cernvm_build.site import search

    monkeypatch.setattr(search, "SHARD_FROM", 1)
    monkeypatch.setattr(search, "SHARD_PAGES", 6)  # the real site is one shard; cut it in several
    # odd names are indexed too (a backslash, which browsers read as '/', is refused: test_site_hostile_paths)
    for name in ("a,b.md", "c{d}.md", "e[f]*g.md", "sp ace'q.md"):
        (site / "content/docs/guides" / name).write_text(f"---\ntitle: Odd {name}\n---\nAn odd name.\n")
    out = tmp_path / "out"
    first = build_site(site, out)
    manifest = json.loads((out / "search-index/shards.json").read_text())
    bundles = [s["bundle"] for s in manifest["shards"]]
    assert first.search_shards == len(bundles) > 2 and bundles[0] == ""
    # every page marked for search is in exactly one shard, none twice, no other page
    marked = {rel for rel, blob in tree(out).items() if rel.endswith(".html") and b"data-search-body" in blob}
    urls = [f["u"] for b in bundles for f in fragments(out / "search-index", b)]
    assert sorted(urls) == sorted("/" + rel.removesuffix("index.html") for rel in marked)
    assert {"/docs/guides/e[f]*g/", "/docs/guides/sp ace'q/"} <= set(urls)

    page = site / "content/docs/guides/preservation.md"
    edit(page, "no longer receive security updates", "no longer get security updates")
    report = build_site(site, out)
    assert report.rendered == 1 and report.search_shards == 1
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)
    # a damaged file of one shard: that shard alone is made again
    victim = next((out / "search-index" / bundles[-1] / "b").iterdir())
    victim.write_bytes(b"broken")
    assert build_site(site, out).search_shards == 1
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)
    # a page gone: its shard changes, the others stay
    (site / "content/docs/guides/cache.md").unlink()
    for md in site.rglob("*.md"):
        text = md.read_text()
        if "cache.md" in text:
            md.write_text(text.replace("(cache.md", "(site.md").replace("/cache.md", "/site.md"))
    report = build_site(site, out)
    assert 1 <= report.search_shards < len(bundles)
    assert tree(out) == _clean(site, tmp_path, "clean2", monkeypatch)


def _in_shards(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The site cut into several shards, written in forked workers though it is small; returns the list
    the builds append to: (shards the write step made, shards made again) of each index step."""
    from cernvm_build.site import parallel, search

    monkeypatch.setattr(search, "SHARD_FROM", 1)
    monkeypatch.setattr(search, "SHARD_PAGES", 6)
    monkeypatch.setattr(parallel, "PARALLEL_MIN", 2)
    seen: list[tuple[int, int]] = []
    real = search.update

    def update(*a: Any, built: Any = None, **kw: Any) -> Any:
        got = real(*a, built=built, **kw)
        seen.append((len(built or {}), got.shards if got else 0))
        return got

    monkeypatch.setattr(search, "update", update)
    return seen


def test_shards_made_by_the_page_writers_are_the_index_steps(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new folder's shards are made by the worker that writes their pages (the last ``jobs - 1`` of
    them by the index step, to even out the workers' ends); the files are the same bytes whoever made
    them: with one job (every shard by the page writer), two, or by the index step alone (into an
    existing folder)."""
    seen = _in_shards(monkeypatch)

    def clean(name: str, jobs: int) -> dict[str, bytes]:
        with monkeypatch.context() as m:
            m.setenv("CERNVM_CACHE_DIR", str(tmp_path / f"cache-{name}"))
            build_site(site, tmp_path / name, jobs=jobs)
        return tree(tmp_path / name)

    from cernvm_build.site import search

    two = clean("two", 2)
    made, shards = seen.pop()
    assert shards > 2 and made == shards - 1
    # the workers kept the extracts of the shards they made in the state (they send them back no
    # more): with its index gone, the folder's index is made again from them, no page read back
    shutil.rmtree(tmp_path / "two" / "search-index")
    with monkeypatch.context() as m:
        m.setattr(search, "_extract_file", _not_called)
        m.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache-two"))
        assert build_site(site, tmp_path / "two", jobs=2).rendered == 0
    assert tree(tmp_path / "two") == two and seen.pop() == (0, shards)
    assert clean("one", 1) == two and seen.pop() == (shards, shards)
    # an existing folder: the index step makes them all (there a page that fails to be written must
    # not leave a shard's files changed under the manifest readers use)
    base = site / "templates/base.html"
    base.write_text(base.read_text() + "{# every page is written again #}\n")
    shutil.rmtree(tmp_path / "two" / "search-index")
    build_site(site, tmp_path / "two", jobs=2)
    assert seen.pop() == (0, shards)
    assert tree(tmp_path / "two") == clean("again", 2)


def test_a_page_failing_in_a_shard_worker_names_its_template(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Edit
) -> None:
    seen = _in_shards(monkeypatch)
    edit(site / "templates" / "doc.html", "{{ page.title }}", "{{ page.no_such_field }}")
    with pytest.raises(BuildError, match="undefined value") as e:
        build_site(site, tmp_path / "out", jobs=2)
    assert "doc.html" in str(e.value.where) and not (tmp_path / "out").exists() and seen == []


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_write_step_stops_at_the_first_page_that_fails(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Edit, jobs: int
) -> None:
    """Every page was rendered after one had failed (each unit went on, and so did the other units):
    a template error every page meets cost every page's time (a template including itself, pr25a 8).
    Now no output is started once one failed, in this process or a forked one (at most one each that
    had started already), and the error reported is as before."""
    from cernvm_build.site import templates

    _in_shards(monkeypatch)  # forked workers, several units
    edit(site / "templates" / "doc.html", "{{ page.title }}", "{{ page.no_such_field }}")
    log = tmp_path / "rendered"
    real = templates.Environment.render

    def render(self: templates.Environment, name: str, ctx: dict[str, Any]) -> str:
        with open(log, "a") as f:  # one write each, appended: seen from every process
            f.write(f"{name} {os.getpid()}\n")
        if name == "doc.html" and log.read_text().count("doc.html") == 1:
            # the first page (written before the fork) renders: the failure comes in the workers
            ctx = {**ctx, "page": {**ctx["page"], "no_such_field": ""}}
        return real(self, name, ctx)

    monkeypatch.setattr(templates.Environment, "render", render)
    with pytest.raises(BuildError, match="undefined value") as e:
        build_site(site, tmp_path / "out", jobs=jobs)
    assert "doc.html" in str(e.value.where)
    docs = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("doc.html")]
    assert 2 <= len(docs) <= 1 + jobs


def test_the_index_step_reads_back_only_pages_whose_extract_is_not_kept(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's search extract is made as the page is written (its HTML at hand), so neither a clean
    build nor a one-page edit reads a page back; a page whose extract the state lacks (here: a new
    extract format) is read from the output and gives the same index files. A page rendered in the
    build has its Markdown's text from the Markdown stage (``ContentText``), the others are read whole."""
    from cernvm_build.site import search

    read: list[str] = []
    real = search._extract_file
    given: list[bool] = []  # per page extract: its Markdown's text given
    scan = search.sections

    def counted(shared: tuple[Path, str], out: str) -> tuple[bytes, bytes]:
        read.append(out)  # jobs=1: the index step runs in this process
        return real(shared, out)

    def sections(page: str, content: Any = None) -> Any:
        given.append(content is not None)
        return scan(page, content)

    monkeypatch.setattr(search, "_extract_file", counted)
    monkeypatch.setattr(search, "sections", sections)
    out = tmp_path / "out"
    build_site(site, out, jobs=1)
    assert sum(given) > 15
    given.clear()
    edit(site / "content/docs/guides/snapshots.md", "Every publish makes", "Each publish makes")
    assert build_site(site, out, jobs=1).search_shards == 1
    assert read == [] and given == [True]
    given.clear()

    def index() -> dict[str, bytes]:  # the manifest names the format in its shards' keys
        return {r: b for r, b in tree(out).items() if r.startswith(search.PREFIX) and r != search.MANIFEST}

    before = index()
    # a new index (an extract's content included, review r10c 2): every page read back, every shard made
    monkeypatch.setattr(search, "VERSION", "a new format")
    assert build_site(site, out, jobs=1).rendered == 0
    marked = {rel for rel, blob in tree(out).items() if rel.endswith(".html") and b"data-search-body" in blob}
    assert sorted(read) == sorted(marked) and index() == before and not any(given)
    read.clear()
    # a new extract format alone: the index files are current, no page is read
    monkeypatch.setattr(search, "EXTRACT_VERSION", "a new extract format")
    assert build_site(site, out, jobs=1).search_shards == 0 and read == []


def test_highlighted_code_is_kept_between_builds(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cernvm_build.site import markdown

    out = tmp_path / "out"
    build_site(site, out)
    lexed: list[str] = []
    real = markdown._highlighted.__wrapped__

    def counting(lang: str, code: str) -> str:
        lexed.append(code)
        return real(lang, code)

    monkeypatch.setattr(markdown, "_highlighted", counting)
    page = site / "content/docs/guides/preservation.md"
    # prose changed, code blocks not: they come from the state, nothing is lexed
    edit(page, "no longer receive security updates", "no longer get security updates")
    report = build_site(site, out, jobs=1)
    assert report.markdown_rendered == 1 and lexed == []
    # one block changed: that block alone is lexed
    edit(page, "cernvm-build container el6 --format apptainer", "cernvm-build container el6 --format docker")
    assert build_site(site, out, jobs=1).markdown_rendered == 1
    assert lexed == ["$ cernvm-build container el6 --format docker\n"]
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)


def _built_then_counting_md_opens(
    site: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], Callable[[], None]]:
    """Build ``site`` into ``out`` (every stat settled at once), then record each Markdown file opened:
    the list and what puts ``open`` back."""
    import builtins

    from cernvm_build.site import sources

    monkeypatch.setattr(sources, "SETTLED_NS", 0)  # every stat counts as settled at once
    build_site(site, out)
    real_open = builtins.open
    opened: list[str] = []

    def counting(file: Any, *args: Any, **kw: Any) -> Any:
        if str(file).endswith(".md"):
            opened.append(str(file))
        return real_open(file, *args, **kw)

    real_read = sources._read_source  # how the scan reads a source (os.open, not ``open``)

    def counting_reads(full: str, size: int, limit: int | None = None) -> bytes:
        opened.append(full)
        return real_read(full, size, limit)

    monkeypatch.setattr(builtins, "open", counting)
    monkeypatch.setattr(sources, "_read_source", counting_reads)

    def restore() -> None:
        monkeypatch.setattr(builtins, "open", real_open)
        monkeypatch.setattr(sources, "_read_source", real_read)

    return opened, restore


def test_unchanged_sources_are_not_read_and_an_edit_keeping_size_and_mtime_is_seen(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    opened, restore_open = _built_then_counting_md_opens(site, out, monkeypatch)
    page = site / "content/docs/guides/preservation.md"
    assert build_site(site, out, jobs=1).markdown_rendered == 0
    assert opened == []  # no Markdown file was read: their stat was the recorded one
    # same size, mtime put back: the stat still differs (ctime), so the page is read and rendered
    before = page.stat()
    text = page.read_text()
    assert "receive security" in text
    page.write_text(text.replace("receive security", "obtain  security", 1))
    os.utime(page, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert page.stat().st_size == before.st_size and page.stat().st_mtime_ns == before.st_mtime_ns
    report = build_site(site, out, jobs=1)
    assert report.markdown_rendered == 1 and set(opened) == {str(page)}
    restore_open()
    assert b"obtain  security" in (out / "docs/guides/preservation/index.html").read_bytes()
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)


def _same_size_and_mtime(path: Path, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (as long) in ``path`` and put its mtime back, as ``cp -p`` could."""
    before = path.stat()
    blob = path.read_bytes()
    assert len(old) == len(new) and old in blob
    path.write_bytes(blob.replace(old, new, 1))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns


def test_assets_and_served_release_files_are_hashed_again_only_when_their_stat_changed(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cernvm_build.fsutil import sha256_file
    from cernvm_build.site import filedigest, links, plan

    monkeypatch.setattr(filedigest, "SETTLED_NS", 0)  # every stat counts as settled at once
    write_release(site, "2026.11-1", "2026-11-20", {"cernvm-el9-2026.11-1.iso": b"iso image"})
    iso = site / "static/dist/2026.11-1/cernvm-el9-2026.11-1.iso"
    css = site / "static/assets/site.css"
    out = tmp_path / "out"
    build_site(site, out)
    hashed: list[str] = []

    def counting(path: Path) -> str:
        hashed.append(Path(path).name)
        return sha256_file(path)

    for module in (links, plan):
        monkeypatch.setattr(module, "sha256_file", counting)
    monkeypatch.setattr(filedigest, "_sha256", counting)  # (it reads regular files only)
    build_site(site, out)
    assert hashed == []  # neither the assets nor the release file were read: their stat was recorded
    # same size, mtime put back: the stat still differs (ctime), so the asset is hashed again, its
    # URL's version changes on every page and its copy is written
    old_html = (out / "index.html").read_text()
    _same_size_and_mtime(css, b"{", b"{")  # the same bytes: hashed again, nothing else changes
    build_site(site, out)
    assert hashed == ["site.css"] and (out / "index.html").read_text() == old_html
    hashed.clear()
    _same_size_and_mtime(css, b"color", b"COLOR")
    build_site(site, out)
    assert hashed == ["site.css"]
    assert (out / "assets/site.css").read_bytes() == css.read_bytes()
    assert (out / "index.html").read_text() != old_html
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)
    # a served release file replaced with the same size and mtime still fails its check
    _same_size_and_mtime(iso, b"image", b"imagX")
    with pytest.raises(BuildError, match="does not match the size/sha256"):
        build_site(site, out)


def test_the_builders_code_is_hashed_again_only_when_its_stat_changed(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every source key and fingerprint names the builder's code (``plan_code``, ``render_version``,
    ``code_salt``): each build's process read and hashed its ~40 files (~4 % of a one-page rebuild's
    instructions). Their digests are the state's while their stat is the one recorded (``filedigest``)."""
    from cernvm_build.site import filedigest, markdown, model, plan, sources

    monkeypatch.setattr(filedigest, "SETTLED_NS", 0)  # every stat counts as settled at once
    out = tmp_path / "out"
    build_site(site, out)
    # as a new process does: nothing of the code's digests known
    monkeypatch.setattr(model, "_CODE_SHA", {}, raising=False)
    monkeypatch.setattr(sources, "_VERSION", [])
    plan.plan_code.cache_clear()
    markdown.code_salt.cache_clear()
    here = Path(model.__file__).parent
    real = Path.read_bytes
    read: list[str] = []

    def reading(self: Path) -> bytes:
        if self.parent == here:
            read.append(self.name)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", reading)
    page = sorted((site / "content").rglob("*.md"))[-1]
    page.write_text(page.read_text() + "\nEdited.\n")
    report = build_site(site, out)
    assert read == [] and report.markdown_rendered == 1
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)


#: a build in a new process (a rebuild as ``site build`` runs it), then the Pygments modules it imported
_FRESH_BUILD = (
    "import sys; from pathlib import Path; from cernvm_build.cli.reference import GENERATORS; "
    "from cernvm_build.site.build import build_site; "
    "r = build_site(Path(sys.argv[1]), Path(sys.argv[2]), generators=GENERATORS, jobs=1); "
    "print(r.markdown_rendered, ' '.join(sorted(m for m in sys.modules if m.startswith('pygments.'))))"
)


def test_a_rebuild_whose_code_blocks_are_known_does_not_load_pygments(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    def fresh_build() -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-c", _FRESH_BUILD, str(site), str(out)],
            capture_output=True,
            text=True,
            check=True,
        )
        return proc.stdout.split()

    out = tmp_path / "out"
    assert fresh_build()[1:] != []  # the first build highlights: Pygments is loaded
    page = site / "content/docs/guides/preservation.md"
    # prose changed: its blocks and the stylesheet come from the state, Pygments is never imported
    edit(page, "no longer receive security updates", "no longer get security updates")
    assert fresh_build() == ["1"]
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)
    # a new block is lexed: Pygments is loaded then, and the output is still a clean build's
    edit(page, "cernvm-build container el6 --format apptainer", "cernvm-build container el6 --format docker")
    assert fresh_build()[1:] != []
    assert tree(out) == _clean(site, tmp_path, "clean2", monkeypatch)


def test_an_edit_other_pages_do_not_show_plans_its_page_alone(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild plans (makes the template context of) only the pages whose own text changed when
    nothing other pages show of them changed: no title, heading id, listed excerpt, front matter.
    Anything else plans every page again; either way the output is a clean build's."""
    out = tmp_path / "out"
    first = build_site(site, out)
    assert first.pages_planned == first.pages > 50
    assert build_site(site, out).pages_planned == 0  # nothing changed
    page = site / "content/docs/guides/preservation.md"
    edit(page, "no longer receive security updates", "no longer get security updates")
    report = build_site(site, out)
    assert (report.pages_planned, report.rendered, report.markdown_rendered) == (1, 1, 1)
    # the excerpt of a page no list shows (no date, no tags): its page alone
    edit(site / "content/docs/quickstart/_index.md", "Three ten-minute paths:", "Three short paths:")
    assert build_site(site, out).pages_planned == 1
    assert tree(out) == _clean(site, tmp_path, "clean1", monkeypatch)
    # the excerpt of a tagged page is on its tag pages: all planned, the tag pages written too
    edit(page, "Experiments stop, but", "Experiments end, but")
    report = build_site(site, out)
    assert report.pages_planned == report.pages and report.rendered == 1 + 5
    # a link added: the edited page's links are checked, and a broken one fails the build
    edit(page, "## The idea", "See [the alien cache](cache.md#alien-cache).\n\n## The idea")
    assert build_site(site, out).pages_planned == 1
    edit(page, "cache.md#alien-cache", "cache.md#no-such-heading")
    with pytest.raises(LinkErrors, match=r"preservation\.md:.*no heading '#no-such-heading'"):
        build_site(site, out)
    edit(page, "cache.md#no-such-heading", "cache.md#alien-cache")
    # a heading another page links to: every page is planned again and that link is checked
    edit(site / "content/docs/guides/cache.md", "## Alien cache", "## Caches on shared storage")
    with pytest.raises(LinkErrors, match=r"preservation\.md:.*no heading '#alien-cache'"):
        build_site(site, out)
    edit(site / "content/docs/guides/cache.md", "## Caches on shared storage", "## Alien cache")
    # back as the last complete build had it (the failed builds wrote nothing): nothing to plan
    assert build_site(site, out).pages_planned == 0
    assert tree(out) == _clean(site, tmp_path, "clean2", monkeypatch)


def test_a_builder_that_builds_again_writes_a_clean_builds_bytes_after_every_kind_of_edit(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One ``Builder`` building again after each edit (as ``site serve`` does: it keeps what it can of
    its last build: the page set and navigation, the search shards' postings as merged), the index
    in several shards: a body edit,
    two pages of a shard, a title (every page's sidebar), a tag (tag pages), a page deleted, one
    renamed, a template, the configuration, and another builder's build in between. Each time the
    output is a clean build's."""
    from cernvm_build.site import search

    monkeypatch.setattr(search, "SHARD_FROM", 1)
    monkeypatch.setattr(search, "SHARD_PAGES", 10)
    out = tmp_path / "out"
    builder = Builder(site, out)
    assert builder.build().search_shards > 3
    guides = site / "content/docs/guides"
    steps: list[Callable[[], None]] = [
        lambda: edit(guides / "preservation.md", "no longer receive", "no longer get"),
        lambda: (
            edit(guides / "cache.md", "## Alien cache", "## Alien cache\n\nZebras graze.\n"),
            edit(guides / "clouds.md", "## Pick the format", "## Pick the format\n\nQuokkas too.\n"),
        ),
        lambda: edit(guides / "clouds.md", "title: CernVM in clouds", "title: CernVM on clouds"),
        lambda: edit(guides / "seeds.md", "tags: [cernvm, launch, cache]", "tags: [cernvm, launch, seed]"),
        lambda: (
            (guides / "debugging.md").unlink(),
            edit(guides / "_index.md", "- [Debugging a client](debugging.md)", "- Debugging a client"),
        ),
        lambda: (
            (guides / "seeds.md").rename(guides / "warm-disks.md"),
            edit(guides / "_index.md", "(seeds.md)", "(warm-disks.md)"),
            edit(site / "content/docs/quickstart/launch.md", "guides/seeds.md", "guides/warm-disks.md"),
        ),
        lambda: edit(site / "templates/base.html", "Built by <code>", "Made by <code>"),
        lambda: edit(site / "config.yaml", "title: CernVM-FS and CernVM", "title: CernVM-FS & CernVM"),
        lambda: edit(guides / "preservation.md", "no longer get", "no longer receive"),
        lambda: edit(guides / "cache.md", "\n\nZebras graze.\n", ""),  # the page's word gone again
        # back as the build before last had it: that version's rows were pruned by the last build
        lambda: edit(guides / "cache.md", "## Alien cache", "## Alien cache\n\nZebras graze.\n"),
    ]
    for i, step in enumerate(steps):
        step()
        builder.build()
        assert tree(out) == _clean(site, tmp_path, f"clean{i}", monkeypatch), f"step {i}"
    # another builder (another process) built a title change in between: what this one kept of its
    # last build is not that build's
    edit(guides / "clouds.md", "title: CernVM on clouds", "title: CernVM in the clouds")
    build_site(site, out)
    edit(guides / "preservation.md", "no longer receive", "no longer get")
    builder.build()
    assert tree(out) == _clean(site, tmp_path, "clean-other", monkeypatch)
    # its state deleted (a cache): the pages rendered again, none taken from what it kept
    for state in builder.cache_dir.glob("state.sqlite*"):
        state.unlink()
    edit(guides / "preservation.md", "no longer get", "no longer receive")
    assert builder.build().markdown_rendered == len(list((site / "content").rglob("*.md")))
    assert tree(out) == _clean(site, tmp_path, "clean-gone", monkeypatch)


def test_a_rebuild_planning_edited_pages_alone_makes_the_feed_again_only_where_it_shows_them(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild that plans the edited pages alone takes the sitemap and robots.txt as the last build
    planned them (they show only what other pages see of a page), and the feed too unless it shows an
    edited page's content; one changed on disk is made again. The output is a clean build's."""
    out = tmp_path / "out"
    build_site(site, out)
    feed, sitemap, robots = out / "atom.xml", out / "sitemap.xml", out / "robots.txt"

    def mtimes() -> list[int]:
        return [p.stat().st_mtime_ns for p in (feed, sitemap, robots)]

    before = mtimes()
    preservation = site / "content/docs/guides/preservation.md"
    edit(preservation, "no longer receive security updates", "no longer get security updates")
    report = build_site(site, out)
    assert (report.pages_planned, report.rendered) == (1, 1)
    assert mtimes() == before
    # a news page's body past its excerpt: the feed shows that content, the lists do not
    news = site / "content/news/2026-11-25-site-from-data.md"
    edit(news, "three links had\ndrifted", "three links had\nrotted")
    report = build_site(site, out)
    assert (report.pages_planned, report.rendered) == (1, 2)
    assert b"rotted" in feed.read_bytes()
    assert mtimes()[1:] == before[1:]
    assert tree(out) == _clean(site, tmp_path, "clean1", monkeypatch)
    # the feed, the sitemap and robots.txt changed by hand: made again
    feed.write_bytes(b"tampered")
    sitemap.write_bytes(sitemap.read_bytes() + b" ")
    robots.unlink()
    edit(preservation, "no longer get security updates", "no longer receive security updates")
    report = build_site(site, out)
    assert (report.pages_planned, report.rendered) == (1, 4)
    assert tree(out) == _clean(site, tmp_path, "clean2", monkeypatch)


def test_a_rebuild_planning_one_page_reads_the_whole_metadata_of_that_page_alone(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every page's head (front matter, title, description) is read by every build, the rest of its
    rendered metadata (TOC, heading ids, links, excerpt) by a rebuild that plans the edited pages alone
    only for the pages it uses, and in one query by one that plans them all; both write a clean
    build's bytes, and a link to another page's heading is checked against that page's ids."""
    out = tmp_path / "out"
    assert build_site(site, out).pages > 50
    read: list[str] = []
    whole = State.md_meta_of
    monkeypatch.setattr(State, "md_meta_of", lambda self, key: read.append(key) or whole(self, key))
    page = site / "content/docs/guides/preservation.md"
    edit(page, "no longer receive security updates", "no longer get security updates")
    assert build_site(site, out).pages_planned == 1
    # the former version's (``plan.public`` compared) alone: the feed, which does not show the page,
    # is the last build's (the feed's pages' excerpts are not read)
    assert len(read) == 1
    first = len(read)
    edit(page, "## The idea", "See [the alien cache](cache.md#alien-cache).\n\n## The idea")
    read.clear()
    assert build_site(site, out).pages_planned == 1
    assert len(read) == first + 1  # and the page its link names (its heading ids)
    edit(page, "cache.md#alien-cache", "cache.md#no-such-heading")
    with pytest.raises(LinkErrors, match=r"preservation\.md:.*no heading '#no-such-heading'"):
        build_site(site, out)
    edit(page, "cache.md#no-such-heading", "cache.md#alien-cache")
    # a new title: shown by other pages, every page planned, every page's metadata read in one query
    edit(page, "title: Preserving EL4–EL6 environments", "title: Preserving old environments")
    read.clear()
    report = build_site(site, out)
    assert report.pages_planned == report.pages and len(read) == 1  # the former version's alone
    # a body edited and a template changed: the last plan is of other templates (its digest), every
    # page planned after all, their metadata read in one query too
    edit(page, "no longer get security updates", "no longer receive security updates")
    template = site / "templates/base.html"
    template.write_text(template.read_text() + "\n")
    read.clear()
    report = build_site(site, out)
    assert report.pages_planned == report.pages and len(read) == 1
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)


def test_a_rebuild_planning_only_edited_pages_restores_what_was_changed_in_the_output(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    build_site(site, out)
    # another page's output changed by hand: its context is not at hand, every page is planned
    other = out / "docs/guides/cache/index.html"
    other.write_bytes(other.read_bytes().replace(b"Alien cache", b"Tampered"))
    edit(site / "content/docs/guides/preservation.md", "no longer receive", "no longer get")
    report = build_site(site, out)
    assert report.pages_planned == report.pages and report.rendered == 2
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)


def test_an_interrupted_rebuild_of_one_page_is_not_trusted_by_the_next(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild interrupted after it wrote an edited page, then the edit undone: the next build must
    not take the page on disk (the edited one, recorded as written) for the page of the last complete
    build, whose source it has again."""
    from cernvm_build.site import search

    out = tmp_path / "out"
    build_site(site, out)
    page = site / "content/docs/guides/preservation.md"
    before = page.read_text()
    edit(page, "no longer receive security updates", "no longer get security updates")

    def interrupted(*args: Any, **kw: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(search, "update", interrupted)  # after the pages are written
        build_site(site, out)
    assert b"no longer get security" in (out / "docs/guides/preservation/index.html").read_bytes()
    page.write_text(before)
    build_site(site, out)
    assert b"no longer receive security" in (out / "docs/guides/preservation/index.html").read_bytes()
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)


def test_strays_are_found_in_folders_unchanged_since_they_were_recorded(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk for strays lists only the output's folders whose ctime moved since the state recorded
    it: junk added to any folder, however deep, changes that folder's ctime and is found."""
    from cernvm_build.site import output, write

    monkeypatch.setattr(output, "SETTLED_NS", 0)  # every folder's ctime is trusted at once
    listed: list[list[str]] = []
    real = write.files_in_changed_folders

    def spy(top: Path, skip: str, known: Any) -> Any:
        got = real(top, skip, known)
        listed.append(got[2])
        return got

    monkeypatch.setattr(write, "files_in_changed_folders", spy)
    out = tmp_path / "out"
    build_site(site, out)
    assert listed == []  # a new folder holds what the build wrote: its folders are the outputs', unwalked
    build_site(site, out)
    build_site(site, out)
    # the first build recorded every folder (a folder it left out would be listed here); its folder
    # was renamed into place (its top changed), then nothing changed
    assert listed == [[""], []]
    folders = sum(1 for p in out.rglob("*") if p.is_dir() and "search-index" not in p.parts)
    assert folders > 50
    (out / "docs/guides/cache/stray.html").write_text("junk")
    (out / "docs/guides/empty").mkdir()
    (out / "docs/reference/cli/junk").mkdir()
    (out / "docs/reference/cli/junk/deeper.html").write_text("junk")
    build_site(site, out)
    assert sorted(listed[-1]) == [
        "docs/guides",
        "docs/guides/cache",
        "docs/guides/empty",
        "docs/reference/cli",
        "docs/reference/cli/junk",
    ]
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)
    assert not (out / "docs/guides/empty").exists() and not (out / "docs/reference/cli/junk").exists()


def test_strays_in_the_search_index_folder_go_though_nothing_is_stale(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed run's temporary (``atomic_file``'s) or any file left in search-index/ was removed only
    when the index changed again: with nothing stale the index step returned first, and the walk for
    strays leaves that folder to it (rv24 5). Now the folders there whose ctime moved are listed, by a
    no-change build as by one that writes other outputs, and no other build lists them."""
    from cernvm_build.site import output, search

    monkeypatch.setattr(output, "SETTLED_NS", 0)  # every folder's ctime is trusted at once
    listed: list[list[str]] = []
    real = search.files_in_changed_folders

    def spy(top: Path, skip: str, known: Any) -> Any:
        got = real(top, skip, known)
        listed.append(got[2])
        return got

    monkeypatch.setattr(search, "files_in_changed_folders", spy)
    out = tmp_path / "out"
    build_site(site, out)
    build_site(site, out)
    build_site(site, out)
    assert listed[-2:] == [[], []]  # recorded as left: nothing listed
    index = out / "search-index"
    (index / ".shards.json.4242.0.tmp").write_text("{")
    (index / "b" / "junk").write_text("junk")
    (index / "lost").mkdir()
    (index / "lost" / "deeper").write_text("junk")
    assert build_site(site, out).rendered == 0  # the no-change build
    assert sorted(listed[-1]) == ["", "b", "lost"]
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)
    # a build that writes other outputs, the index current
    (index / "f" / ".x.json.4242.1.tmp").write_text("{")
    (site / "static" / "new.txt").write_text("new")
    build_site(site, out)
    assert listed[-1] == ["f"] and not (index / "f" / ".x.json.4242.1.tmp").exists()
    build_site(site, out)
    assert listed[-1] == []
    assert tree(out) == _clean(site, tmp_path, "clean2", monkeypatch)


def test_prune_emptied_removes_the_folders_a_removal_emptied_and_only_those(tmp_path: Path) -> None:
    from cernvm_build.site.output import prune_emptied

    for rel in ("a/b/c.html", "a/b2/c.html", "a/d.html", "e/f/g.html", "h/i.html"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "before").mkdir()  # empty before: left unless the listing said so
    removed = ["a/b/c.html", "a/b2/c.html", "e/f/g.html"]
    for rel in removed:
        (tmp_path / rel).unlink()
    prune_emptied(tmp_path, removed, empty=False)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "a",
        "a/d.html",
        "before",
        "h",
        "h/i.html",
    ]
    prune_emptied(tmp_path, [], empty=True)
    assert not (tmp_path / "before").exists() and (tmp_path / "h/i.html").exists()


def test_a_forked_write_worker_keeps_extracts_through_a_connection_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write worker keeps its shards' extracts itself (``State.put_search_extracts`` in a forked
    process): the parent reads them back; while the parent holds the write lock the worker waits
    (here shortened) and, past its wait, raises ``sqlite3.Error`` — what ``write._do_unit`` falls back
    on (the extracts then go back to the parent)."""
    import sqlite3

    from cernvm_build.site import cache

    state = State(tmp_path / "state.db")
    assert cache.connect(state.path).execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL, as WAL allows

    def in_child(rows: list[tuple[str, bytes, bytes]]) -> str:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                state.put_search_extracts(rows)
            except sqlite3.Error:
                code = 3
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        return {0: "kept", 3: "busy"}.get(os.waitstatus_to_exitcode(status), "failed")

    assert in_child([("k1", b"frag", b"post")]) == "kept"
    assert state.search_extracts({"k1"}) == {"k1": (b"frag", b"post")}
    monkeypatch.setattr(cache, "BUSY_TIMEOUT_S", 0.2)
    state.db.execute("BEGIN IMMEDIATE")
    try:
        assert in_child([("k2", b"f", b"p")]) == "busy"
    finally:
        state.db.execute("ROLLBACK")
    assert state.search_extracts({"k2"}) == {}


def test_the_templates_the_pages_use_are_compiled_while_the_markdown_renders(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a render step that forks, the templates of the pages' likely layouts (and what they extend
    or include) are compiled meanwhile, not in the write step's serial preamble; a guess that misses
    or a template that does not compile changes nothing but where it is compiled."""
    from cernvm_build.site import build as build_mod
    from cernvm_build.site import pages, write
    from cernvm_build.site import templates as tpl_mod

    first: dict[str, str] = {}  # template -> the step that compiled it first
    step = ["render"]
    real_get, real_execute = tpl_mod.Environment.get, write.execute

    def get(self: tpl_mod.Environment, name: str) -> Any:
        first.setdefault(name, step[0])
        return real_get(self, name)

    def execute(*args: Any, **kw: Any) -> Any:
        step[0] = "write"
        return real_execute(*args, **kw)

    monkeypatch.setattr(tpl_mod.Environment, "get", get)
    monkeypatch.setattr(write, "execute", execute)
    monkeypatch.setattr(build_mod, "PARALLEL_MIN", 8)  # the site's 39 sources: a render step that forks
    build_site(site, tmp_path / "out", jobs=2)
    assert len(first) > 15 and {n for n, s in first.items() if s == "write"} == set()
    # a layout the scan cannot see (a page's front matter without a layout line): compiled in the write
    # step as before, and the output is a clean build's
    (site / "templates/odd.html").write_text('{% extends "base.html" %}')
    (site / "content/docs/odd.md").write_text("---\ntitle: Odd\nlayout: >-\n  odd\n---\nText.\n")
    (site / "templates/broken.html").write_text("{% if %}")  # used by no page
    # a guessed layout no page uses, which does not compile: left meanwhile, the build goes on
    (site / "templates/ghost.html").write_text("{% if %}")
    real_likely = pages.likely_layouts
    monkeypatch.setattr(pages, "likely_layouts", lambda *a: {*real_likely(*a), "ghost"})
    first.clear()
    step[0] = "render"
    build_site(site, tmp_path / "out2", jobs=2)
    assert first["odd.html"] == "write" and first["doc.html"] == "render" and "broken.html" not in first
    assert first["ghost.html"] == "render"
    assert b"<html" in (tmp_path / "out2/docs/odd/index.html").read_bytes()
    # a used template that does not compile: left meanwhile, reported where the pages use it
    (site / "templates/doc.html").write_text("{% if %}")
    step[0] = "render"
    with pytest.raises(BuildError, match="template syntax error") as err:
        build_site(site, tmp_path / "out3", jobs=2)
    assert str(err.value.where).endswith("doc.html:1") and step[0] == "write"  # (not raised meanwhile)


def test_a_template_edited_while_the_markdown_renders_is_the_one_written(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """doc.html compiled while the Markdown renders and saved again before the render step ends: the
    pages are written with the new template the build hashed (not the one compiled early, which the
    next build would keep as current)."""
    from cernvm_build.site import build as build_mod

    real_warm = build_mod._warm_templates
    doc = site / "templates/doc.html"
    edited: list[bool] = []

    def warm_then_edit(*args: Any) -> None:
        real_warm(*args)
        doc.write_text(doc.read_text().replace('<div class="doc-grid">', '<div class="doc-grid" data-new>'))
        mtime = doc.stat().st_mtime_ns + 2_000_000_000  # (jinja2 compares the file's mtime)
        os.utime(doc, ns=(mtime, mtime))
        edited.append(True)

    monkeypatch.setattr(build_mod, "_warm_templates", warm_then_edit)
    monkeypatch.setattr(build_mod, "PARALLEL_MIN", 8)  # the site's 39 sources: a render step that forks
    out = tmp_path / "out"
    build_site(site, out, jobs=2)
    assert edited == [True]
    page = (out / "docs/index.html").read_text()
    assert "data-new" in page
    again = build_site(site, out, jobs=2)
    assert again.rendered == 0 and (out / "docs/index.html").read_text() == page


def test_the_scan_reads_layout_lines_from_front_matter_only(tmp_path: Path) -> None:
    from cernvm_build.site.sources import scan

    content = tmp_path / "content"
    (content / "news").mkdir(parents=True)
    (content / "a.md").write_text("---\ntitle: A\nlayout: 'home'\n---\nlayout: no\n")
    (content / "news/b.md").write_text("---\ntitle: B\n---\n\nlayout: post\n")
    (content / "c.md").write_text("layout: page\n")  # no front matter
    found = scan(tmp_path)
    assert found.layouts == {"a.md": "home"} and not found.tagged
    (content / "c.md").write_text("---\ntitle: C\ntags:\n  - x\n---\n")
    assert scan(tmp_path).tagged


def test_likely_layouts_are_those_make_pages_gives(site: Path) -> None:
    from cernvm_build.site import config as config_mod
    from cernvm_build.site.pages import likely_layouts, make_pages

    cfg = config_mod.load(site)
    rels = ["index.md", "docs/_index.md", "docs/a.md", "news/2024-01-01-x.md", "about.md"]
    tagged = "news/2024-01-01-x.md"
    files = {rel: str(site / "content" / rel) for rel in rels}
    metas = {rel: {"fm": {"title": rel, "date": "2024-01-01"}, "h1": "", "summary": ""} for rel in rels}
    metas["about.md"]["fm"]["layout"] = "context"
    metas[tagged]["fm"]["tags"] = ["x"]
    pageset = make_pages(cfg, files, {rel: rel for rel in rels}, metas, {})
    made = {p.layout for p in pageset.pages}
    assert likely_layouts(cfg, rels, {"about.md": "context"}, tagged=True) == made
    assert "tags" in made and "tags" not in likely_layouts(cfg, rels, {"about.md": "context"})


def test_a_touched_source_is_read_once_and_nothing_is_written(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source whose stat moved but whose bytes did not (``touch``, a checkout): read and hashed again,
    found the same (nothing rendered or written), its new stat recorded, so the next build reads nothing."""
    out = tmp_path / "out"
    opened, restore_open = _built_then_counting_md_opens(site, out, monkeypatch)
    page = site / "content/docs/guides/preservation.md"
    mtime = page.stat().st_mtime_ns + 5_000_000_000
    os.utime(page, ns=(mtime, mtime))
    report = build_site(site, out, jobs=1)
    assert opened == [str(page)]
    assert (report.markdown_rendered, report.rendered, report.search_files) == (0, 0, 0)
    opened.clear()
    assert build_site(site, out, jobs=1).rendered == 0 and opened == []
    restore_open()
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)


def test_a_one_page_rebuild_records_only_the_index_rows_that_changed(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index step's rows of files left as recorded are not written again (they were most of a
    one-page rebuild's state writes); the rows this build dropped (the manifest's) are. Every output on
    disk stays recorded as it is, so the next build finds nothing changed. Files named by their content
    are not hashed again for their rows."""
    from cernvm_build.site import search

    out = tmp_path / "out"
    build_site(site, out)
    state = State(next((tmp_path / "cache").rglob("state.sqlite")))
    before = state.outputs()
    index_files = [rel for rel in before if rel.startswith(search.PREFIX)]
    put: list[list[tuple[str, str, int, int]]] = []
    real = State.put_outputs

    def spy(self: State, rows: list[tuple[str, str, int, int]], removed: list[str]) -> None:
        put.append(list(rows))
        real(self, rows, removed)

    monkeypatch.setattr(State, "put_outputs", spy)
    hashed: list[bytes] = []  # the bytes of index files hashed to compare with their rows
    real_sha = search.sha

    def sha_spy(*parts: bytes | str) -> str:
        if parts[0] == "bytes" and isinstance(parts[1], bytes):
            hashed.append(parts[1])
        return real_sha(*parts)

    monkeypatch.setattr(search, "sha", sha_spy)
    edit(site / "content/docs/guides/preservation.md", "no longer receive", "no longer get")
    report = build_site(site, out)
    assert report.pages_planned == 1 and report.search_shards == 1
    # a bucket or fragments file is named by its bytes' hash: not hashed a second time for its row
    named = {p.read_bytes() for p in out.glob(search.PREFIX + "[bf]/*.json")}
    assert named and hashed and not named & set(hashed)
    rows = [r for batch in put for r in batch if r[0].startswith(search.PREFIX)]
    assert search.MANIFEST in {r[0] for r in rows}
    assert all(before.get(r[0]) != r[1:] for r in rows) and len(rows) < len(index_files)
    assert _recorded(state) == _on_disk(out)
    assert build_site(site, out).rendered == 0
    # a page written (its HTML: the manifest's row dropped) that the index leaves out, and an index file
    # lost: the shard is made again, the manifest's bytes stay and its row is written again
    next(out.glob(search.PREFIX + "b/*.json")).unlink()
    edit(site / "content/index.md", "change\ndaily", "change\nevery day")
    report = build_site(site, out)
    assert (report.rendered, report.search_shards) == (1, 1)
    assert search.MANIFEST in state.outputs()
    assert _recorded(state) == _on_disk(out)


def _recorded(state: State) -> dict[str, tuple[int, int]]:
    """Each output's size and mtime as the state records them."""
    return {rel: (size, mtime) for rel, (_fp, size, mtime) in state.outputs().items()}


def _on_disk(root: Path) -> dict[str, tuple[int, int]]:
    """Each file's size and mtime under ``root`` (one stat each)."""
    stats = {p.relative_to(root).as_posix(): p.stat() for p in root.rglob("*") if p.is_file()}
    return {rel: (st.st_size, st.st_mtime_ns) for rel, st in stats.items()}


def test_a_one_page_rebuild_prunes_by_key_and_a_failed_builds_rows_by_listing(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state keeps the rendered Markdown and code blocks of the current sources alone. A rebuild of
    edited pages deletes their former versions' rows by key, without listing the tables; the rows a
    failed build kept (its rendered pages) are found by the row count and the tables listed then."""
    import sqlite3

    from cernvm_build.site import cache

    statements: list[str] = []
    real_connect = cache.connect

    def traced(path: Path) -> sqlite3.Connection:
        db = real_connect(path)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(cache, "connect", traced)
    out = tmp_path / "out"
    build_site(site, out)
    state = State(next((tmp_path / "cache").rglob("state.sqlite")))

    def md_keys() -> set[str]:
        return {k for (k,) in state.db.execute("SELECT key FROM md_head")}

    def code_keys() -> set[str]:
        return {k for (k,) in state.db.execute("SELECT key FROM code")}

    def current() -> tuple[set[str], set[str]]:
        snap = state.snapshot()
        assert snap is not None
        keys = set(snap.keys.values())
        code = {k for key in keys for k in state.md_meta_of(key)["code"]}
        return keys, code

    listed = ("SELECT key FROM md_head", "SELECT key FROM code")
    page = site / "content/docs/guides/preservation.md"
    code_before = code_keys()
    # a new code block: the former version's block is stale, the new one kept
    edit(page, "cernvm-build container el6 --format apptainer", "cernvm-build container el6 --format docker")
    statements.clear()
    assert build_site(site, out).pages_planned == 1
    assert not any(s.startswith(listed) for s in statements)
    keys, code = current()
    assert md_keys() == keys and code <= code_keys() and code_keys() - code <= code_before
    assert len(code_keys() - code) == 1  # the stylesheet's, kept beside the blocks
    # a failed build (a broken link) keeps the page it rendered; the fixed page's build finds that
    edit(page, "## The idea", "See [nowhere](no-such-page.md).\n\n## The idea")
    with pytest.raises(LinkErrors):
        build_site(site, out)
    assert len(md_keys()) == len(keys) + 1
    edit(page, "See [nowhere](no-such-page.md).\n\n", "")
    edit(page, "no longer receive security updates", "no longer get security updates")
    statements.clear()
    assert build_site(site, out).pages_planned == 1
    assert any(s.startswith(listed[0]) for s in statements)
    keys, code = current()
    assert md_keys() == keys and code <= code_keys() and len(code_keys() - code) == 1
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)


def test_a_rebuild_with_nothing_changed_makes_no_page_set_and_checks_every_output(
    site: Path, tmp_path: Path, edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No source, template, data or asset changed and every recorded output on disk as recorded, no
    other file there: the rebuild reports the last build's figures without making the page set or the
    plan. Anything else (an output changed, gone or added by hand, a row the state lost, a template
    edited) takes the whole way, which writes a clean build's bytes."""
    from cernvm_build.site import pages
    from cernvm_build.site.cache import REPORT
    from cernvm_build.site.search import MANIFEST

    made: list[int] = []
    real = pages.make_pages
    monkeypatch.setattr(pages, "make_pages", lambda *a, **k: made.append(1) or real(*a, **k))
    out = tmp_path / "out"
    first = build_site(site, out)
    made.clear()
    again = build_site(site, out)
    assert made == [] and again.rendered == again.removed == again.markdown_rendered == 0
    assert (again.pages, again.outputs, again.sources) == (first.pages, first.outputs, first.sources)
    page = out / "docs/guides/cache/index.html"

    def rebuilt() -> None:
        """A rebuild takes the whole way and writes a clean build's bytes; a second one has nothing to
        do (or a third: one that rewrote a page whose search shard did not change left the index's
        manifest to be made again, ``Builder._write``)."""
        made.clear()
        build_site(site, out)
        assert made == [1]
        assert tree(out) == _clean(site, tmp_path, f"clean{len(list(tmp_path.iterdir()))}", monkeypatch)
        for _ in range(2):
            made.clear()
            build_site(site, out)
        assert made == []

    # a page changed by hand (same size): written again, and its search shard did not change, so the
    # index's manifest is forgotten (its row): the next rebuild checks the index again
    page.write_bytes(page.read_bytes().replace(b"Alien cache", b"Tampered!!!"))
    made.clear()
    build_site(site, out)
    assert made == [1] and b"Tampered" not in page.read_bytes()
    manifest = out / MANIFEST
    manifest.write_bytes(manifest.read_bytes().replace(b'"', b"'"))
    rebuilt()
    page.unlink()
    rebuilt()
    (out / "docs/guides/junk.html").write_text("junk")
    rebuilt()
    # a row the state lost (the manifest's: a failed index step forgets it) and its file changed
    state = State(next((tmp_path / "cache").rglob("state.sqlite")))
    state.put_outputs([], [MANIFEST])
    manifest.write_bytes(manifest.read_bytes().replace(b'"', b"'"))
    rebuilt()
    # a page's row lost, its file and folder as they were (no stray seen): the row count tells
    state.put_outputs([], ["docs/guides/cache/index.html"])
    rebuilt()
    assert "docs/guides/cache/index.html" in state.outputs()
    state.close()
    template = site / "templates/base.html"
    template.write_text(template.read_text() + "\n")
    rebuilt()
    # the output -> source map's row lost (or a build stopped between it and the snapshot): the
    # full way writes it again, so the shortcut comes back (r13b: declined for good)
    state = State(next((tmp_path / "cache").rglob("state.sqlite")))
    state.db.execute("DELETE FROM memo WHERE name = ?", (REPORT,))
    state.close()
    rebuilt()


def _edited_code(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """``cernvm_build/site/<name>`` as if edited (its bytes read with a comment more), the render
    key and the highlighter's salt made again."""
    from cernvm_build.site import build as build_mod
    from cernvm_build.site import markdown, model, sources

    here = Path(markdown.__file__).parent / name
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        return real(self) + (b"\n# edited\n" if self == here else b"")

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    # the files' digests read again, and a build's own (by their stat, unchanged here) not used
    monkeypatch.setattr(model, "_CODE_SHA", {})
    monkeypatch.setattr(build_mod, "code_known", lambda digests: None)
    monkeypatch.setattr(sources, "_VERSION", [])
    markdown.code_salt.cache_clear()


@pytest.fixture
def fresh_salt() -> Any:
    from cernvm_build.site import markdown

    yield
    markdown.code_salt.cache_clear()  # made again from the real bytes


@pytest.mark.parametrize(
    "name", ["markdown.py", "mdfast.py", "mdhtml.py", "mdtree.py", "model.py", "lexfast.py", "refirst.py"]
)
def test_the_render_key_covers_every_module_that_shapes_rendered_markdown(
    name: str, monkeypatch: pytest.MonkeyPatch, fresh_salt: None
) -> None:
    from cernvm_build.site import sources

    monkeypatch.setattr(sources, "_VERSION", [])
    before = sources.render_version()
    _edited_code(monkeypatch, name)
    assert sources.render_version() != before


def test_a_source_key_is_the_sha_the_module_docstring_names() -> None:
    """``plan_sources`` makes each key with the version and base path hashed once (``sha_after``): the
    keys stay ``sha(renderer code, base path, source path, digest, generated text)``, so the renders
    kept by earlier builds are found (a key made another way would render every page again)."""
    from cernvm_build.site import sources
    from cernvm_build.site.model import sha, sha_after

    markdown = {
        "index.md": ("/s/content/index.md", "d" * 64, ""),
        "docs/é x.md": ("/s/content/docs/é x.md", "e" * 64, "cli"),
    }
    found = sources.Sources(markdown, {}, [], [], {}, {}, False)
    planned = sources.plan_sources(found, "/cvmfs/", {"cli": lambda: "generated\0text"})
    version = sources.render_version()
    assert planned["index.md"].key == sha(version, "/cvmfs/", "index.md", "d" * 64, b"")
    assert planned["docs/é x.md"].key == sha(version, "/cvmfs/", "docs/é x.md", "e" * 64, b"generated\0text")
    assert sha_after("a", b"b")() == sha("a", b"b") and sha_after()("c") == sha("c")


def test_an_outputs_fingerprint_is_the_sha_of_its_parts_however_many_share_a_head() -> None:
    """``plan``'s fingerprints hash the head (plan code, template, the site's JSON) once per template:
    each is still ``sha(plan code, template hash, site JSON, Markdown key, the rest's JSON)``, so the
    outputs an earlier build wrote are found unchanged, and another site context makes other ones."""
    import json

    from cernvm_build.site import plan
    from cernvm_build.site.model import sha

    class Env:  # the one method the fingerprints ask of the templates
        def closure_hash(self, name: str) -> str:
            return f"closure of {name}"

    def want(template: str, ctx: dict[str, Any], md_key: str = "") -> str:
        rest = {k: v for k, v in ctx.items() if k != "site"}
        if md_key:
            rest["page"] = {k: v for k, v in rest["page"].items() if k not in plan.BY_KEY}
        site = json.dumps(ctx["site"], sort_keys=True) if "site" in ctx else ""
        return sha(plan.plan_code(), f"closure of {template}", site, md_key, plan._ENCODE(rest))

    fps = plan._Fingerprints(Env())  # type: ignore[arg-type]
    site = {"title": "S", "menu": [{"url": "/a/"}]}
    other = {"title": "T", "menu": []}
    cases = [
        ("doc.html", {"site": site, "page": {"title": "A", "toc": [1]}}, "k1"),
        ("doc.html", {"site": site, "page": {"title": "B", "toc": [2]}}, "k2"),
        ("page.html", {"site": site, "page": {"title": "A"}}, ""),
        ("sitemap.xml", {"urls": ["/a/"]}, ""),
        ("doc.html", {"site": other, "page": {"title": "A", "toc": [1]}}, "k1"),
        ("doc.html", {"page": {"title": "A", "toc": [1]}}, "k1"),
    ]
    site_json = json.dumps(site, sort_keys=True)
    hashed: list[str] = []  # the parts given to a hasher that are the first site's JSON

    def noting(fn: Any) -> Any:
        return lambda *parts: hashed.extend(p for p in parts if p == site_json) or fn(*parts)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plan, "sha", noting(plan.sha))
        mp.setattr(plan, "sha_after", noting(getattr(plan, "sha_after", None)), raising=False)
        got = [fps.job("o", template, ctx, key).fp for template, ctx, key in cases]
    assert got == [want(template, ctx, key) for template, ctx, key in cases]
    assert len(set(got)) == len(got)
    assert len(hashed) == 2  # once per template it goes with (doc.html twice, page.html), not per job


def test_an_edited_permalink_rule_renders_every_page_again(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_salt: None
) -> None:
    """The anchor writer lives in ``model`` (not ``markdown``): an edit there re-renders the cached
    Markdown, and the rebuild on the old state writes a clean build's bytes (r13b: every page kept
    the old sign)."""
    from cernvm_build.site import markdown, mdfast, mdhtml, model

    out = tmp_path / "out"
    first = build_site(site, out, jobs=1)
    real = model.permalink

    def permalink(sid: str) -> str:
        return real(sid).replace(">#</a>", ">¶</a>")

    for mod in (model, markdown, mdfast, mdhtml):
        monkeypatch.setattr(mod, "permalink", permalink)
    _edited_code(monkeypatch, "model.py")
    again = build_site(site, out, jobs=1)
    assert again.markdown_rendered == first.markdown_rendered > 0
    page = (out / "docs/guides/cache/index.html").read_text()
    assert 'data-search-ignore href="#' in page and ">¶</a>" in page and ">#</a>" not in page
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)


def test_a_state_of_the_former_schema_is_rebuilt_whole_and_its_tools_do_not_read_this_one(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema 10's tools unpack a snapshot of three values; this one's has five, under another schema
    number, which a tool of 10 drops (a full rebuild) instead of failing on it with a traceback (r13b).
    A state of the former shape gives this tool a full rebuild with a clean build's bytes."""
    import pickle
    import sqlite3

    from cernvm_build.site import cache

    out = tmp_path / "out"
    first = build_site(site, out, jobs=1)
    path = next((tmp_path / "cache").rglob("state.sqlite"))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == cache.SCHEMA != 10
    (blob,) = db.execute("SELECT blob FROM snapshot").fetchone()
    assert len(pickle.loads(blob)) == 5
    # the state as a tool of schema 10 leaves it: a snapshot of three values
    digest, keys, searchable, *_more = pickle.loads(blob)
    db.execute("UPDATE snapshot SET blob = ?", (pickle.dumps((digest, keys, searchable)),))
    db.execute("PRAGMA user_version = 10")
    db.commit()
    db.close()
    again = build_site(site, out, jobs=1)
    assert again.markdown_rendered == first.markdown_rendered > 0
    assert tree(out) == _clean(site, tmp_path, "clean", monkeypatch)


def test_a_small_code_table_is_read_once_a_process_and_a_big_one_counted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CodeRows``: a cold build's code table (the stylesheet alone) is read whole by the first
    look-up, and then neither a missing block nor the size asked once a page queries SQLite; a table
    over ``WHOLE_CODE_MAX`` is looked up key by key, its size counted once."""
    from cernvm_build.site import cache

    monkeypatch.setattr(cache, "WHOLE_CODE_MAX", 2)
    state = State(tmp_path / "state.db")
    state.put_code({"\0stylesheet": "css", "k1": "<pre>1</pre>"})
    rows = state.code()
    assert rows.get("k1") == "<pre>1</pre>"
    queries: list[str] = []
    assert rows._db is not None
    rows._db.set_trace_callback(queries.append)
    for n in range(50):  # (a page each: its size, a missing block, a known one)
        assert len(rows) == 2 and rows.get(f"missing{n}") is None and "k1" in rows
    assert sorted(rows) == ["\0stylesheet", "k1"] and queries == []
    rows.close()
    state.put_code({"k2": "<pre>2</pre>", "k3": "<pre>3</pre>"})
    opened: list[str] = []  # every query of the connections opened from here: a big table is not read
    real_connect = cache.connect

    def connect(path: Path) -> Any:
        db = real_connect(path)
        db.set_trace_callback(opened.append)
        return db

    monkeypatch.setattr(cache, "connect", connect)
    rows = state.code()
    assert rows.get("k2") == "<pre>2</pre>"
    assert not any("SELECT key, html" in q for q in opened)
    assert rows._db is not None
    rows._db.set_trace_callback(queries.append)
    assert [len(rows) for _ in range(50)] == [4] * 50 and len(queries) == 1
    assert rows.get("k9") is None and rows.get("k3") == "<pre>3</pre>" and len(queries) == 3
    rows.close()
    state.close()


def test_every_late_value_the_plan_makes_is_one_the_write_step_makes(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``write._materialize`` makes a context's ``Late`` values only where ``plan`` puts them (the
    sidebar, the page's body, the feed entries' bodies), copying nothing else: none of the real site's
    outputs keeps one elsewhere, which would be written as an object's repr."""
    from cernvm_build.site import write
    from cernvm_build.site.model import Late

    plans: list[Any] = []
    real_execute = write.execute

    def execute(target: Path, outputs: Any, *args: Any, **kw: Any) -> Any:
        plans.append(outputs)
        return real_execute(target, outputs, *args, **kw)

    monkeypatch.setattr(write, "execute", execute)
    build_site(site, tmp_path / "out", jobs=1)
    monkeypatch.setattr(write, "_made", lambda late, work: f"made {late.kind}")
    contexts = [j.context for j in plans[0].jobs if j.context is not None]
    made = [write._materialize(ctx, None) for ctx in contexts]  # type: ignore[arg-type]
    assert write._lates(contexts) and not write._lates(made)
    assert {m.get("sidebar") for m in made} >= {"made sidebar"}
    assert {m["page"]["content"] for m in made if "page" in m} >= {"made content"}
    assert {e["content"] for m in made for e in m.get("feed", {}).get("entries", [])} == {"made content"}
    assert all(isinstance(v, Late) for ctx in contexts for v in write._lates(ctx))


def test_a_new_state_is_written_unsynced_under_its_boot_tag_and_synced_by_the_next_open(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold build's state is written with ``synchronous=OFF`` from its creation to its end, by the
    parent and by each write worker: its checkpoints' fsyncs (~20, 0.1-1 s blocked on ext4) were wall of
    every cold build. Its header holds this boot's tag from its first page: the next open under the same
    boot fsyncs it and clears the tag; under another boot (a crash or power loss may have torn it) it is
    kept only if SQLite's check passes, else deleted and the build is cold again, and a clean build's."""
    import sqlite3

    from cernvm_build.site import cache

    synced: list[str] = []
    real_connect = cache.connect

    def connect(path: Path) -> Any:
        db = real_connect(path)
        db.set_trace_callback(
            lambda sql: synced.append(sql) if sql.startswith("PRAGMA synchronous=") else None
        )
        return db

    monkeypatch.setattr(cache, "connect", connect)
    out = tmp_path / "out"
    first = build_site(site, out, jobs=2)
    clean = tree(out)
    assert synced and set(synced) == {"PRAGMA synchronous=OFF"}  # (a worker's are traced in the worker)
    (path,) = (tmp_path / "cache").rglob("state.sqlite")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == cache._boot_tag() != 0
    new = State(tmp_path / "new.sqlite")
    new._pid = -1  # as a forked worker: a connection of its own, unsynced too
    with new._here() as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 0
    new.close()
    synced.clear()
    state = State(path)  # the same boot: synced, the tag cleared, every later connection NORMAL
    assert state.db.execute("PRAGMA application_id").fetchone()[0] == 0
    assert state.db.execute("PRAGMA synchronous").fetchone()[0] == 1 and not synced
    assert state.snapshot() is not None  # the build's, kept
    state.db.execute(f"PRAGMA application_id={cache._boot_tag() ^ 1}")  # as if written before a reboot
    state.close()
    # another boot (sr18 1: the state was deleted, so every cold build was lost at each reboot): kept
    # when SQLite's check of its pages passes, the tag cleared
    r = build_site(site, out)
    assert not r.warnings and tree(out) == clean and r.markdown_rendered == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0
        db.execute(f"PRAGMA application_id={cache._boot_tag() ^ 1}")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # torn by a power loss: the check fails, the state is deleted with one warning, the build is cold
    blob = bytearray(path.read_bytes())
    blob[4096 * 3 :] = b"\xa5" * (len(blob) - 4096 * 3)
    path.write_bytes(bytes(blob))
    r = build_site(site, out)
    assert any("was damaged" in w for w in r.warnings), r.warnings
    assert tree(out) == clean and r.markdown_rendered == first.markdown_rendered > 0


def test_a_state_a_running_build_writes_unsynced_keeps_its_tag_until_that_build_ends(tmp_path: Path) -> None:
    """Two builds sharing one cache folder in one boot: the second one's open synced the state and
    cleared its tag while the first (a cold build) still wrote it unsynced, so that the first one's
    later writes stood under no tag (trusted as synced after a crash). The tag now stays while that
    build runs; the first open after it syncs the state and clears it."""
    import subprocess
    import sys

    from cernvm_build.site import cache

    path = tmp_path / "cache" / "state.sqlite"
    first = State(path)  # a cold build's: new, written unsynced
    assert first.unsynced and cache._boot_tag() != 0
    second = (
        "import sys\nfrom pathlib import Path\nfrom cernvm_build.site.cache import State\n"
        "s = State(Path(sys.argv[1]))\nprint(s.db.execute('PRAGMA application_id').fetchone()[0])\n"
        "s.close()\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    run = subprocess.run([sys.executable, "-c", second, str(path)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) == cache._boot_tag()  # the first build still writes: the tag stays
    first.put_memo("later", {"k": b"written unsynced"})
    first.close()
    after = State(path)
    assert after.db.execute("PRAGMA application_id").fetchone()[0] == 0
    assert after.memo("later") == {"k": b"written unsynced"}
    after.close()


def test_a_damaged_state_costs_a_cold_build_never_a_failed_one(site: Path, tmp_path: Path) -> None:
    """The state is a cache: a file that is no database (a lost write, a cut copy) is set aside with one
    warning and the build starts cold; damage found only later in the build deletes it and says so, and
    the next build then succeeds. Either way the site is a clean build's."""
    import sqlite3

    out = tmp_path / "out"
    build_site(site, out)
    clean = tree(out)
    (state,) = (tmp_path / "cache").rglob("state.sqlite")
    with sqlite3.connect(state) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = state.stat().st_size
    state.write_bytes(b"not a database " * (size // 15))
    Path(f"{state}-wal").unlink(missing_ok=True)
    r = build_site(site, out)
    assert any("was damaged (file is not a database)" in w for w in r.warnings), r.warnings
    assert tree(out) == clean
    # the header intact, every later page garbage: the open succeeds, a query fails later
    with sqlite3.connect(state) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    blob = bytearray(state.read_bytes())
    blob[4096:] = b"\xa5" * (len(blob) - 4096)
    state.write_bytes(bytes(blob))
    Path(f"{state}-wal").unlink(missing_ok=True)
    page = next((site / "content").rglob("*.md"))
    page.write_text(page.read_text() + "\nOne more line.\n")
    with pytest.raises(BuildError, match=r"is damaged \(database disk image is malformed\); it was deleted"):
        build_site(site, out)
    assert not state.exists()
    build_site(site, out)
    assert tree(out) == _clean(site, tmp_path, "clean-after-damage", pytest.MonkeyPatch())


@pytest.mark.parametrize("what", ["state-folder", "state-fifo", "state-devnull", "jinja-file"])
def test_a_cache_entry_of_another_kind_is_one_line(site: Path, tmp_path: Path, what: str) -> None:
    """A folder or FIFO named state.sqlite, or a link of it to /dev/null, was an sqlite traceback on
    every build; a file named jinja a mkdir one (pr19a 7)."""
    build_site(site, tmp_path / "out")
    (state,) = (tmp_path / "cache").rglob("state.sqlite")
    name = "jinja" if what == "jinja-file" else "state.sqlite"
    entry = state.parent / name
    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    if what == "state-folder":
        entry.mkdir()
    elif what == "state-fifo":
        os.mkfifo(entry)
    elif what == "state-devnull":
        entry.symlink_to("/dev/null")
    else:
        entry.write_text("x")
    with pytest.raises(BuildError, match=f"{name} in the build cache is not a") as e:
        build_site(site, tmp_path / "out")
    assert "rm -r" in (e.value.hint or "")


def test_a_database_error_that_is_no_damage_keeps_the_state(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only ``sqlite3.DatabaseError`` itself is damage ("not a database", "malformed"): its subclasses
    (a constraint, a misuse: a bug) pass unchanged and the state is not deleted as damaged."""
    import sqlite3

    from cernvm_build.site.build import Builder

    build_site(site, tmp_path / "out")
    (state,) = (tmp_path / "cache").rglob("state.sqlite")

    def bug(self: Builder) -> None:
        raise sqlite3.IntegrityError("UNIQUE constraint failed: pages.path")

    monkeypatch.setattr(Builder, "_build", bug)
    with pytest.raises(sqlite3.IntegrityError):
        build_site(site, tmp_path / "out")
    assert state.exists()


def test_the_same_sources_in_another_folder_give_the_same_bytes(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr19e finding 14: the search index's ``shards.json`` key differed between clean builds of the
    same sources in two folders (the repositories page's context named its missing metadata folder
    by its absolute path): every output, the index's keys included, depends on the content only."""
    other = tmp_path / "elsewhere" / "copy"
    shutil.copytree(site, other)
    built = [_clean(s, tmp_path, name, monkeypatch) for s, name in ((site, "a"), (other, "b"))]
    assert built[0]["search-index/shards.json"] == built[1]["search-index/shards.json"]
    assert built[0] == built[1]


def test_a_new_folders_file_is_written_through_its_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(sp20b) Into a new folder, ``write_output`` writes with ``os.write`` (no file object: its
    buffer, flush and close per page), each short write continued, mode 0644 whatever the umask; its
    size and mtime are the file's."""
    import os

    from cernvm_build.site import output

    real = os.write
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: pytest.fail("a file object was made"))
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:3])))  # short writes
    old = os.umask(0o077)
    try:
        size, mtime = output.write_output(tmp_path / "a" / "index.html", b"<p>page</p>", {str(tmp_path)})
    finally:
        os.umask(old)
    dest = tmp_path / "a" / "index.html"
    st = dest.stat()
    assert dest.read_bytes() == b"<p>page</p>" and (size, mtime) == (st.st_size, st.st_mtime_ns)
    assert st.st_mode & 0o777 == 0o644


def test_a_source_pages_fingerprint_has_its_key_in_place_of_the_fields_its_key_makes(tmp_path: Path) -> None:
    """A page's table of contents, front matter and description are made from its rendered metadata,
    which its Markdown key determines: the fingerprint hashes the key, not their JSON (plan's cost);
    everything else the page's context holds is still in it."""
    from cernvm_build.site import plan as plan_mod
    from cernvm_build.site import templates as tpl_mod

    (tmp_path / "page.html").write_text("{{ page.title }}")
    fps = plan_mod._Fingerprints(tpl_mod.environment(tmp_path))

    def fp(key: str | None, **page: Any) -> str:
        fields = {"title": "A", "toc": [{"level": 2, "id": "x", "title": "X"}], "meta": {}, "description": ""}
        return fps.job("a/index.html", "page.html", {"page": {**fields, **page}}, key).fp

    base = fp("k1")
    assert fp("k1", toc=[{"level": 2, "id": "y", "title": "Y"}], meta={"a": 1}, description="d") == base
    assert fp("k2") != base  # another key: another source or render
    assert fp("k1", title="B") != base  # what other pages or the nav make is hashed as before
    assert fp(None, toc=[]) != fp(None)  # a page with no source (releases, tags): every field


def test_the_pages_of_one_folder_share_their_breadcrumbs() -> None:
    """Breadcrumbs are made once a folder in a plan (they depend on the parent path alone): the same
    list as a page made alone, shared by its folder's pages; the home page has none."""
    from cernvm_build.site import plan as plan_mod
    from cernvm_build.site.model import Page
    from cernvm_build.site.pages import PageSet

    def page(path: str, kind: str = "page") -> Page:
        return Page(
            None, None, path, "/b" + path, path.strip("/") + "/index.html", "docs", kind, "page", path
        )

    pages = [page("/", "home"), page("/docs/", "index"), page("/docs/a/"), page("/docs/b/"), page("/c/")]
    ps = PageSet(pages, {p.path: p for p in pages}, {}, {}, "/b/")
    made: dict[str, list[dict[str, str]]] = {}
    got = [plan_mod._breadcrumbs(ps, p, made) for p in pages]
    home, docs = {"title": "Home", "url": "/b/"}, {"title": "/docs/", "url": "/b/docs/"}
    assert got == [[], [home], [home, docs], [home, docs], [home]]
    assert got[2] is got[3] and got[1] is got[4]
    assert got[2] == plan_mod._breadcrumbs(ps, pages[2], {})


def test_a_second_build_into_one_output_waits_for_the_first(site: Path, tmp_path: Path) -> None:
    """Two builds into one output at once mixed their pages (the one that said "built" left pages of
    both) and each removed the other's temporaries as strays: the second waits, saying for whom."""
    import fcntl
    import threading
    import time

    from cernvm_build.report import Recorder

    out = tmp_path / "out"
    heard = Recorder()
    builder = Builder(site, out, reporter=heard, jobs=1)
    lock = builder.cache_dir / "build.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)  # another build's hold (its own open of the file)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"pid 4242 (site build into elsewhere)\n")
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(builder.build()))
    worker.start()
    try:
        for _ in range(600):  # (a bound against a hang, not a timing)
            if any("waiting for pid 4242" in s for s in heard.steps()) or not worker.is_alive():
                break
            time.sleep(0.1)
        assert any(
            f"waiting for pid 4242 (site build into elsewhere) to finish (it holds {lock})" == s
            for s in heard.steps()
        ), heard.steps()
        assert not (out / "sitemap.xml").exists()  # nothing written while the other one holds it
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        worker.join(300)
    assert len(done) == 1 and (out / "sitemap.xml").is_file()
    assert lock.read_bytes() == b""  # released, holder forgotten


def test_a_misspelt_front_matter_key_is_a_warning_naming_its_line(site: Path, tmp_path: Path) -> None:
    """`darft: true` published the page and `titel:` took the title from the first heading, without a
    word (note24's leftovers). A key close to one the build reads is a warning with file:line; other
    unknown keys are the templates' (the shipped home page's `headline:`) and pass without one."""
    page = site / "content" / "docs" / "quickstart" / "client.md"
    text = page.read_text()
    assert text.startswith("---\n")
    page.write_text("---\ndarft: true\nnav-title: x\nheadline: for a theme\n" + text[4:])
    report = build_site(site, tmp_path / "out")
    rel = str(page)
    said = "front matter key {!r} is unknown (a template may read it): did you mean {!r}?"
    assert [w for w in report.warnings if "front matter key" in w] == [
        f"{rel}:2: " + said.format("darft", "draft"),
        f"{rel}:3: " + said.format("nav-title", "nav_title"),
    ], report.warnings
    assert (tmp_path / "out" / "docs" / "quickstart" / "client" / "index.html").exists()  # kept, as before


#: a cold build in a new process whose render step forks: the builder's modules loaded when its
#: lexers' warm-up starts (the render workers fork after it), and its steps' order
_LATER_MODULES = """
import sys
from pathlib import Path
from cernvm_build.cli.reference import GENERATORS
from cernvm_build.site import build, sources
later = ("data", "pages", "plan", "replan", "search", "write")
seen = []
warm, templates = sources.warm_highlighting, build._warm_templates
def warming(*a, **k):
    seen.append([m for m in later if "cernvm_build.site." + m in sys.modules])
    done = warm(*a, **k)
    seen.append("lexers made")
    return done
sources.warm_highlighting = warming
build._warm_templates = lambda *a: seen.append("templates") or templates(*a)
build.build_site(Path(sys.argv[1]), Path(sys.argv[2]), generators=GENERATORS, jobs=2)
print((seen, [m for m in later if "cernvm_build.site." + m in sys.modules]))
"""


def test_the_later_steps_are_imported_and_the_plan_parts_pickled_while_other_processes_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The modules only the builder's process needs after the render step (page set, plan, write,
    search index, data files) are not imported before the render workers fork, which do not need
    them (they were serial time the other core did not overlap), but by the render step's
    ``meanwhile`` (the data files' by the lexers' step's): checked in a new process, as this one
    imported them long ago. The templates are compiled in the render step's ``meanwhile`` too, not
    the lexers' step's, where this process's share was the longer. The plan parts are pickled in the
    write step's ``meanwhile``."""
    import ast
    import subprocess
    import sys

    from bench.site_corpus import generate
    from cernvm_build.site import plan, write

    site = generate(tmp_path / "corpus", 60)["ours"]  # over parallel.PARALLEL_MIN: the steps fork
    env = {**os.environ, "CERNVM_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "-c", _LATER_MODULES, str(site), str(tmp_path / "new")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    seen, after = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    assert seen == [[], "lexers made", "templates"]
    assert after == ["data", "pages", "plan", "replan", "search", "write"]
    steps: list[str] = []
    execute, parts = write.execute, plan.plan_parts
    monkeypatch.setattr(write, "execute", lambda *a, **k: steps.append("write") or execute(*a, **k))
    monkeypatch.setattr(plan, "plan_parts", lambda *a: steps.append("parts") or parts(*a))
    build_site(site, tmp_path / "out", jobs=2)
    assert steps == ["write", "parts"]
