"""User data: the user's parts survive, launch's keys are added, the ucernvm block stays readable."""

from __future__ import annotations

import email

import pytest
import yaml

from cernvm_build.bootloader import userdata as bootloader_userdata
from cernvm_build.errors import ConfigFileError, UsageError
from cernvm_build.launch import keys, userdata

AMICONFIG = b"""[amiconfig]
plugins=cernvm
[cernvm]
users=alice:alice:secret
[ucernvm-begin]
cvmfs_branch=cernvm-prod.cern.ch
cvmfs_tag=HEAD4
[ucernvm-end]
"""

MULTIPART = b"""Content-Type: multipart/mixed; boundary="XYZ"
MIME-Version: 1.0

--XYZ
Content-Type: text/cloud-config; charset="us-ascii"

#cloud-config
ssh_authorized_keys:
  - ssh-ed25519 AAAAuser user@laptop
runcmd:
  - echo hi
--XYZ
Content-Type: text/amiconfig-user-data; charset="us-ascii"
Content-Transfer-Encoding: base64

W2FtaWNvbmZpZ10KcGx1Z2lucz1jZXJudm0K
--XYZ
Content-Type: text/ucernvm; charset="us-ascii"

[ucernvm-begin]
resize_rootfs=off
[ucernvm-end]
--XYZ--
"""


def _merged(data: bytes, **ucernvm: str) -> tuple[bytes, keys.KeyPair]:
    host = keys.generate("root@t")
    ud = userdata.merge(
        userdata.parse(data),
        hostname="t",
        authorized_keys=["ssh-ed25519 AAAAlaunch launch"],
        host_key_private=host.private_openssh,
        host_key_public=host.public_openssh,
        ucernvm=ucernvm,
    )
    return userdata.render(ud), host


def _parts(doc: bytes) -> dict[str, str]:
    msg = email.message_from_bytes(doc)
    assert msg.is_multipart()
    out = {}
    for part in msg.get_payload():  # type: ignore[union-attr]
        assert part.get("Content-Transfer-Encoding") in ("7bit", "8bit")  # line parsers must see plain text
        out[part.get_content_type()] = part.get_payload(decode=True).decode()
    return out


def test_amiconfig_kept_block_merged_and_plain() -> None:
    doc, host = _merged(AMICONFIG, cvmfs_server="10.0.2.2:8000", cvmfs_tag="v1")
    parts = _parts(doc)
    assert "users=alice:alice:secret" in parts["text/amiconfig-user-data"]
    assert "[ucernvm-begin]" not in parts["text/amiconfig-user-data"]  # exactly one block in the document
    assert doc.count(b"[ucernvm-begin]") == 1
    block = parts["text/ucernvm"].splitlines()
    assert block == [
        "[ucernvm-begin]",
        "cvmfs_branch=cernvm-prod.cern.ch",
        "cvmfs_tag=v1",  # the command line wins over the file
        "cvmfs_server=10.0.2.2:8000",
        "[ucernvm-end]",
    ]
    cc = parts["text/cloud-config"]
    assert cc.startswith("#cloud-config\n")
    loaded = yaml.safe_load(cc)
    assert loaded["ssh_keys"]["ed25519_private"] == host.private_openssh
    assert "ed25519_private: |" in cc  # PEM as a literal block, readable by simple parsers
    assert loaded["ssh_authorized_keys"] == ["ssh-ed25519 AAAAlaunch launch"]
    assert loaded["hostname"] == "t"


def test_multipart_parts_and_user_keys_survive() -> None:
    doc, _ = _merged(MULTIPART)
    parts = _parts(doc)
    cc = yaml.safe_load(parts["text/cloud-config"])
    assert cc["ssh_authorized_keys"] == ["ssh-ed25519 AAAAuser user@laptop", "ssh-ed25519 AAAAlaunch launch"]
    assert cc["runcmd"] == ["echo hi"]
    assert parts["text/amiconfig-user-data"] == "[amiconfig]\nplugins=cernvm\n"  # base64 part decoded to text
    assert "resize_rootfs=off" in parts["text/ucernvm"]


def test_gzip_user_data_is_read() -> None:
    import gzip

    doc, _ = _merged(gzip.compress(b"#cloud-config\nhostname: given\n"))
    assert yaml.safe_load(_parts(doc)["text/cloud-config"])["hostname"] == "given"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[ucernvm-begin]\ncvmfs_tag=x\n", "without"),
        (b"#cloud-config\nkey: [unclosed\n", "not valid YAML"),
        (b"[ucernvm-begin]\nnot a pair\n[ucernvm-end]\n", "expected key=value"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_user_data_is_one_clear_line(data: bytes, message: str) -> None:
    with pytest.raises(ConfigFileError, match=message) as e:
        userdata.parse(data, "ctx.txt")
    assert e.value.hint, "a line with no hint (pr33b: the cloud-config's YAML error had none)"


def test_unsafe_values_are_refused_by_the_bootloaders_table_naming_the_flag() -> None:
    with pytest.raises(UsageError) as e:
        _merged(b"", cvmfs_tag="x; rm -rf /")
    assert str(e.value) == "--snapshot: invalid value 'x; rm -rf /'"


def test_demo_os_reads_what_launch_writes(tmp_path: pytest.TempPathFactory) -> None:
    """The contract with the demo OS: its line-based parser finds the hostname, key and host key."""
    import subprocess
    from pathlib import Path

    from cernvm_build.paths import data_dir

    awk = data_dir("demo") / "rootfs/usr/libexec/demo/apply-user-data.awk"
    client = keys.generate("cernvm-launch@a-rather-long-instance-name-for-wrapping")
    host = keys.generate("root@demo")
    ud = userdata.merge(
        userdata.parse(AMICONFIG),
        hostname="demo-1",
        authorized_keys=[client.public_openssh],
        host_key_private=host.private_openssh,
        host_key_public=host.public_openssh,
        ucernvm={"cvmfs_server": "10.0.2.2:8000"},
    )
    out = Path(str(tmp_path))
    (out / "user-data").write_bytes(userdata.render(ud))
    subprocess.run(["awk", "-v", f"out={out}", "-f", awk, out / "user-data"], check=True)
    assert (out / "hostname").read_text() == "demo-1\n"
    assert (out / "authorized_keys").read_text() == client.public_openssh + "\n"
    assert (out / "hostkey_ed25519").read_text() == host.private_openssh


@pytest.mark.parametrize("awk_cmd", [["awk"], ["busybox", "awk"]])
def test_the_shared_folder_mount_reaches_the_demo_os_parser(tmp_path: object, awk_cmd: list[str]) -> None:
    """launch adds a cloud-config mounts entry; the demo OS (busybox awk) turns it into its mount list
    and drops entries that are not shared folders under /mnt."""
    import subprocess
    from pathlib import Path

    from cernvm_build.launch import domain
    from cernvm_build.paths import data_dir

    awk = data_dir("demo") / "rootfs/usr/libexec/demo/apply-user-data.awk"
    k = keys.generate("x")
    own = "#cloud-config\nmounts:\n- [/dev/vdz, /etc, ext4, defaults]\n- [b, /mnt/../etc, 9p, x]\n"
    ud = userdata.merge(
        userdata.parse(own.encode()),
        hostname="vm",
        authorized_keys=[k.public_openssh],
        host_key_private=k.private_openssh,
        host_key_public=k.public_openssh,
        mounts=[domain.shared_mount("vm", "9p"), domain.shared_mount("vm", "virtiofs")],
    )
    out = Path(str(tmp_path))
    (out / "user-data").write_bytes(userdata.render(ud))
    subprocess.run([*awk_cmd, "-v", f"out={out}", "-f", awk, out / "user-data"], check=True)
    assert (out / "mounts").read_text().splitlines() == [
        "vm_sf /mnt/shared/vm_sf 9p trans=virtio,version=9p2000.L,msize=262144",
        "vm_sf /mnt/shared/vm_sf virtiofs defaults",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("resize_rootfs=maybe", "ud.txt:3: resize_rootfs: 'maybe' is not on/off"),
        ("cvmfs_tagg=v1", "ud.txt:3: cvmfs_tagg: unknown key (did you mean 'cvmfs_tag'?)"),
        ("cvmfs_wait_on_squid=99999", "ud.txt:3: cvmfs_wait_on_squid: 99999 is out of range"),
    ],
)
def test_the_users_block_is_checked_by_the_bootloaders_table(line: str, message: str) -> None:
    # the bootloader would ignore these with a console message nobody reads: launch says so up front
    data = f"#!/bin/sh\n[ucernvm-begin]\n{line}\n[ucernvm-end]\n".encode()
    with pytest.raises(ConfigFileError) as e:
        userdata.parse(data, "ud.txt")
    assert str(e.value) == message


def test_quoted_values_in_the_block_are_accepted_as_the_bootloader_unquotes_them() -> None:
    ud = userdata.parse(b"[ucernvm-begin]\ncvmfs_tag='v1.2'\nresize_rootfs=\"off\"\n[ucernvm-end]\n", "ud")
    assert ud.ucernvm == {"cvmfs_tag": "'v1.2'", "resize_rootfs": '"off"'}


@pytest.mark.parametrize("name", ["no", "true", "01", "1_000", "null", "0x1F", "1e3"])
def test_nocloud_meta_data_names_stay_strings(name: str) -> None:
    """pr17b finding 7: meta-data is YAML, and valid instance names written plain were read by
    cloud-init as a boolean, a number or nothing."""
    from cernvm_build.launch.context import _files
    from cernvm_build.launch.names import validate_name

    validate_name(name)
    meta = yaml.safe_load(_files(b"", name, "i-" + name, {})["meta-data"])
    assert meta == {"instance-id": "i-" + name, "local-hostname": name}


def _gzip_parts(n: int, size: int) -> bytes:
    import base64
    import gzip

    part = base64.encodebytes(gzip.compress(b"#!/bin/sh\n" + b"#" * size + b"\n")).decode()
    body = "".join(
        f"--B\nContent-Type: text/x-shellscript\nContent-Transfer-Encoding: base64\n\n{part}\n"
        for _ in range(n)
    )
    return f'Content-Type: multipart/mixed; boundary="B"\nMIME-Version: 1.0\n\n{body}--B--\n'.encode()


def test_parts_inflating_past_what_the_guest_reads_are_refused_as_they_grow() -> None:
    """pr17b finding 9: each gzip part was capped, not their sum: 148 KB of parts became 105 MB
    (424 MB resident) of a document the initrd ignores whole. Three parts of 400 KB: the third is
    refused, naming the file."""
    data = _gzip_parts(3, 400_000)
    assert len(data) < 10_000
    with pytest.raises(ConfigFileError) as e:
        userdata.parse(data, "ctx.txt")
    assert e.value.where == "ctx.txt"
    assert e.value.message == (
        f"user data inflated (up to MIME part 3) is 1200033 bytes; "
        f"the bootloader ignores user data over {1 << 20} bytes"
    )
    assert userdata.MAX_DOCUMENT == bootloader_userdata.MAX_INFLATED
    userdata.parse(_gzip_parts(2, 400_000), "ctx.txt")  # under the limit: read


def test_a_document_launch_would_write_past_the_limit_is_refused_naming_the_file() -> None:
    """A file just under the limit is read, but launch's own parts (keys, hostname, headers) push the
    document past what the guest reads: it would be ignored whole, launch's keys with it, and launch
    would wait for SSH in vain. Refused before anything is made."""
    room = bootloader_userdata.MAX_INFLATED - 200
    ud = userdata.parse(b"#!/bin/sh\n" + b"#" * room + b"\n", "big.sh")
    host = keys.generate("root@t")
    merged = userdata.merge(
        ud,
        hostname="t",
        authorized_keys=["ssh-ed25519 AAAAlaunch launch"],
        host_key_private=host.private_openssh,
        host_key_public=host.public_openssh,
    )
    with pytest.raises(ConfigFileError) as e:
        userdata.render_within(merged, "big.sh")
    size = len(userdata.render(merged))
    assert e.value.where == "big.sh" and size > bootloader_userdata.MAX_INFLATED
    assert e.value.message.startswith(f"the user data launch writes (with its keys) is {size} bytes")
    small = userdata.merge(
        userdata.parse(b"#!/bin/sh\n", "s.sh"),
        hostname="t",
        authorized_keys=[],
        host_key_private=host.private_openssh,
        host_key_public=host.public_openssh,
    )
    assert userdata.render_within(small, "s.sh") == userdata.render(small)


def test_launch_reads_user_data_lines_as_the_guest_does() -> None:
    """r17 finding 3: launch split lines with str.splitlines, so ``# note<U+2028>cvmfs_server=evil``
    was a key to launch, which wrote it back as a line of its own, and the guest applied it; one
    line rule now (``bootloader.userdata.raw_lines``): the comment stays a comment, for both."""
    data = (
        "[ucernvm-begin]\n# note\u2028cvmfs_server=evil.example.org\ncvmfs_tag=t1\n[ucernvm-end]\n".encode()
    )
    ud = userdata.parse(data, "ud")
    assert ud.ucernvm == {"cvmfs_tag": "t1"}


def test_mime_parts_nested_too_deeply_are_one_line() -> None:
    """``email`` parses and walks nested multiparts recursively: 3,000 levels (200 KB, under the size
    cap) were a RecursionError traceback in create and context."""
    n = 3000
    text = 'Content-Type: multipart/mixed; boundary="b0"\nMIME-Version: 1.0\n\n'
    text += "".join(f'--b{i - 1}\nContent-Type: multipart/mixed; boundary="b{i}"\n\n' for i in range(1, n))
    text += f"--b{n - 1}\nContent-Type: text/cloud-config\n\nhostname: x\n--b{n - 1}--\n"
    text += "".join(f"--b{i}--\n" for i in range(n - 2, -1, -1))
    with pytest.raises(ConfigFileError, match="nested too deeply") as e:
        userdata.parse(text.encode(), "ctx.mime")
    assert str(e.value).startswith("ctx.mime: ")


@pytest.mark.parametrize("depth", [350, 400, 450, 500, 550])
def test_cloud_config_nested_too_deeply_to_write_back_is_one_line(depth: int) -> None:
    """PyYAML's dumper takes more frames per level than its loader: 400 levels of ``[`` loaded and
    were a RecursionError traceback when launch wrote the document."""
    text = "#cloud-config\nx: " + "[" * depth + "]" * depth + "\n"
    try:
        ud = userdata.parse(text.encode(), "ud.yaml")
        merged = userdata.merge(
            ud, hostname="h", authorized_keys=[], host_key_private="k", host_key_public="p"
        )
        userdata.render_within(merged, "ud.yaml")
    except ConfigFileError as e:
        assert e.where == "ud.yaml"


@pytest.mark.parametrize(
    "text",
    [
        "#cloud-config\nhostname: bomhost\n",
        'Content-Type: multipart/mixed; boundary="b"\nMIME-Version: 1.0\n\n--b\n'
        "Content-Type: text/cloud-config\n\n#cloud-config\nhostname: bomhost\n--b--\n",
    ],
)
def test_a_bom_before_cloud_config_or_mime_is_dropped(text: str) -> None:
    """Notepad's BOM before '#cloud-config' made the user's cloud-config a text/plain part: its
    keys (hostname, login keys) were silently not merged and no guest read them."""
    ud = userdata.parse(("\ufeff" + text).encode(), "ud.txt")
    assert ud.cloud_config == {"hostname": "bomhost"}
    assert ud.parts == []


def _targz(name: str, data: bytes = b"x") -> str:
    import base64
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize(
    ("payload", "message"),
    [("aGVsbG8=", "is not a .tar.gz"), (_targz("../etc/x"), "'..' component")],
    ids=["not-a-tar-gz", "dot-dot"],
)
def test_an_inject_payload_the_guest_refuses_is_refused_naming_the_line(payload: str, message: str) -> None:
    """``context`` called base64 that is no .tar.gz, or a member the guest's unpacker refuses, a valid
    context; only the boot console said "nothing applied"."""
    text = f"#!/bin/sh\n[ucernvm-begin]\ncernvm_inject={payload}\n[ucernvm-end]\n"
    with pytest.raises(ConfigFileError, match=message) as e:
        userdata.parse(text.encode(), "ud.txt")
    assert e.value.where == "ud.txt:3: cernvm_inject"
    ok = f"[ucernvm-begin]\ncernvm_inject={_targz('etc/motd')}\n[ucernvm-end]\n"
    assert "cernvm_inject" in userdata.parse(ok.encode(), "ud.txt").ucernvm


@pytest.mark.parametrize("key", ["ssh_authorized_keys", "mounts"])
def test_a_merged_cloud_config_key_that_is_no_list_is_refused_when_read_naming_the_file(key: str) -> None:
    """``context`` called ``ssh_authorized_keys: ssh-ed25519 AAAA`` valid; create then refused it
    naming only "user data"."""
    with pytest.raises(ConfigFileError, match=f"{key} must be a list") as e:
        userdata.parse(f"#cloud-config\n{key}: ssh-ed25519 AAAA me\n".encode(), "ud.yaml")
    assert e.value.where == f"ud.yaml: {key}"


@pytest.mark.timeout(60)
def test_user_data_of_blank_lines_is_classified_in_linear_time() -> None:
    """The amiconfig test's ``^\\s*`` spanned lines: a 160 KB file of empty lines took 27 s of
    ``context``, 1 MiB (what the guest reads) about 20 min; a section header is still found."""
    assert userdata.parse(b"x\n" + b"\n" * ((1 << 20) - 8), "ud.txt").parts[0].content_type == "text/plain"
    ami = userdata.parse(b"\n  [cernvm] \r\nusers=a\r\n", "ud.txt")
    assert ami.parts[0].content_type == "text/amiconfig-user-data"


def test_a_long_key_or_value_is_named_by_its_start_not_echoed_whole() -> None:
    """A 100 KB key or value in the block was a 100 KB error line (the bootloader cuts at 40/80)."""
    for line in ("k" * 100_000 + "=1", "cvmfs_tag=" + "!" * 100_000):
        with pytest.raises(ConfigFileError) as e:
            userdata.parse(f"[ucernvm-begin]\n{line}\n[ucernvm-end]\n".encode(), "ud.txt")
        assert len(str(e.value)) < 300


@pytest.mark.parametrize("awk_cmd", [["awk"], ["busybox", "awk"]])
def test_a_login_key_with_sshd_options_reaches_the_os_without_cloud_init(
    tmp_path: object, awk_cmd: list[str]
) -> None:
    """The initrd's parser (26-ssh-keys, the demo OS) dropped a key with an options prefix without a
    word: on an OS without cloud-init the user's own key did not log in."""
    import subprocess
    from pathlib import Path

    from cernvm_build.paths import data_dir

    awk = data_dir("demo") / "rootfs/usr/libexec/demo/apply-user-data.awk"
    own = 'from="10.0.0.0/8",no-port-forwarding ssh-ed25519 AAAAC3user me@x'
    cc = f"#cloud-config\nssh_authorized_keys:\n  - {own}\n  - not a key\n"
    ud = userdata.merge(
        userdata.parse(cc.encode()),
        hostname="h",
        authorized_keys=["ssh-ed25519 AAAAlaunch l"],
        host_key_private="k\n",
        host_key_public="p",
    )
    out = Path(str(tmp_path))
    (out / "user-data").write_bytes(userdata.render(ud))
    subprocess.run([*awk_cmd, "-v", f"out={out}", "-f", awk, out / "user-data"], check=True)
    assert (out / "authorized_keys").read_text() == f"{own}\nssh-ed25519 AAAAlaunch l\n"


@pytest.mark.parametrize("awk_cmd", [["awk"], ["busybox", "awk"]])
def test_the_initrd_parser_reads_only_cloud_config_parts(tmp_path: object, awk_cmd: list[str]) -> None:
    """The initrd's parser (26-ssh-keys, the demo OS) read hostname:/ssh_keys: lines from every MIME
    part: a user's script or text part appended to the pinned host key, sshd could not load it and
    launch waited for SSH. Only cloud-config counts, as cloud-init decides."""
    import subprocess
    from pathlib import Path

    from cernvm_build.paths import data_dir

    awk = data_dir("demo") / "rootfs/usr/libexec/demo/apply-user-data.awk"
    noise = "hostname: evil\nssh_authorized_keys:\n  - ssh-ed25519 AAAAnoise n\n"
    noise += "ssh_keys:\n  ed25519_private: |\n    NOISE\n"
    user = (
        'Content-Type: multipart/mixed; boundary="U"\nMIME-Version: 1.0\n\n'
        f"--U\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n{noise}"
        f"--U\nContent-Type: text/plain\n\nnotes\n{noise}--U--\n"
    )
    ud = userdata.merge(
        userdata.parse(user.encode()),
        hostname="h",
        authorized_keys=["ssh-ed25519 AAAAlaunch l"],
        host_key_private="KEY\n",
        host_key_public="p",
    )
    out = Path(str(tmp_path))
    (out / "user-data").write_bytes(userdata.render(ud))
    subprocess.run([*awk_cmd, "-v", f"out={out}", "-f", awk, out / "user-data"], check=True)
    assert (out / "hostkey_ed25519").read_text() == "KEY\n"
    assert (out / "authorized_keys").read_text() == "ssh-ed25519 AAAAlaunch l\n"
    assert (out / "hostname").read_text() == "h\n"
    # a single document: cloud-config only if it starts with #cloud-config
    for f in ("hostkey_ed25519", "authorized_keys", "hostname"):
        (out / f).unlink()
    (out / "user-data").write_text(f"#!/bin/sh\n{noise}")
    subprocess.run([*awk_cmd, "-v", f"out={out}", "-f", awk, out / "user-data"], check=True)
    assert sorted(p.name for p in out.iterdir()) == ["user-data"]
    (out / "user-data").write_text(f"\n#cloud-config\n{noise}")
    subprocess.run([*awk_cmd, "-v", f"out={out}", "-f", awk, out / "user-data"], check=True)
    assert (out / "hostname").read_text() == "evil\n"


def test_cr_only_user_data_is_read_as_lines_by_launch_and_the_guest() -> None:
    """User data saved with CR-only line ends (old Mac): neither launch nor the initrd found the
    block, and `context` called it valid. A lone CR ends a line for both, as for cloud-init (YAML,
    the email parser); the cloud-config after the block is still merged."""
    lf = "[ucernvm-begin]\ncvmfs_tag=t1\nresize_rootfs=off\n[ucernvm-end]\n[section]\nx = 1\n"
    text = lf.replace("\n", "\r")
    ud = userdata.parse(text.encode(), "ud")
    assert ud.ucernvm == {"cvmfs_tag": "t1", "resize_rootfs": "off"}
    assert [p.content_type for p in ud.parts] == [p.content_type for p in userdata.parse(lf.encode()).parts]
    assert bootloader_userdata.parse(text.encode()).values == {"cvmfs_tag": "t1", "resize_rootfs": "0"}
    mime = (
        'Content-Type: multipart/mixed; boundary="B"\nMIME-Version: 1.0\n\n'
        "--B\nContent-Type: text/ucernvm\n\n[ucernvm-begin]\ncvmfs_tag=t1\n[ucernvm-end]\n"
        "--B\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: mac\n--B--\n"
    ).replace("\n", "\r")
    ud = userdata.parse(mime.encode(), "ud")
    assert (ud.ucernvm, ud.cloud_config) == ({"cvmfs_tag": "t1"}, {"hostname": "mac"})
    assert bootloader_userdata.parse(mime.encode()).values == {"cvmfs_tag": "t1"}
    # CRLF and LF as before; a lone CR between two keys now ends a line on both sides
    crlf = "[ucernvm-begin]\r\ncvmfs_tag=t2\r\n[ucernvm-end]\r\n"
    assert userdata.parse(crlf.encode(), "ud").ucernvm == {"cvmfs_tag": "t2"}
    assert bootloader_userdata.raw_lines("a\r\nb\rc\nd") == ["a\r\n", "b\r", "c\n", "d"]


@pytest.mark.parametrize("awk_cmd", [["awk"], ["busybox", "awk"]])
def test_the_initrd_key_parser_reads_cr_only_user_data(tmp_path: object, awk_cmd: list[str]) -> None:
    """User data not written by launch reaches 26-ssh-keys and the demo OS as given: a CR-only (old
    Mac) cloud-config was one line to the awk, and its hostname and keys were not applied."""
    import subprocess
    from pathlib import Path

    from cernvm_build.paths import data_dir

    awk = data_dir("demo") / "rootfs/usr/libexec/demo/apply-user-data.awk"
    out = Path(str(tmp_path))
    for eol in ("\r", "\r\n", "\n"):
        cc = "#cloud-config\nhostname: mac\nssh_authorized_keys:\n  - ssh-ed25519 AAAAk u\n"
        cc += "ssh_keys:\n  ed25519_private: |\n    K1\n    K2\n"
        (out / "user-data").write_bytes(cc.replace("\n", eol).encode())
        subprocess.run([*awk_cmd, "-v", f"out={out}", "-f", awk, out / "user-data"], check=True)
        assert (out / "hostname").read_text() == "mac\n"
        assert (out / "authorized_keys").read_text() == "ssh-ed25519 AAAAk u\n"
        assert (out / "hostkey_ed25519").read_text() == "K1\nK2\n"
        for f in ("hostname", "authorized_keys", "hostkey_ed25519"):
            (out / f).unlink()


def test_a_key_repeated_many_times_gives_a_bounded_number_of_warnings() -> None:
    """A block of one key repeated (a 1 MiB document holds ~50,000 lines) gave one warning line each:
    ten are shown, the rest counted in one line; the last value still counts."""
    body = "".join(f"cvmfs_tag=v{i}\n" for i in range(1000))
    ud = userdata.parse(f"[ucernvm-begin]\n{body}[ucernvm-end]\n".encode(), "ud")
    assert ud.ucernvm["cvmfs_tag"] == "v999"
    assert len(ud.warnings) == userdata.MAX_REPEAT_WARNINGS + 1
    first = "ud:3: cvmfs_tag is given again (first on line 2); the bootloader takes this last value"
    more = f"ud: {999 - userdata.MAX_REPEAT_WARNINGS} more keys given again in the ucernvm block"
    assert ud.warnings[0] == first and ud.warnings[-1] == more
