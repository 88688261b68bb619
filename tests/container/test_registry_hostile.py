"""A hostile registry on 127.0.0.1 (a small HTTP server of the test), spoken to by the real skopeo:
what it answers cannot grow this machine's memory without bound."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cernvm_build.container import registry
from cernvm_build.container.registry import RegistryOptions
from cernvm_build.errors import BuildError

pytestmark = pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")


class _EndlessTags(BaseHTTPRequestHandler):
    """``/v2/x/y/tags/list``: 1,000 tags and a ``Link`` to the next page, for ever."""

    page = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b"{}"
        if "/tags/list" in self.path:
            _EndlessTags.page += 1
            body = json.dumps({"name": "x/y", "tags": [f"t{i}" for i in range(1000)]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if "/tags/list" in self.path:
            self.send_header("Link", f'</v2/x/y/tags/list?n=1000&last=p{_EndlessTags.page}>; rel="next"')
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def endless_tags() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EndlessTags)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_tag_list_that_never_ends_stops_skopeo_at_its_memory_cap(
    endless_tags: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """skopeo follows the next-page links and holds every tag: it grew by ~20 MB/s until the
    30-minute timeout (GBs). It is stopped at ``MAX_SKOPEO_RSS`` (lowered here to keep the test
    light) with one line."""
    monkeypatch.setattr(registry, "MAX_SKOPEO_RSS", 64 << 20)
    monkeypatch.setattr(registry, "_TIMEOUT", 60)
    with pytest.raises(BuildError) as e:
        registry.list_tags(f"{endless_tags}/x/y", opts=RegistryOptions(tls_verify=False))
    assert f"list the tags of {endless_tags}/x/y: skopeo took " in e.value.message
    assert "(at most 64 MiB), stopped" in e.value.message and "\n" not in e.value.message
