"""Real yum and apt repositories, built in the tests with the real tools (rpmbuild, createrepo_c,
dpkg-deb, apt-ftparchive, gpg), and the real clients (dnf, apt-get) pointed at an HTTP URL."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

from cernvm_build.gpg import Keyring
from tests.support import gpgagents

SPEC = """\
Name: {name}
Version: {version}
Release: 1
Summary: test package {name}
License: MIT
BuildArch: noarch
%description
test package
%install
mkdir -p %{{buildroot}}/usr/share/{name}
cp {payload} %{{buildroot}}/usr/share/{name}/data
%files
/usr/share/{name}/data
"""


def run(*cmd: str | os.PathLike[str], cwd: Path | None = None) -> str:
    proc = subprocess.run([os.fspath(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def make_rpm(work: Path, name: str, version: str = "1.0", payload: bytes = b"hello\n") -> Path:
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"{name}-{version}.payload"
    data.write_bytes(payload)
    spec = work / f"{name}-{version}.spec"
    spec.write_text(SPEC.format(name=name, version=version, payload=data))
    top = work / "rpmbuild"
    run(
        "rpmbuild", "--define", f"_topdir {top}", "--define", "_build_id_links none",
        "--define", "__os_install_post %{nil}", "-bb", spec,
    )  # fmt: skip
    return top / "RPMS" / "noarch" / f"{name}-{version}-1.noarch.rpm"


def make_yum_repo(
    repo: Path,
    rpms: list[Path],
    *,
    secret_key: Path | None = None,
    update: bool = False,
    sign_time: dt.datetime | None = None,
) -> None:
    (repo / "Packages").mkdir(parents=True, exist_ok=True)
    for rpm in rpms:
        shutil.copy2(rpm, repo / "Packages" / rpm.name)
    run("createrepo_c", "--quiet", *(["--update"] if update else []), repo)
    if secret_key is not None:
        sign_yum(repo, secret_key, sign_time)


def sign_yum(repo: Path, secret_key: Path, sign_time: dt.datetime | None = None) -> None:
    with Keyring([secret_key], now=sign_time) as kr:
        kr.sign_detached(repo / "repodata" / "repomd.xml", repo / "repodata" / "repomd.xml.asc")


def make_deb(out: Path, name: str, version: str = "1.0", payload: bytes = b"hello\n") -> Path:
    tree = out.parent / f".{name}-{version}-tree"
    (tree / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (tree / "usr" / "share" / name).mkdir(parents=True, exist_ok=True)
    (tree / "usr" / "share" / name / "data").write_bytes(payload)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Test <t@cernvm.test>\n"
        f"Description: test package {name}\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    run("dpkg-deb", "-Zgzip", "-z1", "--root-owner-group", "--build", tree, out)
    shutil.rmtree(tree)
    return out


def make_source_package(work: Path, name: str, version: str = "1.0") -> list[Path]:
    """A real "3.0 (quilt)" source package made by dpkg-source: [.dsc, .orig.tar.gz, .debian.tar.xz]."""
    top = work / f"{name}-{version}"
    (top / "debian" / "source").mkdir(parents=True, exist_ok=True)
    (top / "hello.txt").write_text(f"{name} sources\n")
    run("tar", "-czf", work / f"{name}_{version}.orig.tar.gz", "--exclude=debian", "-C", work, top.name)
    d = top / "debian"
    (d / "source" / "format").write_text("3.0 (quilt)\n")
    (d / "control").write_text(
        f"Source: {name}\nMaintainer: Test <t@cernvm.test>\n\nPackage: {name}\nArchitecture: all\n"
        f"Description: test package {name}\n"
    )
    (d / "changelog").write_text(
        f"{name} ({version}-1) unstable; urgency=low\n\n  * test\n\n"
        " -- Test <t@cernvm.test>  Mon, 01 Jan 2024 00:00:00 +0000\n"
    )
    (d / "rules").write_text("#!/usr/bin/make -f\n%:\n\tdh $@\n")
    (d / "rules").chmod(0o755)
    run("dpkg-source", "-b", top.name, cwd=work)
    stem = f"{name}_{version}"
    return [work / f"{stem}-1.dsc", work / f"{stem}.orig.tar.gz", work / f"{stem}-1.debian.tar.xz"]


def make_apt_repo(
    root: Path,
    suite: str,
    debs: list[Path],
    *,
    secret_key: Path | None = None,
    sign_time: dt.datetime | None = None,
    sources: list[Path] = (),  # type: ignore[assignment]
) -> None:
    """``root/pool/main/*.deb`` + ``root/dists/<suite>`` with Packages(.gz), by-hash, (In)Release; with
    ``sources`` (a source package's files) also ``main/source/Sources(.gz)``."""
    pool = root / "pool" / "main"
    pool.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        if deb.parent != pool:
            shutil.copy2(deb, pool / deb.name)
    for f in sources:
        shutil.copy2(f, pool / f.name)
    dist = root / "dists" / suite
    binary = dist / "main" / "binary-amd64"
    if dist.exists():
        shutil.rmtree(dist)
    binary.mkdir(parents=True)
    packages = run("apt-ftparchive", "packages", "pool", cwd=root)
    (binary / "Packages").write_text(packages)
    run("gzip", "-9nk", binary / "Packages")
    if sources:
        (dist / "main" / "source").mkdir(parents=True)
        (dist / "main" / "source" / "Sources").write_text(run("apt-ftparchive", "sources", "pool", cwd=root))
        run("gzip", "-9nk", dist / "main" / "source" / "Sources")
    release = run(
        "apt-ftparchive",
        "-o", "APT::FTPArchive::DoByHash=1",
        "-o", f"APT::FTPArchive::Release::Suite={suite}",
        "-o", f"APT::FTPArchive::Release::Codename={suite}",
        "-o", "APT::FTPArchive::Release::Components=main",
        "-o", "APT::FTPArchive::Release::Architectures=amd64",
        "release", dist,
    )  # fmt: skip
    (dist / "Release").write_text(release)
    if secret_key is not None:
        with Keyring([secret_key], now=sign_time) as kr:
            kr.clearsign(dist / "Release", dist / "InRelease")
            kr.sign_detached(dist / "Release", dist / "Release.gpg")


def dnf_install(tmp: Path, baseurl: str, package: str, *, public_key: Path | None = None) -> Path:
    """Install ``package`` with the real dnf into a fresh installroot; returns the root."""
    base = tmp / "dnf"
    for d in ("repos", "cache", "log"):
        (base / d).mkdir(parents=True, exist_ok=True)
    (base / "dnf.conf").write_text("[main]\n")
    gpg = f"repo_gpgcheck=1\ngpgkey=file://{public_key}\n" if public_key else "repo_gpgcheck=0\n"
    (base / "repos" / "mirror.repo").write_text(
        f"[mirror]\nname=mirror\nbaseurl={baseurl}\nenabled=1\ngpgcheck=0\n{gpg}metadata_expire=0\n"
    )
    root = base / "root"
    try:
        run(
            "dnf", "-y", f"--installroot={root}", f"--config={base / 'dnf.conf'}",
            f"--setopt=reposdir={base / 'repos'}", f"--setopt=cachedir={base / 'cache'}",
            f"--setopt=logdir={base / 'log'}", "--releasever=9", "--setopt=install_weak_deps=False",
            "install", package,
        )  # fmt: skip
    finally:
        gpgagents.stop_under(base)  # dnf starts one per repository's keyring in its cache, and leaves it
    return root


def apt_install(tmp: Path, url: str, suite: str, package: str, *, public_key: Path) -> Path:
    """Install ``package`` with the real apt-get into a private root (host apt state untouched)."""
    r = tmp / "aptroot"
    for d in (
        "etc/apt/sources.list.d", "etc/apt/preferences.d", "etc/apt/trusted.gpg.d", "var/lib/dpkg/info",
        "var/lib/dpkg/updates", "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/log",
    ):  # fmt: skip
        (r / d).mkdir(parents=True, exist_ok=True)
    (r / "var/lib/dpkg/status").touch()
    keyring = r / "etc/apt/mirror-key.asc"
    shutil.copy2(public_key, keyring)
    (r / "etc/apt/sources.list").write_text(f"deb [signed-by={keyring}] {url} {suite} main\n")
    opts = [
        f"Dir={r}", f"Dir::State::status={r}/var/lib/dpkg/status",
        f"Dir::Etc::sourcelist={r}/etc/apt/sources.list", f"Dir::Etc::sourceparts={r}/etc/apt/sources.list.d",
        f"Dir::Etc::trustedparts={r}/etc/apt/trusted.gpg.d",
        f"Dir::Etc::preferencesparts={r}/etc/apt/preferences.d",
        f"Dir::Log={r}/var/log", "APT::Architecture=amd64", "APT::Architectures=amd64", "Debug::NoLocking=1",
        f"DPkg::Options::=--root={r}", f"DPkg::Options::=--log={r}/var/log/dpkg.log",
        "DPkg::Options::=--force-script-chrootless", "APT::Sandbox::User=root", "Dpkg::Use-Pty=0",
        "Acquire::Retries=0",
    ]  # fmt: skip
    args = [x for o in opts for x in ("-o", o)]
    run("apt-get", *args, "update", "--error-on=any")
    run("apt-get", *args, "-y", "--no-install-recommends", "install", package)
    return r


def sign_rpm(rpm: Path, secret_key: Path, out: Path) -> Path:
    """A copy of ``rpm`` at ``out`` with an OpenPGP header signature by ``secret_key`` (real rpmsign)."""
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(rpm, out)
    with tempfile.TemporaryDirectory(prefix="rpmsign-") as home:
        os.chmod(home, 0o700)
        try:  # the import already starts the agent: stopped whatever fails from here
            run("gpg", "--homedir", home, "--batch", "--import", secret_key)
            listing = run("gpg", "--homedir", home, "--list-secret-keys", "--with-colons")
            fpr = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:"))
            gpg = shutil.which("gpg") or "gpg"
            run("rpmsign", "--addsign", "--define", f"_gpg_name {fpr}", "--define", f"_gpg_path {home}",
                "--define", f"__gpg {gpg}", out)  # fmt: skip
        finally:
            gpgagents.stop(Path(home))
    return out
