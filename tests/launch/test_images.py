"""The image cache: pull over HTTP (from a server on 127.0.0.1) only with a matching .sha256."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import gzip
import hashlib
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build.errors import ImageError
from cernvm_build.launch import images
from cernvm_build.launch.images import ImageCache
from tests.support import listening
from tests.support.killed import killed_in_atomic_file, run_killed

pytestmark = pytest.mark.integration


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_pull_verifies_and_caches(http_dir: tuple[Path, str], image: Path, tmp_path: Path) -> None:
    root, url = http_dir
    (root / image.name).write_bytes(image.read_bytes())
    (root / f"{image.name}.sha256").write_text(image.with_name(image.name + ".sha256").read_text())
    cache = ImageCache(tmp_path / "home")
    seen: list[int] = []
    got = cache.pull(f"{url}/{image.name}", profile="demo", progress=lambda done, total: seen.append(done))
    assert got.path.read_bytes() == image.read_bytes() and got.format == "hdd" and got.profile == "demo"
    assert seen[-1] == image.stat().st_size
    assert [i.name for i in cache.list()] == [image.name]
    assert cache.for_profile("demo") == got


@pytest.mark.parametrize(
    ("sha", "message"), [("0" * 64, "does not match its .sha256"), (None, "no checksum")]
)
def test_pull_refuses_unverified_downloads(
    http_dir: tuple[Path, str], image: Path, tmp_path: Path, sha: str | None, message: str
) -> None:
    root, url = http_dir
    (root / image.name).write_bytes(image.read_bytes())
    if sha:
        (root / f"{image.name}.sha256").write_text(f"{sha}  {image.name}\n")
    cache = ImageCache(tmp_path / "home")
    with pytest.raises(ImageError, match=message):
        cache.pull(f"{url}/{image.name}")
    assert cache.list() == []  # nothing half-kept
    assert not (cache.dir / image.name).exists()


# -- images by name: a signed release index served on 127.0.0.1 -------------------------------------


@pytest.fixture(scope="module")
def release_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(secret, public) of the release key and the public key of another one."""
    from cernvm_build import gpg

    secret, public = gpg.generate_test_key(tmp_path_factory.mktemp("release-key"))
    _s, other = gpg.generate_test_key(tmp_path_factory.mktemp("other-key"), name="Someone Else")
    return secret, public, other


def _publish(
    root: Path,
    image: Path,
    secret: Path,
    *,
    tamper: bool = False,
    also: Path | None = None,
    when: dt.datetime | None = None,
) -> None:
    """A release as cernvm-build release lays it out: images/PROFILE/FILE, SHA256SUMS + signature, index.
    ``also``: a second image of the same profile (its format from its suffix), listed before ``image``."""
    import hashlib
    import shutil

    from cernvm_build import gpg
    from cernvm_build import releaseindex as idx
    from cernvm_build.release import sums

    rel = root / "2026.11-1"
    (rel / "images/el9").mkdir(parents=True)
    arts = []
    for img in (also, image) if also else (image,):
        shutil.copyfile(img, rel / "images/el9" / img.name)
        digest = hashlib.sha256(img.read_bytes()).hexdigest()
        arts.append(idx.ReleaseArtifact(img.name, f"images/el9/{img.name}", "el9", "image", img.suffix[1:],
                                        digest, img.stat().st_size))  # fmt: skip
    snap = idx.Snapshot("cernvm-prod.cern.ch", "/cvm5", None, None, None)
    sums.write(rel, tuple(arts))
    with gpg.Keyring([secret], now=when) as kr:
        kr.sign_detached(rel / "SHA256SUMS", rel / "SHA256SUMS.asc")
        signer = kr.secret_fingerprints()[0]
    if tamper:  # the index says another hash than the signed sums
        arts[-1] = idx.ReleaseArtifact(
            arts[-1].name, arts[-1].path, "el9", "image", "hdd", "0" * 64, arts[-1].size
        )
    release = idx.ReleaseIndex(
        version="2026.11-1", date="2026-11-25T00:00:00Z", source_date_epoch=0,
        profiles=(idx.ProfileRecord("el9", "AlmaLinux 9", False, snap, "00" * 32),), artifacts=tuple(arts),
        signature="SHA256SUMS.asc", signer=signer,
    )  # fmt: skip
    (rel / "index.json").write_text(release.dumps())


def _pull(*args: str) -> int:
    from cernvm_build.cli.launch import main

    return main(["images", "pull", *args])


def test_pull_by_name_through_a_signed_release_index(
    http_dir: tuple[Path, str], image: Path, release_keys: tuple[Path, Path, Path], launch_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    root, url = http_dir
    secret, public, other = release_keys
    _publish(root, image, secret)
    index = f"{url}/2026.11-1/index.json"
    # configured in the settings file, as users would
    conf = launch_env.parent / "absent.conf"
    conf.write_text(f"imageIndexes={index}\nreleaseKeys={public}\n")
    assert _pull("el9") == 0
    assert "release 2026.11-1" in capsys.readouterr().err
    cache = ImageCache(launch_env)
    (got,) = cache.list()
    assert got.name == image.name and got.profile == "el9" and got.path.read_bytes() == image.read_bytes()

    # signed by a key that is not the configured one: refused, nothing kept
    cache.remove(image.name)
    assert _pull("el9", "--index", index, "--key", str(other)) == 8
    err = capsys.readouterr().err
    assert "release 2026.11-1" in err and "Traceback" not in err
    assert cache.list() == []
    # an unknown name lists what the indexes have
    assert _pull("el5") == 8
    assert "no image named 'el5'" in capsys.readouterr().err
    assert cache.list() == []


def test_pull_by_name_takes_the_hdd_image_of_a_release_with_an_iso_too_unless_told(
    http_dir: tuple[Path, str], image: Path, release_keys: tuple[Path, Path, Path], launch_env: Path,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The hdd boots on virtio (faster before the kernel than the iso's IDE CD-ROM): it wins over an
    iso listed first in the same release; --format iso still pulls the iso."""
    root, url = http_dir
    secret, public, _other = release_keys
    iso = tmp_path / image.name.replace(".hdd", ".iso")
    iso.write_bytes(bytes(0x8001) + b"CD001" + bytes(0x8000))  # an ISO 9660 volume descriptor
    _publish(root, image, secret, also=iso)
    index = ["--index", f"{url}/2026.11-1/index.json", "--key", str(public)]
    assert _pull("el9", *index) == 0, capsys.readouterr().err
    cache = ImageCache(launch_env)
    assert [(i.name, i.format) for i in cache.list()] == [(image.name, "hdd")]
    cache.remove(image.name)
    assert _pull("el9", *index, "--format", "iso") == 0, capsys.readouterr().err
    assert [(i.name, i.format) for i in cache.list()] == [(iso.name, "iso")]


def test_pull_by_name_of_a_release_whose_key_expired_since_it_signed(
    http_dir: tuple[Path, str], image: Path, launch_env: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A frozen release years later: signed 2020-06-01 by a key that expired 2021-01-01. Pulled, with
    a warning naming the key and both dates (it was "which expired" and the image was refused)."""
    from cernvm_build import gpg

    made = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    secret, public = gpg.generate_test_key(tmp_path / "old", created=made, expire="2021-01-01")
    root, url = http_dir
    _publish(root, image, secret, when=dt.datetime(2020, 6, 1, tzinfo=dt.UTC))
    assert _pull("el9", "--index", f"{url}/2026.11-1/index.json", "--key", str(public)) == 0
    err = capsys.readouterr().err
    assert "signed on 2020-06-01, before key " in err and "expired on 2021-01-01" in err
    assert [i.name for i in ImageCache(launch_env).list()] == [image.name]


def test_pull_by_name_refuses_an_index_that_disagrees_with_its_signed_sums(
    http_dir: tuple[Path, str], image: Path, release_keys: tuple[Path, Path, Path], launch_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    root, url = http_dir
    secret, public, _other = release_keys
    _publish(root, image, secret, tamper=True)
    assert _pull("el9", "--index", f"{url}/2026.11-1/index.json", "--key", str(public)) == 8
    assert "SHA256SUMS does not list" in capsys.readouterr().err
    assert ImageCache(launch_env).list() == []


def test_bad_urls_and_unbootable_files_are_one_line(
    image: Path, tmp_path: Path, launch_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cernvm_build.cli.launch import main

    assert _pull("http:/nohost/x.iso") == 8
    err = capsys.readouterr().err
    assert "not an http(s) URL" in err and "MissingSchema" not in err
    assert _pull("el9") == 8  # a name, and no index configured
    assert "no release index is configured" in capsys.readouterr().err
    text = tmp_path / "notes.iso"
    text.write_text("not an image\n" * 100)
    assert main(["images", "add", str(text)]) == 8
    assert "not a bootable image" in capsys.readouterr().err
    assert main(["images", "add", str(image)]) == 0  # a boot sector (0x55AA)


def test_a_qcow2_boot_image_reading_other_files_is_refused(
    http_dir: tuple[Path, str], tmp_path: Path, launch_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seeds' rule for boot images: a qcow2 naming a backing file or an external data file (the
    guest would read that host file) is refused when added, pulled (checksum or not: the publisher
    writes both) or given as a file; a self-contained qcow2 is fine."""
    import hashlib
    import subprocess

    from cernvm_build.cli.launch import main
    from cernvm_build.launch.images import detect_format

    secret = tmp_path / "secret"
    secret.write_bytes(b"\0" * 4096)
    root, url = http_dir
    evil = root / "evil.qcow2"
    opts = f"data_file={secret},data_file_raw=on"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, str(evil), "1M"], check=True)
    (root / "evil.qcow2.sha256").write_text(f"{hashlib.sha256(evil.read_bytes()).hexdigest()}  evil.qcow2\n")
    chained = tmp_path / "chained.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(evil), "-F", "qcow2", str(chained)], check=True
    )
    assert main(["images", "add", str(evil)]) == 8
    err = capsys.readouterr().err
    assert "reads an external data file" in err and str(secret) in err and "Traceback" not in err
    with pytest.raises(ImageError, match="reads a backing file"):
        detect_format(chained)  # a file given to create --iso
    cache = ImageCache(tmp_path / "home")
    with pytest.raises(ImageError, match="reads an external data file"):
        cache.pull(f"{url}/evil.qcow2")
    assert cache.list() == [] and not (tmp_path / "home" / "images" / "evil.qcow2").exists()
    plain = tmp_path / "plain.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(plain), "1M"], check=True)
    assert detect_format(plain) == "qcow2"


def test_a_relative_name_qemu_would_read_as_a_protocol_is_checked_as_the_file_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pr26c finding 9: ``qemu-img info`` was given the name as typed, and qemu reads a relative name
    whose first part holds ':' as a protocol: 'a:b.qcow2' was "Unknown protocol 'a'" (reported as
    not a qcow2), and a file named 'json:{...}' had qemu describe ANOTHER file, so a qcow2 reading the
    host file 'secret' passed the self-contained check."""
    import subprocess

    from cernvm_build.launch.images import detect_format

    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret").write_bytes(b"\0" * 4096)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "plain.qcow2"), "1M"], check=True
    )
    evil = tmp_path / 'json:{"driver":"qcow2","file":{"driver":"file","filename":"plain.qcow2"}}'
    opts = f"data_file={tmp_path / 'secret'},data_file_raw=on"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, str(evil), "1M"], check=True)
    with pytest.raises(ImageError, match="reads an external data file"):
        detect_format(Path(evil.name))
    (tmp_path / "a:b.qcow2").write_bytes((tmp_path / "plain.qcow2").read_bytes())
    assert detect_format(Path("a:b.qcow2")) == "qcow2"


def test_a_release_file_read_locally_is_a_bounded_regular_file(tmp_path: Path) -> None:
    """A file URL is read at most ``limit`` + 1 bytes, and only from a regular file (/dev/zero once
    used all memory; a FIFO would wait forever)."""
    from cernvm_build.launch import catalog

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for src in ("/dev/zero", f"file://{fifo}"):
        with pytest.raises(ImageError, match="not a regular file"):
            catalog.fetch(src, tmp_path / "out", limit=1024)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(ImageError, match="larger than"):
        catalog.fetch(str(big), tmp_path / "out", limit=1024)
    assert catalog.fetch(str(big), tmp_path / "out", limit=4096).read_bytes() == b"x" * 2048


@pytest.mark.parametrize(
    "name", ["../../escaped.hdd", "a/b.hdd", ".hidden.hdd", "..", "x.json", "img.hdd.sha256", "a b.hdd"]
)
def test_a_cached_image_name_is_one_file_name_of_the_cache(image: Path, tmp_path: Path, name: str) -> None:
    """``--as`` and a URL's file name follow one rule: nothing is written outside the cache, and
    none of an image's side files (NAME.sha256, NAME.json) is replaced."""
    cache = ImageCache(tmp_path / "home" / "deep")
    with pytest.raises(ImageError, match="cannot name a cached image"):
        cache.add(image, name=name)
    if "/" not in name:  # a URL's last part (no server is asked)
        with pytest.raises(ImageError, match="cannot name a cached image"):
            cache.pull(f"http://127.0.0.1:1/evil/{name}")
    assert not (tmp_path / "home").exists() and not (tmp_path / "escaped.hdd").exists()


def test_pull_reads_a_bounded_sha256_and_writes_at_most_the_size_it_was_given(
    http_dir: tuple[Path, str], image: Path, tmp_path: Path
) -> None:
    root, url = http_dir
    (root / image.name).write_bytes(image.read_bytes())
    digest = image.with_name(image.name + ".sha256").read_text().split()[0]
    (root / f"{image.name}.sha256").write_text(digest + " " * 5000 + "\n")
    cache = ImageCache(tmp_path / "home")
    with pytest.raises(ImageError, match="checksum file is larger than 4096 bytes"):
        cache.pull(f"{url}/{image.name}")
    with pytest.raises(ImageError, match="the size its release index gives"):
        cache.pull(f"{url}/{image.name}", sha256=digest, size=image.stat().st_size - 1)
    assert cache.list() == [] and not [p for p in cache.dir.iterdir() if p.is_file()]
    got = cache.pull(f"{url}/{image.name}", sha256=digest, size=image.stat().st_size)
    assert got.sha256 == digest


def test_a_per_create_files_disk_url_boots_only_an_image_pulled_from_it(
    http_dir: tuple[Path, str], image: Path, tmp_path: Path
) -> None:
    """A handed file's ``diskURL`` must not make this host fetch a URL (an internal service, a
    metadata endpoint) as the user: only an image the user pulled from that URL is booted."""
    from cernvm_build.launch import config, create

    root, url = http_dir
    (root / image.name).write_bytes(image.read_bytes())
    (root / f"{image.name}.sha256").write_text(image.with_name(image.name + ".sha256").read_text())
    conf = tmp_path / "conf"
    conf.write_text(f"diskURL={url}/{image.name}\n")
    conf.chmod(0o644)
    s = config.resolve(create_file=conf, global_file=tmp_path / "none")
    spec = create.InstanceSpec(settings=s, name="x", user_data=b"")
    cache = ImageCache(tmp_path / "home")
    with pytest.raises(ImageError, match=r"diskURL .* is not downloaded from a per-create file") as e:
        images.resolve(cache, create.image_choice(spec, None))
    assert "images pull URL" in str(e.value.hint) and cache.list() == []  # nothing was fetched
    pulled = cache.pull(f"{url}/{image.name}")  # the user's own pull
    assert images.resolve(cache, create.image_choice(spec, None)) == pulled
    own = config.resolve(global_file=conf)  # the user's own file may download
    assert (
        images.resolve(
            ImageCache(tmp_path / "h2"), create.image_choice(dataclasses.replace(spec, settings=own), None)
        ).name
        == image.name
    )


def test_files_beside_an_added_image_and_in_the_cache_are_read_bounded(image: Path, tmp_path: Path) -> None:
    """``images add`` guesses the profile from any ``*.json`` beside the image: a FIFO there was waited
    on for ever and ``[[[…`` nested deeply was a RecursionError; an ``IMG.sha256`` that is a folder was
    an IsADirectoryError; in the cache, such a ``NAME.json`` or ``NAME.sha256`` ended ``images list``
    (hung, or a traceback), and a record's fields of another type were shown as Python values."""
    os.mkfifo(image.parent / "a-fifo.json")
    (image.parent / "deep.json").write_text("[" * 100_000)
    cache = ImageCache(tmp_path / "home")
    added = cache.add(image)
    assert added.profile == "" and added.sha256
    for name in ("b.hdd", "c.hdd"):
        cache.add(image, name=name)
    (cache.dir / "b.hdd.json").write_text("[" * 100_000)
    (cache.dir / "b.hdd.sha256").unlink()
    os.mkfifo(cache.dir / "b.hdd.sha256")
    (cache.dir / "c.hdd.json").write_text('{"profile": {"a": 1}, "source": [1], "added": 5, "format": "x"}')
    listed = {i.name: i for i in cache.list()}
    assert listed["b.hdd"].sha256 == "" and listed["b.hdd"].format == "hdd"
    c = listed["c.hdd"]
    assert (c.profile, c.source, c.added, c.format) == ("", "", "", "hdd")
    side = image.with_name(image.name + ".sha256")
    side.unlink()
    side.mkdir()
    with pytest.raises(ImageError, match="cannot read the checksum file: not a regular file"):
        cache.add(image, name="d.hdd")


@pytest.mark.parametrize("content", [b"not an image\n", None], ids=["unbootable", "wrong-sha256"])
def test_a_failed_pull_leaves_the_cached_image_of_that_name(
    http_dir: tuple[Path, str], image: Path, tmp_path: Path, content: bytes | None
) -> None:
    """The download was written over the cached image of the same name and removed when it was no
    boot image: the image was gone, its .sha256 and .json left behind."""
    import hashlib

    cache = ImageCache(tmp_path / "home")
    kept = cache.add(image)
    root, url = http_dir
    data = content if content is not None else b"x" * 100
    (root / image.name).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest() if content is not None else "0" * 64
    (root / f"{image.name}.sha256").write_text(f"{digest}  {image.name}\n")
    with pytest.raises(ImageError) as e:
        cache.pull(f"{url}/{image.name}")
    assert str(e.value).startswith(f"{url}/{image.name}: ")  # the download named, not a cache file
    assert cache.list() == [kept] and kept.path.read_bytes() == image.read_bytes()
    assert sorted(p.name for p in cache.dir.iterdir()) == sorted(
        [image.name, f"{image.name}.sha256", f"{image.name}.json"]
    )


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_add_reads_the_image_once_and_records_the_copy(image: Path, tmp_path: Path) -> None:
    """The image was hashed, then read again to copy it: twice the I/O of a multi-GB image, and the
    hash on record was of the first read, not of the copy (counted bytes, /proc/self/io rchar)."""
    big = tmp_path / "big.hdd"
    data = image.read_bytes() + os.urandom(16 << 20)
    big.write_bytes(data)
    import hashlib

    big.with_name(big.name + ".sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    cache = ImageCache(tmp_path / "home")
    before = _bytes_read()
    got = cache.add(big)
    read = _bytes_read() - before
    assert read < 1.5 * len(data), f"{read} bytes read for a {len(data)}-byte image"
    assert got.sha256 == hashlib.sha256(got.path.read_bytes()).hexdigest()
    assert sorted(p.name for p in cache.dir.iterdir()) == ["big.hdd", "big.hdd.json", "big.hdd.sha256"]
    big.with_name(big.name + ".sha256").write_text("0" * 64 + "\n")
    with pytest.raises(ImageError, match="checksum mismatch") as e:
        cache.add(big, name="other.hdd")
    assert e.value.where == str(big)
    assert sorted(p.name for p in cache.dir.iterdir()) == ["big.hdd", "big.hdd.json", "big.hdd.sha256"]


@pytest.fixture
def trickling() -> Iterator[str]:
    """A server that answers every request with headers and then a byte every half second."""
    stop = threading.Event()

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            while not stop.wait(0.5):
                try:
                    self.wfile.write(b"0")
                    self.wfile.flush()
                except OSError:
                    return

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_a_trickling_server_is_one_line_not_a_download_for_ever(
    trickling: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A per-read timeout of 30 s bounds nothing when a byte comes every 29 s: a release index, a
    .sha256 or an image from such a server was read for ever (and a stalled one was urllib3's
    ReadTimeoutError traceback). Past a floor the body must come at MIN_RATE on average."""
    from cernvm_build.launch import catalog, download

    monkeypatch.setattr(download, "FLOOR", 1.0)
    with pytest.raises(ImageError, match="fell below 64 KiB/s on average after the first 1 s") as e:
        catalog.fetch(f"{trickling}/index.json", tmp_path / "index.json")
    assert e.value.where == f"{trickling}/index.json" and not (tmp_path / "index.json").exists()
    cache = ImageCache(tmp_path / "home")
    with pytest.raises(ImageError, match="stalled or trickling") as e:
        cache.pull(f"{trickling}/demo.hdd")
    assert e.value.where == f"{trickling}/demo.hdd.sha256"
    with pytest.raises(ImageError, match="stalled or trickling"):
        cache.pull(f"{trickling}/demo.hdd", sha256="0" * 64, size=1 << 30)
    assert not [p for p in cache.dir.iterdir() if p.is_file()]  # nothing kept


def test_a_killed_pull_s_partial_image_is_reclaimed_by_the_next_add(image: Path, tmp_path: Path) -> None:
    """pr19e finding 4: ``images pull`` (or ``add``) SIGKILLed mid-copy left
    ``..<name>.pull.<pid>.<n>.tmp`` (a partial image, GBs) in the image cache for ever."""
    cache = ImageCache(tmp_path / "home")
    cache.dir.mkdir(parents=True)
    killed_in_atomic_file(cache.dir / ".other.qcow2.pull", b"QFI" * 1000)
    assert len(list(cache.dir.iterdir())) == 1
    got = cache.add(image)
    assert sorted(p.name for p in cache.dir.iterdir()) == sorted(
        [got.path.name, f"{got.path.name}.json", f"{got.path.name}.sha256"]
    )


def test_a_killed_ova_import_s_scratch_is_reclaimed_by_the_next_add(image: Path, tmp_path: Path) -> None:
    """pr19e finding 6: ``import X.ova`` SIGKILLed mid-conversion left ``.ova-<rnd>/`` (the disk)
    in the image cache for ever: no pid in its name, so no run could reclaim it."""
    import tarfile

    ova = tmp_path / "x.ova"
    with tarfile.open(ova, "w") as t:
        t.add(image, arcname="boot.vmdk")
    cache = ImageCache(tmp_path / "home")
    run_killed(
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from cernvm_build.launch import images\n"
        "images.tar_members = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        "images.ImageCache(Path(sys.argv[1])).add_ova(Path(sys.argv[2]))\n",
        tmp_path / "home",
        ova,
    )
    assert len(list(cache.dir.iterdir())) == 1
    got = cache.add(image)
    assert sorted(p.name for p in cache.dir.iterdir()) == sorted(
        [got.path.name, f"{got.path.name}.json", f"{got.path.name}.sha256"]
    )


def test_a_pull_of_an_image_added_with_a_profile_keeps_the_profile(
    http_dir: tuple[Path, str], image: Path, tmp_path: Path
) -> None:
    """pr19d: `images pull URL` of an image already added with `--profile demo` replaced the entry
    without the profile, so `create --profile demo` no longer found it. The same bytes keep the
    profile recorded for them; other bytes under that name are another image."""
    root, url = http_dir
    (root / image.name).write_bytes(image.read_bytes())
    (root / f"{image.name}.sha256").write_text(image.with_name(image.name + ".sha256").read_text())
    cache = ImageCache(tmp_path / "home")
    assert cache.add(image, profile="demo").profile == "demo"
    assert cache.pull(f"{url}/{image.name}").profile == "demo"
    assert cache.for_profile("demo") is not None and cache.get(image.name).profile == "demo"  # type: ignore[union-attr]
    assert cache.pull(f"{url}/{image.name}", profile="el9").profile == "el9", "a profile given wins"


def test_a_server_trickling_its_status_line_and_headers_meets_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lf20a item 6: the deadline began after the headers, so a server sending its status line and
    headers a byte a second (each inside the 30 s per-read timeout) held `images pull` (and a release
    index fetch) for ever. One deadline covers connect, status line, headers and body."""
    from cernvm_build.launch import catalog, download
    from tests.support import listening, trickle_head

    monkeypatch.setattr(download, "FLOOR", 1.0)
    outcome: list[BaseException | object] = []
    with listening(trickle_head) as port:
        url = f"http://127.0.0.1:{port}"
        cache = ImageCache(tmp_path / "home")

        def pull() -> None:
            for attempt in (
                lambda: cache.pull(f"{url}/demo.hdd"),
                lambda: cache.pull(f"{url}/demo.hdd", sha256="0" * 64, size=1 << 30),
                lambda: catalog.fetch(f"{url}/index.json", tmp_path / "index.json"),
            ):
                try:
                    outcome.append(attempt())
                except BaseException as e:
                    outcome.append(e)

        t = threading.Thread(target=pull, daemon=True)
        t.start()
        t.join(60)  # a bound for the failure of this test, not a measurement
        assert not t.is_alive(), "a request is still held by the server trickling its headers"
    for err, where in zip(
        outcome, [f"{url}/demo.hdd.sha256", f"{url}/demo.hdd", f"{url}/index.json"], strict=True
    ):
        assert isinstance(err, ImageError), err
        assert "after the first 1 s (0 bytes" in err.message and "stalled or trickling" in err.message
        assert err.where == where
    assert not (tmp_path / "index.json").exists()


def test_two_pulls_of_one_image_at_once_both_finish_one_after_the_other(
    http_dir: tuple[Path, str], image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pulls of one name at once shared ``.<name>.pull``: the one whose download the other had
    moved into place failed with "cannot read image: No such file or directory". The second waits."""
    root, url = http_dir
    (root / image.name).write_bytes(image.read_bytes())
    (root / f"{image.name}.sha256").write_text(image.with_name(image.name + ".sha256").read_text())
    cache = ImageCache(tmp_path / "home")
    inside, go = threading.Event(), threading.Event()
    real = images.detect_format
    results: dict[str, object] = {}

    def checked_late(path: Path, **kw: bool) -> str:
        if threading.current_thread().name == "first":  # downloaded, its format not yet checked
            inside.set()
            go.wait(60)
        return real(path, **kw)

    monkeypatch.setattr(images, "detect_format", checked_late)

    def pull(who: str) -> None:
        try:
            results[who] = cache.pull(
                f"{url}/{image.name}", waiting=lambda holder: (heard.append(holder), go.set())
            )
        except ImageError as e:
            results[who] = e

    heard: list[str] = []
    first = threading.Thread(target=pull, args=("first",), name="first")
    first.start()
    assert inside.wait(60)
    second = threading.Thread(target=pull, args=("second",), name="second")
    second.start()
    second.join(60)
    go.set()
    first.join(60)
    assert all(isinstance(results[w], images.Image) for w in ("first", "second")), results
    assert heard == [f"pid {os.getpid()} (pull of {url}/{image.name})"]
    assert [i.name for i in cache.list()] == [image.name]
    assert sorted(p.name for p in cache.dir.iterdir()) == sorted(
        [image.name, f"{image.name}.json", f"{image.name}.sha256"]
    )  # no lock file or partial left


@pytest.mark.parametrize("length", [b"abc", b"same", b"-1", b"\xb2"])
def test_a_bad_or_repeated_content_length_is_no_traceback(image: Path, tmp_path: Path, length: bytes) -> None:
    """urllib3 reads past a Content-Length it cannot use (and takes one repeated with the same
    value), so the pull went on, and the progress bar's ``int()`` of it was a ValueError traceback."""
    data = image.read_bytes()
    sha = image.with_name(image.name + ".sha256").read_bytes()

    def answer(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            request = conn.recv(65536)
            body = sha if b".sha256 " in request else data
            declared = b"%d\r\nContent-Length: %d" % (len(body), len(body)) if length == b"same" else length
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %s\r\n\r\n" % declared)
            conn.sendall(body)

    seen: list[int | None] = []
    with listening(answer) as port:
        got = ImageCache(tmp_path / "home").pull(
            f"http://127.0.0.1:{port}/{image.name}", progress=lambda done, total: seen.append(total)
        )
    assert got.path.read_bytes() == data
    assert set(seen) == ({len(data)} if length == b"same" else {None})


@pytest.mark.parametrize("location", [b"http://[::1", b"http://a..b/", b"http://\xff\xfe/"])
def test_a_redirect_to_a_url_requests_cannot_parse_is_one_line(tmp_path: Path, location: bytes) -> None:
    """A ValueError, LocationParseError or UnicodeDecodeError out of requests (none of them a
    RequestException) was a traceback from a pull and from a release index's fetch."""
    from cernvm_build.launch import catalog

    def redirect(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n")

    with listening(redirect) as port:
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(ImageError, match="download failed: InvalidURL") as err:
            ImageCache(tmp_path / "home").pull(f"{url}/demo.hdd", sha256="0" * 64)
        assert "redirect to a URL that cannot be read" in (err.value.hint or "")
        with pytest.raises(ImageError, match=r"cannot fetch .*: InvalidURL"):
            catalog.fetch(f"{url}/index.json", tmp_path / "index.json")
    assert not (tmp_path / "index.json").exists()


def test_downloads_ask_for_no_encoding_and_inflate_none(image: Path, tmp_path: Path) -> None:
    """requests asks for gzip and deflate, and urllib3 before 2.6 (Debian 12's 1.26) inflated each
    1 MiB block read whole: a 2 MB gzip bomb as a release index took 2.1 GB. The launcher's
    downloads ask for the bytes as they are, and a Content-Encoding sent anyway is not undone
    (the bytes are judged as sent: here the index is no JSON)."""
    from cernvm_build.launch import catalog

    asked: list[bytes] = []
    bomb = gzip.compress(b"{}" + b" " * (8 << 20))

    def answer(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            request = conn.recv(65536)
            asked.extend(
                line for line in request.split(b"\r\n") if line.lower().startswith(b"accept-encoding")
            )
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(bomb), bomb)
            )

    with listening(answer) as port:
        url = f"http://127.0.0.1:{port}"
        assert catalog.fetch(f"{url}/index.json", tmp_path / "index.json").read_bytes() == bomb
        # the sha256 of the bytes sent passes (inflated, they did not), and they are no image
        with pytest.raises(ImageError, match="not a bootable image"):
            ImageCache(tmp_path / "home").pull(f"{url}/demo.hdd", sha256=hashlib.sha256(bomb).hexdigest())
    assert asked == [b"Accept-Encoding: identity"] * 2


def test_an_unreachable_server_s_hint_says_why_not_the_wrappers(tmp_path: Path) -> None:
    """The hint was requests' error text cut at 200 characters: "_HTTPPool(host='127.0.0.1',
    port=1): Max retries exceeded with url: ... (Caused by NewConnectionError(..." never got to
    the "Connection refused" at its end."""
    from cernvm_build.launch import catalog

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    want = "Connection refused; check the URL and that the server is up"
    with pytest.raises(ImageError, match="download failed: ConnectionError") as err:
        ImageCache(tmp_path / "home").pull(f"{url}/demo.hdd")
    assert err.value.hint == want
    with pytest.raises(ImageError, match="cannot fetch") as err:
        catalog.fetch(f"{url}/index.json", tmp_path / "index.json")
    assert err.value.hint == want
