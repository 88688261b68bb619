"""The generated client-parameter reference names only options and keys the toolkit really has."""

from __future__ import annotations

import argparse

from cernvm_build.bootloader import userdata
from cernvm_build.cli.main import build_parser
from cernvm_build.cvmfs.clientparams import GROUPS, PARAMS
from cernvm_build.site.reference import client_parameters


def _cvmfs_options() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    cvmfs = sub.choices["cvmfs"]
    cmds = next(a for a in cvmfs._actions if isinstance(a, argparse._SubParsersAction))
    return {opt for p in cmds.choices.values() for a in p._actions for opt in a.option_strings}


def test_every_reader_option_and_userdata_key_exists() -> None:
    options = _cvmfs_options()
    keys = {s.key for s in userdata.SETTINGS}
    for p in PARAMS:
        assert p.group in GROUPS, p.name
        assert not p.reader or p.reader in options, (p.name, p.reader)
        assert not p.userdata or p.userdata in keys, (p.name, p.userdata)


def test_reference_lists_every_parameter_with_the_toolkit_equivalent() -> None:
    text = client_parameters()
    for p in PARAMS:
        assert f"`{p.name}`" in text
    row = next(line for line in text.splitlines() if "`CVMFS_REPOSITORY_TAG`" in line)
    assert "reader `--tag`" in row and "user data `cvmfs_tag`" in row


def test_help_text_with_angle_brackets_shows_in_the_rendered_reference() -> None:
    """A help's ``<fqrn>.pub`` and ``<dir>/keys/`` were raw HTML to Markdown (an unknown tag, shown as
    nothing): the command-line reference read "Default: for a local SOURCE dir, .pub or *.pub in
    /../keys/" (pr19a 6). Code spans are left as written."""
    from markdown_it import MarkdownIt

    from cernvm_build.cli.reference import markdown as cli_markdown
    from cernvm_build.site.reference import md_text, userdata_keys

    md = MarkdownIt("commonmark").enable("table")
    html = md.render(cli_markdown())
    assert "<fqrn>" not in html and "<dir>" not in html
    assert "Default: for a local SOURCE dir, &lt;fqrn&gt;.pub or *.pub in &lt;dir&gt;/../keys/" in html
    for text in ("<a> & `<b>` | c", "``x`<y>`` <z>"):
        cell = md.render(f"| h |\n|---|\n| {md_text(text)} |\n")
        assert "<a>" not in cell and "<z>" not in cell and "\\" not in cell, cell
        assert "<code>&lt;b&gt;</code>" in cell or "<code>x`&lt;y&gt;</code>" in cell, cell
    assert "<code>" in md.render(userdata_keys())  # the cells' own code spans stay code
