"""A real S3 server on 127.0.0.1 (moto) for tests, benchmarks and demos, with request counts and faults.

moto keeps its state per process, so two servers in one process share buckets: give each user its
own bucket. Needs the ``test`` extra (``moto[server]``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Rule:
    """What faults and delays apply to: requests of ``method`` on paths containing ``key_part``."""

    method: str
    key_part: str

    def applies(self, method: str, path: str) -> bool:
        return self.method == method and self.key_part in path


@dataclass
class Fault(_Rule):
    """Answer ``status`` to requests of ``method`` (optionally only keys containing ``key_part``)
    after ``after`` of them have gone through."""

    method: str
    after: int
    status: int = 500
    key_part: str = ""
    seen: int = 0


@dataclass
class Delay(_Rule):
    """Hold requests of ``method`` on paths containing ``key_part`` for ``seconds``, then answer them."""

    method: str
    key_part: str
    seconds: float


@dataclass
class LocalS3:
    host: str = "127.0.0.1"
    port: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)
    delays: list[Delay] = field(default_factory=list)
    #: behave like a server that ignores If-Match/If-None-Match on writes (some S3 implementations do)
    ignore_conditions: bool = False
    _server: Any = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalS3:
        # deliberate lazy import: moto (a test/bench dependency) only when a local S3 is started
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class QuietHandler(MotoRequestHandler):  # type: ignore[misc]
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(self.host, self.port, self._wrap(app), True, request_handler=QuietHandler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    def _wrap(self, app: WSGIApp) -> WSGIApp:
        def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            method = str(environ.get("REQUEST_METHOD", ""))
            path = str(environ.get("PATH_INFO", ""))
            if self.ignore_conditions and method in ("PUT", "POST"):
                environ.pop("HTTP_IF_MATCH", None)
                environ.pop("HTTP_IF_NONE_MATCH", None)
            with self._lock:
                self.requests[method] += 1
                for f in self.faults:
                    if f.applies(method, path):
                        f.seen += 1
                        if f.seen > f.after:
                            body = json.dumps({"injected": f.status}).encode()
                            start_response(f"{f.status} Injected", [("Content-Length", str(len(body)))])
                            return [body]
            for d in self.delays:
                if d.applies(method, path):
                    time.sleep(d.seconds)
            return app(environ, start_response)

        return wrapped

    def make_public(self, client: Any, bucket: str) -> None:
        make_public(client, bucket)


def make_public(client: Any, bucket: str) -> None:
    """Anonymous GET for a bucket, so dnf/apt/browsers read it over plain HTTP."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


CREDENTIALS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
