"""The .cvmfsdirtab rules and the automatic split, without the real tools (tests/cvmfs_interop
compares both with the real server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.nesting import AutoCatalogs, parse_dirtab
from cernvm_build.cvmfs.publish import publish_tree
from cernvm_build.errors import CvmfsError

from .helpers import FQRN


def test_dirtab_rules() -> None:
    d = parse_dirtab("# releases\n/sw/*\n  ! */test*\n/a/?/c\\*\n\n!/sw/old\n")
    assert d.selects("/sw/gcc") and d.selects("/sw/.hidden")
    assert not d.selects("/sw/gcc/bin")  # * stays within one path part
    assert not d.selects("/sw/test-suite") and not d.selects("/sw/old")
    assert d.selects("/a/b/c*") and not d.selects("/a/b/cd") and not d.selects("/a/bb/c*")
    assert not d.selects("/other")


@pytest.mark.timeout(60)
def test_dirtab_stars_never_backtrack_through_every_placement() -> None:
    """A rule of many stars against a long path that it does not match: the plain ``.*`` per star
    tried every way to place them (polynomial in the path's length to the number of stars; a
    publish of a 600-byte path took hours). The answers stay those of the plain expressions."""
    d = parse_dirtab("/*a*a*a*a*a*a*a*a*a*a*a*a*b\n/x/*\n!*a*a*a*a*a*a*a*a*a*a*a*a*b\n")
    long_part = "/" + "a" * 250
    assert not d.selects(long_part)  # strict: one part, no b
    assert not d.selects(long_part * 16)  # relaxed negation and strict rule over many parts
    assert d.selects("/x/" + "a" * 250)
    assert not d.selects("/x/" + "a" * 12 + "b")  # a positive rule, but the negation matches
    strict = parse_dirtab("/*a*a*b/c*")
    assert strict.selects("/xaxaab/c") and strict.selects("/aab/cd")
    assert not strict.selects("/xa/ab/c") and not strict.selects("/aab/c/d")  # a star stays in its part


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/sw/*\nsw/relative\n", r"\.cvmfsdirtab:2: 'sw/relative' is not an absolute path"),
        ("/sw/*\n!/sw/*\n", r"'/sw/\*' is both selected and negated"),
        ("/sw/a\\", r"\.cvmfsdirtab:1: pattern ends in a lone backslash"),
        ("/\n", r"\.cvmfsdirtab:1: '/' names no directory"),
    ],
)
def test_bad_dirtab_lines_are_named(text: str, message: str) -> None:
    with pytest.raises(CvmfsError, match=message):
        parse_dirtab(text)


def test_autocatalog_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        AutoCatalogs(100, 60)


def test_bad_dirtab_fails_the_publish_with_one_line(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    (src / "sw" / "a").mkdir(parents=True)
    (src / ".cvmfsdirtab").write_text("/sw/*\nrelative/*\n")
    before = (stratum / ".cvmfspublished").read_bytes()
    with pytest.raises(CvmfsError):
        publish_tree(stratum, FQRN, keyset, src)
    assert main(["cvmfs", "publish", str(stratum), str(src), "--keys", str(key_dir)]) != 0
    err = capsys.readouterr().err
    assert "/.cvmfsdirtab:2: 'relative/*' is not an absolute path" in err and "Traceback" not in err
    assert (stratum / ".cvmfspublished").read_bytes() == before
    (src / ".cvmfsdirtab").write_text("/sw/*\n")
    assert (
        main(["cvmfs", "publish", str(stratum), str(src), "--keys", str(key_dir), "--autocatalogs", "9"]) != 0
    )
    assert "--autocatalogs '9'" in capsys.readouterr().err
    r = publish_tree(stratum, FQRN, keyset, src)
    assert r.nested_by_dirtab == ("/sw/a",) and r.catalogs == 2


def test_a_huge_dirtab_or_one_of_too_many_rules_is_one_line(
    tmp_path: Path, stratum: Path, keyset: keymod.KeySet
) -> None:
    """Each rule is tried on every directory: a 2 MB dirtab of 200,000 rules took 30 s over 200
    directories (hours over a real tree), and with --no-chunking any size was read whole."""
    src = tmp_path / "src"
    (src / "sw").mkdir(parents=True)
    (src / ".cvmfsdirtab").write_text("".join(f"/x{i}/*\n" for i in range(1001)))
    with pytest.raises(CvmfsError, match=r"^/\.cvmfsdirtab:1001: more than 1000 rules"):
        publish_tree(stratum, FQRN, keyset, src)
    (src / ".cvmfsdirtab").write_text("# comments count as bytes\n" * 3000)
    with pytest.raises(CvmfsError, match=r"^/\.cvmfsdirtab: 78000 bytes is too big for a dirtab"):
        publish_tree(stratum, FQRN, keyset, src)
