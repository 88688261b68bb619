"""``site/config.yaml``: the site's title, address, menu, sections and feed."""

from __future__ import annotations

import re
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from ..errors import BuildError, Location, utf8_text
from ..paths import data_dir
from . import frontmatter
from .ntuple import NamedTuple

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


def _urlsplit(value: str, where: Location | str) -> SplitResult:
    try:
        return urlsplit(value)
    except ValueError as e:  # an unclosed '[' (IPv6 host)
        raise BuildError(
            f"'{value}' is not a URL: {e}"[:300], where=where, hint="for example 'https://cvmfs.io/'"
        ) from None


#: schemes a menu item may link to besides http(s): a "Contact" address; none runs script
#: (``javascript:``, ``data:``, ``vbscript:`` stay refused: the list is of those allowed)
MENU_SCHEMES = ("mailto", "tel")
#: what a ``mailto:``/``tel:`` address may not hold: white space, control characters, quotes, ``<>``
_NOT_ADDRESS = re.compile(r"[\x00-\x20\x7f\"'<>\\]")


def _menu_url(value: str, where: Location, default: str = "", *, schemes: tuple[str, ...] = ()) -> str:
    """A URL the pages link to (the menu's, ``releases_url``, ``edit_url``): http(s) or a path on this
    site, or an address with one of ``schemes`` (the menu's ``MENU_SCHEMES``)."""
    scheme, colon, address = value.partition(":")
    if colon and scheme.lower() in schemes:
        if not address or _NOT_ADDRESS.search(address) or address.startswith("/"):
            raise BuildError(
                f"'{value}' is not a plain {scheme.lower()}: address"[:300],
                where=where,
                hint="for example 'mailto:team@example.org' or 'tel:+41227671111'",
            )
        return value
    if value[:2] in ("//", "/\\"):  # a browser reads both as another host, by the page's scheme
        raise BuildError(
            f"'{value}' is a protocol-relative URL (another host), not a path on this site",
            where=where,
            hint=f"write 'https://{value[2:]}' for another site, or one '/' for a path on this one",
        )
    u = _urlsplit(value, where)
    if value and not (value.startswith("/") or (u.scheme in ("http", "https") and u.netloc)):
        also = "".join(f", {s}:" for s in schemes)
        raise BuildError(
            f"'{value}' is not an http(s) URL{also} or a path starting with '/'",
            where=where,
            hint=f"for example '{default or 'https://…'}'",
        )
    return value


def _check_base_url(url: str, where: Location | str) -> None:
    """An absolute http(s) URL with a host and a plain path: every link and the feed's and sitemap's
    addresses start with it. A query or fragment (``https://h/?a`` became ``https://h/?a/``), a quote
    or ``..`` in the path, credentials (in every page) or a port out of range were written as given."""
    from ..table import redact_url
    from .model import BAD_PATH_CHARS  # (model imports this module)

    parts = _urlsplit(url, where)
    hint = "for example 'https://cvmfs.io/' or 'https://example.org/cvmfs/'"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BuildError(f"base_url '{url}' is not an absolute http(s) URL", where=where, hint=hint)
    try:
        _ = parts.port
    except ValueError:
        raise BuildError(f"base_url '{url}' has a port that is not 1-65535", where=where, hint=hint) from None
    # what no page path holds, and a space (every link holds the base path)
    bad = re.search(f"[{BAD_PATH_CHARS} ]", parts.path)
    if (
        "@" in parts.netloc
        or parts.query
        or parts.fragment
        or url.endswith(("?", "#"))
        or bad is not None
        or any(unquote(seg) in (".", "..") for seg in parts.path.split("/"))  # (a browser's '%2e%2e' too)
    ):
        raise BuildError(
            f"base_url '{redact_url(url)}' is not a plain site address (no credentials, query, fragment, "
            "'.' or '..' segments, spaces, quotes or control characters)"[:400],
            where=where,
            hint=hint,
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
            # a new site starts as a copy of the shipped one: say where it is (a wheel's is in site-packages)
            hint="point --site at the folder holding config.yaml, content/, templates/; to start one, copy "
            f"the shipped site: cp -r {shlex.quote(str(data_dir('site')))}/. {shlex.quote(str(site_dir))}",
        )
    raw = frontmatter.parse(utf8_text(path.read_bytes(), str(path)), str(path), memo=memo, what=CONFIG_NAME)

    def need(key: str, kind: type, default: Any = None) -> Any:
        value = raw.get(key, default)
        if value is None or not isinstance(value, kind):
            raise BuildError(
                f"'{key}' must be {frontmatter.KIND_WORDS[kind]}, not {frontmatter.yaml_kind(value)}",
                where=Location(file=str(path), key=key),
                hint=f"set '{key}:' in {CONFIG_NAME}",
            )
        return value

    url = base_url or need("base_url", str)
    _check_base_url(url, Location(file=str(path), key="base_url") if base_url is None else "--base-url")
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
        if over is not None and not isinstance(over, dict):
            raise BuildError(
                f"section '{name}' must be a mapping, not {type(over).__name__}",
                where=Location(file=str(path), key=f"sections.{name}"),
                hint="for example 'docs: {title: Documentation, layout: doc, sidebar: true}'",
            )
        for flag in ("feed", "dated", "sidebar"):  # 'no' in quotes is a true string
            value = (over or {}).get(flag)
            if value is not None and not isinstance(value, bool):
                raise BuildError(
                    f"'{flag}' must be true or false, not {type(value).__name__}",
                    where=Location(file=str(path), key=f"sections.{name}.{flag}"),
                    hint=f"write '{flag}: true' or '{flag}: false', without quotes",
                )
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
        return _menu_url(value, Location(file=str(path), key=key), default)

    feed = need("feed", dict, {})
    limit = feed.get("limit", 20)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= 10_000:
        raise BuildError(
            f"feed.limit must be a whole number from 0 to 10000, not {limit!r}"[:200],
            where=Location(file=str(path), key="feed.limit"),
            hint="for example 'limit: 20' (the newest pages the Atom feed holds)",
        )
    for item in menu:  # the same rule as releases_url's and edit_url's (a 'javascript:' one was a link),
        # and a "Contact" address
        _menu_url(item.url, Location(file=str(path), key="menu"), schemes=MENU_SCHEMES)
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
        feed_limit=limit,
        highlight_style=str(raw.get("highlight_style", "friendly")),
        releases_url=link("releases_url", "/releases/{version}/files/"),
        repositories={str(k): str(v) for k, v in repos.items()},
        edit_url=link("edit_url", ""),
    )
