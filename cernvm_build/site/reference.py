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


def md_cell(text: object) -> str:
    """``text`` as one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def profile_settings() -> str:
    return profile_reference.markdown()


def userdata_keys() -> str:
    rows = ["| key | meaning |", "|---|---|"]
    for name, text in sorted(userdata.KEYS.items()):
        rows.append(f"| `{md_cell(name)}` | {md_cell(text)} |")
    return "\n".join(rows) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "profile-settings": profile_settings,
    "userdata-keys": userdata_keys,
}
