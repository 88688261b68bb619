"""OpenPGP signatures with the real ``gpg``, in a throwaway keyring.

Every operation runs in its own temporary GNUPGHOME holding only the keys it was given, so the user's
keyring is never read or changed and a signature is only "good" if it was made by one of *those* keys.
Verification reads gpg's machine-readable status lines, not its human output. A signature counts only
when gpg says it is good *now*: ``VALIDSIG`` alone also comes with signatures by expired or revoked keys
(``EXPKEYSIG``, ``REVKEYSIG``), which real apt and dnf refuse, and so do we for live repository
metadata. A *past* signature (a release's SHA256SUMS, checked years later: ``verify_archived``) is
kept good when it was made while its key was valid, as a signature on paper outlives the signer's
term: the key's expiry since is then a warning, a revocation or a signature after expiry still fail.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from types import TracebackType

from .errors import CernVMError, IntegrityError
from .fsutil import TooLarge, atomic_write, process_alive, read_capped
from .proc import run

MAX_KEY_FILE = 16 << 20  # bytes of a key file (an armored keyring of many keys is some 100 KB)
#: bytes of a clearsigned file (Debian's InRelease is ~150 KB, Ubuntu's ~250 KB)
MAX_CLEARSIGNED = 64 << 20


def _key_file(path: Path) -> bytes:
    """A key file a user or a config names: a regular file of at most MAX_KEY_FILE bytes, else one
    line (``--key /dev/zero`` filled the memory, a folder was an IsADirectoryError traceback)."""
    try:
        data = read_capped(path, MAX_KEY_FILE)
    except TooLarge as e:
        raise CernVMError(
            f"{path}: {e.strerror}: not a key file", hint="give an armored or binary key"
        ) from None
    except OSError as e:
        raise CernVMError(
            f"{path}: cannot read the key: {e.strerror}", hint="give an armored or binary key"
        ) from None
    return data


class Keyring:
    """``with Keyring(keys) as kr: kr.sign_detached(...)`` — keys are armored or binary key files/bytes."""

    def __init__(self, keys: Iterable[Path | bytes] = (), *, now: dt.datetime | None = None) -> None:
        """``now``: act as of that time (gpg's ``--faked-system-time``): the tests sign with a key
        that has expired since, as a real publisher did while it was valid."""
        self._keys = list(keys)
        self._time = ["--faked-system-time", now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S")] if now else []
        self.home = Path()

    def __enter__(self) -> Keyring:
        self.home = Path(tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-"))
        _reclaim_dead_homes(self.home.parent)
        try:  # a key that does not import: ``with`` runs no __exit__ when __enter__ raises
            os.chmod(self.home, 0o700)
            for key in self._keys:
                self.import_key(key)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stop_agent(self.home)
        shutil.rmtree(self.home, ignore_errors=True)

    def _gpg(self, *args: str | os.PathLike[str], input: bytes | None = None, check: bool = True) -> str:
        """Run gpg; returns its status lines (``[GNUPG:] …``). Data goes to files via ``--output``."""
        proc = run(
            ["gpg", "--homedir", self.home, "--batch", "--no-tty", *self._time, "--status-fd", "2", *args],
            input=input,
            check=check,
        )
        return "\n".join(
            ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.startswith("[GNUPG:]")
        )

    @contextlib.contextmanager
    def _output(self, out: Path) -> Iterator[Path]:
        """A scratch path for gpg's ``--output``; its bytes become ``out`` atomically (``fsutil``)."""
        with tempfile.TemporaryDirectory(dir=self.home, prefix="out-") as scratch:
            tmp = Path(scratch) / "out"
            yield tmp
            atomic_write(out, tmp.read_bytes())

    def _listing(self, *args: str) -> str:
        proc = run(["gpg", "--homedir", self.home, "--batch", "--no-tty", *self._time, *args], check=False)
        return proc.stdout.decode(errors="replace")

    def export(
        self, fingerprint: str, out: Path, *, secret: bool = False, subkeys: Iterable[str] | None = None
    ) -> None:
        """``fingerprint``'s key into ``out``; with ``subkeys`` (fingerprints), only those of its
        subkeys (gpg's exact ``FPR!`` selection: the primary key alone, plus each named subkey)."""
        what = "--export-secret-keys" if secret else "--export"
        nopass = ("--pinentry-mode", "loopback", "--passphrase", "")
        names = [fingerprint] if subkeys is None else [f"{fingerprint}!", *(f"{s}!" for s in subkeys)]
        self._gpg("--yes", "--armor", *nopass, "--output", out, what, *names)

    def import_key(self, key: Path | bytes) -> list[str]:
        data = _key_file(key) if isinstance(key, Path) else key
        status = self._gpg("--import", input=data, check=False)
        fprs = [line.split()[3] for line in status.splitlines() if line.startswith("[GNUPG:] IMPORT_OK")]
        if not fprs:
            where = str(key) if isinstance(key, Path) else "the given key"
            raise CernVMError(
                f"{where}: no OpenPGP key could be imported", hint="give an armored or binary key"
            )
        return fprs

    def import_revocation(self, cert: bytes) -> None:
        status = self._gpg("--import", input=cert, check=False)
        if "[GNUPG:] IMPORT_OK" not in status and "[GNUPG:] IMPORT_RES" not in status:
            raise CernVMError("the revocation certificate could not be imported", hint="give an armored one")

    def secret_fingerprints(self) -> list[str]:
        return self._fingerprints("--list-secret-keys", "sec")

    def primary_fingerprints(self) -> list[str]:
        return self._fingerprints("--list-keys", "pub")

    def dead_primary_fingerprints(self) -> list[str]:
        """The primary keys gpg lists as revoked (``r``) or expired (``e``) now (gpg's own clock)."""
        return self._fingerprints("--list-keys", "pub", validity="re")

    def why_dead(self) -> tuple[str, str] | None:
        """Why the first revoked or expired primary key (gpg's clock) is so: its line and what to do;
        None when none is. gpg itself says only "Unusable secret key" when asked to sign with it."""
        for fields, fpr in self._key_rows("--list-keys"):
            if fields[0] != "pub" or fields[1] not in ("r", "e"):
                continue
            if fields[1] == "r":
                return f"key {fpr} has been revoked", "a revoked key signs nothing: give another key"
            when = f" on {_day(int(fields[6]))}" if fields[6].isdigit() else ""
            return (
                f"key {fpr} expired{when}",
                f"extend it (gpg --quick-set-expire {fpr} 2y) and export it again, or give another key",
            )
        return None

    def subkeys(self) -> dict[str, list[tuple[str, str]]]:
        """Each primary key's subkeys as ``(fingerprint, gpg's validity letter)``: ``r`` revoked,
        ``e`` expired (gpg's own clock)."""
        out: dict[str, list[tuple[str, str]]] = {}
        primary = ""
        for fields, fpr in self._key_rows("--list-keys"):
            if fields[0] == "pub":
                primary = fpr
                out[primary] = []
            elif fields[0] == "sub" and primary:
                out[primary].append((fpr, fields[1]))
        return out

    def _fingerprints(self, listing: str, record: str, validity: str | None = None) -> list[str]:
        """The fingerprint of every ``record`` key gpg lists (only those whose validity field is one
        of ``validity``'s letters, if given)."""
        return [
            fpr
            for fields, fpr in self._key_rows(listing)
            if fields[0] == record and (validity is None or fields[1] in validity)
        ]

    def _key_rows(self, listing: str) -> list[tuple[list[str], str]]:
        """Each key row of gpg's ``--with-colons`` ``listing`` (``pub``, ``sub``, ``sec``...) as its
        fields, with the fingerprint of the ``fpr`` row that follows it."""
        rows = self._listing("--with-colons", listing).splitlines()
        return [(r.split(":"), nxt.split(":")[9]) for r, nxt in pairwise(rows) if nxt.startswith("fpr:")]

    def sign_detached(self, data: Path, out: Path, *, armor: bool = True) -> None:
        signers = self.secret_fingerprints()
        if not signers:
            raise CernVMError("no secret key to sign with", hint="give the signing key's secret part")
        with self._output(out) as tmp:
            args: list[str | os.PathLike[str]] = ["--yes", "--local-user", signers[0], "--detach-sign"]
            args += ["--output", tmp]
            # "--": a relative name beginning with '-' ('-o/SHA256SUMS') was gpg's option (pr26c 11)
            self._gpg(*(["--armor"] if armor else []), *args, "--", data)

    def clearsign(self, data: Path, out: Path) -> None:
        signers = self.secret_fingerprints()
        if not signers:
            raise CernVMError("no secret key to sign with", hint="give the signing key's secret part")
        with self._output(out) as tmp:
            self._gpg("--yes", "--local-user", signers[0], "--clearsign", "--output", tmp, "--", data)

    def _valid_signer(self, status: str, what: str) -> str:
        return valid_signer(status, what)

    def verify_detached(self, signature: Path, data: Path) -> str:
        """The fingerprint of the key that made a good signature; IntegrityError otherwise."""
        # "--": a release folder '-o' gave 'gpg --verify -o/SHA256SUMS.asc -o/SHA256SUMS', two --output
        # options and a verify of stdin: a good signature was "no valid signature" (pr26c 11)
        return self._valid_signer(self._gpg("--verify", "--", signature, data, check=False), str(data))

    def verify_archived(self, signature: Path, data: Path) -> Signed:
        """A signature checked after the fact (a release's SHA256SUMS years later): good as
        ``verify_detached``, and also when its key has expired since but was valid when it signed
        (``Signed.key_expired`` then says when). Revoked keys, signatures made after the key's
        expiry or dated in the future, and bad signatures are an IntegrityError as there."""
        status = self._gpg("--verify", "--", signature, data, check=False)
        return archived_signer(status, str(data), self._expiries())

    def _expiries(self) -> dict[str, int]:
        """Each key's and subkey's expiry (seconds since the epoch; 0: never), by fingerprint."""
        return {
            fpr: int(fields[6]) if fields[6].isdigit() else 0
            for fields, fpr in self._key_rows("--list-keys")
            if fields[0] in ("pub", "sub") and len(fields) > 6
        }

    def verify_clearsigned(self, path: Path) -> tuple[str, bytes]:
        """``(fingerprint, signed content)`` of a clearsigned file (e.g. InRelease). gpg reads a copy
        of its bytes, a regular file's within MAX_CLEARSIGNED: an InRelease that was a FIFO or a
        link to /dev/zero (``os --apt-lists DIR``) kept gpg waiting or reading for ever."""
        try:
            data = read_capped(path, MAX_CLEARSIGNED)
        except OSError as e:
            raise IntegrityError(
                f"{path}: cannot read the signed file: {e.strerror}",
                hint="a clearsigned file (InRelease) is a regular file of a few hundred KB: fetch it again",
            ) from None
        with tempfile.TemporaryDirectory(dir=self.home) as d:
            out, signed = Path(d, "content"), Path(d, "signed")
            signed.write_bytes(data)
            status = self._gpg("--output", out, "--verify", signed, check=False)
            fpr = self._valid_signer(status, str(path))
            return fpr, out.read_bytes()


#: status keywords that make a signature worthless even next to VALIDSIG (one signature's group)
_WORTHLESS = ("EXPKEYSIG", "REVKEYSIG", "EXPSIG", "KEYEXPIRED", "KEYREVOKED")


@dataclass
class _Sig:
    """What gpg said about one signature (the status lines from one NEWSIG to the next)."""

    words: dict[str, list[str]] = field(default_factory=dict)  # keyword -> its arguments (first line)

    def has(self, keyword: str) -> bool:
        return keyword in self.words

    def signer(self) -> str:
        valid = self.words.get("VALIDSIG", [])
        if len(valid) > 9:
            return valid[9]  # the primary key's fingerprint
        for keyword in ("EXPKEYSIG", "REVKEYSIG", "EXPSIG", "GOODSIG", "BADSIG"):
            if self.words.get(keyword):
                return self.words[keyword][0]
        return "?"

    def uid(self) -> str:
        for keyword in ("EXPKEYSIG", "REVKEYSIG", "EXPSIG", "GOODSIG", "BADSIG"):
            if len(self.words.get(keyword, [])) > 1:
                return " ".join(self.words[keyword][1:])
        return ""

    def good(self) -> bool:
        """Good now: by a key neither expired nor revoked, and not expired itself."""
        return self.has("GOODSIG") and self.has("VALIDSIG") and not any(map(self.has, _WORTHLESS))

    def key(self) -> str:
        """The signing key as an error line names it: ``key FINGERPRINT (uid)``."""
        return f"key {self.signer()}" + (f" ({self.uid()})" if self.uid() else "")


#: a keyring's home is ``<tmp>/cernvm-gpg-<pid>-<rnd>``: the pid tells a killed process's home (its
#: gpg-agent still running, the keys it imported on disk) from a running one's
HOME_PREFIX = "cernvm-gpg-"


def _reclaim_dead_homes(tmp: Path) -> None:
    """End the agents of, and remove, the homes our uid's SIGKILLed keyrings left: ``__exit__`` never
    ran for them, and nothing else would (one agent and home per killed mirror/release run)."""
    for home in tmp.glob(f"{HOME_PREFIX}*-*"):
        pid = home.name[len(HOME_PREFIX) :].split("-", 1)[0]
        with contextlib.suppress(OSError):
            if not pid.isdigit() or process_alive(int(pid)) or home.lstat().st_uid != os.getuid():
                continue
            if home.is_dir() and not home.is_symlink():
                stop_agent(home)
                shutil.rmtree(home, ignore_errors=True)


def stop_agent(home: str | os.PathLike[str]) -> None:
    """End the gpg-agent of ``home`` (it may hold a socket there; it exits at its next tick) and remove
    the socket folder gpg keeps for it: where /run/user/<uid> exists the sockets live in a folder there
    named for the home, which even the kill creates and nothing removes, one per home otherwise."""
    run(["gpgconf", "--homedir", home, "--kill", "all"], check=False)
    run(["gpgconf", "--homedir", home, "--remove-socketdir"], check=False)


def _signatures(status: str) -> list[_Sig]:
    sigs: list[_Sig] = []
    for line in status.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != "[GNUPG:]":
            continue
        keyword, args = parts[1], parts[2:]
        if keyword == "NEWSIG" or not sigs:
            sigs.append(_Sig())
        sigs[-1].words.setdefault(keyword, args)
    return sigs


def _date(words: list[str] | None) -> str:
    """A status line's timestamp as a date ('' when there is none)."""
    try:
        stamp = int((words or [""])[0])
    except ValueError:
        return ""
    return _day(stamp)


def _day(stamp: int) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d")


def valid_signer(status: str, what: str) -> str:
    """The primary fingerprint of a signature gpg found good, by a key that is neither expired nor
    revoked; otherwise an ``IntegrityError`` naming the key and what is wrong with it."""
    sigs = _signatures(status)
    for sig in sigs:
        if sig.good():
            return sig.signer()
    hint = "check that the file and its signature belong together"
    for sig in sigs:
        key = sig.key()
        if sig.has("BADSIG"):  # gpg says KEYEXPIRED next to it: "bad", not "expired", is what is wrong
            continue
        if sig.has("REVKEYSIG") or sig.has("KEYREVOKED"):
            reason = f"signed by {key}, which has been revoked"
            hint = "the publisher revoked this key: get the publisher's new key, and do not trust this one"
        elif sig.has("EXPKEYSIG") or sig.has("KEYEXPIRED"):
            when = _date(sig.words.get("KEYEXPIRED"))
            reason = f"signed by {key}, which expired" + (f" on {when}" if when else "")
            hint = "apt and dnf refuse it too: the publisher must extend the key's expiry or re-sign"
        elif sig.has("EXPSIG"):
            reason = f"the signature by {key} has expired"
            hint = "the publisher must re-sign the repository"
        else:
            continue
        raise IntegrityError(f"{what}: {reason}", hint=hint)
    bad = next((w for sig in sigs for w in ("BADSIG", "ERRSIG", "NO_PUBKEY") if sig.has(w)), "")
    reason = (
        "bad signature" if bad == "BADSIG" else "signed by an unknown key" if bad else "no valid signature"
    )
    raise IntegrityError(f"{what}: {reason}", hint=hint)


@dataclass(frozen=True)
class Signed:
    """A good past signature: its key's primary fingerprint, the date it was made, and the date its
    key expired since (None while the key is valid)."""

    signer: str
    signed_on: str
    key_expired: str | None = None

    def expiry_warning(self, release: str) -> str | None:
        """The warning for a release signed by a key that has expired since (None: it has not)."""
        if self.key_expired is None:
            return None
        return (
            f"release {release}: signed on {self.signed_on}, before key {self.signer} expired on "
            f"{self.key_expired}: the signature stands; the key signs nothing new"
        )


def _stamp(word: str) -> int | None:
    """A status line's time: seconds since the epoch, or ISO 8601 ``YYYYMMDDTHHMMSS``."""
    if word.isdigit():
        return int(word)
    try:
        return int(dt.datetime.strptime(word, "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC).timestamp())
    except ValueError:
        return None


def archived_signer(
    status: str, what: str, expiries: dict[str, int], now: dt.datetime | None = None
) -> Signed:
    """``valid_signer`` for a signature checked after the fact. gpg says EXPKEYSIG whenever the key
    has expired by *now*, whenever it signed: the signature's creation time (VALIDSIG's third field)
    against the signing key's and its primary key's expiry (``expiries``, from the keyring) tells a
    signature made while the key was valid from one made after."""
    sigs = _signatures(status)
    for sig in sigs:
        if sig.good():
            return Signed(sig.signer(), _date(sig.words["VALIDSIG"][2:3]))
    clock = int((now or dt.datetime.now(dt.UTC)).timestamp())
    for sig in sigs:
        valid = sig.words.get("VALIDSIG", [])
        dead = ("REVKEYSIG", "KEYREVOKED", "EXPSIG", "BADSIG", "ERRSIG")
        if not sig.has("EXPKEYSIG") or len(valid) < 10 or any(map(sig.has, dead)):
            continue
        made = _stamp(valid[2])
        ends = [e for e in (expiries.get(valid[0], 0), expiries.get(valid[9], 0)) if e]
        if made is None or not ends:
            continue
        key = sig.key()  # the signer is VALIDSIG's primary fingerprint (valid[9])
        signed_on, expired = _day(made), _day(min(ends))
        if made > min(ends):
            raise IntegrityError(
                f"{what}: signed on {signed_on} by {key}, after it expired on {expired}",
                hint="a signature made after its key expired is not the key holder's: do not trust it",
            )
        if made > clock:
            raise IntegrityError(
                f"{what}: signed by {key} on {signed_on}, a date in the future",
                hint="check the system clock; a signature from the future is not trusted",
            )
        return Signed(sig.signer(), signed_on, expired)
    valid_signer(status, what)  # raises: names what is wrong
    raise AssertionError("valid_signer returned for a status archived_signer refused")


def generate_test_key(
    home_keys_out: Path,
    name: str = "CernVM Test Signing",
    *,
    created: dt.datetime | None = None,
    expire: str = "never",
    revoked: bool = False,
) -> tuple[Path, Path]:
    """A throwaway RSA key (no passphrase) as ``(secret.asc, public.asc)``, for tests and the demo.

    ``created`` and ``expire`` (gpg's expiry: ``never``, ``1y``, a date) make a key that has expired by
    now; ``revoked`` puts the key's revocation certificate into the public key (the secret one still
    signs, as a stolen key would)."""
    home_keys_out.mkdir(parents=True, exist_ok=True)
    with Keyring(now=created) as kr:
        kr._gpg(
            "--pinentry-mode", "loopback", "--passphrase", "",
            "--quick-generate-key", f"{name} <test@cernvm.test>", "rsa2048", "sign", expire,
        )  # fmt: skip
        fpr = kr.secret_fingerprints()[0]
        secret = home_keys_out / "signing-key.asc"
        public = home_keys_out / "signing-key.pub.asc"
        kr.export(fpr, secret, secret=True)
        if revoked:
            # gpg wrote a revocation certificate when it made the key; its armor is masked with ':'
            cert = (kr.home / "openpgp-revocs.d" / f"{fpr}.rev").read_text()
            kr.import_revocation(cert.replace(":-----BEGIN PGP", "-----BEGIN PGP").encode())
        kr.export(fpr, public)
    return secret, public
