"""``hub ingest`` takes tags, manifests and configs from a registry, which may be hostile: every field
the hub turns into a path or an image field is checked, and a bad one is one BuildError naming the
image (it was a KeyError/TypeError traceback, or a layer path built from the registry's digest)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest

from cernvm_build.container import apptainer, ingest, manifest_list, registry
from cernvm_build.container.hub import publisher
from cernvm_build.container.image import MT_LAYER_GZIP, digest_of
from cernvm_build.container.registry import RegistryOptions
from cernvm_build.cvmfs.keys import generate_keys
from cernvm_build.cvmfs.publish import create_repository
from cernvm_build.cvmfs.repository import open_repository
from cernvm_build.errors import BuildError
from tests.support.tars import tar_bytes

WISH = ingest.Wish("127.0.0.1:5000", "cernvm/demo", "demo-*")
HEX = "ab" * 32


def _image(layers: int = 1, **config: Any) -> tuple[bytes, bytes]:
    cfg = {
        "created": "2026-12-01T10:00:00Z",
        "architecture": "amd64",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{HEX}"] * layers},
        **config,
    }
    cfg_bytes = json.dumps(cfg).encode()
    manifest = {
        "schemaVersion": 2,
        "config": {"digest": digest_of(cfg_bytes), "size": len(cfg_bytes)},
        "layers": [{"digest": f"sha256:{HEX}", "size": 10}] * layers,
    }
    return json.dumps(manifest).encode(), cfg_bytes


def test_a_genuine_image_passes() -> None:
    parts = ingest.image_parts(WISH, "demo-1", *_image())
    assert parts.spec.reference == "127.0.0.1:5000/cernvm/demo:demo-1" and len(parts.layers) == 1


def _with_layer(**layer: Any) -> tuple[bytes, bytes]:
    m, c = _image()
    manifest = json.loads(m)
    manifest["layers"] = [dict(manifest["layers"][0], **layer)]
    return json.dumps(manifest).encode(), c


def _annotated(title: str) -> tuple[bytes, bytes]:
    """An image whose manifest carries an annotation (the hub keeps the manifest as its marker)."""
    m, c = _image()
    manifest = dict(json.loads(m), annotations={"org.opencontainers.image.title": title})
    return json.dumps(manifest).encode(), c


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (lambda: _with_layer(digest="sha256:../../../.flat/x"), "is not sha256:<hex>"),
        (lambda: _with_layer(size="big"), "has size 'big'"),
        (lambda: (json.dumps({"config": {}}).encode(), _image()[1]), "no 'layers'"),
        (lambda: _image(config={"Env": [7]}), "not an image the hub can take"),
        (lambda: _image(config={"Labels": {"a": ["b"]}}), "holds something else"),
        (lambda: _image(created="yesterday"), "Invalid isoformat string"),
        (lambda: _image(layers=ingest.MAX_LAYERS + 1), "128 layers (1 to 127 can be ingested)"),
        (lambda: (_image()[0], _image(architecture="arm64")[1]), "the config does not match its digest"),
        (lambda: (_image()[0], b"[" * 100_000), "not an image the hub can take: nested too deeply"),
        (lambda: _image(config={"Env": ["V=\ud800"]}), "the config holds '\\ud800' (a lone surrogate)"),
        (lambda: _image(config={"Labels": {"\udfff": "x"}}), "the config holds '\\udfff' (a lone surrogate)"),
        (lambda: _image(created="9999-12-31T23:59:59Z"), "created '9999-12-31T23:59:59Z' is after 2242"),
        (lambda: _annotated("\ud800"), "the manifest holds '\\ud800' (a lone surrogate)"),
    ],
    ids=[
        "digest-path",
        "size",
        "no-layers",
        "env-int",
        "labels",
        "created",
        "too-many-layers",
        "config",
        "nested",
        "env-surrogate",
        "label-surrogate",
        "created-9999",
        "manifest-surrogate",
    ],
)
def test_a_hostile_manifest_or_config_is_one_build_error(image: Any, error: str) -> None:
    with pytest.raises(BuildError) as e:
        ingest.image_parts(WISH, "demo-1", *image())
    assert error in str(e.value) and "127.0.0.1:5000/cernvm/demo:demo-1" in str(e.value)


@pytest.mark.parametrize(
    ("created", "stamp"),
    [
        ("0001-01-01T00:00:00Z", 0),  # Go's zero time (go-containerregistry's empty image): none
        ("2026-12-01T10:00:00", 1796119200),  # no zone: UTC, whatever the machine's
        ("2026-12-01T10:00:00.123456789Z", 1796119200),  # Go's nanoseconds
        ("2026-12-01T11:00:00+01:00", 1796119200),
    ],
)
def test_the_created_time_is_one_the_hub_can_hold(
    monkeypatch: pytest.MonkeyPatch, created: str, stamp: int
) -> None:
    """The hub dates its entries by ``created``: Go's zero time failed the publish with 'mtime
    -62135596800 is out of range' on a chain's catalog, and a time without zone was local."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert ingest.image_parts(WISH, "demo-1", *_image(created=created)).spec.created == stamp
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("x/y:1", "'x' is not a registry host"),  # skopeo: docker.io/x/y:1; the hub filed it under 'x'
        (f"127.0.0.1:5000/x/y@sha256:{HEX}", "'x/y@sha256' is not a repository name"),
        ("127.0.0.1:5000/X/y:1", "'X/y' is not a repository name"),
        ("127.0.0.1:5000/x/y:\x1b[31mred", "'\\x1b[31mred' is not a tag"),
        ("127.0.0.1:5000/x/y:a;b", "'a;b' is not a tag"),
        ("reg:5000/x:" + "a" * 129, "is not a tag"),
    ],
    ids=["no-host", "digest", "upper-case", "escape", "semicolon", "long"],
)
def test_a_wish_that_names_no_image_is_refused_before_the_registry_is_asked(text: str, said: str) -> None:
    with pytest.raises(BuildError) as e:
        ingest.Wish.parse(text)
    assert said in e.value.message and "\n" not in e.value.message


def test_a_wish_names_host_repository_and_tag_or_glob() -> None:
    assert ingest.Wish.parse("docker://reg.example/library/python:3.*") == ingest.Wish(
        "reg.example", "library/python", "3.*"
    )
    assert ingest.Wish.parse("localhost:5000/a/b:v1.0_x-[0-9]") == ingest.Wish(
        "localhost:5000", "a/b", "v1.0_x-[0-9]"
    )


def test_a_listed_tag_that_is_no_tag_is_refused_before_any_pull(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "list_tags", lambda repo, opts: ["demo-1", "demo-/../../../etc"])
    with pytest.raises(BuildError) as e:
        WISH.expand(RegistryOptions())
    assert "the registry lists 'demo-/../../../etc', which is not a tag" in str(e.value)


def _index(*entries: Any, media: str = manifest_list.OCI_INDEX) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": media, "manifests": list(entries)}).encode()


def _entry(arch: str = "amd64", media: str = manifest_list.OCI_MANIFEST, **more: Any) -> dict[str, Any]:
    return {"mediaType": media, "digest": f"sha256:{HEX}", "size": 10,
            "platform": {"os": "linux", "architecture": arch}, **more}  # fmt: skip


def test_a_manifest_list_names_its_platforms_and_one_image_none() -> None:
    attestation = _entry(platform={"os": "unknown", "architecture": "unknown"})
    got = manifest_list.index_platforms("r/x:1", _index(_entry("arm64", variant=None), _entry(), attestation))
    assert got is not None and [p.name for p in got] == ["linux-arm64", "linux-amd64"]
    assert manifest_list.default_platform(got).name == "linux-amd64"
    assert manifest_list.index_platforms("r/x:1", _image()[0]) is None


def _attested(layer_size: Any) -> dict[str, bytes]:
    """A registry's manifests by reference: a list of one image and buildx's attestation of it (an
    in-toto layer of ``layer_size`` bytes)."""
    image = _image()[0]
    layer = {"mediaType": "application/vnd.in-toto+json", "digest": f"sha256:{'cd' * 32}", "size": layer_size}
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{HEX}", "size": 167}
    attestation = json.dumps(
        {"schemaVersion": 2, "mediaType": manifest_list.OCI_MANIFEST, "config": config, "layers": [layer]}
    ).encode()
    top = _index(
        _entry(digest=digest_of(image)),
        _entry(digest=digest_of(attestation), platform={"os": "unknown", "architecture": "unknown"},
               annotations={"vnd.docker.reference.type": "attestation-manifest"}),
    )  # fmt: skip
    return {"r/x:1": top, f"r/x@{digest_of(image)}": image, f"r/x@{digest_of(attestation)}": attestation}


class _Pulled(Exception):
    pass


def _ingest_attested(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, layer_size: Any) -> dict[str, Any]:
    """What ``pull`` was asked (it is not run) after the checks of ``_attested(layer_size)``."""
    answers = _attested(layer_size)
    asked: dict[str, Any] = {}

    def pull(ref: str, dest: Path, **kw: Any) -> NoReturn:
        asked.update(kw, ref=ref)
        raise _Pulled

    monkeypatch.setattr(ingest, "inspect_raw", lambda ref, opts: answers[ref])
    monkeypatch.setattr(ingest, "pull", pull)
    with pytest.raises(_Pulled):
        ingest.ingest_image(
            ingest.Wish("r", "x", "1"), "1", _never, opts=RegistryOptions(), work=tmp_path, registry_tags=set
        )
    return asked


def _never(*args: object) -> NoReturn:
    raise AssertionError("nothing may be published")


def test_a_lists_attestations_are_counted_in_the_pulls_quota(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """lf34a: ``skopeo copy --all`` pulls buildx's attestations (SBOM, provenance) and their layers
    with the images; the quota counted the images alone, so a large SBOM stopped a genuine pull."""
    small = _ingest_attested(monkeypatch, tmp_path, 10)
    big = _ingest_attested(monkeypatch, tmp_path, 50 << 20)
    assert big["max_bytes"] - small["max_bytes"] == (50 << 20) - 10
    assert f"sha256:{'cd' * 32}" in big["layers"]


def test_a_hostile_attestation_is_refused_before_the_pull(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An attestation whose layer declares 1 TiB (or no size) is one line naming it, before any pull."""
    for size, said in [(1 << 40, "bytes (at most"), ("10", "is '10' bytes")]:
        with pytest.raises(BuildError) as e:
            _ingest_attested(monkeypatch, tmp_path, size)
        message = e.value.message
        assert message.startswith("r/x:1 (attestation sha256:") and said in message, message
        assert "\n" not in message


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (lambda: _index(*[_entry(f"a{i}") for i in range(300)]), "has 300 entries (at most 64 platforms)"),
        (
            lambda: _index(_entry(media="application/x-unknown")),
            "is 'application/x-unknown', not an image manifest",
        ),
        (lambda: _index(_entry(media=manifest_list.OCI_INDEX)), "not an image manifest"),
        (lambda: _index(_entry(), media="application/x-other"), "neither an image nor a manifest list"),
        (lambda: _index(_entry("../../x")), "is not os/architecture[/variant]"),
        (lambda: _index(_entry(), _entry()), "platform linux-amd64 is listed twice"),
        (lambda: _index(_entry(digest="sha256:../x")), "is not sha256:<hex>"),
        (lambda: _index(), "names no image"),
        (lambda: b"\xff" * 10, "is not JSON"),
        (lambda: b"{" * (manifest_list.MAX_RAW + 1), "bytes (at most"),
        (lambda: b"[" * 100_000, "the manifest is nested too deeply"),  # was a RecursionError
    ],
    ids=[
        "hundreds",
        "unknown-type",
        "nested-index",
        "unknown-top",
        "platform-path",
        "twice",
        "digest",
        "empty",
        "not-json",
        "huge",
        "nested",
    ],
)
def test_a_hostile_manifest_list_is_one_build_error(raw: Any, error: str) -> None:
    with pytest.raises(BuildError) as e:
        manifest_list.index_platforms("127.0.0.1:5000/cernvm/demo:1", raw())
    assert error in str(e.value) and "127.0.0.1:5000/cernvm/demo:1" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("member", ["d/.wh...", "d/.wh..", "d/.wh.", "../.wh.x", "d/../../.wh.x"])
def test_a_whiteout_that_names_no_entry_of_its_folder_is_one_build_error(tmp_path: Any, member: str) -> None:
    """A layer's whiteout must name an entry of its own folder: '.wh...' (its parent), '.wh..' and
    '.wh.' (the folder itself) and a path through '..' are refused with the layer named, before
    the hub turns them into removals of other paths."""
    blob = tmp_path / "layer.tar"
    blob.write_bytes(tar_bytes({"d": None, "d/kept": b"", member: b""}))
    with pytest.raises(BuildError) as err:
        ingest.scan_layer(blob, set(), "reg/x:1 layer sha256:ab")
    assert "reg/x:1 layer sha256:ab" in err.value.message and member in err.value.message


@pytest.mark.parametrize("name", ["X;touch /tmp/pwned;Y", "LF\nLINE", "1X", "A-B", "A B", "", "X\n"])
def test_a_config_env_name_that_is_no_shell_name_is_refused(name: str) -> None:
    """The names are written unquoted into the container's environment script (``export NAME=``)."""
    with pytest.raises(BuildError) as e:
        ingest.image_parts(WISH, "demo-1", *_image(config={"Env": [f"{name}=1", "PATH=/bin"]}))
    assert "is not a shell name" in str(e.value) and "127.0.0.1:5000/cernvm/demo:demo-1" in str(e.value)
    assert "\n" not in str(e.value)


def test_sourcing_the_environment_script_runs_nothing_a_value_holds(tmp_path: Any) -> None:
    """Values reach the script quoted: newlines, quotes, ``$(...)`` and backquotes stay text."""
    mark = tmp_path / "pwned"
    value = f"a\nb' ; touch {mark}; '\n$(touch {mark})`touch {mark}`\"x"
    parts = ingest.image_parts(WISH, "demo-1", *_image(config={"Env": [f"V={value}", "_W1=2"]}))
    script = tmp_path / "env.sh"
    script.write_text(apptainer.environment_script(parts.spec))
    out = subprocess.run(
        ["sh", "-c", f'. {script} && printf %s "$V"'], capture_output=True, text=True, check=True
    ).stdout
    assert out == value and not mark.exists()


def test_a_diff_id_that_is_no_digest_is_refused() -> None:
    m, c = _image()
    cfg = json.loads(c)
    for bad in ['../../../x"y', f"sha256:{HEX}\n", f"sha256:{HEX.upper()}"]:
        cfg["rootfs"]["diff_ids"] = [bad]
        cb = json.dumps(cfg).encode()
        man = json.loads(m)
        man["config"]["digest"] = digest_of(cb)
        with pytest.raises(BuildError) as e:
            ingest.image_parts(WISH, "demo-1", json.dumps(man).encode(), cb)
        assert "is not sha256:<hex>" in str(e.value)


def _layout(tmp_path: Path, layer: bytes) -> tuple[Path, str, str]:
    """A scratch OCI layout as ``pull`` leaves it, of one image with ``layer`` (a gzip tar)."""
    blobs = tmp_path / "image.oci" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    diff = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    cfg = json.dumps({"created": "2026-12-01T10:00:00Z", "rootfs": {"type": "layers", "diff_ids": [diff]}})
    manifest = {
        "schemaVersion": 2,
        "config": {"digest": digest_of(cfg.encode()), "size": len(cfg)},
        "layers": [{"digest": digest_of(layer), "size": len(layer), "mediaType": MT_LAYER_GZIP}],
    }
    man = json.dumps(manifest).encode()
    for data in (layer, cfg.encode(), man):
        (blobs / digest_of(data).removeprefix("sha256:")).write_bytes(data)
    return tmp_path / "image.oci", digest_of(man), digest_of(layer)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("members", "said"),
    [
        ({"lnk": "->/outside", "lnk/evil": b"x"}, "is below"),
        ({"h": "=>../../../etc/passwd"}, "path leaves the archive"),
        ({"d": None, "h": "=>d"}, "which is not a file read before it in the archive"),
    ],
    ids=["symlink-then-file", "hardlink-dotdot", "hardlink-dir"],
)
def test_a_layer_the_publisher_refuses_is_named_by_image_and_digest(
    tmp_path: Path, members: dict[str, Any], said: str
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, what in members.items():
            m = tarfile.TarInfo(name)
            if what is None:
                m.type = tarfile.DIRTYPE
            elif isinstance(what, str):
                m.type, m.linkname = (tarfile.SYMTYPE if what[0] == "-" else tarfile.LNKTYPE), what[2:]
            else:
                m.size = len(what)
            t.addfile(m, io.BytesIO(what) if isinstance(what, bytes) else None)
    layout, manifest, layer = _layout(tmp_path, gzip.compress(buf.getvalue()))
    keys = generate_keys("hub.cernvm.test")
    keys.save(tmp_path / "keys")
    create_repository(tmp_path / "stratum", "hub.cernvm.test", keys)
    pub = publisher(stratum=tmp_path / "stratum", fqrn="hub.cernvm.test", keys_dir=tmp_path / "keys")
    with pytest.raises(BuildError) as e:
        ingest.ingest_manifest(WISH, "demo-1", layout, manifest, pub)
    assert e.value.message.startswith(f"127.0.0.1:5000/cernvm/demo:demo-1 layer {layer}: "), e.value.message
    assert said in e.value.message and str(tmp_path) not in e.value.message
    assert e.value.hint == "the layer is damaged or hostile"


@pytest.mark.parametrize(
    ("manifest", "said"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"layers": []}', "no 'config'"),
        (b'{"config": {"digest": "sha256:../../x"}}', "config digest 'sha256:../../x' is not sha256:<hex>"),
    ],
    ids=["nested", "no-config", "config-path"],
)
def test_a_pulled_manifest_is_checked_as_the_inspected_one_was(
    tmp_path: Path, manifest: bytes, said: str
) -> None:
    """The manifest in the pulled layout is read again (the registry may answer the pull with another
    one than it gave to inspect): a hostile one is one line, not a KeyError or RecursionError."""
    layout, _, _ = _layout(tmp_path, gzip.compress(tar_bytes({"f": b""})))
    (layout / "blobs" / "sha256" / digest_of(manifest)[7:]).write_bytes(manifest)
    with pytest.raises(BuildError) as e:
        ingest.ingest_manifest(WISH, "demo-1", layout, digest_of(manifest), _pull_never)
    assert said in e.value.message and "127.0.0.1:5000/cernvm/demo:demo-1" in e.value.message


@pytest.mark.integration
def test_a_layer_2000_directories_deep_is_published(tmp_path: Path) -> None:
    """The publisher filled a catalog's directories by recursion: a registry's layer 2,000 deep (PAX
    names; the deepest whose paths stay under PATH_MAX) was a RecursionError traceback."""
    buf = io.BytesIO()
    path = "/".join(["a"] * 2000)
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for depth in range(1, 2001):
            d = tarfile.TarInfo("/".join(["a"] * depth))
            d.type, d.mode = tarfile.DIRTYPE, 0o755
            t.addfile(d)
        leaf = tarfile.TarInfo(f"{path}/leaf")
        leaf.size = 1
        t.addfile(leaf, io.BytesIO(b"x"))
    layout, manifest, _ = _layout(tmp_path, gzip.compress(buf.getvalue()))
    keys = generate_keys("hub.cernvm.test")
    keys.save(tmp_path / "keys")
    create_repository(tmp_path / "stratum", "hub.cernvm.test", keys)
    pub = publisher(stratum=tmp_path / "stratum", fqrn="hub.cernvm.test", keys_dir=tmp_path / "keys")
    made = ingest.ingest_manifest(WISH, "demo-1", layout, manifest, pub)
    repo = open_repository(tmp_path / "stratum", fqrn="hub.cernvm.test", public_keys=[keys.public_key_pem])
    try:
        entry = repo.lookup(f"{made.meta['chains'][-1]}/{path}/leaf")
        assert entry is not None and repo.read_bytes(entry) == b"x"
    finally:
        repo.close()


def test_a_layer_member_path_of_path_max_or_more_is_refused(tmp_path: Path) -> None:
    """The publisher keeps each path whole: a 2 MB layer of a 20,000-deep chain (paths up to 40 KB)
    took 1.7 GB and 7 minutes. A path no program can open is refused as the layer is scanned."""
    blob = tmp_path / "layer.tar"
    deep = "/".join(["d"] * 2048)  # 4095 bytes: the longest path allowed
    blob.write_bytes(tar_bytes({deep: b"", deep + "x": b""}))
    with pytest.raises(BuildError) as e:
        ingest.scan_layer(blob, set(), "reg/x:1 layer sha256:ab")
    assert e.value.message.startswith("reg/x:1 layer sha256:ab: layer member 'd/d/d")
    assert "is a path of 4096 characters (less than 4096 bytes, PATH_MAX, can be opened)" in e.value.message


def _pull_never(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("pulled")


def _raw_manifest(layers: list[Any]) -> bytes:
    config = {"digest": f"sha256:{HEX}", "size": 2}
    media = "application/vnd.oci.image.manifest.v1+json"
    return json.dumps({"schemaVersion": 2, "mediaType": media, "config": config, "layers": layers}).encode()


@pytest.mark.parametrize(
    ("layers", "said"),
    [
        ([{"digest": f"sha256:{HEX}", "size": 10}] * 1000, "1000 layers (1 to 127 can be ingested)"),
        (
            [
                {
                    "digest": f"sha256:{HEX}",
                    "size": 10,
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                }
            ],
            "which the hub cannot unpack",
        ),
        ([{"digest": f"sha256:{HEX}", "size": 1 << 50}], f"layer sha256:{HEX} is {1 << 50} bytes"),
        ([{"digest": f"sha256:{HEX}", "size": -1}], "has size -1"),
    ],
    ids=["1000-layers", "zstd", "petabyte", "negative"],
)
def test_a_manifest_is_checked_before_anything_is_pulled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, layers: list[Any], said: str
) -> None:
    raw = _raw_manifest(layers)
    monkeypatch.setattr(ingest, "inspect_raw", lambda ref, opts: raw)
    monkeypatch.setattr(ingest, "pull", _pull_never)
    with pytest.raises(BuildError) as e:
        ingest.ingest_image(WISH, "demo-1", _pull_never, opts=RegistryOptions(), work=tmp_path)
    assert said in str(e.value) and "127.0.0.1:5000/cernvm/demo:demo-1" in str(e.value)


def test_a_pull_larger_than_the_scratch_space_is_refused_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    raw = _raw_manifest([{"digest": f"sha256:{HEX}", "size": 60 << 30}] * 127)  # 7.4 TiB
    monkeypatch.setattr(ingest, "inspect_raw", lambda ref, opts: raw)
    monkeypatch.setattr(ingest, "pull", _pull_never)
    with pytest.raises(BuildError) as e:
        ingest.ingest_image(WISH, "demo-1", _pull_never, opts=RegistryOptions(), work=tmp_path)
    assert f"the pull needs {127 * (60 << 30)} bytes of scratch space" in str(e.value)


def test_the_pull_is_of_the_manifest_that_was_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Pulled by tag, a registry could answer the pull with another manifest than the one checked
    first (a probe's registry gave a 1 TiB layer to the pull, and the pull went ahead): the pull
    names the checked manifest by its digest, so skopeo refuses any other."""
    raw = _raw_manifest([{"digest": f"sha256:{HEX}", "size": 10}]) + b"\r\n"  # as the registry sent it
    pulled: list[str] = []

    def pull(ref: str, dest: Path, **kwargs: Any) -> Path:
        pulled.append(ref)
        raise BuildError("stop here")

    monkeypatch.setattr(ingest, "inspect_raw", lambda ref, opts: raw)
    monkeypatch.setattr(ingest, "pull", pull)
    with pytest.raises(BuildError, match="stop here"):
        ingest.ingest_image(WISH, "demo-1", _pull_never, opts=RegistryOptions(), work=tmp_path)
    assert pulled == [f"127.0.0.1:5000/cernvm/demo@{digest_of(raw)}"]


@pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo")
def test_inspect_gives_the_manifest_bytes_as_sent(tmp_path: Path) -> None:
    """What ``inspect_raw`` returns is what its digest is of: a CR LF stays (text mode made it LF)."""
    doc = {"schemaVersion": 2, "mediaType": manifest_list.OCI_MANIFEST, "config": {}, "layers": []}
    manifest = json.dumps(doc, indent=1).replace("\n", "\r\n").encode()
    layout = tmp_path / "l"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "blobs" / "sha256" / digest_of(manifest)[7:]).write_bytes(manifest)
    index = {"schemaVersion": 2, "manifests": [{"mediaType": manifest_list.OCI_MANIFEST,
             "digest": digest_of(manifest), "size": len(manifest)}]}  # fmt: skip
    (layout / "index.json").write_text(json.dumps(index))
    got = registry._skopeo(["inspect", "--raw", f"oci:{layout}"], "inspect")
    assert got == manifest


def test_skopeo_messages_are_shown_unquoted() -> None:
    """skopeo's logger quotes its message as Go does; the user sees what skopeo meant."""
    stderr = (
        'time="2026-12-06T12:00:00Z" level=fatal msg="Error parsing image name '
        '\\"docker://a b\\": invalid reference format: \\\\x"\n'
    )
    assert (
        registry.skopeo_message(stderr)
        == 'Error parsing image name "docker://a b": invalid reference format: \\x'
    )
    assert registry.skopeo_message("plain failure\n") == "plain failure"
    assert registry.skopeo_message("") == "no message"


@pytest.mark.parametrize(
    ("name", "target", "said"),
    [
        ("s", "", "symlink target '' is empty"),
        ("L" * 300, None, "the name is longer than 255 bytes"),
        ("d/" + "L" * 256 + "/f", None, "the name is longer than 255 bytes"),
    ],
    ids=["empty-symlink", "long-name", "long-folder"],
)
def test_a_layer_member_the_catalog_cannot_hold_is_named_by_image_and_layer(
    tmp_path: Path, name: str, target: str | None, said: str
) -> None:
    """pr21 N3: an empty symlink target or a name over 255 bytes was refused by the catalog, with a
    path of the hub's (``/.chains/<id>/s: ...``) and no word of the image or its layer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        m = tarfile.TarInfo(name)
        if target is not None:
            m.type, m.linkname = tarfile.SYMTYPE, target
        t.addfile(m, io.BytesIO(b""))
    blob = tmp_path / "layer.tar"
    blob.write_bytes(buf.getvalue())
    with pytest.raises(BuildError) as e:
        ingest.scan_layer(blob, set(), "reg/x:1 layer sha256:ab")
    assert e.value.message.startswith("reg/x:1 layer sha256:ab: layer member ") and said in e.value.message
    assert e.value.hint == "the layer is damaged or hostile"


def test_an_entrypoint_or_cmd_given_as_one_string_is_one_word() -> None:
    """pr21 N4: Docker reads a config's ``"Entrypoint": "/bin/sh"`` as a list of one; the hub took the
    string as a sequence and its runscript ran ``exec / b i n / s h``."""
    parts = ingest.image_parts(WISH, "demo-1", *_image(config={"Entrypoint": "/bin/sh", "Cmd": "-c true"}))
    assert (parts.spec.entrypoint, parts.spec.cmd) == (("/bin/sh",), ("-c true",))
    assert "exec /bin/sh '-c true'\n" in apptainer.runscript(parts.spec)


@pytest.mark.parametrize("size", [8 << 30, -1, "2"], ids=["8-GiB", "negative", "text"])
def test_a_config_larger_than_a_manifest_may_be_is_refused_before_the_pull(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, size: Any
) -> None:
    """pr21 N7: only the layers' sizes were checked before the pull: a config of 8 GiB was pulled,
    then read whole into memory."""
    doc = json.loads(_raw_manifest([{"digest": f"sha256:{HEX}", "size": 10}]))
    doc["config"]["size"] = size
    monkeypatch.setattr(ingest, "inspect_raw", lambda ref, opts: json.dumps(doc).encode())
    monkeypatch.setattr(ingest, "pull", _pull_never)
    with pytest.raises(BuildError) as e:
        ingest.ingest_image(WISH, "demo-1", _pull_never, opts=RegistryOptions(), work=tmp_path)
    assert f"127.0.0.1:5000/cernvm/demo:demo-1: the image's config is {size!r} bytes" in str(e.value)


@pytest.mark.parametrize(
    "members",
    [
        ["tmp", ".singularity.d", ".wh..wh..opq"],  # a root opaque whiteout after the layer's own names
        ["tmp", ".singularity.d", ".wh.tmp", ".wh..singularity.d", ".wh.a"],
    ],
    ids=["opaque-after", "whiteout-after"],
)
def test_a_layer_s_whiteouts_hide_only_the_layers_below(tmp_path: Path, members: list[str]) -> None:
    """pr21 N11: the top-level names the flat root's scaffold leaves alone lost the layer's own
    ``tmp`` and ``.singularity.d`` when its whiteouts came after them in the tar, and the scaffold
    put its folders where the image has links (the chain and the flat root differed)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in members:
            m = tarfile.TarInfo(name)
            if not name.startswith(".wh."):
                m.type, m.linkname = tarfile.SYMTYPE, "/etc"
            t.addfile(m)
    blob = tmp_path / "layer.tar"
    blob.write_bytes(buf.getvalue())
    below = {"a", "b"}
    ingest.scan_layer(blob, below, "reg/x:1 layer sha256:ab")
    assert below == (
        {"tmp", ".singularity.d"} if ".wh..wh..opq" in members else {"tmp", ".singularity.d", "b"}
    )
