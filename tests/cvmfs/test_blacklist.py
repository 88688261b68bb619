"""The certificate blacklist (``cvmfs/blacklist.py``): its format as the real client reads it, the
errors for a bad file, and the reader refusing a repository it revokes (library and CLI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs import blacklist
from cernvm_build.cvmfs import manifest as mf
from cernvm_build.cvmfs import whitelist as wl
from cernvm_build.cvmfs.limits import MAX_BLACKLIST_BYTES
from cernvm_build.cvmfs.repository import SnapshotSpec, open_repository
from cernvm_build.cvmfs.rsa import load_certificate
from cernvm_build.errors import CvmfsError, IntegrityError

from .conftest import FQRN, Fixture

#: the fixture certificate's SHA-1 fingerprint, as the real server's whitelist lists it (and
#: ``openssl x509 -noout -fingerprint -sha1`` prints it)
FIXTURE_FPR = "F6:56:F2:CF:4B:4C:CE:BA:33:D6:B9:55:2A:A1:BC:24:3F:C5:D5:29"


def _cert_der(fx: Fixture) -> bytes:
    return load_certificate((fx.keys / f"{FQRN}.crt").read_bytes(), where="crt").der


def _file(tmp_path: Path, text: str | bytes, name: str = "blacklist") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


# -- the format ------------------------------------------------------------------------------------
def test_the_fingerprint_is_the_one_the_real_whitelist_lists(fx: Fixture) -> None:
    body = mf.split_signed((fx.repo / ".cvmfswhitelist").read_bytes(), "w").body
    assert wl.parse(body).fingerprints == (FIXTURE_FPR,)  # written by the real cvmfs_server
    b = blacklist.parse(f"{FIXTURE_FPR}\n".encode(), "bl")
    assert b.certificate_entry(_cert_der(fx)) == (FIXTURE_FPR, "bl:1")


@pytest.mark.parametrize(
    "line",
    [
        FIXTURE_FPR,
        FIXTURE_FPR.lower(),
        FIXTURE_FPR.replace(":", ""),  # the real client drops the colons
        f"{FIXTURE_FPR} # CN=fixture.cernvm.test CernVM-FS Release Managers",
        f"{FIXTURE_FPR}\t# revoked 2026-12-07",
        f"{FIXTURE_FPR}#no space",
        f"  {FIXTURE_FPR}\r",  # leading blanks, CRLF
    ],
)
def test_a_fingerprint_line_is_read_as_the_real_client_reads_it(fx: Fixture, line: str) -> None:
    b = blacklist.parse(f"# revoked certificates\n\n{line}\n".encode(), "bl")
    assert b.certificate_entry(_cert_der(fx)) == (FIXTURE_FPR, "bl:3")


def test_other_hash_algorithms_by_their_suffix(fx: Fixture) -> None:
    der = _cert_der(fx)
    for algorithm in ("rmd160", "shake128"):
        fpr = wl.fingerprint(der, algorithm)  # the whitelist's own writer: "...-RMD160"
        b = blacklist.parse(f"{fpr}\n".encode(), "bl")
        assert b.certificate_entry(der) == (fpr, "bl:1")
    other = blacklist.parse(b"00:" * 19 + b"00\n", "bl")
    assert other.certificate_entry(der) is None and other


def test_revision_lines_and_the_highest_floor() -> None:
    text = b"<a.test 5\n<b.test\t7\n< a.test 9 # after the leak\n<a.test 3\n"
    b = blacklist.parse(text, "bl")
    assert b.floors == {"a.test": (9, "bl:3"), "b.test": (7, "bl:2")}
    b.check_revision("a.test", 9)
    b.check_revision("c.test", 1)
    with pytest.raises(IntegrityError) as e:
        b.check_revision("a.test", 8)
    assert e.value.message == "a.test: revision 8 is blacklisted: revisions below 9 are refused at bl:3"


def test_files_add_up_and_nothing_is_taken_back(tmp_path: Path) -> None:
    one = _file(tmp_path, f"{FIXTURE_FPR}\n<a.test 9\n", "one")
    two = _file(tmp_path, "<a.test 4\n<b.test 2\n", "two")
    b = blacklist.load([one, two])
    assert b.floors == {"a.test": (9, f"{one}:2"), "b.test": (2, f"{two}:2")}
    assert list(b.certificates.values()) == [f"{one}:1"]
    assert b.files == [str(one), str(two)]


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        (f"{FIXTURE_FPR}\nAB:CD:EF\n", 2, "not a certificate fingerprint"),
        ("# ok\nsft.cern.ch\n", 2, "not a certificate fingerprint"),
        (FIXTURE_FPR.replace("F6", "G6") + "\n", 1, "not a certificate fingerprint"),
        ("AB" * 16 + "\n", 1, "not a certificate fingerprint"),  # an MD5: no whitelist lists one
        ("<a.test\n", 1, "'<REPOSITORY REVISION'"),
        ("<a.test 1 2\n", 1, "'<REPOSITORY REVISION'"),
        ("<a.test -1\n", 1, "'<REPOSITORY REVISION'"),
        ("<a.test ²\n", 1, "'<REPOSITORY REVISION'"),
        ("\n\n<../x 3\n", 3, "repository name"),
        (b"\x7fELF\x02\x01\x01\x00\x00", 1, "not a text line"),
        (b"# ok\n\xff\xfe\n", 2, "not a text line"),
        ("# ok\nAB\x1b[31m\n", 2, "not a text line"),
    ],
)
def test_a_bad_line_is_one_error_naming_file_and_line(
    tmp_path: Path, text: str | bytes, line: int, says: str
) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(CvmfsError) as e:
        blacklist.load([path])
    assert e.value.message.startswith(f"{path}:{line}: ") and says in e.value.message, e.value.message
    assert "\n" not in e.value.message and e.value.hint


def test_a_huge_file_a_missing_one_and_a_folder_are_one_line_each(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(MAX_BLACKLIST_BYTES + 1)
    with pytest.raises(CvmfsError, match=rf"^{big}:1: blacklist file is larger than 4 MiB"):
        blacklist.load([big])
    with pytest.raises(CvmfsError, match=rf"^{tmp_path / 'none'}: blacklist cannot be read"):
        blacklist.load([tmp_path / "none"])
    with pytest.raises(CvmfsError, match=rf"^{tmp_path}: blacklist cannot be read"):
        blacklist.load([tmp_path])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(CvmfsError, match=rf"^{fifo}: blacklist cannot be read"):
        blacklist.load([fifo])  # not waited on for ever


def test_the_default_file_is_read_when_it_exists_and_a_named_one_replaces_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / "etc-blacklist"
    monkeypatch.setattr(blacklist, "DEFAULT_PATH", default)
    assert not blacklist.resolve()
    _file(tmp_path, "<a.test 3\n", "etc-blacklist")
    assert blacklist.resolve().floors == {"a.test": (3, f"{default}:1")}
    named = _file(tmp_path, "<b.test 3\n", "named")
    assert blacklist.resolve([named]).floors == {"b.test": (3, f"{named}:1")}  # CVMFS_BLACKLIST's rule


# -- the reader ------------------------------------------------------------------------------------
def test_open_refuses_a_manifest_signed_by_a_blacklisted_certificate(fx: Fixture, tmp_path: Path) -> None:
    path = _file(tmp_path, f"# leaked on 2026-12-01\n{FIXTURE_FPR}\n")
    with pytest.raises(IntegrityError) as e:
        open_repository(fx.repo, fqrn=FQRN, public_keys=[fx.pub], blacklist=blacklist.load([path]))
    assert e.value.message.startswith(f"{FQRN}: the manifest is signed by certificate ")
    assert f"(fingerprint {FIXTURE_FPR}), which is blacklisted at {path}:2" in e.value.message
    assert e.value.hint is not None and "re-sign the repository with a new certificate" in e.value.hint
    other = _file(tmp_path, "00:" * 19 + "00\n", "other")
    with open_repository(fx.repo, fqrn=FQRN, public_keys=[fx.pub], blacklist=blacklist.load([other])) as r:
        assert r.revision == 2


def test_the_system_blacklist_applies_when_the_caller_names_none(
    fx: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every consumer (image builds, seeds, containers, the monitor) passes through the same open:
    one that names no blacklist gets /etc/cvmfs/blacklist, as the real client does."""
    monkeypatch.setattr(blacklist, "DEFAULT_PATH", _file(tmp_path, f"{FIXTURE_FPR}\n"))
    with pytest.raises(IntegrityError, match="which is blacklisted"):
        open_repository(fx.repo, fqrn=FQRN, public_keys=[fx.pub])


def test_the_offline_copy_is_refused_too(fx: Fixture, tmp_path: Path) -> None:
    """The cache's last verified manifest (no server answers) goes through the same check."""
    cache = tmp_path / "cache"
    with open_repository(fx.repo, fqrn=FQRN, public_keys=[fx.pub], cache_dir=cache):
        pass
    gone = "http://127.0.0.1:9/cvmfs/" + FQRN  # nothing listens on port 9
    revoked = blacklist.parse(f"{FIXTURE_FPR}\n".encode(), "bl")
    with open_repository(gone, fqrn=FQRN, public_keys=[fx.pub], cache_dir=cache, retries=0, timeout=1) as r:
        assert r.offline
    with pytest.raises(IntegrityError, match="which is blacklisted at bl:1"):
        open_repository(
            gone, fqrn=FQRN, public_keys=[fx.pub], cache_dir=cache, retries=0, timeout=1, blacklist=revoked
        )


def test_a_revision_floor_refuses_older_revisions_and_tags(fx: Fixture) -> None:
    floor2 = blacklist.parse(f"<{FQRN} 2\n".encode(), "bl")
    with open_repository(fx.repo, fqrn=FQRN, public_keys=[fx.pub], blacklist=floor2) as r:
        assert r.revision == 2
    with pytest.raises(IntegrityError) as e:
        open_repository(
            fx.repo,
            fqrn=FQRN,
            public_keys=[fx.pub],
            blacklist=floor2,
            snapshot=SnapshotSpec(tag="slc4-frozen"),
        )
    assert e.value.message == f"{FQRN}: revision 1 is blacklisted: revisions below 2 are refused at bl:1"
    floor3 = blacklist.parse(f"# x\n<{FQRN} 3\n".encode(), "bl")
    with pytest.raises(
        IntegrityError, match=r"revision 2 is blacklisted: revisions below 3 are refused at bl:2"
    ):
        open_repository(fx.repo, fqrn=FQRN, public_keys=[fx.pub], blacklist=floor3)
    with pytest.raises(IntegrityError, match="revisions below 3"):  # no signature chain, still the floor
        open_repository(fx.repo, fqrn=FQRN, verify=False, blacklist=floor3)
    other = blacklist.parse(b"<other.test 30\n", "bl")
    open_repository(fx.repo, fqrn=FQRN, public_keys=[fx.pub], blacklist=other).close()


def test_cli_reader_commands_refuse_in_one_line(
    fx: Fixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bl = _file(tmp_path, f"{FIXTURE_FPR}\n")
    for argv in (["ls", str(fx.root), "/"], ["cat", str(fx.root), "/README"], ["info", str(fx.root)]):
        assert main(["cvmfs", *argv, "--blacklist", str(bl)]) == IntegrityError.exit_code
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert f"which is blacklisted at {bl}:1" in err and FIXTURE_FPR in err, err
    bad = _file(tmp_path, "not a fingerprint\n", "bad")
    assert main(["cvmfs", "ls", str(fx.root), "/", "--blacklist", str(bad)]) == CvmfsError.exit_code
    err = capsys.readouterr().err
    assert f"{bad}:1: not a certificate fingerprint" in err and "Traceback" not in err


# -- a repository the test publishes, its certificate revoked and replaced (through the CLI) ---------
def _rotate_certificate(keys: Path, fqrn: str) -> str:
    """A new certificate key and certificate in the key folder (the master key stays): what a
    publisher does once the old one is revoked. Returns the old certificate's fingerprint."""
    from cryptography.hazmat.primitives.asymmetric import rsa as crsa

    from cernvm_build.cvmfs import keys as keymod

    old = keymod.load_keys(keys, fqrn).fingerprint()
    key = crsa.generate_private_key(public_exponent=65537, key_size=2048)
    (keys / f"{fqrn}.key").write_bytes(keymod._pem_private(key))
    (keys / f"{fqrn}.crt").write_bytes(keymod.self_signed_certificate(fqrn, key))
    return old


@pytest.mark.integration
def test_cli_revoked_then_re_signed_with_a_new_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A published repository whose certificate is blacklisted: ls and replicate refuse it (the
    replica keeps nothing of it), mount too; re-signed with a new certificate, all of them pass."""
    fqrn, keys, stratum = "bl.cernvm.test", tmp_path / "keys", tmp_path / "stratum"
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "hello").write_text("hello\n")
    assert main(["cvmfs", "keygen", fqrn, "--out", str(keys), "-q"]) == 0
    assert main(["cvmfs", "create", str(stratum), "--fqrn", fqrn, "--keys", str(keys), "-q"]) == 0
    assert main(["cvmfs", "publish", str(stratum), str(tree), "--keys", str(keys), "-q"]) == 0
    pub = ["--key", str(keys / f"{fqrn}.pub"), "--fqrn", fqrn]
    capsys.readouterr()
    old = _rotate_certificate(keys, fqrn)
    bl = _file(tmp_path, f"# leaked\n{old}  # {fqrn}\n")
    revoked = ["--blacklist", str(bl)]
    replica = tmp_path / "replica"

    assert main(["cvmfs", "cat", str(stratum), "/hello", *pub]) == 0  # not revoked yet: no list
    capsys.readouterr()
    for argv in (["cat", str(stratum), "/hello"], ["replicate", str(stratum), str(replica)]):
        assert main(["cvmfs", *argv, *pub, *revoked]) == IntegrityError.exit_code, argv
        err = capsys.readouterr().err
        assert f"error: {fqrn}: the manifest is signed by certificate " in err, err
        assert f"(fingerprint {old}), which is blacklisted at {bl}:2" in err and "Traceback" not in err
        assert "hint: the certificate was revoked" in err
    assert not (replica / ".cvmfspublished").exists()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = ["cvmfs", "mount", str(stratum), str(mnt), *pub, *revoked, "--foreground"]
    assert main(mount) != 0
    assert "which is blacklisted" in capsys.readouterr().err and not os.path.ismount(mnt)

    # the publisher re-signs: the whitelist lists the new certificate, the next revision is signed by it
    assert main(["cvmfs", "resign", str(stratum), "--keys", str(keys), "-q"]) == CvmfsError.exit_code
    assert "pass --new-certificate" in capsys.readouterr().err  # the certificate it signs with changes
    assert main(["cvmfs", "resign", str(stratum), "--keys", str(keys), "--new-certificate", "-q"]) == 0
    assert main(["cvmfs", "publish", str(stratum), str(tree), "--keys", str(keys), "-q"]) == 0
    capsys.readouterr()
    assert main(["cvmfs", "cat", str(stratum), "/hello", *pub, *revoked]) == 0
    assert capsys.readouterr().out == "hello\n"
    assert main(["cvmfs", "replicate", str(stratum), str(replica), *pub, *revoked, "-q"]) == 0
    assert main(["cvmfs", "ls", str(replica), "/", *pub, *revoked]) == 0
    # a revision floor: the current revision passes a floor at it, not one above it
    capsys.readouterr()
    assert main(["cvmfs", "info", str(stratum), *pub, "--json"]) == 0
    import json

    now = json.loads(capsys.readouterr().out)["revision"]
    floor = _file(tmp_path, f"<{fqrn} {now}\n", "floor")
    assert main(["cvmfs", "ls", str(stratum), "/", *pub, "--blacklist", str(floor)]) == 0
    capsys.readouterr()
    above = _file(tmp_path, f"<{fqrn} {now + 1}\n", "above")
    assert main(["cvmfs", "replicate", str(stratum), str(replica), *pub, "--blacklist", str(above)]) == 6
    err = capsys.readouterr().err
    assert f"{fqrn}: revision {now} is blacklisted: revisions below {now + 1} are refused at {above}:1" in err


def test_a_containers_origin_applies_the_profiles_blacklist(fx: Fixture, tmp_path: Path) -> None:
    """``container build``/``verify`` open the repository with the profile's ``cvmfs.blacklist``."""
    from cernvm_build.container.origin import open_origin

    listed = _file(tmp_path, f"<{FQRN} 3\n")
    with pytest.raises(IntegrityError, match=rf"revisions below 3 are refused at {listed}:1"):
        open_origin(
            [str(fx.repo)],
            fqrn=FQRN,
            path="/",
            public_keys=[fx.pub],
            snapshot=SnapshotSpec(),
            blacklist=listed,
        )
    open_origin([str(fx.repo)], fqrn=FQRN, path="/", public_keys=[fx.pub], snapshot=SnapshotSpec()).close()


def test_a_default_file_the_user_cannot_reach_is_one_line(tmp_path: Path) -> None:
    """``/etc/cvmfs`` not searchable by the user: ``DEFAULT_PATH.exists()`` raised PermissionError
    (a traceback from every reader command). It is one line saying the list cannot be read, not
    taken as absent (a revocation must not be silently ineffective)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to run as another user (setpriv)")
    shared = Path(tempfile.mkdtemp(prefix="blacklist-"))  # reachable by the user, unlike tmp_path
    try:
        shared.chmod(0o755)
        (shared / "etc-cvmfs").mkdir(mode=0o700)  # root's only
        (shared / "etc-cvmfs" / "blacklist").write_text("<a.test 3\n")
        code = (
            "import sys; from pathlib import Path; from cernvm_build.cvmfs import blacklist as b\n"
            f"b.DEFAULT_PATH = Path({str(shared / 'etc-cvmfs' / 'blacklist')!r})\n"
            "try:\n    b.resolve()\nexcept Exception as e:\n    print(type(e).__name__, e); sys.exit(3)\n"
        )
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        root = str(Path(blacklist.__file__).resolve().parents[2])
        r = subprocess.run(
            [*as_nobody, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd="/",
            env={**os.environ, "PYTHONPATH": root},
        )
        assert r.returncode == 3, r.stderr
        assert (
            r.stdout
            == f"CvmfsError {shared}/etc-cvmfs/blacklist: blacklist cannot be read: Permission denied\n"
        )
    finally:
        shutil.rmtree(shared)
