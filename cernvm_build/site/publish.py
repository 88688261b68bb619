"""``site publish s3://bucket/prefix``: the built site into S3 through the mirror's sync engine.

Assets (stylesheets, scripts, images) go first, then the pages that use them, then the files that name
every page (search index, feed, sitemap), so a reader rarely follows a link to an object not there yet.
(The engine matches a pattern without '/' against file names: "index.html" means every page.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BuildError

#: the search index's files that name others: a shard's list of fragments, then the list of shards
LAST = ("*.html", "meta.json", "search-index/shards.json", "atom.xml", "sitemap.xml", "robots.txt")


def publish(
    out_dir: Path, dest: str, *, endpoint_url: str | None = None, dry_run: bool = False, **kw: Any
) -> Any:
    if not (out_dir / "index.html").is_file():
        raise BuildError(
            f"{out_dir} holds no built site",
            hint="run 'cernvm-build site build --out DIR' first, or publish without --no-build",
        )
    from ..mirror import s3sync  # deliberate lazy import: boto3 is only needed to publish

    return s3sync.sync_tree(
        out_dir, dest, endpoint_url=endpoint_url, last=LAST, delete=True, dry_run=dry_run, **kw
    )
