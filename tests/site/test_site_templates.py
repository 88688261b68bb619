"""The site's jinja2 environment (cernvm_build/site/templates.py): its autoescaped output (a plain
string escaped to a ``str``, not wrapped in ``Markup``) is stock jinja2's, byte for byte, for every kind of
value, in pages, macros, blocks, ``{% set %}`` blocks and autoescaping decided while rendering; compiled
templates kept in its bytecode cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
from markupsafe import Markup

from cernvm_build.errors import BuildError
from cernvm_build.site import templates


class _Html:
    def __html__(self) -> str:
        return "<i>own</i>"


class _Text(str):
    pass


class _Safe(Markup):
    """A Markup subclass with its own ``__html__``: escaped through it, not passed on as it is."""

    def __html__(self) -> Markup:
        return Markup("<em>own</em>")


#: every kind of value a context holds: text that needs escaping, Markup, a Markup subclass, numbers,
#: None, booleans (autoescape decided while rendering), a str subclass, an object with ``__html__``, a list
VALUES: dict[str, Any] = {
    "text": "<script>alert('x')</script> & \"co\"",
    "plain": "no specials",
    "markup": Markup("<b>safe</b> &amp;"),
    "safe": _Safe("<b>kept</b>"),
    "on": True,
    "off": False,
    "number": 3,
    "none": None,
    "sub": _Text("<sub> & 'x'"),
    "html": _Html(),
    "items": ["<a>", Markup("<b>"), 1],
}

BASE = "<title>{{ text }}</title>{% block body %}{% endblock %}<p>{{ markup }}</p>\n"
MACROS = "{% macro item(x) %}<li>{{ x }}|{{ x ~ '<' }}</li>{% endmacro %}"
PAGE = """{% extends "base.html" %}{% from "macros.html" import item %}
{% block body %}{{ plain }} {{ number }} {{ none }} {{ sub }} {{ html }} {{ text|upper }}
{% for v in items %}{{ item(v) }}{% endfor %}
{% set held %}<q>{{ text }}</q>{% endset %}{{ held }} {{ held|length }}
{% filter lower %}{{ text }}{% endfilter %} {{ "%s<" % text }} {{ text if number else markup }}
{% autoescape false %}{{ text }}{% endautoescape %} {{ safe }}
{% autoescape on %}{{ text }} {{ safe }}{% endautoescape %} {% autoescape off %}{{ text }}{% endautoescape %}
{% endblock %}
"""


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    for name, text in (("base.html", BASE), ("macros.html", MACROS), ("page.html", PAGE)):
        (folder / name).write_text(text)
    return folder


def test_the_output_is_stock_jinjas(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    stock = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=jinja2.select_autoescape(["html", "xml", "htm"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    want = stock.get_template("page.html").render(VALUES)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;co&#34;" in want  # escaped at all
    assert "<script>alert('x')</script>" in want  # the autoescape-false block
    assert want.count("<script>") == 2 and want.count("&lt;script&gt;") == 6  # off at render time too
    assert "<em>own</em>" in want and "kept" not in want  # the Markup subclass's own __html__
    env = templates.environment(folder)
    assert env.render("page.html", VALUES) == want
    # the generated code calls the environment's escape (the cheaper one): not stock jinja2's code
    code = env.env.compile(PAGE, "page.html", raw=True)
    assert "environment.escape_out(" in code


def test_escape_out_is_escape_as_text() -> None:
    from markupsafe import escape

    out = templates._dict_first().escape_out
    for value in (*VALUES.values(), "", "&&", "\u00e9<\U0001f600>"):
        got = out(value)
        assert str(got) == str(escape(value)), value
    assert type(out("<x>")) is str  # a plain string's: the str, not a Markup made for it


def test_compiled_templates_are_kept_and_used(tmp_path: Path) -> None:
    folder, cache = _folder(tmp_path), tmp_path / "bytecode"
    cache.mkdir()
    first = templates.environment(folder, cache).render("page.html", VALUES)
    kept = sorted(p.name for p in cache.iterdir())
    assert len(kept) == 3 and all(p.startswith("__jinja2_out1_") for p in kept)
    # a second build loads them (compiling is not called) and renders the same
    env = templates.environment(folder, cache)
    env.env.compile = None  # type: ignore[method-assign]
    assert env.render("page.html", VALUES) == first


def test_an_undefined_value_is_still_an_error(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "bad.html").write_text("<p>{{ nosuch }}</p>")
    with pytest.raises(BuildError, match="undefined value"):
        templates.environment(folder).render("bad.html", {})


@pytest.mark.parametrize(
    ("base", "message"),
    [("x\n{{ 1/0 }}", "ZeroDivisionError: division by zero"), ('x\n{{ 1 + "a" }}', "TypeError: unsupported")],
)
def test_an_error_the_templates_code_raises_names_its_file_and_line(
    tmp_path: Path, base: str, message: str
) -> None:
    """It was the exception's traceback through jinja2, exit 1."""
    (tmp_path / "base.html").write_text(base)
    (tmp_path / "page.html").write_text('{% extends "base.html" %}')
    with pytest.raises(BuildError, match=message) as e:
        templates.environment(tmp_path).render("page.html", {})
    assert str(e.value.where) == f"{tmp_path / 'base.html'}:2" and e.value.hint


def test_a_template_that_includes_itself_is_one_line_at_its_include(tmp_path: Path) -> None:
    """It was a RecursionError traceback (pr25a 8)."""
    (tmp_path / "base.html").write_text('x\n{% include "base.html" %}\n')
    (tmp_path / "page.html").write_text('{% extends "base.html" %}')
    with pytest.raises(BuildError, match="includes, imports or calls itself") as e:
        templates.environment(tmp_path).render("page.html", {})
    assert str(e.value.where) == f"{tmp_path / 'base.html'}:2" and e.value.hint


@pytest.mark.parametrize(
    ("base", "message"),
    [("x\n{% if %}", "Expected an expression"), ("x\n{{ 1 | nosuchfilter }}", "No filter named")],
)
def test_a_syntax_error_in_an_extended_template_names_its_file_and_line(
    tmp_path: Path, base: str, message: str
) -> None:
    """Only the page's own template was compiled under a check: an error in the one it extends (found
    while rendering) was jinja2's traceback, exit 1."""
    (tmp_path / "base.html").write_text(base)
    (tmp_path / "page.html").write_text('{% extends "base.html" %}')
    with pytest.raises(BuildError, match=message) as e:
        templates.environment(tmp_path).render("page.html", {})
    assert str(e.value.where) == f"{tmp_path / 'base.html'}:2" and e.value.hint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{% include "../../../../../../etc/passwd" %}', "is not a path inside templates/"),
        ('{% include "/etc/passwd" %}', "is not a path inside templates/"),
        (b"<p>\xff</p>", "not UTF-8 text"),
    ],
    ids=["dotdot", "absolute", "not-utf8"],
)
def test_a_template_outside_the_folder_or_not_utf8_is_one_line(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    """An include of '/etc/passwd' or '../…' was read and hashed, then jinja2's TemplateNotFound
    traceback; a template not UTF-8 was a UnicodeDecodeError one (pr19a 10)."""
    (tmp_path / "page.html").write_bytes(text if isinstance(text, bytes) else text.encode())
    env = templates.environment(tmp_path)
    with pytest.raises(BuildError, match=message):
        env.closure_hash("page.html")
    with pytest.raises(BuildError):
        env.render("page.html", {})


def test_a_template_name_that_is_not_utf8_is_hashed(tmp_path: Path) -> None:
    import os

    (tmp_path / "page.html").write_text("x")
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.html"), "wb") as f:
        f.write(b"y")
    assert len(templates.environment(tmp_path).folder_hash()) == 64


def test_a_template_past_the_cap_is_refused_not_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A template larger than MAX_TEMPLATE was read as its first MAX_TEMPLATE + 1 bytes (``read_regular``
    without ``read_capped``'s length check): a cut template rendered without a word."""
    monkeypatch.setattr(templates, "MAX_TEMPLATE", 16)
    (tmp_path / "page.html").write_text("<p>" + "x" * 40 + "</p>")
    with pytest.raises(BuildError, match="larger than 16 bytes"):
        templates.environment(tmp_path).closure_hash("page.html")
    (tmp_path / "small.html").write_text("<p>ok</p>")
    assert templates.environment(tmp_path).render("small.html", {}) == "<p>ok</p>"
