"""Per-package RPM signatures: with --gpg-key, every signed package must verify with the key (the real
``rpmkeys -K`` in a private rpm database); packages signed with rpmsign by the test. An unchanged
package is not checked again (the result is remembered per file state)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build.mirror import rpmsig
from cernvm_build.mirror.check import SourceBroken
from cernvm_build.mirror.publish import mirror

from .conftest import Target
from .repos import dnf_install, make_rpm, make_yum_repo, sign_rpm

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signed(
    tmp_path_factory: pytest.TempPathFactory, signing_key: tuple[Path, Path], other_key: tuple[Path, Path]
) -> dict[str, Path]:
    w = tmp_path_factory.mktemp("signed")
    good = make_rpm(w / "a", "cvm-alpha", payload=b"alpha\n")
    other = make_rpm(w / "b", "cvm-beta", payload=b"beta\n")
    return {
        "good": sign_rpm(good, signing_key[0], w / "good" / good.name),
        "other": sign_rpm(other, other_key[0], w / "other" / other.name),
        "unsigned": make_rpm(w / "c", "cvm-gamma", payload=b"gamma\n"),
    }


def test_signed_packages_verify_and_others_are_refused(
    tmp_path: Path,
    signed: dict[str, Path],
    signing_key: tuple[Path, Path],
    target: Target,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret, public = signing_key
    src = tmp_path / "src"
    make_yum_repo(src, [signed["good"], signed["unsigned"]], secret_key=secret)
    rep = mirror("yum", str(src), target.url("r"), client=target.client, gpg_key=public)
    assert rep.checked.problems == [] and rep.checked.packages == 2
    root = tmp_path / "dnf"
    (root).mkdir()
    installed = dnf_install(root, target.http("r"), "cvm-alpha", public_key=public)
    assert (installed / "usr/share/cvm-alpha/data").read_bytes() == b"alpha\n"

    before = target.objects()
    make_yum_repo(src, [signed["other"]], secret_key=secret, update=True)
    with pytest.raises(SourceBroken) as err:
        mirror("yum", str(src), target.url("r"), client=target.client, gpg_key=public)
    assert err.value.problems == [
        "Packages/cvm-beta-1.0-1.noarch.rpm: package signature does not verify with the given key "
        "(rpm -K: digests SIGNATURES NOT OK)"
    ]
    assert target.objects() == before


def test_unchanged_packages_are_not_checked_again(
    tmp_path: Path, signed: dict[str, Path], signing_key: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cernvm_build.mirror import hashcache
    from cernvm_build.mirror.hashcache import HashCache
    from cernvm_build.mirror.publish import verify_source
    from cernvm_build.mirror.source import LocalSource

    monkeypatch.setattr(hashcache, "RACY_NS", -(10**12))  # remember files just written
    secret, public = signing_key
    src = tmp_path / "src"
    make_yum_repo(src, [signed["good"]], secret_key=secret)
    calls: list[int] = []
    real = rpmsig.run

    def counting(cmd: list[str], **kw: object) -> object:
        if "-K" in cmd:
            calls.append(len(cmd))
        return real(cmd, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rpmsig, "run", counting)
    cache = HashCache(tmp_path / "hashes.json")
    assert verify_source("yum", LocalSource(src, cache), gpg_key=public).problems == []
    assert verify_source("yum", LocalSource(src, cache), gpg_key=public).problems == []
    assert len(calls) == 1
    # A write to the package (same name) is checked again.
    pkg = src / "Packages" / signed["good"].name
    pkg.write_bytes(pkg.read_bytes())
    verify_source("yum", LocalSource(src, cache), gpg_key=public)
    assert len(calls) == 2


def test_mirror_verify_checks_the_packages_in_the_bucket(
    tmp_path: Path, signed: dict[str, Path], signing_key: tuple[Path, Path], target: Target
) -> None:
    """`mirror verify --gpg-key` runs rpm -K on the bytes the bucket serves, as the sync does on the
    source: a package signed by another key, published without the key check, is found there."""
    from cernvm_build.mirror.publish import verify_published

    secret, public = signing_key
    src = tmp_path / "src"
    make_yum_repo(src, [signed["good"], signed["unsigned"]], secret_key=secret)
    mirror("yum", str(src), target.url("r"), client=target.client, gpg_key=public)
    ok = verify_published("yum", target.url("r"), client=target.client, gpg_key=public)
    assert ok.problems == [] and ok.packages == 2

    # Published by someone who did not check package signatures (metadata signed with the right key).
    make_yum_repo(src, [signed["other"]], secret_key=secret, update=True)
    mirror("yum", str(src), target.url("r"), client=target.client)
    bad = verify_published("yum", target.url("r"), client=target.client, gpg_key=public)
    assert bad.problems == [
        "Packages/cvm-beta-1.0-1.noarch.rpm: package signature does not verify with the given key "
        "(rpm -K: digests SIGNATURES NOT OK)"
    ]
    assert verify_published("yum", target.url("r"), client=target.client).problems == []  # no key, no check


def test_a_package_signed_by_a_revoked_key_of_the_key_file_is_refused(
    tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    """rpmkeys (rpm 4.18's own parser) knows no revocation: the key file holds the repository key and
    a separate package key that has been revoked; only the keys gpg holds valid are given to rpmkeys."""
    from cernvm_build.gpg import Keyring, generate_test_key
    from cernvm_build.mirror.source import LocalSource
    from cernvm_build.mirror.yum import verify_yum

    secret, public = signing_key
    dead_secret, dead_public = generate_test_key(tmp_path / "dead", name="Revoked Package Key", revoked=True)
    rpm = make_rpm(tmp_path / "a", "cvm-delta", payload=b"delta\n")
    src = tmp_path / "src"
    make_yum_repo(src, [sign_rpm(rpm, dead_secret, tmp_path / "signed" / rpm.name)], secret_key=secret)
    both = tmp_path / "keys.asc"
    both.write_bytes(public.read_bytes() + dead_public.read_bytes())
    with Keyring([both]) as kr:
        (dead,) = kr.dead_primary_fingerprints()
        result = verify_yum(LocalSource(src), keyring=kr, rpm_key=both)
    assert result.problems == [
        f"Packages/{rpm.name}: package signature does not verify with the given key "
        f"(rpm -K: digests SIGNATURES NOT OK) (left out as revoked or expired: {dead})"
    ]


def test_a_package_signed_by_a_revoked_subkey_of_a_live_key_is_refused(
    tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    """rpmkeys imports a key's subkeys without their revocations: a package signed by a revoked
    signing subkey of a live key verified. Only the live subkeys are handed to it (real gpg: a key,
    a signing subkey that signs the package, then the subkey revoked)."""
    import subprocess

    from cernvm_build.gpg import Keyring, generate_test_key
    from cernvm_build.mirror.source import LocalSource
    from cernvm_build.mirror.yum import verify_yum
    from tests.support import gpgagents

    secret, public = signing_key
    pk_secret, _ = generate_test_key(tmp_path / "pk", name="Package Key")
    home = tmp_path / "gpg"
    home.mkdir(mode=0o700)

    def gpg(*args: str | Path, input: bytes | None = None) -> str:
        nopass = ("--pinentry-mode", "loopback", "--passphrase", "")
        cmd = ["gpg", "--homedir", str(home), "--batch", *nopass, *map(str, args)]
        return subprocess.run(cmd, input=input, check=True, capture_output=True).stdout.decode()

    try:
        gpg("--import", pk_secret)
        fpr = next(
            ln.split(":")[9] for ln in gpg("--with-colons", "--list-keys").splitlines() if ln[:4] == "fpr:"
        )
        gpg("--quick-add-key", fpr, "rsa2048", "sign", "never")
        sub = [
            ln.split(":")[9] for ln in gpg("--with-colons", "--list-keys").splitlines() if ln[:4] == "fpr:"
        ][-1]
        gpg("--armor", "--output", tmp_path / "sub-secret.asc", "--export-secret-keys", fpr)
        gpg("--armor", "--output", tmp_path / "live.asc", "--export", fpr)
        gpg("--command-fd", "0", "--edit-key", fpr, input=b"key 1\nrevkey\ny\n0\n\ny\nsave\n")
        gpg("--armor", "--output", tmp_path / "revoked.asc", "--export", fpr)
    finally:
        gpgagents.stop(home)
    rpm = make_rpm(tmp_path / "a", "cvm-epsilon", payload=b"epsilon\n")
    src = tmp_path / "src"
    make_yum_repo(
        src, [sign_rpm(rpm, tmp_path / "sub-secret.asc", tmp_path / "signed" / rpm.name)], secret_key=secret
    )
    problems = {}
    for name in ("live", "revoked"):
        keys = tmp_path / f"keys-{name}.asc"
        keys.write_bytes(public.read_bytes() + (tmp_path / f"{name}.asc").read_bytes())
        with Keyring([keys]) as kr:
            problems[name] = verify_yum(LocalSource(src), keyring=kr, rpm_key=keys).problems
    assert problems["live"] == []  # signed by the subkey, which rpmkeys takes
    assert problems["revoked"] == [
        f"Packages/{rpm.name}: package signature does not verify with the given key "
        f"(rpm -K: digests SIGNATURES NOT OK) (left out as revoked or expired: subkey {sub} of {fpr})"
    ]


def test_relative_names_beginning_with_a_dash_are_files_not_options(
    tmp_path: Path,
    signed: dict[str, Path],
    signing_key: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a source folder './-x' is '-x/...' as a Path: rpmkeys read the key and every package as its
    # options ("unknown option"), and each good package was "no answer from rpmkeys"
    monkeypatch.chdir(tmp_path)
    for folder in ("-x", "-k"):
        (tmp_path / folder).mkdir()
    good, other = Path("-x/good.rpm"), Path("-x/other.rpm")
    good.write_bytes(signed["good"].read_bytes())
    other.write_bytes(signed["other"].read_bytes())
    key = Path("-k/key.asc")
    key.write_bytes(signing_key[1].read_bytes())
    problems = rpmsig.check_rpm_signatures([("good.rpm", good), ("other.rpm", other)], [key], "f", None)
    assert len(problems) == 1 and problems[0].startswith("other.rpm: package signature does not verify")
    assert "SIGNATURES NOT OK" in problems[0]
