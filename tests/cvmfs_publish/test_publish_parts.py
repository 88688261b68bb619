"""publish_parts: several tars, copies and removals in one revision, read back with the reader."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_build.cvmfs import keys as keymod
from cernvm_build.cvmfs.parts import CopyPart, RemovePart, TarPart
from cernvm_build.cvmfs.publish import publish_parts, publish_tar
from cernvm_build.errors import CvmfsError
from tests.support.tars import tar_bytes

from .helpers import FQRN, describe

pytestmark = pytest.mark.integration


def _tar(files: dict[str, bytes | None], links: dict[str, str] | None = None) -> io.BytesIO:
    return io.BytesIO(tar_bytes(files, links))


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.name != ".cvmfscatalog"
    }


def test_tars_copies_and_removals_in_one_revision(
    stratum: Path, keyset: keymod.KeySet, export: Callable[..., Path]
) -> None:
    kept = publish_tar(stratum, FQRN, keyset, _tar({"k": b"kept"}), base_path="/keep/me")
    layer0 = {"etc": None, "etc/a": b"a0", "etc/gone": b"g", "usr": None, "usr/x": b"x", ".cvmfscatalog": b""}
    layer1 = {"etc": None, "etc/a": b"a1", "opt": None, "opt/new": b"n"}
    r = publish_parts(
        stratum,
        FQRN,
        keyset,
        [
            TarPart("/layers/0", _tar(layer0, {"usr/x2": "usr/x"})),
            TarPart("/layers/1", _tar(layer1)),
            CopyPart("/layers/0", "/chains/0"),
            CopyPart("/chains/0", "/chains/1"),
            RemovePart("/chains/1/etc/gone"),
            RemovePart("/chains/1/usr", children_only=True),
            CopyPart("/layers/1", "/chains/1", over=True),
        ],
    )
    assert r.revision == kept.revision + 1  # one revision for all of it
    out = export(stratum)
    assert (out / "keep" / "me" / "k").read_bytes() == b"kept"
    chain1 = _tree(out / "chains" / "1")
    assert chain1 == {"etc": None, "etc/a": b"a1", "opt": None, "opt/new": b"n", "usr": None}
    assert _tree(out / "chains" / "0") == _tree(out / "layers" / "0")
    assert (out / "chains" / "0" / "usr" / "x2").stat().st_ino == (
        out / "chains" / "0" / "usr" / "x"
    ).stat().st_ino
    assert r.catalogs >= 3  # the root and a catalog per marked copy (layers/0, chains/0, chains/1)
    # a copy from the previous revision, through its nested catalogs, onto a new path
    r2 = publish_parts(
        stratum, FQRN, keyset, [CopyPart("/chains/1", "/chains/2"), TarPart("/m", _tar({"f": b"1"}))]
    )
    out2 = export(stratum)
    assert _tree(out2 / "chains" / "2") == chain1
    assert describe(out2 / "chains" / "1") == describe(out / "chains" / "1")
    assert (out2 / "keep" / "me" / "k").read_bytes() == b"kept"
    assert r2.revision == r.revision + 1


def test_a_copy_of_nothing_or_onto_itself_is_refused(stratum: Path, keyset: keymod.KeySet) -> None:
    with pytest.raises(CvmfsError, match="nothing there to copy"):
        publish_parts(stratum, FQRN, keyset, [CopyPart("/nope", "/b")])
    with pytest.raises(CvmfsError, match="cannot copy /a to /a/b"):
        publish_parts(stratum, FQRN, keyset, [CopyPart("/a", "/a/b")])
