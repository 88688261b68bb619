"""extends: scalars override, mappings merge, lists append, !replace replaces, each file once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_build import profile

Write = Callable[[str, str], Path]


def test_scalars_override_mappings_merge_lists_append(write: Write) -> None:
    write(
        "parent",
        "extends: minimal\nbootloader: {cmdline: [quiet]}\ncontext: {resize_rootfs: 'on', cvmfs_tag: t1}\n",
    )
    child = write(
        "child",
        """
        extends: parent
        os: {release: 8}
        bootloader: {cmdline: [debug], release: 3}
        context: {cvmfs_tag: t2, cvmfs_wait_on_squid: '30'}
        """,
    )
    p = profile.load(child)
    assert p.os.release == 8  # overridden
    assert p.os.distribution == "AlmaLinux"  # merged from the parents' mapping
    assert p.bootloader.cmdline == ["quiet", "debug"]  # appended
    assert p.bootloader.version == "2026.11" and p.bootloader.release == 3
    assert p.context == {"resize_rootfs": "on", "cvmfs_tag": "t2", "cvmfs_wait_on_squid": "30"}
    assert p.extends == ["parent"]
    assert [f.name for f in p.inputs] == ["minimal.yaml", "parent.yaml", "child.yaml"]


def test_replace_tag_replaces_lists_and_mappings(write: Write) -> None:
    write("parent", "extends: minimal\nbootloader: {cmdline: [quiet]}\ncontext: {resize_rootfs: 'on'}\n")
    child = write(
        "child",
        """
        extends: parent
        bootloader: {cmdline: !replace [debug]}
        context: !replace {cvmfs_tag: t2}
        """,
    )
    p = profile.load(child)
    assert p.bootloader.cmdline == ["debug"]
    assert p.context == {"cvmfs_tag": "t2"}


def test_later_parents_override_earlier_ones_and_a_shared_grandparent_counts_once(write: Write) -> None:
    write("root", "extends: minimal\nbootloader: {cmdline: [from-root]}\n")
    write("left", "extends: root\nos: {release: 7}\nbootloader: {cmdline: [from-left]}\n")
    write("right", "extends: root\nos: {release: 8}\n")
    p = profile.load(write("child", "extends: [left, right]\n"))
    assert p.os.release == 8
    # root's list is not appended twice although both parents extend it
    assert p.bootloader.cmdline == ["from-root", "from-left"]
    assert [f.stem for f in p.inputs] == ["minimal", "root", "left", "right", "child"]


def test_null_resets_to_the_default_and_name_is_not_inherited(write: Write) -> None:
    write("parent", "extends: minimal\nname: fancy\ncvmfs: {http_proxy: 'http://squid:3128'}\n")

    p = profile.load(write("child", "extends: parent\ncvmfs: {http_proxy: null}\n"))
    assert p.cvmfs.http_proxy == "DIRECT"
    assert p.name == "child"
    assert profile.load(write("named", "extends: parent\nname: other\n")).name == "other"


def test_lists_of_unique_values_drop_inherited_duplicates(write: Write) -> None:
    write("parent", "extends: minimal\nimage: {formats: [iso, hdd]}\n")
    p = profile.load(write("child", "extends: parent\nimage: {formats: [hdd, qcow2]}\n"))
    assert p.image.formats == ["iso", "hdd", "qcow2"]


def test_parents_are_found_beside_the_profile_then_on_the_search_path(
    write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "site.yaml").write_text((tmp_path / "minimal.yaml").read_text())
    child = write("child", "extends: site\n")
    with pytest.raises(profile.ProfileError, match="parent profile 'site' not found"):
        profile.load(child)
    monkeypatch.setenv("CERNVM_PROFILE_PATH", str(elsewhere))
    assert profile.load(child).cvmfs.repository == "demo.cernvm.test"
    assert "site" in profile.list_profiles()
    # an explicit search path replaces the default one
    assert profile.load("site", search_path=[elsewhere]).name == "site"
    assert profile.list_profiles(search_path=[elsewhere]) == ["site"]


def test_parents_may_be_given_as_relative_paths(write: Write, tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "child.yaml").write_text("extends: ../minimal.yaml\n")
    assert profile.load(sub / "child.yaml").inputs[0] == tmp_path / "minimal.yaml"


def test_a_shipped_profile_can_be_extended_from_anywhere(write: Write) -> None:
    text = "extends: el7\ndescription: mine\nkernel: {package: linux-image-amd64}\n"
    p = profile.load(write("mine", text))
    assert p.cvmfs.repository == "cernvm-prod.cern.ch" and p.kernel.package == "linux-image-amd64"


def test_an_abstract_profile_cannot_be_loaded_alone() -> None:
    with pytest.raises(profile.ProfileError, match="abstract"):
        profile.load("base")
    assert profile.check("base").errors == []


def test_merged_lists_name_every_file_that_added_to_them(write: Write) -> None:
    write("parent", "extends: minimal\nbootloader: {cmdline: [quiet]}\n")
    child = write("child", "extends: parent\nbootloader: {cmdline: [debug]}\n")
    origin = profile.origins(child)["bootloader.cmdline"]
    assert "parent.yaml:2:" in origin and "child.yaml:2:" in origin


def test_an_edited_file_is_read_again(write: Write) -> None:
    path = write("p", "extends: minimal\ndescription: first\n")
    assert profile.load(path).description == "first"
    write("p", "extends: minimal\ndescription: second version\n")
    assert profile.load(path).description == "second version"
