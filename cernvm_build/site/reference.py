"""Reference pages generated from the code: the single source of truth is the code itself.

A content page asks for one with ``generate: <name>`` in its front matter; the generated Markdown is
appended to the page's own text (and is part of its cache key, so a changed help text re-renders it).
The builder is handed the generators it may use: these two, and the CLI adds its own reference
(``cli.reference.GENERATORS``) because only the CLI may import the CLI.
"""

from __future__ import annotations

from collections.abc import Callable

from ..bootloader import userdata
from ..profile import reference as profile_reference
from ..table import Kind, allowed_text


def md_cell(text: object) -> str:
    """``text`` as one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def profile_settings() -> str:
    return profile_reference.markdown()


def userdata_keys() -> str:
    """The bootloader's user-data table: each key, what it does and what it accepts."""
    rows = ["| key | meaning | accepts |", "|---|---|---|"]
    for s in sorted(userdata.SETTINGS, key=lambda s: s.key):
        accepts = ("on/off; " if s.kind is Kind.BOOL else "") + allowed_text(s, files=False)
        flag = f"; `cernvm-launch create {s.flag}`" if s.flag else ""
        rows.append(f"| `{md_cell(s.key)}` | {md_cell(s.help)} | {md_cell(accepts + flag)} |")
    return "\n".join(rows) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "profile-settings": profile_settings,
    "userdata-keys": userdata_keys,
}
