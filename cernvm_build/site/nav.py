"""Navigation from the section tree: the docs sidebar, breadcrumbs, previous/next.

A folder is a node; its ``_index.md`` (if any) gives its title, weight and page. Children are sorted by
``weight`` then title. The sidebar shows the whole first level and opens only the folders on the path to
the current page, so its size stays bounded however large a section grows.
"""

from __future__ import annotations

from typing import Any, Protocol


class NavPage(Protocol):
    src: str | None
    url: str
    title: str
    nav_title: str
    weight: int
    kind: str


class Node:
    """A folder of the tree (a plain class: see ``model.Page``)."""

    __slots__ = ("children", "dir", "pages", "title", "url", "weight")

    def __init__(self, dir: str, title: str, url: str | None, weight: int):
        self.dir = dir  # content-relative folder ('docs/quickstart')
        self.title = title
        self.url = url
        self.weight = weight
        self.pages: list[NavPage] = []
        self.children: list[Node] = []

    def sort_key(self) -> tuple[int, str]:
        return (self.weight, self.title.lower())


def build_tree(section: str, pages: list[NavPage], titles: dict[str, str]) -> Node:
    """The folder tree of one section. ``titles`` names folders without an ``_index.md``."""
    nodes: dict[str, Node] = {}

    # ``rpartition`` for ``posixpath.dirname``/``basename`` (content paths are "/"-separated, never
    # "//"), lists of one not sorted: a tree of 8-deep folders (4,300 of them for 1,000 pages) took
    # 8-9 ms, a tenth of what a one-page rebuild of it spends beyond a flat one's
    def node(d: str) -> Node:
        got = nodes.get(d)
        if got is None:
            parent, _, name = d.rpartition("/")
            got = nodes[d] = Node(d, titles.get(d, name.replace("-", " ").capitalize()), None, 1000)
            if d != section:
                node(parent).children.append(got)
        return got

    root = node(section)
    for p in pages:
        if p.src is None:
            continue
        d = p.src.rpartition("/")[0]
        if p.kind == "index":
            n = node(d)
            n.title, n.url, n.weight = p.nav_title, p.url, p.weight
        else:
            node(d).pages.append(p)
    for n in nodes.values():
        if len(n.pages) > 1:
            n.pages.sort(key=lambda p: (p.weight, p.nav_title.lower()))
        if len(n.children) > 1:
            n.children.sort(key=Node.sort_key)
    return root


def flatten(root: Node) -> list[tuple[str, str]]:
    """Reading order (index, its pages, then its sub-folders), as (title, url): for previous/next."""
    out: list[tuple[str, str]] = []

    def walk(n: Node) -> None:
        if n.url:
            out.append((n.title, n.url))
        for p in n.pages:
            out.append((p.nav_title, p.url))
        for c in n.children:
            walk(c)

    walk(root)
    return out


def sidebar(root: Node, open_dir: str) -> list[dict[str, Any]]:
    """The sidebar for pages in ``open_dir``: plain data for the template (and the fingerprint)."""

    def items(n: Node) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"title": p.nav_title, "url": p.url} for p in n.pages]
        for c in n.children:
            is_open = open_dir == c.dir or open_dir.startswith(c.dir + "/")
            out.append(
                {
                    "title": c.title,
                    "url": c.url,
                    "open": is_open,
                    "children": items(c) if is_open else [],
                }
            )
        return out

    return [{"title": root.title, "url": root.url, "open": True, "children": items(root)}]
