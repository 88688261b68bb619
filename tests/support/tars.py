"""Small test tars built from a dict (what a layer or a publish part holds)."""

from __future__ import annotations

import gzip
import io
import tarfile

MTIME = 1_700_000_000


def tar_bytes(files: dict[str, bytes | None], links: dict[str, str] | None = None) -> bytes:
    """A tar of ``files`` (name -> content, None: a directory) in the order given, then hard
    ``links`` (name -> target); every member has mtime ``MTIME``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                t.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime = tarfile.LNKTYPE, target, MTIME
            t.addfile(info)
    return buf.getvalue()


def gzip_layer(files: dict[str, bytes | None]) -> bytes:
    """``tar_bytes(files)`` gzipped reproducibly (a registry's layer blob)."""
    return gzip.compress(tar_bytes(files), mtime=0)
