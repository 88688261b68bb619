"""cernvm_inject's unpacker (bootloader/inject.py): links resolved inside the OS root, hostile payloads
refused whole, nothing written outside the root. The boot itself: tests/image/test_e2e.py."""

from __future__ import annotations

import base64
import gzip
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cernvm_build.bootloader import inject


def _payload(*members: tarfile.TarInfo | tuple[str, bytes]) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size, info.mode = len(m[1]), 0o640
                tar.addfile(info, io.BytesIO(m[1]))
    return base64.b64encode(buf.getvalue()).decode()


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _dir(name: str, mode: int = 0o700) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info


def _tree(root: Path) -> dict[str, str]:
    """Every name below ``root`` with what it is (links by target), to compare before and after."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath, n)
            rel = str(p.relative_to(root))
            out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else ("dir" if p.is_dir() else p.read_text())
    return out


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """An OS root with the links real ones have, and a folder outside it that must never change."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "etc").mkdir(parents=True)
    (root / "run").mkdir()
    (root / "var").mkdir()
    (root / "var/run").symlink_to("/run")  # absolute: the initramfs's /run, for a tar run outside
    (root / "etc/resolv.conf").symlink_to(outside / "resolv.conf")
    (root / "etc/hostname").write_text("os\n")
    outside.mkdir()
    (outside / "resolv.conf").write_text("outside\n")
    return root, outside


def test_links_are_resolved_inside_the_root(world: tuple[Path, Path]) -> None:
    root, outside = world
    before = _tree(outside)
    payload = _payload(
        ("var/run/app.pid", b"1\n"),  # through the OS's absolute link var/run -> /run
        _link("escape", str(outside)),  # the payload's own absolute link to a host folder
        ("escape/planted", b"x"),
        _link("up", "../../../../.."),  # a relative link climbing past the root
        ("up/etc/climbed", b"y"),
        ("etc/resolv.conf", b"nameserver 10.0.0.1\n"),  # replaces the link, never writes through it
    )
    assert inject.apply(str(root), payload) == 6
    assert (root / "run/app.pid").read_text() == "1\n"
    assert (root / str(outside).lstrip("/") / "planted").read_text() == "x"
    assert (root / "etc/climbed").read_text() == "y"
    assert not (root / "etc/resolv.conf").is_symlink()
    assert (root / "etc/resolv.conf").read_text() == "nameserver 10.0.0.1\n"
    assert oct((root / "etc/resolv.conf").stat().st_mode & 0o777) == oct(0o640)
    assert _tree(outside) == before, "nothing may be written outside the root"
    # applied again (the next boot after a failed write): the same result
    assert inject.apply(str(root), payload) == 6
    assert _tree(outside) == before


def test_directories_are_made_with_the_payloads_mode(world: tuple[Path, Path]) -> None:
    root, _ = world
    inject.apply(str(root), _payload(_dir("srv/app", 0o750), ("srv/app/conf", b"c")))
    assert (root / "srv/app").stat().st_mode & 0o777 == 0o750
    assert (root / "srv/app/conf").read_text() == "c"


@pytest.mark.parametrize(
    ("members", "said"),
    [
        ((("etc/ok", b"1"), ("../etc/passwd", b"x")), "member '../etc/passwd': a '..' component"),
        ((("etc/ok", b"1"), ("etc/hostname/x", b"x")), "/etc/hostname is not a directory in the OS"),
        ((("etc/ok", b"1"), ("etc", b"x")), "/etc is a directory in the OS"),
        ((("etc/ok", b"1"), _link("loop", "loop"), ("loop/x", b"x")), "more than 40 links"),
        ((("etc/ok", b"1"), _link("etc/hard", "etc/ok", tarfile.LNKTYPE)), "a hard link"),
        ((("etc/ok", b"1"), _link("dev/sda", "", tarfile.BLKTYPE)), "a device or FIFO"),
        ((("etc/f", b"1"), ("etc/f/x", b"x")), "etc/f is a file of the payload"),
        ((_link("etc/l", ""),), "an empty link target"),
        # sr18 11: refused by the kernel only in the real run, below a folder the dry run planned
        ((("etc/a.conf", b"1"), ("newdir/" + "x" * 300, b"x")), "a name longer than 255 bytes"),
        # sr18 12: the unpacker's temporary name would unlink this member when the next was written
        ((("etc/.inject-1.tmp", b"1"), ("etc/b", b"x")), "the unpacker's own temporary name"),
    ],
)
def test_a_bad_member_refuses_the_whole_payload(
    world: tuple[Path, Path], members: tuple[tarfile.TarInfo | tuple[str, bytes], ...], said: str
) -> None:
    root, _ = world
    before = _tree(root)
    with pytest.raises(inject.Refused, match=said.replace("(", r"\(").replace(".", r"\.")):
        inject.apply(str(root), _payload(*members))
    assert _tree(root) == before, "a refused payload writes nothing, not even the members before"


def test_a_sparse_member_is_refused_before_its_holes_are_made(tmp_path: Path) -> None:
    # a GNU sparse header declaring 1 TiB of holes over 0 stored bytes (tarfile would make them in memory)
    info = tarfile.TarInfo("big")
    info.type, info.size = tarfile.GNUTYPE_SPARSE, 0
    buf = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    buf[483:495] = b"%011o\0" % (1 << 40)  # realsize: 1 TiB
    buf[148:156] = b"        "
    buf[148:155] = b"%06o\0" % sum(buf[:512])
    tar = bytes(buf) + b"\0" * 1024
    with pytest.raises(inject.Refused, match="sparse"):
        inject.apply(str(tmp_path), base64.b64encode(gzip.compress(tar)).decode())


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        ("not base64 at all!", "is not base64"),
        (base64.b64encode(b"plain text").decode(), "is not a .tar.gz"),
        (base64.b64encode(gzip.compress(b"\0" * (inject.MAX_TAR + 1))).decode(), "inflates to more than"),
        (base64.b64encode(gzip.compress(b"no tar header here" * 40)).decode(), "is not a tar archive"),
        (base64.b64encode(gzip.compress(b"\0" * 10240)).decode(), "holds no member"),
    ],
)
def test_a_payload_that_is_no_tar_gz_is_refused(tmp_path: Path, payload: str, said: str) -> None:
    with pytest.raises(inject.Refused, match=said):
        inject.apply(str(tmp_path), payload)
    assert not any(tmp_path.iterdir())


def test_the_init_gets_one_line_and_the_exit_status(world: tuple[Path, Path]) -> None:
    """What 25-inject.sh runs: the payload on stdin (whitespace, as a wrapped base64 line may hold), one
    line out, 0 applied / 1 refused, no traceback."""
    root, _ = world
    env = {**os.environ, "PYTHONPATH": str(Path(inject.__file__).parents[2])}
    cmd = [sys.executable, "-m", "cernvm_build.bootloader.inject", str(root)]
    good = _payload(("etc/motd", b"hi\n"))
    ok = subprocess.run(cmd, input=good[:40] + "\n " + good[40:], capture_output=True, text=True, env=env)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "cernvm_inject: 1 member unpacked into /\n", "")
    bad = subprocess.run(cmd, input=_payload(("../x", b"")), capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == "cernvm_inject member '../x': a '..' component; nothing applied\n"


def test_runs_from_the_initrd_runtime_alone(world: tuple[Path, Path], tmp_path: Path) -> None:
    """As the init runs it: the runtime's own interpreter and modules (tarfile and what it imports
    must be in the runtime: the scan of ENTRY_MODULES brings them)."""
    from cernvm_build.bootloader.runtime import build_runtime

    root, _ = world
    rt = build_runtime(tmp_path / "rt")
    lib = rt.root / "lib"
    env = {"PYTHONHOME": str(rt.root), "LD_LIBRARY_PATH": str(lib), "PATH": os.environ["PATH"]}
    cmd = [str(lib / "ld-linux-x86-64.so.2"), str(rt.root / "bin/python3"), "-S", "-m"]
    payload = _payload(_link("etc/l", "/srv"), ("etc/l/x", b"in the root"))
    r = subprocess.run(
        [*cmd, "cernvm_build.bootloader.inject", str(root)],
        input=payload,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert (root / "srv/x").read_text() == "in the root"


def test_a_member_whose_name_is_as_long_as_a_name_can_be_is_written(tmp_path: Path) -> None:
    """A 255-byte name (NAME_MAX) is a legit member: its temporary name must not be longer (it was
    the name plus a suffix: ENAMETOOLONG after the members before it were written)."""
    long = "c" * 255
    assert inject.apply(str(tmp_path), _payload(("etc/a", b"A"), (f"etc/{long}", b"B"))) == 2
    assert (tmp_path / "etc" / long).read_bytes() == b"B"
    assert sorted(os.listdir(tmp_path / "etc")) == ["a", long]


def test_a_sparse_map_tarfile_cannot_read_is_refused(tmp_path: Path) -> None:
    """sr18 finding 9: a GNU 1.0 sparse map with a line that is no number was tarfile's ValueError, a
    traceback on the console instead of one line."""
    info = tarfile.TarInfo("GNUSparseFile.0/sp")
    body = b"1\n0 5\n".ljust(512, b"\0")
    info.size = len(body)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "sp"}
    tar = info.tobuf(format=tarfile.PAX_FORMAT) + body + b"\0" * 1024
    with pytest.raises(inject.Refused, match="its GNU sparse map holds b'0 5', not a number"):
        inject.apply(str(tmp_path), base64.b64encode(gzip.compress(tar)).decode())
    assert not any(tmp_path.iterdir())


def test_a_link_resolving_past_path_max_is_refused_not_retried_as_a_failed_write(tmp_path: Path) -> None:
    """A link's 4 KB target resolved past PATH_MAX: the dry run's lstat failed with ENAMETOOLONG, said
    as "writing into the root failed; the next boot tries again", and every boot did."""
    payload = _payload(("first", b"1"), _link("l", "/".join(["d"] * 2100)), _dir("l/sub"))
    with pytest.raises(inject.Refused, match=r"'l/sub': resolves to a path of .* longer than the OS allows"):
        inject.apply(str(tmp_path), payload)
    assert not any(tmp_path.iterdir())
