"""Markdown rendering: what page authors rely on."""

from __future__ import annotations

import pytest

from cernvm_build.site.markdown import render, slugify


def r(text: str, src: str = "docs/a.md"):  # type: ignore[no-untyped-def]
    return render(text, src_path=src, first_line=5, base_path="/")


def test_headings_get_unique_ids_and_a_toc() -> None:
    out = r("## Install it\n\n### Step *one*\n\n## Install it\n")
    assert '<h2 id="install-it">' in out.html
    assert '<h2 id="install-it-1">' in out.html
    assert out.ids == ["install-it", "step-one", "install-it-1"]
    assert [(lv, i) for lv, i, _t in out.toc] == [(2, "install-it"), (3, "step-one"), (2, "install-it-1")]


def test_fenced_code_is_highlighted_and_escaped() -> None:
    out = r("```python\nif a < b: print('<x>')\n```\n\n```nosuchlang\n<b>\n```\n")
    assert '<pre class="highlight"><code class="language-python">' in out.html
    assert '<span class="k">if</span>' in out.html
    assert "&lt;x&gt;" in out.html
    assert "&lt;b&gt;" in out.html and "<b>" not in out.html


def test_tables_admonitions_strikethrough() -> None:
    out = r('| a | b |\n|---|---|\n| 1 | 2 |\n\n!!! warning "Careful"\n    text\n\n~~old~~\n')
    assert "<table>" in out.html and "<td>2</td>" in out.html
    assert '<div class="admonition warning">' in out.html and "Careful" in out.html
    assert "<s>old</s>" in out.html


def test_relative_links_become_markers_with_source_lines() -> None:
    out = r(
        "Intro.\n\nSee [b](../guides/b.md#x) and [c](c.md),\n"
        "[site](/news/) [web](https://a.org/) [me](#top).\n"
    )
    kinds = {(x.target, x.kind, x.line) for x in out.links}
    assert ("guides/b.md#x", "content", 7) in kinds
    assert ("docs/c.md", "content", 7) in kinds
    assert ("/news/", "site", 8) in kinds
    assert ("https://a.org/", "external", 8) in kinds
    assert ("#top", "anchor", 8) in kinds
    assert 'href="@@L:guides/b.md#x@@"' in out.html


def test_excerpt_is_text_before_more_or_first_paragraph() -> None:
    with_more = r("First *para*\nline two.\n\n## H\n\nSecond.\n\n<!--more-->\n\nThird.\n")
    assert "Second." in with_more.excerpt_html and "Third" not in with_more.excerpt_html
    assert "<h2" not in with_more.excerpt_html  # ids would collide on list pages
    assert with_more.excerpt_text.startswith("First para line two.")
    plain = r("One.\n\nTwo.\n")
    assert plain.excerpt_html == "<p>One.</p>\n"


def test_raw_html_in_markdown_passes_but_text_is_escaped() -> None:
    out = r("a < b & c\n")
    assert "a &lt; b &amp; c" in out.html


def test_slugify() -> None:
    assert slugify("Quick start: the client!") == "quick-start-the-client"
    assert slugify("???") == "section"


def test_a_content_links_target_is_its_markers_path() -> None:
    from cernvm_build.site import markdown

    for href in ("a.md", "../b/c.md#x", "x@y.md", "a@@b.md#f", "@", "/docs/", "#top", "https://x.y/@z"):
        new, kind = markdown._resolve(href, "docs/a", "/base/")
        expected = markdown.MARKER.sub(r"\1", new) if kind == "content" else new
        assert markdown._target(new, kind) == expected, href


def test_admonitions_are_found_where_the_pattern_finds_them() -> None:
    from cernvm_build.site import mdtree

    texts = ("!!! note\n    x\n", "a\n  ??? tip\n", "???+ open\n", "text !!! not\n", "a ??? b\n", "!!", "?")
    for text in texts:
        assert mdtree.has_admonition(text) == (mdtree.ADMONITION.search(text) is not None), text
    assert [mdtree.has_admonition(t) for t in texts[:3]] == [True] * 3


def test_each_link_of_a_long_paragraph_gets_its_own_line() -> None:
    """A paragraph of 3,000 links (past the Rust parser's limit: markdown-it-py's path) gave every link
    the first line holding its href (here all the first), found by testing each line from the
    paragraph's start: quadratic, 20k such links took 13 s."""
    body = "".join(f"[x{i}](#a) and [y](<a b>)\n" for i in range(3000))
    links = render(body, src_path="p.md", first_line=4, base_path="/").links
    assert [(link.target, link.line) for link in links[:4]] == [("#a", 4), ("a b", 4), ("#a", 5), ("a b", 5)]
    assert [link.line for link in links[::2]] == list(range(4, 3004))


def test_a_code_blocks_key_is_the_sha256_of_salt_language_and_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key the state keeps a highlighted block by (``markdown.code_key``), however it is hashed: a
    key made another way would miss every block an earlier build kept; another salt (the code edited)
    makes other keys."""
    import hashlib

    from cernvm_build.site import markdown

    def want(salt: bytes, lang: str, code: str) -> str:
        return hashlib.sha256(salt + lang.encode() + b"\0" + code.encode()).hexdigest()

    cases = (("python", "print(1)\n"), ("", "x"), ("bash", "é\0\n"))
    for lang, code in cases:
        assert markdown.code_key(lang, code) == want(markdown.code_salt(), lang, code)
    monkeypatch.setattr(markdown, "code_salt", lambda: b"another salt")
    for lang, code in cases:
        assert markdown.code_key(lang, code) == want(b"another salt", lang, code)
