"""The shipped profiles: el4-el9 and demo load, and say what the issue asks of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cernvm_build import profile

SHIPPED = ["debian12", "demo", "el4", "el5", "el6", "el7", "el8", "el9"]


def test_list_profiles_shows_el4_to_el9_and_demo_but_not_building_blocks() -> None:
    assert profile.list_profiles() == SHIPPED
    assert {"base", "preserved"} <= set(profile.list_profiles(include_abstract=True))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_is_valid(name: str) -> None:
    p = profile.load(name)
    assert p.name == name
    assert p.source.name == f"{name}.yaml"
    assert p.inputs[-1] == p.source
    assert all(k.is_file() for k in p.cvmfs.public_keys)
    json.dumps(p.to_dict())  # JSON-ready


@pytest.mark.parametrize(
    ("name", "distribution", "release", "repository", "path", "frozen"),
    [
        ("el4", "SLC", 4, "cernvm-slc4.cern.ch", "/cvm3", True),
        ("el5", "SLC", 5, "cernvm-slc5.cern.ch", "/cvm3", True),
        ("el6", "SL", 6, "cernvm-prod.cern.ch", "/cvm3", True),
        ("el7", "CentOS", 7, "cernvm-prod.cern.ch", "/cvm4", False),
    ],
)
def test_platforms_of_the_issue(
    name: str, distribution: str, release: int, repository: str, path: str, frozen: bool
) -> None:
    p = profile.load(name)
    assert (p.os.distribution, p.os.release, p.cvmfs.repository, p.cvmfs.path) == (
        distribution,
        release,
        repository,
        path,
    )
    assert p.preservation.frozen is frozen
    if frozen:
        assert p.cvmfs.snapshot.pinned
        assert "vsyscall=emulate" in p.bootloader.cmdline


def test_el7_follows_head4_and_legacy_profiles_use_their_own_servers_and_keys() -> None:
    el7 = profile.load("el7")
    assert el7.cvmfs.snapshot.tag == "HEAD4" and not el7.cvmfs.snapshot.pinned
    assert "http://cvmfs-stratum-one.cern.ch/cvmfs/cernvm-prod.cern.ch" in el7.cvmfs.server_urls()
    el4 = profile.load("el4")
    # !replace: the production Stratum-1 list and CERN IT keys of base are not inherited
    assert el4.cvmfs.server_urls() == ["http://hepvm.cern.ch/cvmfs/cernvm-slc4.cern.ch"]
    assert [k.name for k in el4.cvmfs.public_keys] == ["cernvm-slc4.cern.ch.pub"]


def test_demo_profile_is_what_make_run_uses() -> None:
    p = profile.load("demo")
    assert p.cvmfs.repository == "demo.cernvm.test"
    assert p.cvmfs.path == "/"
    assert p.cvmfs.server_urls() == ["http://127.0.0.1:8000/cvmfs/demo.cernvm.test"]
    assert p.cvmfs.public_keys == [profile_keys() / "demo.cernvm.test.pub"]
    assert p.cvmfs.snapshot.tag == "trunk"
    assert not p.preservation.frozen
    assert p.image.formats == ["iso", "hdd", "qcow2"]
    assert p.container.formats == ["oci", "apptainer"]
    assert p.artifact_stem == "ucernvm-demo.2026.11-1.cernvm.x86_64"


def profile_keys() -> Path:
    from cernvm_build.paths import data_dir

    return data_dir("profiles") / "keys"


def test_demo_private_keys_match_the_shipped_public_key() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    keys = profile_keys()
    pub = serialization.load_pem_public_key((keys / "demo.cernvm.test.pub").read_bytes())
    master = serialization.load_pem_private_key((keys / "demo/demo.cernvm.test.masterkey").read_bytes(), None)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert master.public_key().public_bytes(*fmt) == pub.public_bytes(*fmt)
    cert = x509.load_pem_x509_certificate((keys / "demo/demo.cernvm.test.crt").read_bytes())
    key = serialization.load_pem_private_key((keys / "demo/demo.cernvm.test.key").read_bytes(), None)
    assert cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)
    assert "demo.cernvm.test CernVM-FS Release Managers" in cert.subject.rfc4514_string()


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(profile.ProfileError) as e:
        profile.load("el10")
    assert "el10" in str(e.value)
    assert e.value.hint is not None and "el7" in e.value.hint


def test_fingerprint_follows_the_settings_and_keys_not_the_location(tmp_path: Path) -> None:
    import shutil

    from cernvm_build.paths import data_dir

    copy = tmp_path / "profiles"
    shutil.copytree(data_dir("profiles"), copy)
    here, there = profile.load("el4"), profile.load(copy / "el4.yaml")
    assert here.fingerprint() == there.fingerprint()
    assert len(here.fingerprint()) == 64
    assert profile.load("el5").fingerprint() != here.fingerprint()
    # a different key file behind the same name changes it
    (copy / "keys" / "cernvm-slc4.cern.ch.pub").write_bytes(
        (copy / "keys" / "cern-it1.cern.ch.pub").read_bytes()
    )
    assert profile.load(copy / "el4.yaml").fingerprint() != here.fingerprint()
