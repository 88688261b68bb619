"""Front matter: the plain ``key: "text"`` / ``key: 123`` / ``key: some words`` form is read without YAML,
to the same values."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml

from cernvm_build.errors import BuildError
from cernvm_build.site import frontmatter

# each is read without YAML: the values must be YAML's, types included
PLAIN = [
    'title: "On platforms where the lightweight pthread"\nweight: 7\n',
    'title: ""\n',
    'title: "  spaced # not a comment: really  "\nweight: 123456789012345678\n',
    'title: "<script>alert(1)</script> & \'q\'"\ndescription: "ünïcödé 😀"\n',
    'weight: 1\nlayout_2: "x"\n',
    "title: Page 5 about replica\nweight: 5\n",  # the bench corpus's
    "title: plain words\n",
    "title: e.g. a-b, c/d (e) 'f' +g -h x.y_z\n",
    "title: Yes please\nlayout: nothing\ndescription: Null and void\n",
    "title: onboarding\n",
]

# each must go to YAML (a value or key the plain rule would read otherwise, or a form it does not know)
NOT_PLAIN = [
    "on: 3\n",  # a bool key
    'yes: "a"\n',
    "null: 1\n",
    "weight: 007\n",  # octal in YAML 1.1
    "weight: 0\n",
    "weight: -1\n",
    "weight: 1_000\n",
    "weight: 1:30\n",  # sexagesimal
    'title: "a\\tb"\n',  # an escape
    'title: "a\tb"\n',  # a tab inside the quotes
    'title: "a\u2028b"\n',
    'title: "a" \n',  # trailing space
    'title: "a"\ntitle: "b"\n',  # a repeated key
    "title: a\ntitle: b\n",
    "draft: yes\n",  # bools and nulls unquoted, in any case
    "draft: No\n",
    "draft: OFF\n",
    "draft: y\n",
    "title: null\n",
    "title: NULL\n",
    "title: a: b\n",  # a mapping
    "title: a #comment\n",
    "title: a  b\n",  # two spaces (kept by YAML: left to it)
    "title: a \n",
    "title: ~\n",
    "title: .inf\n",
    "title: -a\n",
    "title: *a\n",
    "title: ünï\n",
    'Title: "a"\n',
    'title: "a"',  # no final line break
    'title: "a"\n\nweight: 2\n',  # a blank line
    'title: "a"\r\n',
    "tags: [a, b]\n",
    "date: 2020-01-02\n",
]


@pytest.mark.parametrize("raw", PLAIN)
def test_the_plain_form_is_read_without_yaml_to_yamls_values(raw: str) -> None:
    got = frontmatter._plain(raw)
    assert got is not None
    want = yaml.load(raw, Loader=yaml.SafeLoader)
    assert got == want
    assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
    assert frontmatter.parse(raw, "p.md") == want


@pytest.mark.parametrize("raw", NOT_PLAIN)
def test_any_other_form_goes_to_yaml(raw: str) -> None:
    assert frontmatter._plain(raw) is None


def test_what_the_plain_rule_takes_yaml_reads_to_the_same_values() -> None:
    # random lines of the characters that matter to YAML's plain scalars and indicators, and of the
    # words it reads as other types: whatever the rule takes, YAML reads to the same value and type
    import random

    rng = random.Random(17)
    chars = "aAyYnNoOtTfFeEsSlLuU019 _.,'()/+-:#!&*~<=\"[]{}|>%@`?\\\t"
    words = ["yes", "No", "NULL", "on", "Off", "true", "y", "n", "Null", "e.g.", "a-b", "1.0", "2020-01-02"]
    words += ["0x1f", ".inf", "~", "<<", "=", "x"]
    taken = 0
    for _ in range(20_000):
        if rng.random() < 0.3:
            value = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
        else:
            value = "".join(rng.choice(chars) for _ in range(rng.randint(0, 12)))
        raw = f"{rng.choice(['title', 'weight', 'on', 'a'])}: {value}\n"
        got = frontmatter._plain(raw)
        if got is None:
            continue
        taken += 1
        want = yaml.load(raw, Loader=yaml.SafeLoader)
        assert got == want, raw
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()], raw
    assert taken > 1_000


def test_an_error_after_plain_lines_still_names_the_file_and_line() -> None:
    with pytest.raises(BuildError) as e:
        frontmatter.parse('title: "a"\nweight: 2\ntags: [a\n', "p.md", first_line=2)
    assert "not valid YAML" in e.value.message
    assert e.value.where is not None and e.value.where.file == "p.md"
    assert e.value.where.line is not None and e.value.where.line >= 4


def test_a_value_memoised_under_an_older_loader_rule_is_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # a duplicate key: refused by the current rules; a memo from before that rule kept a value for it
    raw = "a: 1\na: 2\n"
    old = frontmatter.key(raw)
    stale = frontmatter.Memo({old: pickle.dumps({"a": 2})})
    assert stale.load(raw) == {"a": 2}  # same rules: the memo is used
    monkeypatch.setattr(frontmatter, "LOADER_VERSION", frontmatter.LOADER_VERSION + 1)
    assert frontmatter.key(raw) != old
    with pytest.raises(yaml.YAMLError):
        stale.load(raw)


def test_a_loader_rule_change_renders_unchanged_pages_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unchanged page's cached render carries its front matter parsed under the older rule:
    the render version, part of every page's cache key, changes with the loader's."""
    from cernvm_build.site import sources

    monkeypatch.setattr(sources, "_VERSION", [])
    before = sources.render_version()
    monkeypatch.setattr(sources, "_VERSION", [])
    monkeypatch.setattr(frontmatter, "LOADER_VERSION", frontmatter.LOADER_VERSION + 1)
    assert sources.render_version() != before


def _rendered_meta(tmp_path: Path, text: str, known_fm: dict[str, bytes] | None = None) -> dict[str, Any]:
    from cernvm_build.site import sources

    page = tmp_path / "p.md"
    page.write_text(text)
    got = sources._render_source(({}, known_fm or {}), sources.Source("k", "p.md", str(page), "/", ""))
    assert len(got) == 6, got
    return got[1]  # type: ignore[return-value]


def test_a_plain_front_matter_is_rendered_without_yaml_or_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plain form costs less to read again than its key's sha256: none is made, nor YAML asked."""

    def refused(*_a: object) -> None:
        raise AssertionError("not for a plain front matter")

    monkeypatch.setattr(frontmatter, "key", refused)
    monkeypatch.setattr(frontmatter, "yaml_load", refused)
    meta = _rendered_meta(tmp_path, "---\ntitle: Page 5 about replica\nweight: 5\n---\n\nText.\n")
    assert meta["fm"] == {"title": "Page 5 about replica", "weight": 5}
    assert meta["fm_key"] == ""


def test_a_yaml_front_matter_is_keyed_once_and_found_parsed_by_the_next_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = "title: Page\ntags: [a, b]\n"
    keyed = frontmatter.key
    calls: list[str] = []
    monkeypatch.setattr(frontmatter, "key", lambda text: calls.append(text) or keyed(text))
    meta = _rendered_meta(tmp_path, f"---\n{raw}---\n\nText.\n")
    assert meta["fm"] == {"title": "Page", "tags": ["a", "b"]}
    assert meta["fm_key"] == keyed(raw)
    assert calls == [raw]  # once: the memo's key is the meta's
    # the next build's render of the page (its body edited) takes the parsed value, not YAML
    monkeypatch.setattr(frontmatter, "yaml_load", lambda _t: pytest.fail("parsed again"))
    known = {meta["fm_key"]: pickle.dumps(meta["fm"])}
    again = _rendered_meta(tmp_path, f"---\n{raw}---\n\nOther text.\n", known)
    assert again["fm"] == meta["fm"] and again["fm_key"] == meta["fm_key"]
