"""Registries, both ways, against a real registry (Debian's docker-registry) on 127.0.0.1: a signed
push verified with a policy.json, a tampered image refused, and `hub ingest` back into a hub from
which podman runs the image; the ingested tree is the pushed one, file for file."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build import profile
from cernvm_build.cli.main import main
from cernvm_build.container import manifest_list
from cernvm_build.container.from_profile import build_profile
from cernvm_build.container.image import canonical, digest_of
from cernvm_build.container.materialize import materialize
from cernvm_build.container.source import CvmfsTree
from cernvm_build.context import BuildContext
from cernvm_build.cvmfs.keys import generate_keys
from cernvm_build.cvmfs.publish import create_repository
from cernvm_build.cvmfs.repository import SnapshotSpec, open_repository
from cernvm_build.demo.repository import DemoRepository
from cernvm_build.fsutil import locked_scratch
from tests.support import free_port, gpgagents
from tests.support.tars import gzip_layer

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
def signing(
    tmp_path_factory: pytest.TempPathFactory, registry: str, request: pytest.FixtureRequest
) -> dict[str, Path | str]:
    """A gpg key made here, skopeo's registries.d (signatures in a folder) and a policy.json that
    requires that key's signature for the registry; the gpg-agent of its home is stopped after."""
    base = tmp_path_factory.mktemp("signing")
    home = base / "gnupg"
    home.mkdir(mode=0o700)
    request.addfinalizer(lambda: gpgagents.stop(home))  # gpg and skopeo's signing start its agent
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


def _hub(tmp_path: Path) -> list[str]:
    """A new hub repository (keys and stratum in ``tmp_path``) and the ``--hub-*`` options naming it."""
    keys = generate_keys(HUB)
    keys.save(tmp_path / "keys")
    create_repository(tmp_path / "stratum", HUB, keys)
    return [
        "--hub-stratum",
        str(tmp_path / "stratum"),
        "--hub-keys",
        str(tmp_path / "keys"),
        "--hub-fqrn",
        HUB,
    ]


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
    argv = ["hub", "ingest", f"{registry}/cernvm/demo:demo-*", *_hub(tmp_path), "--no-tls-verify",
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
        (["container", "push", "/nonexistent.oci", "127.0.0.1:9/x/y:1"], "/nonexistent.oci: no such file"),
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


def _two_arch_layout(image: Path, dest: Path) -> tuple[str, str]:
    """``image`` (a layout of the demo, amd64) copied with a tag ``multi``: an OCI index of it and of
    a second platform made by hand (the same layer, an arm64 config: no arm64 build is at hand).
    Returns the two manifest digests (amd64, arm64)."""
    shutil.copytree(image, dest)
    blobs = dest / "blobs" / "sha256"
    index = json.loads((dest / "index.json").read_text())
    desc = next(m for m in index["manifests"] if m["mediaType"] == manifest_list.OCI_MANIFEST)
    manifest = json.loads((blobs / desc["digest"][7:]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())

    def put(doc: object) -> tuple[str, int]:
        data = canonical(doc)
        (blobs / digest_of(data)[7:]).write_bytes(data)
        return digest_of(data), len(data)

    arm_cfg, arm_cfg_size = put(dict(config, architecture="arm64"))
    arm, arm_size = put(dict(manifest, config=dict(manifest["config"], digest=arm_cfg, size=arm_cfg_size)))
    entries = [
        {"mediaType": manifest_list.OCI_MANIFEST, "digest": d, "size": s,
         "platform": {"os": "linux", "architecture": a}}
        for d, s, a in ((desc["digest"], desc["size"], "amd64"), (arm, arm_size, "arm64"))
    ]  # fmt: skip
    idx, idx_size = put({"schemaVersion": 2, "mediaType": manifest_list.OCI_INDEX, "manifests": entries})
    index["manifests"].append({"mediaType": manifest_list.OCI_INDEX, "digest": idx, "size": idx_size,
                               "annotations": {"org.opencontainers.image.ref.name": "multi"}})  # fmt: skip
    (dest / "index.json").write_text(json.dumps(index))
    return desc["digest"], arm


def test_ingest_of_a_manifest_list_publishes_every_platform(
    registry: str, demo_images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, single = demo_images
    amd64, arm64 = _two_arch_layout(single, tmp_path / "multi.oci")
    ref = f"{registry}/cernvm/multi:1"
    copy = skopeo(
        "copy", "--all", "--dest-tls-verify=false", f"oci:{tmp_path / 'multi.oci'}:multi", f"docker://{ref}"
    )
    assert copy.returncode == 0, copy.stderr
    again = skopeo("copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{ref}",
                   f"docker://{ref[:-1]}2")  # fmt: skip
    assert again.returncode == 0, again.stderr
    hub = _hub(tmp_path)
    argv = ["hub", "ingest", ref, *hub, "--no-tls-verify", "--json"]
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    images = json.loads(capsys.readouterr().out)["images"]
    paths = [i["meta"]["public_path"] for i in images]
    assert paths == [f"/{ref}-linux-amd64", f"/{ref}-linux-arm64", f"/{ref}"]
    by = {p: i for p, i in zip(paths, images, strict=True)}
    assert by[f"/{ref}"]["meta"]["flat"] == by[f"/{ref}-linux-amd64"]["meta"]["flat"]
    assert by[f"/{ref}-linux-arm64"]["meta"]["flat"] != by[f"/{ref}"]["meta"]["flat"]
    assert by[f"/{ref}-linux-arm64"]["sha256"] == arm64[7:] and by[f"/{ref}"]["sha256"] == amd64[7:]
    # the arm64 image shares the layers and their chains: only the layers' origin lists change
    arm_published = by[f"/{ref}-linux-arm64"]["meta"]["published"]
    shared = [p for p in arm_published if p.startswith(("/.layers", "/.chains"))]
    assert shared and all(p.endswith("/.metadata/origin.json") for p in shared)
    with open_repository(
        tmp_path / "stratum", fqrn=HUB, public_keys=[tmp_path / "keys" / f"{HUB}.pub"]
    ) as repo:
        for p in paths:
            link = repo.lookup(p)
            assert link is not None and link.is_symlink and link.symlink.endswith(by[p]["meta"]["flat"])
        store = json.loads(repo.read_bytes(repo.lookup("/podmanStore/overlay-images/images.json")))
    names = {r["id"]: r["names"] for r in store}
    assert names[by[f"/{ref}"]["meta"]["flat"].rsplit("/", 1)[1]] == [
        f"{ref[:-2]}:1",
        f"{ref[:-2]}:1-linux-amd64",
        f"{ref[:-2]}:latest",  # the plain tag's image (the default platform) is the latest
    ]
    # a platform whose manifest is gone from the registry: one line, nothing half-published
    revision = images[-1]["meta"]["revision"]
    req = urllib.request.Request(f"http://{registry}/v2/cernvm/multi/manifests/{arm64}", method="DELETE")
    assert urllib.request.urlopen(req, timeout=10).status == 202
    assert main(["hub", "ingest", f"{ref[:-1]}2", *hub, "--no-tls-verify"]) != 0
    err = capsys.readouterr().err
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1 and "Traceback" not in err
    assert f"{ref[:-1]}2" in err
    with open_repository(
        tmp_path / "stratum", fqrn=HUB, public_keys=[tmp_path / "keys" / f"{HUB}.pub"]
    ) as repo:
        assert repo.revision == revision
    # a tag of its own under a platform image's hub name: refused before any pull, not overwritten
    clash = skopeo(
        "copy", "--dest-tls-verify=false", f"oci:{single}:demo-1", f"docker://{ref[:-1]}2-linux-amd64"
    )
    assert clash.returncode == 0, clash.stderr
    assert main(["hub", "ingest", f"{ref[:-1]}2", *hub, "--no-tls-verify"]) != 0
    err = capsys.readouterr().err
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1 and "Traceback" not in err
    assert "has 2-linux-amd64 as tags of their own" in err
    with open_repository(
        tmp_path / "stratum", fqrn=HUB, public_keys=[tmp_path / "keys" / f"{HUB}.pub"]
    ) as repo:
        assert repo.revision == revision


def _layout_of(dest: Path, layers: list[dict[str, bytes | None]], tag: str) -> None:
    """An OCI layout of one image made of ``layers`` (what a docker build with deletions pushes)."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        (blobs / digest_of(data)[7:]).write_bytes(data)
        return {"digest": digest_of(data), "size": len(data)}

    gz = [gzip_layer(m) for m in layers]
    diff_ids = [digest_of(gzip.decompress(g)) for g in gz]
    rootfs = {"type": "layers", "diff_ids": diff_ids}
    config = canonical({"architecture": "amd64", "os": "linux", "created": "2026-12-01T10:00:00Z",
                        "config": {"Cmd": ["/bin/sh"]}, "rootfs": rootfs})  # fmt: skip
    manifest = canonical({
        "schemaVersion": 2, "mediaType": manifest_list.OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(g)} for g in gz],
    })  # fmt: skip
    entry = {"mediaType": manifest_list.OCI_MANIFEST, **put(manifest),
             "annotations": {"org.opencontainers.image.ref.name": tag}}  # fmt: skip
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def test_ingested_whiteouts_mean_what_they_mean_to_umoci(
    registry: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A layer that deletes a file (``.wh.NAME``) and hides a directory's lower content (opaque):
    each chain is what umoci unpacks from the same layers, and the layer alone keeps no whiteouts."""
    base = {"etc/": None, "etc/a": b"a0", "etc/gone": b"g", "opt/": None, "opt/op/": None,
            "opt/op/old": b"o", "opt/op/sub/": None, "opt/op/sub/deep": b"d", "opt/keep": b"k", "var/": None,
            "var/gone-dir/": None, "var/gone-dir/f": b"f"}  # fmt: skip
    top = {"etc/": None, "etc/.wh.gone": b"", "etc/a": b"a1", "opt/op/": None, "opt/op/.wh..wh..opq": b"",
           "opt/op/new": b"n", "var/": None, "var/.wh.gone-dir": b""}  # fmt: skip
    _layout_of(tmp_path / "wh.oci", [base, top], "1")
    ref = f"{registry}/cernvm/whiteouts:1"
    copy = skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'wh.oci'}:1", f"docker://{ref}")
    assert copy.returncode == 0, copy.stderr
    hub = _hub(tmp_path)
    capsys.readouterr()
    assert main(["hub", "ingest", ref, *hub, "--no-tls-verify", "--json"]) == 0, capsys.readouterr().err
    (image,) = json.loads(capsys.readouterr().out)["images"]
    out = tmp_path / "hub"
    out.mkdir()
    with open_repository(
        tmp_path / "stratum", fqrn=HUB, public_keys=[tmp_path / "keys" / f"{HUB}.pub"]
    ) as repo:
        materialize(CvmfsTree(repo, "/"), out, mtime=None)
    marker = frozenset({".cvmfscatalog"})
    for k, chain in enumerate(image["meta"]["chains"]):
        unpacked = tmp_path / f"umoci{k}"
        layout = tmp_path / f"wh{k}.oci"
        _layout_of(layout, [base, top][: k + 1], "1")
        subprocess.run(["umoci", "raw", "unpack", "--image", f"{layout}:1", str(unpacked)], check=True)
        assert describe(out / chain.lstrip("/"), ignore=marker) == describe(unpacked), k
    assert not (out / image["meta"]["chains"][1].lstrip("/") / "etc" / "gone").exists()
    assert sorted(os.listdir(out / image["meta"]["chains"][1].lstrip("/") / "opt" / "op")) == ["new"]
    layerfs = out / image["meta"]["layers"][1].lstrip("/")
    assert not [p for p in layerfs.rglob(".wh.*")]
    assert (layerfs / "opt" / "op" / "new").read_bytes() == b"n"
    assert describe(out / image["meta"]["flat"].lstrip("/") / "opt") == describe(tmp_path / "umoci1" / "opt")


def test_a_killed_ingest_leaves_scratch_the_next_run_removes(
    registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``hub ingest`` killed with SIGKILL (its image pulled, its tars written, not yet published)
    leaves its scratch folders; the re-run finishes the job and removes them, and keeps a running
    run's scratch (locked)."""
    _layout_of(tmp_path / "k.oci", [{"etc/": None, "etc/k": b"killed"}], "1")
    ref = f"{registry}/cernvm/killed:1"
    copy = skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'k.oci'}:1", f"docker://{ref}")
    assert copy.returncode == 0, copy.stderr
    hub = _hub(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    argv = ["hub", "ingest", ref, *hub, "--no-tls-verify", "--json"]
    script = (
        "import os, signal, sys\n"
        "from cernvm_build.container import hub\n"
        "hub.publish_parts = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from cernvm_build.cli.main import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=root)
    with locked_scratch(tmp, "cernvm-ingest-") as running:  # another run's, going on all along
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        dead = {n for n in os.listdir(tmp) if n != running.name}
        left = sorted(dead) + sorted(n for n in os.listdir(tmp_path) if n.startswith(".hub-"))
        assert [n[:-8] for n in left] == ["cernvm-ingest-", ".hub-"]
        monkeypatch.setattr(tempfile, "tempdir", str(tmp))
        capsys.readouterr()
        assert main(argv) == 0, capsys.readouterr().err
        assert os.listdir(tmp) == [running.name]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".hub-")]
    (image,) = json.loads(capsys.readouterr().out)["images"]
    assert image["meta"]["public_path"] == f"/{ref}" and not image["meta"]["unchanged"]
