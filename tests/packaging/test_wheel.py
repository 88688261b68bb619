"""The built wheel, installed with only its core dependencies into a fresh venv outside the checkout.

What a user gets from ``pip install cernvm-build`` (or ``pipx install``): the shipped profiles, the
CernVM-FS reader, an image build of the demo, and a one-line pointer to the extra a command needs.
The wheel is built from a copy holding only what a source distribution holds (pyproject.toml,
README.md, cernvm_build/), so nothing of the checkout can stand in for missing package data. The core
dependencies come from the package index the machine is configured with (PyPI and local mirrors).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import linked_cache

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "cvmfs" / "data" / "fixture.cernvm.test"
# What the extras add (markdown-it-py and Pygments come with rich, a core dependency, anyway).
EXTRA_DISTRIBUTIONS = ("libvirt-python", "paramiko", "boto3", "botocore", "mdit-py-plugins", "requests")


def _run(
    cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _clean_env(extra_path: Path, cache: Path) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH, no virtualenv of the checkout on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not p.startswith(str(REPO))]
    path = [p for p in path if Path(sys.prefix) not in Path(p).parents and p != str(Path(sys.prefix) / "bin")]
    env["PATH"] = os.pathsep.join([str(extra_path), *path])
    env["CERNVM_CACHE_DIR"] = str(cache)
    env["COLUMNS"] = "200"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    shutil.copy2(REPO / "pyproject.toml", src)
    shutil.copy2(REPO / "README.md", src)
    shutil.copytree(REPO / "cernvm_build", src / "cernvm_build", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (whl,) = dist.glob("cernvm_build-*.whl")
    return whl


@dataclass
class Installed:
    venv: Path
    home: Path  # a working directory outside the checkout
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return _run(
            [str(self.venv / "bin" / args[0]), *args[1:]], cwd=self.home, env=self.env, timeout=timeout
        )


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    venv = tmp_path_factory.mktemp("venv")
    home = tmp_path_factory.mktemp("home")
    cache = linked_cache(tmp_path_factory.mktemp("cache"))
    env = _clean_env(venv / "bin", cache)
    proc = _run([sys.executable, "-m", "venv", str(venv)], cwd=home, env=env)
    assert proc.returncode == 0, proc.stderr
    proc = _run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], cwd=home, env=env)
    assert proc.returncode == 0, proc.stderr
    return Installed(venv, home, env)


def test_wheel_holds_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for member in (
        "cernvm_build/data/profiles/el9.yaml",
        "cernvm_build/data/profiles/keys/demo.cernvm.test.pub",
        "cernvm_build/data/bootloader/init.d/10-cvmfs.sh",
        "cernvm_build/data/bootloader/boot/isolinux.cfg",
        "cernvm_build/data/launch/domain.xml.j2",
        "cernvm_build/data/site/config.yaml",
        "cernvm_build/data/site/templates/base.html",
        "cernvm_build/data/demo/rootfs/etc/init.d/rcS",
        "cernvm_build/py.typed",
    ):
        assert member in names, member
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    core = [
        line for line in text.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert not [
        line for line in core if re.search(r"libvirt|boto3|paramiko|markdown-it|pygments", line, re.I)
    ]


def test_only_the_core_is_installed_and_it_is_the_wheel(installed: Installed) -> None:
    proc = installed.run("python", "-c", "import cernvm_build, json; print(cernvm_build.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(installed.venv), proc.stdout
    proc = installed.run("python", "-m", "pip", "list", "--format=json")
    have = {d["name"].lower() for d in json.loads(proc.stdout)}
    assert not have & {d.lower() for d in EXTRA_DISTRIBUTIONS}, have


def test_profiles_from_the_installed_package(installed: Installed) -> None:
    proc = installed.run("cernvm-build", "profiles", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    profiles = json.loads(proc.stdout)
    assert [p["name"] for p in profiles] == ["debian12", "demo", "el4", "el5", "el6", "el7", "el8", "el9"]
    assert all(Path(p["file"]).is_relative_to(installed.venv) for p in profiles)
    proc = installed.run("cernvm-build", "profiles", "show", "el9")
    assert proc.returncode == 0, proc.stderr
    assert "cernvm-five.cern.ch" in proc.stdout


def test_cvmfs_ls_of_the_real_tools_fixture(installed: Installed) -> None:
    proc = installed.run(
        "cernvm-build",
        "cvmfs",
        "ls",
        str(FIXTURE / "repo"),
        "/",
        "--key",
        str(FIXTURE / "keys" / "fixture.cernvm.test.pub"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["etc", "opt", "usr"]


@pytest.fixture
def demo_server(installed: Installed, tmp_path: Path) -> Iterator[str]:
    """The demo repository, created, published and served by the installed toolkit itself."""
    proc = installed.run(
        "python", "-c", "from cernvm_build.paths import data_dir; print(data_dir('profiles'))"
    )
    keys = Path(proc.stdout.strip()) / "keys" / "demo"
    assert keys.is_relative_to(installed.venv)
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text('NAME="wheel test"\n')
    srv = tmp_path / "srv" / "demo.cernvm.test"
    for args in (
        ["cvmfs", "create", str(srv), "--fqrn", "demo.cernvm.test", "--keys", str(keys)],
        ["cvmfs", "publish", str(srv), str(tree), "--keys", str(keys)],
    ):
        proc = installed.run("cernvm-build", *args)
        assert proc.returncode == 0, proc.stderr
    serve = subprocess.Popen(
        [str(installed.venv / "bin" / "cernvm-build"), "cvmfs", "serve", str(srv.parent), "--port", "0"],
        cwd=installed.home,
        env=installed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/cvmfs/demo\.cernvm\.test)", line)
        assert m, line
        yield m[1]
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_image_build_of_the_demo(installed: Installed, demo_server: str, tmp_path: Path) -> None:
    out = tmp_path / "images"
    proc = installed.run(
        "cernvm-build",
        "image",
        "demo",
        "--format",
        "iso",
        "--server",
        demo_server,
        "--out",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    (iso,) = out.glob("ucernvm-demo.*.iso")
    assert iso.stat().st_size > 1_000_000
    manifest = json.loads(next(out.glob("*.manifest.json")).read_text())
    assert manifest["profile"]["name"] == "demo"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["cernvm-build", "mirror", "--help"],
            "error: `cernvm-build mirror` needs the 'mirror' extra: pip install 'cernvm-build[mirror]'",
        ),
        (
            ["cernvm-build", "site", "build"],
            "error: `cernvm-build site` needs the 'site' extra: pip install 'cernvm-build[site]'",
        ),
        (
            ["cernvm-launch", "list"],
            "error: `cernvm-launch` needs the 'launch' extra: pip install 'cernvm-build[launch]'",
        ),
    ],
)
def test_a_missing_extra_is_named(installed: Installed, argv: list[str], line: str) -> None:
    proc = installed.run(*argv)
    assert proc.returncode == 4
    assert proc.stderr.strip() == line


def test_pipx_install(wheel: Path, tmp_path: Path) -> None:
    pipx = shutil.which("pipx")
    if pipx is None:
        pytest.skip("pipx is not installed (Debian package 'pipx'; `make apt` installs it)")
    cache = linked_cache(tmp_path / "cache")
    env = _clean_env(tmp_path / "bin", cache)
    env.update(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"))
    proc = _run([pipx, "install", "--python", sys.executable, str(wheel)], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _run([str(tmp_path / "bin" / "cernvm-build"), "profiles", "list", "--json"], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "el9" in [p["name"] for p in json.loads(proc.stdout)]
    proc = _run([str(tmp_path / "bin" / "cernvm-launch"), "list"], cwd=tmp_path, env=env)
    assert proc.returncode == 4 and "'launch' extra" in proc.stderr


def test_site_extra_builds_the_shipped_site_and_a_users_own(
    wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    venv = tmp_path_factory.mktemp("venv-site")
    home = tmp_path_factory.mktemp("home-site")
    env = _clean_env(venv / "bin", linked_cache(tmp_path_factory.mktemp("cache")))
    assert _run([sys.executable, "-m", "venv", str(venv)], cwd=home, env=env).returncode == 0
    proc = _run([str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[site]"], cwd=home, env=env)
    assert proc.returncode == 0, proc.stderr
    site = Installed(venv, home, env)
    proc = site.run("cernvm-build", "site", "build", "--out", "shipped", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pages"] > 20
    assert "CernVM-FS" in (home / "shipped" / "index.html").read_text()
    # a user's own site folder of the same layout
    proc = site.run("python", "-c", "from cernvm_build.paths import data_dir; print(data_dir('site'))")
    mine = home / "mysite"
    shutil.copytree(Path(proc.stdout.strip()), mine)
    config = mine / "config.yaml"
    config.write_text(config.read_text().replace("title: CernVM-FS and CernVM", "title: My own mirror"))
    proc = site.run("cernvm-build", "site", "build", "--site", str(mine), "--out", "mine")
    assert proc.returncode == 0, proc.stderr
    assert "My own mirror" in (home / "mine" / "index.html").read_text()
    assert "My own mirror" not in (home / "shipped" / "index.html").read_text()
