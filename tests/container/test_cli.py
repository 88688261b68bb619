"""The command line: help that teaches, one-line errors with exit codes, no tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.container.build import BuildRequest, build
from cernvm_build.container.image import LABEL_MTIMES, LABEL_PATH, LABEL_REPOSITORY, ImageSpec
from cernvm_build.container.source import LocalTree

from .test_cvmfs_source import FIXTURE, KEY, PROFILE
from .trees import make_tree


def test_help_lists_formats_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["container", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for word in ("docker-archive", "apptainer", "thin", "cvmfs", "--keep-mtimes", "examples:", "verify"):
        assert word in text


def test_unknown_format_exits_7_with_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prof = tmp_path / "p.yaml"
    prof.write_text(PROFILE.format(key=KEY))
    rc = main(
        ["container", str(prof), "--source", str(FIXTURE), "--format", "oci,sif", "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert rc == 7
    assert "unknown container format 'sif'" in err and "hint:" in err and "Traceback" not in err


def test_cvmfs_format_without_hub_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prof = tmp_path / "p.yaml"
    prof.write_text(PROFILE.format(key=KEY))
    assert main(["container", str(prof), "--source", str(FIXTURE), "--format", "cvmfs"]) == 2
    assert "--hub-stratum" in capsys.readouterr().err


def test_verify_of_missing_or_foreign_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["container", "verify", str(tmp_path / "nope.tar")]) == 2  # (lf32a: a missing input)
    assert f"{tmp_path / 'nope.tar'}: no such file or folder" in capsys.readouterr().err
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    assert main(["container", "verify", str(tmp_path / "junk.tar")]) == 7
    assert "not a tar archive" in capsys.readouterr().err
    spec = ImageSpec("localhost", "plain", "1", created=0)
    build(BuildRequest(LocalTree(make_tree(tmp_path / "t")), spec, ["oci"], tmp_path / "o", "plain"))
    assert main(["container", "verify", str(tmp_path / "o" / "plain.oci")]) == 7
    err = capsys.readouterr().err
    assert "does not record its origin (no label cvmfs.repository)" in err


def test_cvmfs_tags_become_valid_image_tags() -> None:
    from cernvm_build.container.from_profile import image_tag
    from cernvm_build.container.image import ImageSpec

    for cvmfs_tag, expected in [
        ("slc4-frozen", "slc4-frozen"),
        ("v1:2+b", "v1-2-b"),
        (".hidden", "v.hidden"),
    ]:
        assert image_tag(cvmfs_tag) == expected
        ImageSpec("localhost", "x", image_tag(cvmfs_tag), created=0)  # accepted


def test_parent_builds_on_an_earlier_image_or_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prof = tmp_path / "p.yaml"
    prof.write_text(PROFILE.format(key=KEY))
    # a parent of the fixture's /etc (any tree will do: the delta removes most of it)
    labels = {LABEL_REPOSITORY: "fixture.cernvm.test", LABEL_PATH: "/etc", LABEL_MTIMES: "clamped"}
    spec = ImageSpec("localhost", "plain", "1", created=0, labels=labels)
    build(BuildRequest(LocalTree(make_tree(tmp_path / "t")), spec, ["oci"], tmp_path / "o", "plain"))
    parent = tmp_path / "o" / "plain.oci"
    base = ["container", str(prof), "--source", str(FIXTURE), "--format", "oci", "--basename", "img"]
    assert main([*base, "--path", "/etc", "--out", str(tmp_path / "b"), "--parent", str(parent)]) == 0
    assert "1 layers reused" in capsys.readouterr().out
    rc = main([*base, "--out", str(tmp_path / "c"), "--parent", str(parent)])
    err = capsys.readouterr().err
    assert rc == 7 and "Traceback" not in err
    assert "is an image of cvmfs.path=/etc, not /" in err and "hint:" in err
    assert not (tmp_path / "c" / "img.oci").exists()


@pytest.mark.parametrize(
    ("flag", "said"),
    [
        ("--max-layer-bytes=0", "argument --max-layer-bytes: '0': expected a size of at least 1 byte"),
        ("--max-layer-bytes=-5", "argument --max-layer-bytes: '-5': expected a size of at least 1 byte"),
        ("--max-layer-entries=-1", "argument --max-layer-entries: '-1': expected a count of at least 1"),
        ("--max-layer-entries=x", "argument --max-layer-entries: 'x' is not a whole number"),
    ],
)
def test_hub_ingest_limits_below_one_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, said: str
) -> None:
    """They refused every layer, each after its pull ('more than -1 members')."""
    argv = ["hub", "ingest", "127.0.0.1:9/x/y:1", "--hub-stratum", str(tmp_path), "--hub-keys", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        main([*argv, flag])
    assert e.value.code == 2 and said in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["container", "el7", "--layer-size", "abc"], "argument --layer-size: 'abc' is not a size (write"),
        (
            ["container", "el7", "--layer-size", "0"],
            "argument --layer-size: '0': expected a size of at least",
        ),
        (
            [
                "hub",
                "ingest",
                "r.example/x:1",
                "--hub-stratum",
                ".",  # (folders that are there: a missing one is its own usage error)
                "--hub-keys",
                ".",
                "--max-layer-bytes",
                "1.5",
            ],
            "argument --max-layer-bytes: '1.5' is not a whole number of bytes",
        ),
        (
            ["cvmfs", "publish", "--max-tar-bytes", "abc", "t.tar", "repo"],
            "argument --max-tar-bytes: 'abc' is not a size",
        ),
    ],
    ids=["layer-size-word", "layer-size-zero", "max-layer-bytes-fraction", "max-tar-bytes-word"],
)
def test_a_size_flag_says_what_a_size_is(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr21 N16: a malformed size was argparse's "invalid parse_size value: 'abc'" (the parser's
    name, no word of what a size is), and --layer-size 0 was taken."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and said in capsys.readouterr().err


@pytest.mark.parametrize("basename", ["../outside", "*", ".hidden", "a/b"])
def test_a_basename_is_a_file_name_in_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], basename: str
) -> None:
    """pr21 N17: ``--basename ../outside`` wrote outside.oci beside --out, and ``*`` took every
    build's temporaries in --out for its own stale ones and removed them."""
    prof = tmp_path / "p.yaml"
    prof.write_text(PROFILE.format(key=KEY))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".other.oci.tar.tmp").write_text("another build's")
    argv = ["container", str(prof), "--source", str(FIXTURE), "--format", "oci", "--out", str(out)]
    assert main([*argv, "--basename", basename]) == 7
    assert f"--basename {basename!r} is not a file name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "p.yaml"]
    assert [p.name for p in out.iterdir()] == [".other.oci.tar.tmp"]


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_parent_that_is_no_image_is_said_before_the_repository_is_contacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    # rv34a: the parent was read only after the snapshot was opened; offline (here: a port nothing
    # listens on) the error was the manifest's, not the --parent's
    prof = tmp_path / "p.yaml"
    prof.write_text(PROFILE.format(key=KEY))
    parent = tmp_path / "bin.txt"
    if kind == "file":
        parent.write_text("not an image\n")
    else:
        parent.mkdir()
    source = "http://127.0.0.1:9/cvmfs/fixture.cernvm.test"
    rc = main(
        ["container", str(prof), "--source", source, "--out", str(tmp_path / "o"), "--parent", str(parent)]
    )
    err = capsys.readouterr().err
    assert rc == 7 and err.startswith(f"error: --parent {parent}: not a"), err
    assert "hint: give an OCI layout or archive built by 'cernvm-build container'" in err
    assert "manifest" not in err and not (tmp_path / "o").exists()
