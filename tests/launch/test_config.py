"""Configuration files and precedence, as the original cernvm-launch."""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build.errors import ConfigFileError, ImageError, UsageError
from cernvm_build.launch import config, create, images


@pytest.fixture(autouse=True)
def _umask_022() -> Iterator[None]:
    """The files written here are the user's own, writable by no one else, whatever the umask."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_defaults_are_the_originals(tmp_path: Path) -> None:
    s = config.resolve(global_file=tmp_path / "missing.conf")
    assert (s.cpus, s.memory, s.disk, s.api_port, s.cernvm_version) == (1, 2048, 20000, 22, "latest")


def test_precedence_cli_over_create_file_over_global(tmp_path: Path) -> None:
    glob = tmp_path / "global.conf"
    glob.write_text("# global\ncpus=2\nmemory=1024\ndisk=5000\n")
    per = tmp_path / "vm.conf"
    per.write_text("memory = 3000\n\n")
    s = config.resolve({"disk": 7000, "cpus": None, "shared_folder": Path("/srv/data")}, per, glob)
    assert s.cpus == 2  # global (CLI gave None)
    assert s.memory == 3000  # per-create file beats global
    assert s.disk == 7000  # command line beats both
    assert s.shared_folder == Path("/srv/data")


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ("cpus=many", "conf:2:6: cpus: 'many' is not a whole number"),
        ("memory=10", "conf:2:8: memory: 10M is out of range"),
        ("memory=-5", "conf:2:8: memory: -5 is out of range"),
        ("disk=lots", "conf:2:6: disk: 'lots' is not a size"),
        ("sharedFolder=relative/path", "sharedFolder: 'relative/path' is not an absolute path"),
        ("colour=blue", "conf:2:1: colour: unknown key 'colour'"),
        ("cpu=2", "unknown key 'cpu' (did you mean 'cpus'?)"),
        ("waitTimeout=soon", "waitTimeout: 'soon' is not a duration"),
        ("just text", "conf:2:1: expected key=value"),
    ],
)
def test_bad_files_name_file_line_and_key(tmp_path: Path, line: str, expect: str) -> None:
    conf = tmp_path / "conf"
    conf.write_text(f"cpus=1\n{line}\n")
    with pytest.raises(ConfigFileError) as e:
        config.parse_conf(conf)
    assert expect.replace("conf:", f"{conf}:") in str(e.value) or expect in str(e.value)


def test_missing_per_create_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="not found"):
        config.resolve(create_file=tmp_path / "nope.conf", global_file=tmp_path / "g")


def test_sizes_and_durations_take_units(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.write_text("memory=4G\ndisk=20G\nwaitTimeout=15m\n")
    s = config.resolve(global_file=conf)
    assert (s.memory, s.disk, s.wait_timeout) == (4096, 20480, 900)


def test_the_table_and_the_settings_name_the_same_fields() -> None:
    provenance = {"image_cached_only", "disk_url_cached_only"}
    fields = {f.name for f in dataclasses.fields(config.Settings)} - provenance
    assert {s.name for s in config.KEYS} == fields
    for s in config.KEYS:  # the defaults are the dataclass's own
        assert s.default == getattr(config.DEFAULTS, s.name), s.key


def test_flags_go_through_the_same_conversions_naming_the_flag() -> None:
    memory, cpus = config.BY_KEY["memory"], config.BY_KEY["cpus"]
    assert config.from_flags([(memory, "4G"), (cpus, "2")]) == {"memory": 4096, "cpus": 2}
    with pytest.raises(UsageError) as e:
        config.from_flags([(memory, "-5")])
    assert str(e.value) == "--memory: -5 is out of range"
    assert e.value.hint == "expected a size in 256M..4T (a bare number counts MiB)"


def test_files_others_could_write_or_that_are_no_files_are_refused(tmp_path: Path) -> None:
    """OpenSSH's rule for its own config: a file another user wrote (or could write) would choose the
    hypervisor, and with it what runs; a device or a FIFO is refused at once, not read forever."""
    conf = tmp_path / "conf"
    conf.write_text("cpus=2\n")
    conf.chmod(0o644)
    assert config.parse_conf(conf)["cpus"] == 2
    conf.chmod(0o666)
    with pytest.raises(ConfigFileError, match="writable by other users"):
        config.parse_conf(conf)
    if os.geteuid() == 0:  # only root may give a file away
        conf.chmod(0o644)
        os.chown(conf, 65534, 65534)
        with pytest.raises(ConfigFileError, match="owned by another user"):
            config.parse_conf(conf)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        with pytest.raises(ConfigFileError, match="not a regular file"):
            config.resolve(global_file=path)
    big = tmp_path / "big"
    big.write_text("#" * (1 << 20) + "\n")
    with pytest.raises(ConfigFileError, match="larger than 1 MiB"):
        config.parse_conf(big)


def _groups() -> tuple[int | None, int | None]:
    """A group of this user's own (its only member) and one it shares, among those this user may
    give a file (root: any), or None."""
    own = shared = None
    mine = set(os.getgroups()) | {os.getegid()}
    for g in grp.getgrall():
        if os.geteuid() != 0 and g.gr_gid not in mine:
            continue
        primary = {p.pw_uid for p in pwd.getpwall() if p.pw_gid == g.gr_gid}
        me = pwd.getpwuid(os.geteuid()).pw_name
        if primary <= {os.geteuid()} and g.gr_mem in ([], [me]) and (primary or g.gr_mem):
            own = g.gr_gid if own is None else own
        elif primary - {os.geteuid()} or set(g.gr_mem) - {me}:
            shared = g.gr_gid if shared is None else shared
    return own, shared


def test_a_group_writable_file_is_read_when_the_group_is_the_users_alone(tmp_path: Path) -> None:
    """As OpenSSH's ``secure_permissions``: umask 002 with user-private groups (Fedora, RHEL,
    Ubuntu) gives 0664 files, writable by no one else; a group with other members is refused."""
    own, shared = _groups()
    conf = tmp_path / "conf"
    conf.write_text("cpus=2\n")
    conf.chmod(0o664)
    if own is None and shared is None:
        pytest.skip("no group this user may give a file")
    if own is not None:
        os.chown(conf, -1, own)
        assert config.parse_conf(conf)["cpus"] == 2
    if shared is not None:
        os.chown(conf, -1, shared)
        with pytest.raises(ConfigFileError, match="writable by other users"):
            config.parse_conf(conf)


@pytest.mark.parametrize(
    "query",
    [
        "command=/tmp/evil.sh",
        "keyfile=/tmp/k",
        "no_verify=1",
        "x=1&Command=/x",
        "x=1;command=/tmp/evil.sh",  # libvirt also splits on ';'
        "%63ommand=/x",  # and unescapes the names
        "known_hosts_verify=ignore",
        "pkipath=/tmp/ca",
        "sshauth=privkey",
        "x=1#&command=/x",
    ],
)
def test_connect_from_a_per_create_file_takes_only_harmless_parameters(tmp_path: Path, query: str) -> None:
    """A per-create CONFIGURATION_FILE may come from someone else; the user's own global file (own,
    not writable by others) may name them, as ~/.ssh/config may name a ProxyCommand."""
    conf = tmp_path / "conf"
    conf.write_text(f"connect=qemu+ssh://127.0.0.1/system?{query}\n")
    conf.chmod(0o644)
    with pytest.raises(ConfigFileError, match=r"URI parameters .* not taken from a per-create file") as e:
        config.resolve(create_file=conf, global_file=tmp_path / "none")
    assert ":1:" in str(e.value) and "--connect" in str(e.value.hint)
    assert query in str(config.resolve(global_file=conf).connect)
    conf.write_text(
        "connect=qemu+ssh://127.0.0.1/system?known_hosts=/tmp/kh&Mode=direct;no_tty=1&socket=/s\n"
    )
    assert str(config.resolve(create_file=conf, global_file=tmp_path / "none").connect).endswith("/s")


def test_connect_params_are_read_as_libvirt_reads_them() -> None:
    assert config.connect_params("qemu+ext:///system?x=1;command=/e&%4Eo+Verify=1") == [
        "x",
        "command",
        "no verify",
    ]
    assert config.connect_params("qemu:///system") == []


@pytest.mark.parametrize(
    "line",
    [
        "sharedFolder=/home/u",
        "launchHomeFolder=/tmp/h",
        "releaseKeys=/tmp/author.asc",
        "imageIndexes=https://example.org/index.json",
        "diskPath=/home/u/.ssh/id_ed25519",
        "seed=/home/u/.ssh/id_ed25519",
        "image=/home/u/.ssh/id_ed25519",
        "image=~/.ssh/id_ed25519",
        "image=.netrc",
        "profile=/tmp/fake_secret.yaml",
        "profile=fake_secret.yaml",
    ],
)
def test_a_per_create_file_sets_nothing_that_reaches_the_hosts_files_or_trust(
    tmp_path: Path, line: str
) -> None:
    conf = tmp_path / "conf"
    conf.write_text(f"cpus=2\n{line}\n")
    conf.chmod(0o644)
    key = line.partition("=")[0]
    with pytest.raises(ConfigFileError, match="not taken from a per-create file") as e:
        config.resolve(create_file=conf, global_file=tmp_path / "none")
    assert f":2:{len(key) + 2}: {key}:" in str(e.value) and "~/.cernvm-launch.conf" in str(e.value.hint)
    config.resolve(global_file=conf)  # the user's own file may
    conf.write_text("cpus=2\nimage=demo-2026.11.hdd\n")  # a cached image's name is fine
    assert config.resolve(create_file=conf, global_file=tmp_path / "none").image == "demo-2026.11.hdd"


def test_a_per_create_files_image_is_only_a_cached_name_never_a_file_in_the_callers_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``image=id_ed25519`` run from ~/.ssh (or ``image=.netrc`` from ~) would boot that file as the
    guest's disk: from a handed file the name is only looked up in the image cache."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "id_ed25519").write_text("PRIVATE KEY\n")
    conf = tmp_path / "conf"
    conf.write_text("image=id_ed25519\n")
    conf.chmod(0o644)
    s = config.resolve(create_file=conf, global_file=tmp_path / "none")
    spec = create.InstanceSpec(settings=s, name="x", user_data=b"")
    cache = images.ImageCache(tmp_path / "home")
    with pytest.raises(ImageError, match=r"from the configuration file.* not a cached image"):
        images.resolve(cache, create.image_choice(spec, None))
    # the user's own --image (or --iso) may still name a file in the folder
    own = config.resolve({"image": "id_ed25519"}, create_file=conf, global_file=tmp_path / "none")
    for mine in (dataclasses.replace(spec, settings=own), dataclasses.replace(spec, image="id_ed25519")):
        assert images.resolve(cache, create.image_choice(mine, None)).path == tmp_path / "id_ed25519"


def test_a_key_that_only_looks_like_one_says_which_character_differs(tmp_path: Path) -> None:
    """'unknown key mеmory (did you mean memory?)' with a Cyrillic 'е' explained nothing."""
    conf = tmp_path / "c.conf"
    conf.write_text("m\u0435mory=4G\n")
    conf.chmod(0o600)
    with pytest.raises(ConfigFileError, match=r"it holds U\+0435 CYRILLIC SMALL LETTER IE: names are ASCII"):
        config.parse_conf(conf)


def test_release_keys_in_the_users_file_are_absolute_paths_with_tilde_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``releaseKeys`` decides which releases are trusted: ``~/key.asc`` was looked for in a folder
    named '~' of the working folder, and ``key.asc`` was whatever file of that name the working
    folder held (a downloaded release's own key, say), trusted as a signer."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    conf = tmp_path / "conf"
    conf.write_text("releaseKeys=~/cernvm.asc,/etc/cernvm/release.asc\n")
    conf.chmod(0o600)
    keys = config.resolve(global_file=conf).release_keys
    assert keys == (tmp_path / "user" / "cernvm.asc", Path("/etc/cernvm/release.asc"))
    conf.write_text("cpus=2\nreleaseKeys=/etc/a.asc,release.asc\n")
    with pytest.raises(ConfigFileError, match=r":2:13: releaseKeys: 'release.asc' is not an absolute path"):
        config.resolve(global_file=conf)


@pytest.mark.parametrize("network", ["a\x01b", "a/b", "x" * 201, "\u009b"])
def test_a_network_that_no_libvirt_network_can_be_named_is_refused_naming_the_flag_or_line(
    tmp_path: Path, network: str
) -> None:
    """It goes into the domain XML: a control character was libvirt's "PCDATA invalid Char value 1"
    about line 11 of a document the user never saw, not the flag or the file's line."""
    with pytest.raises(UsageError, match="invalid value") as e:
        config.from_flags([(config.BY_KEY["network"], network)])
    assert e.value.where == "--network" and e.value.hint == "expected a libvirt network's name"
    conf = tmp_path / "conf"
    conf.write_text(f"cpus=2\nnetwork={network}\n")
    conf.chmod(0o600)
    with pytest.raises(ConfigFileError, match=r":2:9: network: invalid value"):
        config.resolve(global_file=conf)
    assert config.from_flags([(config.BY_KEY["network"], "my-net_1.0 x")]) == {"network": "my-net_1.0 x"}


def test_the_users_file_as_a_dangling_link_a_bom_bad_bytes(tmp_path: Path) -> None:
    # pr24b finding 14: a dangling or looping ~/.cernvm-launch.conf was skipped in silence; an editor's
    # byte-order mark made the first key unknown; a bad byte's line said no line and no hint
    link = tmp_path / "cernvm-launch.conf"
    link.symlink_to(tmp_path / "on-a-disk-not-mounted.conf")
    with pytest.raises(ConfigFileError, match="symbolic link to nothing"):
        config.resolve(global_file=link)
    link.unlink()
    link.symlink_to(link.name)
    with pytest.raises(ConfigFileError, match="symbolic link to nothing"):
        config.resolve(global_file=link)
    link.unlink()
    link.write_bytes(b"\xef\xbb\xbfcpus=2\n")
    assert config.resolve(global_file=link).cpus == 2
    link.write_bytes(b"cpus=2\nname=caf\xe9\n")
    with pytest.raises(ConfigFileError) as e:
        config.resolve(global_file=link)
    assert str(e.value) == f"{link}:2: byte 0xe9 is not UTF-8" and e.value.hint == "save it as UTF-8"
