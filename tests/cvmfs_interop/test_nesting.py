"""Nested catalogs without hand-placed markers, decided as the real server decides them."""

from __future__ import annotations

import os
import sqlite3
import zlib
from pathlib import Path

import pytest

from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.nesting import AutoCatalogs
from cernvm_build.cvmfs.publish import create_repository, publish_tree

from .real import locate, real_sync

pytestmark = pytest.mark.integration

FQRN = "nesting.cernvm.test"
DIRTAB = "# software releases\n/sw/*\n! */skip*\n  /opt/*/z\n/deep/?/*\n/nothing/here\n"


def _dirtab_tree(root: Path) -> Path:
    for d in ("sw/a/x", "sw/b", "sw/.hidden", "sw/skipme", "sw/c/skip2", "opt/x y/z", "deep/1/2/3", "other"):
        (root / d).mkdir(parents=True)
    os.symlink("a", root / "sw" / "link")
    (root / "sw" / "file").write_text("x")
    (root / ".cvmfsdirtab").write_text(DIRTAB)
    return root


def _catalog_paths(stratum: Path, root_hash: str, tmp: Path) -> set[str]:
    """Every nested catalog's mount path, following the references down from the root catalog."""
    out: set[str] = set()
    todo = [root_hash]
    while todo:
        name = todo.pop()
        db = tmp / f"{name}.db"
        db.write_bytes(zlib.decompress((stratum / "data" / name[:2] / (name[2:] + "C")).read_bytes()))
        for path, sha1, _ in sqlite3.connect(db).execute("SELECT * FROM nested_catalogs"):
            out.add(path)
            todo.append(sha1)
    return out


def _keys(tmp: Path) -> tuple[keymod.KeySet, Path]:
    keys = keymod.generate_keys(FQRN)
    keys.save(tmp / "keys")
    return keys, tmp / "keys" / f"{FQRN}.pub"


def test_dirtab_selects_what_the_real_dirtab_command_selects(tmp_path: Path) -> None:
    tools = locate(tmp_path)
    keys, _ = _keys(tmp_path)
    ours = tmp_path / "ours"
    empty = create_repository(ours, FQRN, keys)
    real_tree = _dirtab_tree(tmp_path / "real-tree")
    (tmp_path / "tmp").mkdir()
    r = tools.swissknife_run(
        "dirtab", "-d", real_tree / ".cvmfsdirtab", "-u", real_tree, "-s", real_tree,
        "-b", empty.root_hash, "-w", f"file://{ours}", "-t", tmp_path / "tmp",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    real = {"/" + str(p.parent.relative_to(real_tree)) for p in real_tree.rglob(".cvmfscatalog")}
    assert real == {"/sw/a", "/sw/b", "/sw/c", "/sw/.hidden", "/opt/x y/z", "/deep/1/2"}  # the real tool's

    result = publish_tree(ours, FQRN, keys, _dirtab_tree(tmp_path / "tree"))
    assert set(result.nested_by_dirtab) == real
    assert _catalog_paths(ours, result.root_hash, tmp_path) == real


def _weighted_tree(root: Path) -> Path:
    """Directories of distinct weights (no ties: the real server picks the first of equals in its
    catalog's row order), some deep, some flat."""
    sizes = {"big/a": 90, "big/b": 70, "big/b/inner": 55, "big/c": 40, "small": 12, "flat": 130, "x/y/z": 66}
    for d, n in sizes.items():
        (root / d).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / d / f"f{i}").write_bytes(b"%d" % i)
    return root


def test_automatic_split_matches_the_real_server(tmp_path: Path) -> None:
    tools = locate(tmp_path)
    keys, pub = _keys(tmp_path)
    ours = tmp_path / "ours"
    empty = create_repository(ours, FQRN, keys)
    limits = ("-A", "-X", "200", "-M", "30")  # CVMFS_AUTOCATALOGS with max 200, min 30 entries
    real_root = real_sync(
        tools, tmp_path, FQRN, ours, empty.root_hash, pub, _weighted_tree(tmp_path / "a"), *limits
    )
    real = _catalog_paths(tmp_path / "real", real_root, tmp_path)
    assert len(real) >= 3  # the real server did split

    result = publish_tree(
        ours, FQRN, keys, _weighted_tree(tmp_path / "b"), autocatalogs=AutoCatalogs(200, 30)
    )
    assert set(result.nested_auto) == real
    assert _catalog_paths(ours, result.root_hash, tmp_path) == real
    # the default (100,000 entries) leaves a small tree alone, and 'no' never splits
    again = publish_tree(ours, FQRN, keys, tmp_path / "b")
    assert again.nested_auto == () and again.catalogs == 1
    assert publish_tree(ours, FQRN, keys, tmp_path / "b", autocatalogs=None).catalogs == 1


def test_autocatalog_markers_from_an_exported_tree_are_decided_again(tmp_path: Path) -> None:
    keys, _ = _keys(tmp_path)
    ours = tmp_path / "ours"
    create_repository(ours, FQRN, keys)
    tree = _weighted_tree(tmp_path / "t")
    first = publish_tree(ours, FQRN, keys, tree, autocatalogs=AutoCatalogs(200, 30))
    for d in first.nested_auto:  # as an export of that revision has them
        (tree / d.lstrip("/") / ".cvmfscatalog").write_bytes(b"")
        (tree / d.lstrip("/") / ".cvmfsautocatalog").write_bytes(b"")
    second = publish_tree(ours, FQRN, keys, tree, autocatalogs=AutoCatalogs(1000, 100))
    assert second.nested_auto == () and second.catalogs == 1
