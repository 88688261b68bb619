"""The index files of a publication, written by a helper process that outlives the mirror.

A signed yum repository has two fixed-name index files, ``repomd.xml`` and ``repomd.xml.asc`` (apt has
``Release``, ``Release.gpg`` and ``InRelease``), and a reader that checks signatures needs them to
belong together. S3 cannot replace two objects at once, and no write order helps: after either write
the pair is mixed. A detached signature that holds both the old and the new signature does not help
either: gpg in batch mode (gpgme, hence dnf's librepo) stops at the first bad signature, so such a file
verifies only the data of its first signature.

So the sync hands all its index writes at once to this helper: a fresh Python process (``subprocess``,
not a ``fork()`` of the threaded mirror) in its own session, started when the sync begins so that its
start-up overlaps the uploads. It reads a first line (endpoint, bucket, keys, CA file, the server's
precondition behaviour) on its stdin, connects, and waits for the second line: the complete list of
index writes. It does its PUTs and HEADs with the own SigV4 signer (``s3direct``), so it imports no
boto3 (the process costs ~0.2 CPU-s here, ~0.6 with boto3 and a client);
botocore only where that path cannot serve (AWS itself, multipart-sized indexes). Once it has read the
complete list, a SIGKILL of the mirror (``kill -9`` of its pid, the OOM killer, a CI job's process
group) no longer stops the writes midway: the helper finishes them, in order, with the plan's
preconditions, and reports each one back on its stdout while the mirror lives. If the mirror dies
before handing the list over, the helper sees end-of-file and writes nothing. What it cannot cover:
the machine crashing, or the helper itself being killed, between two of its writes; a re-run of the
mirror repairs that.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import MirrorError
from .s3client import S3Client, S3Url, client_ca_bundle, client_keys, make_client
from .s3direct import DirectPut, Keys
from .s3plan import Action, LocalFile
from .s3write import Conditions, ConflictError, Writer

#: the folder holding the ``cernvm_build`` package this process runs (the helper imports the same one)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class IndexWriter:
    """The helper process, started idle; ``write`` hands it the index files and waits for them."""

    def __init__(self, client: S3Client, url: S3Url, *, conditional: bool, conditions: Conditions,
                 acl: str | None):  # fmt: skip
        # The client's own keys, whatever chain found them (for a client not made by make_client, the
        # helper's client looks them up through the same environment).
        keys = client_keys(client)
        s3_config: dict[str, Any] = getattr(client.meta.config, "s3", None) or {}
        path_style = s3_config.get("addressing_style") == "path"
        spec: dict[str, Any] = {
            "endpoint": client.meta.endpoint_url if path_style else None,
            "region": client.meta.region_name,
            "credentials": [keys.access, keys.secret, keys.token] if keys else None,
            "bucket": url.bucket,
            "prefix": url.prefix,
            "conditional": conditional,
            "conditions": dataclasses.asdict(conditions),
            "acl": acl,
            # the CA file the mirror's client found (a profile's ca_bundle: the helper has no profile)
            "ca_bundle": client_ca_bundle(client),
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            # -P: not the current directory first on sys.path (``-c`` puts it there): a
            # ``cernvm_build`` folder there would be run, with the keys on its stdin
            [sys.executable, "-P", "-c", "from cernvm_build.mirror.indexwriter import main; main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # it reports on stdout; nothing of it reaches the user's terminal
            start_new_session=True,  # not in the mirror's process group: its signals do not reach it
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.spec_out: IO[bytes] = self.proc.stdin
        self.answers: IO[bytes] = self.proc.stdout
        try:
            # The keys go through the pipe, never the command line or the environment.
            self.spec_out.write(json.dumps(spec).encode() + b"\n")
            self.spec_out.flush()
        except BrokenPipeError:
            pass  # reported by write()
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
            self.status = self.proc.wait()
        return self.status

    def close(self) -> None:
        """Stop an unused helper (end-of-file: it writes nothing) and reap it."""
        for pipe in (self.spec_out, self.answers):
            if not pipe.closed:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass
        self._wait()


def _encode(a: Action, lf: LocalFile) -> dict[str, Any]:
    return {"action": dataclasses.asdict(a), "file": {**dataclasses.asdict(lf), "path": str(lf.path)}}


def _report(out: IO[bytes], answer: dict[str, Any]) -> None:
    try:
        out.write(json.dumps(answer).encode() + b"\n")
        out.flush()
    except OSError:
        pass  # the mirror is gone: the writes go on regardless


def main() -> None:
    """The helper process: spec line, then the writes line, on stdin; answers on stdout."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # once handed over, the writes are finished
    spec_line = sys.stdin.buffer.readline()
    if not spec_line.endswith(b"\n"):
        os._exit(0)  # the mirror stopped before telling us anything
    code = _serve(json.loads(spec_line), sys.stdin.buffer, sys.stdout.buffer)
    os._exit(code)


def _writer(spec: dict[str, Any]) -> Writer:
    creds = spec["credentials"]
    endpoint = spec["endpoint"]
    url = S3Url(spec["bucket"], spec["prefix"])
    common: dict[str, Any] = {"conditional": spec["conditional"], "acl": spec["acl"], "total": 0,
                              "conditions": Conditions(**spec["conditions"]), "progress": None}  # fmt: skip

    cafile = spec["ca_bundle"]

    def connect() -> S3Client:
        return make_client(endpoint_url=endpoint, region=spec["region"],
                           credentials=tuple(creds) if creds else None, ca_bundle=cafile)  # fmt: skip

    if creds and endpoint and DirectPut.usable(endpoint):
        keys = Keys(*creds)
        direct = DirectPut(endpoint, spec["region"], lambda: keys, connections=2, cafile=cafile)
        return Writer(None, url, direct=direct, connect=connect, **common)
    return Writer(connect(), url, **common)


def _serve(spec: dict[str, Any], spec_in: IO[bytes], out: IO[bytes]) -> int:
    try:
        # Ready before the hand-over, while the mirror uploads: the index phase only waits for the writes.
        writer = _writer(spec)
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
