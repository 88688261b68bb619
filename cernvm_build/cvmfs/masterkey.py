"""The repository master key: what signs the whitelist, from a PEM file or on a token (PKCS#11).

The whitelist signature is ``RSA_private_encrypt`` with PKCS#1 type-1 padding over the whitelist's
ASCII hex hash — no DigestInfo, so not an RSASSA signature ``cryptography`` can make. OpenSSL makes it
(``openssl pkeyutl -sign -pkeyopt rsa_padding_mode:pkcs1`` pads the raw input), with blinding and
constant-time arithmetic, from a key file or through the PKCS#11 engine from a smart card or HSM, as
the real server does (``cvmfs_server`` can keep the master key on a card). The private key reaches
openssl through a pipe, never a file; a token's PIN goes into a private openssl config, never argv.
Every signature is checked against the public key before it is used.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote

from .. import proc
from ..errors import CvmfsError, ToolError
from . import rsa as rsa_raw

PKCS11_ENGINE_HINT = "install the OpenSSL PKCS#11 engine: apt-get install libengine-pkcs11-openssl"
#: PKCS#11 module used when the URI names none and $PKCS11_MODULE_PATH is unset
P11KIT_PROXY = Path("/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so")


class MasterKey(Protocol):
    @property
    def description(self) -> str:
        """What the key is, for messages (a file, or the token URI without its PIN)."""

    def sign_raw(self, message: bytes) -> bytes:
        """``RSA_private_encrypt(RSA_PKCS1_PADDING)`` of ``message``."""


def _pkeyutl_error(e: ToolError, what: str) -> CvmfsError:
    return CvmfsError(f"signing with {what} failed: {e.message}", hint=e.hint)


@dataclass(frozen=True)
class FileMasterKey:
    """A master key held as PEM (``<fqrn>.masterkey``)."""

    pem: bytes
    description: str = "the master key file"

    def sign_raw(self, message: bytes) -> bytes:
        read, write = os.pipe()
        try:
            os.write(write, self.pem)  # a PEM key is far below a pipe's buffer
            os.close(write)
            write = -1
            cmd = [
                "openssl",
                "pkeyutl",
                "-sign",
                "-inkey",
                f"/dev/fd/{read}",
                "-pkeyopt",
                "rsa_padding_mode:pkcs1",
            ]
            try:
                return proc.run(cmd, input=message, pass_fds=(read,)).stdout
            except ToolError as e:
                raise _pkeyutl_error(e, self.description) from None
        finally:
            os.close(read)
            if write >= 0:
                os.close(write)


_ATTR = re.compile(r"([a-z-]+)=([^;?&]*)")


@dataclass(frozen=True)
class Pkcs11Uri:
    """An RFC 7512 ``pkcs11:`` URI taken apart: what openssl gets, and what we keep out of argv."""

    key_uri: str  # without pin-value and module-path
    module: Path | None
    pin: str | None

    @classmethod
    def parse(cls, uri: str) -> Pkcs11Uri:
        if not uri.startswith("pkcs11:"):
            raise CvmfsError(f"'{uri}' is not a pkcs11: URI", hint="e.g. pkcs11:token=cvmfs;object=master")
        path, _, query = uri[len("pkcs11:") :].partition("?")
        keep_path: list[str] = []
        keep_query: list[str] = []
        module = pin = None
        for part, keep in [(p, keep_path) for p in path.split(";") if p] + [
            (q, keep_query) for q in query.split("&") if q
        ]:
            m = _ATTR.fullmatch(part)
            if not m:
                raise CvmfsError(f"pkcs11 URI attribute '{part}' is not NAME=VALUE", hint="see RFC 7512")
            name, value = m.group(1), unquote(m.group(2))
            if name == "module-path":
                module = Path(value)
            elif name == "pin-value":
                pin = value
            else:
                keep.append(part)
        key_uri = "pkcs11:" + ";".join(keep_path) + ("?" + "&".join(keep_query) if keep_query else "")
        return cls(key_uri, module, pin)


def _engine_dir() -> Path:
    out = proc.run(["openssl", "version", "-e"]).stdout.decode()
    m = re.search(r'ENGINESDIR: "([^"]+)"', out)
    return Path(m.group(1)) if m else Path("/usr/lib/x86_64-linux-gnu/engines-3")


@dataclass(frozen=True)
class Pkcs11MasterKey:
    """A master key on a token, named by a ``pkcs11:`` URI (``token=…;object=…`` and optionally
    ``module-path=…`` and ``pin-value=…``; else ``$PKCS11_MODULE_PATH`` and the p11-kit proxy)."""

    uri: str

    @property
    def description(self) -> str:
        return Pkcs11Uri.parse(self.uri).key_uri

    def _module(self, parsed: Pkcs11Uri) -> Path:
        module = parsed.module or (
            Path(os.environ["PKCS11_MODULE_PATH"]) if os.environ.get("PKCS11_MODULE_PATH") else None
        )
        module = module or (P11KIT_PROXY if P11KIT_PROXY.exists() else None)
        if module is None or not module.exists():
            raise CvmfsError(
                f"no PKCS#11 module for {parsed.key_uri}" + (f": {module} does not exist" if module else ""),
                hint="add module-path=/path/to/module.so to the URI or set PKCS11_MODULE_PATH",
            )
        return module

    def sign_raw(self, message: bytes) -> bytes:
        parsed = Pkcs11Uri.parse(self.uri)
        engine = _engine_dir() / "pkcs11.so"
        if not engine.exists():
            raise CvmfsError(f"the OpenSSL PKCS#11 engine is missing ({engine})", hint=PKCS11_ENGINE_HINT)
        module = self._module(parsed)
        with tempfile.TemporaryDirectory(prefix="cvmfs-p11-") as tmp:
            conf = Path(tmp) / "openssl.cnf"
            lines = [
                "openssl_conf = conf",
                "[conf]",
                "engines = engines",
                "[engines]",
                "pkcs11 = pkcs11_section",
                "[pkcs11_section]",
                "engine_id = pkcs11",
                f"dynamic_path = {engine}",
                f"MODULE_PATH = {module}",
                *([f"PIN = {parsed.pin}"] if parsed.pin is not None else []),
                "init = 0",
            ]
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(lines) + "\n")
            cmd = ["openssl", "pkeyutl", "-sign", "-engine", "pkcs11", "-keyform", "engine"]
            cmd += ["-inkey", parsed.key_uri, "-pkeyopt", "rsa_padding_mode:pkcs1"]
            try:
                return proc.run(cmd, input=message, env={"OPENSSL_CONF": str(conf)}).stdout
            except ToolError as e:
                raise _pkeyutl_error(e, parsed.key_uri) from None


def master_key(spec: str | None, pem: bytes | None) -> MasterKey:
    """The master key named by ``--master-key`` (``pkcs11:…`` or a file), else the given PEM."""
    if spec and spec.startswith("pkcs11:"):
        return Pkcs11MasterKey(spec)
    if pem is None:
        raise CvmfsError("no master key", hint="pass --master-key FILE or --master-key pkcs11:URI")
    return FileMasterKey(pem, description=spec or "the master key file")


def sign_checked(key: MasterKey, public: rsa_raw.PublicKey, message: bytes) -> bytes:
    """``key.sign_raw(message)``, refused unless ``public`` recovers exactly ``message`` from it."""
    sig = key.sign_raw(message)
    if not rsa_raw.verify_raw([public], message, sig):
        raise CvmfsError(
            f"the signature made with {key.description} does not verify with the repository's public key",
            hint="the master key (file or token object) must be the private half of <fqrn>.pub",
        )
    return sig
