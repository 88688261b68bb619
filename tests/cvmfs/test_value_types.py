"""The daemon's records are plain classes, not dataclasses (``dataclasses`` and each class's generated
methods were compiled at import, on the mount's start: issue 13): the value types below are still
compared and hashed by value (dict keys, sets, ``==`` in the publisher, the catalogs and the tests);
the others are compared by identity, and none of them has a ``__repr__``."""

import pytest

from cernvm_build.cvmfs.catalog_rows import Chunk, DirEntry, NestedRef, ObjectRef
from cernvm_build.cvmfs.history import Tag
from cernvm_build.cvmfs.manifest import Manifest, SignedText
from cernvm_build.cvmfs.objects import ObjectHash
from cernvm_build.cvmfs.quota import Eviction
from cernvm_build.cvmfs.repository import SnapshotSpec
from cernvm_build.cvmfs.revision import VerifyReport
from cernvm_build.cvmfs.rsa import Certificate, PrivateKey, PublicKey
from cernvm_build.cvmfs.whitelist import Whitelist
from cernvm_build.errors import CvmfsError

BY_VALUE = (ObjectHash, Tag, Chunk, DirEntry, ObjectRef, NestedRef, PublicKey, SnapshotSpec)
BY_IDENTITY = (SignedText, Manifest, PrivateKey, Certificate, Whitelist, VerifyReport, Eviction)


def _entry(**kw: object) -> DirEntry:
    fields: dict[str, object] = dict(path="/a", name="a", mode=0o100644, kind=0o100000, size=3, mtime=1)
    fields.update(mtime_ns=1, uid=0, gid=0, symlink="", hardlink_group=0, linkcount=1, flags=4)
    fields.update(kw)
    return DirEntry(**fields)  # type: ignore[arg-type]


def test_value_types_still_compare_and_hash_by_value() -> None:
    pairs = [
        (ObjectHash("ab" * 20), ObjectHash("ab" * 20)),
        (Tag("t", "ab" * 20, 1, 2, "", 3), Tag("t", "ab" * 20, 1, 2, "", 3)),
        (Chunk(0, 1, "ab" * 20), Chunk(0, 1, "ab" * 20)),
        (ObjectRef("ab" * 20, "", 1, True), ObjectRef("ab" * 20, "", 1, True)),
        (NestedRef("/n", "ab" * 20, 1), NestedRef("/n", "ab" * 20, 1)),
        (PublicKey(5, 3), PublicKey(5, 3)),  # test_formats compares keys read from PEM and PKCS#1
        (SnapshotSpec(tag="t"), SnapshotSpec(tag="t")),
        (_entry(chunks=(Chunk(0, 1, "c"),)), _entry(chunks=(Chunk(0, 1, "c"),))),
    ]
    for a, b in pairs:
        assert a is not b and a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert ObjectHash("ab" * 20) != ObjectHash("ab" * 20, "shake128")
    assert _entry() != _entry(size=4)
    assert str(ObjectHash("ab" * 20, "rmd160")) == "ab" * 20 + "-rmd160"  # what messages print


def test_the_others_are_compared_by_identity_and_none_has_a_repr() -> None:
    for cls in BY_VALUE + BY_IDENTITY:
        assert "__repr__" not in vars(cls), cls
        assert ("__eq__" in vars(cls)) == (cls in BY_VALUE), cls
    ev = Eviction(0, 0)
    assert ev != Eviction(0, 0) and hash(ev) == object.__hash__(ev)


def test_a_snapshot_names_at_most_one_selector() -> None:
    with pytest.raises(CvmfsError, match="choose one snapshot"):
        SnapshotSpec(tag="t", root_hash="ab" * 20)
    assert SnapshotSpec().is_trunk and not SnapshotSpec(date="2026-01-01T00:00:00Z").is_trunk


def test_a_replaced_manifest_keeps_everything_else() -> None:
    m = Manifest("ab" * 20, 5, 3, "x.test", 60, 100, "cd" * 20, "ef" * 20, extra={"Z": "z"})
    n = m.replace(history_hash="12" * 20, reflog_hash="34" * 20, timestamp=200)
    assert (n.history_hash, n.reflog_hash, n.timestamp) == ("12" * 20, "34" * 20, 200)
    same = ("root_hash", "root_size", "revision", "fqrn", "ttl", "certificate_hash", "extra")
    assert all(getattr(n, k) == getattr(m, k) for k in same)
    assert (m.history_hash, m.timestamp) == ("ef" * 20, 100)
    with pytest.raises(TypeError, match="no field 'root'"):
        m.replace(root="x")
