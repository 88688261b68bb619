"""The mirror tests' own fixtures; the S3 servers (moto, Ceph RGW), ``target`` and ``s3env`` come from
``tests/support/s3servers.py`` (registered in ``tests/conftest.py``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.mirror.locals3 import LocalS3
from cernvm_build.mirror.s3client import make_client
from tests.support.s3servers import Target  # noqa: F401  (the mirror tests import it from here)

_counter = itertools.count()


@pytest.fixture
def s3(s3server: LocalS3, s3env: None) -> Any:
    server = s3server
    server.faults.clear()
    server.ignore_conditions = False
    return make_client(endpoint_url=server.endpoint)


@pytest.fixture
def bucket(s3: Any, s3server: LocalS3) -> str:
    name = f"test-{next(_counter)}-bucket"
    s3.create_bucket(Bucket=name)
    s3server.make_public(s3, name)
    return name


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway gpg key pair (secret.asc, public.asc), made once per test session."""
    from cernvm_build.gpg import generate_test_key

    return generate_test_key(tmp_path_factory.mktemp("gpgkey"))


@pytest.fixture(scope="session")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from cernvm_build.gpg import generate_test_key

    return generate_test_key(tmp_path_factory.mktemp("otherkey"), name="Somebody Else")


@pytest.fixture
def http_dir() -> Iterator[Any]:
    """``http_dir(path) -> URL``: serve a folder over HTTP on 127.0.0.1 for the test's duration."""
    import functools
    import http.server
    import threading

    servers: list[http.server.ThreadingHTTPServer] = []

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    def serve(path: Path) -> str:
        handler = functools.partial(Quiet, directory=str(path))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/"

    yield serve
    for srv in servers:
        srv.shutdown()
        srv.server_close()
