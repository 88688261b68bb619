"""How the mirror talks to an S3 endpoint: https with a private CA named by the profile (every write,
the index switch in the helper process included), and a whole-request deadline against a server that
trickles bytes."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cernvm_build.cli.main import main
from cernvm_build.errors import MirrorError
from cernvm_build.mirror.locals3 import CREDENTIALS_ENV, LocalS3
from cernvm_build.mirror.s3direct import DirectPut, Keys
from tests.support import listening

from .repos import make_rpm, make_yum_repo


def _certificate(name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    b = x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
    b = b.issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
    hour = datetime.timedelta(hours=1)
    b = b.not_valid_before(now - hour).not_valid_after(now + 24 * hour)
    b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        b = b.add_extension(usage, critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        ip = x509.IPAddress(ipaddress.ip_address(name))
        b = b.add_extension(x509.SubjectAlternativeName([ip]), critical=False)
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        b = b.add_extension(aki, critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _private_ca(work: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): a CA of the test's own and a certificate for 127.0.0.1."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h18 test CA")])
    ca = _certificate("h18 test CA", ca_key, ca_name, ca_key, ca=True)
    cert = _certificate("127.0.0.1", key, ca_name, ca_key, ca=False)
    paths = (work / "ca.pem", work / "server.pem", work / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    paths[2].write_bytes(key.private_bytes(*pem))
    return paths


@pytest.fixture
def tls_front(tmp_path: Path, s3server: LocalS3) -> Iterator[tuple[str, Path]]:
    """(https endpoint, CA file): moto behind a TLS-terminating forwarder whose certificate only the
    test's own CA vouches for."""
    ca, cert, key = _private_ca(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve(raw: socket.socket) -> None:
        try:
            tls = context.wrap_socket(raw, server_side=True)  # a client refusing our CA ends it here
        except (OSError, ssl.SSLError):
            raw.close()
            return
        back = socket.create_connection(("127.0.0.1", s3server.port))
        threading.Thread(target=pump, args=(back, tls), daemon=True).start()
        pump(tls, back)

    with listening(serve) as port:
        yield f"https://127.0.0.1:{port}", ca


@pytest.mark.integration
def test_a_private_ca_from_the_profile_serves_every_write_and_the_index_switch(
    tmp_path: Path,
    s3: object,
    bucket: str,
    tls_front: tuple[str, Path],
    signing_key: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ca_bundle`` in the AWS profile (no AWS_CA_BUNDLE): the uploads, and the signed index pair
    written by the index writer process, go through the same https endpoint."""
    endpoint, ca = tls_front
    secret, public = signing_key
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    (tmp_path / "aws-config").write_text(f"[profile private-ca]\nregion = us-east-1\nca_bundle = {ca}\n")
    creds = CREDENTIALS_ENV
    (tmp_path / "aws-credentials").write_text(
        f"[private-ca]\naws_access_key_id = {creds['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {creds['AWS_SECRET_ACCESS_KEY']}\n"
    )
    src = tmp_path / "src"
    make_yum_repo(src, [make_rpm(tmp_path / "rpm", "cvm-alpha")], secret_key=secret)
    args = ["mirror", "yum", str(src), f"s3://{bucket}/r", "--gpg-key", str(public),
            "--endpoint-url", endpoint]  # fmt: skip
    # Control: without the CA the endpoint's certificate is refused (at once: no retry changes it).
    with pytest.raises(botocore.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        DirectPut(endpoint, "us-east-1", lambda: Keys("AK", "SK")).head(bucket, "r/repodata/repomd.xml")
    assert main([*args, "--profile", "private-ca", "-q"]) == 0
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]  # type: ignore[attr-defined]
    names = {o["Key"] for o in listed}
    assert {"r/repodata/repomd.xml", "r/repodata/repomd.xml.asc"} <= names
    assert "r/Packages/cvm-alpha-1.0-1.noarch.rpm" in names


def test_a_trickling_server_meets_the_whole_request_deadline() -> None:
    """A server that answers one byte at a time, each well inside the per-operation socket timeout,
    would hold a request for ever: the request's own deadline ends it with one line naming the
    endpoint, bucket and key, and it is not tried again."""
    connections = [0]

    def trickle(conn: socket.socket) -> None:
        connections[0] += 1
        with conn:
            try:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: " + b"x" * 10**6:
                    conn.sendall(bytes([byte]))
                    time.sleep(0.05)
            except OSError:
                pass  # the client hung up

    outcome: list[BaseException | str] = []
    with listening(trickle) as port:
        endpoint = f"http://127.0.0.1:{port}"
        put = DirectPut(endpoint, "us-east-1", lambda: Keys("AK", "SK"), timeout=5, deadline_floor=1.0)

        def request() -> None:
            try:
                outcome.append(put.put("bucket", "pool/a.deb", b"data", "0" * 64, {}))
            except BaseException as e:
                outcome.append(e)

        t = threading.Thread(target=request, daemon=True)
        t.start()
        t.join(60)  # a bound for the failure of this test, not a measurement
    put.close()
    assert not t.is_alive(), "the request is still held by the trickling server"
    err = outcome[0]
    assert isinstance(err, MirrorError), err
    assert endpoint in err.message and "bucket/pool/a.deb" in err.message and "\n" not in err.message
    assert "did not finish within 1 s" in err.message
    assert connections[0] == 1
