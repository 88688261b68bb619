"""The index files of a publication, written by a helper process that outlives the mirror.

A signed yum repository has two fixed-name index files, ``repomd.xml`` and ``repomd.xml.asc`` (apt has
``Release``, ``Release.gpg`` and ``InRelease``), and a reader that checks signatures needs them to
belong together. S3 cannot replace two objects at once, and no write order helps: after either write
the pair is mixed. A detached signature that holds both the old and the new signature does not help
either: gpg in batch mode (gpgme, hence dnf's librepo) stops at the first bad signature, so such a file
verifies only the data of its first signature.

So the sync hands all its index writes at once to this helper, forked into its own session when the
sync begins (a fork costs milliseconds; a fresh interpreter importing botocore cost ~0.4 CPU-seconds
on this project's 2-core test host). The helper makes its own S3 connections (never the parent's
sockets) and uses nothing else of the parent's state. Once it has read the complete list, a SIGKILL
of the mirror (``kill -9`` of its pid, the OOM killer, a CI job's process group) no longer stops the
writes midway: the helper finishes them, in order, with the plan's preconditions, and reports each
one back while the mirror lives. If the mirror dies before handing the list over, the helper sees
end-of-file and writes nothing. What it cannot cover: the machine crashing, or the helper itself
being killed, between two of its writes; a re-run of the mirror repairs that.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import MirrorError
from .s3client import S3Client, S3Url, client_keys, make_client
from .s3plan import Action, LocalFile
from .s3write import Conditions, ConflictError, Writer


class IndexWriter:
    """The helper process, started idle; ``write`` hands it the index files and waits for them."""

    def __init__(self, client: S3Client, url: S3Url, *, conditional: bool, conditions: Conditions,
                 acl: str | None):  # fmt: skip
        # The client's own keys, whatever chain found them (for a client not made by make_client, the
        # helper's client looks them up through the same environment).
        keys = client_keys(client)
        s3_config: dict[str, Any] = getattr(client.meta.config, "s3", None) or {}
        path_style = s3_config.get("addressing_style") == "path"
        self.spec: dict[str, Any] = {
            "endpoint": client.meta.endpoint_url if path_style else None,
            "region": client.meta.region_name,
            "credentials": [keys.access, keys.secret, keys.token] if keys else None,
            "bucket": url.bucket,
            "prefix": url.prefix,
            "conditional": conditional,
            "conditions": dataclasses.asdict(conditions),
            "acl": acl,
        }
        spec_r, spec_w = os.pipe()
        answer_r, answer_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the helper: never returns into the caller's code
            code = 1
            try:
                os.setsid()  # not in the mirror's process group: its signals do not reach us
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_IGN)  # once handed over, the writes are finished
                os.close(spec_w)
                os.close(answer_r)
                with os.fdopen(spec_r, "rb") as spec_in, os.fdopen(answer_w, "wb") as answers:
                    code = _serve(self.spec, spec_in, answers)
            finally:
                os._exit(code)  # no atexit handlers, no flushing of the parent's buffers
        os.close(spec_r)
        os.close(answer_w)
        self.spec_out: IO[bytes] = os.fdopen(spec_w, "wb")
        self.answers: IO[bytes] = os.fdopen(answer_r, "rb")
        self.status: int | None = None

    def write(
        self, batches: Sequence[Sequence[tuple[Action, LocalFile]]], written: Callable[[str, str], None]
    ) -> None:
        """Write ``batches`` in order (each file of a batch before the next batch); ``written(rel,
        etag)`` after each. Raises the helper's error (ConflictError, MirrorError)."""
        todo = [[_encode(a, lf) for a, lf in b] for b in batches]
        try:
            self.spec_out.write(json.dumps(todo).encode() + b"\n")  # the hand-over: one line
            self.spec_out.close()
        except BrokenPipeError as e:
            raise MirrorError("the index writer died", hint="re-run; the indexes were not switched") from e
        for line in self.answers:
            answer = json.loads(line)
            if "error" in answer:
                cls = ConflictError if answer.get("conflict") else MirrorError
                raise cls(answer["error"], hint=answer.get("hint"))
            written(answer["rel"], answer["etag"])
        if self._wait() != 0:
            raise MirrorError("the index writer failed", hint="re-run; a re-run finishes the job")

    def _wait(self) -> int:
        if self.status is None:
            self.status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.status

    def close(self) -> None:
        """Stop an unused helper (end-of-file: it writes nothing) and reap it."""
        for pipe in (self.spec_out, self.answers):
            if not pipe.closed:
                pipe.close()
        self._wait()


def _encode(a: Action, lf: LocalFile) -> dict[str, Any]:
    return {"action": dataclasses.asdict(a), "file": {**dataclasses.asdict(lf), "path": str(lf.path)}}


def _report(out: IO[bytes], answer: dict[str, Any]) -> None:
    try:
        out.write(json.dumps(answer).encode() + b"\n")
        out.flush()
    except OSError:
        pass  # the mirror is gone: the writes go on regardless


def _serve(spec: dict[str, Any], spec_in: IO[bytes], out: IO[bytes]) -> int:
    try:
        # The client first, while the mirror uploads: the index phase then only waits for the writes.
        creds = spec["credentials"]
        client = make_client(endpoint_url=spec["endpoint"], region=spec["region"],
                             credentials=tuple(creds) if creds else None)  # fmt: skip
        writer = Writer(client, S3Url(spec["bucket"], spec["prefix"]), conditional=spec["conditional"],
                        acl=spec["acl"], conditions=Conditions(**spec["conditions"]), total=0,
                        progress=None)  # fmt: skip
        line = spec_in.readline()
        if not line.endswith(b"\n"):
            return 0  # the mirror stopped before handing over: nothing to write
        for batch in json.loads(line):
            for item in batch:
                a = Action(**item["action"])
                f = item["file"]
                lf = LocalFile(f["rel"], Path(f["path"]), f["size"], f["sha256"], tuple(f["sig"]))
                writer.upload(a, lf)
                _report(out, {"rel": a.rel, "etag": writer.etags[a.rel]})
    except MirrorError as e:
        _report(out, {"error": e.message, "hint": e.hint, "conflict": isinstance(e, ConflictError)})
        return 1
    except Exception as e:  # reported to the mirror as one line; nothing to print here
        _report(out, {"error": f"index writer: {e.__class__.__name__}: {e}", "hint": "re-run"})
        return 1
    return 0
