"""Front matter: the plain ``key: "text"`` / ``key: 123`` form is read without YAML, to the same values."""

from __future__ import annotations

import pickle

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
    "title: plain words\n",
    'title: "a"\ntitle: "b"\n',  # a repeated key
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
