"""Instances on libvirt's test driver: define, metadata, list, life cycle, destroy, bad input."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from cernvm_build import launch
from cernvm_build.bootloader.disk import SCRATCH_SERIAL
from cernvm_build.errors import ImageError, InstanceError, LaunchError, UsageError
from cernvm_build.launch import domain, instances, keys
from tests.launch.support import create, driver_host, request


def test_create_defines_domain_with_disks_context_and_metadata(
    conn: Any, launch_env: Path, image: Path
) -> None:
    inst = create(conn, request(launch_env, image, "vm1", cpus=2, execution_cap=50))
    assert inst.state == "running"
    meta = inst.meta
    assert meta is not None
    home = launch_env / "run" / "vm1"
    assert meta.home == str(home) and meta.image == str(image)
    assert meta.host_fingerprint.startswith("SHA256:") and meta.host_key.startswith("ssh-ed25519 ")
    assert 1024 <= meta.ssh_port <= 65535
    assert (home / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert (home / "context.iso").stat().st_mode & 0o777 == 0o600
    info = subprocess.run(["qemu-img", "info", home / "scratch.qcow2"], capture_output=True, text=True).stdout
    assert "virtual size: 200 MiB" in info and "qcow2" in info

    root = ET.fromstring(conn.lookupByName("vm1").XMLDesc(0))
    disks = {d.find("target").get("dev"): d for d in root.iter("disk")}  # type: ignore[union-attr]
    boot = disks["vdc"]  # a hard-disk image: virtio, since SATA/IDE disks cannot be read-only
    assert boot.find("readonly") is not None  # the base image is never written
    assert boot.find("source").get("file") == str(image)  # type: ignore[union-attr]
    assert disks["vda"].find("source").get("file") == str(home / "scratch.qcow2")  # type: ignore[union-attr]
    assert disks["vda"].findtext("serial") == SCRATCH_SERIAL  # the bootloader's first boot takes this disk
    ctx = disks["vdb"]
    assert ctx.find("source").get("file") == str(home / "context.iso")  # type: ignore[union-attr]
    assert ctx.find("readonly") is not None
    assert root.findtext("vcpu") == "2" and root.findtext("cputune/quota") == "50000"
    assert root.find("devices/serial/log").get("file") == str(home / "console.log")  # type: ignore[union-attr]


def test_context_iso_holds_both_layouts_with_merged_user_data(
    conn: Any, launch_env: Path, image: Path, tmp_path: Path
) -> None:
    create(conn, request(launch_env, image, "ctx", cvmfs_server="10.0.2.2:8000"))
    iso = launch_env / "run" / "ctx" / "context.iso"
    out = tmp_path / "x"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", out], check=True, capture_output=True
    )
    label = subprocess.run(["xorriso", "-indev", iso, "-pvd_info"], capture_output=True, text=True).stdout
    assert "Volume Id    : CONFIG-2" in label
    data = (out / "openstack/latest/user_data").read_bytes()
    assert data == (out / "ec2/latest/user-data").read_bytes() == (out / "user-data").read_bytes()
    assert b"[ucernvm-begin]\ncvmfs_server=10.0.2.2:8000\n[ucernvm-end]" in data
    assert b"hostname: custom" in data  # the user's own choice is kept
    meta = instances.get(conn, "ctx")[1].meta
    assert meta is not None and meta.host_key.split()[1].encode() in data
    assert b"instance-id:" in (out / "meta-data").read_bytes()


def test_life_cycle_and_destroy_leaves_nothing(conn: Any, launch_env: Path, image: Path) -> None:
    create(conn, request(launch_env, image, "life"))
    assert instances.pause(conn, "life").state == "paused"
    assert instances.start(conn, "life").state == "running"  # start resumes a paused instance
    stopped = instances.stop(conn, "life")
    assert stopped.state == "saved" and stopped.saved  # like VirtualBox savestate
    assert instances.start(conn, "life").state == "running"
    with pytest.raises(InstanceError, match="is running"):
        instances.destroy(conn, "life", home=launch_env)
    instances.destroy(conn, "life", force=True, home=launch_env)
    assert conn.listAllDomains(0) == []
    assert not (launch_env / "run" / "life").exists()


def test_list_reads_everything_from_metadata(conn: Any, launch_env: Path, image: Path) -> None:
    conn.defineXML(
        "<domain type='test'><name>foreign</name><memory>65536</memory><os><type>hvm</type></os></domain>"
    )
    create(conn, request(launch_env, image, "vm00"))
    # 49 more defined straight from the template: list reads everything it shows from metadata
    # (the files are only checked for being there: see test_broken_leftover_is_listed_and_destroyed).
    host_key = keys.generate("root@vm").public_openssh
    for n in range(1, 50):
        name = f"vm{n:02d}"
        folder = launch_env / "run" / name
        folder.mkdir(parents=True)
        for f in ("scratch.qcow2", "context.iso"):
            (folder / f).touch()
        spec = domain.DomainSpec(
            name=name, title="t", domain_type="test", cpus=1 + n % 2, memory=256, image=image,
            image_format="hdd", scratch=launch_env / "s", context_iso=launch_env / "c",
            console_log=launch_env / "l",
        )  # fmt: skip
        conn.defineXML(
            domain.render(
                spec,
                domain.Metadata(
                    image=str(image), ssh_port=20000 + n, cpus=1 + n % 2, home=str(folder), host_key=host_key
                ),
            )
        )
    found = instances.list_instances(conn)
    assert [i.name for i in found] == [
        f"vm{n:02d}" for n in range(50)
    ]  # domains launch did not make are left out
    assert [i.meta.cpus for i in found[:3] if i.meta] == [1, 2, 1]
    assert len({i.meta.ssh_port for i in found if i.meta}) == 50
    assert [i.state for i in found[:2]] == ["running", "stopped"]
    js = found[0].to_json()
    assert js["name"] == "vm00" and js["state"] == "running" and js["host_fingerprint"].startswith("SHA256:")
    assert instances.list_instances(conn, running_only=True)[0].name == "vm00"


@pytest.mark.parametrize("name", ["a b", "a/b", "a<b", "x&y", "'q'", "", "-lead", "ä"])
def test_bad_names_are_refused(conn: Any, launch_env: Path, image: Path, name: str) -> None:
    with pytest.raises(UsageError, match="bad instance name"):
        create(conn, request(launch_env, image, name))
    assert conn.listAllDomains(0) == []


def test_existing_name_is_refused_and_first_instance_untouched(
    conn: Any, launch_env: Path, image: Path
) -> None:
    first = create(conn, request(launch_env, image, "dup"))
    with pytest.raises(InstanceError, match="'dup' exists already"):
        create(conn, request(launch_env, image, "dup"))
    assert instances.get(conn, "dup")[1].meta == first.meta
    assert (launch_env / "run" / "dup" / "scratch.qcow2").exists()


def test_missing_image_is_refused(conn: Any, launch_env: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"'.*nope.iso' is neither a file nor a cached image"):
        create(conn, request(launch_env, tmp_path / "nope.iso", "m"))
    assert conn.listAllDomains(0) == [] and not (launch_env / "run" / "m").exists()


def test_busy_port_is_refused(conn: Any, launch_env: Path, image: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(InstanceError, match=f"port 127.0.0.1:{port} is busy"):
            create(conn, request(launch_env, image, "p", ssh_port=port))
    assert not (launch_env / "run" / "p").exists()


def test_stale_folder_from_interrupted_create_is_replaced(conn: Any, launch_env: Path, image: Path) -> None:
    stale = launch_env / "run" / "again"
    stale.mkdir(parents=True)
    (stale / "context.iso.partial").write_bytes(b"x")
    create(conn, request(launch_env, image, "again"))
    assert sorted(p.name for p in stale.iterdir()) == [
        ".uri",
        "context.iso",
        "id_ed25519",
        "id_ed25519.pub",
        "scratch.qcow2",
    ]


def test_start_moves_a_taken_forward_port(conn: Any, launch_env: Path, image: Path) -> None:
    inst = create(conn, request(launch_env, image, "mv", network="user"))
    instances.stop(conn, "mv", mode="poweroff")
    assert inst.meta is not None
    old = inst.meta.ssh_port
    with socket.socket() as s:
        s.bind(("127.0.0.1", old))
        s.listen()
        moved = instances.start(conn, "mv")
    assert moved.meta is not None and moved.meta.ssh_port != old


def test_metadata_round_trips_through_xml() -> None:
    meta = domain.Metadata(image="/i<&>.iso", ssh_port=2222, host_key="ssh-ed25519 AAAA x", cpus=3)
    spec = domain.DomainSpec(
        name="n", title="t", domain_type="qemu", cpus=3, memory=512, image=Path("/i<&>.iso"),
        image_format="iso", scratch=Path("/s"), context_iso=Path("/c"), console_log=Path("/l"), ssh_port=2222,
    )  # fmt: skip
    xml = domain.render(spec, meta)
    assert domain.metadata_of(xml) == meta
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in xml
    moved = domain.set_forwarded_port(xml, 3333, 22)
    assert "hostfwd=tcp:127.0.0.1:3333-:22" in moved
    assert domain.metadata_of(moved) == domain.Metadata(**{**meta.__dict__, "ssh_port": 3333})


def test_iso_boots_from_ide_cdrom_and_context_is_a_readonly_virtio_disk(
    conn: Any, launch_env: Path, image: Path
) -> None:
    iso = image.with_name("boot.iso")  # the image is told by its magic, not its name
    data = bytearray(image.read_bytes())
    data[0x8001:0x8006] = b"CD001"
    iso.write_bytes(bytes(data))
    create(conn, request(launch_env, iso, "iso"))
    root = ET.fromstring(conn.lookupByName("iso").XMLDesc(0))
    (boot,) = [d for d in root.iter("disk") if d.get("device") == "cdrom"]
    assert boot.find("target").attrib == {"dev": "hdc", "bus": "ide"}  # type: ignore[union-attr]
    assert boot.find("boot").get("order") == "1"  # type: ignore[union-attr]


@pytest.mark.parametrize(("driver", "shared_memory"), [("9p", False), ("virtiofs", True)])
def test_shared_folder(
    conn: Any, launch_env: Path, image: Path, tmp_path: Path, driver: str, shared_memory: bool
) -> None:
    share = tmp_path / "data & more"
    share.mkdir()
    inst = create(conn, request(launch_env, image, "sf", shared_folder=share, shared_folder_driver=driver))
    root = ET.fromstring(conn.lookupByName("sf").XMLDesc(0))
    fs = root.find("devices/filesystem")
    assert fs is not None
    assert fs.find("source").get("dir") == str(share)  # type: ignore[union-attr]
    assert fs.find("target").get("dir") == "sf_sf"  # type: ignore[union-attr]  # as the original: <name>_sf
    assert (root.find("memoryBacking/access") is not None) == shared_memory
    assert inst.meta is not None and inst.meta.shared_folder == str(share)


def test_missing_shared_folder_is_refused(conn: Any, launch_env: Path, image: Path, tmp_path: Path) -> None:
    with pytest.raises(InstanceError, match="shared folder does not exist"):
        create(conn, request(launch_env, image, "nosf", shared_folder=tmp_path / "nope"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InstanceError, match="shared folder is not a folder"):
        create(conn, request(launch_env, image, "nosf", shared_folder=tmp_path / "file"))
    (tmp_path / "root-link").symlink_to("/")
    for root in (Path("/"), tmp_path / "root-link", tmp_path / ".." / ".." / ".." / ".." / ".."):
        with pytest.raises(InstanceError, match="the host's root folder"):
            create(conn, request(launch_env, image, "nosf", shared_folder=root))
    assert conn.listAllDomains(0) == []


def test_libvirt_network_address_comes_from_the_lease(conn: Any, launch_env: Path, image: Path) -> None:
    conn.networkCreateXML(
        "<network><name>default</name><forward mode='nat'/>"
        "<ip address='192.168.122.1' netmask='255.255.255.0'><dhcp>"
        "<range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip></network>"
    )
    inst = create(conn, request(launch_env, image, "net", network="default"))
    assert inst.meta is not None and inst.meta.ssh_port == 0  # nothing forwarded
    root = ET.fromstring(conn.lookupByName("net").XMLDesc(0))
    assert root.find("devices/interface/source").get("network") == "default"  # type: ignore[union-attr]
    addr = instances.address(conn, "net")
    assert addr is not None and addr[0].startswith("192.168.122.") and addr[1] == 22
    instances.stop(conn, "net", mode="poweroff")
    assert instances.address(conn, "net") is None


FOREIGN = "<domain type='test'><name>{}</name><memory>65536</memory><os><type>hvm</type></os></domain>"


def test_a_domain_vanishing_during_the_listing_is_left_out(conn: Any, launch_env: Path, image: Path) -> None:
    """Another client undefines a domain between listAllDomains and reading it: list and create go on."""
    create(conn, request(launch_env, image, "stays"))
    conn.defineXML(
        "<domain type='test'><name>goes</name><memory>65536</memory><os><type>hvm</type></os></domain>"
    )

    class Racing:
        def __getattr__(self, attr: str) -> Any:
            return getattr(conn, attr)

        def listAllDomains(self, flags: int = 0) -> list[Any]:
            listed = conn.listAllDomains(flags)
            conn.lookupByName("goes").undefine()  # gone before launch reads it
            return listed

    assert [i.name for i in instances.list_instances(Racing())] == ["stays"]
    conn.defineXML(
        "<domain type='test'><name>goes</name><memory>65536</memory><os><type>hvm</type></os></domain>"
    )
    assert create(Racing(), request(launch_env, image, "next")).state == "running"


def test_session_domains_name_no_dac_security_driver(conn: Any, launch_env: Path, image: Path) -> None:
    """qemu:///session has no DAC driver and refuses a domain that names one; system keeps it."""
    system = driver_host(conn)
    create(conn, request(launch_env, image, "sys"))
    assert "model='dac'" in conn.lookupByName("sys").XMLDesc(0).replace('"', "'")
    assert not system.session and launch.Host(conn, "qemu:///session").session
    assert (
        launch.Host(conn, "qemu+ssh://u@h/session").session
        and not launch.Host(conn, "qemu:///system").session
    )
    spec = domain.DomainSpec(
        name="s", title="t", domain_type="qemu", cpus=1, memory=256, image=image, image_format="hdd",
        scratch=image, context_iso=image, console_log=image, ssh_port=2222, dac_seclabel=False,
        forwards=((8080, 80),),
    )  # fmt: skip
    xml = domain.render(spec, domain.Metadata(image=str(image)))
    assert "dac" not in xml
    assert "hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:8080-:80" in xml


def test_forwards_at_create_are_kept_and_checked(conn: Any, launch_env: Path, image: Path) -> None:
    spec = dataclasses.replace(request(launch_env, image, "a"), forwards=((18080, 80), (18443, 443)))
    create(conn, spec)
    # (the test driver keeps no <qemu:commandline>: the rendered forwards are checked above)
    (inst,) = launch.list_instances(driver_host(conn))
    assert inst.meta is not None and domain.parse_forwards(inst.meta.forwards) == ((18080, 80), (18443, 443))
    # another instance may not take a port the first one forwards
    with pytest.raises(InstanceError, match=r"port 127\.0\.0\.1:18080 is busy"):
        create(conn, dataclasses.replace(request(launch_env, image, "b"), forwards=((18080, 80),)))
    assert [d.name() for d in conn.listAllDomains(0)] == ["a"]
    # moving the SSH port (start, when it is taken) keeps the user's forwards
    spec2 = domain.DomainSpec(
        name="a", title="t", domain_type="qemu", cpus=1, memory=256, image=image, image_format="hdd",
        scratch=image, context_iso=image, console_log=image, ssh_port=2222, forwards=((18080, 80),),
    )  # fmt: skip
    xml = domain.render(spec2, domain.Metadata(image=str(image), ssh_port=2222, forwards="18080:80"))
    moved = domain.set_forwarded_port(xml, 40000, 22)
    assert "hostfwd=tcp:127.0.0.1:40000-:22,hostfwd=tcp:127.0.0.1:18080-:80" in moved
    assert "<cvml:ssh_port>40000</cvml:ssh_port>" in moved


@pytest.mark.parametrize("bad", ["80:", "x:80", "0:80", "8080:70000", ""])
def test_bad_forward_specs_name_the_flag(bad: str) -> None:
    with pytest.raises(UsageError, match="--forward"):
        launch.parse_forward(bad)
    assert launch.parse_forward("8080:80") == (8080, 80) and launch.parse_forward("8080") == (8080, 8080)


def test_create_on_a_remote_hypervisor_not_reached_over_ssh_is_refused_in_one_line(
    conn: Any, launch_env: Path, image: Path
) -> None:
    """Instances on another machine are reached through it over SSH (test_remote.py): a TLS or TCP
    URI is refused before anything is made."""
    remote = launch.Host(conn, "qemu+tls://hv.example/system", driver_host(conn).accel)
    assert remote.remote == "hv.example" and not launch.Host(conn, "qemu:///system").remote
    assert launch.Host(conn, "qemu+ssh://root@127.0.0.1:2222/system").remote == "127.0.0.1"
    with pytest.raises(LaunchError, match=r"hv\.example.*not an SSH URI"):
        launch.create_instance(request(launch_env, image, "r"), host=remote)
    assert conn.listAllDomains(0) == [] and not (launch_env / "run" / "r").exists()


def test_the_console_log_is_read_as_it_grows(tmp_path: Path) -> None:
    """wait watches the console twice a second: after the first read only what was appended is
    fetched (on a remote hypervisor, through its SSH connection); a log written anew is read anew."""
    log = tmp_path / "console.log"
    log.write_bytes(b"Linux version 6.1\n" + b"x" * 100_000 + b"\n")
    console = instances.ConsoleLog(None, domain.Metadata(image="", console_log=str(log)), limit=64 << 10)
    assert console.read().endswith(b"x\n") and len(console.read()) == 64 << 10
    before = console.fetched
    with open(log, "ab") as f:
        f.write(b"[ 2.0] ucernvm: panic: gone\n")
    assert console.read().endswith(b"x\n[ 2.0] ucernvm: panic: gone\n")
    assert len(console.read()) == 64 << 10
    assert console.fetched - before <= len(b"[ 2.0] ucernvm: panic: gone\n") + console.OVERLAP
    log.write_bytes(b"Linux version 6.1\n" + b"y" * 200_000 + b"\n[ 1.0] ucernvm: boot: again\n")
    assert console.read().endswith(b"y\n[ 1.0] ucernvm: boot: again\n")
    log.write_bytes(b"short\n")  # shorter than what was read: from the start
    assert console.read() == b"short\n"


def _define_with_home(conn: Any, launch_env: Path, image: Path, name: str, folder: Path) -> None:
    spec = domain.DomainSpec(
        name=name, title="t", domain_type="test", cpus=1, memory=256, image=image, image_format="hdd",
        scratch=launch_env / "s", context_iso=launch_env / "c", console_log=launch_env / "l",
    )  # fmt: skip
    conn.defineXML(
        domain.render(spec, domain.Metadata(image=str(image), ssh_port=20000, cpus=1, home=str(folder)))
    )


def test_destroy_removes_only_the_instance_own_folder(
    conn: Any, launch_env: Path, image: Path, tmp_path: Path
) -> None:
    """The domain's metadata is not trusted: a domain defined by someone else (a shared system
    daemon, ``virsh edit``) naming a folder outside the launch home, or a symbolic link in the
    launch home pointing out of it, loses its domain but the folder stays (and is returned)."""
    outside = tmp_path / "elsewhere" / "victim"
    outside.mkdir(parents=True)
    (outside / "precious").write_text("x")
    _define_with_home(conn, launch_env, image, "victim", outside)
    assert instances.destroy(conn, "victim", force=True, home=launch_env) == outside
    assert (outside / "precious").exists() and conn.listAllDomains(0) == []

    (launch_env / "run").mkdir(parents=True)
    link = launch_env / "run" / "victim"
    link.symlink_to(outside)  # the right place, but a link out of the home
    _define_with_home(conn, launch_env, image, "victim", link)
    assert instances.destroy(conn, "victim", force=True, home=launch_env) == link
    assert (outside / "precious").exists()
    link.unlink()

    sneaky = launch_env / "run" / ".." / ".." / "elsewhere" / "victim"  # ".." out of the home
    _define_with_home(conn, launch_env, image, "victim", sneaky)
    assert instances.destroy(conn, "victim", force=True, home=launch_env) == sneaky
    assert (outside / "precious").exists()

    other_host = launch_env / "hosts" / "lxplus.example_22" / "victim"  # another hypervisor's folder
    other_host.mkdir(parents=True)
    (other_host / "id_ed25519").write_text("x")
    _define_with_home(conn, launch_env, image, "victim", other_host)
    assert (
        instances.destroy(conn, "victim", force=True, home=launch_env) == other_host
    )  # test:/// is local: run/ only
    assert (other_host / "id_ed25519").exists()
    uri = "qemu+ssh://u@lxplus.example/system"
    assert instances.instance_folder(launch_env, uri, "victim") == other_host
    assert instances.own_folder(other_host, instances.instance_folder(launch_env, uri, "victim"))
    elsewhere = instances.instance_folder(launch_env, "qemu+ssh://h:2/s", "victim")
    assert not instances.own_folder(other_host, elsewhere)

    own = launch_env / "run" / "victim"  # and the instance's own folder does go
    own.mkdir()
    _define_with_home(conn, launch_env, image, "victim", own)
    assert instances.destroy(conn, "victim", force=True, home=launch_env) is None
    assert not own.exists()


def test_a_domain_with_malformed_metadata_is_listed_broken_and_destroyed(
    conn: Any, launch_env: Path, image: Path
) -> None:
    """Someone edits a domain's launcher metadata (``virsh edit``): that instance is broken, the
    others are listed as ever, and destroy removes it without --force."""
    create(conn, request(launch_env, image, "fine"))
    folder = launch_env / "run" / "edited"
    folder.mkdir(parents=True)
    _define_with_home(conn, launch_env, image, "edited", folder)
    xml = conn.lookupByName("edited").XMLDesc(0)
    ns = xml[xml.index("<", xml.index("<metadata>") + 1) + 1 : xml.index(":instance")]
    xml = xml.replace(f"<{ns}:cpus>1</{ns}:cpus>", f"<{ns}:cpus>abc</{ns}:cpus>")
    xml = xml.replace(f"<{ns}:ssh_port>20000</{ns}:ssh_port>", f"<{ns}:ssh_port>{'9' * 5000}</{ns}:ssh_port>")
    conn.defineXML(xml)
    found = {i.name: i for i in instances.list_instances(conn)}
    assert found["fine"].state == "running" and not found["fine"].broken
    edited = found["edited"]
    assert edited.state == "broken" and edited.meta is not None and edited.meta.cpus == 1
    assert (
        edited.broken == "its launcher metadata is malformed (ssh_port: '99999999999999999999', cpus: 'abc')"
    )
    assert edited.to_json()["state"] == "broken"
    for port in ("70000", "65536"):  # a number, but no port: bind() would raise OverflowError
        meta = domain.Metadata.from_element(
            ET.fromstring(f"<i><ssh_port>{port}</ssh_port><api_port>{port}</api_port></i>")
        )
        assert (meta.ssh_port, meta.api_port, meta.malformed) == (
            0,
            22,
            f"ssh_port: '{port}', api_port: '{port}'",
        )
    assert not instances.port_free(70000) and not instances.port_free(-1)
    instances.destroy(conn, "edited", home=launch_env)  # broken: no --force needed
    assert [d.name() for d in conn.listAllDomains(0)] == ["fine"] and not folder.exists()


def test_a_long_name_gets_a_short_shared_folder_tag(
    conn: Any, launch_env: Path, image: Path, tmp_path: Path
) -> None:
    """QEMU refuses a 9p mount tag over 31 bytes at start: a 63-character name gets ``sf_`` and 12
    hex digits as the tag, the guest still mounts at /mnt/shared/<name>_sf."""
    name = "analysis-run-2026-december-06"  # "<name>_sf" would be 32 bytes
    create(conn, request(launch_env, image, name, shared_folder=tmp_path))
    target = ET.fromstring(conn.lookupByName(name).XMLDesc(0)).find("devices/filesystem/target")
    assert target is not None
    tag = target.get("dir") or ""
    assert tag.startswith("sf_") and len(tag) == 15
    assert domain.shared_mount(name, "9p")[:2] == [tag, f"/mnt/shared/{name}_sf"]
    assert domain.shared_tag("a" * 28) == "a" * 28 + "_sf"  # 31 bytes: the original's tag


@pytest.mark.parametrize("where", ["shared_folder", "seed"])
def test_control_characters_in_paths_for_the_domain_are_one_line(
    conn: Any, launch_env: Path, image: Path, tmp_path: Path, where: str
) -> None:
    odd = tmp_path / "dir\x01x"
    odd.mkdir()
    with pytest.raises(InstanceError) as err:
        create(conn, request(launch_env, image, "ctl", **{where: odd}))
    assert "path has a control character" in err.value.message and err.value.where == str(odd).replace(
        "\x01", "\\x01"
    )
    assert conn.listAllDomains(0) == [] and not (launch_env / "run" / "ctl").exists()
    bad = Path(os.fsdecode(bytes(tmp_path / "x") + b"\xff"))  # not UTF-8: a surrogate in the str
    bad.mkdir()
    with pytest.raises(InstanceError) as err:
        create(conn, request(launch_env, image, "ctl", **{where: bad}))
    assert "path is not valid UTF-8" in err.value.message and err.value.where == f"{tmp_path}/x\\xff"
    assert conn.listAllDomains(0) == [] and not (launch_env / "run" / "ctl").exists()


def test_a_login_key_or_folder_on_record_outside_the_instance_folder_is_broken(
    conn: Any, launch_env: Path, image: Path, tmp_path: Path
) -> None:
    """A shared or remote hypervisor names the user's own key in the metadata: ``ssh -X`` would log
    in with it and replace the known_hosts beside it. The instance is broken instead, and no verb
    that logs in goes near that key."""
    from cernvm_build.errors import SSHError
    from cernvm_build.launch import ready

    create(conn, request(launch_env, image, "keyed"))
    dot_ssh = tmp_path / "dotssh"
    dot_ssh.mkdir()
    (dot_ssh / "id_ed25519").write_text("the user's own key\n")
    (dot_ssh / "known_hosts").write_text("github.com ssh-ed25519 AAAA\n")
    xml = conn.lookupByName("keyed").XMLDesc(0)
    ns = xml[xml.index("<", xml.index("<metadata>") + 1) + 1 : xml.index(":instance")]
    own_key = str(launch_env / "run" / "keyed" / "id_ed25519")
    assert f"<{ns}:client_key>{own_key}</{ns}:client_key>" in xml
    assert not instances.describe(conn.lookupByName("keyed")).broken
    conn.lookupByName("keyed").destroy()  # a running domain shows its live metadata
    for key, home in (
        (dot_ssh / "id_ed25519", launch_env / "run" / "keyed"),  # the key elsewhere
        (dot_ssh / "id_ed25519", dot_ssh),  # the folder too
        (dot_ssh / "keyed" / "id_ed25519", dot_ssh / "keyed"),  # a folder named like it, elsewhere
    ):
        edited = xml.replace(f">{own_key}<", f">{key}<").replace(
            f">{launch_env / 'run' / 'keyed'}<", f">{home}<"
        )
        conn.defineXML(edited)
        inst = instances.describe(conn.lookupByName("keyed"))
        assert inst.state == "broken" and "not" in inst.broken and "instance folder" in inst.broken
        with pytest.raises(SSHError, match="broken"):
            ready.connect(conn, "keyed")
        with pytest.raises(SSHError, match="broken"):
            ready.target(conn, "keyed")  # what OpenSSH's argv for ssh -X is made of
    assert (dot_ssh / "known_hosts").read_text() == "github.com ssh-ed25519 AAAA\n"


def test_another_instances_folder_on_record_is_refused_by_the_verbs_that_log_in(
    conn: Any, launch_env: Path, image: Path, tmp_path: Path
) -> None:
    """The layout alone (``describe``) passes another hypervisor's ``hosts/SLUG/NAME`` or a
    ``run/NAME`` outside the launch home: its key is another instance's, and ``ssh -X`` would rewrite
    the known_hosts there. With the launch home, the folder must be this connection's own."""
    from cernvm_build.errors import SSHError
    from cernvm_build.launch import ready

    create(conn, request(launch_env, image, "keyed"))
    conn.lookupByName("keyed").destroy()
    ready.target(conn, "keyed", home=launch_env)  # its own folder: no error
    xml = conn.lookupByName("keyed").XMLDesc(0)
    own = launch_env / "run" / "keyed"
    for other in (launch_env / "hosts" / "lxplus.example_22" / "keyed", tmp_path / "x" / "run" / "keyed"):
        other.mkdir(parents=True)
        for f in ("id_ed25519", "scratch.qcow2", "context.iso"):  # another instance's files
            (other / f).write_text("another instance's\n")
        conn.defineXML(
            xml.replace(f">{own}/id_ed25519<", f">{other}/id_ed25519<")
            .replace(f">{own}/console.log<", f">{other}/console.log<")
            .replace(f">{own}<", f">{other}<")
        )
        assert not instances.describe(conn.lookupByName("keyed")).broken  # the layout is right
        for verb in (ready.target, ready.connect):
            with pytest.raises(SSHError, match=f"broken: its instance folder on record .* is not {own}$"):
                verb(conn, "keyed", home=launch_env)
        # wait (create's, start --wait's) logs in with the key on record too: the same check first
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(ready, "_check_booting", lambda *a: None)  # the domain is off here
            with pytest.raises(SSHError, match=f"broken: its instance folder on record .* is not {own}$"):
                ready.wait(conn, "keyed", timeout=5, home=launch_env)


def test_a_link_named_like_an_instance_folder_on_record_is_broken(
    conn: Any, launch_env: Path, image: Path, tmp_path: Path
) -> None:
    """The layout (``run/NAME``) and the key beside it are right, but the folder on record is a
    symbolic link (here to the instance's own folder): ``describe`` calls it broken, home or not."""
    create(conn, request(launch_env, image, "keyed"))
    conn.lookupByName("keyed").destroy()
    xml = conn.lookupByName("keyed").XMLDesc(0)
    own = launch_env / "run" / "keyed"
    link = tmp_path / "x" / "run" / "keyed"
    link.parent.mkdir(parents=True)
    link.symlink_to(own)
    conn.defineXML(
        xml.replace(f">{own}/id_ed25519<", f">{link}/id_ed25519<").replace(f">{own}<", f">{link}<")
    )
    broken = instances.describe(conn.lookupByName("keyed")).broken
    assert "its instance folder on record" in broken and "not one launch made" in broken


@pytest.mark.parametrize(
    "host_key", ["", "ssh-ed25519", "ssh-ed25519 !!notbase64", "ssh-rsa AAAAB3NzaC1yc2E=", "ssh-ed25519 AAAA"]
)
def test_a_missing_or_malformed_host_key_on_record_is_broken(
    conn: Any, launch_env: Path, image: Path, host_key: str
) -> None:
    from cernvm_build.errors import SSHError
    from cernvm_build.launch import ready

    create(conn, request(launch_env, image, "hk"))
    dom = conn.lookupByName("hk")
    dom.destroy()  # a running domain shows its live metadata
    xml = dom.XMLDesc(0)
    ns = xml[xml.index("<", xml.index("<metadata>") + 1) + 1 : xml.index(":instance")]
    start = xml.index(f"<{ns}:host_key>")
    end = xml.index(f"</{ns}:host_key>") + len(f"</{ns}:host_key>")
    conn.defineXML(xml[:start] + f"<{ns}:host_key>{host_key}</{ns}:host_key>" + xml[end:])
    inst = instances.describe(conn.lookupByName("hk"))
    assert inst.state == "broken" and "host key" in inst.broken
    with pytest.raises(SSHError, match="broken"):
        ready.connect(conn, "hk")


@pytest.mark.parametrize("elsewhere", ["secret", "/dev/zero", "fifo"])
def test_a_console_log_on_record_outside_the_instance_folder_is_broken_and_not_read(
    conn: Any, launch_env: Path, image: Path, tmp_path: Path, elsewhere: str
) -> None:
    """``console --log`` showed whatever file the metadata named (a key of the user's), /dev/zero
    filled the memory and a FIFO was waited on: the instance is broken and no such file is read."""
    create(conn, request(launch_env, image, "logged"))
    dom = conn.lookupByName("logged")
    dom.destroy()
    own = launch_env / "run" / "logged" / "console.log"
    own.write_text("booting\n")
    host = driver_host(conn)
    assert launch.console_tail(host, "logged") == "booting"
    target = tmp_path / elsewhere if elsewhere != "/dev/zero" else Path(elsewhere)
    if elsewhere == "secret":
        target.write_text("PRIVATE KEY\n")
    elif elsewhere == "fifo":
        os.mkfifo(target)
    conn.defineXML(dom.XMLDesc(0).replace(f">{own}<", f">{target}<"))
    inst = instances.describe(conn.lookupByName("logged"))
    assert inst.state == "broken" and "console log on record" in inst.broken
    assert launch.console_tail(host, "logged") == ""


def test_the_own_console_log_is_read_bounded_and_only_as_a_regular_file(
    conn: Any, launch_env: Path, image: Path
) -> None:
    create(conn, request(launch_env, image, "fifolog"))
    conn.lookupByName("fifolog").destroy()
    own = launch_env / "run" / "fifolog" / "console.log"
    with contextlib.suppress(FileNotFoundError):
        own.unlink()
    os.mkfifo(own)
    inst = instances.describe(conn.lookupByName("fifolog"))
    assert instances.console_tail(conn, inst) == ""
    assert instances.ConsoleLog(conn, inst.meta)._range(0, 10) == b""  # type: ignore[arg-type]


@pytest.mark.parametrize("forwards", ["abc", "1:2:3", "8080:80,", "0:80", "8080:70000", "8080"])
def test_edited_forwards_on_record_make_the_instance_broken_not_every_create_a_traceback(
    conn: Any, launch_env: Path, image: Path, forwards: str
) -> None:
    """``forwards`` is read by start, forward and every create (the ports others have on record): an
    edited value was a ValueError traceback in each, for any instance of the host."""
    create(conn, request(launch_env, image, "edited"))
    dom = conn.lookupByName("edited")
    dom.destroy()
    xml = dom.XMLDesc(0)
    ns = xml[xml.index("<", xml.index("<metadata>") + 1) + 1 : xml.index(":instance")]
    assert f"<{ns}:forwards/>" in xml
    conn.defineXML(xml.replace(f"<{ns}:forwards/>", f"<{ns}:forwards>{forwards}</{ns}:forwards>"))
    inst = instances.describe(conn.lookupByName("edited"))
    assert inst.state == "broken" and f"forwards: {forwards!r}" in inst.broken
    create(conn, request(launch_env, image, "other"))  # the other instance's ports: none
    with pytest.raises(InstanceError, match="broken"):
        launch.start(driver_host(conn), "edited")
    ok = domain.Metadata.from_element(ET.fromstring("<i><forwards>8080:80,1:65535</forwards></i>"))
    assert (ok.forwards, ok.malformed) == ("8080:80,1:65535", "")


def test_a_login_user_beginning_with_a_dash_never_reaches_openssh(
    conn: Any, launch_env: Path, image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ssh -X`` runs OpenSSH with ``USER@HOST``: a ``ssh_user`` on record (a domain edited on a shared
    hypervisor) or a ``user@NAME`` target of ``-oProxyCommand=...`` was an option there, and OpenSSH
    ran that command here, as the user. The record is broken; the target is a one-line usage error."""
    create(conn, request(launch_env, image, "edited"))
    dom = conn.lookupByName("edited")
    dom.destroy()
    xml = dom.XMLDesc(0)
    ns = xml[xml.index("<", xml.index("<metadata>") + 1) + 1 : xml.index(":instance")]
    hostile = f"-oProxyCommand=touch {tmp_path}/ran"
    conn.defineXML(xml.replace(f"<{ns}:ssh_user>root<", f"<{ns}:ssh_user>{hostile}<"))
    conn.lookupByName("edited").create()
    inst = instances.describe(conn.lookupByName("edited"))
    assert inst.state == "broken" and "ssh_user: '-oProxyCommand=touch'" in inst.broken
    with pytest.raises(LaunchError, match="broken"):
        launch.openssh_argv(driver_host(conn), "edited", ["true"], x11="-X", home=launch_env)
    with pytest.raises(UsageError, match="bad user name '-oProxyCommand=touch"):
        launch.openssh_argv(driver_host(conn), f"{hostile}@edited", ["true"], x11="-X", home=launch_env)
    assert not list(tmp_path.glob("ran*"))
    for user in ("cern_user-1", "first.last", "Admin"):  # users as sites name them
        ok = domain.Metadata.from_element(ET.fromstring(f"<i><ssh_user>{user}</ssh_user></i>"))
        assert (ok.ssh_user, ok.malformed) == (user, "")
    from cernvm_build.launch.remote import split_user

    assert split_user("first.last@vm") == ("first.last", "vm")


def test_a_relative_launch_home_is_refused_not_an_instance_broken_at_birth(
    conn: Any, launch_env: Path, image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CERNVM_LAUNCH_HOME=relhome``: the instance was made under the working folder, its folder on
    record was relative, and it was listed broken right after create; each folder another home.
    A relative $XDG_DATA_HOME is ignored, as the XDG base directory spec says."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CERNVM_LAUNCH_HOME", "relhome")
    with pytest.raises(UsageError, match=r"\$CERNVM_LAUNCH_HOME 'relhome' is not an absolute path"):
        create(conn, request(launch_env, image, "rel"))
    assert conn.listAllDomains(0) == [] and not (tmp_path / "relhome").exists()
    monkeypatch.delenv("CERNVM_LAUNCH_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_DATA_HOME", "data")
    home = instances.default_home("qemu:///session")
    assert home == tmp_path / "user" / ".local" / "share" / "cernvm-launch"


def test_list_shows_control_characters_of_an_edited_record_not_sends_them_to_the_terminal(
    launch_env: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """XML allows CR, newline and the C1 controls (U+009B is CSI to xterm) in a domain's metadata,
    which anyone who can define domains on a shared hypervisor may edit: ``list`` wrote them as they
    were (a CR and a forged line over the real state)."""
    import libvirt

    from cernvm_build.cli.launch import main

    uri = "test:///default"
    conn = libvirt.open(uri)  # keeps the test driver's state while main() opens its own
    name = f"ctl-{os.getpid()}"
    try:
        create(conn, request(launch_env, image, name))
        dom = conn.lookupByName(name)
        dom.destroy()
        xml = dom.XMLDesc(0)
        ns = xml[xml.index("<", xml.index("<metadata>") + 1) + 1 : xml.index(":instance")]
        forged = "x\u009b2J&#13;\tstate: running\nother:\tCVM: y"
        conn.defineXML(xml.replace(f"<{ns}:profile/>", f"<{ns}:profile>{forged}</{ns}:profile>"))
        assert "\r" in instances.describe(conn.lookupByName(name)).meta.profile  # type: ignore[union-attr]
        capsys.readouterr()
        assert main(["--connect", uri, "list", name]) == 0
        out = capsys.readouterr().out
        assert "\tprofile: x\\x9b2J\\x0d\tstate: running\\x0aother:\tCVM: y\n" in out  # tabs: fields
        assert "\r" not in out and "\u009b" not in out and "\nother:" not in out
    finally:
        instances.destroy(conn, name, force=True, home=launch_env)
        conn.close()


def test_a_second_hypervisor_never_takes_the_folder_of_an_instance_of_the_same_name(
    launch_env: Path, image: Path, tmp_path: Path
) -> None:
    """qemu:///system and qemu:///session with one launchHomeFolder (or a remote host's two daemons)
    give instances of one name one folder: a create on the second hypervisor removed the first one's
    folder, its running scratch disk, context ISO and login key. A leftover of this hypervisor's own
    (a killed create: the folder names its URI, or is empty) is still replaced."""
    import libvirt

    from cernvm_build.launch import create as create_mod

    uris = []
    for n in (1, 2):
        (tmp_path / f"d{n}.xml").write_text("<node><memory>16777216</memory></node>")
        uris.append(f"test://{tmp_path}/d{n}.xml")
    first, second = (libvirt.open(u) for u in uris)
    create(first, request(launch_env, image, "vm"))
    folder = launch_env / "run" / "vm"
    key = (folder / "id_ed25519").read_bytes()
    assert (folder / create_mod.OWNER).read_text() == uris[0]
    with pytest.raises(InstanceError, match=f"holds the files of instance 'vm' of '{uris[0]}'"):
        create(second, request(launch_env, image, "vm"))
    assert (folder / "id_ed25519").read_bytes() == key and (folder / "scratch.qcow2").exists()
    assert second.listAllDomains(0) == []
    (folder / create_mod.OWNER).unlink()  # an older launch's folder: whose, nobody knows
    with pytest.raises(InstanceError, match="of another hypervisor, or of an older cernvm-launch"):
        create(second, request(launch_env, image, "vm"))
    assert (folder / "id_ed25519").read_bytes() == key
    undefine_all = first.lookupByName("vm")
    undefine_all.destroy()
    undefine_all.undefine()  # the first one's domain gone, its folder left: a killed create's
    (folder / create_mod.OWNER).write_text(uris[0])
    create(first, request(launch_env, image, "vm"))
    assert (folder / "id_ed25519").read_bytes() != key


def test_a_second_create_or_a_destroy_of_a_name_being_created_is_refused(
    conn: Any, launch_env: Path, image: Path
) -> None:
    """Two creates of one name both passed the "exists already" check: the second removed the first's
    folder as a killed create's and started its own instance; the first then failed, and its undo
    removed the second's domain and folder (the one that said "running" left nothing)."""
    import threading

    from cernvm_build.launch.create import STEPS
    from cernvm_build.report import Recorder

    class Pausing(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.paused, self.go = threading.Event(), threading.Event()

        def step(self, message: str) -> None:
            super().step(message)
            if message == STEPS[3]:  # generating keys: the folder is made, no domain yet
                self.paused.set()
                self.go.wait(120)

    first = Pausing()
    made: list[object] = []
    worker = threading.Thread(
        target=lambda: made.append(create(conn, request(launch_env, image, "twin", cpus=1), reporter=first))
    )
    worker.start()
    try:
        assert first.paused.wait(120)
        with pytest.raises(InstanceError, match=r"instance 'twin' is busy: pid \d+ \(create twin\)") as e:
            create(conn, request(launch_env, image, "twin", cpus=2))
        assert e.value.hint and "--name" in e.value.hint
    finally:
        first.go.set()
        worker.join(120)
    inst = made[0]
    assert isinstance(inst, launch.Instance) and inst.meta is not None and inst.meta.cpus == 1
    assert conn.lookupByName("twin").isActive()
    assert (launch_env / "run" / "twin" / "id_ed25519").is_file()
    assert not (launch_env / "run" / ".twin.lock").exists()  # released: nothing left behind

    # create and destroy of one name at once: the second is refused, naming the first
    uri = conn.getURI()
    busy = r"instance 'twin' is busy: pid \d+ \(create twin\)"
    with instances.name_lock(launch_env, uri, "twin", "create"), pytest.raises(InstanceError, match=busy):
        instances.destroy(conn, "twin", force=True, home=launch_env)
    assert conn.lookupByName("twin").isActive()
    busy = r"instance 'new' is busy: pid \d+ \(destroy new\)"
    with instances.name_lock(launch_env, uri, "new", "destroy"), pytest.raises(InstanceError, match=busy):
        create(conn, request(launch_env, image, "new"))
    assert not (launch_env / "run" / "new").exists()
    assert instances.destroy(conn, "twin", force=True, home=launch_env) is None
    assert sorted(p.name for p in (launch_env / "run").iterdir()) == []


def test_the_launch_home_is_placed_by_one_rule_for_the_home_and_the_error_naming_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``default_home`` and ``paths.variable_behind`` (the one-line error naming the variable that put
    the launch home where nothing can be made) read the variables by one rule, ``paths.launch_root``:
    ``variable_behind`` repeated ``default_home``'s order."""
    import errno

    from cernvm_build import paths

    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache"))
    cases = [
        ({"CERNVM_LAUNCH_HOME": "~/launch"}, "CERNVM_LAUNCH_HOME", tmp_path / "user/launch"),
        ({"XDG_DATA_HOME": str(tmp_path / "xdg")}, "XDG_DATA_HOME", tmp_path / "xdg/cernvm-launch"),
        ({"XDG_DATA_HOME": "relative"}, "HOME", tmp_path / "user/.local/share/cernvm-launch"),
        ({}, "HOME", tmp_path / "user/.local/share/cernvm-launch"),
    ]
    for env, variable, where in cases:
        with monkeypatch.context() as m:
            for name in ("CERNVM_LAUNCH_HOME", "XDG_DATA_HOME"):
                m.delenv(name, raising=False)
            for name, value in env.items():
                m.setenv(name, value)
            assert paths.launch_root() == (variable, where)
            assert instances.default_home("qemu:///session") == where
            # (none of them exists: making it failed, the variable is the answer)
            assert paths.variable_behind(str(where), errno.ENOENT) == (variable, where)
