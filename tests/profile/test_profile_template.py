"""jinja2 templates over the profile itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_build import profile

Write = Callable[[str, str], Path]


def test_templates_see_the_merged_profile_defaults_and_other_templates(write: Write) -> None:
    write(
        "parent",
        """
        extends: minimal
        description: "{{ name }} on EL{{ os.release }} ({{ os.arch }})"
        container:
          labels: {source: "cvmfs://{{ cvmfs.repository }}{{ cvmfs.path }}", title: "{{ description }}"}
        """,
    )
    child = write("child", "extends: parent\nos: {release: 8}\ncvmfs: {path: '/cvm{{ os.release }}'}\n")
    p = profile.load(child)
    # the parent's templates are rendered with the child's values
    assert p.description == "child on EL8 (x86_64)"
    assert p.cvmfs.path == "/cvm8"
    assert p.container.labels == {"source": "cvmfs://demo.cernvm.test/cvm8", "title": p.description}


def test_an_integer_setting_may_be_a_template(write: Write) -> None:
    p = profile.load(write("p", "extends: minimal\nbootloader: {release: '{{ os.release + 1 }}'}\n"))
    assert p.bootloader.release == 10


def test_undefined_names_are_errors_at_the_value(write: Write) -> None:
    path = write("p", "extends: minimal\ndescription: 'EL{{ os.relase }}'\n")
    with pytest.raises(profile.ProfileError) as e:
        profile.load(path)
    assert "p.yaml:2:14: description" in str(e.value.where)
    assert "relase" in str(e.value)


def test_a_template_that_refers_to_itself_is_an_error(write: Write) -> None:
    with pytest.raises(profile.ProfileError, match="do not settle"):
        profile.load(write("p", "extends: minimal\ndescription: 'x{{ description }}'\n"))


def test_templates_cannot_reach_python_internals(write: Write) -> None:
    path = write("p", "extends: minimal\ndescription: \"{{ ''.__class__.__mro__ }}\"\n")
    with pytest.raises(profile.ProfileError, match="description"):
        profile.load(path)


@pytest.mark.parametrize("expression", ["'x' * 10**9", "[1] * 10**9", "(2 ** 64) ** 2000"])
def test_runaway_templates_are_stopped(write: Write, expression: str) -> None:
    path = write("p", f'extends: minimal\ndescription: "{{{{ {expression} }}}}"\n')
    with pytest.raises(profile.ProfileError, match="description: template"):
        profile.load(path)
    small = write("q", "extends: minimal\ndescription: \"{{ '=' * 10 }}{{ 2 ** 10 }}\"\n")
    assert profile.load(small).description == "=" * 10 + "1024"


def test_template_syntax_is_checked_in_abstract_profiles_too(write: Write) -> None:
    path = write("block", "abstract: true\ndescription: '{{ os.release }'\n")
    errors = profile.check(path).errors
    assert len(errors) == 1 and "block.yaml:2:14: description: template syntax error" in str(errors[0])


@pytest.mark.parametrize(
    "expression",
    [
        "{{ 'x'|center(300000000) }}",
        "{{ 'x'|indent(300000000, true) }}",
        "{{ '%300000000s'|format('x') }}",
        "{{ '%*d' % (300000000, 1) }}",
        "{{ 'x'.zfill(300000000) }}",
        "{{ ('x' * 90000).replace('x', 'xx') }}",
        "{{ range(90000)|join('xy') }}",
        "{{ range(100000)|map('center', 90000)|list|length }}",
        "{{ range(1000)|list|tojson(indent=1000) }}",
        "{{ range(10)|batch(10**9, 'x')|list }}",
        "{{ lipsum(10**9) }}",
        "{% macro f() %}{% for i in range(100000) %}{{ os }}{% endfor %}{% endmacro %}{{ f()|length }}",
        "{% set l = [1] %}{{ l.extend(l) }}",
    ],
)
def test_templates_cannot_make_huge_values_or_run_long(write: Write, expression: str) -> None:
    path = write("p", f'extends: minimal\ndescription: "{expression}"\n')
    errors = profile.check(path).errors
    assert len(errors) == 1 and "p.yaml:2:14: description: " in str(errors[0]), errors
    assert "\n" not in str(errors[0]) and errors[0].hint


def test_the_limits_leave_ordinary_templates_alone(write: Write) -> None:
    text = (
        "extends: minimal\n"
        "description: \"{{ name ~ '-' ~ os.release }} {{ '%s-%02d'|format(name, 3) }} {{ '{:>5}'.format(1) }}"
        " {{ 'a,b'.split(',')|join('/') }} {{ name|center(9) }} {% for i in range(3) %}{{ i }}{% endfor %}"
        " {{ [1, 2] + [3] }} {{ 'ab' * 2 }}\"\n"
    )
    assert profile.load(write("p", text)).description == "p-9 p-03     1 a/b     p     012 [1, 2, 3] abab"
