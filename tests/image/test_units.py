"""Pure logic of the bootloader and image areas: user data, cpio, MBR, modules, signature, cmdline."""

from __future__ import annotations

import gzip
import io
import re
import stat
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from cernvm_build.bootloader import disk, userdata
from cernvm_build.bootloader.cpio import Tree, write_newc
from cernvm_build.bootloader.initrd import InitrdInputs, compress, fused_init, level_of
from cernvm_build.bootloader.modules import resolve
from cernvm_build.cvmfs import history
from cernvm_build.errors import BuildError, CvmfsError, IntegrityError
from cernvm_build.image import build, signature
from cernvm_build.site.reference import userdata_keys
from cernvm_build.table import Invalid


# -- user data ---------------------------------------------------------------------------------------
def test_userdata_block_values_are_checked_data() -> None:
    text = (
        "#cloud-config\nhostname: x\ncvmfs_tag=outside-is-ignored\n[ucernvm-begin]\n"
        "cvmfs_server=s1.example.org,10.0.2.2:8000\n  cvmfs_tag = 'v1.2'\nresize_rootfs=OFF\n"
        "# comment\ncvmfs_branch=$(reboot)\nfoo=bar\nnot a pair\ncernvm_path=cvm4\n[ucernvm-end]\n"
        "cvmfs_date=2020-01-01\n"
    )
    p = userdata.parse(text)
    assert p.found
    assert p.values == {
        "cvmfs_server": "s1.example.org,10.0.2.2:8000",
        "cvmfs_tag": "v1.2",
        "resize_rootfs": "0",
        "cernvm_path": "cvm4",
    }
    joined = "\n".join(p.messages)
    assert "cvmfs_branch: invalid value '$(reboot)'" in joined
    assert "unknown key 'foo' ignored" in joined
    assert "not key=value" in joined


def test_userdata_gzip_of_several_members_is_read_whole() -> None:
    """``gzip -c block >> ud.gz`` makes two members; only the first was read (by the initrd and by
    launch alike) and the block in the second was dropped without a word; zcat and cloud-init read all."""
    first = gzip.compress(b"#cloud-config\nhostname: one\n")
    second = gzip.compress(b"[ucernvm-begin]\ncvmfs_tag=two\n[ucernvm-end]\n")
    assert userdata.parse(first + second).values == {"cvmfs_tag": "two"}
    assert "no gzip member" in userdata.parse(first + b"junk").messages[0]
    many = userdata.parse(gzip.compress(b"") * (userdata.MAX_MEMBERS + 1))
    assert "more than 64 members" in many.messages[0]


def test_userdata_gzip_and_render_roundtrip() -> None:
    data = gzip.compress(b"[ucernvm-begin]\ncvmfs_http_proxy=http://squid:3128;DIRECT\n[ucernvm-end]\n")
    p = userdata.parse(data)
    assert userdata.render(p.values) == "cvmfs_http_proxy=http://squid:3128;DIRECT\n"


@pytest.mark.parametrize(
    "line",
    ["cvmfs_server=a b", "cvmfs_server=`id`", "cvmfs_tag=a;rm", "cernvm_path=../etc", "cernvm_inject=a b"],
)
def test_userdata_rejects_shell_metacharacters(line: str) -> None:
    p = userdata.parse(f"[ucernvm-begin]\n{line}\n[ucernvm-end]\n")
    assert p.values == {} and len(p.messages) == 1


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("2021-01-15", "2021-01-15T00:00:00Z"),
        ("2021-01-15T10:30", "2021-01-15T10:30:00Z"),
        ("2021-01-15 10:30:05Z", "2021-01-15T10:30:05Z"),
        ("2021-01-15T10:30:05Z", "2021-01-15T10:30:05Z"),
    ],
)
def test_userdata_date_reaches_the_mount_in_the_one_form_it_reads(written: str, read: str) -> None:
    """pr17b finding 1: the key's short spellings (the launcher's own ``--date 2011-06-01``) went to
    the mount's ``--date`` as written, and every such boot panicked; what the init gets is the
    mount's form, which ``history.parse_date`` takes."""
    p = userdata.parse(f"[ucernvm-begin]\ncvmfs_date={written}\n[ucernvm-end]\n")
    assert p.values == {"cvmfs_date": read}, p.messages
    assert history.parse_date(read) > 0


def test_userdata_date_no_calendar_has_is_reported_and_ignored() -> None:
    p = userdata.parse("[ucernvm-begin]\ncvmfs_date=2021-99-99T99:99:99Z\n[ucernvm-end]\n")
    assert p.values == {}
    assert p.messages == ["line 2: cvmfs_date: '2021-99-99T99:99:99Z' is not a date, ignored"]


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c"])
def test_userdata_a_key_hidden_in_a_comment_is_not_honoured(sep: str) -> None:
    """pr17b finding 2: only a line feed ends a line (as for the shell and the real μCernVM);
    ``# note<U+2028>cvmfs_server=evil`` reads as one comment everywhere else and set the server."""
    p = userdata.parse(
        f"[ucernvm-begin]\n# note{sep}cvmfs_server=evil.example.org\ncvmfs_tag=t1\n[ucernvm-end]\n"
    )
    assert p.values == {"cvmfs_tag": "t1"}


def test_userdata_a_shebang_comment_inside_a_closed_block_ends_nothing() -> None:
    """r17 finding 6: a ``#!`` or ``--`` line ends the block only when no end marker follows (a
    block left open before a script); inside a closed block it is a comment / a bad line."""
    p = userdata.parse("[ucernvm-begin]\n#!not a script\ncvmfs_tag=t1\n[ucernvm-end]\n")
    assert p.values == {"cvmfs_tag": "t1"}, p.messages
    p = userdata.parse("[ucernvm-begin]\ncvmfs_tag=t1\n#!/bin/sh\ncvmfs_branch=x.cern.ch\n")
    assert p.values == {"cvmfs_tag": "t1"} and "the block ends here" in p.messages[0]


@pytest.mark.timeout(60)
def test_userdata_many_boundary_lines_in_a_closed_block_are_read_in_linear_time() -> None:
    """sr17: each ``#!`` line looked for an end marker after it (a copy of the rest): 150,000 of them
    (a ~1 KB gzip) took minutes of the init's CPU; the last end marker is found once now."""
    text = "[ucernvm-begin]\n" + "#!\n" * 150_000 + "cvmfs_tag=t1\n[ucernvm-end]\n"
    assert userdata.parse(text).values == {"cvmfs_tag": "t1"}


def test_userdata_with_a_byte_order_mark_and_crlf_is_read() -> None:
    """pr17b finding 3: user data saved by Notepad (a BOM, CRLF) had its block ignored silently."""
    p = userdata.parse("\ufeff[ucernvm-begin]\r\ncvmfs_tag=t1\r\n[ucernvm-end]\r\n".encode())
    assert p.found and p.values == {"cvmfs_tag": "t1"}


def test_userdata_bad_lines_are_reported_ten_then_counted() -> None:
    """pr17b finding 7: every bad line went to the console (1 MiB of them: 30 MB, ~45 min at 115200
    baud); the first ten are reported, then one line counts the rest."""
    p = userdata.parse(b"[ucernvm-begin]\n" + b"x\n" * 500_000 + b"cvmfs_tag=t1\n[ucernvm-end]\n")
    assert p.values == {"cvmfs_tag": "t1"}
    assert p.messages == [
        *(f"line {n}: not key=value, ignored: 'x'" for n in range(2, 12)),
        "... 499990 more bad lines ignored",
    ]


@pytest.mark.parametrize("start", ["#cloud-config", "#!/bin/sh", "--===============123==", "--abc--"])
def test_userdata_a_block_without_its_end_ends_at_the_next_part(start: str) -> None:
    """A block missing ``[ucernvm-end]`` read a whole following cloud-config as bad lines: it ends
    where another part starts (a cloud-config, a script, a MIME boundary), said once."""
    p = userdata.parse(f"[ucernvm-begin]\ncvmfs_tag=t1\n{start}\ncvmfs_server=other.example\nusers: []\n")
    assert p.values == {"cvmfs_tag": "t1"}
    assert p.messages == [f"line 3: {start!r} before [ucernvm-end]: the block ends here"]


def test_userdata_quota_limit_has_a_maximum() -> None:
    p = userdata.parse("[ucernvm-begin]\ncvmfs_quota_limit=16777217\n[ucernvm-end]\n")
    assert p.values == {} and p.messages == ["line 2: cvmfs_quota_limit: 16777217 is out of range, ignored"]
    assert userdata.parse("[ucernvm-begin]\ncvmfs_quota_limit=16777216\n[ucernvm-end]\n").messages == []


@pytest.mark.parametrize(
    "line",
    [
        "cvmfs_server=h:99999",
        "cvmfs_server=h:8000,a:0",
        "cvmfs_server=h:65536",
        "cvmfs_cdn=h:00",
        "cvmfs_http_proxy=http://p:99999",
        "cvmfs_http_proxy=p:0;DIRECT",
        "cvmfs_http_proxy=http://p:3128:77",
    ],
)
def test_userdata_ports_are_1_to_65535(line: str) -> None:
    p = userdata.parse(f"[ucernvm-begin]\n{line}\n[ucernvm-end]\n")
    assert p.values == {} and len(p.messages) == 1
    with pytest.raises(Invalid) as e:  # launch's --cvmfs-server and the profile's context: the hint
        userdata.check(*line.split("=", 1))
    assert "1..65535" in e.value.hint
    good = "cvmfs_server=h:65535,a:1\ncvmfs_http_proxy=http://p:3128/|q:1;DIRECT"
    assert userdata.parse(f"[ucernvm-begin]\n{good}\n[ucernvm-end]\n").messages == []


def test_keys_table_documents_every_honoured_key() -> None:
    assert {"resize_rootfs", "cvmfs_http_proxy", "cvmfs_server", "cvmfs_branch", "cvmfs_tag"} <= set(
        userdata.KEYS
    )
    assert {"cernvm_path", "cernvm_inject"} <= set(userdata.KEYS)
    assert all(len(h) > 20 for h in userdata.KEYS.values())


def test_init_reads_every_key_through_its_case_table() -> None:
    init = fused_init().decode()
    for key in userdata.KEYS:
        assert f"            {key}) U_{key}=$val ;;" in init, key
    code = [line.split("#", 1)[0] for line in init.splitlines()]
    assert not any(re.search(r"\beval\s|^\s*(\.|source)\s", c) for c in code), "never evaluate user data"


def test_fused_init_is_valid_busybox_sh(tmp_path: Path) -> None:
    (tmp_path / "init").write_bytes(fused_init())
    r = subprocess.run(["busybox", "sh", "-n", str(tmp_path / "init")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    steps = [
        line.split(": ", 1)[0] for line in fused_init().decode().splitlines() if line.startswith("# ---- ")
    ]
    assert steps == sorted(steps) and len(steps) >= 8


# -- cpio ----------------------------------------------------------------------------------------------
def _cpio(tree: Tree, mtime: int = 1234) -> bytes:
    buf = io.BytesIO()
    write_newc(tree.members.values(), buf, mtime)
    return buf.getvalue()


def test_cpio_is_sorted_fixed_and_readable_by_cpio(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 5)
    t1, t2 = Tree(), Tree()
    for t, order in ((t1, (0, 1, 2)), (t2, (2, 1, 0))):
        adds = [
            lambda t=t: t.file("usr/bin/f", f),
            lambda t=t: t.symlink("bin/sh", "busybox"),
            lambda t=t: t.chardev("dev/console", 5, 1),
        ]
        for i in order:
            adds[i]()
    assert _cpio(t1) == _cpio(t2)
    r = subprocess.run(["cpio", "-itv"], input=_cpio(t1), capture_output=True)
    listing = r.stdout.decode()
    assert "dev/console" in listing and "bin/sh -> busybox" in listing and "usr/bin/f" in listing
    assert listing.index("bin/sh") < listing.index("dev/console") < listing.index("usr/bin/f")
    assert b"TRAILER!!!" in _cpio(t1)
    assert len(_cpio(t1)) % 4 == 0


def test_the_initrd_is_lz4_in_the_legacy_frame_the_kernel_unpacks(tmp_path: Path) -> None:
    """The kernel unpacks only lz4's legacy frame (magic 0x184C2102), not the lz4 tool's default one;
    a zstd-level 19 is capped to lz4's highest (12), and the bytes come back whole."""
    assert InitrdInputs.__dataclass_fields__["compression"].default == "lz4"
    payload = b"070701" + bytes(range(256)) * 4000
    packed = compress(payload, "lz4", 19)
    assert packed[:4] == struct.pack("<I", 0x184C2102)
    assert len(packed) < len(payload)
    back = subprocess.run(["lz4", "-dc"], input=packed, capture_output=True, check=True).stdout
    assert back == payload
    assert level_of("lz4", 19) == 12 and level_of("zstd", 19) == 19 and level_of("xz", 19) == 9


def test_an_initrd_the_kernel_cannot_unpack_is_refused(tmp_path: Path) -> None:
    """The kernel's config beside it (boot/config-VERSION) must have the compressor's CONFIG_RD_*:
    one error naming the config; a kernel without a config beside it is taken on trust."""
    from cernvm_build.bootloader.initrd import check_kernel_unpacks
    from cernvm_build.bootloader.kernel import Kernel
    from cernvm_build.errors import BuildError

    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "vmlinuz-6.1.0-t").write_bytes(b"")
    kernel = Kernel(boot / "vmlinuz-6.1.0-t", tmp_path / "modules", "6.1.0-t", "tree")
    check_kernel_unpacks(kernel, "lz4")  # no config: on trust
    (boot / "config-6.1.0-t").write_text("CONFIG_RD_XZ=y\n# CONFIG_RD_LZ4 is not set\nCONFIG_RD_ZSTD=y\n")
    check_kernel_unpacks(kernel, "zstd")
    with pytest.raises(BuildError, match="cannot unpack a lz4 initrd: CONFIG_RD_LZ4 is not set") as e:
        check_kernel_unpacks(kernel, "lz4")
    assert e.value.where == str(boot / "config-6.1.0-t")


def test_cpio_replaces_same_path() -> None:
    t = Tree()
    t.symlink("sbin/mke2fs", "/bin/busybox")
    t.data("sbin/mke2fs", b"real", 0o755)
    assert stat.S_ISREG(t.members["sbin/mke2fs"].mode)


# -- scratch disk partition table --------------------------------------------------------------------
def test_mbr_one_linux_partition_from_1mib() -> None:
    m = disk.mbr(2 * 1024 * 1024)  # 1 GiB in sectors
    assert len(m) == 512 and m[510:] == b"\x55\xaa"
    _status, _, ptype, _, start, count = struct.unpack_from("<B3sB3sII", m, 446)
    assert (ptype, start, start + count) == (0x83, 2048, 2 * 1024 * 1024)
    assert disk.grown(m, 2 * 1024 * 1024) is None, "already fills the disk"
    bigger = disk.grown(m, 8 * 1024 * 1024)
    assert bigger is not None and struct.unpack_from("<II", bigger, 454) == (2048, 8 * 1024 * 1024 - 2048)
    assert disk.grown(bytes(512), 8 * 1024 * 1024) is None, "no partition table: leave it alone"
    capped = disk.mbr(64 * 1024 * 1024, 20480 * 2048)  # resize_rootfs=off on a 32 GiB disk: 20 GiB
    assert struct.unpack_from("<I", capped, 458)[0] == 20480 * 2048
    assert disk.partition_path("/dev/vda") == "/dev/vda1"
    assert disk.partition_path("/dev/nvme0n1") == "/dev/nvme0n1p1"


# -- kernel modules ------------------------------------------------------------------------------------
def test_modules_resolved_from_modinfo_in_dependency_order(tmp_path: Path) -> None:
    kdir = tmp_path / "6.1.0-test" / "kernel"
    (kdir / "fs").mkdir(parents=True)
    (kdir / "fs" / "overlay.ko").write_bytes(b"\x7fELF...\0depends=\0name=overlay\0")
    (kdir / "fs" / "fuse.ko").write_bytes(b"\x7fELF\0name=fuse\0depends=virtio-ring\0")
    (kdir / "fs" / "virtio_ring.ko").write_bytes(b"\0depends=\0")
    (tmp_path / "6.1.0-test" / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    ms = resolve(tmp_path / "6.1.0-test", "6.1.0-test", ("fuse", "overlay", "ext4", "nosuch"))
    assert ms.order == ["kernel/fs/virtio_ring.ko", "kernel/fs/fuse.ko", "kernel/fs/overlay.ko"]
    assert ms.builtin == ["ext4"] and ms.missing == ["nosuch"]


def test_drivers_are_gated_by_their_device_aliases_and_filesystems_always_load(tmp_path: Path) -> None:
    # The initrd loads a driver only when a present device matches one of its aliases (01-modules.sh):
    # a dependency shared with an always-loaded module (fuse for virtiofs) must stay ungated.
    kdir = tmp_path / "6.1.0-test" / "kernel"
    kdir.mkdir(parents=True)
    (kdir / "virtio_ring.ko").write_bytes(b"\0depends=\0")
    (kdir / "virtio_pci.ko").write_bytes(b"\0alias=pci:v00001AF4d*sv*sd*bc*sc*i*\0depends=virtio_ring\0")
    (kdir / "virtio_blk.ko").write_bytes(b"\0alias=virtio:d00000002v*\0depends=virtio_ring\0")
    (kdir / "fuse.ko").write_bytes(b"\0alias=fs-fuse\0alias=char-major-10-229\0depends=\0")
    (kdir / "virtiofs.ko").write_bytes(b"\0alias=fs-virtiofs\0alias=virtio:d0000001Av*\0depends=fuse\0")
    ms = resolve(tmp_path / "6.1.0-test", "6.1.0-test", ("virtio_pci", "virtio_blk", "fuse", "virtiofs"))
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in ms.listing().splitlines())
    assert list(lines) == ms.order
    assert lines["kernel/virtio_pci.ko"] == "pci:v00001AF4d*sv*sd*bc*sc*i*"
    assert lines["kernel/virtio_blk.ko"] == "virtio:d00000002v*"
    assert lines["kernel/virtio_ring.ko"].split() == ["pci:v00001AF4d*sv*sd*bc*sc*i*", "virtio:d00000002v*"]
    assert lines["kernel/fuse.ko"] == "" and lines["kernel/virtiofs.ko"] == "virtio:d0000001Av*"


def test_the_ide_sata_scsi_stack_is_late_unless_an_early_driver_needs_it(tmp_path: Path) -> None:
    # ata_piix (LATE) and libata, used by it alone, are @late; scsi_mod loads early for virtio_scsi's
    # device, else in the late pass; cdrom (LATE) stays early and ungated for isofs
    kdir = tmp_path / "6.1.0-test" / "kernel"
    kdir.mkdir(parents=True)
    (kdir / "scsi_mod.ko").write_bytes(b"\0depends=\0")
    (kdir / "libata.ko").write_bytes(b"\0depends=scsi_mod\0")
    piix = b"pci:v00008086d00007010sv*sd*bc*sc*i*"
    (kdir / "ata_piix.ko").write_bytes(b"\0alias=" + piix + b"\0depends=libata,scsi_mod\0")
    (kdir / "sr_mod.ko").write_bytes(b"\0depends=scsi_mod,cdrom\0")
    (kdir / "virtio_scsi.ko").write_bytes(b"\0alias=virtio:d00000008v*\0depends=scsi_mod\0")
    (kdir / "cdrom.ko").write_bytes(b"\0depends=\0")
    (kdir / "isofs.ko").write_bytes(b"\0alias=fs-iso9660\0depends=cdrom\0")
    (kdir / "fat.ko").write_bytes(b"\0depends=\0")
    (kdir / "vfat.ko").write_bytes(b"\0alias=fs-vfat\0depends=fat\0")
    names = ("ata_piix", "sr_mod", "virtio_scsi", "cdrom", "isofs", "vfat")
    ms = resolve(tmp_path / "6.1.0-test", "6.1.0-test", names)
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in ms.listing().splitlines())
    assert lines["kernel/ata_piix.ko"] == "@late pci:v00008086d00007010sv*sd*bc*sc*i*"
    assert lines["kernel/libata.ko"] == "@late pci:v00008086d00007010sv*sd*bc*sc*i*"
    assert (
        lines["kernel/sr_mod.ko"] == "@late"
        and lines["kernel/scsi_mod.ko"] == "@late-pass virtio:d00000008v*"
    )
    assert lines["kernel/cdrom.ko"] == "" and lines["kernel/isofs.ko"] == ""
    assert lines["kernel/fat.ko"] == lines["kernel/vfat.ko"] == "@late", "vfat: a config drive's other format"
    alone = resolve(tmp_path / "6.1.0-test", "6.1.0-test", names[:2])
    assert "kernel/scsi_mod.ko" in alone.late, "used by LATE modules alone: late too"
    assert "kernel/cdrom.ko" in alone.late
    # This very listing, read by 01-modules.sh with a virtio-scsi disk present (GCE, Proxmox): scsi_mod
    # and virtio_scsi load in the first pass (a gate list that begins with the late pass's pattern is
    # not the late mark), the PIIX stack only when asked for.
    got = _early_and_late(
        tmp_path, ms.listing(), {"virtio": ["virtio:d00000008v00001AF4"], "pci": [piix[:-1].decode()]}
    )
    assert got == (
        ["scsi_mod.ko", "cdrom.ko", "virtio_scsi.ko", "isofs.ko"],
        ["libata.ko", "ata_piix.ko", "sr_mod.ko", "fat.ko", "vfat.ko"],
    ), got


def _early_and_late(
    tmp_path: Path, listing: str, devices: dict[str, list[str]]
) -> tuple[list[str], list[str]]:
    """The modules 01-modules.sh (host busybox, fake sysfs and insmod) loads from ``listing`` with
    ``devices`` (bus -> modaliases) present: in its passes, then in load_late_modules."""
    from cernvm_build.paths import data_dir

    boot = data_dir("bootloader")
    sysbus, log, path = tmp_path / "sys-el", tmp_path / "insmod-el.log", tmp_path / "modules-el"
    for bus, aliases in devices.items():
        for i, alias in enumerate(aliases):
            (sysbus / bus / "devices" / f"d{i}").mkdir(parents=True)
            (sysbus / bus / "devices" / f"d{i}" / "modalias").write_text(alias + "\n")
    path.write_text(listing)
    # start_mount (the mount's Python, started after the first pass) is not this test's: a no-op
    fake = f'insmod() {{ echo "${{1##*/}}" >>{log}; }}; uname() {{ echo 6.1.0-t; }}; start_mount() {{ :; }}; '
    script = (
        f". {boot / 'init.head.sh'}; MODULES_LIST={path}; SYS_BUS={sysbus}; {fake}"
        f". {boot / 'init.d' / '01-modules.sh'}; echo late >>{log}; load_late_modules"
    )
    r = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    early, late = log.read_text().split("late\n")
    return early.split(), late.split()


def test_the_initrd_loads_the_drivers_of_present_devices_in_passes(tmp_path: Path) -> None:
    """01-modules.sh on the host's busybox, with a fake sysfs and insmod: a driver loads when a present
    device matches one of its patterns, a bus driver's devices bring their own drivers in a second
    pass, a pass that finds the last pass's devices again ends without scanning the list, a failing
    module is tried once, and load_other_modules loads the rest for an OS without a module tree. The
    list is read once and a line's answer reused for the next line with the same patterns: failover's
    'absent' in the first pass must not stick to virtio_net in the second."""
    from shutil import rmtree

    from cernvm_build.paths import data_dir

    boot = data_dir("bootloader")
    sysbus, log = tmp_path / "sys", tmp_path / "insmod.log"
    for dev, alias in (
        ("0000:00:01.1", "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80"),
        ("0000:00:03.0", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
    ):
        (sysbus / "pci" / "devices" / dev).mkdir(parents=True)
        (sysbus / "pci" / "devices" / dev / "modalias").write_text(alias + "\n")
    virtio = "pci:v00001AF4d*sv*sd*bc*sc*i*"
    ata = "pci:v00008086d00007010sv*sd*bc*sc*i* pci:v*d*sv*sd*bc01sc01i*"
    listing = tmp_path / "modules"
    # virtio_pci brings the virtio device of the PCI one; broken.ko fails (absent hardware)
    fake = (
        f'insmod() {{ echo "$1" >>{log}; case $1 in *broken.ko) return 1 ;; *virtio_pci.ko) '
        f"mkdir -p {sysbus}/virtio/devices/virtio0; echo virtio:d00000001v00001AF4 "
        f">{sysbus}/virtio/devices/virtio0/modalias ;; esac; }}; uname() {{ echo 6.1.0-t; }}; "
        "start_mount() { :; }; "  # the mount's Python, started after the first pass: not this test's
    )
    script = (
        f". {boot / 'init.head.sh'}; MODULES_LIST={listing}; SYS_BUS={sysbus}; {fake}"
        f". {boot / 'init.d' / '01-modules.sh'}; "
        'd=$(printf " \\t\\n."); [ "$IFS" = "${d%.}" ] && echo IFS-kept; echo late >>' + str(log) + "; "
        "load_late_modules && echo late-loaded; load_late_modules || echo late-once; "
        "echo second; load_other_modules"
    )
    first = ["virtio_ring.ko", "virtio_pci.ko", "broken.ko", "fuse.ko"]
    # vmxnet3 (no device) last: the first pass's last answer (failover: absent) is the second pass's
    # first question; without it, vmxnet3 is what load_other_modules loads
    for extra in ("", "kernel/vmxnet3.ko pci:v000015ADd000007B0sv*sd*bc*sc*i*\n"):
        listing.write_text(
            f"kernel/virtio_ring.ko {virtio} virtio:d00000001v*\nkernel/virtio_pci.ko {virtio}\n"
            f"kernel/scsi_mod.ko virtio:d00000008v* @late-pass\nkernel/libata.ko @late {ata}\n"
            f"kernel/ata_piix.ko @late {ata}\nkernel/sr_mod.ko @late\n"
            "kernel/broken.ko pci:v00008086d*sv*sd*bc*sc*i*\nkernel/fuse.ko\n\n"
            "kernel/failover.ko virtio:d00000001v*\nkernel/virtio_net.ko virtio:d00000001v*\n" + extra
        )
        log.unlink(missing_ok=True)
        rmtree(sysbus / "virtio", ignore_errors=True)
        r = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        early, late = log.read_text().split("late\n")
        paths = early.split() + late.split()
        assert all(p.startswith("/lib/modules/6.1.0-t/kernel/") for p in paths)
        assert [p.split("/")[-1] for p in early.split()] == [*first, "failover.ko", "virtio_net.ko"]
        # the @late lines on demand, once, gated as the others (the PIIX controller is present)
        late_ones = ["scsi_mod.ko", "libata.ko", "ata_piix.ko", "sr_mod.ko"]
        assert [p.split("/")[-1] for p in late.split()] == late_ones + (["vmxnet3.ko"] if extra else [])
        out = r.stdout.split("second")
        assert "ucernvm: modules: 5 modules loaded" in out[0] and "IFS-kept" in out[0]
        # the third pass sees the second's devices (virtio_net brought none): no third scan; the
        # late pass's drivers bring none either (the fake insmod makes no device for them)
        assert "the others; list scans: 2)" in out[0] and "controllers (list scans: 1)" in out[0]
        assert "modules: 4 more loaded for the disks" in out[0]
        assert "late-loaded" in out[0] and "late-once" in out[0]
        assert f"ucernvm: boot: modules: {1 if extra else 0} more loaded for the OS" in out[1]


def test_the_context_drive_is_looked_for_on_late_disks_only_when_the_others_have_none(tmp_path: Path) -> None:
    """03-context-drive.sh on the host's busybox with fake disks: iso9660 user data on a virtio disk
    is taken without the late modules; on a CD, or on a vfat disk (vfat is late too), they load
    (once) and every disk is looked at again. A type the kernel does not list yet (vfat before the
    late modules) is not tried: the kernel would run its modprobe for it, once per disk."""
    import shutil

    from cernvm_build.paths import data_dir

    boot = data_dir("bootloader")
    mnt, log, fstypes = tmp_path / "mnt", tmp_path / "calls.log", tmp_path / "filesystems"
    dev = tmp_path / "dev"
    mnt.mkdir()
    for where, fs in (("vdb", "iso9660"), ("sr0", "iso9660"), ("vda", "vfat")):
        fstypes.write_text("nodev\tsysfs\n\text4\n\tiso9660\n")  # as /proc/filesystems lists them
        # the disks present before the late drivers (vda: the scratch disk; its partition and the
        # other nodes are no disks to look at), sda and sr0 after them
        shutil.rmtree(dev, ignore_errors=True)
        dev.mkdir()
        for name in ("vda", "vda1", "vdb", "null", "sr", "xvdaa"):
            (dev / name).write_text("")
        fake = (
            f"LATE=; DEV_DIR={dev}; mkdir() {{ :; }}; "
            f"umount() {{ rm -rf {mnt}/openstack; }}; "
            f'mount() {{ echo "$2 $5" >>{log}; [ "$5" = /dev/{where} ] && [ "$2" = {fs} ] || return 1; '
            f'[ $2 = iso9660 ] || [ -n "$LATE" ] || return 1; '
            f"command mkdir -p {mnt}/openstack/latest; echo data >{mnt}/openstack/latest/user_data; }}; "
            f"copy_user_data() {{ :; }}; "
            f'load_late_modules() {{ [ -z "$LATE" ] || return 1; LATE=1; echo late >>{log}; '
            f'touch {dev}/sda {dev}/sr0; printf "\\tvfat\\n" >>{fstypes}; }}; '
        )
        script = (
            f". {boot / 'init.head.sh'}; CONTEXT_MNT={mnt}; FILESYSTEMS={fstypes}; NET_IF=; {fake}"
            f". {boot / 'init.d' / '03-context-drive.sh'}; echo source=$CONTEXT_SRC"
        )
        log.unlink(missing_ok=True)
        r = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert f"source=/dev/{where}:openstack/latest/user_data" in r.stdout
        calls = log.read_text().splitlines()
        first = ["iso9660 /dev/vda", "iso9660 /dev/vdb"]  # no vfat: not a type the kernel has yet
        if where == "vdb":
            assert calls == first
        elif where == "sr0":
            assert calls == [*first, "late", "iso9660 /dev/sda", "vfat /dev/sda", "iso9660 /dev/sr0"]
        else:
            again = [f"{f} /dev/{d}" for d in ("sda", "sr0") for f in ("iso9660", "vfat")]
            assert calls == [*first, "late", *again, "iso9660 /dev/vda", "vfat /dev/vda"]


def _devices_step(tmp_path: Path, fake: str) -> tuple[str, list[str]]:
    """04-devices.sh on the host's busybox, its files under /tmp and /sys/block in ``tmp_path``,
    with the shell functions ``fake`` (which append to ``tmp_path/calls.log``): its stdout and calls."""
    from cernvm_build.paths import data_dir

    boot = data_dir("bootloader")
    frag = (boot / "init.d" / "04-devices.sh").read_text()
    (tmp_path / "04.sh").write_text(frag.replace("/tmp/", f"{tmp_path}/"))
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    script = (
        f". {boot / 'init.head.sh'}; SYS_BLOCK={tmp_path}/block; {fake} . {tmp_path / '04.sh'}; "
        "echo root=$ROOT_DEV"
    )
    r = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout, log.read_text().splitlines()


def test_the_scratch_disk_is_looked_for_on_late_disks_when_the_others_have_no_uroot(tmp_path: Path) -> None:
    """04-devices.sh with fakes: UROOT on a SATA disk is found once the late drivers are loaded; UROOT
    on a virtio disk is found without them."""
    log = tmp_path / "calls.log"
    (tmp_path / "block" / "loop0").mkdir(parents=True)
    (tmp_path / "block" / "vda").mkdir()
    for where in ("vda1", "sda1"):
        fake = (  # (a disk is there: no wait; e2fsck's lines and df's free MB read by the shell)
            f"mkdir() {{ :; }}; df() {{ echo; echo x x x 100; }}; sleep() {{ echo sleep >>{log}; }}; "
            "fsck() { printf 'UROOT: clean\\nsecond line\\n'; }; "
            f'mount() {{ echo "mount $*" >>{log}; }}; alias /sbin/e2fsck=fsck; '
            f"findfs() {{ case {where} in vda1) echo /dev/vda1 ;; "
            f'*) [ -z "$LATE" ] || echo /dev/{where} ;; esac; }}; '
            f'load_late_modules() {{ [ -z "$LATE" ] || return 1; LATE=1; echo late >>{log}; }}; '
        )
        out, calls = _devices_step(tmp_path, fake)
        assert f"root=/dev/{where}" in out, out
        assert "devices: e2fsck: UROOT: clean second line \n" in out and ", 100 MB free\n" in out, out
        mounted = f"mount -t ext4 /dev/{where} /root.rw"
        assert calls == [*(["late"] if where == "sda1" else []), mounted], calls


def test_a_first_boot_on_the_launchers_scratch_disk_loads_no_late_driver(tmp_path: Path) -> None:
    """04-devices.sh with a blank virtio disk of cernvm-launch's serial (disk.SCRATCH_SERIAL): the
    first boot partitions it without the IDE/SATA/SCSI drivers; without the serial they come first."""
    from cernvm_build.bootloader.disk import SCRATCH_SERIAL

    log = tmp_path / "calls.log"
    for named in (True, False):
        for d, serial in (("vda", "data"), ("vdb", SCRATCH_SERIAL if named else "other")):
            (tmp_path / "block" / d).mkdir(parents=True, exist_ok=True)
            (tmp_path / "block" / d / "serial").write_text(serial + "\n")
        fake = (
            f"mkdir() {{ :; }}; df() {{ echo; echo x x x 100; }}; sleep() {{ :; }}; findfs() {{ :; }}; "
            f'mount() {{ echo "mount $*" >>{log}; }}; alias /sbin/mke2fs="echo >>{log} mke2fs"; '
            f'py() {{ echo "py $*" >>{log}; echo /dev/vdb1; }}; '
            f'load_late_modules() {{ [ -z "$LATE" ] || return 1; LATE=1; echo late >>{log}; }}; '
        )
        out, calls = _devices_step(tmp_path, fake)
        assert "root=/dev/vdb1" in out, out
        assert calls[0] == ("py cernvm_build.bootloader.disk first-boot" if named else "late"), calls
        assert ("empty disk named by cernvm-launch (/dev/vdb)" in out) == named, out


def test_the_first_empty_disk_is_the_launchers_scratch_disk_if_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """disk.find_empty: name order, except that the disk of SCRATCH_SERIAL comes first."""
    block = tmp_path / "block"
    for d, serial in (("sda", None), ("vda", "x"), ("vdb", disk.SCRATCH_SERIAL), ("sr0", None)):
        (block / d).mkdir(parents=True)
        for k, v in (("ro", "0"), ("removable", "0"), ("size", "8388608")):
            (block / d / k).write_text(v + "\n")
        if serial is not None:
            (block / d / "serial").write_text(serial + "\n")
    monkeypatch.setattr(disk, "is_empty", lambda dev: True)
    assert disk.find_empty(block) == "/dev/vdb"
    (block / "vdb" / "serial").write_text("other\n")
    assert disk.find_empty(block) == "/dev/sda"


# -- signature block -------------------------------------------------------------------------------------
def _signer(
    tmp_path: Path, cn: str = "test signer", years: tuple[int, int] = (2025, 2035)
) -> signature.Signer:
    """A self-signed signer valid from January 1st of ``years[0]`` to that of ``years[1]``."""
    import datetime

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    start, end = (datetime.datetime(y, 1, 1, tzinfo=datetime.UTC) for y in years)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    kp, cp = tmp_path / f"{cn}.key", tmp_path / f"{cn}.crt"
    kp.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return signature.load_signer(kp, cp)


def test_signature_roundtrip_tamper_and_wrong_signer(tmp_path: Path) -> None:
    img = tmp_path / "x.hdd"
    img.write_bytes(b"\xaa" * 100_000)
    s = _signer(tmp_path)
    with open(img, "ab") as f:
        f.write(signature.trailer_bytes(img, {"snapshot": "abc", "ucernvm-version": "2026.11-1"}, s))
    t = signature.verify(img, s.certificate)
    assert t.metadata["snapshot"] == "abc" and t.image_size == 100_000
    other = _signer(tmp_path, "someone else")
    with pytest.raises(IntegrityError, match="not by the given certificate"):
        signature.verify(img, other.certificate)
    data = bytearray(img.read_bytes())
    data[10] ^= 1
    img.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="modified after signing"):
        signature.verify(img)


def _signed_image(tmp_path: Path, s: signature.Signer, meta: dict[str, object], name: str = "x.hdd") -> Path:
    img = tmp_path / name
    img.write_bytes(b"\xaa" * 4096)
    with open(img, "ab") as f:
        f.write(signature.trailer_bytes(img, {"snapshot": "abc", **meta}, s))
    return img


def test_the_certificate_is_checked_at_the_image_s_recorded_build_time(tmp_path: Path) -> None:
    """The signing time of a reproducible image is its build time, recorded under the signature: the
    certificate (2025-2035) must be valid then; the clock's time only makes an expiry since a warning."""
    import datetime

    s = _signer(tmp_path)
    good = _signed_image(tmp_path, s, {signature.BUILD_TIME: 1796000000})  # 2026-11-30
    t = signature.verify(good, s.certificate)
    v = signature.validity(t)
    assert v is not None and v.valid_when_signed and v.build_time == "2026-11-30T00:53:20Z"
    assert v.not_before == "2025-01-01T00:00:00Z" and v.not_after == "2035-01-01T00:00:00Z"
    later = signature.validity(t, now=datetime.datetime(2040, 1, 1, tzinfo=datetime.UTC))
    assert later is not None and later.expired_on == "2035-01-01" and v.expired_on is None
    before = _signed_image(tmp_path, s, {signature.BUILD_TIME: 1700000000}, "before.hdd")  # 2023-11-14
    message = (
        "signed with a certificate valid from 2025-01-01T00:00:00Z to 2035-01-01T00:00:00Z, not at the "
        "image's build time 2023-11-14T22:13:20Z"
    )
    with pytest.raises(IntegrityError, match=message):
        signature.verify(before, s.certificate)
    absurd = _signed_image(tmp_path, s, {signature.BUILD_TIME: 10**15}, "absurd.hdd")
    with pytest.raises(IntegrityError, match=f"build time {10**15}"):
        signature.verify(absurd)
    # a block that records no build time (an older toolkit): checked against no time, and said so
    old = _signed_image(tmp_path, s, {}, "old.hdd")
    v = signature.validity(signature.verify(old))
    assert v is not None and v.valid_when_signed is None and v.build_time is None


def test_image_verify_warns_of_a_certificate_expired_since_the_signing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from cernvm_build.cli.main import main

    s = _signer(tmp_path, "old signer", years=(2010, 2015))
    img = _signed_image(tmp_path, s, {signature.BUILD_TIME: 1340000000})  # 2012-06-18
    crt = str(tmp_path / "old signer.crt")
    assert main(["image", "verify", str(img), "--cert", crt]) == 0
    err = capsys.readouterr().err
    assert "valid when signed (2012-06-18T06:13:20Z); expired on 2015-01-01" in err, err
    assert main(["image", "verify", str(img), "--cert", crt, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["certificate_validity"] == {
        "not_before": "2010-01-01T00:00:00Z",
        "not_after": "2015-01-01T00:00:00Z",
        "build_time": "2012-06-18T06:13:20Z",
        "valid_when_signed": True,
        "expired_on": "2015-01-01",
    }
    old = _signed_image(tmp_path, s, {}, "old.hdd")
    assert main(["image", "verify", str(old), "--cert", crt]) == 0
    assert "records no build time" in capsys.readouterr().err


def test_signing_with_a_certificate_not_valid_at_the_build_time_is_refused_before_any_work(
    tmp_path: Path,
) -> None:
    from cernvm_build import profile
    from cernvm_build.context import BuildContext

    s = _signer(tmp_path)  # 2025-2035
    out, cache = tmp_path / "out", tmp_path / "cache"
    message = (
        "the certificate is valid from 2025-01-01T00:00:00Z to 2035-01-01T00:00:00Z, not at the "
        r"image's build time 2023-11-14T22:13:20Z \(SOURCE_DATE_EPOCH\)"
    )
    with pytest.raises(BuildError, match=message) as e:
        build.build_image(
            profile.load("demo"),
            out,
            formats=["iso"],
            signer=s,
            ctx=BuildContext(epoch=1700000000, cache=cache),
        )
    assert e.value.where == "--sign-cert" and e.value.hint
    assert not out.exists() and not cache.exists()


def test_signing_without_a_build_time_says_to_set_source_date_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``image build`` without SOURCE_DATE_EPOCH builds at 1970-01-01, which no certificate covers: the
    one line says that no build time was given and how to give one (the --help example sets it)."""
    from cernvm_build.cli.main import main

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.setenv("CERNVM_CACHE_DIR", str(tmp_path / "cache"))
    _signer(tmp_path)  # writes "test signer.key" and "test signer.crt"
    key, crt = tmp_path / "test signer.key", tmp_path / "test signer.crt"
    out = tmp_path / "out"
    argv = ["image", "demo", "--format", "iso", "--out", str(out)]
    argv += ["--sign-key", str(key), "--sign-cert", str(crt)]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "build time 1970-01-01T00:00:00Z" in err and "SOURCE_DATE_EPOCH=$(date +%s)" in err
    assert not out.exists()


def test_unsigned_and_foreign_files(tmp_path: Path) -> None:
    img = tmp_path / "x.iso"
    img.write_bytes(b"\0" * 70_000)
    with pytest.raises(IntegrityError, match="no μCernVM signature block"):
        signature.read_trailer(img)
    with open(img, "ab") as f:
        f.write(signature.trailer_bytes(img, {"snapshot": "h"}, None))
    assert signature.read_trailer(img).signature is None
    with pytest.raises(IntegrityError, match="not signed"):
        signature.verify(img)


def _hostile_trailer(img: Path, meta: bytes, sig: bytes) -> Path:
    img.write_bytes(b"\0" * 4096 + meta.ljust(signature.BLOCK, b"\0") + sig.ljust(signature.BLOCK, b"\0"))
    return img


@pytest.mark.parametrize(
    "meta, sig",
    [
        (b"[" * 30_000, b"{}"),  # nested past json's depth: RecursionError
        (b'{"magic": "ucernvm-signature"}', b'{"a": ' + b"[" * 30_000),
        (b'{"magic": "ucernvm-signature", "v": NaN}', b"{}"),  # --json would print NaN, no JSON
        (b'{"magic": "ucernvm-signature"}', b'{"signature": Infinity}'),
    ],
    ids=["deep-metadata", "deep-signature", "nan", "infinity"],
)
def test_a_hostile_trailer_is_no_signature_block(tmp_path: Path, meta: bytes, sig: bytes) -> None:
    img = _hostile_trailer(tmp_path / "x.iso", meta, sig)
    with pytest.raises(IntegrityError, match="no μCernVM signature block"):
        signature.read_trailer(img)


def test_a_certificate_parsed_only_in_part_is_damaged(tmp_path: Path) -> None:
    """The certificate is parsed lazily: its subject (shown by inspect) or key type (verify) must be
    refused as a damaged block, not raise later."""
    import base64
    import json

    der = _signer(tmp_path, "MARKERCN").certificate.public_bytes(serialization.Encoding.DER)
    meta = json.dumps({"magic": signature.MAGIC}).encode()
    rsa_oid = bytes.fromhex("06092a864886f70d010101")
    for bad in (
        der.replace(b"MARKERCN", b"\xff\xfe\x80RKERCN"),
        der.replace(rsa_oid, rsa_oid[:-1] + b"\x63"),
    ):
        assert bad != der
        sig = {
            "algorithm": signature.ALGORITHM,
            "certificate": base64.b64encode(bad).decode(),
            "signature": "AA==",
        }
        img = _hostile_trailer(tmp_path / "x.iso", meta, json.dumps(sig).encode())
        with pytest.raises(IntegrityError, match="signature block is damaged"):
            signature.read_trailer(img)


def test_a_folder_is_no_image(tmp_path: Path) -> None:
    from cernvm_build.errors import UsageError

    (tmp_path / "big").mkdir()
    for i in range(2000):  # a folder whose size passes the trailer's
        (tmp_path / "big" / f"{i:040d}").touch()
    assert (tmp_path / "big").stat().st_size >= signature.TRAILER
    with pytest.raises(UsageError, match="not a regular file"):
        signature.read_trailer(tmp_path / "big")


def test_an_image_verify_error_names_the_image_as_its_where_in_json(tmp_path: Path) -> None:
    """lf34a: the image was only inside the message, so ``--json``'s ``where`` was null."""
    import json
    import subprocess
    import sys

    small = tmp_path / "small.iso"
    small.write_bytes(b"x" * 100)
    for args in (["verify", str(small)], ["verify", str(tmp_path)], ["inspect", str(small)]):
        r = subprocess.run(
            [sys.executable, "-m", "cernvm_build.cli.main", "image", *args, "--json"],
            capture_output=True,
            text=True,
        )
        doc = json.loads(r.stdout or r.stderr)
        assert r.returncode != 0 and doc["where"] == args[1], (r.stdout, r.stderr)
        assert not doc["message"].startswith(args[1]), doc


def test_key_and_certificate_files_are_bounded_regular_files(tmp_path: Path) -> None:
    """``--cert /dev/zero`` filled the memory and a FIFO was waited on for ever (``--sign-key`` and
    ``--sign-cert`` too): each is a one-line error naming the flag."""
    import os

    s = _signer(tmp_path, "ok")
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    big = tmp_path / "big.pem"
    big.write_bytes(b"\0" * (signature.MAX_PEM + 1))
    for bad, why in (
        (Path("/dev/zero"), "not a regular file"),
        (fifo, "not a regular file"),
        (big, "larger than"),
        (tmp_path / "missing.pem", "cannot read it: No such file or directory$"),  # pr24c finding 7
    ):
        with pytest.raises(BuildError, match=why) as e:
            signature.load_certificate(bad)
        assert e.value.where == "--cert"
        assert e.value.hint and "signer's certificate" in e.value.hint  # pr19d finding 5: no hint
        with pytest.raises(BuildError, match=why) as e:
            signature.load_signer(bad, tmp_path / "ok.crt")
        assert e.value.where == "--sign-key"
        with pytest.raises(BuildError, match=why) as e:
            signature.load_signer(tmp_path / "ok.key", bad)
        assert e.value.where == "--sign-cert"
    assert signature.load_certificate(tmp_path / "ok.crt") == s.certificate


def test_key_and_certificate_must_match(tmp_path: Path) -> None:
    a, b = _signer(tmp_path, "a"), _signer(tmp_path, "b")
    assert a.certificate != b.certificate
    with pytest.raises(BuildError, match="does not belong"):
        signature.load_signer(tmp_path / "a.key", tmp_path / "b.crt")


# -- formats and command line ------------------------------------------------------------------------
def test_formats_parse_and_reject_unknown() -> None:
    assert build.parse_formats("qcow2, iso", []) == ["iso", "qcow2"]
    assert build.parse_formats(None, ["hdd"]) == ["hdd"]
    with pytest.raises(BuildError, match="unknown image format 'ova'") as e:
        build.parse_formats("iso,ova", [])
    assert e.value.hint and "qcow2" in e.value.hint


def test_kernel_cmdline_carries_repository_path_servers_tag() -> None:
    from cernvm_build import profile

    p = profile.load("el7")
    line = build.kernel_cmdline(p)
    assert f"cvmfs_repos={p.cvmfs.repository}" in line
    assert "cvmfs_server=cvmfs-stratum-one.cern.ch," in line
    assert "console=ttyS0" in line
    assert "cryptomgr.notests" in line.split()  # no crypto self-tests before /init (~6 s under TCG)
    if p.cvmfs.path.strip("/"):
        assert f"cernvm_path={p.cvmfs.path.strip('/')}" in line
    if p.cvmfs.snapshot.tag:
        assert f"cvmfs_repository_tag={p.cvmfs.snapshot.tag}" in line


# -- kernel from a given tree ------------------------------------------------------------------------
def test_kernel_from_tree_and_its_errors(tmp_path: Path) -> None:
    from cernvm_build.bootloader.kernel import kernel_from_tree

    (tmp_path / "lib" / "modules" / "6.9.0-x" / "kernel").mkdir(parents=True)
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "vmlinuz-6.9.0-x").write_bytes(b"MZ kernel")
    k = kernel_from_tree(tmp_path)
    assert (k.version, k.origin, k.vmlinuz.name) == ("6.9.0-x", "tree", "vmlinuz-6.9.0-x")
    assert kernel_from_tree(tmp_path / "lib" / "modules" / "6.9.0-x", k.vmlinuz).modules == k.modules
    (tmp_path / "boot" / "vmlinuz-6.9.0-x").unlink()
    with pytest.raises(BuildError, match="kernel image not found"):
        kernel_from_tree(tmp_path)
    (tmp_path / "lib" / "modules" / "6.10.0-y").mkdir()
    with pytest.raises(BuildError, match="exactly one lib/modules/<version> folder, found 2"):
        kernel_from_tree(tmp_path)


def test_missing_image_is_a_one_line_error(tmp_path: Path) -> None:
    from cernvm_build.errors import UsageError

    with pytest.raises(UsageError, match="No such file"):
        signature.read_trailer(tmp_path / "nope.iso")
    # pr19d finding 15: a folder was "too small to carry a signature block" (exit 6, an integrity failure)
    with pytest.raises(UsageError, match="not a regular file"):
        signature.read_trailer(tmp_path)


def test_the_user_data_reference_comes_from_the_bootloaders_table() -> None:
    page = userdata_keys()
    for s in userdata.SETTINGS:
        assert f"| `{s.key}` |" in page, s.key
    assert "0..9999" in page and "`cernvm-launch create --snapshot`" in page and "on/off" in page


def test_context_user_data_over_1_mib_is_refused_not_copied(tmp_path: Path) -> None:
    """A context disk's user-data file is copied into the initramfs's RAM with a cap (a hostile disk
    could hold gigabytes): over 1 MiB it is refused with a console line, at 1 MiB it is copied."""
    from cernvm_build.paths import data_dir

    head = data_dir("bootloader") / "init.head.sh"
    big, ok = tmp_path / "big", tmp_path / "ok"
    with open(big, "wb") as f:
        f.truncate(8 << 30)  # 8 GiB, sparse
    ok.write_bytes(b"x" * (1 << 20))
    script = f'. {head}; copy_user_data {big} {tmp_path}/out1; echo "rc=$?"; '
    script += f'copy_user_data {ok} {tmp_path}/out2; echo "rc=$?"'
    r = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert "rc=1" in r.stdout and f"ucernvm: context: {big}: user data over 1 MiB, ignored" in r.stdout
    assert not (tmp_path / "out1").exists()
    assert r.stdout.rstrip().endswith("rc=0") and (tmp_path / "out2").read_bytes() == ok.read_bytes()


def _package_root() -> str:
    """For the host's Python in a test's shell: this checkout's package, not an installed one."""
    import cernvm_build

    return str(Path(cernvm_build.__file__).resolve().parent.parent)


def test_a_later_boot_reads_unchanged_user_data_without_the_parser(tmp_path: Path) -> None:
    """The init's Python start for the user data (1-2 s under emulation) happens once per user data and
    runtime: a later boot with the same user data assigns the same checked values from the lines an
    earlier boot kept on the scratch disk; changed user data or another runtime is parsed again, and
    so is user data whose parse failed."""
    import sys

    from cernvm_build.paths import data_dir

    head = data_dir("bootloader") / "init.head.sh"
    keep, runs = tmp_path / "context", tmp_path / "parser-runs"
    keep.mkdir()
    ud, rid = tmp_path / "user-data", tmp_path / "runtime-id"
    rid.write_text("a" * 64 + "\n")
    # the real parser on the host's Python (in the process that would mount next, which ends when the
    # init does); each run leaves a mark; FAIL=1: a parser that crashes
    parser = f'echo run >>{runs}; [ -z "$FAIL" ] || return 1; {sys.executable} -m "$@"'
    boot = (
        f". {head}; RUNTIME_ID={rid}; MOUNT_FIFOS={tmp_path}/mount; py() {{ {parser}; }}; "
        f"py_storage() {{ {parser}; }}; "
        f"read_user_data {ud} {tmp_path}/ucontext {keep}; keep_user_data_lines {tmp_path}/ucontext {keep}; "
        'echo "server=$U_cvmfs_server resize=$U_resize_rootfs"'
    )

    def reboot(fail: str = "") -> tuple[str, int]:
        env = {"PATH": "/usr/bin:/bin", "FAIL": fail, "PYTHONPATH": _package_root()}
        r = subprocess.run(["busybox", "sh", "-c", boot], capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout, len(runs.read_text().splitlines()) if runs.exists() else 0

    ud.write_text(
        "#cloud-config\n[ucernvm-begin]\ncvmfs_server=s1.example:8000\nresize_rootfs=off\n[ucernvm-end]\n"
    )
    out, n = reboot()
    assert n == 1 and out.endswith("server=s1.example:8000 resize=0\n"), out
    out, n = reboot()
    assert n == 1 and "ucernvm: context: user data unchanged" in out, out
    assert (
        out.endswith("server=s1.example:8000 resize=0\n")
        and "ucernvm: context: cvmfs_server=s1.example" in out
    )
    ud.write_text("[ucernvm-begin]\ncvmfs_server=s2.example\n[ucernvm-end]\n")
    out, n = reboot()
    assert n == 2 and out.endswith("server=s2.example resize=\n"), out
    rid.write_text("b" * 64 + "\n")  # a new image: its parser may read the same text otherwise
    assert reboot()[1] == 3 and reboot()[1] == 3
    ud.write_text("[ucernvm-begin]\ncvmfs_server=s3.example\n[ucernvm-end]\n")
    assert reboot(fail="1")[1] == 4 and not (keep / "ucontext.key").exists()
    out, n = reboot()
    assert n == 5 and out.endswith("server=s3.example resize=\n"), out


def test_a_mount_process_not_asked_to_parse_loads_no_user_data_parser() -> None:
    """What a reboot with unchanged user data imports in the initrd (the mount, while the modules load):
    not the parser and its settings table (~0.2 guest-s under TCG), which only a parse request loads."""
    import sys

    code = (
        "import sys; import cernvm_build.bootloader.parse_and_mount; from cernvm_build.cvmfs import mount; "
        "names = ('cernvm_build.bootloader.userdata', 'cernvm_build.table'); "
        "print(*sorted(m for m in sys.modules if m in names))"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": _package_root()}
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0 and out.stdout == "\n", out.stdout + out.stderr


def test_the_early_mount_process_imports_the_mount_without_the_cyclic_gc() -> None:
    """The early mount process's imports (the mount's graph, kept for the daemon's life) run with the
    cyclic GC off (its passes were ~6 % of their instructions) and are frozen after them: no
    collection during them, their objects out of later full collections, the GC on again."""
    import sys

    code = (
        "import gc, os, sys; from cernvm_build.bootloader import parse_and_mount as p; "
        "n = gc.get_stats()[0]['collections']; assert p.main([]) == 0; "
        "print(gc.get_stats()[0]['collections'] - n, 'cernvm_build.cvmfs.mount' in sys.modules, "
        "gc.get_freeze_count() > 10000, gc.isenabled())"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": _package_root()}
    r = subprocess.run(
        ["sh", "-c", f'{sys.executable} -S -c "{code}" 3>/dev/null 4</dev/null'],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout == "0 True True True\n", r.stdout + r.stderr


def test_every_dataclass_the_mount_daemon_imports_has_its_own_docstring() -> None:
    """The mount daemon's imports in the initrd (the mount, then the FUSE code) create a dataclass per
    row kind, key, tag...: one without a docstring makes ``dataclasses`` build one from
    ``inspect.signature`` at import (~1 % of the daemon's import instructions for the 11 that had none)."""
    import sys

    code = (
        "import sys, dataclasses; import cernvm_build.bootloader.parse_and_mount; "
        "from cernvm_build.cvmfs import mount, fuse; "
        "print(*sorted(f'{n}.{k}' for n, m in list(sys.modules.items()) if n.startswith('cernvm_build') "
        "for k, v in vars(m).items() if isinstance(v, type) and dataclasses.is_dataclass(v) "
        "and v.__module__ == n and (v.__doc__ or '').startswith(v.__name__ + '(')))"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": _package_root()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and out.stdout == "\n", out.stdout + out.stderr


def test_the_init_enters_the_os_without_emptying_the_initramfs() -> None:
    """The runtime stays where the initrd has it (no copy onto a tmpfs: 0.2 s under TCG) and the FUSE
    process runs from it after the OS has started: busybox switch_root would delete it with the rest of
    the initramfs. The init moves the OS root over / and enters it itself, and removes nothing but the
    kernel modules (loaded by then; the OS has its own tree)."""
    init = fused_init().decode()
    commands = [line.split("#")[0].strip() for line in init.splitlines()]
    commands = [c for c in commands if c]
    assert not [c for c in commands if re.search(r"\bswitch_root\b", c)]
    assert not [c for c in commands if c.startswith("cp ") and "RT" in c], "the runtime is not copied"
    assert "ln -sfn $RT_SRC $RT" in " ".join(commands)
    boot = init[init.index("# ---- 90-boot.sh ----") :]
    removed = [c for c in (line.split("#")[0].strip() for line in boot.splitlines()) if c.startswith("rm -r")]
    assert removed == ['rm -rf "/lib/modules/$kver"'], removed
    at = commands.index("exec chroot . /sbin/init")
    assert commands[at - 2 : at] == [
        'cd $ROOT || panic "cannot enter the OS root $ROOT"',
        'mount --move . / || panic "cannot move the OS root $ROOT over /"',
    ]


def test_the_mount_process_ends_without_the_interpreters_teardown(tmp_path: Path) -> None:
    """The init waits for the early mount process to exit before it goes on; freeing the interpreter
    (every module's objects) cost 0.27 s of the initrd's CPU under TCG, so the process ends at once
    (``exit_now``): its status and its output (flushed) reach the init, exit handlers do not run, and a
    closed standard stream changes nothing. A
    ``sitecustomize`` exit handler shows which: it runs for an ordinary exit (the control)."""
    import sys

    site, marker = tmp_path / "site", tmp_path / "torn-down"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import atexit\natexit.register(open, {str(marker)!r}, 'w')\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{site}:{_package_root()}"}
    not_dir, log, command = tmp_path / "not a dir", tmp_path / "cvmfs.log", tmp_path / "command"
    not_dir.write_text("")
    args = ["--fqrn", "demo.example", "--server", "http://127.0.0.1:9/cvmfs/demo.example", str(not_dir)]
    command.write_text("\n".join([str(log), str(len(args)), *args]) + "\n")

    def run(script: str) -> subprocess.CompletedProcess[str]:
        marker.unlink(missing_ok=True)
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, env=env)

    r = run(f"{sys.executable} -c 'print(1)'")
    assert r.stdout == "1\n" and marker.exists(), "the control: an ordinary exit runs the handler"
    start = f"{sys.executable} -m cernvm_build.bootloader.parse_and_mount 3>/dev/null"
    r = run(f"{start} 4<{command}")
    assert r.returncode == CvmfsError.exit_code and not marker.exists(), (r.returncode, r.stderr)
    assert f"error: {not_dir}: mount point is not a directory" in log.read_text()
    r = run(f"{start} 4</dev/null")  # the init went another way: no command, nothing mounted
    assert r.returncode == 0 and not marker.exists(), r.stderr
    ends = "from cernvm_build.bootloader.parse_and_mount import exit_now; exit_now(3)"
    code = f"import sys; sys.stdout and sys.stdout.write('x'); {ends}"
    r = run(f'{sys.executable} -c "{code}" >{tmp_path / "out"}')  # stdout to a file: block-buffered
    assert (r.returncode, (tmp_path / "out").read_text()) == (3, "x"), r.stderr
    r = run(f'{sys.executable} -c "{code}" 1>&-')  # sys.stdout is None: the status is still the mount's
    assert r.returncode == 3 and not r.stderr, r.stderr


def test_the_shutdown_program_sees_the_daemon_end_without_a_process_per_look(tmp_path: Path) -> None:
    """shutdown.sh polls the FUSE daemon's end every 20 ms by the shell's own ``read`` (a ``cut`` and a
    ``sleep`` were a fork and an exec per 0.1 s look): a live process is never taken for gone, whatever
    its command name holds (blanks, ") Z "), a zombie or a reaped one is gone, and a wait starts no
    process."""
    import shutil
    import sys
    import time

    from cernvm_build.paths import data_dir

    text = (data_dir("bootloader") / "shutdown.sh").read_text()
    funcs = text[text.index("gone() {") : text.index("\n}\n", text.index("tick() {")) + 3]
    funcs = funcs.replace("/tick", str(tmp_path / "tick"))
    odd = tmp_path / "x) Z y"
    shutil.copy("/bin/sleep", odd)
    live = subprocess.Popen([str(odd), "30"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    reaped = subprocess.Popen(["true"])
    reaped.wait()
    try:
        for _ in range(200):  # the zombie's exit, unreaped (Popen reaps only when asked)
            if Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z"):
                break
            time.sleep(0.05)
        assert Path(f"/proc/{live.pid}/comm").read_text() == "x) Z y\n"
        bb = tmp_path / "bb"  # only mkfifo: a sleep (or anything else) is reported
        bb.write_text(
            '#!/bin/sh\n[ "$1" = mkfifo ] && shift && exec mkfifo "$@"\necho "ran $*" >&2; exit 1\n'
        )
        bb.chmod(0o755)
        script = (
            f"bb={bb}; {funcs}"
            f"for p in {live.pid} {zombie.pid} {reaped.pid}; do gone $p && echo gone || echo live; done; "
            'tick; tick; echo "ticks $tick_fd"'
        )
        r = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    finally:
        live.kill()
        live.wait()
        zombie.wait()
    assert r.stdout == "live\ngone\ngone\nticks 7\n" and r.stderr == "", (r.stdout, r.stderr)


def test_every_boot_starts_the_mount_once_the_modules_are_loaded(tmp_path: Path) -> None:
    """Every boot starts the mount's Python once the modules are loaded (its imports, ~1 s of CPU under
    emulation, fill the waits of DHCP, the context drive and the disk check; beside the modules'
    CPU-bound loading they made the boot ~0.75 guest-s later), not cold after the disk work: with the
    saved lines reused it is the one Python start and mounts with the init's arguments; with user
    data to parse, the same process parses it on request. A process that dies leaves no lines and a
    failed mount, never a hung init. The mount's arguments reach it intact (a blank inside one), its
    output goes to the log and its status is the init's."""
    import sys

    from cernvm_build.bootloader.initrd import fused_init
    from cernvm_build.paths import data_dir

    init = fused_init().decode()
    named = init.index("ln -sfn $RT_SRC $RT")
    assert named < init.index("# ---- 01-modules.sh ----"), "the runtime is named first"
    modules = init[init.index("# ---- 01-modules.sh ----") : init.index("# ---- 02-network.sh ----")]
    assert len(re.findall(r"^start_mount$", init, re.M)) == 1, "started once"
    first_pass = re.search(r"^load_passes$", modules, re.M)
    assert first_pass and modules.find("\nstart_mount\n") > first_pass.end(), "after the modules' first pass"

    head = data_dir("bootloader") / "init.head.sh"
    runs, ud, log = tmp_path / "starts", tmp_path / "user-data", tmp_path / "cvmfs.log"
    keep = tmp_path / "ctx"
    keep.mkdir()
    (tmp_path / "rid").write_text("a" * 64 + "\n")
    ud.write_text("#cloud-config\n[ucernvm-begin]\ncvmfs_server=s1.example:8000\n[ucernvm-end]\n")
    not_dir = tmp_path / "not a dir"
    not_dir.write_text("")
    start = f'echo "$*" >>{runs}; [ -z "$FAIL" ] || return 1; {sys.executable} -m "$@"'
    boot = (
        f". {head}; RUNTIME_ID={tmp_path}/rid; MOUNT_FIFOS={tmp_path}/mount; "
        f"py() {{ echo py >>{runs}; return 1; }}; py_storage() {{ {start}; }}; "
        f"start_mount; read_user_data {ud} {keep}/ucontext {keep}; "
        f"keep_user_data_lines {keep}/ucontext {keep}; "
        f'mount_cvmfs {log} --fqrn demo.example --server http://127.0.0.1:9/cvmfs/demo.example "{not_dir}"; '
        'echo "rc=$? server=$U_cvmfs_server key=$UD_KEY"'
    )

    def boot_once(fail: str = "") -> str:
        runs.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
        env = {"PATH": "/usr/bin:/bin", "FAIL": fail, "PYTHONPATH": _package_root()}
        r = subprocess.run(["busybox", "sh", "-c", boot], capture_output=True, text=True, timeout=90, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout

    for parsed in (True, False):  # changed user data (parsed on request), then the saved lines reused
        out = boot_once()
        assert runs.read_text() == "cernvm_build.bootloader.parse_and_mount\n", "one early start, no other"
        assert ("user data unchanged" in out) is not parsed, out
        assert "ucernvm: context: cvmfs_server=s1.example:8000" in out
        rc, server, key = re.search(r"rc=(\d+) server=(\S*) key=(\S*)", out).groups()  # type: ignore[union-attr]
        assert rc != "0" and server == "s1.example:8000" and key, out
        assert f"error: {not_dir}: mount point is not a directory" in log.read_text()
    ud.write_text("[ucernvm-begin]\ncvmfs_server=s2.example\n[ucernvm-end]\n")
    out = boot_once(fail="1")
    assert out.rstrip().endswith("server= key=") and "rc=0" not in out, out
    out = boot_once()  # the failed parse kept no key: parsed again
    assert "server=s2.example" in out and "user data unchanged" not in out, out


def test_a_first_boots_disk_work_runs_in_the_early_mount_process(tmp_path: Path) -> None:
    """A first boot's partitioning (and a grown disk's) is asked of the early mount process, whose
    imports hold the disk code's, not of a Python start of its own (~0.7 guest-s of a first boot under
    TCG): the helper's output line and status reach the init, and the same process still parses and
    mounts afterwards. A process gone before the request leaves it to a start of its own; one that
    dies on it fails the request, which is not repeated (the disk may be written)."""
    import sys

    from cernvm_build.paths import data_dir

    head = data_dir("bootloader") / "init.head.sh"
    runs, log, prelude = tmp_path / "starts", tmp_path / "cvmfs.log", tmp_path / "prelude.py"
    not_dir = tmp_path / "not a dir"
    not_dir.write_text("")
    # the real early process; only the device work is a stand-in (no disk to partition in a test)
    prelude.write_text(
        "import os\n"
        "from cernvm_build.bootloader import disk, parse_and_mount\n"
        "def first_boot(size_mb=0, wait=5.0):\n"
        "    if os.environ.get('DIE'):\n"
        "        os._exit(9)\n"
        "    return f'/dev/new{size_mb}'\n"
        "disk.first_boot = first_boot\n"
        "parse_and_mount.exit_now(parse_and_mount.main([]))\n"
    )
    boot = (
        f". {head}; MOUNT_FIFOS={tmp_path}/mount; "
        f'py() {{ echo "py $*" >>{runs}; return 1; }}; '
        f'py_storage() {{ echo early >>{runs}; [ -z "$FAIL" ] || return 1; {sys.executable} {prelude}; }}; '
        'start_mount; part=$(py_early disk first-boot 20480); echo "part=$part rc=$?"; '
        'py_early disk; echo "usage=$?"; '
        f'mount_cvmfs {log} --fqrn demo.example --server http://127.0.0.1:9/cvmfs/demo.example "{not_dir}"; '
        'echo "mount=$?"'
    )

    def boot_once(**env: str) -> tuple[str, str]:
        runs.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": _package_root(), **env}
        r = subprocess.run(["busybox", "sh", "-c", boot], capture_output=True, text=True, timeout=90, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout, runs.read_text()

    out, starts = boot_once()
    assert starts == "early\n", "no Python start of its own"
    assert "part=/dev/new20480 rc=0\n" in out and "usage=2\n" in out, out
    assert f"mount={CvmfsError.exit_code}\n" in out and "mount point is not a directory" in log.read_text()
    out, starts = boot_once(FAIL="1")  # gone before the request: a start of its own (the stand-in fails)
    assert starts.splitlines() == [
        "early",
        "py cernvm_build.bootloader.disk first-boot 20480",
        "py cernvm_build.bootloader.disk",
    ]
    assert "part= rc=1\n" in out and "usage=1\n" in out, out
    out, starts = boot_once(DIE="1")  # dies on the request: failed, not repeated; gone for the next one
    assert starts.splitlines() == ["early", "py cernvm_build.bootloader.disk"]
    assert "part= rc=1\n" in out and "mount=9\n" in out, out


def test_the_guest_parse_reports_a_bad_key_and_never_raises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process that parses the user data also mounts the OS: a key it cannot read (5,000 digits,
    past Python's int() limit) is reported and ignored, the others kept; and whatever else the
    parser raises is one line and no lines, never the end of the mount process."""
    from cernvm_build.bootloader import parse_and_mount

    source, lines = tmp_path / "user-data", tmp_path / "lines"
    huge = "9" * 5000
    source.write_text(f"[ucernvm-begin]\ncvmfs_quota_limit={huge}\nresize_rootfs=on\n[ucernvm-end]\n")
    assert parse_and_mount._parse(str(source), str(lines)) is True
    err = capsys.readouterr().err
    assert "cvmfs_quota_limit: '99999999999999999999…' is too large a number, ignored" in err
    assert huge not in err and "resize_rootfs" in lines.read_text() and "quota" not in lines.read_text()

    def broken(data: bytes) -> None:
        raise RecursionError("a parser bug")

    monkeypatch.setattr(userdata, "parse", broken)
    assert parse_and_mount._parse(str(source), str(lines)) is False
    assert "cannot read the user data (RecursionError: a parser bug), ignored" in capsys.readouterr().err
    assert lines.read_text() == ""


def test_a_hostile_kernel_tree_is_one_build_error_naming_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module linked to a host file, a FIFO, an xz bomb or a broken xz: a BuildError naming the
    file, nothing of the host read, no hang, no MemoryError."""
    import lzma
    import os

    from cernvm_build.bootloader import modules

    moddir = tmp_path / "6.1.0-test"
    kdir = moddir / "kernel" / "drivers"
    kdir.mkdir(parents=True)
    secret = tmp_path / "secret-of-host"
    secret.write_bytes(b"\0depends=\0secret\n")
    (kdir / "virtio_pci.ko").symlink_to(secret)
    os.mkfifo(kdir / "virtio_blk.ko")
    monkeypatch.setattr(modules, "MAX_MODULE", 1 << 20)  # the rule, with a smaller bomb
    bomb = lzma.compress(b"\0" * (4 << 20), format=lzma.FORMAT_XZ)
    (kdir / "ext4.ko.xz").write_bytes(bomb)
    small = lzma.compress(b"\0depends=\0" + os.urandom(4096), format=lzma.FORMAT_XZ)
    (kdir / "fuse.ko.xz").write_bytes(small[: len(small) // 2])
    (kdir / "overlay.ko.xz").write_bytes(b"not xz at all")
    for name, message in (
        ("virtio_pci", "points out of the modules folder"),
        ("virtio_blk", "is not a regular file"),
        ("ext4", "larger than 1 MiB unpacked"),
        ("fuse", "truncated xz"),
        ("overlay", "not valid xz"),
    ):
        with pytest.raises(BuildError, match=message) as e:
            resolve(moddir, "6.1.0-test", (name,))
        assert f"kernel module {kdir}/{name}.ko" in str(e.value)
    (kdir / "sd_mod.ko").symlink_to("virtio_pci.ko")  # a link inside the folder is fine...
    (kdir / "virtio_pci.ko").unlink()
    (kdir / "virtio_pci.ko").write_bytes(b"\0depends=\0")
    assert list(resolve(moddir, "6.1.0-test", ("sd_mod",)).files) == ["kernel/drivers/sd_mod.ko"]


def test_verify_without_cert_says_the_signer_is_not_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Anyone can sign an image with a certificate of their own: without --cert ``signature OK``
    alone read as proof of the publisher; a warning and ``"trusted": false`` say what was checked."""
    import json

    from cernvm_build.cli.main import main

    s = _signer(tmp_path, "anyone")
    img = tmp_path / "x.iso"
    img.write_bytes(b"\0" * 4096)
    with open(img, "ab") as f:
        f.write(signature.trailer_bytes(img, {"snapshot": "h", signature.BUILD_TIME: 1796000000}, s))
    assert main(["image", "verify", str(img), "--json"]) == 0
    got = capsys.readouterr()
    assert json.loads(got.out)["trusted"] is False and "pass --cert" in got.err
    assert main(["image", "verify", str(img), "--cert", str(tmp_path / "anyone.crt"), "--json"]) == 0
    got = capsys.readouterr()
    assert json.loads(got.out)["trusted"] is True and "warning" not in got.err


@pytest.mark.parametrize(
    ("argv", "where"),
    [
        (
            ["build", "demo", "--initrd-level", "13"],
            "argument --initrd-level: '13': expected a whole number from 1 to 12",
        ),
        (
            ["build", "demo", "--initrd-level", "0"],
            "argument --initrd-level: '0': expected a whole number from 1 to 12",
        ),
        (
            ["seed", "demo", "--trace", "/dev/null", "-o", "s.qcow2", "-j", "0"],
            "argument -j/--jobs: '0': expected a whole number from 1 to 64",
        ),
        (
            ["seed", "demo", "--trace", "/dev/null", "-o", "s.qcow2", "-j", "100000"],
            "argument -j/--jobs: '100000': expected a whole number from 1 to 64",
        ),
    ],
)
def test_out_of_range_counts_are_refused_naming_the_flag(
    argv: list[str], where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--initrd-level and seed -j/--jobs were silently clamped into their range (mm18c)."""
    from cernvm_build.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["image", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {where}" in err and "Traceback" not in err


def test_the_cli_ranges_are_the_compressor_and_the_downloader_ones() -> None:
    """The CLI copies them so that parsing imports neither area: kept equal here."""
    from cernvm_build.bootloader.initrd import LEVELS
    from cernvm_build.cli import image as cli_image
    from cernvm_build.cvmfs.replicate import MAX_JOBS

    assert LEVELS["lz4"] == cli_image.INITRD_LEVELS and cli_image.SEED_JOBS == (1, MAX_JOBS)


def test_an_unknown_key_is_reported_escaped() -> None:
    """The init writes the messages to the console: an unknown key holding terminal escapes (OSC 52,
    a screen clear) was written there raw (pr19b finding 9); every other message quotes input as repr."""
    p = userdata.parse("[ucernvm-begin]\n\x1b]52;c;eA\x07\x1b[2J=1\n[ucernvm-end]\n")
    assert p.messages and "\x1b" not in p.messages[0] and "\x07" not in p.messages[0]
    assert "unknown key '\\x1b]52;c;eA\\x07\\x1b[2J' ignored" in p.messages[0]


def test_the_init_reads_its_one_line_files_without_a_process() -> None:
    """/version, the kernel release, the saved selector and the pin are read by the shell's ``read``:
    a ``$(cat ...)``, ``$(uname -r)``, ``$(head ...)`` or ``$(sed ...)`` is a fork and an exec on the
    boot's one CPU (~7 ms each under emulation; a diag boot counted 4 processes fewer by the mount)."""
    init = fused_init().decode()
    setup = init[init.index("# ---- 00-setup.sh ----") : init.index("# ---- 01-modules.sh ----")]
    cvmfs = init[init.index("# ---- 10-cvmfs.sh ----") : init.index("# ---- 20-overlay.sh ----")]
    assert "$(cat /version" not in setup and "$(uname" not in setup
    assert "read -r version" in setup and "/proc/sys/kernel/osrelease" in setup
    assert "$(cat $ROOT_RW/aux/cvmfs_selector" not in cvmfs
    pinned = next(line for line in cvmfs.splitlines() if "pinned snapshot" in line)
    assert "$(" not in pinned, pinned


def test_a_finished_switch_of_a_killed_build_is_left_as_it_is(tmp_path: Path) -> None:
    """A build killed after its last rename (the manifest) but before removing its work folder: the
    next build's clean-up must not take the new manifest away (the roll forward removes the earlier
    build's manifest only while the new one is still in the work folder)."""
    out = tmp_path / "out"
    work = out / ".build-999999999-abc"  # no such process
    work.mkdir(parents=True)
    (work / build.SWITCH).write_text('["x.iso", "x.iso.sha256", "x.manifest.json"]')
    for name in ("x.iso", "x.iso.sha256", "x.manifest.json"):
        (out / name).write_text(f"new {name}")
    build._remove_stale_work(out)
    assert sorted(p.name for p in out.iterdir()) == ["x.iso", "x.iso.sha256", "x.manifest.json"]
    # killed half way: the rest is moved, the manifest last
    work.mkdir()
    (work / build.SWITCH).write_text('["x.iso", "x.iso.sha256", "x.manifest.json"]')
    (out / "x.iso").write_text("newer x.iso")
    for name in ("x.iso.sha256", "x.manifest.json"):
        (work / name).write_text(f"newer {name}")
    build._remove_stale_work(out)
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        n: f"newer {n}" for n in ("x.iso", "x.iso.sha256", "x.manifest.json")
    }


def test_two_builds_on_a_cold_kernel_cache_extract_the_kernel_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builds on a cold kernel cache both extracted the package, and the second's swap of the tree
    took the first's from under its reads (three at once collided on the swap's '.old' name): a second
    waits for the first's extraction and uses its tree. (The package is a fake: the lock is the test.)"""
    import threading

    from cernvm_build import debpkg
    from cernvm_build.bootloader import kernel as kmod

    deb = debpkg.DebPackage("linux-image-x", "1", "amd64", tmp_path / "x.deb", "ab" * 32)
    monkeypatch.setattr(debpkg, "fetch", lambda spec, root: deb)
    monkeypatch.setattr(debpkg, "kernel_package", lambda spec: spec)
    second_waits = threading.Event()
    monkeypatch.setattr(kmod, "_wait", lambda holder: second_waits.set())
    extracted: list[Path] = []
    got: list[object] = []

    def extract(pkg: object, dest: Path) -> Path:
        extracted.append(dest)
        if len(extracted) == 1:  # the first build, extracting: the second build comes now
            second = threading.Thread(
                target=lambda: got.append(kmod.fetch_debian_kernel("x", tmp_path / "k"))
            )
            second.start()
            assert second_waits.wait(60), "the second build did not wait for the first's extraction"
            extract.second = second  # type: ignore[attr-defined]
        (dest / "boot").mkdir()
        (dest / "boot" / "vmlinuz-6.1").write_bytes(b"k")
        (dest / "lib" / "modules" / "6.1" / "kernel").mkdir(parents=True)
        return dest

    monkeypatch.setattr(debpkg, "extract", extract)
    first = kmod.fetch_debian_kernel("x", tmp_path / "k")
    extract.second.join(60)  # type: ignore[attr-defined]
    assert len(extracted) == 1 and len(got) == 1 and got[0] == first
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["linux-image-x_1"]  # no lock file left


def test_an_hdd_in_a_folder_named_like_mtools_offsets_touches_nothing_beside_it(tmp_path: Path) -> None:
    """pr26c finding 7: mtools reads ``-i FILE@@OFFSET`` and cuts at the first '@@'; by its full path,
    the image in a folder 'images@@2026' was 'images', and mformat formatted the file of that name
    beside the output (then syslinux failed on the image). The real mtools and syslinux run here."""
    from cernvm_build.image import disks

    victim = tmp_path / "images"
    victim.write_bytes(b"precious" + bytes(40 << 20))
    tree = tmp_path / "tree"
    (tree / "cernvm").mkdir(parents=True)
    (tree / "cernvm" / "vmlinuz").write_bytes(b"k" * 1000)
    (tree / "cernvm" / "initrd.img").write_bytes(b"i" * 1000)
    out = tmp_path / "images@@2026" / "raw.hdd"
    out.parent.mkdir()
    disks.make_hdd(tree, "DEFAULT ucernvm\n", out, "UCERNVM", 0)
    assert victim.read_bytes() == b"precious" + bytes(40 << 20)
    listing = subprocess.run(
        ["mdir", "-b", "-i", f"{out.name}@@{disks.PART_START * 512}", "::/cernvm"],
        cwd=out.parent, env={"MTOOLS_SKIP_CHECK": "1"}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert sorted(listing.stdout.split()) == ["::/cernvm/initrd.img", "::/cernvm/vmlinuz"]


def test_a_relative_output_folder_holding_a_colon_converts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr26c finding 9: qemu-img was given the work folder's names as they were, relative under a
    relative ``--out`` (tempfile.mkdtemp keeps a relative folder relative before Python 3.12), and
    qemu reads 'b:1/...' as the protocol 'b': "Unknown protocol 'b'" for every qcow2/vmdk build."""
    from cernvm_build.image import disks

    monkeypatch.chdir(tmp_path)
    (tmp_path / "b:1").mkdir()
    raw = Path("b:1") / "raw.hdd"
    raw.write_bytes(bytes(1 << 20))
    disks.convert(raw, "qcow2", Path("b:1") / "x.qcow2")
    assert (tmp_path / "b:1" / "x.qcow2").read_bytes()[:4] == b"QFI\xfb"


def test_an_hdd_under_a_relative_folder_beginning_with_a_dash_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr26c finding 10: ``--out=-fm`` (relative) reached syslinux as '-fm/.../raw.hdd', read as its
    options ("'syslinux' failed: --force -f Ignore precautions", the last line of its usage), and
    xorriso as an option too."""
    from cernvm_build.image import disks

    monkeypatch.chdir(tmp_path)
    tree = tmp_path / "tree"
    (tree / "cernvm").mkdir(parents=True)
    (tree / "cernvm" / "vmlinuz").write_bytes(b"k" * 1000)
    (tree / "cernvm" / "initrd.img").write_bytes(b"i" * 1000)
    (tmp_path / "-fm").mkdir()
    disks.make_hdd(tree, "DEFAULT ucernvm\n", Path("-fm") / "raw.hdd", "UCERNVM", 0)
    assert (tmp_path / "-fm" / "raw.hdd").read_bytes()[510:512] == b"\x55\xaa"
    # and the iso: xorriso read the tree '-fm/tree' as an option ("Unrecognized option")
    (tmp_path / "-fm" / "tree").mkdir()
    (tmp_path / "-fm" / "tree" / "version").write_text("1\n")
    disks.make_iso(Path("-fm") / "tree", "DEFAULT ucernvm\n", Path("-fm") / "u.iso", "UCERNVM", 0)
    assert (tmp_path / "-fm" / "u.iso").read_bytes()[0x8001:0x8006] == b"CD001"


def test_a_build_time_past_what_the_initrd_holds_is_one_line_before_any_work(tmp_path: Path) -> None:
    # SOURCE_DATE_EPOCH is accepted up to the year 9999 (tars hold it); from 2**32 on '%08X' wrote 9
    # digits into the newc header: an initrd the kernel unpacks as junk, and the build said nothing
    from cernvm_build import profile
    from cernvm_build.context import BuildContext

    prof = profile.load("demo")
    out = tmp_path / "out"
    with pytest.raises(
        BuildError, match=r"build time 4294967296 \(2106-02-07T06:28:16Z\) is after 2106-02-07T06:28:15Z"
    ):
        build.build_image(prof, out, formats=["iso"], ctx=BuildContext(epoch=2**32, cache=tmp_path / "cache"))
    assert not out.exists() and not (tmp_path / "cache").exists()
    tree = Tree()
    tree.dir("bin")
    write_newc(tree.members.values(), io.BytesIO(), 2**32 - 1)  # the last second it holds
    with pytest.raises(ValueError, match="out of range"):
        write_newc(tree.members.values(), io.BytesIO(), 2**32)


@pytest.mark.parametrize(("epoch", "shown"), [(0, "1980-01-01"), (4294967295, "2106-02-07")])
def test_the_hdd_dates_its_files_within_what_fat_holds(tmp_path: Path, epoch: int, shown: str) -> None:
    # mtools wraps a year FAT cannot hold: SOURCE_DATE_EPOCH=0 dated every file 2098-01-01
    from cernvm_build.image import disks

    tree = tmp_path / "tree"
    (tree / "cernvm").mkdir(parents=True)
    (tree / "cernvm" / "vmlinuz").write_bytes(b"k")
    out = tmp_path / "disk.hdd"
    disks.make_hdd(tree, "DEFAULT x\n", out, "UCERNVM", epoch)
    listing = subprocess.run(
        ["mdir", "-i", f"{out}@@{disks.PART_START * 512}", "::/cernvm"],
        env={"MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    dates = set(re.findall(r"\d{4}-\d{2}-\d{2}", listing))
    assert dates == {shown}, listing


def test_the_hdd_builds_under_a_turkish_locale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # mtools upper-cases names by the locale: under tr_TR 'syslinux' became SYSLİNUX (dotted capital
    # I), 'mcopy ... ::/syslinux/syslinux.cfg' found no such folder and the image build failed
    from cernvm_build.image import disks

    if not Path("/usr/share/i18n/locales/tr_TR").exists():
        pytest.skip("no tr_TR locale source (locales package) to compile")
    locales = tmp_path / "locales"
    locales.mkdir()
    subprocess.run(
        ["localedef", "-i", "tr_TR", "-f", "UTF-8", str(locales / "tr_TR.UTF-8")],
        check=True,
        capture_output=True,
    )
    tree = tmp_path / "tree"
    (tree / "cernvm").mkdir(parents=True)
    (tree / "cernvm" / "initrd.img").write_bytes(b"i")
    plain = tmp_path / "plain.hdd"
    disks.make_hdd(tree, "DEFAULT x\n", plain, "UCERNVM", 1764000000)
    monkeypatch.setenv("LOCPATH", str(locales))
    monkeypatch.setenv("LC_ALL", "tr_TR.UTF-8")
    turkish = tmp_path / "turkish.hdd"
    disks.make_hdd(tree, "DEFAULT x\n", turkish, "UCERNVM", 1764000000)
    assert turkish.read_bytes() == plain.read_bytes()


@pytest.mark.parametrize("mtoolsrc", ["MTOOLS_NAME_NUMERIC_TAIL=0\n", "a line mtools does not know\n"])
def test_the_builders_mtoolsrc_is_no_input_of_the_hdd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mtoolsrc: str
) -> None:
    # ~/.mtoolsrc was read: MTOOLS_NAME_NUMERIC_TAIL=0 there made other hdd bytes, a line mtools does
    # not know failed the build ("Syntax error ... in file ~/.mtoolsrc")
    from cernvm_build.image import disks

    tree = tmp_path / "tree"
    (tree / "cernvm").mkdir(parents=True)
    (tree / "cernvm" / "initrd.img").write_bytes(b"i")
    (tree / ".ucernvm_boot_loader").write_text("x\n")  # a long name: its short alias has a tail
    plain = tmp_path / "plain.hdd"
    disks.make_hdd(tree, "DEFAULT x\n", plain, "UCERNVM", 1764000000)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".mtoolsrc").write_text(mtoolsrc)
    monkeypatch.setenv("HOME", str(home))
    again = tmp_path / "again.hdd"
    disks.make_hdd(tree, "DEFAULT x\n", again, "UCERNVM", 1764000000)
    assert again.read_bytes() == plain.read_bytes()


@pytest.mark.parametrize("method", ["lz4", "zstd", "xz"])
def test_the_builders_compressor_variables_are_no_input_of_the_initrd(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # xz adds XZ_OPT to its options: XZ_OPT=--block-size=65536 made another initrd
    data = bytes(range(256)) * 4096
    plain = compress(data, method)
    for name, value in (
        ("XZ_OPT", "--block-size=65536"),
        ("XZ_DEFAULTS", "--check=sha256"),
        ("ZSTD_CLEVEL", "1"),
        ("ZSTD_NBTHREADS", "1"),
        ("LZ4_CLEVEL", "1"),
    ):
        monkeypatch.setenv(name, value)
    assert compress(data, method) == plain


def test_a_copytree_error_on_a_full_disk_is_one_line() -> None:
    # pr28a finding 14: the line was the repr of copytree's list of (src, dst, why)
    import shutil

    from cernvm_build.image.build import _disk_error

    full = shutil.Error(
        [("/o/tree/initrd.img", "/o/iso-tree/initrd.img", "[Errno 28] No space left on device")]
    )
    err = _disk_error(full, Path("/o"))
    assert str(err) == "/o: no space left for the image (No space left on device)"
    assert err.hint == "free space there or choose another --out folder"
    assert (err.where, err.message) == ("/o", "no space left for the image (No space left on device)")
    other = shutil.Error([("/o/a", "/o/b", "[Errno 13] Permission denied: '/o/b'")])
    assert str(_disk_error(other, Path("/o"))) == "/o: [Errno 13] Permission denied: '/o/b'"


def test_the_network_step_reads_its_interfaces_and_lease_without_a_process(tmp_path: Path) -> None:
    """02-network.sh looks for the interfaces by the shell's glob (an ``ls | grep`` was two processes a
    look) and logs the address and gateway the udhcpc script wrote (an ``ip | awk`` and a ``cat``
    were five): it waits while there is only ``lo``, takes the first interface with a lease, and its
    line says what the script set."""
    from cernvm_build.paths import data_dir

    boot = data_dir("bootloader")
    net, log = tmp_path / "net", tmp_path / "calls.log"
    (net / "lo").mkdir(parents=True)
    script = (boot / "udhcpc.script").read_text().replace("/tmp/", f"{tmp_path}/")
    script = script.replace("/etc/resolv.conf", f"{tmp_path}/resolv.conf")
    (tmp_path / "default.script").write_text(script)
    frag = (boot / "init.d" / "02-network.sh").read_text().replace("/tmp/", f"{tmp_path}/")
    frag = frag.replace("/usr/share/udhcpc/default.script", str(tmp_path / "default.script"))
    (tmp_path / "02.sh").write_text(frag)
    fake = (  # eth1, eth2 appear after the first look; eth1 gives no lease, eth2 does (the script runs)
        f'ip() {{ echo "ip $*" >>{log}; }}; '
        f"sleep() {{ echo sleep >>{log}; mkdir -p {net}/eth1 {net}/eth2; }}; "
        f'udhcpc() {{ echo "udhcpc $2" >>{log}; [ "$2" = eth2 ] || return 1; ( set -- bound; '
        "interface=eth2 ip=10.0.2.15 mask=24 router=10.0.2.2 dns=10.0.2.3 serverid=10.0.2.2; "
        f". {tmp_path / 'default.script'} ); }}; "
    )
    sh = f". {boot / 'init.head.sh'}; SYS_NET={net}; {fake} . {tmp_path / '02.sh'}; echo if=$NET_IF"
    r = subprocess.run(["busybox", "sh", "-c", sh], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "ucernvm: network: eth2 10.0.2.15/24 via 10.0.2.2\n" in r.stdout and "if=eth2" in r.stdout, r
    assert log.read_text().splitlines() == [
        "ip link set lo up",
        "sleep",
        "ip link set eth1 up",
        "udhcpc eth1",
        "ip link set eth2 up",
        "udhcpc eth2",
        "ip -4 addr flush dev eth2",
        "ip -4 addr add 10.0.2.15/24 dev eth2",
        "ip route add default via 10.0.2.2 dev eth2",
    ]
    assert (tmp_path / "resolv.conf").read_text() == "nameserver 10.0.2.3\n"


def test_the_init_fills_in_the_servers_repository_name_without_a_process() -> None:
    """10-cvmfs.sh puts the repository's name for every ``@fqrn@`` of a server URL by the shell (an
    ``echo | sed`` in ``$()`` was three processes a server), literally: a character sed would read
    (``&``, ``/``) is no special one."""
    init = fused_init().decode()
    step = init[init.index("# ---- 10-cvmfs.sh ----") : init.index("# ---- 20-overlay.sh ----")]
    code = step[step.index("old_ifs=$IFS") : step.index("IFS=$old_ifs")]
    for repo, want in (
        ("demo.example", ["http://s1:8000/cvmfs/demo.example", "http://b/demo.example/x/demo.example/y"]),
        ("a&b/c", ["http://s1:8000/cvmfs/a&b/c", "http://b/a&b/c/x/a&b/c/y"]),
    ):
        r = subprocess.run(
            ["busybox", "sh", "-c", f"set -f; set --; {code}\nprintf '%s\\n' \"$@\""],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                "PATH": "/usr/bin:/bin",
                "CVMFS_SERVER": "s1:8000,http://b/@fqrn@/x/@fqrn@/y",
                "CVMFS_REPO": repo,
            },
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == ["--server", want[0], "--server", want[1]], r.stdout


def test_a_cloud_without_config_drives_is_asked_for_user_data_before_the_late_modules(tmp_path: Path) -> None:
    """03-context-drive.sh with fakes: on EC2 or GCE (their DMI names; no config drive or CD there)
    the metadata service is asked before the late modules load (~4.2 guest-s under TCG on a PC);
    when it has no user data the late disks are looked at, and it is not asked twice. Elsewhere
    (QEMU's DMI, or none readable) the disks come first, as before."""
    import shutil

    from cernvm_build.paths import data_dir

    boot = data_dir("bootloader")
    mnt, log, dev, dmi = tmp_path / "mnt", tmp_path / "calls.log", tmp_path / "dev", tmp_path / "dmi"
    mnt.mkdir()
    dev.mkdir()
    (dev / "vda").write_text("")
    cases = (
        ({"sys_vendor": "Amazon EC2", "product_name": "m5.large"}, "0", ["metadata"]),
        ({"sys_vendor": "Xen", "product_name": "HVM domU", "bios_version": "4.11.amazon"}, "0", ["metadata"]),
        ({"sys_vendor": "Google", "product_name": "Google Compute Engine"}, "0", ["metadata"]),
        ({"sys_vendor": "Amazon EC2", "product_name": "m5.large"}, "1", ["metadata", "late"]),
        ({"sys_vendor": "QEMU", "product_name": "Standard PC (i440FX)"}, "0", ["late", "metadata"]),
        ({}, "0", ["late", "metadata"]),
    )
    for files, rc, want in cases:
        shutil.rmtree(dmi, ignore_errors=True)
        dmi.mkdir()
        for name, text in files.items():
            (dmi / name).write_text(text + "\n")
        fake = (
            f"DEV_DIR={dev}; SYS_DMI={dmi}; NET_IF=eth0; METADATA_URL=; mkdir() {{ :; }}; "
            f"mount() {{ return 1; }}; "
            f'load_late_modules() {{ [ -z "$LATE" ] || return 1; LATE=1; echo late >>{log}; }}; '
            f"py_early() {{ echo metadata >>{log}; echo ec2; return {rc}; }}; "
        )
        script = (
            f". {boot / 'init.head.sh'}; CONTEXT_MNT={mnt}; FILESYSTEMS={tmp_path}/none; {fake}"
            f". {boot / 'init.d' / '03-context-drive.sh'}; echo source=$CONTEXT_SRC"
        )
        log.unlink(missing_ok=True)
        r = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert log.read_text().splitlines() == want, files
        assert ("source=metadata ec2" in r.stdout) == (rc == "0")
