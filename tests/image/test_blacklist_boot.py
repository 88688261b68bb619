"""The certificate blacklist on the μCernVM path: the profile's file checked and carried in the initrd,
the user data's ``cvmfs_blacklist`` added to it (never taking an entry back), and the init handing
both to the mount, which refuses what they list (``cvmfs/blacklist.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.bootloader import userdata
from cernvm_build.bootloader.initrd import BLACKLIST, fused_init
from cernvm_build.cvmfs import blacklist
from cernvm_build.cvmfs.mount import parse_args
from tests.cvmfs.conftest import FIXTURE, FQRN

from .conftest import FQRN as FQRN_IMAGE
from .conftest import ServedRepo
from .test_build import _assert_nothing_written, _cli

FIXTURE_FPR = "F6:56:F2:CF:4B:4C:CE:BA:33:D6:B9:55:2A:A1:BC:24:3F:C5:D5:29"


def test_the_user_data_key_takes_fingerprints_and_revision_floors() -> None:
    text = f"[ucernvm-begin]\ncvmfs_blacklist={FIXTURE_FPR},<a.example.org 12\n[ucernvm-end]\n"
    p = userdata.parse(text)
    assert p.messages == [] and p.values == {"cvmfs_blacklist": f"{FIXTURE_FPR},<a.example.org 12"}
    for bad in ("AB:CD", "<a.example.org", "<a.example.org 1 x", f"{FIXTURE_FPR};rm -rf /", "<../x 3"):
        p = userdata.parse(f"[ucernvm-begin]\ncvmfs_blacklist={bad}\n[ucernvm-end]\n")
        assert p.values == {} and p.messages, bad


def test_what_the_user_data_key_takes_the_mount_reads() -> None:
    """A value the user data check passes must not fail the mount at boot (a boot that stops at
    10-cvmfs.sh instead of a user data report): a suffix other than -RMD160/-SHAKE128, a repository
    name without a dot."""
    for bad in (f"{FIXTURE_FPR}-MD5", f"{FIXTURE_FPR}-x", "<cvmfs 3", "<a..b 3", "<a. 3"):
        p = userdata.parse(f"[ucernvm-begin]\ncvmfs_blacklist={bad}\n[ucernvm-end]\n")
        assert p.values == {} and p.messages, bad
    good = [f"{FIXTURE_FPR}-RMD160", f"{FIXTURE_FPR.lower()}-shake128", "<a-b_c.example.org 0"]
    p = userdata.parse(f"[ucernvm-begin]\ncvmfs_blacklist={','.join(good)}\n[ucernvm-end]\n")
    assert p.messages == [], p.messages
    got = blacklist.parse(p.values["cvmfs_blacklist"].replace(",", "\n").encode(), "user data")
    assert len(got.certificates) == 2 and got.floors["a-b_c.example.org"][0] == 0


def _init_blacklist_args(tmp_path: Path, image_list: str | None, user: str) -> list[str]:
    """The arguments 10-cvmfs.sh adds for the blacklist (its lines run by busybox sh, with the
    initrd's paths moved under ``tmp_path``)."""
    init = fused_init().decode()
    step = init[init.index("# ---- 10-cvmfs.sh ----") : init.index("# ---- 20-overlay.sh ----")]
    lines = step.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("# Revoked certificates"))
    last = next(i for i in range(first, len(lines)) if lines[i] == "fi")
    code = "\n".join(lines[first : last + 1])
    image, user_file = tmp_path / "etc-cvmfs-blacklist", tmp_path / "blacklist.user-data"
    code = code.replace("/etc/cvmfs/blacklist", str(image))
    code = code.replace("/tmp/blacklist.user-data", str(user_file))
    assert str(image) in code and str(user_file) in code, "the init's paths moved"
    if image_list is not None:
        image.write_text(image_list)
    script = f"set -- --fqrn {FQRN}\n{code}\nprintf '%s\\n' \"$@\"\n"
    r = subprocess.run(
        ["busybox", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "U_cvmfs_blacklist": user},
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def _mount_blacklist(argv: list[str]) -> blacklist.Blacklist:
    """What the mount applies, given the init's arguments."""
    args = parse_args([*argv, "--server", "http://s/cvmfs/x", "/mnt"])
    assert args is not None
    return blacklist.resolve([Path(p) for p in args.blacklist])


def test_the_init_hands_the_mount_the_images_list_and_the_user_datas(tmp_path: Path) -> None:
    argv = _init_blacklist_args(tmp_path, f"{FIXTURE_FPR}\n<{FQRN} 2\n", f"<{FQRN} 5,<b.example.org 7")
    merged = _mount_blacklist(argv)
    # the user data raised a floor and added one; the image's certificate entry stays
    assert {k: v[0] for k, v in merged.floors.items()} == {FQRN: 5, "b.example.org": 7}
    assert list(merged.certificates) == [("sha1", FIXTURE_FPR.replace(":", "").lower())]
    # the user data cannot lower the image's floor
    argv = _init_blacklist_args(tmp_path, f"<{FQRN} 9\n", f"<{FQRN} 1")
    merged = _mount_blacklist(argv)
    assert merged.floors[FQRN][0] == 9
    # neither: no --blacklist (the mount then reads /etc/cvmfs/blacklist of the initrd, if any)
    (tmp_path / "etc-cvmfs-blacklist").unlink()
    assert _init_blacklist_args(tmp_path, None, "") == ["--fqrn", FQRN]


def test_the_init_s_mount_refuses_a_revoked_certificate(tmp_path: Path) -> None:
    """The mount the init runs (with the arguments the init made) refuses the repository before it
    mounts anything: one line naming the repository, the fingerprint and the list's line."""
    argv = _init_blacklist_args(tmp_path, "# the image's\n", FIXTURE_FPR)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", *argv, "--server", str(FIXTURE / "repo")]
    cmd += ["--public-key", str(FIXTURE / "keys" / f"{FQRN}.pub"), "--foreground", str(mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert f"which is blacklisted at {tmp_path / 'blacklist.user-data'}:1" in r.stderr, r.stderr
    assert FIXTURE_FPR in r.stderr and not list(mnt.iterdir())


def _initrd_member(out: Path, member: str) -> bytes:
    hdd = next(out.glob("*.hdd"))
    packed = subprocess.run(
        ["mcopy", "-n", "-i", f"{hdd}@@{1 << 20}", "::/cernvm/initrd.img", "-"],
        capture_output=True,
        check=True,
    ).stdout
    payload = subprocess.run(["lz4", "-dc"], input=packed, capture_output=True, check=True).stdout
    return subprocess.run(
        ["cpio", "-i", "--quiet", "--to-stdout", member], input=payload, capture_output=True
    ).stdout


@pytest.mark.integration
def test_an_image_carries_the_profiles_blacklist(test_repo: ServedRepo, tmp_path: Path) -> None:
    """``--blacklist FILE`` (the profile's ``cvmfs.blacklist``): checked, applied to the build's own
    read of the repository, and carried as the initrd's /etc/cvmfs/blacklist."""
    listed = f"# revoked\n{'00:' * 19}00\n<other.example.org 3\n"
    bl = tmp_path / "blacklist"
    bl.write_text(listed)
    out = tmp_path / "out"
    r = _cli("image", "build", "demo", "--server", test_repo.url, "--format", "hdd", "--initrd-level", "1",
             "--blacklist", str(bl), "--out", str(out), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert _initrd_member(out, BLACKLIST) == listed.encode()
    manifest = json.loads(next(out.glob("*.manifest.json")).read_text())
    assert manifest["initrd"]["blacklist"]["bytes"] == len(listed)


@pytest.mark.integration
def test_an_image_build_refuses_a_revoked_repository_and_a_bad_list(
    test_repo: ServedRepo, tmp_path: Path
) -> None:
    revoked = tmp_path / "revoked"
    revoked.write_text(f"{test_repo.keys.fingerprint()}\n")
    out = tmp_path / "out"
    r = _cli("image", "build", "demo", "--server", test_repo.url, "--format", "hdd",
             "--blacklist", str(revoked), "--out", str(out))  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"which is blacklisted at {revoked}:1" in r.stderr, r.stderr
    _assert_nothing_written(out)
    bad = tmp_path / "bad"
    bad.write_text("# ok\nnot a fingerprint\n")
    r = _cli("image", "build", "demo", "--server", test_repo.url, "--blacklist", str(bad), "--out", str(out))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"{bad}:2: not a certificate fingerprint" in r.stderr, r.stderr
    _assert_nothing_written(out)


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_boot_whose_user_data_revokes_the_certificate_stops_at_the_mount(
    test_repo: ServedRepo, tmp_path: Path
) -> None:
    """A real boot (qemu): the image's list (the profile's) and the user data's entry reach the
    initrd's mount, which refuses the repository; the console's panic line names the repository,
    the fingerprint and the user data's line."""
    import dataclasses

    from cernvm_build.context import BuildContext
    from cernvm_build.image.build import build_image

    from .vm import blank_disk, boot, context_iso

    image_list = tmp_path / "blacklist"
    image_list.write_text("# the image's\n<other.example.org 5\n")
    p = test_repo.profile()
    p = dataclasses.replace(p, cvmfs=dataclasses.replace(p.cvmfs, blacklist=image_list))
    out = tmp_path / "out"
    build_image(p, out, formats=["hdd"], initrd_level=1, ctx=BuildContext(epoch=1764000000))
    assert _initrd_member(out, BLACKLIST) == image_list.read_bytes()
    fpr = test_repo.keys.fingerprint()
    server = f"10.0.2.2:{test_repo.server.port}"
    ud = f"[ucernvm-begin]\ncvmfs_server={server}\ncvmfs_blacklist={fpr}\n[ucernvm-end]\n"
    context = context_iso(tmp_path / "c.iso", ud)
    scratch = blank_disk(tmp_path / "scratch.qcow2")
    b = boot(next(out.glob("*.hdd")), scratch, context, tmp_path / "boot.log", kind="hdd")
    assert "ucernvm: panic" in b.console, b.console[-3000:]
    assert (
        f"CernVM-FS mount of {FQRN_IMAGE} failed: error: {FQRN_IMAGE}: the manifest is signed by" in b.console
    )
    assert f"(fingerprint {fpr}), which is blacklisted at /tmp/blacklist.user-data:1" in b.console, b.console[
        -3000:
    ]


@pytest.mark.integration
def test_an_image_build_reads_the_profiles_list_never_the_hosts(
    test_repo: ServedRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build without ``cvmfs.blacklist`` on a host whose /etc/cvmfs/blacklist revokes the
    repository's certificate resolved its snapshot with the host's list (refused here), a list the
    image does not carry: its booted client would take what the build refused. The build applies the
    profile's list only (the image carries it); naming the host's file carries it."""
    import dataclasses

    from cernvm_build.errors import BuildError
    from cernvm_build.image.build import query_snapshot

    host = tmp_path / "etc-cvmfs-blacklist"
    host.write_text(f"{test_repo.keys.fingerprint()}\n")
    monkeypatch.setattr(blacklist, "DEFAULT_PATH", host)
    prof = test_repo.profile()
    assert prof.cvmfs.blacklist is None
    snap = query_snapshot(prof)  # the host's list is not read
    assert snap.revision == test_repo.revisions[-1].revision
    named = dataclasses.replace(prof, cvmfs=dataclasses.replace(prof.cvmfs, blacklist=host))
    with pytest.raises(BuildError, match=rf"which is blacklisted at {host}:1"):
        query_snapshot(named)
