"""A site build whose cache is on a full disk: one line naming the build state, no traceback; a full
disk under jinja2's bytecode cache costs only that cache (pr28a findings 1 and 3)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.tmpfsns import in_namespace, needs_unshare

pytestmark = needs_unshare


def test_a_full_disk_under_the_build_state_is_one_line(tmp_path: Path) -> None:
    # SQLite's "database or disk is full" (an OperationalError) was a traceback; so was its "disk I/O
    # error" where the disk was too full for the WAL index at the open. Which write meets the full disk
    # moves with what the build writes first: the free room is swept, 4 KiB at a time.
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    build = f"CERNVM_CACHE_DIR={mnt}/cache {sys.executable} -P -m cernvm_build.cli.main site build"
    sweep = "".join(
        f"""
        dd if=/dev/zero of={mnt}/fill bs=4k count={blocks} 2>/dev/null
        {build} --out {tmp_path}/out -q 2>{tmp_path}/err{blocks}
        echo $? >{tmp_path}/rc{blocks}
        rm -rf {mnt}/cache {mnt}/fill"""
        for blocks in range(10, 24)
    )
    script = f"""
        mount -t tmpfs -o size=100k none {mnt} || exit 99
        {sweep}
        dd if=/dev/zero of={mnt}/fill2 bs=4k 2>/dev/null
        {build} --out {tmp_path}/out -q
    """
    done = in_namespace(script, cwd=tmp_path)
    state_lines = 0
    for blocks in range(10, 24):
        err = (tmp_path / f"err{blocks}").read_text()
        rc = (tmp_path / f"rc{blocks}").read_text()
        assert "Traceback" not in err and err.startswith("error: ") and err.count("error: ") == 1, (
            blocks,
            err,
        )
        assert rc in ("1\n", "7\n") and "hint: free " in err, (blocks, rc, err)
        if "state.sqlite: database or disk is full" in err or "state.sqlite: disk I/O error" in err:
            assert "error: cannot " in err and rc == "7\n", (blocks, err)
            state_lines += 1
    assert state_lines, "no fill met the build state"
    # the disk so full that the build's lock file takes no line: "error: No space left on device" named
    # no file (fsutil.held_lock)
    assert done.returncode == 1, done.stderr
    assert "/build.lock: No space left on device" in done.stderr, done.stderr


def test_a_full_disk_under_the_bytecode_cache_costs_only_that_cache(tmp_path: Path) -> None:
    # jinja2's dump_bytecode raised ENOSPC (no file named) out of a template's render
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "page.html").write_text("<p>{{ x }}</p>\\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code = (
        "from pathlib import Path; from cernvm_build.site.templates import environment;"
        f"env = environment(Path({str(tmp_path / 'templates')!r}), Path({str(mnt)!r}));"
        "print(env.render('page.html', {'x': '<a>'}), end='')"
    )
    script = f"""
        mount -t tmpfs -o size=64k none {mnt} || exit 99
        dd if=/dev/zero of={mnt}/fill bs=4k 2>/dev/null
        {sys.executable} -P -c "{code}"
    """
    done = in_namespace(script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "<p>&lt;a&gt;</p>\\n"
