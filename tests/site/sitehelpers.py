"""Helpers for the site tests (a module of its own: test modules import it)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.site_corpus import page_text
from cernvm_build.cli import reference as cli_reference
from cernvm_build.paths import data_dir
from cernvm_build.site import build as site_build
from cernvm_build.site import frontmatter, markdown, mdtree
from cernvm_build.site.markdown import Rendered

#: renders a Markdown text both ways: (whether the fast path took it, its render, the reference render)
Both = Callable[[str], tuple[bool, Rendered, Rendered]]


def same_on_shipped_content(both: Both) -> list[tuple[Path, str, bool]]:
    """Asserts every shipped page renders the same both ways and the fast path takes all but the
    pages with admonitions (at most 8); returns (path, body, taken) of each page."""
    pages = []
    for path in sorted((data_dir("site") / "content").rglob("*.md")):
        _meta, body, _first = frontmatter.split(path.read_text(), str(path))
        taken, fast, slow = both(body)
        assert fast == slow, path
        pages.append((path, body, taken))
    assert sum(taken for *_, taken in pages) >= len(pages) - 8
    return pages


def same_on_bench_corpus(both: Both) -> None:
    """Asserts 60 pages of the bench's corpus are taken by the fast path and render the same."""
    rng = random.Random(3)
    for i in range(60):
        taken, fast, slow = both(page_text(i, 60, rng))
        assert taken and fast == slow, i


def same_unless_too_deep(both: Both, text: str, monkeypatch: Any) -> None:
    """Asserts ``text`` renders the same both ways, or, when it nests blocks markdown-it-py would drop,
    that every path refuses it (``mdtree.TooDeep``; test_site_hostile_input.py)."""
    try:
        _taken, fast, slow = both(text)
    except mdtree.TooDeep:
        with monkeypatch.context() as m:
            m.setattr(markdown, "_render_rust", lambda *_a: None)
            m.setattr(mdtree, "tokens", lambda _text: None)
            with pytest.raises(mdtree.TooDeep):
                markdown.render(text, src_path="docs/a/b.md", first_line=3, base_path="/base/")
        return
    assert fast == slow


#: real queries and the heading each must land on first (tests/site/test_site_search.py; bench/site_search.py
#: measures the same ones)
SEARCH_QUERIES = (
    ("configuring a squid proxy", "/docs/guides/replication/#configuring-a-squid-proxy"),
    ("stratum 1", "/docs/guides/replication/#stratum-1-a-replica"),
    ("pin a tag", "/docs/guides/snapshots/#pin-a-tag-on-the-client"),
    ("DUCC", "/docs/guides/containers/#ducc-publishing-images-unpacked"),
    ("garbage collection", "/docs/guides/publishing/#garbage-collection"),
    ("alien cache", "/docs/guides/cache/#alien-cache"),
    ("whitelist expired", "/docs/guides/publishing/#keys-certificates-and-the-whitelist"),
    ("apptainer", "/docs/guides/containers/#apptainer-from-cvmfs"),
    ("rollback", "/docs/guides/snapshots/#roll-back"),
    ("openstack", "/docs/guides/clouds/#upload-to-openstack"),
)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (for byte-for-byte comparisons)."""
    out: dict[str, bytes] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def fragments(index: Path, bundle: str = "") -> list[dict[str, Any]]:
    """A shard's page fragments (URL, title, sections) in posting order, read as search.js finds them:
    through ``meta.json``'s fragment files (``packs``) and the page each starts with (``first``)."""
    meta = json.loads((index / bundle / "meta.json").read_text())
    out: list[dict[str, Any]] = []
    for start, name in zip(meta["first"], meta["packs"], strict=True):
        assert start == len(out)  # the files follow each other without a gap
        out += json.loads((index / bundle / "f" / f"{name}.json").read_text())
    return out


def write_release(
    site: Path, version: str, date: str, files: dict[str, bytes], *, previous: str | None = None
) -> Path:
    """A release index (the release tool's schema) for ``files``, which are put under the site's static/
    folder so the downloads are served by the site itself."""
    cfg = site / "config.yaml"
    text = cfg.read_text() if cfg.is_file() else "releases_url: /"
    if "releases_url: /" not in text:
        cfg.write_text(text.replace("releases_url: https://ecsft.cern.ch/dist/cernvm/{version}/",
                                    "releases_url: /dist/{version}/"))  # fmt: skip
    artifacts = []
    for name, blob in sorted(files.items()):
        dest = site / "static" / "dist" / version / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(blob)
        profile = name.split("-")[1]  # cernvm-<profile>-<version>.<format>
        artifacts.append(
            {
                "name": name,
                "path": name,
                "profile": profile,
                "kind": "image" if name.endswith((".iso", ".qcow2")) else "container",
                "format": name.rsplit(".", 1)[-1],
                "sha256": hashlib.sha256(blob).hexdigest(),
                "size": len(blob),
                "inputs": {},
            }
        )
    profiles = sorted({a["profile"] for a in artifacts})
    index = {
        "schema": 1,
        "version": version,
        "date": f"{date}T12:00:00Z",
        "source_date_epoch": 1790000000,
        "previous": previous,
        "signature": None,
        "signer": None,
        "profiles": [
            {
                "name": p,
                "os": {"el9": "AlmaLinux 9", "el6": "Scientific Linux 6"}.get(p, p.upper()),
                "frozen": p == "el6",
                "snapshot": {
                    "repository": "cernvm-prod.cern.ch",
                    "path": f"/cvm4/{p}",
                    "root_hash": None,
                    "revision": 42,
                    "tag": f"{p}-{version}",
                },
                "profile_sha256": "0" * 64,
            }
            for p in profiles
        ],
        "artifacts": artifacts,
    }
    path = site / "data" / "releases" / f"{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(index, indent=2))
    return path


Edit = Callable[[Path, str, str], None]


class Builder(site_build.Builder):
    """The site builder as the CLI sets it up: the content's ``generate: cli`` needs the CLI's reference."""

    def __init__(self, site_dir: Path, out_dir: Path, **kw: Any) -> None:
        kw.setdefault("generators", cli_reference.GENERATORS)
        super().__init__(site_dir, out_dir, **kw)


def build_site(site_dir: Path, out_dir: Path, **kw: Any) -> site_build.BuildReport:
    return Builder(site_dir, out_dir, **kw).build()
