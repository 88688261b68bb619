"""Publish a release to S3 in the safe order: what is named comes before what names it.

1. the release's artifacts, with ``SHA256SUMS``, its signature, the notes and ``index.json`` last;
2. package repositories, each through the mirror (verified, packages before indexes);
3. the site, rebuilt with this release's index in its data, pages after assets, sitemap/feed last.

Each step is the mirror's sync engine, which plans by content hash: re-running after an interruption
uploads only what is missing and then switches the indexes, so it finishes the job.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import jsonable
from .. import releaseindex as idx
from ..errors import IntegrityError, utf8_text
from ..fsutil import TooLarge, read_capped
from ..mirror import s3sync
from ..mirror.publish import mirror
from ..paths import data_dir
from ..report import NULL_REPORTER, Reporter
from ..site.build import Builder
from ..site.publish import publish as publish_site
from ..site.releases import add_release
from ..site.sources import Generators
from . import sums
from .verify import verify

#: Inside a release directory, uploaded after everything else, in this order.
LAST = (f"{sums.NAME}.asc", sums.NAME, "RELEASE-NOTES.md", "index.json")


@dataclass
class RepoTarget:
    kind: str  # "yum" | "apt"
    source: str
    dest: str
    gpg_key: Path | None = None


@dataclass
class PublishReport:
    version: str
    artifacts: dict[str, Any] = field(default_factory=dict)
    repositories: list[dict[str, Any]] = field(default_factory=list)
    site: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return jsonable.to_json(self)


def _json(report: Any) -> dict[str, Any]:
    out: dict[str, Any] = report.to_json() if hasattr(report, "to_json") else {"result": str(report)}
    return out


#: the most of RELEASE-NOTES.md read for the news post: the notes of a release are a few KiB
MAX_NOTES = 4 << 20


def release_notes(release_dir: Path) -> str | None:
    """The release's notes (None: it has none), read before anything is uploaded: notes that were not
    UTF-8 were a UnicodeDecodeError traceback after the artifacts were published."""
    path = release_dir / "RELEASE-NOTES.md"
    if not path.exists():
        return None
    try:
        data = read_capped(path, MAX_NOTES)
    except TooLarge as e:
        raise idx.ReleaseError(e.strerror, where=str(path), hint="the notes are damaged") from None
    except OSError as e:  # a FIFO or a folder (not a regular file), no permission
        raise idx.ReleaseError(
            f"cannot read: {e.strerror}", where=str(path), hint="the notes are a Markdown file"
        ) from None
    return utf8_text(data, str(path), "save the notes as UTF-8", idx.ReleaseError)


def _check_unchanged(release_dir: Path) -> None:
    """The release folder as it was built, before anything is uploaded: an artifact edited, cut or
    removed since (or SHA256SUMS no longer the index's) was uploaded as it was, under sums and a
    signature that no longer matched it. The signature is checked by ``release verify --key``."""
    report = verify(release_dir / "index.json")
    if not report.ok:
        first, more = report.findings[0], len(report.findings) - 1
        raise IntegrityError(
            f"{release_dir}: {first.artifact}: {first.problem}" + (f" (and {more} more)" if more else ""),
            hint="the release folder changed since it was built: rebuild it (cernvm-build release"
            " VERSION --out ...), or see every difference with 'cernvm-build release verify'",
        )


def site_with_release(
    release_dir: Path,
    work: Path,
    site_src: Path | None = None,
    generators: Generators | None = None,
    notes: str | None = None,
) -> Path:
    """A copy of the site sources with this release on it: its index (downloads page, feed), its
    notes (``notes``, else ``release_notes``) as the release's news post, and its docs version
    (references from ``generators``)."""
    src = site_src or data_dir("site")
    site = work / "site"
    shutil.copytree(src, site, symlinks=True)
    if notes is None:
        notes = release_notes(release_dir)
    if notes is not None and notes.startswith("# "):
        notes = notes.split("\n", 1)[1]  # the post's title comes from its front matter
    add_release(site, release_dir / "index.json", notes, generators)
    return site


def publish_release(
    release_dir: Path,
    dest: str,
    *,
    endpoint_url: str | None = None,
    repos: Sequence[RepoTarget] = (),
    site_dest: str | None = None,
    site_src: Path | None = None,
    site_generators: Generators | None = None,
    reporter: Reporter = NULL_REPORTER,
) -> PublishReport:
    """Artifacts, then the package repositories, then the site (built with ``site_generators``, the
    reference pages its content asks for: the CLI passes its own, see ``site.build.Builder``)."""
    say = reporter.step
    release = idx.load(release_dir / "index.json")
    if idx.VERSION_RE.match(release_dir.resolve().name) and release_dir.resolve().name != release.version:
        # the folder of one release holding another's index would be uploaded over that release
        raise IntegrityError(
            f"{release_dir / 'index.json'}: version {release.version}, in the folder of release"
            f" {release_dir.resolve().name}",
            hint="the release folder was edited or copied over; rebuild it, or check it with"
            " 'cernvm-build release verify'",
        )
    _check_unchanged(release_dir)
    notes = release_notes(release_dir) if site_dest else None
    report = PublishReport(version=release.version)
    target = f"{dest.rstrip('/')}/{release.version}"
    say(f"artifacts → {target}")
    report.artifacts = _json(
        s3sync.sync_tree(release_dir, target, endpoint_url=endpoint_url, last=LAST, delete=False)
    )
    for repo in repos:
        say(f"{repo.kind} repository {repo.source} → {repo.dest}")
        got = mirror(repo.kind, repo.source, repo.dest, endpoint_url=endpoint_url, gpg_key=repo.gpg_key)
        report.repositories.append(_json(got))
    if site_dest:
        with tempfile.TemporaryDirectory(prefix="release-site-") as tmp:
            site = site_with_release(release_dir, Path(tmp), site_src, site_generators, notes)
            say("site: building with the release's downloads page")
            builder = Builder(site, Path(tmp) / "out", generators=site_generators)
            builder.build()
            say(f"site → {site_dest}")
            report.site = _json(publish_site(builder.out_dir, site_dest, endpoint_url=endpoint_url))
    return report
