"""End to end (issue 21): a context made in the site's context builder (headless Chromium) boots the
demo image through ``cernvm-launch create FILE``: the SSH key typed into the page logs in (OpenSSH,
the user's own key, not launch's), the host name arrives, and the snapshot pin typed into the page is
the one the bootloader mounted and recorded."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_build.cli.launch import main
from cernvm_build.cvmfs.serve import Server
from tests.launch.test_e2e import NAME, URI, demo, launch_home  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e


@pytest.fixture
def page(tmp_path: Path) -> Iterator[str]:
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "site"))
    from sitehelpers import Builder

    from cernvm_build.paths import data_dir
    from cernvm_build.site.serve import Preview

    site = tmp_path / "site"
    shutil.copytree(data_dir("site"), site)
    preview = Preview(Builder(site, tmp_path / "out"), port=0, interval=3600)
    preview.start()
    yield preview.url.rstrip("/") + "/context/"
    preview.stop()


def _download_context(page: str, tmp_path: Path, values: dict[str, str], key: str) -> Path:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    try:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        driver.get(page)
        driver.find_element(By.CSS_SELECTOR, "#cb-ssh-keys").send_keys(key)
        driver.find_element(By.CSS_SELECTOR, "#cb-hostname").send_keys("from-the-page")
        for name, value in values.items():
            driver.find_element(By.CSS_SELECTOR, f"#cb-key-{name}").send_keys(value)
        driver.find_element(By.CSS_SELECTOR, "#cb-download").click()
        # Chromium makes the file's name empty first and writes a .crdownload beside it, renamed over
        # it at the end; quitting before then cancels the download and removes both (CI saw the name,
        # then no file): done is the name with content and no .crdownload left
        for _ in range(300):
            sizes = {}
            for p in downloads.glob("*"):
                with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
                    sizes[p] = p.stat().st_size
            got = [p for p, size in sizes.items() if size and not p.name.endswith(".crdownload")]
            if got and not any(p.name.endswith(".crdownload") for p in sizes):
                return got[0]
            time.sleep(0.1)
    finally:
        driver.quit()
    pytest.fail("the page did not download a context")


def test_a_context_from_the_page_boots_with_its_key_and_pin(
    demo: tuple[Path, Server],  # noqa: F811
    launch_home: Path,  # noqa: F811
    page: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    image, srv = demo
    keyfile = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "page-user", "-f", str(keyfile)], check=True
    )
    pub = keyfile.with_suffix(".pub").read_text().strip()
    context = _download_context(
        page, tmp_path, {"cvmfs_tag": "demo-1", "cvmfs_server": f"10.0.2.2:{srv.port}"}, pub
    )
    args = ["--connect", URI]
    assert main([*args, "images", "add", str(image), "--profile", "demo"]) == 0
    assert main([*args, "context", str(context)]) == 0
    code = main([*args, "create", "--name", NAME, "--profile", "demo", "--memory", "512", "--yes",
                 "--timeout", "420", str(context)])  # fmt: skip
    assert code == 0, capfd.readouterr().err
    capfd.readouterr()
    assert main([*args, "ip", NAME, "--json"]) == 0
    where = json.loads(capfd.readouterr().out)

    def own_ssh(command: str) -> str:
        r = subprocess.run(
            ["ssh", "-i", str(keyfile), "-p", str(where["port"]), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "ConnectTimeout=30", f"root@{where['host']}", command],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert own_ssh("hostname").strip() == "from-the-page"
    # the bootloader's record of what it mounted: root hash, then the tag the page pinned
    assert own_ssh("cat /mnt/.rw/aux/cvmfs_snapshot").split()[1:] == ["demo-1"]
    assert main([*args, "destroy", "--force", NAME]) == 0
