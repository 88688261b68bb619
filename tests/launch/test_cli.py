"""cernvm-launch's command line: the original's verbs, flags and exit codes; one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from cernvm_build.cli.launch import main
from tests.launch.support import driver_host

URI = "test:///default"  # shared by every connection in this process, so one CLI call sees the last


@pytest.fixture
def cli(launch_env: Path) -> Iterator[None]:
    conn = libvirt.open(URI)  # the test driver keeps its state only while a connection is open
    yield
    for dom in conn.listAllDomains(0):
        if dom.name().startswith("cli-"):
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    conn.close()


def launch(*argv: str) -> int:
    return main(["--connect", URI, *argv], connect=driver_host)


def test_create_list_destroy(
    cli: None, image: Path, capsys: pytest.CaptureFixture[str], launch_env: Path
) -> None:
    assert (
        launch("create", "--name", "cli-a", "--iso", str(image), "--memory", "512", "--no-wait", "--yes") == 0
    )
    capsys.readouterr()
    assert launch("list") == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"cli-a:\tCVM: {image.name}\tport: ")  # the original's list line
    assert launch("list", "--json") == 0
    (entry,) = [e for e in json.loads(capsys.readouterr().out) if e["name"] == "cli-a"]
    assert (
        entry["memory"] == 512
        and entry["cpus"] == 1
        and entry["disk"] == 20000
        and entry["state"] == "running"
    )
    assert launch("list", "cli-a") == 0
    details = capsys.readouterr().out
    # -q is "only errors": the listing is left out, --json still answers (pr24b finding 2)
    assert launch("list", "-q") == 0 and launch("list", "cli-a", "-q") == 0
    assert capsys.readouterr().out == ""
    assert launch("list", "-q", "--json") == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == ["cli-a"]
    assert f"forwarded ports: 22 (VM) --> {entry['ssh_port']} (localhost)" in details
    assert launch("ip", "cli-a", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "name": "cli-a",
        "host": "127.0.0.1",
        "port": entry["ssh_port"],
    }
    # Running, no terminal: destroy asks nothing and names the flag that answers.
    assert launch("destroy", "cli-a") == 2
    assert "hint: pass --force" in capsys.readouterr().err
    assert launch("destroy", "--force", "cli-a") == 0
    assert not (launch_env / "run" / "cli-a").exists()


def test_configuration_file_and_user_data_positionals(cli: None, image: Path, tmp_path: Path) -> None:
    ud = tmp_path / "analysis.txt"
    ud.write_text("[amiconfig]\nplugins=cernvm\n")
    conf = tmp_path / "vm.conf"
    conf.write_text("cpus=2\nmemory=1024\n")  # a handed file may not name a host file (diskPath)
    argv = ("create", "--name", "cli-b", "--memory", "768", "--image", str(image), "--no-start")
    assert launch(*argv, str(ud), str(conf)) == 0
    dom = libvirt.open(URI).lookupByName("cli-b")
    assert dom.info()[1:4:2] == [768 * 1024, 2]  # memory from the CLI, cpus from the file
    assert not dom.isActive()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (["list", "--bogus"], 2, "unrecognized arguments: --bogus"),
        (["create", "--name", "a b", "--yes"], 2, "bad instance name 'a b': contains a space"),
        (["create", "--name", "cli-x"], 2, "stdin is not a terminal"),
        (["start", "cli-none"], 8, "no instance named 'cli-none'"),
        (["ssh", "cli-none", "--", "true"], 8, "no instance named 'cli-none'"),
        # a file the command line names: exit 2 as it is parsed (pr33b; it was 8 after resolving)
        (["create", "--name", "cli-x", "--iso", "/nonexistent.iso", "--yes"], 2, "no such file"),
        (
            ["create", "--name", "cli-x", "--image", "nonexistent-name", "--yes"],
            8,
            "neither a file nor a cached",
        ),
    ],
)
def test_bad_input_exit_codes(
    cli: None, argv: list[str], code: int, message: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) if code == 2 and argv[0] in ("frobnicate", "list") else _nothing():
        assert launch(*argv) == code
    err = capfd.readouterr().err
    assert message in err
    assert "Traceback" not in err


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> bool:
        return False


def test_exit_codes_of_argument_errors_in_a_real_process() -> None:
    run = [sys.executable, "-m", "cernvm_build.cli.launch"]
    assert subprocess.run([*run, "frobnicate"], capture_output=True).returncode == 2
    with pytest.raises(SystemExit) as e:
        main(["-v"])
    assert e.value.code == 0


def test_bad_configuration_file_is_exit_2(
    cli: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("memory=lots\n")
    (tmp_path / "ud").write_text("#cloud-config\n")  # there: a missing input is its own error (lf32a)
    assert launch("create", "--name", "cli-c", "--yes", str(tmp_path / "ud"), str(conf)) == 3
    assert f"{conf}:1:8: memory: 'lots' is not a size" in capsys.readouterr().err


def test_daemon_not_running_is_one_line(
    cli: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"qemu+unix:///system?socket={tmp_path}/missing.sock"
    assert main(["list", "--connect", uri]) == 8
    err = capsys.readouterr().err
    assert f"error: libvirt daemon is not running for {uri}" in err and "libvirtd -d" in err
    assert len(err.strip().splitlines()) == 2


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"])
def test_an_unreachable_remote_hypervisor_is_named(
    cli: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    """Not "start libvirtd": the daemon is on another machine, the way there failed."""
    uri = f"qemu+ssh://nobody@{host}:1/system?no_verify=1&known_hosts={tmp_path}/kh"
    assert main(["list", "--connect", uri]) == 8
    err = capsys.readouterr().err
    assert f"error: cannot reach {host.strip('[]')} over SSH for {uri}" in err
    assert "libvirtd -d" not in err and len(err.strip().splitlines()) == 2


def test_image_failing_verification_is_refused(
    cli: None, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(image, "r+b") as f:
        f.seek(100)
        f.write(b"X")  # one flipped byte
    assert launch("create", "--name", "cli-d", "--iso", str(image), "--yes", "--no-wait") == 8
    assert "image checksum mismatch" in capsys.readouterr().err
    assert "cli-d" not in libvirt.open(URI).listDefinedDomains()


def test_images_add_list_remove(
    cli: None, image: Path, capsys: pytest.CaptureFixture[str], launch_env: Path
) -> None:
    assert launch("images", "add", str(image), "--profile", "demo", "--json") == 0
    added = json.loads(capsys.readouterr().out)
    assert added["profile"] == "demo" and added["format"] == "hdd" and len(added["sha256"]) == 64
    assert launch("images", "list", "--json") == 0
    assert [i["name"] for i in json.loads(capsys.readouterr().out)] == [image.name]
    # With no image given, create boots the newest cached one.
    assert launch("create", "--name", "cli-e", "--yes", "--no-wait") == 0
    assert launch("list", "--json") == 0
    (entry,) = [e for e in json.loads(capsys.readouterr().out) if e["name"] == "cli-e"]
    assert entry["image"] == str(launch_env / "images" / image.name)
    # An image an instance boots from stays until the instance is gone.
    assert launch("images", "remove", image.name) == 8
    assert f"image '{image.name}' is in use by cli-e" in capsys.readouterr().err
    assert (launch_env / "images" / image.name).exists()
    assert launch("destroy", "--force", "cli-e") == 0
    assert launch("images", "remove", image.name) == 0
    assert launch("images", "remove", image.name) == 8


@pytest.mark.parametrize(
    "argv",
    [[], ["create"], ["list"], ["ssh"], ["scp"], ["images"], ["images", "pull"], ["stop"], ["console"]],
)
def test_help_on_every_level(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: cernvm-launch" in capsys.readouterr().out


def test_help_takes_the_command_it_is_asked_about(capsys: pytest.CaptureFixture[str]) -> None:
    """pr19d finding 10: `cernvm-launch help create` said "unrecognized arguments: create"."""
    assert main(["help", "create"]) == 0
    assert capsys.readouterr().out.startswith("usage: cernvm-launch create ")
    assert main(["help", "images", "add"]) == 0
    assert capsys.readouterr().out.startswith("usage: cernvm-launch images add ")
    assert main(["help"]) == 0
    assert capsys.readouterr().out.startswith("usage: cernvm-launch [-h]")
    assert main(["help", "images", "nope"]) == 2
    err = capsys.readouterr().err
    assert (
        "error: help: no command 'images nope'" in err
        and "hint: commands here: add, list, pull, remove" in err
    )


def _ova(tmp_path: Path, image: Path, *, tamper: bool = False) -> Path:
    import hashlib
    import tarfile

    vmdk = tmp_path / "boot.vmdk"
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-f", "raw", image, vmdk], check=True)
    ovf = tmp_path / "CernVM.ovf"
    ovf.write_text('<Envelope><References><File ovf:href="boot.vmdk"/></References></Envelope>\n')
    digest = hashlib.sha256(vmdk.read_bytes()).hexdigest()
    if tamper:
        digest = "0" * 64
    mf = tmp_path / "CernVM.mf"
    mf.write_text(
        f"SHA256(CernVM.ovf)= {hashlib.sha256(ovf.read_bytes()).hexdigest()}\nSHA256(boot.vmdk)= {digest}\n"
    )
    ova = tmp_path / "CernVM-old.ova"
    with tarfile.open(ova, "w") as tar:
        for f in (ovf, mf, vmdk):
            tar.add(f, arcname=f.name)
    return ova


def test_import_takes_the_boot_disk_of_an_ova(
    cli: None, image: Path, tmp_path: Path, launch_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ova = _ova(tmp_path, image)
    capsys.readouterr()
    # --json as for create (pr28c: import, which creates an instance too, had none)
    assert launch("import", "--name", "cli-ova", "--memory", "512", str(ova), "--json") == 0
    assert json.loads(capsys.readouterr().out)["name"] == "cli-ova"
    cached = launch_env / "images" / "CernVM-old.hdd"
    data, original = cached.read_bytes(), image.read_bytes()
    assert data[: len(original)] == original and not data[len(original) :].strip(b"\0")  # same disk, padded
    assert launch("list", "--json") == 0
    (entry,) = [e for e in json.loads(capsys.readouterr().out) if e["name"] == "cli-ova"]
    assert entry["image"] == str(cached) and entry["memory"] == 512


def test_import_refuses_a_disk_that_does_not_match_the_manifest(
    cli: None, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert launch("import", "--name", "cli-bad", str(_ova(tmp_path, image, tamper=True))) == 8
    assert "boot.vmdk does not match the OVA manifest" in capsys.readouterr().err


def test_diagnostics_print_brackets_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    """Names, paths and console lines are the user's text: rich markup must not eat '[...]'."""
    from cernvm_build.cli.app import Output

    out = Output(verbose=1)
    out.info("[ucernvm-begin] in /data/[run1]/x")
    out.detail("copied to /tmp/[b]")
    out.warn("image [bold]")
    with out.reporter() as r:
        r.step("creating [vm]")
    err = capsys.readouterr().err
    for text in (
        "[ucernvm-begin] in /data/[run1]/x",
        "copied to /tmp/[b]",
        "warning: image [bold]",
        "creating [vm]",
    ):
        assert text in err


def test_cvmfs_http_proxy_chain_reaches_the_bootloader_block(
    cli: None, image: Path, tmp_path: Path, launch_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = "http://10.0.2.2:3128|http://10.0.2.2:3129;http://10.0.2.2:3130;DIRECT"
    argv = ["create", "--name", "cli-p", "--iso", str(image), "--no-start", "--yes"]
    assert launch(*argv, "--cvmfs-http-proxy", chain) == 0
    iso = launch_env / "run" / "cli-p" / "context.iso"
    out = tmp_path / "ctx"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", out], check=True, capture_output=True
    )
    assert f"\ncvmfs_http_proxy={chain}\n".encode() in (out / "openstack/latest/user_data").read_bytes()
    capsys.readouterr()
    assert launch(*argv[:2], "cli-q", *argv[3:], "--cvmfs-http-proxy", "squid here;DIRECT") == 2
    err = capsys.readouterr().err
    assert "--cvmfs-http-proxy" in err and "Traceback" not in err


def _hostile_vmdk(tmp_path: Path, image: Path, secret: Path, *, embedded: bool) -> Path:
    """A VMDK whose extent is ``secret``: a text descriptor, or a sparse file of capacity 0 whose
    embedded descriptor names it (qemu then opens that descriptor's extents)."""
    descriptor = (
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
        f'RW 2048 FLAT "{secret}" 0\n'
    ).encode()
    vmdk = tmp_path / "boot.vmdk"
    if not embedded:
        vmdk.write_bytes(descriptor)
        return vmdk
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-f", "raw", image, vmdk], check=True)
    d = bytearray(vmdk.read_bytes())
    offset, size = int.from_bytes(d[28:36], "little") * 512, int.from_bytes(d[36:44], "little") * 512
    d[12:20] = bytes(8)  # capacity 0
    d[offset : offset + size] = descriptor.ljust(size, b"\0")
    vmdk.write_bytes(bytes(d))
    return vmdk


@pytest.mark.parametrize("embedded", [False, True], ids=["descriptor", "sparse-capacity-0"])
def test_import_refuses_an_ova_disk_that_names_host_files(
    cli: None,
    image: Path,
    tmp_path: Path,
    launch_env: Path,
    capsys: pytest.CaptureFixture[str],
    embedded: bool,
) -> None:
    """qemu-img convert copied the host file a VMDK's extent names (a user's private key) into the
    cached image, readable by all, which the OVA's guest then booted from."""
    import tarfile

    secret = tmp_path / "id_ed25519"
    secret.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----".ljust(1 << 20, b"k"))
    vmdk = _hostile_vmdk(tmp_path, image, secret, embedded=embedded)
    ovf = tmp_path / "CernVM.ovf"
    ovf.write_text('<Envelope><References><File ovf:href="boot.vmdk"/></References></Envelope>\n')
    ova = tmp_path / "evil.ova"
    with tarfile.open(ova, "w") as tar:
        for f in (ovf, vmdk):
            tar.add(f, arcname=f.name)
    assert launch("import", "--name", "evil", "--no-start", str(ova)) == 8
    err = capsys.readouterr().err
    assert "boot.vmdk" in err and "self-contained VMDK" in err and "Traceback" not in err
    cached = list((launch_env / "images").glob("*")) if (launch_env / "images").exists() else []
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in cached if p.is_file())


def test_import_streams_the_ova_disk(tmp_path: Path, launch_env: Path) -> None:
    """The disk was read whole into memory (an appliance's disk can be GBs): now streamed, the
    Python heap's peak stays far below its 24 MiB."""
    import os
    import tarfile
    import tracemalloc

    from cernvm_build.launch.images import ImageCache

    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\xeb\x3c".ljust(510, b"\0") + b"\x55\xaa" + os.urandom(24 << 20))
    vmdk = tmp_path / "boot.vmdk"
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-f", "raw", raw, vmdk], check=True)
    ovf = tmp_path / "CernVM.ovf"
    ovf.write_text('<Envelope><References><File ovf:href="boot.vmdk"/></References></Envelope>\n')
    ova = tmp_path / "big.ova"
    with tarfile.open(ova, "w") as tar:
        for f in (ovf, vmdk):
            tar.add(f, arcname=f.name)
    tracemalloc.start()
    try:
        got = ImageCache(launch_env).add_ova(ova)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.format == "hdd" and got.path.stat().st_size >= 24 << 20
    assert peak < 8 << 20, f"peak {peak} bytes"


@pytest.mark.parametrize("bad", ["0", "-3", "x", "100001"])
def test_console_lines_is_a_positive_count(cli: None, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--lines 0`` printed the whole tail and ``--lines -3`` all of it but its first 3 lines."""
    with pytest.raises(SystemExit) as e:
        launch("console", "nosuch", "--log", "--lines", bad)
    assert e.value.code == 2 and "--lines" in capsys.readouterr().err


def test_every_option_and_argument_of_every_verb_says_what_it_is_for() -> None:
    """``import --help`` listed --no-start, OVA_IMAGE_FILE and CONFIGURATION_FILE with no word, and
    ``images pull --help`` its --profile (a positional whose metavar names it, MACHINE_NAME, may)."""
    import argparse

    from cernvm_build.cli.launch import build_parser

    def leaves(p: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield path, p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    yield from leaves(sub, f"{path} {name}")

    silent = [
        f"{path}: {'/'.join(a.option_strings) or a.metavar or a.dest}"
        for path, p in leaves(build_parser(), "cernvm-launch")
        for a in p._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
        and a.help is None
        and (a.option_strings or path == "cernvm-launch import")
    ]
    assert silent == []


def test_import_names_the_cached_disk_by_the_image_name_rule(
    cli: None, image: Path, tmp_path: Path, launch_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr18c's leftover: an OVA named '.hidden.ova' was cached as '.hidden.hdd', which 'images list'
    never shows; the name is checked first, as 'images add' checks its names, and nothing is cached."""
    hidden = tmp_path / "h" / ".hidden.ova"
    hidden.parent.mkdir()
    _ova(tmp_path, image).rename(hidden)
    assert launch("import", "--name", "cli-hidden", str(hidden)) != 0
    err = capsys.readouterr().err
    assert "'.hidden.hdd' cannot name a cached image" in err and "Traceback" not in err
    assert not list((launch_env / "images").glob("*.hdd"))


def test_console_help_says_what_reaches_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """pr26b: the guest writes every byte of its console; the help said only "interactive on a
    terminal, else its log", not that the interactive console passes escape sequences on (as virsh
    console does) while the log is shown escaped on a terminal and as written into a pipe."""
    with pytest.raises(SystemExit):
        main(["console", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "escape sequences too" in text and "control characters escaped" in text
    assert "into a pipe or file it is the guest's text as written" in text


def test_context_summary_lines_are_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pr26b finding 12: a cloud-config key is any YAML string: "a\\n  SSH keys: 99" printed
    lines of its own in the summary of a context (which may come from a URL)."""
    ud = tmp_path / "ud.txt"
    ud.write_text('#cloud-config\n"a\\n  SSH keys: 99\\u202e": 1\nhostname: x\n')
    assert main(["context", str(ud)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == ["  cloud-config: a\\x0a  SSH keys: 99\\u202e, hostname", "  SSH keys: 0"]
