"""The docs sidebar's folder tree (``nav.build_tree``): deep folders, folder titles, order."""

from __future__ import annotations

from dataclasses import dataclass

from cernvm_build.site import nav


@dataclass
class _Page:
    src: str | None
    url: str
    title: str
    nav_title: str
    weight: int
    kind: str = "page"


def _page(src: str, weight: int, title: str = "", kind: str = "page") -> _Page:
    title = title or src.rsplit("/", 1)[-1]
    return _Page(src, "/" + src.rsplit(".", 1)[0] + "/", title, title, weight, kind)


def _shape(n: nav.Node) -> list[object]:
    return [n.dir, n.title, n.url, n.weight, [p.src for p in n.pages], [_shape(c) for c in n.children]]


def test_a_deep_tree_has_every_folder_titled_and_ordered() -> None:
    pages = [  # each folder's children and pages come out of order: sorted by (weight, title)
        _page("docs/z/p.md", 1),
        _page("docs/a/b-c/x-y/q.md", 1),
        _page("docs/a/b-c/d/e/p2.md", 2),
        _page("docs/a/b-c/d/e/p1.md", 1),
        _page("docs/a/b-c/d/e/p0.md", 1, "Alpha"),  # same weight: by title
        _page("docs/a/_index.md", 5, "Folder A", "index"),
        _page("docs/top.md", 3),
        _Page(None, "/gen/", "Generated", "Generated", 0),  # no source: not in the tree
    ]
    root = nav.build_tree("docs", pages, {"docs": "Docs", "docs/a/b-c/d": "Named"})  # type: ignore[arg-type]
    e = ["docs/a/b-c/d/e", "E", None, 1000, [f"docs/a/b-c/d/e/p{i}.md" for i in range(3)], []]
    x = ["docs/a/b-c/x-y", "X y", None, 1000, ["docs/a/b-c/x-y/q.md"], []]
    b = ["docs/a/b-c", "B c", None, 1000, [], [["docs/a/b-c/d", "Named", None, 1000, [], [e]], x]]
    a = ["docs/a", "Folder A", "/docs/a/_index/", 5, [], [b]]  # its _index.md: title, URL, weight
    z = ["docs/z", "Z", None, 1000, ["docs/z/p.md"], []]
    assert _shape(root) == ["docs", "Docs", None, 1000, ["docs/top.md"], [a, z]]
