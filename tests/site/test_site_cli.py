"""`cernvm-build site …` from the command line: JSON output, help, one-line errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sitehelpers import Edit

from cernvm_build.cli.main import main


def test_build_json_then_noop(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["site", "build", "--site", str(site), "--out", str(out), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["pages"] > 30 and first["rendered"] == first["outputs"]
    # lf32a: what a command wrote is "path" in every --json (out_dir kept as an alias until 2027)
    assert first["path"] == first["out_dir"] and Path(first["path"]).resolve() == out.resolve()
    assert main(["site", "build", "--site", str(site), "--out", str(out), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["rendered"] == 0 and second["markdown_rendered"] == 0


def test_check_reports_broken_links_with_file_line(
    site: Path, tmp_path: Path, edit: Edit, capsys: pytest.CaptureFixture[str]
) -> None:
    page = site / "content" / "docs" / "quickstart" / "client.md"
    edit(page, "[launch a CernVM](launch.md)", "[launch a CernVM](lunch.md)")
    code = main(["site", "check", "--site", str(site), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 7
    line = next(i for i, t in enumerate(page.read_text().splitlines(), 1) if "lunch.md" in t)
    assert f"client.md:{line}: link to 'docs/quickstart/lunch.md', which is not a page" in err
    assert "Traceback" not in err and "hint:" in err


def test_check_counts_every_broken_link_past_those_listed(
    site: Path, tmp_path: Path, edit: Edit, capsys: pytest.CaptureFixture[str]
) -> None:
    """lf18: 150 broken links on a page were listed as 100 and one 'and 50 more' line, and the
    error counted the lines: '101 broken link(s)'."""
    links = "".join(f'<a href="/gone{i}/">x</a>\n' for i in range(150))
    edit(site / "templates" / "tags.html", "<h1>Tags</h1>", "<h1>Tags</h1>\n" + links)
    code = main(["site", "check", "--site", str(site), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 7
    assert "error: 150 broken link(s), first: " in captured.err, captured.err
    assert "150 broken: " in captured.out and "and 50 more problems (100 shown)" in captured.out


def test_check_json_ok(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["site", "check", "--site", str(site), "--out", str(tmp_path / "o"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["problems"] == []


def test_check_says_external_links_past_the_cap_were_skipped(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """mm18c: links past MAX_EXTERNAL URLs were counted as broken, failing the check; now they are
    skipped, said in the summary and the JSON. A cap of 0 probes nothing: no network."""
    from cernvm_build.site import check

    monkeypatch.setattr(check, "MAX_EXTERNAL", 0)
    argv = ["site", "check", "--site", str(site), "--out", str(tmp_path / "o"), "--external"]
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["problems"] == [] and doc["broken"] == 0 and doc["external"] == 0
    assert doc["skipped"] > 0 and doc["skipped_first"]
    assert main(argv) == 0
    assert f"{doc['skipped']} links to URLs past the first 0 skipped (first: " in capsys.readouterr().out


def test_usage_errors(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["site", "build", "--site", str(site), "--out", str(tmp_path), "--repo-metadata", "x"]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
    assert main(["site", "publish", "--site", str(site), "/tmp/not-s3"]) == 2
    assert "not an s3:// URL" in capsys.readouterr().err
    # pr19a 12: a port out of range was an OverflowError traceback, an interval of nan/-1 a busy watcher
    for flag, value in (("--port", "70000"), ("--port", "-1"), ("--interval", "nan"), ("--interval", "-1")):
        with pytest.raises(SystemExit) as e:
            main(["site", "serve", "--site", str(site), "--out", str(tmp_path), flag, value])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}" in err and "Traceback" not in err, err


def test_help_teaches_with_examples() -> None:
    for argv in (["site", "--help"], ["site", "build", "--help"], ["site", "publish", "--help"]):
        proc = subprocess.run(
            [sys.executable, "-m", "cernvm_build.cli.main", *argv],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0
        assert "cernvm-build site" in proc.stdout


#: `cernvm-build ARGS...` as its entry point runs it, with an atexit hook (which every exit runs) and an
#: object that says when the interpreter's teardown freed it (a process ended by `procexit.end_process`
#: does not)
ENTRY = """
import atexit, sys
atexit.register(lambda: print("atexit ran", file=sys.stderr))
class Canary:
    def __del__(self):
        print("teardown ran", file=sys.stderr)
canary = Canary()
from cernvm_build.cli.main import main
sys.argv = ["cernvm-build", *sys.argv[1:]]
raise SystemExit(main())
"""


def test_site_build_ends_its_process_without_teardown_and_loses_no_output(tmp_path: Path) -> None:
    from bench.site_corpus import generate

    corpus = generate(tmp_path / "corpus", 3)["ours"]
    argv = ["site", "build", "--site", str(corpus), "--out", str(tmp_path / "out")]
    # stdout buffered as in a pipe to a script (PYTHONUNBUFFERED would hide an exit that loses it)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["CERNVM_CACHE_DIR"] = str(tmp_path / "cache")
    built = subprocess.run(
        [sys.executable, "-c", ENTRY, *argv, "--json"], capture_output=True, text=True, env=env
    )
    assert built.returncode == 0 and "teardown ran" not in built.stderr, built.stderr
    assert "atexit ran" in built.stderr
    assert json.loads(built.stdout)["pages"] == 5  # the whole report, flushed before the exit
    failed = subprocess.run(
        [sys.executable, "-c", ENTRY, *argv, "--repo-metadata", "x"], capture_output=True, text=True, env=env
    )
    assert failed.returncode == 2 and "error:" in failed.stderr and "NAME=DIR" in failed.stderr
    assert "teardown ran" not in failed.stderr
    # a report that cannot be written (a full disk): one line and a failure, not a traceback
    with open("/dev/full", "w") as full:
        lost = subprocess.run(
            [sys.executable, "-c", ENTRY, *argv, "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    assert lost.returncode == 1 and "error: cannot write the output" in lost.stderr, lost.stderr
    assert "Traceback" not in lost.stderr
    # another command, or `site build` called with its caller's arguments (main(list): a process of the
    # caller's, which goes on): an ordinary exit
    other = subprocess.run([sys.executable, "-c", ENTRY, "profiles", "list"], capture_output=True, text=True)
    assert other.returncode == 0 and "teardown ran" in other.stderr, other.stderr
    called = ENTRY.replace(
        "raise SystemExit(main())",
        "code = main(sys.argv[1:])\nprint('returned', file=sys.stderr)\nraise SystemExit(code)",
    )
    in_caller = subprocess.run(
        [sys.executable, "-c", called, *argv, "-q"], capture_output=True, text=True, env=env
    )
    assert in_caller.returncode == 0 and "returned" in in_caller.stderr, in_caller.stderr
    # under a profiler, which writes its results once the command has returned: an ordinary exit
    entry = tmp_path / "entry.py"
    entry.write_text(ENTRY)
    profile = tmp_path / "build.prof"
    profiled = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(profile), str(entry), *argv, "-q"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert profiled.returncode == 0 and profile.stat().st_size > 0, profiled.stderr


def test_one_shot_build_leaves_its_wal_to_the_next_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`site build` ends its process without the state's closing checkpoint (the WAL copied into the
    database and both fsynced: waiting, in each one-page rebuild); the next build reads the WAL. A
    builder whose process goes on (serve, a caller) closes the state, and so does a one-shot build whose
    WAL grew past ``WAL_LEFT_MAX``."""
    from bench.site_corpus import generate
    from cernvm_build.site import cache
    from cernvm_build.site.build import Builder

    corpus = generate(tmp_path / "corpus", 3)["ours"]
    out = tmp_path / "out"
    argv = ["site", "build", "--site", str(corpus), "--out", str(out), "--json"]
    env = {**os.environ, "CERNVM_CACHE_DIR": str(tmp_path / "cache")}

    def build() -> dict[str, int]:
        done = subprocess.run([sys.executable, "-c", ENTRY, *argv], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        report: dict[str, int] = json.loads(done.stdout)
        return report

    assert build()["rendered"] > 0
    (wal,) = (tmp_path / "cache").glob("site/*/state.sqlite-wal")
    assert wal.stat().st_size > 0  # the build's commits, not copied into the database
    page = next(corpus.glob("content/**/p*.md"))
    page.write_text(page.read_text().replace("\n\n", "\n\nEdited. ", 1))
    one = build()
    assert (one["markdown_rendered"], one["pages_planned"]) == (1, 1)  # the state in the WAL was read
    noop = build()
    assert (noop["rendered"], noop["markdown_rendered"]) == (0, 0)
    # a builder whose process goes on: the state closed, its WAL copied and removed
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache"))
    page.write_text(page.read_text().replace("\n\n", "\n\nAgain. ", 1))
    assert Builder(corpus, out).build().markdown_rendered == 1
    assert not wal.exists()
    # a one-shot build whose WAL is past the most it leaves: closed too
    monkeypatch.setattr(cache, "WAL_LEFT_MAX", 0)
    page.write_text(page.read_text().replace("\n\n", "\n\nOnce more. ", 1))
    assert Builder(corpus, out, ends_process=True).build().markdown_rendered == 1
    assert not wal.exists() and not cache._LEFT_OPEN


#: What a one-page rebuild runs without (issue 17: most of its CPU is the process's start-up), each
#: imported only where it is needed: logging (configured for commands that log, or -v), YAML (a data
#: file or front matter not parsed before), Pygments' lexers (a code block not highlighted before), the
#: pure-Python Markdown parser (the tree writer's fallback), rich (tables, progress), other command areas
#: and site commands; dataclasses (~6 ms: the build's records are NamedTuples and plain classes).
NOT_IN_ONE_PAGE_REBUILD = (
    "dataclasses",
    "fractions",  # cernvm_build.table's, only where a size is parsed
    "locale",  # gettext's, where argparse looked its words up (cli.app)
    "logging",
    "yaml",
    "pygments.lexers",
    "markdown_it",
    "rich",
    "cernvm_build.cli.cvmfs",
    "cernvm_build.cli.image",
    "cernvm_build.site.check",
    "cernvm_build.site.serve",
)
#: ... and what a rebuild that renders nothing runs without too (inspect: jinja2's, else dataclasses')
#: and no Markdown parser (the Rust one's extension is loaded where a source is rendered)
NOT_IN_NOOP_REBUILD = (
    *NOT_IN_ONE_PAGE_REBUILD,
    "jinja2",
    "cernvm_build.site.mdfast",
    "cernvm_build.site.mdtree",
    "markdown_it_pyrs",
    "inspect",
    "shutil",  # (with bz2 and lzma: ~1.5 ms) only where a file is copied, git run, or jinja2 imported
)


def test_one_page_rebuild_imports_only_what_it_needs(tmp_path: Path) -> None:
    """The modules made lazy stay lazy: the one-shot CLI's ``-X importtime`` lists every module the
    process imported (written as it imports, so a process ended by ``os._exit`` lists them too)."""
    from bench.site_corpus import generate

    corpus = generate(tmp_path / "corpus", 3)["ours"]
    argv = ["site", "build", "--site", str(corpus), "--out", str(tmp_path / "out"), "--json"]
    env = {**os.environ, "CERNVM_CACHE_DIR": str(tmp_path / "cache")}

    def imported() -> tuple[dict[str, int], set[str]]:
        cmd = [sys.executable, "-X", "importtime", "-m", "cernvm_build.cli.main", *argv]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        names = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
        return json.loads(done.stdout), names

    report, names = imported()
    assert report["rendered"] > 0 and {"jinja2", "yaml", "pygments.lexers"} <= names  # the check sees
    page = next(corpus.glob("content/**/p*.md"))
    assert "```" in page.read_text()  # its code blocks are highlighted already
    page.write_text(page.read_text().replace("\n\n", "\n\nEdited. ", 1))
    report, names = imported()
    assert (report["markdown_rendered"], report["rendered"]) == (1, 1)
    # rendered: by jinja2, or by its runtime alone (``jinjaless``, in the render child)
    assert "jinja2.runtime" in names and not names & set(NOT_IN_ONE_PAGE_REBUILD)
    report, names = imported()
    assert report["rendered"] == 0 and not names & set(NOT_IN_NOOP_REBUILD)


#: runs the CLI with every pattern ``re`` compiles (not made from ``recache``'s entries) written out
_COMPILES = """
import re, sys
from re import _compiler
real = _compiler.compile
def compile(p, flags=0):
    sys.stderr.write("compiled %r\\n" % (p,))
    return real(p, flags)
_compiler.compile = compile
from cernvm_build.cli.main import main
main(sys.argv[1:])
"""


def test_a_one_page_rebuild_makes_the_later_steps_patterns_from_the_state(tmp_path: Path) -> None:
    """The later steps' modules (plan, search index, write) are imported inside the render step, where
    ``recache`` makes their module-level patterns from those a full build kept (sp33b)."""
    from bench.site_corpus import generate
    from cernvm_build.site import search

    corpus = generate(tmp_path / "corpus", 3)["ours"]
    argv = ["site", "build", "--site", str(corpus), "--out", str(tmp_path / "out"), "--json", "-j", "1"]
    env = {**os.environ, "CERNVM_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-c", _COMPILES, *argv]
    assert subprocess.run(cmd, capture_output=True, env=env).returncode == 0
    page = next(corpus.glob("content/**/p*.md"))
    page.write_text(page.read_text().replace("\n\n", "\n\nEdited. ", 1))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["markdown_rendered"] == 1
    assert f"compiled {search._BODY.pattern!r}" not in done.stderr.splitlines()


#: a release index as `release build` writes it (one profile, one artifact)
RELEASE = json.dumps(
    {
        "schema": 1,
        "version": "2026.11-1",
        "date": "2026-11-20T12:00:00Z",
        "source_date_epoch": 1,
        "profiles": [
            {
                "name": "el9",
                "os": "alma",
                "frozen": False,
                "snapshot": {"repository": "r.cern.ch", "path": "/el9", "revision": 4},
                "profile_sha256": "0" * 64,
            }
        ],
        "artifacts": [
            {
                "name": "a",
                "path": "a.iso",
                "profile": "el9",
                "kind": "k",
                "format": "iso",
                "sha256": "a" * 64,
                "size": 5,
            }
        ],
    }
).encode()


@pytest.mark.parametrize(
    ("name", "body", "error"),
    [
        ("data/x.yaml", b"a: \xff\n", "data/x.yaml:1: not UTF-8 text"),
        ("data/y.json", b"[" * 50000 + b"]" * 50000, "data/y.json: nested too deeply"),
        (
            "content/deep.md",
            b"---\na: " + b"[" * 990 + b"]" * 990 + b"\n---\nx\n",
            "deep.md:2: front matter is",
        ),
        # pr17a findings 1-4: int()'s 4,300-digit limit and json's recursion came through as
        # tracebacks; a release index's date went unchecked into the page and generated YAML
        ("data/z.json", b'{"x": ' + b"9" * 5000 + b"}", "data/z.json: a number has more digits than"),
        (
            "content/big.md",
            b"---\nweight: " + b"9" * 5000 + b"\n---\nx\n",
            "big.md:2: front matter: a number",
        ),
        ("data/releases/2026.11-1.json", b"[" * 100000 + b"]" * 100000, "2026.11-1.json: nested too deeply"),
        (
            "data/releases/2026.11-1.json",
            RELEASE.replace(b'"size": 5', b'"size": ' + b"9" * 5000),
            "more digits than",
        ),
        (
            "data/releases/2026.11-1.json",
            RELEASE.replace(b"2026-11-20T12:00:00Z", b"<b>x</b>]]>"),
            "date: date '<b>",
        ),
    ],
    ids=[
        "yaml-bytes",
        "json-deep",
        "front-matter-deep",
        "json-bigint",
        "fm-bigint",
        "rel-deep",
        "rel-bigint",
        "rel-date",
    ],
)
def test_a_hostile_data_file_is_one_line_not_a_traceback(
    tmp_path: Path, name: str, body: bytes, error: str
) -> None:
    from bench.site_corpus import generate

    corpus = generate(tmp_path / "corpus", 3)["ours"]
    (corpus / name).parent.mkdir(parents=True, exist_ok=True)
    (corpus / name).write_bytes(body)
    env = {**os.environ, "CERNVM_CACHE_DIR": str(tmp_path / "cache")}
    argv = ["site", "build", "--site", str(corpus), "--out", str(tmp_path / "out"), "--jobs", "2"]
    proc = subprocess.run([sys.executable, "-c", ENTRY, *argv], capture_output=True, text=True, env=env)
    assert proc.returncode == 7 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and error in lines[0], proc.stderr


#: the CLI's entry with a finder that reports which process imports jinja2 (forked processes keep it)
SPY_ENTRY = """
import os, sys
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "jinja2":
            print(f"jinja2 imported by {os.getpid()}", file=sys.stderr, flush=True)
        return None
sys.meta_path.insert(0, Spy())
print(f"entry {os.getpid()}", file=sys.stderr, flush=True)
from cernvm_build.site import renderchild
busy = sys.argv[-1] == "busy"
renderchild.idle_core = lambda: not busy  # (the test's machine is as loaded as it is)
if busy:
    sys.argv.pop()
from cernvm_build.cli.main import main
sys.argv = ["cernvm-build", *sys.argv[1:]]
sys.exit(main())
"""


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_one_shot_one_page_rebuild_imports_jinja2_in_its_render_child(tmp_path: Path) -> None:
    """``renderchild``: with two jobs the one-page rebuild's page is rendered by a forked child, which
    imported jinja2 (this process never did), and the child is gone when the command returns; a cold
    build and a no-change one fork none; with ``--jobs 1`` one process does
    it all. Both end byte-identical to a clean build. A template's error
    met in the child is one line, and the output is left as it was."""
    from bench.site_corpus import generate

    corpus = generate(tmp_path / "corpus", 3)["ours"]
    env = {**os.environ, "CERNVM_CACHE_DIR": str(tmp_path / "cache")}
    page = next(corpus.glob("content/**/p*.md"))

    def build(out: str, *more: str) -> tuple[int, str, set[int]]:
        argv = ["site", "build", "--site", str(corpus), "--out", str(tmp_path / out), "--json", *more]
        done = subprocess.run(
            [sys.executable, "-c", SPY_ENTRY, *argv], capture_output=True, text=True, env=env
        )
        lines = done.stderr.splitlines()
        entry = int(next(line.split()[1] for line in lines if line.startswith("entry ")))
        importers = {int(line.split()[-1]) for line in lines if line.startswith("jinja2 imported by")}
        return done.returncode, done.stderr, {pid - entry for pid in importers}

    for jobs, where in (("2", "child"), ("1", "here")):
        # the first build renders every page here (a cold build forks no child)
        assert build(jobs, "--jobs", jobs)[::2] == (0, {0})
        page.write_text(page.read_text().replace("\n\n", f"\n\nEdited {jobs}. ", 1))
        code, err, importers = build(jobs, "--jobs", jobs)
        assert code == 0, err
        if where == "child":
            (offset,) = importers  # one process imported jinja2: not this one
            assert offset != 0
            with pytest.raises(ProcessLookupError):  # the child was reaped (or died with the command)
                os.kill(int(err.split("entry ")[1].split()[0]) + offset, 0)
        else:
            assert importers == {0}
        assert build(jobs, "--jobs", jobs)[::2] == (0, set())  # nothing changed: no one imports jinja2
        if where == "child":  # no core idle: no child, the page rendered here
            page.write_text(page.read_text().replace("Edited", "Busy", 1))
            assert build(jobs, "--jobs", jobs, "busy")[::2] == (0, {0})
        assert build(f"clean{jobs}", "--jobs", jobs)[0] == 0
        assert _tree(tmp_path / jobs) == _tree(tmp_path / f"clean{jobs}")

    before = _tree(tmp_path / "2")
    (corpus / "templates" / "broken.html").write_text("<p>{{ nope }}</p>\n")
    page.write_text(page.read_text().replace("---\n", "---\nlayout: broken\n", 1).replace("Edited", "Again"))
    code, err, importers = build("2", "--jobs", "2")
    assert code != 0 and "Traceback" not in err and importers and 0 not in importers, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "undefined value" in errors[0] and "broken.html" in err, err
    assert _tree(tmp_path / "2") == before


#: a wrapper the entries below put on a function: it writes ``words`` to stderr when called
SAID = """
def said(owner, name, words):
    real = getattr(owner, name)
    def spoke(*args, **kw):
        os.write(2, f"{words}\\n".encode())
        return real(*args, **kw)
    setattr(owner, name, spoke)
"""


#: the CLI's entry with the render child forked (a core idle), which reports the process that makes
#: each search shard; with "fail" last, a shard made in the child fails there (an OSError)
SHARD_ENTRY = (
    """
import os, sys
from cernvm_build.site import renderchild
renderchild.idle_core = lambda: True
from cernvm_build.site import build, search
fail = sys.argv[-1] == "fail"
if fail:
    sys.argv.pop()
real, entry = search.write_shard, os.getpid()
def spy(*args, **kw):
    os.write(2, f"shard made by {os.getpid() - entry}\\n".encode())  # (one write: two processes)
    if fail and os.getpid() != entry:
        raise OSError(28, "No space left on device")
    return real(*args, **kw)
search.write_shard = spy
"""
    + SAID
    + """said(search.Offload, "take", "shard taken")
said(build.State, "prune_md", "state pruned")
from cernvm_build.cli.main import main
sys.argv = ["cernvm-build", *sys.argv[1:]]
sys.exit(main())
"""
)


@pytest.mark.parametrize("fail", [False, True], ids=["child", "child-fails"])
def test_a_one_shot_one_page_rebuild_makes_its_search_shard_in_the_render_child(
    tmp_path: Path, fail: bool
) -> None:
    """``search.offload``: the one stale search shard of a one-page rebuild is made (its postings
    merged again, its files written) by the render child, while the parent walks the output and
    prunes the state (``Builder._tail``); a child that fails there leaves it to the parent. Either way
    the output is a clean build's, byte for byte, and the next build finds nothing to do."""
    from bench.site_corpus import generate

    corpus = generate(tmp_path / "corpus", 30)["ours"]
    env = {**os.environ, "CERNVM_CACHE_DIR": str(tmp_path / "cache")}

    def build(out: str, *more: str) -> tuple[list[int], dict[str, Any], list[str]]:
        argv = ["site", "build", "--site", str(corpus), "--out", str(tmp_path / out), "--json", *more]
        done = subprocess.run(
            [sys.executable, "-c", SHARD_ENTRY, *argv], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        makers = [int(line.split()[-1]) for line in lines if line.startswith("shard made")]
        return makers, json.loads(done.stdout), [line for line in lines if line.endswith(("taken", "pruned"))]

    build("out")
    page = next(corpus.glob("content/**/p*.md"))
    page.write_text(page.read_text().replace("\n\n", "\n\nEdited. ", 1))
    makers, report, order = build("out", *(["fail"] if fail else []))
    assert (report["rendered"], report["search_shards"]) == (1, 1)
    assert order == ["state pruned", "shard taken"]  # pruned while the child made the shard
    # the child (not this process: offset 0), and after its failure this process
    assert len(makers) == 1 + fail and makers[0] != 0 and makers[1:] == ([0] if fail else [])
    assert build("out")[1]["rendered"] == 0
    build("clean")
    assert _tree(tmp_path / "out") == _tree(tmp_path / "clean")


#: imports the builder as ``site build`` does and prints (patterns made from the memo, compiled, in it)
IMPORT_BUILDER = """
from cernvm_build.cli import site
from cernvm_build.site import recache
seen = []
entries = recache.Patterns.entries
recache.Patterns.entries = lambda self: seen.append((self.hits, len(self.made))) or entries(self)
site._import_builder()
from cernvm_build.site import write
assert write._XML_INVALID.sub("", "a\\x01b\\ufffe") == "ab"  # a pattern that may come from the memo works
print(*seen[0])
"""


def test_the_builders_import_patterns_are_kept_between_processes(tmp_path: Path) -> None:
    """``_import_builder``: the first process compiles the patterns the builder's modules compile as
    they are imported and keeps them; the next makes every one from the memo and compiles none; a
    damaged memo is compiled again and replaced."""
    env = {**os.environ, "CERNVM_CACHE_DIR": str(tmp_path)}

    def run() -> tuple[int, int]:
        done = subprocess.run(
            [sys.executable, "-P", "-c", IMPORT_BUILDER], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        hits, made = map(int, done.stdout.split())
        return hits, made

    hits, made = run()
    assert hits == 0 and made > 20
    assert run() == (made, 0)
    (tmp_path / "site" / "import-patterns.pickle").write_bytes(b"not a pickle")
    assert run() == (0, made)
    assert run() == (made, 0)
    memo = tmp_path / "site" / "import-patterns.pickle"  # a FIFO there: every command hung (pr19a 7)
    memo.unlink()
    os.mkfifo(memo)
    assert run() == (0, made)
    assert memo.is_file() and run() == (made, 0)


def test_a_site_folder_without_config_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr19d finding 16: README: "`site build --site DIR` builds your own site folder"; an empty DIR
    said only "no config.yaml", not where a site to start from is (in a wheel: site-packages)."""
    import shlex

    from cernvm_build.paths import data_dir

    mine = tmp_path / "my site"
    mine.mkdir()
    assert main(["site", "build", "--site", str(mine), "--out", str(tmp_path / "out")]) == 7
    hint = capsys.readouterr().err.splitlines()[-1]
    command = hint.split("copy the shipped site: ", 1)[1]
    assert shlex.split(command) == ["cp", "-r", f"{data_dir('site')}/.", str(mine)]
    subprocess.run(shlex.split(command), check=True)
    assert main(["site", "build", "--site", str(mine), "--out", str(tmp_path / "out"), "-q"]) == 0


def test_build_warnings_are_shown_with_quiet(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """rv24: a warning is no result: `-q` (pr24b: the result's line left out) dropped the build's
    warnings with it, as they were printed by the result's render. A damaged state's warning here."""
    import sqlite3

    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["site", "build", "--site", str(site), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    (state,) = (tmp_path / "cache").rglob("state.sqlite")
    with sqlite3.connect(state) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    state.write_bytes(b"not a database " * 1000)
    Path(f"{state}-wal").unlink(missing_ok=True)
    capsys.readouterr()
    assert main([*argv, "-q"]) == 0
    got = capsys.readouterr()
    assert got.out == "" and "warning: the build state" in got.err and "was damaged" in got.err, got


def test_check_json_lists_every_broken_link_with_its_place(
    site: Path, tmp_path: Path, edit: Edit, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json's error document had the first broken link in its message, "where" null, and the rest
    dropped (note24's leftovers): now each with its page's file:line, the first 100 and how many more."""
    page = site / "content" / "docs" / "quickstart" / "client.md"
    edit(page, "[launch a CernVM](launch.md)", "[launch a CernVM](launch.md)\n" + "[x](gone.md)\n" * 103)
    code = main(["site", "check", "--site", str(site), "--out", str(tmp_path / "out"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 7 == doc["exit_code"]
    line = next(i for i, t in enumerate(page.read_text().splitlines(), 1) if "gone.md" in t)
    first = doc["problems"][0]
    assert doc["where"] == f"{first['file']}:{line}" and first["file"].endswith("client.md")
    assert [p["line"] for p in doc["problems"]] == list(range(line, line + 100))
    assert doc["problems"][1]["message"] == "link to 'docs/quickstart/gone.md', which is not a page"
    assert doc["more"] == 3 and "(and 102 more)" in doc["message"]


@pytest.mark.parametrize("flag", ["--out", "--site"])
def test_a_folder_whose_path_is_not_utf8_is_one_usage_line(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the build's state names its folders as text: a UnicodeEncodeError traceback (pr28b finding 12)
    odd = tmp_path / os.fsdecode(b"s\xff")
    if flag == "--site":
        odd.mkdir()  # a --site that is not there is a missing input first (tests/core/test_missing_inputs)
    assert main(["site", "build", flag, str(odd)]) == 2
    err = capsys.readouterr().err
    assert f"error: {flag} " in err and "the path is not UTF-8 text" in err
    assert not odd.exists() if flag == "--out" else not any(odd.iterdir())


#: the CLI's entry with a core idle, which says when the render child is forked and when the build
#: reads its outputs table and starts git's log (the steps that need not come before the fork)
ORDER_ENTRY = (
    """
import os, sys
from cernvm_build.site import renderchild
renderchild.idle_core = lambda: True
from cernvm_build.site import build, gitdates
"""
    + SAID
    + """said(renderchild.RenderChild, "start", "child forked")
said(build.State, "outputs", "outputs read")
said(gitdates, "start", "git started")
from cernvm_build.cli.main import main
sys.argv = ["cernvm-build", *sys.argv[1:]]
sys.exit(main())
"""
)


def test_a_one_page_rebuild_forks_its_render_child_before_the_steps_that_need_not_come_first(
    tmp_path: Path,
) -> None:
    """The render child's jinja2 import is what the parent waits for at its first page: it is forked as
    soon as the edited sources are known, before the outputs table is read, the output folder guarded
    and git's log started (sp31b). A no-change rebuild forks none."""
    from bench.site_corpus import generate

    corpus = generate(tmp_path / "corpus", 3)["ours"]
    env = {**os.environ, "CERNVM_CACHE_DIR": str(tmp_path / "cache")}

    def build() -> list[str]:
        argv = ["site", "build", "--site", str(corpus), "--out", str(tmp_path / "out"), "--json", "-j", "2"]
        done = subprocess.run(
            [sys.executable, "-c", ORDER_ENTRY, *argv], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        return [
            line
            for line in done.stderr.splitlines()
            if line in ("child forked", "outputs read", "git started")
        ]

    assert "child forked" not in build()  # a cold build
    page = next(corpus.glob("content/**/p*.md"))
    page.write_text(page.read_text().replace("\n\n", "\n\nEdited. ", 1))
    assert build() == ["child forked", "outputs read", "git started"]
    assert "child forked" not in build()  # nothing changed
