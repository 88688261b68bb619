"""The site's own search: the index the build writes (cernvm_build/site/search.py) queried by the very
script the browser runs (static/assets/search.js, under node), on the shipped site with real queries;
the stemmer and tokenizer the same on both sides; what a page contributes (article only, by section)."""

from __future__ import annotations

import bisect
import itertools
import json
import operator
import pickle
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sitehelpers import SEARCH_QUERIES as QUERIES
from sitehelpers import build_site, fragments

from bench.site_corpus import page_text
from cernvm_build.paths import data_dir
from cernvm_build.site import frontmatter, markdown, mdfast, model, search, stemmer
from cernvm_build.site.model import ContentText

NODE_RUNNER = Path(__file__).with_name("search_node.js")
SCRIPT = data_dir("site") / "static/assets/search.js"


def node_search(index: Path, **request: Any) -> dict[str, Any]:
    """Run search.js under node over the index folder (what the browser does, without one)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    proc = subprocess.run(
        [node, str(NODE_RUNNER), str(SCRIPT), str(index) + "/"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_only_the_files_whose_names_stay_are_fetched_revalidated(site: Path, tmp_path: Path) -> None:
    """shards.json and a shard's meta.json keep their names across builds: a copy a browser kept may be
    stale, so the script asks for them revalidated; buckets and fragment packs are named by their
    content and may come from any cache."""
    out = tmp_path / "out"
    build_site(site, out)
    fetched = node_search(out / "search-index", queries=[["configuring a squid proxy", 3]])["fetched"]
    kinds = {(rel.rsplit("/", 1)[-1] in ("shards.json", "meta.json"), fresh) for rel, fresh in fetched}
    assert kinds == {(True, True), (False, False)}, fetched


def marked(hit: dict[str, Any]) -> list[str]:
    return [p["text"] for p in hit["excerpt"] if p["mark"]]


def test_real_queries_land_on_their_heading(site: Path, tmp_path: Path) -> None:
    """The shipped site's index, queried by search.js under node."""
    out = tmp_path / "out"
    build_site(site, out)
    index = out / "search-index"
    extra = (
        ('"pin a tag"', 5),  # a phrase: only where the three words follow each other
        ('"tag a pin"', 5),
        ("configu", 5),  # the word being typed is a prefix
        ("stratum 1", 30),
        ("replic*", 5),
        ("zzyzx", 5),
        ("<img src=x onerror=alert(1)>", 5),
    )
    got = node_search(index, queries=[[q, 3] for q, _ in QUERIES] + [list(e) for e in extra])
    results = {r["query"]: r["hits"] for r in got["results"]}
    for query, want in QUERIES:
        hits = results[query]
        assert hits and hits[0]["url"] == want, (query, [h["url"] for h in hits])
    # results are data: page title, the heading, and an excerpt with the query's words marked
    squid = results["configuring a squid proxy"][0]
    assert (
        squid["heading"] == "Configuring a squid proxy"
        and squid["page"] == "Stratum 1 replication and site proxies"
    )
    assert "proxy" in [w.lower() for w in marked(squid)]
    assert [h["url"] for h in results['"pin a tag"']] == ["/docs/guides/snapshots/#pin-a-tag-on-the-client"]
    assert results['"tag a pin"'] == []
    assert results["configu"][0]["url"] == "/docs/quickstart/client/#configure"
    assert any(w.lower().startswith("configur") for w in marked(results["configu"][0]))
    # one-letter words are kept: "stratum 1" is not "stratum" (pages naming Stratum 0 only drop out)
    assert len(results["stratum 1"]) < len(
        node_search(index, queries=[["stratum", 30]])["results"][0]["hits"]
    )
    assert results["replic*"][0]["url"].startswith("/docs/guides/replication/")
    assert results["zzyzx"] == [] and results["<img src=x onerror=alert(1)>"] == []

    # the script cuts and stems every word of the shipped site as stemmer.py does
    texts = []
    for data in fragments(index):
        texts += [data["t"], *(h + " " + t for _id, h, t in data["s"])]
    texts += ["Ünïcode ﬁle naïve ΣΊΣΥΦΟΣ 2.11.5 CVMFS_HTTP_PROXY x" + "a" * 50, "İstanbul straße ½ ²"]
    words = sorted({w for t in texts for w in stemmer.words(t)})
    assert len(words) > 2000
    # and made-up words where Porter's rules meet ("y" after "y", doubled letters, every suffix)
    rng = random.Random(7)
    suffixes = ["", "s", "ies", "eed", "ed", "ing", "y", "ational", "ousness", "ical", "ement", "ion", "e"]
    words += sorted(
        {
            "".join(rng.choices("aeiouyybdlmnrstwx", k=rng.randrange(1, 9))) + rng.choice(suffixes)
            for _ in range(3000)
        }
    )
    got = node_search(out / "search-index", words=words, texts=texts)
    assert got["words"] == [stemmer.words(t) for t in texts]
    assert got["stems"] == [stemmer.stem(w) for w in words]

    # every built page's extract is the reference definition's (here: the site is built already)
    pages = sorted(p for p in out.rglob("*.html") if "search-index" not in p.parts)
    assert len(pages) > 20
    for path in pages:
        page = path.read_text()
        assert search.extract(page, "/p/") == reference_extract(page, "/p/"), path


def reference_extract(page: str, url: str) -> tuple[bytes, dict[str, str], tuple[int, int]]:
    """``search.extract`` as first written (a dict of positions per section, each (section, stem)
    entry formatted and merged): the faster definition must give exactly this."""
    title, secs = search.sections(page)
    parts: dict[str, list[str]] = {}
    count = total = 0
    for i, (_hid, head, text) in enumerate(secs):
        hw = [stemmer.stem(w) for w in stemmer.words(head)]
        tw = [stemmer.stem(w) for w in stemmer.words(text)]
        head_len = len(hw)
        length = head_len + len(tw)
        if not length:
            continue
        at: dict[str, list[int]] = {}
        for p, s in itertools.chain(enumerate(hw), enumerate(tw, head_len + 1)):
            at.setdefault(s, []).append(p)
        count += 1
        total += length
        for s, ps in at.items():
            entry = [i, length, head_len, ps[0], *map(operator.sub, ps[1:], ps[:-1])]
            parts.setdefault(s, []).append(",".join(map(str, entry)).join("[]"))
    frag = {"u": url, "t": title or url, "s": [list(s) for s in secs]}
    return search._json(frag), {w: ",".join(entries) for w, entries in parts.items()}, (count, total)


def test_words_are_the_regex_definition() -> None:
    """``stemmer.words`` cuts ASCII text with a translation table: the same words as the definition
    (``WORD`` over the lowercased text, longer than ``MAX_WORD`` dropped) on every ASCII character,
    letters that lowercase to ASCII ("\u212a" Kelvin, "\u0130") and random mixed text."""

    def reference(text: str) -> list[str]:
        return [w for w in stemmer.WORD.findall(text.lower()) if len(w) <= stemmer.MAX_WORD]

    rng = random.Random(11)
    chars = [chr(c) for c in range(160)] + list("\u212a\u0130\u00df\ufb01\u00e9\u2028\u3000_")
    texts = ["".join(map(chr, range(128))), "\u212aelvin KB", "x" * 41 + " y " + "z" * 40]
    for i in range(20000):
        texts.append("".join(rng.choices(chars[:128] if i % 2 else chars, k=rng.randrange(40))))
    for text in texts:
        assert stemmer.words(text) == reference(text), repr(text)


def test_ascii_text_is_cut_through_its_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ASCII text goes through ``bytes.translate`` (the str table's dict lookups cost ~2.5x): the
    bytes table maps every ASCII character as the str table does, and the str table is not read."""
    assert [chr(b) for b in stemmer._ASCII_BYTES[:128]] == [stemmer._ASCII_WORDS[c] for c in range(128)]
    assert stemmer._ASCII_BYTES[128:] == bytes(range(128, 256))
    monkeypatch.setattr(stemmer, "_ASCII_WORDS", {})
    assert stemmer.words("Pin_a TAG: cvmfs-server 2.11") == ["pin", "a", "tag", "cvmfs", "server", "2", "11"]
    assert stemmer.words("\u212aB of RAM") == ["kb", "of", "ram"]  # (Kelvin: lowercased to ASCII first)


def test_stems_are_the_stems_of_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """``stemmer.stems`` (the index writer's cut, through the memo's lookups) is ``stem`` of each of
    ``words``: words longer than ``MAX_WORD`` dropped wherever they are, seen once or again, before or
    after a text without one; the memo never keeps them and stays bounded."""
    monkeypatch.setattr(stemmer, "MEMO_WORDS", 50)  # cleared many times below
    stemmer._cache.clear()
    rng = random.Random(3)
    vocab = ["configuring", "proxies", "stratum", "1", "ünïcode", "ﬁle", "x" * 40, "y" * 41, "Z" * 60]
    vocab += ["".join(rng.choices("abcdeilnorstuy", k=rng.randrange(1, 12))) for _ in range(200)]
    for _ in range(3000):
        text = " ".join(rng.choices(vocab, k=rng.randrange(12)))
        assert stemmer.stems(text) == [stemmer.stem(w) for w in stemmer.words(text)], text
        assert all(len(w) <= stemmer.MAX_WORD for w in stemmer._cache)
        assert len(stemmer._cache) <= 51
    assert stemmer.stems("y" * 41) == [] and stemmer.stems("a " + "y" * 41 + " b") == ["a", "b"]
    assert stemmer.stem("configuring" * 4) == "configuringconfiguringconfiguringconfigur"


def _bench_page(i: int, rng: random.Random) -> str:
    body = markdown.render(
        page_text(i, 60, rng).split("---\n", 2)[2], src_path="docs/p.md", first_line=1, base_path="/"
    )
    return (
        f"<main data-search-body><aside data-search-ignore><a href='/'>nav</a></aside>"
        f"<article><h1>Page {i}</h1>{body.html}</article></main>"
    )


def test_the_extract_is_the_reference_one() -> None:
    """The bench corpus's pages, odd ones and cut-and-spliced ones, a section longer than the cached
    numbers: the same fragment, postings and statistics as ``reference_extract``."""
    rng = random.Random(5)
    pages = [_bench_page(i, rng) for i in range(40)]
    spliced = []
    for _ in range(200):
        a, b = rng.choice(pages), rng.choice(pages)
        i, j, k = rng.randrange(len(a)), rng.randrange(len(b)), rng.randrange(len(a))
        spliced.append(a[:i] + b[j : j + rng.randrange(2000)] + a[k:])
    long = (
        "<main data-search-body><h2 id='l'>Long x</h2><p>"
        + "a b c a d " * 1000
        + "</p><h3 id=m>x a</h3>x</main>"
    )
    # sections as long as the numbers made once (4,096 positions) and longer, whose last word is the first
    # of its stem there (the text of the last position)
    longer = f"<main data-search-body><h2 id=l>L</h2><p>{'a ' * 4094}end</p><h2 id=k>K</h2>{'b ' * 5000}end"
    for page in [*pages, *ODD_PAGES, *spliced, long, longer]:
        assert search.extract(page, "/p/") == reference_extract(page, "/p/"), page[:300]
    # "a": in the long section (its last position past the numbers made once) and in the next one
    entries = json.loads(f"[{search.extract(long, '/p/')[1]['a']}]")
    assert [e[:5] for e in entries] == [[1, 5002, 2, 3, 3], [2, 3, 2, 1]] and sum(entries[0][3:]) == 5001


@pytest.mark.timeout(60)
def test_an_unclosed_comment_runs_to_the_end_of_the_page_as_in_a_browser() -> None:
    """A comment with no ``-->`` was searched for again at each of its ``<!--``: a page of 50,000 of
    them (200 KB of raw HTML a Markdown page may hold) took ~40 s to index; it hides what follows."""
    page = "<main data-search-body><p>seen</p><!-- <p>hidden</p> <h2 id=x>H</h2></main>"
    assert search.sections(page) == ("", [("", "", "seen")])
    assert search.sections("<p>seen</p>" + "<!--" * 50_000 + "<p>hidden</p>") == ("", [("", "", "seen")])


def test_many_unclosed_pre_are_read_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each <pre> looked for its </pre> to the page's end: 200k of them (a 1 MB page) took ~40 s."""
    calls = 0
    real = search._PRE_END

    class Counting:
        def search(self, page: str, pos: int) -> Any:
            nonlocal calls
            calls += 1
            return real.search(page, pos)

    monkeypatch.setattr(search, "_PRE_END", Counting())
    _title, secs = search.sections("<p>a</p>" + "<pre>x" * 1000)
    assert calls == 1 and secs[0][2].split() == ["a"] + ["x"] * 1000


def test_a_page_gives_its_article_in_sections() -> None:
    page = (
        "<html><head><title>T</title><script>var x = '<main>';</script></head><body>"
        '<nav class="menu">Menu words</nav>'
        '<main id="main" data-search-body>'
        '<nav class="crumbs" data-search-ignore><a href="/">Home</a></nav>'
        "<h1>Page &amp; title</h1><p>Intro <strong>text</strong>, one<br>two.</p>"
        '<aside data-search-ignore><div><p>sidebar</p></div><h2 id="no">Not a section</h2></aside>'
        '<h2 id="first-part">First <code>part</code><a class="header-anchor" href="#first-part" '
        "data-search-ignore>#</a></h2><p>Body &lt;b&gt; of part one.</p><style>p { x: y }</style>"
        "<h4>Minor heading</h4><p>still part one</p>"
        '<h3 id="second">Second</h3><ul><li>a</li><li>b<img src="x.png" alt="no"></li></ul>'
        "</main><footer>Footer words</footer></body></html>"
    )
    title, secs = search.sections(page)
    assert title == "Page & title"
    assert secs == [
        ("", "Page & title", "Intro text, one two."),
        ("first-part", "First part", "Body <b> of part one. Minor heading still part one"),
        ("second", "Second", "a b"),
    ]
    frag, encoded, stats = search.extract(page, "/p/")
    postings = {w: json.loads(f"[{e}]") for w, e in encoded.items()}
    assert stats == (3, 6 + 12 + 3)
    assert json.loads(frag)["u"] == "/p/" and "menu" not in postings and "sidebar" not in postings
    # positions: heading words from 0, text after a gap; lengths count both
    assert postings["part"] == [[1, 12, 2, 1, 5, 5]]
    assert postings["titl"] == [[0, 6, 2, 1]]


ODD_PAGES = [
    "<main data-search-body><h2 id='x'>unclosed <p>text",
    "<main data-search-body></div></p><h2>no id</h2><h3 id=bare>Bare</h3>text</main>",
    "<main data-search-body><div data-search-ignore><p>hidden</main>",
    "<main data-search-body>" + "<div>" * 50000 + "deep" + "</div>" * 50000 + "</main>",
    "<main data-search-body><h2 id='a\"b'>q</h2><!-- <h2 id='c'>comment</h2> --><p a='>'>t</p>",
    "no markup at all",
    "",
]


@pytest.mark.parametrize(
    "page",
    ODD_PAGES,
    ids=["unclosed", "stray-closers", "unclosed-ignored", "deep", "quotes-comment", "plain", "empty"],
)
def test_odd_pages_give_a_bounded_extract(page: str) -> None:
    _title, secs = search.sections(page)
    frag, encoded, _stats = search.extract(page, "/odd/")
    postings = {w: json.loads(f"[{e}]") for w, e in encoded.items()}
    assert secs and json.loads(frag)["s"] == [list(s) for s in secs]
    assert all(e[0] < len(secs) for entries in postings.values() for e in entries)
    assert "comment" not in postings and "hidden" not in postings


@pytest.mark.parametrize(
    "extra",
    [(), ("\uff41wide", "\u00e9t\u00e9", "\u4e2d"), ("\uff41wide", "\U00020000x")],
    ids=["ascii", "bmp", "beyond-the-bmp"],
)
def test_a_shards_words_are_in_the_order_the_script_compares_them(extra: tuple[str, ...]) -> None:
    # search.js finds a word's bucket by comparing strings as JavaScript does (UTF-16 code units): a
    # word beyond U+FFFF (a surrogate pair, 0xD840…) sorts before U+FF41 there, after it by code point
    words = ("b", "a10", "a9", "Z", *extra)
    page = "<main data-search-body><h1>T</h1><p>" + " ".join(words) + "</p></main>"
    extracts = {"p/index.html": search.page_extract(page, "p/index.html", "/")}
    shard = search.shards({"p/index.html": "fp"})[0]
    files, entry = search.shard_files(shard, extracts)
    listed = [w for rel in sorted(files) if "/b/" in rel for w in json.loads(files[rel])]
    assert listed == sorted(listed, key=lambda w: w.encode("utf-16-be")) and entry["starts"] == [listed[0]]
    if "\U00020000x" in extra:
        assert listed.index("\U00020000x") < listed.index("\uff41wide")


def test_a_shards_postings_are_its_pages_extracts_numbered(monkeypatch: pytest.MonkeyPatch) -> None:
    # the state keeps a page's words and postings as two line-joined strings (``page_extract``); the
    # shard puts each page's number before its postings: what the browser reads is the pages' ``extract``
    # postings, page by page, whatever the pages hold (no word at all, a word in several sections)
    pages = {
        "a/index.html": "<main data-search-body><h1>Cache</h1><p>cache proxy cache</p>"
        '<h2 id="s">Proxy cache</h2><p>mount cache</p></main>',
        "b/index.html": "<main data-search-body><p></p></main>",
        "c/index.html": "<main data-search-body><h1>Mount</h1><p>proxy \u00e9t\u00e9 a b a</p></main>",
    }
    extracts = {out: search.page_extract(page, out, "/") for out, page in pages.items()}
    shard = search.shards(dict.fromkeys(pages, "fp"))[0]
    files, entry = search.shard_files(shard, extracts)
    got: dict[str, Any] = {}
    for rel in sorted(files):
        if "/b/" in rel:
            got.update(json.loads(files[rel]))
    want: dict[str, list[Any]] = {}
    count = total = 0
    for n, out in enumerate(shard.pages):
        _frag, postings, (sections_, words_) = search.extract(pages[out], search.page_url("/", out))
        count, total = count + sections_, total + words_
        for w, e in postings.items():
            want.setdefault(w, []).append([n, *json.loads(f"[{e}]")])
    assert got == want and (entry["sections"], entry["words"]) == (count, total)
    assert len(got["cach"]) == 1 and len(got["cach"][0]) == 3  # two sections of page 0
    # the extract's format is not the index files': a change of it keeps the shards' keys
    monkeypatch.setattr(search, "EXTRACT_VERSION", "x")
    assert search.shards(dict.fromkeys(pages, "fp")) == [shard]
    assert search.extract_key("a/index.html", "fp") == f"{search.VERSION}.x fp a/index.html"


def test_a_shard_made_where_its_pages_were_reads_their_postings_as_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the write step makes a shard in the process that made its pages' extracts: ``page_extract``
    # keeps each as the shard reads it (``into``), and the shard reads that, not the pickle again;
    # the files are the same bytes as from the extracts alone (pages with no word, several sections)
    pages = {
        "a/index.html": "<main data-search-body><h1>Cache</h1><p>cache proxy cache</p>"
        '<h2 id="s">Proxy cache</h2><p>mount cache</p></main>',
        "b/index.html": "<main data-search-body><p></p></main>",
        "c/index.html": "<main data-search-body><h1>Mount</h1><p>proxy \u00e9t\u00e9 a b a</p></main>",
    }
    kept: dict[str, search.Postings] = {}
    extracts = {out: search.page_extract(page, out, "/", into=kept) for out, page in pages.items()}
    assert sorted(kept) == sorted(pages) and kept["b/index.html"][1] == []
    for out, (_frag, blob) in extracts.items():
        stats, words, entries = pickle.loads(blob)
        assert kept[out] == (stats, words.split("\n") if words else [], entries)
    shard = search.shards(dict.fromkeys(pages, "fp"))[0]
    want = search.shard_files(shard, extracts)
    read: list[bytes] = []
    loads = pickle.loads
    monkeypatch.setattr(search.pickle, "loads", lambda blob: read.append(blob) or loads(blob))
    assert search.shard_files(shard, extracts, parsed=kept) == want and read == []
    assert search.shard_files(shard, extracts) == want and len(read) == len(pages)


#: Markdown pieces the hostile pages are made of: entities (complete, cut, without ``;``), escapes, nested
#: inline markup, code, links and images (titles and targets naming the ignore mark), Unicode spaces
_PIECES = (
    *("word", "two words", "&amp;", "&lt;b&gt;", "&copy;", "&#65;", "&", "&l", "t;", "&amp", "\\*"),
    *("*em*", "**strong *both***", "~~del~~", "`code & <x>`", "``a ` b``", "[link **x**](/x 't')"),
    *("[l](data-search-ignore)", '[l](/y "data-search-ignore")', "![alt *text*](i.png)", "<https://e.x/a>"),
    *("\u00a0", "\u2003", "x\u00a0y", "a_b", "\n", "  \n", "\\\n", "é", "İ", '"q"', ">", "&nbsp;", "&#0;"),
)
_BLOCKS = (
    *("# H1 {i}", "## H2 {i}", "### H3 *em* `c` [l](/l) {i}", "#### H4 {i}", "###### h6", "##", "## &amp;"),
    *("Setext {i}\nline two\n===", "Set  \nhard\n---", "> quote {i}\n> more", "- a\n- b\n  - c {i}"),
    *("3. x\n4. y", "- a\n\n  para\n\n- b", "```python\nx = 1 & 2 < 3\n```", "```nolang\n<&amp;>\n```"),
    *("    indented &\n", "---", "| a | b |\n|---|:-:|\n| `c` | *d* |\n| e &amp; | |", "> # in quote"),
    *("- ## in item", "<!--more-->", "<!-- a comment -->", "- ```\n  in item\n  ```", "[ref]\n\n[ref]: /r"),
    # raw HTML: the page is read whole (its text is the HTML's only)
    *("<div>\nraw *block*\n</div>", "text <b>raw</b> inline", "<!-- a --> b -->", "@@L:x.md@@ text"),
    "```\n\ufeffbom\n```",
)


def _hostile_markdown(rng: random.Random) -> str:
    blocks = []
    for i in range(rng.randint(1, 10)):
        if rng.random() < 0.5:
            blocks.append(rng.choice(_BLOCKS).format(i=i))
        else:
            blocks.append("".join(rng.choice(_PIECES) + rng.choice(("", " ", "\n")) for _ in range(9)))
    return "\n\n".join(blocks) + "\n"


#: pages around rendered Markdown (``{c}``): the doc template's shape, text and a heading before it
_AROUND = (
    '<main id="main" data-search-body>\n<div class="doc-grid"><aside class="sidebar" data-search-ignore>'
    "<p>side</p></aside><article><nav data-search-ignore>crumbs</nav><h1>Title &amp; co</h1>\n  {c}\n"
    '<ul class="tags" data-search-ignore><li>t</li></ul></article></div></main><footer>f</footer>',
    "<main data-search-body><p>before &am</p>{c}after <em>text</em></main>",
    '<main data-search-body>\n<h2 id="t">x</h2>{c}</main>',
    "<body>{c}</body>",
)
#: pages where the Markdown's text is not the page's there: it is read whole
_NOT_THERE = (
    "<main data-search-body><div data-search-ignore>{c}</div></main>",  # ignored
    "<main data-search-body><h2 id='h'>{c}</h2></main>",  # in a heading
    "<main data-search-body>{c}<p>{c}</p></main>",  # twice
    "<main data-search-body><!-- {c} --></main>",  # in a comment
    "<main data-search-body><p title='{c}'>x</p></main>",  # in a tag
    "<main data-search-body><pre>{c}</pre></main>",  # in a code block
    "<main data-search-body>" + "<div>" * 250 + "{c}</main>",  # deeper than tracked
)


def test_the_markdown_stages_text_is_the_pages_scan() -> None:
    """``search.sections`` of a page given its Markdown's ``ContentText`` (from the syntax tree,
    ``mdhtml``) is the scan of the whole page, on the shipped site's pages, bench corpus pages and
    hostile ones, in several templates; where the Markdown is not in the page as a whole element, or
    holds raw HTML, the page is read whole."""
    rng = random.Random(17)
    texts = [
        frontmatter.split_raw(p.read_text(), str(p))[1]
        for p in sorted((data_dir("site") / "content").rglob("*.md"))
    ]
    texts += [page_text(i, 60, rng) for i in range(10)]
    hostile = [_hostile_markdown(rng) for _ in range(250)]
    bogus = ContentText("zzbogus", [], "")
    taken = raw = 0
    for n, text in enumerate(texts + hostile):
        r = markdown.render(text, src_path="docs/p.md", first_line=1, base_path="/")
        if r.search is None:
            raw += n >= len(texts)
            continue
        taken += 1
        for around in _AROUND:
            page = around.replace("{c}", r.html)
            whole = search.sections(page)
            assert search.sections(page, (r.html, r.search)) == whole, (text, around)
            marks = r.html.count("data-search-ignore")
            if r.html and marks == r.html.count('class="header-anchor" data-search-ignore'):
                # the text did come from the Markdown stage
                assert search.sections(page, (r.html, bogus)) != whole
        for around in _NOT_THERE:
            page = around.replace("{c}", r.html)
            assert search.sections(page, (r.html, bogus)) == search.sections(page), (text, around)
    assert taken > len(texts) + 80 and raw > 40  # (both ways taken, on hostile pages too)
    # raw HTML or a link marker in the text: the Markdown stage cannot tell the page's text
    for text in ("<span>x</span>", "<div>\nx\n</div>", "a @@L:b.md@@ c", "```\n\ufeffx\n```"):
        assert markdown.render(text, src_path="p.md", first_line=1, base_path="/").search is None


def test_the_content_is_found_only_where_it_is_once() -> None:
    """``search._once``: where the content's first ``HEAD`` characters are once in the page it is
    checked whole there; where they are more often, the whole content is looked for (twice: -1)."""
    head = "<p>" + "h" * search.HEAD
    shown = head + "tail</p>"
    assert search._once(f"a{shown}b", shown) == 1
    assert search._once(f"a{head}other</p>b", shown) == -1  # its start there, not the rest
    assert search._once("a<p>b", shown) == -1
    assert search._once(f"{head}x {shown}", shown) == len(head) + 2  # its start twice, the whole once
    assert search._once(f"{shown}{shown}", shown) == -1
    assert search._once(f"{head}x {shown} {shown}", shown) == -1
    overlap = "<a" * search.HEAD  # a second copy may start inside the first
    assert search._once(overlap + "<a", overlap) == -1
    assert search._once(overlap, overlap) == 0


def test_one_heading_rule_makes_the_scan_and_the_renderers_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which headings start a section, and the title, are ``model.HEADING_ROLES``' for the index's scan
    of a page and for both renderers' text of its Markdown (``mdfast``, ``mdhtml``): with the rule
    changed (an h4 starts a section, an h3 is text) they still agree, and the sections did change."""
    text = "# Title\n\nintro\n\n## Two\n\na\n\n### Three\n\nb *c*\n\n#### Four\n\nd\n\n##### Five\n\ne\n"
    monkeypatch.setitem(model.HEADING_ROLES, "h4", model.SECTION)
    monkeypatch.delitem(model.HEADING_ROLES, "h3")
    assert mdfast.render_parts(text, slugify=markdown.slugify, highlight=str, resolve=lambda h: (h, ""))
    for renderer in ("mdfast", "mdhtml"):
        with monkeypatch.context() as m:
            if renderer == "mdhtml":
                m.setattr(mdfast, "render_parts", lambda *_a, **_k: None)
            r = markdown.render(text, src_path="docs/p.md", first_line=1, base_path="/")
        assert r.search is not None
        for around in _AROUND:
            page = around.replace("{c}", r.html)
            whole = search.sections(page)
            assert search.sections(page, (r.html, r.search)) == whole, (renderer, around)
        title, secs = search.sections(f"<main data-search-body>{r.html}</main>")
        assert title == "Title" and [(hid, head) for hid, head, _t in secs] == [
            ("", "Title"),
            ("two", "Two"),
            ("four", "Four"),
        ]
        assert secs[1][2] == "a Three b c"


def test_a_one_page_edit_rewrites_few_buckets() -> None:
    # buckets are cut where the words' hashes say (``search._cut``), not greedily by size, and named by
    # content: words added to or removed from a page (in a section of their own: other sections'
    # lengths, in each of their postings, stay), early in the shard's word order, make new files of the
    # buckets they are in (and of the heading "new": the section's length), not of buckets after them
    rng = random.Random(3)
    pages = {f"p{i:02}/index.html": _bench_page(i, rng) for i in range(60)}
    shard = search.shards(dict.fromkeys(pages, "fp"))[0]
    extracts = {out: search.page_extract(page, out, "/") for out, page in pages.items()}

    def buckets(extra: str) -> dict[str, bytes]:
        edited = pages["p07/index.html"].replace("</article>", f"<h2 id=new>New</h2><p>{extra}</p></article>")
        got = {**extracts, "p07/index.html": search.page_extract(edited, "p07/index.html", "/")}
        return {rel: data for rel, data in search.shard_files(shard, got)[0].items() if "/b/" in rel}

    before = buckets("")
    assert len(before) >= 10
    # a few KiB of postings each: more than the room left in a greedy cut's bucket
    for extra in ("aardvark " * 2000, "abacus 0zeta " * 1000, "1991 aardvark 2001 " * 700, "aa " * 3000):
        after = buckets(extra)
        for old, new in ((before, after), (after, before)):  # the words added, then removed
            was, now = (
                {w: v for data in f.values() for w, v in json.loads(data).items()} for f in (old, new)
            )
            changed = {w for w in was.keys() | now.keys() if was.get(w) != now.get(w)}
            firsts = sorted(next(iter(json.loads(data))) for data in new.values())
            holding = {bisect.bisect_right(firsts, w) - 1 for w in changed}
            written = {firsts.index(next(iter(json.loads(new[rel])))) for rel in new.keys() - old.keys()}
            # beyond the buckets of the words changed: at most the other half of a bucket split in two
            assert written and len(written - holding) <= 1, (extra[:20], sorted(written), sorted(holding))


def test_results_show_no_bidi_controls_and_no_overlong_parts(site: Path, tmp_path: Path) -> None:
    """A page's text is shown as data, but a U+202E reversed the rest of a result and one 200 KB word
    was a 200 KB excerpt: each shown part is cut to 300 characters and bidi controls removed."""
    (site / "content/docs/zz-hostile.md").write_text(
        "---\ntitle: Hostile \u202eeltit\n---\n## Quuxheading \u2067ab\u2069 \u202ereversed\n\n"
        "quuxword " + "z" * 5000 + " tail words here\n"
    )
    out = tmp_path / "out"
    build_site(site, out)
    got = node_search(out / "search-index", queries=[["quuxheading", 3], ["quuxword", 3]])
    for r in got["results"]:
        (hit,) = r["hits"]
        shown = [hit["page"], hit["heading"], *(p["text"] for p in hit["excerpt"])]
        assert not any(ch in text for text in shown for ch in "\u202e\u2067\u2069"), shown
        assert max(len(text) for text in shown) <= 301, [len(t) for t in shown]
    assert got["results"][0]["hits"][0]["heading"] == "Quuxheading ab reversed"
    long = [p["text"] for p in got["results"][1]["hits"][0]["excerpt"] if "z" * 250 in p["text"]]
    assert long and long[0].endswith("z\u2026")  # cut, and says so


def test_words_that_name_object_properties_are_searched_as_words(site: Path, tmp_path: Path) -> None:
    """'constructor' is a property of every JavaScript object: the query dropped it as seen already (no
    hits, or hits without it), and a phrase holding it on a site without it was a TypeError that broke
    the search (pr19a 15)."""
    (site / "content/docs/zz-ctor.md").write_text("---\ntitle: Objects\n---\nThe constructor builds one.\n")
    out = tmp_path / "out"
    build_site(site, out)
    queries = [
        ["constructor", 3],
        ["builds constructor", 3],
        ['"the constructor"', 3],
        ['"a constructor"', 3],
    ]
    got = node_search(out / "search-index", queries=queries)["results"]
    assert [[h["url"] for h in r["hits"]] for r in got] == [["/docs/zz-ctor/"]] * 3 + [[]]


def test_a_shard_merged_again_from_its_last_merge_makes_a_cold_merges_files() -> None:
    """``shard_files`` with the postings it merged last (``keep``, as ``site serve`` keeps them):
    after edits that add words no other page has, take a page's words away, empty a page, give a
    word to an earlier page than any before, and change every page, the files and the manifest entry
    are the ones made from the extracts alone; a shard of other pages is merged whole."""
    rng = random.Random(11)
    pages = {f"p{i:02}/index.html": _bench_page(i, rng) for i in range(30)}
    shard = search.shards(dict.fromkeys(pages, "fp"))[0]
    extracts = {out: search.page_extract(page, out, "/") for out, page in pages.items()}
    keep: dict[str, search.Merged] = {}
    assert search.shard_files(shard, extracts, keep) == search.shard_files(shard, extracts)
    kept = keep[shard.bundle]

    def edited(out: str, html: str) -> None:
        extracts[out] = search.page_extract(html, out, "/")
        assert search.shard_files(shard, extracts, keep) == search.shard_files(shard, extracts)
        assert keep[shard.bundle] is kept  # merged again where it changed, not whole

    extra = "<h2 id=x>Zebra</h2><p>aardvark quokka 1991 zebra zebra</p></article>"
    edited("p07/index.html", pages["p07/index.html"].replace("</article>", extra))
    edited("p07/index.html", pages["p07/index.html"])  # the words gone again
    edited("p00/index.html", pages["p00/index.html"].replace("</article>", extra))  # first page
    edited("p03/index.html", "<main data-search-body><article><h1>Empty</h1></article></main>")
    edited("p29/index.html", pages["p07/index.html"].replace("</article>", "<p>Edited. </p></article>"))
    for out in list(pages):
        extracts[out] = search.page_extract(pages[out].replace("<h1>", "<h1>Edited "), out, "/")
    assert search.shard_files(shard, extracts, keep) == search.shard_files(shard, extracts)
    other = search.shards(dict.fromkeys(list(pages)[:20], "fp2"))[0]
    assert other.bundle == shard.bundle and other.pages != shard.pages
    assert search.shard_files(other, extracts, keep) == search.shard_files(other, extracts)
    assert keep[shard.bundle] is not kept and keep[shard.bundle].pages == other.pages
