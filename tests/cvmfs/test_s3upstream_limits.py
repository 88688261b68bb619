"""The bucket's manifest is read before every publish to an S3 upstream; whoever can write to the
bucket decides its size: it is read at most MAX_MANIFEST_BYTES + 1 bytes, then refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cernvm_build.cvmfs import s3upstream
from cernvm_build.cvmfs.fetch import TooLarge
from cernvm_build.cvmfs.limits import MAX_MANIFEST_BYTES


class _EndlessBody:
    """An S3 object body that has as many bytes as are asked for (a 10 GB object, say)."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def read(self, n: int = -1) -> bytes:
        self.asked.append(n)
        if n < 0:
            raise MemoryError("the whole object was asked for")
        return b"C" * n


class _Client:
    def __init__(self, body: _EndlessBody) -> None:
        self.body = body

    def get_object(self, **kw: Any) -> dict[str, Any]:
        return {"Body": self.body}


def test_a_huge_bucket_manifest_is_refused_after_its_cap(tmp_path: Path) -> None:
    up = s3upstream.upstream("s3://bucket/a.org", spool=tmp_path / "spool")
    body = _EndlessBody()
    with pytest.raises(TooLarge, match="manifest is larger than"):
        s3upstream.remote_manifest(_Client(body), up)  # type: ignore[arg-type]
    assert body.asked == [MAX_MANIFEST_BYTES + 1]
