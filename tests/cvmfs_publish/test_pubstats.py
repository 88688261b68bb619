"""Publish statistics: each publish appends a row to the repository's ``stats/stats.db`` (the real
server's statistics database layout); ``cvmfs stats`` reads it from a folder or over HTTP, and the
site's dashboard plots it as static SVG."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.publish import publish_tar, publish_tree
from cernvm_build.cvmfs.serve import serve

from .helpers import FQRN

# The columns of the server's publish_statistics table (statistics database schema 1.0, revision 4).
SERVER_COLUMNS = [
    "publish_id", "start_time", "finish_time", "revision", "files_added", "files_removed", "files_changed",
    "chunks_added", "chunks_duplicated", "catalogs_added", "directories_added", "directories_removed",
    "directories_changed", "symlinks_added", "symlinks_removed", "symlinks_changed", "sz_bytes_added",
    "sz_bytes_removed", "sz_bytes_uploaded", "sz_catalog_bytes_uploaded", "success",
]  # fmt: skip


def _rows(stratum: Path) -> list[dict[str, object]]:
    db = sqlite3.connect(stratum / "stats" / "stats.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM publish_statistics ORDER BY publish_id")]
    finally:
        db.close()


def _three_revisions(tmp_path: Path, stratum: Path, keyset: keymod.KeySet) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "f").write_bytes(b"x" * 10)
    (src / "g").write_bytes(b"y" * 5)
    os.symlink("g", src / "link")
    publish_tree(stratum, FQRN, keyset, src)
    os.utime(src / "g", (1, 1))  # make sure the rewrite is seen even within the same second
    (src / "g").write_bytes(b"z" * 7)
    (src / "a" / "f").unlink()
    (src / "n").write_bytes(b"new")
    (src / "a" / "b" / "c").mkdir()
    os.unlink(src / "link")
    os.symlink("n", src / "link")
    publish_tree(stratum, FQRN, keyset, src)
    shutil.rmtree(src / "a")
    publish_tree(stratum, FQRN, keyset, src)


def test_each_publish_records_what_it_changed_in_the_server_layout(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet
) -> None:
    _three_revisions(tmp_path, stratum, keyset)
    db = sqlite3.connect(stratum / "stats" / "stats.db")
    cols = [r[1] for r in db.execute("PRAGMA table_info(publish_statistics)")]
    props = dict(db.execute("SELECT key, value FROM properties").fetchall())
    gc_cols = [r[1] for r in db.execute("PRAGMA table_info(gc_statistics)")]
    db.close()
    assert cols == SERVER_COLUMNS and "n_duplicate_delete_requests" in gc_cols
    assert props == {"schema": "1.0", "schema_revision": "4", "repo_name": FQRN}

    first, second, third = _rows(stratum)
    assert [r["revision"] for r in (first, second, third)] == [2, 3, 4]
    counts = (
        "files_added", "files_removed", "files_changed", "directories_added", "directories_removed",
        "symlinks_added", "symlinks_removed", "symlinks_changed", "sz_bytes_added", "sz_bytes_removed",
    )  # fmt: skip
    assert [first[k] for k in counts] == [2, 0, 0, 2, 0, 1, 0, 0, 15, 0]
    # g rewritten (5 -> 7 bytes), a/f removed (10), n added (3), a/b/c added, the link retargeted
    assert [second[k] for k in counts] == [1, 1, 1, 1, 0, 0, 0, 1, 3 + 7, 10 + 5]
    # a/ removed with a/b and a/b/c below it
    assert [third[k] for k in counts] == [0, 0, 0, 0, 3, 0, 0, 0, 0, 0]
    assert first["chunks_added"] == 3 and first["catalogs_added"] == 1 and first["success"] == 1
    assert third["chunks_added"] == 0 and third["sz_bytes_uploaded"] == 0  # nothing new to store
    assert first["chunks_duplicated"] is None  # not known here: NULL, not a made-up 0
    assert all(str(r["start_time"]) <= str(r["finish_time"]) for r in (first, second, third))


def test_tar_publish_below_a_base_path_counts_only_that_subtree(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet
) -> None:
    import io
    import tarfile

    src = tmp_path / "src"
    (src / "keep").mkdir(parents=True)
    (src / "keep" / "k").write_bytes(b"kept")
    publish_tree(stratum, FQRN, keyset, src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("one", b"1"), ("two", b"22")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    publish_tar(stratum, FQRN, keyset, buf, base_path="/layer")
    row = _rows(stratum)[-1]
    assert (row["files_added"], row["directories_added"], row["files_removed"], row["sz_bytes_added"]) == (
        2,
        1,
        0,
        3,
    )


def test_stats_command_over_http_feeds_the_dashboard_with_static_svg(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, capsys: pytest.CaptureFixture[str]
) -> None:
    from cernvm_build.cli.reference import GENERATORS
    from cernvm_build.paths import data_dir
    from cernvm_build.site.build import Builder

    _three_revisions(tmp_path, stratum, keyset)
    web = tmp_path / "site"
    shutil.copytree(data_dir("site"), web)
    out_file = web / "data" / "publish_stats.json"
    with serve(stratum) as server:
        url = server.repo_url(FQRN)
        assert main(["cvmfs", "stats", url, "--json", "--out", str(out_file)]) == 0
    data = json.loads(capsys.readouterr().out)
    (repo,) = data["repositories"]
    assert repo["fqrn"] == FQRN and [p["revision"] for p in repo["publishes"]] == [2, 3, 4]
    assert json.loads(out_file.read_text()) == data

    repo["fqrn"] = "evil<script>alert(1)</script>"
    out_file.write_text(json.dumps(data))
    Builder(web, tmp_path / "out", generators=GENERATORS).build()
    page = (tmp_path / "out" / "publish-stats" / "index.html").read_text()
    assert page.count("<svg") == 4 and "<polyline" in page and "<script>alert(1)" not in page
    assert "evil&lt;script&gt;alert(1)&lt;/script&gt;: files" in page
    assert "revision 3: changed 1</title>" in page  # a dot's tooltip, no JavaScript needed
    assert "No statistics yet" not in page


def test_missing_or_damaged_statistics_are_one_line_errors(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cvmfs", "stats", str(stratum)]) == 5
    err = capsys.readouterr().err
    assert "stats/stats.db" in err and "Traceback" not in err
    # pr24c finding 2: a repository no publish has written yet (README: create, then stats) was told
    # "the repository directory is incomplete or the hash is wrong"; it is neither
    assert "hash is wrong" not in err and "cvmfs publish" in err
    assert main(["cvmfs", "stats", str(tmp_path / "typo")]) == 2  # (lf32a: a missing input, as everywhere)
    assert f"error: {tmp_path / 'typo'}: no such file or folder" in capsys.readouterr().err
    _three_revisions(tmp_path, stratum, keyset)
    db = sqlite3.connect(stratum / "stats" / "stats.db")
    db.execute("UPDATE publish_statistics SET files_added = 'lots' WHERE publish_id = 2")
    db.commit()
    db.close()
    assert main(["cvmfs", "stats", str(stratum)]) == 5
    err = capsys.readouterr().err
    assert "publish_statistics row 2: files_added is 'lots'" in err and "Traceback" not in err
