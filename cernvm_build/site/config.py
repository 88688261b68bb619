"""``site/config.yaml``: the site's title, address, menu, sections and feed."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from ..errors import BuildError, Location
from . import frontmatter

CONFIG_NAME = "config.yaml"


class MenuItem(NamedTuple):
    title: str
    url: str


class Section(NamedTuple):
    name: str
    title: str
    layout: str  # layout of the section's pages
    list_layout: str  # layout of the section index
    feed: bool  # its pages go into the Atom feed
    dated: bool  # pages need a date and are listed newest first
    sidebar: bool  # pages show the section tree and previous/next


class SiteConfig(NamedTuple):
    # a NamedTuple, as the other records a rebuild imports: a dataclass costs ~1 ms to create (exec)
    title: str
    description: str
    base_url: str  # absolute, ends with '/'
    language: str
    author_name: str
    author_email: str
    menu: tuple[MenuItem, ...]
    sections: dict[str, Section]
    feed_title: str
    feed_limit: int
    highlight_style: str
    releases_url: str  # download URL of a release's files, '{version}' replaced
    repositories: dict[str, str]  # repo name -> metadata dir override
    edit_url: str  # where a page's source is edited, '{path}' = its path under content/

    @property
    def base_path(self) -> str:
        """The URL path the site lives under: '/' or '/prefix/'."""
        return _split(self.base_url)[0]

    def absolute(self, url: str) -> str:
        """A site path ('/docs/') as an absolute URL for feeds and sitemaps (one a page: the base URL
        is split once)."""
        return _split(self.base_url)[1] + url

    def key(self) -> tuple[object, ...]:
        """Everything templates can see, for cache fingerprints."""
        return (
            self.title,
            self.description,
            self.base_url,
            self.language,
            self.author_name,
            self.author_email,
            self.menu,
            tuple(sorted(self.sections.items())),
            self.feed_title,
            self.feed_limit,
            self.highlight_style,
            self.releases_url,
            self.edit_url,
        )


@lru_cache(maxsize=8)
def _split(base_url: str) -> tuple[str, str]:
    """A base URL's path ('/' or '/prefix/') and origin ('https://host')."""
    parts = urlsplit(base_url)
    return parts.path or "/", f"{parts.scheme}://{parts.netloc}"


DEFAULT_SECTIONS: dict[str, dict[str, Any]] = {
    "docs": {"title": "Documentation", "layout": "doc", "list_layout": "doc", "sidebar": True},
    "news": {"title": "News", "layout": "post", "list_layout": "list", "feed": True, "dated": True},
    "releases": {
        "title": "Releases",
        "layout": "release",
        "list_layout": "list",
        "feed": True,
        "dated": True,
    },
}


def load(site_dir: Path, *, base_url: str | None = None, memo: frontmatter.Memo | None = None) -> SiteConfig:
    """``memo``: YAML texts parsed before (``frontmatter.Memo``)."""
    path = site_dir / CONFIG_NAME
    if not path.is_file():
        raise BuildError(
            f"no {CONFIG_NAME} in {site_dir}",
            hint="point --site at the folder holding config.yaml, content/, templates/",
        )
    raw = frontmatter.parse(path.read_text(encoding="utf-8"), str(path), memo=memo)

    def need(key: str, kind: type, default: Any = None) -> Any:
        value = raw.get(key, default)
        if value is None or not isinstance(value, kind):
            raise BuildError(
                f"'{key}' must be a {kind.__name__}",
                where=Location(file=str(path), key=key),
                hint=f"set '{key}:' in {CONFIG_NAME}",
            )
        return value

    url = base_url or need("base_url", str)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BuildError(
            f"base_url '{url}' is not an absolute http(s) URL",
            where=Location(file=str(path), key="base_url"),
            hint="for example 'https://cvmfs.io/'",
        )
    if not url.endswith("/"):
        url += "/"
    author = need("author", dict, {})
    menu = tuple(
        MenuItem(title=str(m["title"]), url=str(m["url"]))
        for m in need("menu", list, [])
        if isinstance(m, dict) and "title" in m and "url" in m
    )
    sections: dict[str, Section] = {}
    merged = {k: dict(v) for k, v in DEFAULT_SECTIONS.items()}
    for name, over in (need("sections", dict, {}) or {}).items():
        merged.setdefault(str(name), {}).update(over or {})
    for name, s in merged.items():
        sections[name] = Section(
            name=name,
            title=str(s.get("title", name.title())),
            layout=str(s.get("layout", "page")),
            list_layout=str(s.get("list_layout", "list")),
            feed=bool(s.get("feed", False)),
            dated=bool(s.get("dated", False)),
            sidebar=bool(s.get("sidebar", False)),
        )

    def link(key: str, default: str) -> str:
        """A URL the pages link to: http(s) or a path on this site (a 'javascript:' one was a link)."""
        value = need(key, str, default) if raw.get(key) is not None else default
        if value[:2] in ("//", "/\\"):  # a browser reads both as another host, by the page's scheme
            raise BuildError(
                f"{key} '{value}' is a protocol-relative URL (another host), not a path on this site",
                where=Location(file=str(path), key=key),
                hint=f"write 'https://{value[2:]}' for another site, or one '/' for a path on this one",
            )
        u = urlsplit(value)
        if value and not (value.startswith("/") or (u.scheme in ("http", "https") and u.netloc)):
            raise BuildError(
                f"{key} '{value}' is not an http(s) URL or a path starting with '/'",
                where=Location(file=str(path), key=key),
                hint=f"for example '{default or 'https://…'}'",
            )
        return value

    feed = need("feed", dict, {})
    repos = need("repositories", dict, {})
    return SiteConfig(
        title=need("title", str),
        description=str(raw.get("description", "")),
        base_url=url,
        language=str(raw.get("language", "en")),
        author_name=str(author.get("name", "")),
        author_email=str(author.get("email", "")),
        menu=menu,
        sections=sections,
        feed_title=str(feed.get("title", raw.get("title", ""))),
        feed_limit=int(feed.get("limit", 20)),
        highlight_style=str(raw.get("highlight_style", "friendly")),
        releases_url=link("releases_url", "/releases/{version}/files/"),
        repositories={str(k): str(v) for k, v in repos.items()},
        edit_url=link("edit_url", ""),
    )
