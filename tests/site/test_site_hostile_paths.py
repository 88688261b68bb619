"""Sources that would make the build write outside its output, publish files from outside the site,
write one output twice, or break URLs (issue 17): each is one line naming the source, nothing is
written, and what is fine keeps working (links inside the site, tags written two ways)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from sitehelpers import build_site

from cernvm_build.cli.main import main
from cernvm_build.errors import BuildError
from cernvm_build.site import output, pages
from cernvm_build.site.model import LinkErrors

NEWS = "---\ntitle: {title}\ndate: 2026-12-01\n{extra}---\nbody\n"


def _page(site: Path, rel: str, title: str = "p", extra: str = "") -> Path:
    page = site / "content" / rel
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(NEWS.format(title=title, extra=extra))
    return page


@pytest.mark.parametrize(
    "url",
    [
        "/../../../{away}/pwned/",
        "../../../../{away}/pwned/",
        "/docs/../../{away}/",
        "/a\\\\b/",
        "/a\\tb/",
        "/a?b/",
        "/{away}/a\\x85b/",
        "/{away}/a\\u2028b/",
        "/{away}/a\\u202eb/",
        '/{away}/a\\"b/',
        "/{away}/a<b/",
        "/{away}/a b/",
        "/.{away}/",
    ],
    ids=[
        *("absolute-dots", "relative-dots", "inner-dots", "backslash", "control", "query"),
        *("c1-control", "line-separator", "bidi", "quote", "less-than", "space", "dot-segment"),
    ],
)
def test_a_url_leaving_the_site_is_one_line_and_nothing_is_written(
    site: Path, tmp_path: Path, url: str
) -> None:
    away = tmp_path / "away"
    out = tmp_path / "a" / "b" / "out"
    page = _page(site, "news/p.md", extra=f'url: "{url.format(away=str(away).lstrip("/"))}"\n')
    with pytest.raises(BuildError) as e:
        build_site(site, out)
    assert str(e.value.where) == f"{page}: url" and e.value.hint
    assert not away.exists() and not out.exists() and not (tmp_path / "a" / "b" / "pwned").exists()


def test_a_url_is_normalised(site: Path, tmp_path: Path) -> None:
    _page(site, "news/p.md", extra="url: /news//./elsewhere/\n")
    build_site(site, tmp_path / "out")
    assert (tmp_path / "out" / "news" / "elsewhere" / "index.html").is_file()


def test_the_writer_refuses_an_output_outside_the_folder(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last guard: with the page model's check gone, the write step still refuses."""
    monkeypatch.setattr(pages, "_checked_url", lambda path, file: path)
    _page(site, "news/p.md", extra="url: /../../../away/\n")
    with pytest.raises(BuildError, match=re.escape("refusing to write '../../../away/index.html'")):
        build_site(site, tmp_path / "x" / "y" / "out")
    assert not (tmp_path / "away").exists()
    for rel in ("", "/etc/x", "a/../b", "a//b", "./a", "a\\b", "a\0b"):
        with pytest.raises(BuildError):
            output.check_out(rel)
    output.check_out("docs/a/index.html")


def test_a_link_out_of_the_site_is_one_line_and_one_inside_works(site: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.md"
    secret.write_text("---\ntitle: secret\n---\nTOP SECRET\n")
    (tmp_path / "secret.txt").write_text("TOP SECRET\n")
    leak = site / "content" / "docs" / "leak.md"
    leak.symlink_to(secret)
    told = re.escape(f"a symbolic link to {secret}, outside the site folder")
    with pytest.raises(BuildError, match=told) as e:
        build_site(site, tmp_path / "out")
    assert str(e.value.where) == str(leak) and "copy the file" in str(e.value.hint)
    leak.unlink()
    asset = site / "static" / "assets" / "leak.txt"
    asset.symlink_to(tmp_path / "secret.txt")
    with pytest.raises(BuildError, match=r"secret\.txt, outside the site folder"):
        build_site(site, tmp_path / "out")
    asset.unlink()
    (site / "content" / "docs" / "dangling.png").symlink_to(site / "nowhere.png")
    with pytest.raises(BuildError, match="which cannot be read"):
        build_site(site, tmp_path / "out")
    (site / "content" / "docs" / "dangling.png").unlink()
    assert not (tmp_path / "out").exists()
    # links inside the site work as before
    (site / "content" / "docs" / "alias.md").symlink_to(site / "content" / "docs" / "_index.md")
    (site / "static" / "assets" / "copy.css").symlink_to(site / "static" / "assets" / "site.css")
    build_site(site, tmp_path / "out")
    assert (tmp_path / "out" / "docs" / "alias" / "index.html").is_file()
    assert (tmp_path / "out" / "assets" / "copy.css").read_bytes() == (
        site / "static/assets/site.css"
    ).read_bytes()


def test_a_page_source_that_is_a_fifo_is_one_line_not_a_wait(site: Path, tmp_path: Path) -> None:
    """A FIFO named ``*.md`` (or a link inside the site to one) was opened for reading: the build waited
    for a writer for ever. Now one line naming it, in a first and in an incremental build."""
    build_site(site, tmp_path / "out")

    def stuck(*_: object) -> None:
        raise TimeoutError("the build waited on the FIFO")

    before = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(30)
    try:
        fifo = site / "content" / "docs" / "pipe.md"
        os.mkfifo(fifo)
        for out in (tmp_path / "out", tmp_path / "new"):
            with pytest.raises(BuildError, match="not a regular file") as e:
                build_site(site, out)
            assert str(e.value.where) == str(fifo) and e.value.hint
        fifo.rename(site / "pipe")
        (site / "content" / "docs" / "linked.md").symlink_to(site / "pipe")
        with pytest.raises(BuildError, match="not a regular file"):
            build_site(site, tmp_path / "out")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("where", ["content/docs/guide", "static/assets/linked"])
def test_a_linked_subfolder_is_one_line_not_left_out(site: Path, tmp_path: Path, where: str) -> None:
    """os.walk does not follow a link below its top: its pages were left out without a word."""
    away = tmp_path / "away"
    away.mkdir()
    (away / "page.md").write_text("---\ntitle: linked\n---\ntext\n")
    (site / where).symlink_to(away)
    with pytest.raises(BuildError, match=re.escape(f"a symbolic link to the folder {away}")) as e:
        build_site(site, tmp_path / "out")
    assert str(e.value.where) == str(site / where) and e.value.hint
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("folder", ["content", "static", "data", "templates"])
def test_a_top_folder_linked_out_of_the_site_is_one_line(site: Path, tmp_path: Path, folder: str) -> None:
    """os.walk follows a link at its top: content -> ~/.ssh would publish the keys (audit17b finding 3)."""
    away = tmp_path / "away"
    (site / folder).rename(away)
    (away / "secret.txt").write_text("TOP SECRET\n")
    (site / folder).symlink_to(away)
    with pytest.raises(
        BuildError, match=re.escape(f"{folder}/ is a symbolic link to {away}, outside the site")
    ) as e:
        build_site(site, tmp_path / "out")
    assert str(e.value.where) == str(site / folder) and e.value.hint
    assert not (tmp_path / "out").exists()
    # a link to a folder inside the site builds as before
    (site / folder).unlink()
    (site / f".{folder}").mkdir()
    away.rename(site / f".{folder}" / folder)
    (site / folder).symlink_to(site / f".{folder}" / folder)
    build_site(site, tmp_path / "out")
    assert (tmp_path / "out" / "sitemap.xml").is_file()


@pytest.mark.parametrize(
    ("rel", "both"),
    [
        ("content/docs/index.html", ("content/docs/index.html", "content/docs/_index.md")),
        ("static/docs/index.html", ("static/docs/index.html", "content/docs/_index.md")),
        ("content/sitemap.xml", ("the generated sitemap.xml", "content/sitemap.xml")),
        ("content/search-index/meta.json", ("the search index", "content/search-index/meta.json")),
        ("content/tags", ("content/tags", "the folder of tags/")),
        ("content/tags/launch/index.html", ("content/tags/launch/index.html", "tag page of 'launch'")),
        ("static/downloads/index.html", ("static/downloads/index.html", "content/downloads.md")),
    ],
    ids=[
        "page-index",
        "static-page",
        "sitemap",
        "search-index",
        "file-and-folder",
        "tag-page",
        "static-page2",
    ],
)
def test_two_sources_of_one_output_are_one_line_naming_both(
    site: Path, tmp_path: Path, rel: str, both: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    f = site / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("<p>x</p>\n")
    out = tmp_path / "out"
    code = main(["site", "build", "--site", str(site), "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and "hint:" in err
    line = next(x for x in err.splitlines() if x.startswith("error"))
    assert all(b in line for b in both), line
    assert not out.exists()


def test_a_static_file_and_a_content_file_of_one_path_are_one_line(site: Path, tmp_path: Path) -> None:
    (site / "content" / "assets").mkdir()
    (site / "content" / "assets" / "site.css").write_text("x")
    with pytest.raises(BuildError, match=r"assets/site\.css is both .*content/assets/site\.css and .*static"):
        build_site(site, tmp_path / "out")


def test_tags_of_one_slug_are_one_tag_page(site: Path, tmp_path: Path) -> None:
    _page(site, "news/a.md", "Alpha", "tags: [Squid, squid]\n")
    _page(site, "news/b.md", "Beta", "tags: [Squid]\n")
    _page(site, "news/c.md", "Gamma", "tags: [squid]\n")
    _page(site, "news/d.md", "Delta", 'tags: ["..", "."]\n')
    out = tmp_path / "out"
    build_site(site, out)
    tag = (out / "tags" / "squid" / "index.html").read_text()
    assert tag.count(">Alpha<") == 1 and ">Beta<" in tag and ">Gamma<" in tag
    # the spelling most pages use (replication.md has 'squid' too: 3 to 2)
    assert "Tagged “squid”" in tag and "Stratum 1 replication and site proxies" in tag
    assert ">Delta<" in (out / "tags" / "section" / "index.html").read_text()
    # a rebuild after an edit writes what a clean build writes
    _page(site, "news/c.md", "Gamma", "tags: [Squid, Squid2]\n")  # now 'Squid' 3 to 2
    build_site(site, out)
    build_site(site, tmp_path / "clean")
    assert "Tagged “Squid”" in (out / "tags" / "squid" / "index.html").read_text()
    for rel in ("tags/squid/index.html", "tags/index.html"):
        assert (out / rel).read_bytes() == (tmp_path / "clean" / rel).read_bytes()


def test_unicode_forms_and_case_are_one_tag_or_one_line(site: Path, tmp_path: Path) -> None:
    """audit17b finding 5: 'Café' composed and decomposed, 'ﬁle' and 'file' are one tag page; two
    outputs that differ only by case or Unicode form (one file on a case-insensitive host) are one line."""
    _page(site, "news/a.md", "Alpha", "tags: [Caf\u00e9, \ufb01le]\n")
    _page(site, "news/b.md", "Beta", "tags: [Cafe\u0301, file]\n")
    build_site(site, tmp_path / "out")
    tags = sorted(p.name for p in (tmp_path / "out" / "tags").iterdir() if p.is_dir())
    assert "caf\u00e9" in tags and "cafe\u0301" not in tags and "file" in tags and "\ufb01le" not in tags
    for name in ("caf\u00e9", "file"):
        tag = (tmp_path / "out" / "tags" / name / "index.html").read_text()
        assert ">Alpha<" in tag and ">Beta<" in tag
    _page(site, "news/Case.md", "Upper")
    _page(site, "news/case.md", "Lower")
    with pytest.raises(
        BuildError, match=r"outputs news/Case/index\.html \(from .*\) and news/case/index\.html"
    ):
        build_site(site, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_raw_html_links_without_quotes_are_resolved_and_checked(site: Path, tmp_path: Path) -> None:
    page = site / "content" / "docs" / "raw.md"
    page.write_text(
        "---\ntitle: raw\n---\n<a href=../index.md>home</a> <img src=../nope.png>\n"
        '<img srcset="../assets/favicon.svg 1x, ../gone.png 2x">\n'
    )
    with pytest.raises(LinkErrors) as e:
        build_site(site, tmp_path / "out")
    assert e.value.problems == [
        f"{page}:4: 'nope.png' does not exist in content/ or static/",
        f"{page}:5: 'gone.png' does not exist in content/ or static/",
    ]
    page.write_text(
        "---\ntitle: raw\n---\n<a href=../index.md>home</a> <a class=x href=_index.md>q</a>\n"
        '<img srcset="../assets/favicon.svg 1x, ../assets/favicon.svg 2x">\n'
    )
    build_site(site, tmp_path / "out")
    html = (tmp_path / "out" / "docs" / "raw" / "index.html").read_text()
    assert '<a href="/">home</a>' in html and '<a class=x href="/docs/">q</a>' in html
    assert '<img srcset="/assets/favicon.svg 1x, /assets/favicon.svg 2x">' in html


@pytest.mark.parametrize(
    "name",
    ["a\nb.md", 'a"b.md', "a\x1bb.png", "a#b.png", "a\u2028b.md", "a\u202eb.md", "a\x85b.png"],
    ids=["newline", "quote", "esc", "hash", "line-separator", "bidi", "c1"],
)
def test_a_file_name_that_breaks_urls_is_one_line(site: Path, tmp_path: Path, name: str) -> None:
    f = site / "content" / "docs" / name
    f.write_text("---\ntitle: t\n---\nx\n")
    with pytest.raises(BuildError, match="cannot be part of a URL") as e:
        build_site(site, tmp_path / "out")
    assert "\n" not in str(e.value) + str(e.value.where)
    os.unlink(f)


def test_the_first_refused_name_in_a_folder_is_the_one_named(site: Path, tmp_path: Path) -> None:
    """A folder's names are checked at once and, where one is refused, one by one in order: the first
    (sorted) is named, whether the name or its folder's holds the character."""
    docs = site / "content" / "docs"
    for name in ("b#.md", "a.md", "c\x1b.md"):
        (docs / name).write_text("---\ntitle: t\n---\nx\n")
    with pytest.raises(BuildError, match=re.escape("'docs/b#.md' holds '#'")):
        build_site(site, tmp_path / "out")
    for name in ("b#.md", "c\x1b.md"):
        (docs / name).unlink()
    bad = docs / "x#y"
    bad.mkdir()
    (bad / "p.md").write_text("---\ntitle: t\n---\nx\n")
    with pytest.raises(BuildError, match=re.escape("'docs/x#y/p.md' holds '#'")):
        build_site(site, tmp_path / "out")


@pytest.mark.parametrize(
    "rel", [b"content/docs/caf\xe9.md", b"static/caf\xe9.txt", b"content/docs/d\xff/x.md"]
)
def test_a_file_name_that_is_not_utf8_is_one_line(site: Path, tmp_path: Path, rel: bytes) -> None:
    """A name's bytes that are no UTF-8 (a Latin-1 file system's 'café'): every hash of the name was a
    UnicodeEncodeError traceback (pr19a 9)."""
    f = os.path.join(os.fsencode(site), rel)
    os.makedirs(os.path.dirname(f), exist_ok=True)
    with open(f, "wb") as out:
        out.write(b"---\ntitle: t\n---\nx\n")
    with pytest.raises(BuildError, match="is not UTF-8") as e:
        build_site(site, tmp_path / "out")
    assert "\n" not in str(e.value) + str(e.value.where) and "\\udc" in str(e.value.where)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["a%2fb.md", "100%.md"])
def test_a_page_name_its_url_cannot_hold_as_written_is_one_line(
    site: Path, tmp_path: Path, name: str
) -> None:
    """A page's URL is its file name: 'a%2fb.md' was written as docs/a%2fb/index.html, which a server
    serves at /docs/a%252fb/ (/docs/a%2fb/ is /docs/a/b/: a 404). The rule of 'url:' (pr19a 13); with
    a 'url:' the name is free."""
    page = site / "content" / "docs" / name
    page.write_text("---\ntitle: t\n---\nx\n")
    with pytest.raises(BuildError, match="which the page's URL cannot hold as written"):
        build_site(site, tmp_path / "out")
    page.write_text("---\ntitle: t\nurl: /docs/fine/\n---\nx\n")
    build_site(site, tmp_path / "out")
    assert (tmp_path / "out" / "docs" / "fine" / "index.html").is_file()


@pytest.mark.parametrize("out", ["static/out", "content/docs/out", "static", "."])
def test_an_output_inside_the_sources_is_refused(site: Path, tmp_path: Path, out: str) -> None:
    """--out static/out: each build copied the output into the next one's (out/out/out/..., growing
    without end; pr19a 16). Inside any folder the build reads whole, not only that folder itself."""
    with pytest.raises(BuildError, match="overlaps the site sources"):
        build_site(site, site / out)
    assert not (site / "static" / "out").exists() and not (site / "content" / "docs" / "out").exists()


def test_an_output_folder_that_cannot_be_made_is_one_line(site: Path, tmp_path: Path) -> None:
    """--out under a file: atomic_dir's FileExistsError was a traceback (pr19a 17)."""
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BuildError, match=r"cannot make the output folder .*afile/sub: File exists"):
        build_site(site, tmp_path / "afile" / "sub")


@pytest.mark.timeout(60)  # a regression waits on the FIFO for ever: it must fail, not hang
@pytest.mark.parametrize(
    ("rel", "linked"),
    [
        ("content/docs/fifo.png", False),
        ("static/assets/fifo.css", False),
        ("static/assets/link.css", True),
    ],
    ids=["content-asset", "static", "link-to-fifo"],
)
def test_a_fifo_is_one_line_not_a_build_that_waits_for_ever(
    site: Path, tmp_path: Path, rel: str, linked: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO (or a link to one inside the site) where a static file is read: the open waited for a
    writer for ever, and with it ``site serve``'s rebuilds (pr17a finding 7; a page source's FIFO:
    ``test_a_page_source_that_is_a_fifo_is_one_line_not_a_wait``)."""
    where = site / rel
    fifo = site / ".fifo" if linked else where
    os.mkfifo(fifo)
    if linked:
        where.symlink_to(fifo)
    with pytest.raises(BuildError, match=r": not a regular file \(a FIFO, a device or a socket\)") as e:
        build_site(site, tmp_path / "out", jobs=1)
    assert str(e.value.where) == str(where) and e.value.hint and "remove it" in e.value.hint
    assert main(["site", "build", "--site", str(site), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "not a regular file" in err and str(where) in err and "Traceback" not in err


def test_a_file_name_with_a_space_is_percent_encoded_in_the_sitemap_feed_and_links(
    site: Path, tmp_path: Path
) -> None:
    """note19: spaces (and '&', a non-ASCII letter) in page file names reached sitemap.xml and the
    feed as written: each URL is %-encoded, then XML-escaped; the links of other pages too, and
    `site check` finds every page the sitemap names."""
    _page(site, "news/my page & más.md", title="Spaced")
    (site / "content" / "news" / "linking.md").write_text(
        "---\ntitle: Linking\ndate: 2026-12-02\n---\nSee [it](my%20page%20&%20más.md).\n"
    )
    out = tmp_path / "out"
    build_site(site, out)
    assert (out / "news" / "my page & más" / "index.html").is_file()
    url = "/news/my%20page%20&amp;%20m%C3%A1s/"
    sitemap = (out / "sitemap.xml").read_text()
    assert url in sitemap and "my page" not in sitemap
    feed = (out / "news" / "atom.xml") if (out / "news" / "atom.xml").is_file() else out / "atom.xml"
    assert url in feed.read_text() and "my page &" not in feed.read_text()
    assert f'href="{url}"' in (out / "news" / "linking" / "index.html").read_text()
    assert main(["site", "check", "--site", str(site), "--out", str(out), "-q"]) == 0
