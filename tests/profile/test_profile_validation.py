"""Checks across settings, and that validation reports every problem of a file."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_build import profile

Write = Callable[[str, str], Path]


def errors_of(path: Path) -> list[str]:
    return [str(e) for e in profile.check(path).errors]


def test_el6_needs_vsyscall_unless_a_reason_is_given(write: Write) -> None:
    legacy = "extends: minimal\nos: {release: 6}\n"
    assert any("vsyscall=emulate" in e for e in errors_of(write("a", legacy)))
    assert errors_of(write("b", legacy + "bootloader: {cmdline: [vsyscall=emulate]}\n")) == []
    reason = "bootloader: {no_vsyscall_reason: 'kernel built with LEGACY_VSYSCALL_EMULATE'}\n"
    p = profile.load(write("c", legacy + reason))
    assert p.bootloader.no_vsyscall_reason and p.bootloader.cmdline == []
    empty = write("d", legacy + "bootloader: {no_vsyscall_reason: ' '}\n")
    assert any("reason is empty" in e for e in errors_of(empty))


@pytest.mark.parametrize(
    "snapshot",
    ["{tag: cernvm-system-4.5.0.0}", "{date: '2021-01-31T00:00:00Z'}", "{root_hash: " + "ab" * 20 + "}"],
)
def test_a_frozen_profile_is_valid_with_any_pin(write: Write, snapshot: str) -> None:
    path = write("p", f"extends: minimal\ncvmfs: {{snapshot: {snapshot}}}\npreservation: {{frozen: true}}\n")
    p = profile.load(path)
    assert p.preservation.frozen and p.cvmfs.snapshot.pinned


@pytest.mark.parametrize("tag", ["trunk", "trunk-previous", "HEAD", "HEAD4"])
def test_rolling_tags_do_not_pin(write: Write, tag: str) -> None:
    path = write(
        "p", f"extends: minimal\ncvmfs: {{snapshot: {{tag: {tag}}}}}\npreservation: {{frozen: true}}\n"
    )
    assert any("rolling tag" in e for e in errors_of(path))


def test_own_kernel_instead_of_a_package(write: Write, tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "modules").mkdir()
    p = profile.load(
        write("p", "extends: minimal\nkernel: {package: null, vmlinuz: vmlinuz, modules: modules}\n")
    )
    assert p.kernel.package is None
    assert p.kernel.vmlinuz == tmp_path / "vmlinuz" and p.kernel.modules == tmp_path / "modules"
    both = write(
        "q", "extends: minimal\nkernel: {package: linux-image-amd64, vmlinuz: vmlinuz, modules: modules}\n"
    )
    assert any("not both" in e for e in errors_of(both))


def test_key_paths_are_relative_to_the_file_that_names_them(write: Write, tmp_path: Path) -> None:
    demo = profile.load("demo").cvmfs.public_keys[0]
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "my.pub").write_bytes(demo.read_bytes())
    write("parent", "extends: minimal\ncvmfs: {public_keys: !replace [keys/my.pub]}\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "child.yaml").write_text("extends: ../parent.yaml\n")
    assert profile.load(sub / "child.yaml").cvmfs.public_keys == [tmp_path / "keys" / "my.pub"]


def test_a_corrupt_key_is_reported(write: Write, tmp_path: Path) -> None:
    (tmp_path / "bad.pub").write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    path = write("p", "extends: minimal\ncvmfs: {public_keys: [bad.pub]}\n")
    assert any("p.yaml:2:" in e and "corrupt PEM public key" in e and "bad.pub" in e for e in errors_of(path))


def test_all_problems_of_a_file_are_reported_each_with_its_line(write: Write) -> None:
    text = (
        "extends: minimal\nimage: {formats: [iso, floppy]}\npreservation: {frozen: 'no'}\nos: {arch: sparc}\n"
    )
    errors = errors_of(write("p", text))
    assert len(errors) == 3, errors
    assert any(":2:" in e and "image.formats" in e and "floppy" in e for e in errors)
    assert any(":3:" in e and "preservation.frozen" in e for e in errors)
    assert any(":4:" in e and "os.arch" in e and "sparc" in e for e in errors)


def test_strings_keep_their_text_and_dates_stay_strings(write: Write) -> None:
    text = """
        extends: minimal
        bootloader: {version: 2026.10}
        cvmfs: {snapshot: {date: 2019-06-30T00:00:00Z}}
        context: {resize_rootfs: on, cvmfs_wait_on_squid: 030}
        """
    p = profile.load(write("p", text))
    assert p.bootloader.version == "2026.10"  # not the float 2026.1
    assert p.cvmfs.snapshot.date == "2019-06-30T00:00:00Z"
    assert p.context == {"resize_rootfs": "on", "cvmfs_wait_on_squid": "030"}


def test_windows_line_ends_and_a_byte_order_mark_are_fine(tmp_path: Path, write: Write) -> None:
    path = tmp_path / "dos.yaml"
    path.write_bytes(b"\xef\xbb\xbfextends: minimal\r\ndescription: from an editor on Windows\r\n")
    assert profile.load(path).description == "from an editor on Windows"


@pytest.mark.parametrize(
    ("key", "named"),
    [("cvmfs\u200b", "U+200B ZERO WIDTH SPACE"), ("\u0441vmfs", "U+0441 CYRILLIC SMALL LETTER ES")],
)
def test_a_key_that_only_looks_like_a_setting_says_which_character_differs(
    write: Write, key: str, named: str
) -> None:
    """'unknown setting (did you mean 'cvmfs'?)' of a key that reads 'cvmfs' explained nothing."""
    p = write("confusable", f"extends: minimal\n{key}:\n  repository: x.cern.ch\n")
    with pytest.raises(
        profile.ProfileError,
        match=re.escape(f"unknown setting (it holds {named}: names are ASCII) (did you mean 'cvmfs'?)"),
    ):
        profile.load(p)


def test_a_debian_release_out_of_range_is_one_error_not_also_el_s(write: Write) -> None:
    """``extends: debian12`` with ``os.release: 5``: the family's range error, and an EL5 vsyscall
    error beside it that says nothing about a Debian profile (pr19b finding 14)."""
    errors = errors_of(write("a", "extends: debian12\nos: {release: 5}\n"))
    assert len(errors) == 1 and "not a release of the 'debian' family (10..13)" in errors[0]
