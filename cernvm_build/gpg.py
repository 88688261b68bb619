"""OpenPGP signatures with the real ``gpg``, in a throwaway keyring.

Every operation runs in its own temporary GNUPGHOME holding only the keys it was given, so the user's
keyring is never read or changed and a signature is only "good" if it was made by one of *those* keys.
Verification reads gpg's machine-readable status lines (VALIDSIG), not its human output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from .errors import CernVMError, IntegrityError
from .proc import run


class Keyring:
    """``with Keyring(keys) as kr: kr.sign_detached(...)`` — keys are armored or binary key files/bytes."""

    def __init__(self, keys: Iterable[Path | bytes] = ()) -> None:
        self._keys = list(keys)
        self.home = Path()

    def __enter__(self) -> Keyring:
        self.home = Path(tempfile.mkdtemp(prefix="cernvm-gpg-"))
        os.chmod(self.home, 0o700)
        for key in self._keys:
            self.import_key(key)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # gpg-agent may hold a socket in the home; it exits when the directory goes.
        run(["gpgconf", "--homedir", self.home, "--kill", "all"], check=False)
        shutil.rmtree(self.home, ignore_errors=True)

    def _gpg(self, *args: str | os.PathLike[str], input: bytes | None = None, check: bool = True) -> str:
        """Run gpg; returns its status lines (``[GNUPG:] …``). Data goes to files via ``--output``."""
        proc = run(
            ["gpg", "--homedir", self.home, "--batch", "--no-tty", "--status-fd", "2", *args],
            input=input,
            check=check,
        )
        return "\n".join(
            ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.startswith("[GNUPG:]")
        )

    def _listing(self, *args: str) -> str:
        proc = run(["gpg", "--homedir", self.home, "--batch", "--no-tty", *args], check=False)
        return proc.stdout.decode(errors="replace")

    def export(self, fingerprint: str, out: Path, *, secret: bool = False) -> None:
        what = "--export-secret-keys" if secret else "--export"
        nopass = ("--pinentry-mode", "loopback", "--passphrase", "")
        self._gpg("--yes", "--armor", *nopass, "--output", out, what, fingerprint)

    def import_key(self, key: Path | bytes) -> list[str]:
        data = key.read_bytes() if isinstance(key, Path) else key
        status = self._gpg("--import", input=data, check=False)
        fprs = [line.split()[3] for line in status.splitlines() if line.startswith("[GNUPG:] IMPORT_OK")]
        if not fprs:
            where = str(key) if isinstance(key, Path) else "the given key"
            raise CernVMError(
                f"{where}: no OpenPGP key could be imported", hint="give an armored or binary key"
            )
        return fprs

    def secret_fingerprints(self) -> list[str]:
        out = self._listing("--with-colons", "--list-secret-keys")
        rows = out.splitlines()
        return [
            rows[i + 1].split(":")[9]
            for i, r in enumerate(rows)
            if r.startswith("sec:") and i + 1 < len(rows)
        ]

    def primary_fingerprints(self) -> list[str]:
        out = self._listing("--with-colons", "--list-keys")
        rows = out.splitlines()
        return [
            rows[i + 1].split(":")[9]
            for i, r in enumerate(rows)
            if r.startswith("pub:") and i + 1 < len(rows)
        ]

    def sign_detached(self, data: Path, out: Path, *, armor: bool = True) -> None:
        signers = self.secret_fingerprints()
        if not signers:
            raise CernVMError("no secret key to sign with", hint="give the signing key's secret part")
        tmp = out.with_name(f".{out.name}.tmp")
        args: list[str | os.PathLike[str]] = [
            "--yes",
            "--local-user",
            signers[0],
            "--detach-sign",
            "--output",
            tmp,
        ]
        self._gpg(*(["--armor"] if armor else []), *args, data)
        os.replace(tmp, out)

    def clearsign(self, data: Path, out: Path) -> None:
        signers = self.secret_fingerprints()
        if not signers:
            raise CernVMError("no secret key to sign with", hint="give the signing key's secret part")
        tmp = out.with_name(f".{out.name}.tmp")
        self._gpg("--yes", "--local-user", signers[0], "--clearsign", "--output", tmp, data)
        os.replace(tmp, out)

    def _valid_signer(self, status: str, what: str) -> str:
        for line in status.splitlines():
            parts = line.split()
            if line.startswith("[GNUPG:] VALIDSIG") and len(parts) > 11:
                return parts[11]  # the primary key's fingerprint
        bad = next(
            (ln for ln in status.splitlines() if "BADSIG" in ln or "ERRSIG" in ln or "NO_PUBKEY" in ln), ""
        )
        reason = (
            "bad signature"
            if "BADSIG" in bad
            else "signed by an unknown key"
            if bad
            else "no valid signature"
        )
        raise IntegrityError(
            f"{what}: {reason}", hint="check that the file and its signature belong together"
        )

    def verify_detached(self, signature: Path, data: Path) -> str:
        """The fingerprint of the key that made a good signature; IntegrityError otherwise."""
        return self._valid_signer(self._gpg("--verify", signature, data, check=False), str(data))

    def verify_clearsigned(self, path: Path) -> tuple[str, bytes]:
        """``(fingerprint, signed content)`` of a clearsigned file (e.g. InRelease)."""
        with tempfile.TemporaryDirectory(dir=self.home) as d:
            out = Path(d, "content")
            status = self._gpg("--output", out, "--verify", path, check=False)
            fpr = self._valid_signer(status, str(path))
            return fpr, out.read_bytes()


def generate_test_key(home_keys_out: Path, name: str = "CernVM Test Signing") -> tuple[Path, Path]:
    """A throwaway RSA key (no passphrase) as ``(secret.asc, public.asc)``, for tests and the demo."""
    home_keys_out.mkdir(parents=True, exist_ok=True)
    with Keyring() as kr:
        kr._gpg(
            "--pinentry-mode", "loopback", "--passphrase", "",
            "--quick-generate-key", f"{name} <test@cernvm.test>", "rsa2048", "sign", "never",
        )  # fmt: skip
        fpr = kr.secret_fingerprints()[0]
        secret = home_keys_out / "signing-key.asc"
        public = home_keys_out / "signing-key.pub.asc"
        kr.export(fpr, secret, secret=True)
        kr.export(fpr, public)
    return secret, public
