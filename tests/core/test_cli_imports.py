"""`cernvm-build` imports only the area a command runs: the others' libraries cost ~0.8 CPU-s a start.

Each command runs in a fresh interpreter through the real entry point; the modules loaded at exit are
compared with the heavy ones no such command needs (no timing, so a loaded machine cannot fail it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.cli import reference
from cernvm_build.cli.areas import HELP as AREAS
from cernvm_build.paths import data_dir
from cernvm_build.site import reference as site_reference

#: What a command outside cvmfs/launch/image/container must not pay for (0.3 s of it is launch alone).
HEAVY = ("paramiko", "cryptography", "libvirt", "cernvm_build.launch", "cernvm_build.cvmfs.repository")

CLI = "cernvm_build.cli."

#: Runs `cernvm-build ARGS...` (or the entry point function named argv[2] of cli.main, such as
#: launch_main for `cernvm-launch`) as the entry point does, then writes sys.modules to the file argv[1].
WRAPPER = """
import json, sys
from cernvm_build.cli import main as entry_points
try:
    code = getattr(entry_points, sys.argv[2])(sys.argv[3:])
except SystemExit as e:
    code = e.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def loaded_by(argv: list[str], tmp_path: Path, entry: str = "main") -> tuple[int, set[str]]:
    """The exit code of `cernvm-build ARGV` (or of the entry point ``entry``) and the modules it imported."""
    record = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(record), entry, *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert record.exists(), proc.stderr
    result = json.loads(record.read_text())
    return result["code"], set(result["modules"])


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize(
    ("argv", "area"),
    [
        (["--version"], None),
        (["--help"], None),
        (["site", "build", "--help"], "cernvm_build.cli.site"),
        (["os", "--help"], "cernvm_build.cli.os"),
        (["mirror", "--help"], "cernvm_build.cli.mirror"),
    ],
)
def test_command_imports_only_its_area(argv: list[str], area: str | None, tmp_path: Path) -> None:
    code, modules = loaded_by(argv, tmp_path)
    assert code in (0, None)
    assert heavy_in(modules) == []
    areas = {m for m in modules if m.startswith(CLI) and m[len(CLI) :] in AREAS}
    assert areas == ({area} if area else set())


#: What `cernvm-launch` help and usage errors must not pay for (~0.25 CPU-s): libvirt, SSH, the profile layer.
LAUNCH_HEAVY = ("libvirt", "paramiko", "cryptography", "jinja2", "yaml")


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["create", "--help"], ["images", "--help"]])
def test_cernvm_launch_help_loads_no_hypervisor_or_ssh_library(argv: list[str], tmp_path: Path) -> None:
    code, modules = loaded_by(argv, tmp_path, entry="launch_main")
    assert code in (0, None)
    assert sorted(m for m in modules if m.split(".")[0] in LAUNCH_HEAVY) == []


def test_a_cernvm_launch_command_still_loads_libvirt(tmp_path: Path) -> None:
    """The check above can fail: a command that opens a host imports the bindings."""
    code, modules = loaded_by(["list", "--connect", "test:///default"], tmp_path, entry="launch_main")
    assert code == 0
    assert "libvirt" in modules


def test_area_help_still_loads_what_it_describes(tmp_path: Path) -> None:
    """The check above can fail: an area that needs the heavy modules does import them."""
    code, modules = loaded_by(["cvmfs", "--help"], tmp_path)
    assert code in (0, None)
    assert "cernvm_build.cvmfs.repository" in heavy_in(modules)


def test_site_build_of_the_shipped_site_imports_no_other_area(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The site's CLI reference page walks every area's parser; its text is kept per version of the
    code (cli.reference.cached), so only the first build after a change pays for importing them."""
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache"))
    site = tmp_path / "site"
    shutil.copytree(data_dir("site"), site, ignore=shutil.ignore_patterns(".*"))
    argv = ["site", "build", "--site", str(site), "--out", str(tmp_path / "out"), "-q"]
    code, modules = loaded_by(argv, tmp_path)
    assert code == 0 and "cernvm_build.launch" in modules  # the first build generates the reference
    page = tmp_path / "out" / "docs" / "reference" / "cli" / "index.html"
    first = page.read_bytes()
    assert b"cernvm-launch create" in first and b"cernvm-build site build" in first
    (site / "content" / "docs" / "reference" / "cli.md").write_text(
        (site / "content" / "docs" / "reference" / "cli.md").read_text() + "\nOne more line.\n"
    )
    code, modules = loaded_by(argv, tmp_path)
    assert code == 0
    assert heavy_in(modules) == []
    assert {m for m in modules if m.startswith(CLI) and m[len(CLI) :] in AREAS} == {CLI + "site"}
    assert page.read_bytes().replace(b"<p>One more line.</p>\n", b"") == first


#: what a rebuild that renders no page, or one page without new code blocks, does not need: YAML (its
#: texts are in the build state's memo), rich (nothing shown with --json), the Markdown and template
#: libraries (nothing rendered), Pygments' lexers (the blocks are known), ctypes (fsutil's syncfs alone)
RENDERING = ("markdown_it", "mdit_py_plugins", "jinja2")
NOT_NEEDED = ("yaml", "rich", "pygments.lexers", "pygments.formatters", "multiprocessing", "ctypes")


def test_a_rebuild_imports_only_what_its_changes_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache"))
    site = tmp_path / "site"
    shutil.copytree(data_dir("site"), site, ignore=shutil.ignore_patterns(".*"))
    argv = ["site", "build", "--site", str(site), "--out", str(tmp_path / "out"), "--json"]

    def build() -> tuple[dict[str, int], set[str]]:
        record = tmp_path / "modules.json"
        command = [sys.executable, "-c", WRAPPER, str(record), "main", *argv]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        assert json.loads(record.read_text())["code"] == 0, proc.stderr
        return json.loads(proc.stdout), set(json.loads(record.read_text())["modules"])

    def among(modules: set[str], names: tuple[str, ...]) -> list[str]:
        return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))

    report, modules = build()
    assert report["pages_planned"] == report["pages"] and among(modules, ("yaml", "jinja2")) != []
    report, modules = build()  # nothing changed
    assert report["rendered"] == report["pages_planned"] == 0
    assert among(modules, NOT_NEEDED + RENDERING) == []
    page = site / "content" / "docs" / "guides" / "preservation.md"
    page.write_text(page.read_text().replace("no longer receive security", "no longer get security", 1))
    report, modules = build()
    assert report["rendered"] == report["pages_planned"] == report["markdown_rendered"] == 1
    assert among(modules, NOT_NEEDED) == [] and among(modules, RENDERING) != []
    # the page has an admonition, which the fast path renders since sp19c: markdown-it-py stays unloaded
    assert "\n!!! " in page.read_text()
    assert among(modules, ("markdown_it", "mdit_py_plugins")) == []
    page = site / "content" / "docs" / "introduction" / "cernvm.md"
    page.write_text(page.read_text().replace("The result: the same", "The result: one", 1))
    report, modules = build()
    assert report["rendered"] == report["pages_planned"] == report["markdown_rendered"] == 1
    # a page the Rust renderer takes, its excerpt a paragraph (``mdtree.render_light``): no markdown-it-py
    assert among(modules, ("markdown_it", "mdit_py_plugins")) == [] and "jinja2" in modules


def test_reference_cache_ignores_other_code_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path))
    stale = tmp_path / "reference" / f"profile-settings-{'0' * 32}.md"
    stale.parent.mkdir()
    stale.write_text("stale text of an older toolkit")
    text = reference.GENERATORS["profile-settings"]()
    assert "stale" not in text and not stale.exists()
    assert reference.GENERATORS["profile-settings"]() == text == site_reference.profile_settings()


@pytest.mark.parametrize("damage", ["not utf-8", "empty", "folder", "fifo"])
def test_a_damaged_kept_reference_is_generated_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """A kept reference that was not UTF-8 or a folder was a traceback of every site build, a FIFO hung
    it, an empty one made the page's generator "unknown" (pr19a 7)."""
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path))
    text = reference.GENERATORS["userdata-keys"]()
    (kept,) = (tmp_path / "reference").glob("userdata-keys-*.md")
    kept.unlink()
    if damage == "folder":
        kept.mkdir()
    elif damage == "fifo":
        os.mkfifo(kept)
    else:
        kept.write_bytes(b"\xff\xfe" if damage == "not utf-8" else b"")
    assert reference.GENERATORS["userdata-keys"]() == text
    if damage != "folder":
        assert kept.read_text() == text
