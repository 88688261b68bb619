"""``cernvm-launch create --seed``: the instance's scratch disk is a qcow2 backed by the seed (real
qemu-img), the seed is checked before anything is made, and the domain keeps libvirt's DAC driver off
the shared seed. A seeded demo boot is tests/launch/test_e2e.py's; the seed's contents are
tests/bootloader's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from cernvm_build import launch
from cernvm_build.errors import InstanceError
from cernvm_build.launch import config, seed
from tests.launch.support import create, driver_host, request
from tests.launch.test_cli import URI, cli  # noqa: F401 - cli: the CLI test's fixture, used below
from tests.launch.test_cli import launch as launch_cli


def _qcow2(path: Path, size: str = "64M", backing: Path | None = None) -> Path:
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        cmd += ["-b", str(backing), "-F", "qcow2"]
    subprocess.run([*cmd, str(path), size], check=True)
    path.chmod(0o644)
    return path


def _info(path: Path) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", "info", "--output", "json", str(path)], capture_output=True, check=True)
    return dict(json.loads(out.stdout))


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder others may enter, as a system daemon's QEMU user needs (pytest's tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="launch-seed-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_seeded_scratch_disk_is_backed_by_the_seed(
    conn: Any, launch_env: Path, image: Path, shared: Path
) -> None:
    small = _qcow2(shared / "seed.qcow2", "64M")
    inst = create(conn, request(launch_env, image, "seeded", seed=small))  # --disk 200 (MB)
    scratch = launch_env / "run" / "seeded" / "scratch.qcow2"
    info = _info(scratch)
    assert info["backing-filename"] == str(small) and info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == 200 << 20  # --disk, larger than the seed
    assert inst.meta is not None and inst.meta.seed == str(small)
    # the domain names the seed with relabel='no': the system daemon leaves its owner alone
    xml = conn.lookupByName("seeded").XMLDesc(0).replace('"', "'")
    store = xml[xml.index("<backingStore") : xml.index("</backingStore>")]
    assert str(small) in store and "relabel='no'" in store and "qcow2" in store

    big = _qcow2(shared / "big.qcow2", "1G")
    create(conn, request(launch_env, image, "bigger", seed=big))
    assert _info(launch_env / "run" / "bigger" / "scratch.qcow2")["virtual-size"] == 1 << 30  # the seed's
    assert big.stat().st_mode & 0o777 == 0o644  # the seed is never written or relabelled


def test_a_session_domain_names_the_seed_without_a_dac_label(
    conn: Any, launch_env: Path, image: Path, tmp_path: Path
) -> None:
    """A session daemon's QEMU is the user: a seed in a private folder is fine, and no DAC label."""
    own = _qcow2(tmp_path / "seed.qcow2")
    own.chmod(0o600)
    session = launch.Host(conn, "qemu:///session", driver_host(conn).accel)
    launch.create_instance(request(launch_env, image, "sess", seed=own), host=session)
    xml = conn.lookupByName("sess").XMLDesc(0)
    assert str(own) in xml and "dac" not in xml


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent.qcow2", "seed not found"),
        (lambda d: d, "the seed is not a file"),
        (lambda d: _raw(d / "seed.img"), "the seed is not a qcow2 image (qemu-img says raw)"),
        (
            lambda d: _qcow2(d / "top.qcow2", backing=_qcow2(d / "base.qcow2")),
            "the seed reads a backing file",
        ),
        (lambda d: _mode(_qcow2(d / "private.qcow2"), 0o600), "QEMU user cannot read the seed"),
        (
            lambda d: _with_data_file(d / "s.qcow2", _raw(d / "secret")),
            "the seed reads an external data file",
        ),
    ],
)
def test_a_bad_seed_is_refused_before_anything_is_made(
    conn: Any, launch_env: Path, image: Path, shared: Path, make: Any, message: str
) -> None:
    bad = make(shared)
    with pytest.raises(InstanceError) as err:
        create(conn, request(launch_env, image, "bad", seed=bad))
    assert message in err.value.message and err.value.hint
    assert conn.listAllDomains(0) == [] and not (launch_env / "run" / "bad").exists()


def _with_data_file(path: Path, data: Path) -> Path:
    """A qcow2 whose clusters are another file (a downloaded seed naming ~/.ssh/id_ed25519)."""
    opts = f"data_file={data},data_file_raw=on"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, str(path), "1M"], check=True)
    path.chmod(0o644)
    return path


def _raw(path: Path) -> Path:
    path.write_bytes(b"\0" * 4096)
    path.chmod(0o644)
    return path


def _mode(path: Path, mode: int) -> Path:
    path.chmod(mode)
    return path


def test_a_seed_in_a_folder_others_cannot_enter_is_refused_on_a_system_daemon(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(InstanceError, match=f"{private} is not searchable by others") as err:
        seed.check(_qcow2(private / "seed.qcow2"), system=True)
    assert "chmod o+x" in (err.value.hint or "")
    assert seed.check(private / "seed.qcow2", system=False).virtual_size == 64 << 20  # session: fine


def test_a_seed_for_a_remote_hypervisor_is_checked_here_but_not_for_this_hosts_qemu_user(
    tmp_path: Path,
) -> None:
    """Uploaded into the hypervisor's pool, the pool's copy (0644) is what QEMU reads there: a seed
    private to its user here is fine; a chained or non-qcow2 one is still refused before the upload."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    own = _qcow2(private / "seed.qcow2")
    os.chmod(own, 0o600)
    with pytest.raises(InstanceError, match="cannot read the seed"):
        seed.check(own, system=True)
    assert seed.check(own, system=True, remote=True).virtual_size == 64 << 20
    with pytest.raises(InstanceError, match="the seed reads a backing file"):
        seed.check(_qcow2(tmp_path / "chained.qcow2", backing=own), system=True, remote=True)


@pytest.mark.usefixtures("cli")
def test_seed_is_a_flag_a_config_key_and_in_help(
    image: Path, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert config.BY_KEY["seed"].flag == "--seed"
    ud, conf = tmp_path / "ud.txt", tmp_path / "vm.conf"
    ud.write_text("#cloud-config\n")
    conf.write_text(f"seed={shared / 'seed.qcow2'}\n")
    assert config.parse_conf(conf) == {"seed": shared / "seed.qcow2"}
    with pytest.raises(SystemExit):
        launch_cli("create", "--help")
    assert "--seed SEED.qcow2" in capsys.readouterr().out
    # a bad seed through the command line: one line, exit 8, nothing made
    raw = _raw(shared / "x.img")
    assert launch_cli("create", "--name", "cli-seed", "--iso", str(image), "--seed", str(raw), "--yes") == 8
    err = capsys.readouterr().err
    assert "not a qcow2 image" in err and str(raw) in err and "Traceback" not in err
    assert "cli-seed" not in [d.name() for d in libvirt.open(URI).listAllDomains(0)]
    from_file = [
        "create",
        "--name",
        "cli-seed",
        "--iso",
        str(image),
        "--no-start",
        "--yes",
        str(ud),
        str(conf),
    ]
    assert launch_cli(*from_file) != 0  # a handed file may not name a host file as a disk
    assert "seed: not taken from a per-create file" in capsys.readouterr().err
    Path(os.environ["CERNVM_LAUNCH_CONF"]).write_text(conf.read_text())  # the user's own file may
    conf.write_text("cpus=1\n")
    assert launch_cli(*from_file) == 8
    assert "seed not found" in capsys.readouterr().err  # the config file's key reached create
    _qcow2(shared / "seed.qcow2")
    assert launch_cli(*from_file) == 0
    scratch = Path(os.environ["CERNVM_LAUNCH_HOME"]) / "run" / "cli-seed" / "scratch.qcow2"
    assert _info(scratch)["backing-filename"] == str(shared / "seed.qcow2")
