"""Build-time checks: every Markdown link reaches a page, heading or file, and every release artifact the
site serves itself is there with the size and hash its index names."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import BuildError, Location
from ..fsutil import sha256_file
from .model import LinkErrors, Page
from .pages import PageSet


def check_links(
    pageset: PageSet, outputs: set[str], assets: dict[str, Path] | set[str], pages: list[Page] | None = None
) -> None:
    """The links of ``pages`` (default: every page)."""
    problems: list[tuple[str, int, str]] = []
    total = 0

    def problem(page: Page, line: int, message: str) -> None:
        nonlocal total
        total += 1
        if len(problems) < LinkErrors.LISTED:  # a page of 10^6 broken links keeps 100 of them
            problems.append((str(page.file), line, message))  # as the text has always said it

    base = pageset.base_path
    for page in pageset.pages if pages is None else pages:
        ids = set(page.r.get("ids", ()))
        for target, line, kind in page.r.get("links", ()):
            path, _, frag = target.partition("#")
            if kind == "invalid":
                problem(page, line, f"link '{target}' is not a URL (fix or escape it)")
            elif kind == "anchor":
                if frag and frag not in ids and frag != "top":
                    problem(page, line, f"no heading '#{frag}' on this page")
            elif kind == "content":
                if path.endswith(".md"):
                    tp = pageset.by_src.get(path)
                    if tp is None:
                        problem(page, line, f"link to '{path}', which is not a page")
                    elif frag and frag not in tp.r.get("ids", ()):
                        problem(page, line, f"'{path}' has no heading '#{frag}'")
                elif path not in assets:
                    problem(page, line, f"'{path}' does not exist in content/ or static/")
            elif kind == "site":
                rel = path[len(base) :] if path.startswith(base) else path.lstrip("/")
                cand = {rel, rel.rstrip("/") + "/index.html" if rel else "index.html", rel + "/index.html"}
                if not cand & outputs:
                    problem(page, line, f"'{path}' is not part of the site")
                elif frag:
                    tp = pageset.by_path.get("/" + rel)
                    if tp is not None and tp.md_key and frag not in tp.r.get("ids", ()):
                        problem(page, line, f"'{path}' has no heading '#{frag}'")
    if problems:
        raise LinkErrors(problems, total)


def check_release_files(
    base: str,
    releases: list[dict[str, Any]],
    assets: dict[str, Path],
    file_sha256: Mapping[str, str] | None = None,
) -> None:
    """Artifacts served by the site itself must be there, with the size and hash the index says;
    ``file_sha256``: the sha256 of assets by site path, where the caller knows it (``filedigest``)."""
    file_sha256 = file_sha256 or {}
    for rel in releases:
        for prof in rel["profiles"]:
            for art in prof["artifacts"]:
                url = str(art["url"])
                if "://" in url or not url.startswith(base):
                    continue  # elsewhere: 'site check --external' probes it
                where = Location(file=rel["source"], key=f"artifacts[{art['name']}]")
                rel_path = url[len(base) :]
                path = assets.get(rel_path)
                if path is None:
                    raise BuildError(
                        f"release {rel['version']}: artifact {art['name']} is not at {url}",
                        where=where,
                        hint="copy the release's files under site/static/ or fix releases_url",
                    )
                digest = file_sha256.get(rel_path) or sha256_file(path)
                if path.stat().st_size != art["size"] or digest != art["sha256"]:
                    raise BuildError(
                        f"release {rel['version']}: {url} does not match the size/sha256 in the index",
                        where=where,
                        hint="the file was changed or replaced after the release; copy the released one",
                    )
