"""The image cache: pull over HTTP (from a server on 127.0.0.1) only with a matching .sha256."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build.errors import ImageError
from cernvm_build.launch.images import ImageCache

pytestmark = pytest.mark.integration


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_pull_verifies_and_caches(http_dir: tuple[Path, str], image: Path, tmp_path: Path) -> None:
    root, url = http_dir
    (root / image.name).write_bytes(image.read_bytes())
    (root / f"{image.name}.sha256").write_text(image.with_name(image.name + ".sha256").read_text())
    cache = ImageCache(tmp_path / "home")
    seen: list[int] = []
    got = cache.pull(f"{url}/{image.name}", profile="demo", progress=lambda done, total: seen.append(done))
    assert got.path.read_bytes() == image.read_bytes() and got.format == "hdd" and got.profile == "demo"
    assert seen[-1] == image.stat().st_size
    assert [i.name for i in cache.list()] == [image.name]
    assert cache.for_profile("demo") == got


@pytest.mark.parametrize(
    ("sha", "message"), [("0" * 64, "does not match its .sha256"), (None, "no checksum")]
)
def test_pull_refuses_unverified_downloads(
    http_dir: tuple[Path, str], image: Path, tmp_path: Path, sha: str | None, message: str
) -> None:
    root, url = http_dir
    (root / image.name).write_bytes(image.read_bytes())
    if sha:
        (root / f"{image.name}.sha256").write_text(f"{sha}  {image.name}\n")
    cache = ImageCache(tmp_path / "home")
    with pytest.raises(ImageError, match=message):
        cache.pull(f"{url}/{image.name}")
    assert cache.list() == []  # nothing half-kept
    assert not (cache.dir / image.name).exists()
