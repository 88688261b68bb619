"""Hostile upstream metadata, hand-made (no rpmbuild, no dpkg: the verifiers only hash and parse):
what a client would read differently from the verifier is a problem, never a pass."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from cernvm_build.mirror.apt import verify_apt
from cernvm_build.mirror.source import LocalSource
from cernvm_build.mirror.yum import verify_yum


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def write(root: Path, rel: str, data: bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def primary_xml(pkgs: list[tuple[str, str, str, int]]) -> bytes:
    out = ['<?xml version="1.0"?><metadata xmlns="http://linux.duke.edu/metadata/common">']
    for name, href, digest, size in pkgs:
        out.append(
            f'<package type="rpm"><name>{name}</name><checksum type="sha256">{digest}</checksum>'
            f'<size package="{size}"/><location href="{href}"/></package>'
        )
    return "".join([*out, "</metadata>"]).encode()


def repomd(entries: list[tuple[str, str, bytes]]) -> bytes:
    out = ['<?xml version="1.0"?><repomd xmlns="http://linux.duke.edu/metadata/repo">']
    for kind, href, data in entries:
        out.append(
            f'<data type="{kind}"><checksum type="sha256">{sha(data)}</checksum>'
            f'<location href="{href}"/><size>{len(data)}</size></data>'
        )
    return "".join([*out, "</repomd>"]).encode()


def test_a_repomd_listing_a_data_type_twice_is_a_problem(tmp_path: Path) -> None:
    """dnf (librepo) reads the first ``primary``; a verifier keeping the last would never check the
    packages dnf installs (here: one whose hash does not match)."""
    good, evil = b"good package", b"tampered package!"
    write(tmp_path, "Packages/good.rpm", good)
    write(tmp_path, "Packages/evil.rpm", evil)
    first = gzip.compress(primary_xml([("evil", "Packages/evil.rpm", "0" * 64, len(evil))]))
    second = gzip.compress(primary_xml([("good", "Packages/good.rpm", sha(good), len(good))]))
    write(tmp_path, "repodata/a-primary.xml.gz", first)
    write(tmp_path, "repodata/b-primary.xml.gz", second)
    entries = [
        ("primary", "repodata/a-primary.xml.gz", first),
        ("primary", "repodata/b-primary.xml.gz", second),
    ]
    write(tmp_path, "repodata/repomd.xml", repomd(entries))
    problems = verify_yum(LocalSource(tmp_path)).problems
    assert "repodata/repomd.xml: data type 'primary' is listed twice" in problems
    write(tmp_path, "repodata/repomd.xml", repomd(entries[1:]))
    assert verify_yum(LocalSource(tmp_path)).problems == []


def stanza(name: str, filename: str, data: bytes, digest: str | None = None) -> str:
    return (
        f"Package: {name}\nVersion: 1\nArchitecture: all\nFilename: {filename}\nSize: {len(data)}\n"
        f"SHA256: {digest or sha(data)}\n\n"
    )


def apt_tree(root: Path, indexes: dict[str, bytes], pool: dict[str, bytes]) -> Path:
    for rel, data in pool.items():
        write(root, rel, data)
    lines = []
    for rel, data in indexes.items():
        write(root, f"dists/s/{rel}", data)
        lines.append(f" {sha(data)} {len(data)} {rel}")
    write(root, "dists/s/Release", ("Suite: s\nCodename: s\nSHA256:\n" + "\n".join(lines) + "\n").encode())
    return root


DEB = b"the real deb"


def test_a_pool_file_named_with_two_hashes_is_a_problem_whichever_comes_first(tmp_path: Path) -> None:
    """apt clients reading the other entry would get a hash-sum mismatch: every (file, hash, size)
    is kept and checked, and two of them for one file are a conflict."""
    wrong = stanza("a", "pool/a.deb", DEB, "1" * 64)
    right = stanza("a", "pool/a.deb", DEB)
    cases = {
        "two stanzas in one index": {"main/binary-amd64/Packages": (wrong + right).encode()},
        "binary-all first": {
            "main/binary-all/Packages": wrong.encode(),
            "main/binary-amd64/Packages": right.encode(),
        },
        "binary-amd64 wrong": {
            "main/binary-all/Packages": right.encode(),
            "main/binary-amd64/Packages": wrong.encode(),
        },
    }
    for i, (case, indexes) in enumerate(cases.items()):
        result = verify_apt(LocalSource(apt_tree(tmp_path / str(i), indexes, {"pool/a.deb": DEB})))
        assert any(p.startswith("pool/a.deb: conflicting hashes") for p in result.problems), case
        assert any("pool/a.deb: sha256 mismatch" in p for p in result.problems), case
        assert result.packages == 1
    same_twice = {"main/binary-amd64/Packages": (right + right).encode()}
    assert verify_apt(LocalSource(apt_tree(tmp_path / "ok", same_twice, {"pool/a.deb": DEB}))).problems == []


def test_component_release_files_of_a_real_debian_layout_are_not_suites(tmp_path: Path) -> None:
    """Debian and Ubuntu publish dists/<suite>/<component>/binary-<arch>/Release (listed in the
    suite's Release): the layout verifies, with one suite."""
    component = b"Archive: s\nComponent: main\nArchitecture: amd64\n"
    indexes = {
        "main/binary-amd64/Packages": stanza("a", "pool/a.deb", DEB).encode(),
        "main/binary-amd64/Release": component,
        "main/source/Release": component.replace(b"amd64", b"source"),
    }
    result = verify_apt(LocalSource(apt_tree(tmp_path, indexes, {"pool/a.deb": DEB})))
    assert (result.repos, result.problems, result.packages) == (["s"], [], 1)
