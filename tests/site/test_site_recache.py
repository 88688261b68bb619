"""recache: compiled patterns (and refirst's answers) kept in the build state between builds."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pygments.lexers import get_lexer_by_name
from sitehelpers import tree

from bench.site_corpus import CODE
from cernvm_build.site import cache, lexfast, recache, refirst
from cernvm_build.site import markdown as md_mod

#: the site's languages and others (``test_site_lexfast``'s)
LANGUAGES = (
    *("python", "bash", "ini", "toml", "perl", "rust", "javascript", "html", "nginx", "diff", "sql", "yaml"),
)


@pytest.fixture(autouse=True)
def uncached() -> Iterator[None]:
    re.purge()  # every re.compile below reaches the compiler (re keeps the last 512 it made)
    yield
    re.purge()


def _lexer_patterns() -> list[tuple[str, int]]:
    """The (pattern, flags) of the rules of real lexers, as Pygments compiled them."""
    found: dict[tuple[str, int], None] = {}
    for lang in LANGUAGES:
        lexer = get_lexer_by_name(lang)
        for rules in lexer._tokens.values():
            for match, _action, _new in rules:
                found[match.__self__.pattern, match.__self__.flags] = None
    return list(found)


def _kept(pairs: list[tuple[str | bytes, int]]) -> dict[str, bytes]:
    """The state's entries after compiling ``pairs`` on a cold state."""
    re.purge()
    patterns = recache.Patterns({})
    with recache.kept(patterns):
        for p, f in pairs:
            re.compile(p, f)
    entries = patterns.entries()
    assert entries is not None
    re.purge()
    return entries


def test_real_lexer_patterns_made_from_kept_code_are_the_compiled_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "".join(code.format(n=7) for code in CODE.values())[:4000] + "\x00 ünï ``` }}} $(( ${x:-y} `c`\n"
    # and lexfast's alternations of them, as highlighting the text compiles them
    monkeypatch.setattr(lexfast, "JOIN_AFTER", 1)
    monkeypatch.setattr(lexfast, "_JOINED", {})
    joined = recache.Patterns({})
    with recache.kept(joined):
        for lang in LANGUAGES:
            list(md_mod._lexer(lang).get_tokens_unprocessed(text))  # type: ignore[union-attr]
    alternations = [(p, f) for what, p, f, _held in joined.made if not what]  # not refirst's answers
    pairs = list(dict.fromkeys(_lexer_patterns() + alternations))
    assert len(alternations) > 100 and len(pairs) > 500
    entries = _kept(pairs)  # type: ignore[arg-type]
    patterns = recache.Patterns(entries)
    with recache.kept(patterns):
        made = [re.compile(p, f) for p, f in pairs]
    assert patterns.hits == len(pairs) and patterns.entries() is None  # nothing new to keep
    re.purge()
    for (p, f), ours in zip(pairs, made, strict=True):
        theirs = re.compile(p, f)
        assert ours is not theirs and ours == theirs  # same pattern, flags and code
        assert ours.groupindex == theirs.groupindex and ours.groups == theirs.groups
        found = [(m.span(), m.groups()) for m in ours.finditer(text)]
        assert found == [(m.span(), m.groups()) for m in theirs.finditer(text)], p


def test_bytes_and_named_groups_round_trip() -> None:
    pairs: list[tuple[str | bytes, int]] = [(rb"\n(?P<fence>`{3,})x", re.M), (r"(?P<a>ß)|(?i:k)", 0)]
    entries = _kept(pairs)
    patterns = recache.Patterns(entries)
    with recache.kept(patterns):
        made = [re.compile(p, f) for p, f in pairs]
    assert patterns.hits == 2
    assert made[0].match(b"\n````x").group("fence") == b"````"  # type: ignore[union-attr]
    assert made[1].fullmatch("K") and made[1].match("ß").lastgroup == "a"  # type: ignore[union-attr]


def test_a_broken_foreign_or_refused_entry_is_compiled_again() -> None:
    p = r"(a|b)+c"
    entries = _kept([(p, 0)])
    k = recache.key(p, 0)
    other = _kept([(r"x", 0)])[recache.key(r"x", 0)]
    made_for, flags, sre_flags, code, *rest = pickle.loads(entries[k])
    refused = pickle.dumps((made_for, flags, sre_flags, type(code)("I", [1, 2, 3]), *rest))
    for blob in (b"not a pickle", other, refused):  # unreadable; made for another pattern; invalid code
        patterns = recache.Patterns({**entries, k: blob})
        re.purge()
        with recache.kept(patterns):
            got = re.compile(p)
        re.purge()
        assert patterns.hits == 0 and got == re.compile(p) and got.match("abd") is None
        assert got.match("abbc")
        assert patterns.entries() is not None  # compiled now: kept for the next build


def test_another_pythons_entries_are_neither_used_nor_kept() -> None:
    entries = _kept([(r"a+", 0)])
    foreign = "f" * 32  # an entry only the other Python's memo has
    patterns = recache.Patterns({**entries, foreign: b"x", "": b"another Python"})
    assert patterns.known == {}
    with recache.kept(patterns):
        re.compile(r"a+")
    kept = patterns.entries()
    assert patterns.hits == 0 and kept == entries and foreign not in kept


def test_a_pygments_upgrade_or_an_edit_of_the_code_starts_a_new_memo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code = tmp_path / "lexfast.py"
    code.write_text("# one version\n")
    monkeypatch.setattr(recache, "_MADE_BY", (code,))
    monkeypatch.setattr(recache, "_GENERATION", [])
    entries = _kept([(r"a+", 0)])
    assert recache.Patterns(entries).known == entries
    code.write_text("# another version\n")
    monkeypatch.setattr(recache, "_GENERATION", [])
    assert recache.Patterns(entries).known == {}


def test_debug_compiles_print_their_code_and_are_not_kept(capsys: pytest.CaptureFixture[str]) -> None:
    p = r"a[b]c"
    patterns = recache.Patterns({})
    with recache.kept(patterns):
        re.compile(p, re.DEBUG)
    assert "LITERAL" in capsys.readouterr().out and patterns.entries() is None
    # an entry for it (as a build before this rule could have kept) is not used either
    entries = _kept([(p, 0)])
    made_for, _flags, *held = pickle.loads(entries[recache.key(p, 0)])
    debug = pickle.dumps((made_for, re.DEBUG, *held))
    patterns = recache.Patterns({**entries, recache.key(p, re.DEBUG): debug})
    re.purge()
    with recache.kept(patterns):
        assert re.compile(p, re.DEBUG).match("abc")
    assert "LITERAL" in capsys.readouterr().out and patterns.hits == 0


class Named(str):
    """A ``str`` subclass that pickles: its entry would be refused on every use (type checked)."""


def test_str_subclasses_and_entries_that_do_not_pickle_are_not_kept() -> None:
    class Local(str):  # defined in a function: does not pickle
        pass

    patterns = recache.Patterns({})
    with recache.kept(patterns):
        assert re.compile(Local("xy")).match("xy") and re.compile(Named("q+")).match("qq")
        assert recache.remembered("a fact", "xy", 0, lambda: lambda: 1)() == 1  # a lambda: does not pickle
        re.compile(r"z+")
    entries = patterns.entries()  # the build goes on: only what pickles is kept
    assert entries is not None and set(entries) == {"", recache.key(r"z+", 0)}


def test_a_python_whose_re_is_otherwise_keeps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recache, "_compiler", None)
    patterns = recache.Patterns({})
    with recache.kept(patterns):
        assert re.compile(r"a(b)").match("ab")
    assert patterns.entries() is None


def test_refirst_answers_are_kept_until_refirst_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    pattern = re.compile(r"[ab]c|d")
    patterns = recache.Patterns({})
    with recache.kept(patterns):
        first = refirst.first_chars(pattern)
    assert first == frozenset("abd")
    entries = patterns.entries()
    assert entries is not None

    def parse_again(p: re.Pattern[str]) -> frozenset[str] | None:
        raise AssertionError("parsed again")

    monkeypatch.setattr(refirst, "_first_chars", parse_again)
    patterns = recache.Patterns(entries)
    with recache.kept(patterns):
        assert refirst.first_chars(pattern) == first and patterns.hits == 1
    # an edit of refirst.py starts a new memo (the memo's tag hashes it): no old answer is read
    assert Path(refirst.__file__) in recache._MADE_BY


#: a build in a fresh process (no lexer made yet), printing how many patterns it made from kept entries
_BUILD = """
import contextlib, sys
from pathlib import Path
from cernvm_build.site import recache
sys.path.insert(0, 'tests/site')
from sitehelpers import build_site
real, hits = recache.kept, []

@contextlib.contextmanager
def counted(patterns):
    with real(patterns):
        yield
    hits.append(patterns.hits)

recache.kept = counted
build_site(Path(sys.argv[1]), Path(sys.argv[2]))
print(sum(hits))
"""


def test_a_build_keeps_the_patterns_and_the_next_render_makes_them_from_it(
    site: Path, site_cache: Path
) -> None:
    (site / "content" / "code.md").write_text(
        '# Code\n\n```python\ndef f(x):\n    return x ** 2  # sq\n```\n\n```bash\necho "$HOME" | wc -c\n```\n'
    )
    out = site.parent / "out"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "CERNVM_CACHE_DIR": str(site_cache)}

    def build() -> int:  # in a fresh process: no lexer made yet (this one's tests made them)
        run = subprocess.run(
            [sys.executable, "-c", _BUILD, str(site), str(out)],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        return int(run.stdout.split()[-1])

    assert build() == 0
    first = tree(out)
    (state_file,) = site_cache.rglob("state.sqlite")
    state = cache.State(state_file)
    kept = state.memo(recache.MEMO)
    assert len(kept) > 100 and kept[""] == recache._generation()
    with state.db:  # every page rendered and every block highlighted again
        for table in ("md", "md_meta", "md_head", "code", "snapshot"):
            state.db.execute(f"DELETE FROM {table}")
    state.close()
    shutil.rmtree(out)
    assert build() > 100
    assert tree(out) == first


#: a cold warm-up in a fresh process (no lexer made yet), printing what it did as JSON
_WARM = """
import json, os, sys, time
from pathlib import Path
from cernvm_build.site import build, recache, sources
from cernvm_build.site import markdown as md_mod
jobs, page = int(sys.argv[1]), Path(sys.argv[2])
ran = []

def meanwhile():
    ran.append(os.getpid())
    time.sleep(0.5)  # (the forked process takes a language meanwhile)

patterns = recache.Patterns({})
with recache.kept(patterns):
    todo = [sources.Source("k", page.name, str(page), "/", "")]
    done = sources.warm_highlighting(todo, None, jobs, meanwhile)
print(json.dumps({
    "done": done, "ran": [p == os.getpid() for p in ran], "hits": patterns.hits,
    "keys": sorted(patterns.entries() or {}), "lexers": md_mod._lexer.cache_info().currsize,
    "parser": "markdown_it_pyrs" in sys.modules,
}))
"""


def test_a_cold_warm_up_is_shared_with_a_forked_process(tmp_path: Path) -> None:
    """(sp20b) With two jobs and no kept patterns, a forked process makes lexers while this one does
    the builder's work (``meanwhile``) and makes the Markdown parser; this one then makes them from the
    patterns it compiled, none parsed again, and keeps the same entries as a warm-up in one process."""
    page = tmp_path / "a.md"
    page.write_text("```python\nx = 1\n```\n\n```bash\necho\n```\n\n```yaml\na: 1\n```\n")
    root = Path(__file__).resolve().parents[2]

    def warm(jobs: int) -> dict[str, object]:
        run = subprocess.run(
            [sys.executable, "-c", _WARM, str(jobs), str(page)],
            env={**os.environ, "PYTHONPATH": str(root)},
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        got: dict[str, object] = json.loads(run.stdout)
        return got

    one, two = warm(1), warm(2)
    assert one["done"] is False and one["ran"] == [] and one["hits"] == 0
    assert two["done"] is True and two["ran"] == [True]  # here, once
    assert isinstance(two["hits"], int) and two["hits"] > 0  # made from the forked process's patterns
    # every entry a one-process warm-up keeps (and the Markdown parser's module patterns)
    assert set(one["keys"]) <= set(two["keys"]) and len(one["keys"]) > 100  # type: ignore[arg-type,call-overload]
    assert two["lexers"] == one["lexers"] == 3
    assert two["parser"] is True and one["parser"] is False  # made meanwhile, not by the first page
