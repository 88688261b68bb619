"""The daemon's dataclasses generate only the methods their callers use (each generated method is
compiled at import, on the mount's start): the value types below are still compared and hashed by
value (dict keys, sets, ``==`` in the publisher, the catalogs and the tests); the others are
compared by identity, and none of them generates a ``__repr__``."""

import dataclasses

from cernvm_build.cvmfs.catalog_rows import Chunk, DirEntry, NestedRef, ObjectRef
from cernvm_build.cvmfs.history import Tag
from cernvm_build.cvmfs.manifest import Manifest, SignedText
from cernvm_build.cvmfs.objects import ObjectHash
from cernvm_build.cvmfs.quota import Eviction
from cernvm_build.cvmfs.repository import SnapshotSpec
from cernvm_build.cvmfs.revision import VerifyReport
from cernvm_build.cvmfs.rsa import Certificate, PrivateKey, PublicKey
from cernvm_build.cvmfs.whitelist import Whitelist

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


def test_the_others_are_compared_by_identity_and_generate_no_repr() -> None:
    for cls in BY_VALUE + BY_IDENTITY:
        params = cls.__dataclass_params__  # type: ignore[attr-defined]
        assert not params.repr and "__repr__" not in vars(cls), cls
        assert params.eq == (cls in BY_VALUE), cls
    # frozen ones stay frozen (and hashable, by identity)
    ev = Eviction(0, 0)
    assert ev != Eviction(0, 0) and hash(ev) == object.__hash__(ev)
    for cls in BY_IDENTITY:
        assert cls is VerifyReport or cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
    assert dataclasses.is_dataclass(ev)
