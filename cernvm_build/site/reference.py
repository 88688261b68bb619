"""Reference pages generated from the code: the single source of truth is the code itself.

A content page asks for one with ``generate: <name>`` in its front matter; the generated Markdown is
appended to the page's own text (and is part of its cache key, so a changed help text re-renders it).
The builder is handed the generators it may use: these three, and the CLI adds its own reference
(``cli.reference.GENERATORS``) because only the CLI may import the CLI.

Each generator imports what it describes when it runs (deliberate lazy imports): a site without
generated pages never loads the profile, bootloader and cvmfs code, about 0.1 CPU-s of every build.
"""

from __future__ import annotations

import re
from collections.abc import Callable


def md_cell(text: object) -> str:
    """``text`` as one Markdown table cell (the text of a code span in one, too)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


#: a code span of a help text, whose text shows as written; and what Markdown reads as HTML outside one
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_HTML = re.compile(r"[<&]")


def md_text(text: object) -> str:
    """Help text as one Markdown table cell: ``md_cell``, and each '<' and '&' outside its code spans
    escaped. A help's ``<fqrn>.pub`` or ``<dir>/keys/`` was raw HTML to Markdown, an unknown tag that a
    browser shows as nothing: the reference read "Default: .pub or *.pub in /../keys/"."""
    cell = md_cell(text)
    out, at = [], 0
    for m in _CODE_SPAN.finditer(cell):
        out += [_HTML.sub(r"\\\g<0>", cell[at : m.start()]), m.group()]
        at = m.end()
    out.append(_HTML.sub(r"\\\g<0>", cell[at:]))
    return "".join(out)


def profile_settings() -> str:
    from ..profile import reference as profile_reference

    return profile_reference.markdown()


def userdata_keys() -> str:
    """The bootloader's user-data table: each key, what it does and what it accepts."""
    from ..bootloader import userdata
    from ..table import Kind, allowed_text

    rows = ["| key | meaning | accepts |", "|---|---|---|"]
    for s in sorted(userdata.SETTINGS, key=lambda s: s.key):
        accepts = ("on/off; " if s.kind is Kind.BOOL else "") + allowed_text(s, files=False)
        flag = f"; `cernvm-launch create {s.flag}`" if s.flag else ""
        rows.append(f"| `{md_cell(s.key)}` | {md_text(s.help)} | {md_text(accepts + flag)} |")
    return "\n".join(rows) + "\n"


def client_parameters() -> str:
    """The client's ``CVMFS_*`` parameters by group, with what the toolkit takes for each."""
    from ..bootloader import userdata
    from ..cvmfs import clientparams

    keys = {s.key for s in userdata.SETTINGS}
    out: list[str] = []
    for group in clientparams.GROUPS:
        out += [
            f"## {group.capitalize()}",
            "",
            "| parameter | meaning | default | in this toolkit |",
            "|---|---|---|---|",
        ]
        for p in (p for p in clientparams.PARAMS if p.group == group):
            if p.userdata and p.userdata not in keys:
                raise AssertionError(f"{p.name}: user-data key {p.userdata} is not in the bootloader's table")
            ours = [
                f"reader `{p.reader}`" if p.reader else "",
                f"user data `{p.userdata}`" if p.userdata else "",
            ]
            default = f"`{md_cell(p.default)}`" if p.default else "–"
            cells = (f"`{p.name}`", md_text(p.meaning), default, "; ".join(x for x in ours if x) or "–")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


GENERATORS: dict[str, Callable[[], str]] = {
    "profile-settings": profile_settings,
    "userdata-keys": userdata_keys,
    "client-parameters": client_parameters,
}
