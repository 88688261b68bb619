"""Versioned documentation: the docs as they were at each release, beside the current ones.

When a release is cut, ``releases.add_release`` copies ``content/docs/`` to ``content/docs-<version>/``
(generated references baked in, so they show that release's commands and keys, not today's). A folder
``<section>-<version>`` next to a sidebar section ``<section>`` is that section frozen at ``<version>``:
its pages take the section's layouts and get a sidebar of their own, are left out of the search
index (results would otherwise repeat per release), and every page of the section and of its archives
gets a version switcher whose entries point at the same page in each version (or that version's
home when the page did not exist then).
"""

from __future__ import annotations

import re
from typing import Any

from .config import Section, SiteConfig
from .ntuple import NamedTuple

#: a version folder: the section's name, '-', then a version starting with a digit ('docs-2026.11-1')
ARCHIVE = re.compile(r"^([a-z][a-z0-9_]*)-(\d[\w.\-]*)\Z")
LATEST = "latest"


class Versioned(NamedTuple):
    base: str  # the live section ('docs')
    version: str  # 'latest' or the release ('2026.11-1')

    @property
    def folder(self) -> str:
        return self.base if self.version == LATEST else f"{self.base}-{self.version}"


def of(cfg: SiteConfig, section: str) -> Versioned | None:
    """Which version of which sidebar section a section name is (None: not versioned)."""
    sec = cfg.sections.get(section)
    if sec is not None:
        return Versioned(section, LATEST) if sec.sidebar else None
    m = ARCHIVE.match(section)
    if m and m.group(1) in cfg.sections and cfg.sections[m.group(1)].sidebar:
        return Versioned(m.group(1), m.group(2))
    return None


def section_settings(cfg: SiteConfig, section: str) -> Section | None:
    """A section's settings; an archive takes those of its live section."""
    v = of(cfg, section)
    return cfg.sections.get(v.base) if v else cfg.sections.get(section)


def _version_key(version: str) -> list[Any]:
    # ASCII digits only: '²' is isdigit() but no int (a folder 'docs-1.²' was a traceback)
    return [(0, int(p)) if p.isascii() and p.isdigit() else (1, p) for p in re.split(r"[.\-]", version)]


def versions(cfg: SiteConfig, sections: set[str]) -> dict[str, list[Versioned]]:
    """For each live section with archives: its versions, latest first, then newest release first."""
    out: dict[str, list[Versioned]] = {}
    for name in sections:
        v = of(cfg, name)
        if v is not None and v.version != LATEST:
            out.setdefault(v.base, []).append(v)
    return {
        base: [Versioned(base, LATEST), *sorted(vs, key=lambda v: _version_key(v.version), reverse=True)]
        for base, vs in out.items()
    }


def switcher(
    cfg: SiteConfig, src: str, section: str, by_src: dict[str, Any], all_versions: dict[str, list[Versioned]]
) -> list[dict[str, Any]]:
    """The switcher's entries for the page made from ``src``: label, URL, whether it is this one."""
    here = of(cfg, section)
    if here is None or here.base not in all_versions:
        return []
    inner = src[len(here.folder) + 1 :]
    base = cfg.base_path
    out = []
    for v in all_versions[here.base]:
        same = by_src.get(f"{v.folder}/{inner}")
        url = same.url if same is not None else f"{base}{v.folder}/"
        label = "Latest" if v.version == LATEST else v.version
        out.append({"label": label, "url": url, "current": v == here, "latest": v.version == LATEST})
    return out
