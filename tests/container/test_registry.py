"""Registries, both ways, against a real registry (Debian's docker-registry) on 127.0.0.1: a signed
push verified with a policy.json, a tampered image refused, and `hub ingest` back into a hub from
which podman runs the image; the ingested tree is the pushed one, file for file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build import profile
from cernvm_build.cli.main import main
from cernvm_build.container.from_profile import build_profile
from cernvm_build.container.materialize import materialize
from cernvm_build.container.source import CvmfsTree
from cernvm_build.context import BuildContext
from cernvm_build.cvmfs.keys import generate_keys
from cernvm_build.cvmfs.publish import create_repository
from cernvm_build.cvmfs.repository import SnapshotSpec, open_repository
from cernvm_build.demo.repository import DemoRepository
from tests.support import free_port

from .podman import RUN, needs_podman, podman, store
from .trees import describe

__all__ = ["store"]  # the fixture

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("docker-registry"), reason="needs Debian's docker-registry"),
]

HUB = "unpacked.example.test"
KB = 1024


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("registry")
    port = free_port()
    (base / "config.yml").write_text(
        f"version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {base / 'data'}}}\n"
        f"  delete: {{enabled: true}}\nhttp: {{addr: '127.0.0.1:{port}'}}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(base / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the registry did not answer")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory, registry: str) -> dict[str, Path | str]:
    """A gpg key made here, skopeo's registries.d (signatures in a folder) and a policy.json that
    requires that key's signature for the registry."""
    base = tmp_path_factory.mktemp("signing")
    home = base / "gnupg"
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "CernVM test <test@cernvm.test>",
                    "ed25519", "sign", "never"], env=env, check=True, capture_output=True)  # fmt: skip
    listing = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys"], env=env, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    pub = base / "pub.gpg"
    pub.write_bytes(subprocess.run(["gpg", "--batch", "--export", fpr], env=env, check=True,
                                   capture_output=True).stdout)  # fmt: skip
    regd = base / "registries.d"
    regd.mkdir()
    sigs = base / "sigstore"
    (regd / "local.yaml").write_text(
        f"docker:\n  {registry}:\n    sigstore: file://{sigs}\n    sigstore-staging: file://{sigs}\n"
    )
    policy = base / "policy.json"
    policy.write_text(json.dumps({
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {registry: [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(pub)}]},
            "oci": {"": [{"type": "insecureAcceptAnything"}]},
            "dir": {"": [{"type": "insecureAcceptAnything"}]},
        },
    }))  # fmt: skip
    return {"home": home, "fpr": fpr, "regd": regd, "policy": policy, "sigs": sigs}


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory: pytest.TempPathFactory, demo_repo: DemoRepository) -> tuple[Path, Path]:
    """The demo image in several layers, and another image (one layer) to tamper with."""
    base = tmp_path_factory.mktemp("images")
    repo = demo_repo
    outs = []
    for name, layer_bytes in (("multi", 256 * KB), ("single", 64 << 20)):
        build_profile(profile.load("demo"), out_dir=base / name, formats=["oci"], sources=[str(repo.stratum)],
                      keys=[repo.public_key], snapshot=SnapshotSpec(tag="demo-1"), layer_bytes=layer_bytes,
                      ctx=BuildContext(epoch=0))  # fmt: skip
        outs.append(base / name / "demo.oci")
    return outs[0], outs[1]


def skopeo(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *argv], capture_output=True, text=True)


def push(
    image: Path,
    dest: str,
    signing: dict[str, Path | str],
    *,
    sign: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> dict[str, str]:
    monkeypatch.setenv("GNUPGHOME", str(signing["home"]))
    argv = [
        "container",
        "push",
        str(image),
        dest,
        "--no-tls-verify",
        "--registries-d",
        str(signing["regd"]),
        "--json",
    ]
    capsys.readouterr()
    assert main([*argv, *(["--sign-by", str(signing["fpr"])] if sign else [])]) == 0, capsys.readouterr().err
    doc: dict[str, str] = json.loads(capsys.readouterr().out)
    return doc


def verify(ref: str, signing: dict[str, Path | str], dest: Path) -> subprocess.CompletedProcess[str]:
    return skopeo("copy", "--policy", str(signing["policy"]), "--registries.d", str(signing["regd"]),
                  "--src-tls-verify=false", f"docker://{ref}", f"dir:{dest}")  # fmt: skip


def test_signed_push_verifies_and_a_tampered_image_does_not(
    registry: str,
    signing: dict[str, Path | str],
    demo_images: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    multi, single = demo_images
    ref = f"{registry}/cernvm/demo:signed"
    doc = push(multi, ref, signing, sign=True, monkeypatch=monkeypatch, capsys=capsys)
    assert doc["digest"].startswith("sha256:")
    ok = verify(ref, signing, tmp_path / "ok")
    assert ok.returncode == 0, ok.stderr
    # the registry holds the layers of the image, byte for byte
    manifest = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    local = json.loads((multi / "blobs" / "sha256" / doc["digest"][7:]).read_text())
    assert [x["digest"] for x in manifest["layers"]] == [x["digest"] for x in local["layers"]]
    # tampered: another image under the same tag, given the first one's signature
    other = push(single, ref, signing, sign=False, monkeypatch=monkeypatch, capsys=capsys)
    sigs = Path(str(signing["sigs"])) / "cernvm"  # skopeo's lookaside: <repo>@sha256=<hex>/signature-1
    shutil.copytree(sigs / f"demo@sha256={doc['digest'][7:]}", sigs / f"demo@sha256={other['digest'][7:]}")
    bad = verify(ref, signing, tmp_path / "bad")
    assert bad.returncode != 0
    assert "signature" in bad.stderr.lower()
    # and an unsigned image is refused by the same policy
    unsigned = push(single, f"{registry}/cernvm/demo:unsigned", signing, sign=False, monkeypatch=monkeypatch,
                    capsys=capsys)  # fmt: skip
    assert unsigned["digest"] == other["digest"]
    assert verify(f"{registry}/cernvm/demo:unsigned", signing, tmp_path / "bad2").returncode != 0


@needs_podman
def test_push_ingest_and_run_from_the_podman_store(
    registry: str,
    signing: dict[str, Path | str],
    demo_images: tuple[Path, Path],
    tmp_path: Path,
    store: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    multi, _ = demo_images
    push(multi, f"{registry}/cernvm/demo:demo-1", signing, sign=True, monkeypatch=monkeypatch, capsys=capsys)
    keys = generate_keys(HUB)
    keys.save(tmp_path / "keys")
    create_repository(tmp_path / "stratum", HUB, keys)
    argv = ["hub", "ingest", f"{registry}/cernvm/demo:demo-*", "--hub-stratum", str(tmp_path / "stratum"),
            "--hub-keys", str(tmp_path / "keys"), "--hub-fqrn", HUB, "--no-tls-verify",
            "--registries-d", str(signing["regd"]), "--policy", str(signing["policy"]), "--json"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    (image,) = json.loads(capsys.readouterr().out)["images"]
    assert image["meta"]["public_path"] == f"/{registry}/cernvm/demo:demo-1"
    assert len(image["meta"]["layers"]) == len(image["meta"]["chains"]) > 1
    # again: the hub has it, nothing is written
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["images"][0]["meta"]["unchanged"] is True
    # the hub as a client sees it (written out by the reader), podman runs the image from its store
    hub = tmp_path / "hub"
    hub.mkdir()
    with open_repository(
        tmp_path / "stratum", fqrn=HUB, public_keys=[tmp_path / "keys" / f"{HUB}.pub"]
    ) as repo:
        materialize(CvmfsTree(repo, "/"), hub, mtime=None)
    ro = hub / "podmanStore"
    opts = ["--storage-driver=overlay", "--storage-opt", f"additionalimagestore={ro}"]
    run = podman(store, *opts, *RUN, f"{registry}/cernvm/demo:demo-1", "cat", "/etc/os-release")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith('NAME="CernVM demo OS"\n')
    # the same tree: the last chain is the pushed image unpacked by umoci, file for file
    unpacked = tmp_path / "unpacked"
    subprocess.run(["umoci", "raw", "unpack", "--image", f"{multi}:demo-1", str(unpacked)], check=True)
    chain = hub / image["meta"]["chains"][-1].lstrip("/")
    assert describe(chain, ignore=frozenset({".cvmfscatalog"})) == describe(unpacked)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["hub", "ingest", "no-tag-here"], "is not an image name host/repo:tag"),
        (
            ["hub", "ingest", "127.0.0.1:9/cernvm/demo:1", "--no-tls-verify"],
            "inspect 127.0.0.1:9/cernvm/demo:1: ",
        ),
        (["container", "push", "/nonexistent.oci", "127.0.0.1:9/x/y:1"], "not an OCI layout"),
    ],
)
def test_bad_names_and_unreachable_registries_are_one_line_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if argv[0] == "hub":
        argv = [*argv, "--hub-stratum", str(tmp_path / "s"), "--hub-keys", str(tmp_path / "k")]
        keys = generate_keys(HUB)
        keys.save(tmp_path / "k")
        create_repository(tmp_path / "s", HUB, keys)
        argv += ["--hub-fqrn", HUB]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1
