"""``cernvm-build cvmfs ...``: what users and scripts see (JSON, exit codes, exported trees)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cernvm_build import utcdate
from cernvm_build.cli.main import main
from tests.support.killed import killed_in_atomic_file

from .conftest import FQRN, ROOT_REV1, Fixture


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    code = main(list(argv))
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_info_and_default_key_discovery(fx: Fixture, capsys: pytest.CaptureFixture[str]) -> None:
    # no --key: found in <fqrn>/keys/ beside repo/ (the fixture layout)
    d = run_json(capsys, "cvmfs", "info", str(fx.root), "--json")
    assert d["fqrn"] == FQRN and d["revision"] == 2 and d["files"] == 66  # type: ignore[index]
    d = run_json(capsys, "cvmfs", "info", str(fx.repo), "--tag", "slc4-frozen", "--json")
    assert d["root_hash"] == ROOT_REV1 and d["tag"] == "slc4-frozen"  # type: ignore[index]
    # pr28c: the dates of --json in one form (it was '2036-11-22T04:21:43+00:00' here, ...Z elsewhere)
    assert utcdate.PATTERN.match(d["whitelist"]["expires"])  # type: ignore[index]


@pytest.mark.parametrize("extra", [[], ["--no-verify"], ["--key", "KEY"]])
def test_a_local_source_that_is_not_there_is_said_so(
    fx: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    """pr28c: a typo in a local SOURCE said "no public key found to verify the repository" (the key
    look-up came first); with --no-verify "invalid repository name 'x'", with --key "manifest not
    found ... the hash is wrong". One that is not there is exit 2, a missing input in every command
    (lf32a); a file where the folder should be stays the repository's error."""
    key = next((fx.root / "keys").glob("*.pub"))
    extra = [str(key) if w == "KEY" else w for w in extra]
    for source, said, code in ((tmp_path / "no-such" / FQRN, "no such folder", 2), (key, "not a folder", 5)):
        assert main(["cvmfs", "info", str(source), "--json", *extra]) == code
        doc = json.loads(capsys.readouterr().out)
        assert doc["error"] == f"{source}: {said}", doc
        assert "Stratum folder" in doc["hint"]


def test_a_folder_gone_is_still_read_from_the_cache_when_its_key_is_found_elsewhere(
    fx: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key look-up's "no such folder" (pr28c) came before any key was looked for: a key in
    $CVMFS_KEYS_DIR no longer verified what --cache holds of a folder gone (``open_repository``
    serves it from the cache's last verified manifest)."""
    src = tmp_path / "copy" / FQRN
    shutil.copytree(fx.root, src)
    keys = tmp_path / "keys"
    shutil.copytree(fx.root / "keys", keys)
    monkeypatch.setenv("CVMFS_KEYS_DIR", str(keys))
    argv = ["cvmfs", "info", str(src / "repo"), "--fqrn", FQRN, "--cache", str(tmp_path / "cache"), "--json"]
    first = run_json(capsys, *argv)
    shutil.rmtree(src)
    assert run_json(capsys, *argv) == {**first, "offline": True}  # type: ignore[dict-item]


def test_ls_cat_and_tag_list(fx: Fixture, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "cvmfs", "ls", str(fx.root), "/usr/bin", "--json")
    by_path = {r["path"]: r for r in rows}  # type: ignore[union-attr]
    assert by_path["/usr/bin/alias1"] == {**by_path["/usr/bin/alias1"], "type": "symlink", "target": "tool1"}
    assert "/usr/bin/tool5" not in by_path and "/usr/bin/tool4" in by_path
    tags = run_json(capsys, "cvmfs", "tag", "list", str(fx.root), "--json")
    assert [t["name"] for t in tags][:2] == ["slc4-update", "trunk"]  # type: ignore[union-attr,index]
    assert main(["cvmfs", "cat", str(fx.root), "/etc/new-in-rev2"]) == 0
    assert capsys.readouterr().out == "added\n"


@pytest.mark.parametrize("command", [["info"], ["ls"], ["cat", "/etc/new-in-rev2"]])
def test_a_tag_whose_name_is_not_utf8_is_no_tag(
    fx: Fixture, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--tag`` holding a byte that is no UTF-8 (``os.fsdecode``'s surrogate) reached SQLite's query:
    a UnicodeEncodeError traceback (``cvmfs mount --tag`` too), not the unknown tag's line."""
    name, *rest = command
    assert main(["cvmfs", name, str(fx.root), *rest, "--tag", os.fsdecode(b"x\xff")]) == 5
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no tag named" in err and "Traceback" not in err, err


def test_verify_exit_codes(fx: Fixture, capsys: pytest.CaptureFixture[str]) -> None:
    d = run_json(capsys, "cvmfs", "verify", str(fx.root), "--json")
    assert d["ok"] and d["objects"] == 66 and d["catalogs"] == 2  # type: ignore[index]
    with open(os.path.join(fx.repo, ".cvmfspublished"), "r+b") as f:
        f.seek(2)
        f.write(b"0")
    assert main(["cvmfs", "verify", str(fx.root)]) == 6
    err = capsys.readouterr().err
    assert "body does not match its hash" in err and "Traceback" not in err


def test_missing_path_and_key_are_one_line_errors(fx: Fixture, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["cvmfs", "cat", str(fx.root), "/nope"]) == 5
    assert "ENOENT" in capsys.readouterr().err
    bare = tmp_path / "bare"
    import shutil

    shutil.copytree(fx.repo, bare)
    assert main(["cvmfs", "info", str(bare), "--fqrn", FQRN]) == 5
    assert "no public key found" in capsys.readouterr().err


def test_cat_of_a_symbolic_link_names_its_target(fx: Fixture, capsys: pytest.CaptureFixture[str]) -> None:
    # pr20a finding 3: "not a regular file", and not where to look instead
    assert main(["cvmfs", "cat", str(fx.root), "/usr/bin/dirlink"]) == 5
    err = capsys.readouterr().err
    assert "/usr/bin/dirlink: a symbolic link to '../lib/python'" in err and "hint:" in err


def test_export_directory_matches_listing(fx: Fixture, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    dest = tmp_path / "tree"
    d = run_json(capsys, "cvmfs", "export", str(fx.root), str(dest), "--tag", "slc4-frozen", "--json")
    assert d["entries"] == 81  # type: ignore[index]
    listing = fx.listing(1)
    for path, want in listing.items():
        p = dest / path.lstrip("/")
        st = p.lstat()
        assert oct(stat.S_IMODE(st.st_mode)) == want["mode"], path
        if want["type"] == "file":
            assert hashlib.sha1(p.read_bytes()).hexdigest() == want["sha1"], path
        elif want["type"] == "symlink":
            assert os.readlink(p) == want["target"]
    assert (dest / "etc/redhat-release").stat().st_mtime > 1_700_000_000
    assert not list(tmp_path.glob(".tree*"))
    # an existing non-empty destination is refused, not merged
    assert main(["cvmfs", "export", str(fx.root), str(dest)]) == 5


def test_export_and_verify_without_a_bar_pay_nothing_per_entry(
    fx: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """stderr is not a terminal here, so no bar is shown: rich's disabled bar still kept a speed
    sample per advance, once an entry (1.3 CPU-s of the million-entry export and verify each)."""
    from rich.progress import Progress

    advanced: list[object] = []
    monkeypatch.setattr(Progress, "advance", lambda self, task, advance=1: advanced.append(task))
    d = run_json(capsys, "cvmfs", "export", str(fx.root), str(tmp_path / "tree"), "--json")
    assert d["entries"] > 0  # type: ignore[index]
    assert main(["cvmfs", "verify", str(fx.root)]) == 0
    assert advanced == []


def test_export_tar(fx: Fixture, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    dest = tmp_path / "root.tar"
    run_json(capsys, "cvmfs", "export", str(fx.root), str(dest), "--path", "/opt/sw", "--json")
    with tarfile.open(dest) as tar:
        names = tar.getnames()
        assert names[0] == "." and "big-data.txt" in names and names == sorted(names, key=names.index)
        big = tar.extractfile("big-data.txt")
        assert big is not None
        want = fx.listing(2)["/opt/sw/big-data.txt"]["sha1"]
        assert hashlib.sha1(big.read()).hexdigest() == want
    first = dest.read_bytes()
    dest.unlink()
    run_json(capsys, "cvmfs", "export", str(fx.root), str(dest), "--path", "/opt/sw", "--json")
    assert dest.read_bytes() == first  # reproducible
    gz = tmp_path / "root.tar.gz"
    run_json(capsys, "cvmfs", "export", str(fx.root), str(gz), "--path", "/etc", "--json")
    one = gz.read_bytes()
    gz.unlink()
    run_json(capsys, "cvmfs", "export", str(fx.root), str(gz), "--path", "/etc", "--json")
    assert gz.read_bytes() == one
    with tarfile.open(gz) as tar:
        assert sorted(tar.getnames()) == [".", "empty.conf", "new-in-rev2", "redhat-release"]
        assert int.from_bytes(one[4:8], "little") == tar.getmember(".").mtime  # gzip header: no "now"


def test_export_to_dash_is_refused_not_a_directory_named_dash(
    fx: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr19d finding 11: `publish REPO -` reads a tar on stdin; `export SOURCE -` made a directory
    named '-' and wrote nothing on stdout (`| tar t` then failed)."""
    monkeypatch.chdir(tmp_path)
    assert main(["cvmfs", "export", str(fx.root), "-"]) == 2
    captured = capsys.readouterr()
    assert (
        captured.out == "" and "not to stdout" in captured.err and "hint: give e.g. root.tar" in captured.err
    )
    assert not (tmp_path / "-").exists()


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["cvmfs", "--help"])
    out = capsys.readouterr().out
    for cmd in ("info", "ls", "cat", "verify", "export", "serve", "mount", "tag"):
        assert cmd in out


def test_default_keys_are_found_by_the_library(fx: Fixture, tmp_path: Path) -> None:
    """``cvmfs.trust``: the fixture layout's keys/ beside repo/, else none (and a clear error)."""
    from cernvm_build.cvmfs.trust import default_keys, keys_to_verify
    from cernvm_build.errors import CvmfsError

    assert [k.name for k in default_keys(str(fx.root), None)] == [f"{FQRN}.pub"]
    given = [tmp_path / "mine.pub"]
    assert keys_to_verify(str(fx.root), None, given, verify=True) == given
    assert keys_to_verify(str(tmp_path), FQRN, [], verify=False) == []
    with pytest.raises(CvmfsError, match="no public key found"):
        keys_to_verify(str(tmp_path), FQRN, [], verify=True)


@pytest.mark.parametrize("name", ["tree", "tree.tar"])
def test_export_rerun_after_a_kill_leaves_nothing_of_the_killed_run(
    fx: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """A SIGKILLed export leaves its temporary beside the output (nothing can clean up after a
    SIGKILL); the re-run writes the whole output and removes the dead run's half."""
    out = tmp_path / "out"
    out.mkdir()
    dest = out / name
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys, tempfile\n"
            "from pathlib import Path\n"
            "d = Path(sys.argv[1])\n"
            "prefix = f'.{d.name}.{os.getpid()}.'  # the temporary's name, as fsutil.temp_prefix makes it\n"
            "t = Path(tempfile.mkdtemp(prefix=prefix, suffix='.tmp', dir=d.parent))\n"
            "(t / 'half').write_text('half')\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n",
            str(dest),
        ],
        check=False,
    )
    assert killed.returncode == -9
    assert [p.name for p in out.iterdir() if p.name.startswith(f".{name}.")]
    run_json(capsys, "cvmfs", "export", str(fx.root), str(dest), "--path", "/etc", "--json")
    assert [p.name for p in out.iterdir()] == [name]


MARKUP = "x[/b]y[link=http://evil]z[/link]"


def test_paths_and_names_are_printed_as_given_never_as_markup(
    fx: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr16d finding 1: a destination holding ``[/b]`` crashed the export's result line (after the
    export) and a manifest name ``[link=...]`` made a hyperlink in ``cvmfs serve``'s line."""
    dest = tmp_path / f"tree{MARKUP}"
    assert main(["cvmfs", "export", str(fx.root), str(dest), "--path", "/etc"]) == 0
    assert f"to {dest}" in capsys.readouterr().out
    import shutil

    served = tmp_path / "srv"
    shutil.copytree(fx.repo, served)
    (served / ".cvmfspublished").write_bytes(b"C" + b"0" * 40 + f"\nN{MARKUP}\n--\n".encode())
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
    cmd = [sys.executable, "-m", "cernvm_build.cli.main", "cvmfs", "serve", str(served), "--port", "0"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as p:
        try:
            assert p.stdout is not None
            line = p.stdout.readline()
        finally:
            p.terminate()
            _, err = p.communicate(timeout=30)
    assert line.startswith(f"serving {MARKUP} at http://"), (line, err)
    assert f"/cvmfs/{MARKUP}" in line


@pytest.mark.parametrize("value", ["-1", "101", "two"])
@pytest.mark.parametrize(
    "argv",
    [
        ["cvmfs", "ls", "{src}", "/"],
        ["cvmfs", "monitor", "{src}"],
        ["cvmfs", "replicate", "{src}", "{dest}"],
    ],
    ids=["source-options", "monitor", "replicate"],
)
def test_retries_out_of_range_is_one_usage_line(
    fx: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], value: str
) -> None:
    """``--retries -1`` was taken silently (as 0); it is refused at parse time, naming the flag."""
    args = [a.format(src=fx.root, dest=tmp_path / "replica") for a in argv]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--retries", value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: argument --retries: {value!r}"), err
    assert not (tmp_path / "replica").exists()


def test_keygen_rerun_after_a_kill_leaves_no_temporary_private_key(tmp_path: Path) -> None:
    """pr19e finding 2: ``cvmfs keygen`` SIGKILLed while writing the master key left
    ``.<fqrn>.masterkey.<pid>.<n>.tmp`` (a private key) beside the keys for ever: the re-run (and
    every later ``--force``) wrote the four files and kept the dead run's temporary."""
    keys = tmp_path / "keys"
    killed_in_atomic_file(keys / "x.test.masterkey", b"-----BEGIN PRIVATE KEY-----\n", 0o600)
    (temp,) = keys.iterdir()
    assert temp.name.startswith(".x.test.masterkey.")
    assert main(["cvmfs", "keygen", "x.test", "--out", str(keys), "-q"]) == 0
    assert sorted(p.name for p in keys.iterdir()) == [
        f"x.test.{s}" for s in ("crt", "key", "masterkey", "pub")
    ]


def test_keygen_says_its_result_on_two_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rv25b: ``Output.print`` is one line since pr26b 13 (a newline in it is shown as \\x0a), and
    keygen's two-line result was one print: ``...);\\x0aclients need ...`` on the terminal."""
    assert main(["cvmfs", "keygen", "x.test", "--out", str(tmp_path / "keys")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [a.split(" ", 2)[:2] for a in lines] == [["keys", "for"], ["clients", "need"]], lines


def test_create_rerun_after_a_kill_leaves_no_temporary_of_the_reflog(tmp_path: Path) -> None:
    """pr19e finding 3: ``cvmfs create`` (publish, tag, resign) SIGKILLed while writing a top file
    left ``..cvmfsreflog.<pid>.0.tmp`` in the repository for ever: the re-run, and every later
    publish, rewrote the file and kept the dead run's half. The publish lock's holder reclaims it."""
    assert main(["cvmfs", "keygen", "x.test", "--out", str(tmp_path / "keys"), "-q"]) == 0
    repo = tmp_path / "repo"
    killed_in_atomic_file(repo / ".cvmfsreflog", b"SQLite format 3")
    (temp,) = repo.iterdir()
    args = ["cvmfs", "create", str(repo), "--fqrn", "x.test", "--keys", str(tmp_path / "keys"), "-q"]
    assert main(args) == 0
    assert not temp.exists()
    assert not [p for p in repo.rglob("*.tmp")]


def test_an_output_file_rerun_after_a_kill_leaves_no_temporary(tmp_path: Path) -> None:
    """pr19e finding 9: ``-o FILE`` (nginx-config, squid-config, monitor --out, ...) SIGKILLed while
    writing left ``.FILE.<pid>.<n>.tmp`` beside it for ever; the re-run wrote FILE and kept it."""
    out = tmp_path / "squid.conf"
    killed_in_atomic_file(out, b"server {")
    assert len(list(tmp_path.iterdir())) == 1
    args = ["cvmfs", "squid-config", "--client", "10.0.0.0/8", "--stratum", ".cern.ch", "-o", str(out)]
    assert main(args) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["squid.conf"]


def test_a_keygen_while_another_makes_the_same_keys_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two ``cvmfs keygen`` of one name at once both passed the "already exist" check and wrote their
    files between the other's: a .crt beside the other run's .key (both exit 0; every manifest signed
    with that pair is refused). The second is refused in one line naming the first."""
    import fcntl

    keys = tmp_path / "keys"
    keys.mkdir()
    fd = os.open(keys / ".x.test.keygen.lock", os.O_RDWR | os.O_CREAT)  # the first keygen's hold
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"pid 4242 (keygen x.test)\n")
        capsys.readouterr()
        assert main(["cvmfs", "keygen", "x.test", "--out", str(keys)]) == 5
        err = capsys.readouterr().err
        assert f"error: {keys}: keys for x.test are being made by pid 4242 (keygen x.test)" in err, err
        assert sorted(p.name for p in keys.iterdir()) == [".x.test.keygen.lock"]
    finally:
        os.close(fd)
    assert main(["cvmfs", "keygen", "x.test", "--out", str(keys), "-q"]) == 0
    assert sorted(p.name for p in keys.iterdir()) == [
        f"x.test.{s}" for s in ("crt", "key", "masterkey", "pub")
    ]


def test_ls_json_stopped_half_way_is_one_document_part_and_one_line(
    fx: Fixture, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """rv24: `cvmfs ls --json` streams its array; an error met half-way (a damaged catalog below) got
    --json's error document (pr24b) written after the array's first part: two documents on stdout. The
    error is stderr's line; an error before the stream (no such path) is still the one document."""
    from cernvm_build.cvmfs.revision import Repository
    from cernvm_build.errors import CvmfsError

    real = Repository.walk

    def broken(self: Repository, *a: object, **k: object) -> object:
        walked = real(self, *a, **k)  # type: ignore[arg-type]
        yield next(walked)
        raise CvmfsError("a catalog below is damaged")

    monkeypatch.setattr(Repository, "walk", broken)
    assert main(["cvmfs", "ls", str(fx.root), "/", "-R", "--json"]) == CvmfsError.exit_code
    got = capsys.readouterr()
    assert got.out.startswith("[") and got.out.count('"error"') == 0, got.out
    assert "error: a catalog below is damaged" in got.err
    assert main(["cvmfs", "ls", str(fx.root), "/no-such", "--json"]) != 0
    assert json.loads(capsys.readouterr().out)["error"]


def test_ls_recursive_json_of_a_missing_path_is_the_error_document(
    fx: Fixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr28c: `cvmfs ls SRC /no-such -R --json` wrote '[' and then the error line on stderr: stdout held
    no JSON document at all (the walk's first step is where the path is looked up)."""
    assert main(["cvmfs", "ls", str(fx.root), "/no-such", "-R", "--json"]) == 5
    assert "no such file" in json.loads(capsys.readouterr().out)["error"]
