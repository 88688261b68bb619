"""The context builder (/context/) in a real browser (Debian chromium, headless): its checks give the
bootloader table's results and messages for every key (so the page cannot drift from the CLI), a
filled form downloads a file that cernvm-launch accepts, and a malformed value is refused by the
page and by the CLI with the same message. Nothing typed leaves the page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sitehelpers import Builder
from test_site_browser import browser, console_errors  # noqa: F401 (the fixture)

from cernvm_build.bootloader import userdata as boot_userdata
from cernvm_build.cli.launch import main as launch_main
from cernvm_build.launch import userdata as launch_userdata
from cernvm_build.site.serve import Preview
from cernvm_build.table import Invalid

pytestmark = pytest.mark.integration

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq1w2e3r4t5y6u7i8o9p0aSdFgHjKlZxCvBnM12345 you@laptop #1"
SAMPLES = {
    "string": ["", "  ", "v1", " v1 ", "'v1'", '"v1"', "bad tag!", "a b", "../etc", "x" * 200, "host:8000",
               "h1,h2:80", "a..b", "cvm4/x", "http://p:3128;DIRECT", "2021-01-15", "2021-13-45T10:00Z",
               "2021-02-29", "2024-02-29 23:59", "0000-01-01", "2021-01-15T24:00:00Z",
               "DIRECT|auto", "it's", "tab\tin", "é", "abc=="],
    "integer": ["0", "1", "-1", "+5", " 7 ", "x", "99999", "1.5", "4000", "", "1e3"],
    "boolean": ["on", "OFF", "yes", "No", "1", "0", "true", "maybe", "", " on "],
}  # fmt: skip


def python_check(key: str, value: str) -> dict[str, object]:
    """What cernvm-launch does with ``key=value`` in a ucernvm block (launch/userdata._split_block)."""
    try:
        return {"ok": True, "value": boot_userdata.check(key, boot_userdata.unquote(value.strip()))}
    except Invalid as e:
        return {"ok": False, "message": e.message, "hint": e.hint}


@pytest.fixture
def page(site: Path, tmp_path: Path) -> Iterator[str]:
    preview = Preview(Builder(site, tmp_path / "out"), port=0, interval=3600)
    preview.start()
    yield preview.url.rstrip("/") + "/context/"
    preview.stop()


def _wait_for_download(folder: Path) -> Path:
    for _ in range(100):
        done = [p for p in folder.glob("*") if not p.name.endswith(".crdownload")]
        if done:
            return done[0]
        time.sleep(0.1)
    pytest.fail(f"no download arrived in {folder}")


def test_page_checks_every_key_as_the_bootloader_table_does(browser: object, page: str) -> None:  # noqa: F811
    d = browser
    d.get(page)  # type: ignore[attr-defined]
    compared = 0
    for setting in boot_userdata.SETTINGS:
        for value in SAMPLES[setting.kind.value]:
            js = d.execute_script(
                "return window.cernvmContextCheck(arguments[0], arguments[1])", setting.key, value
            )  # type: ignore[attr-defined]
            assert js == python_check(setting.key, value), (setting.key, value)
            compared += 1
    assert compared > 150 and not console_errors(d)


def test_fill_download_and_the_cli_accepts_it(
    browser: object,  # noqa: F811
    page: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    d = browser
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})  # type: ignore[attr-defined]
    d.get(page)  # type: ignore[attr-defined]
    # (the preview server's live-reload poll is not the page's)
    resources = (
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.includes('/__livereload'))"
    )
    for _ in range(50):  # the deferred scripts and what they load, before anything is typed
        if d.execute_script("return document.readyState") == "complete":  # type: ignore[attr-defined]
            break
        time.sleep(0.1)
    time.sleep(0.5)
    loaded = d.execute_script(resources)  # type: ignore[attr-defined]

    def field(css: str) -> object:
        return d.find_element(By.CSS_SELECTOR, css)  # type: ignore[attr-defined]

    def error_of(field_id: str) -> str:
        return str(field(f"#{field_id}-error").text)

    field("#cb-ssh-keys").send_keys(KEY)  # type: ignore[attr-defined]
    field("#cb-hostname").send_keys("<img src=x onerror=alert(1)>")  # type: ignore[attr-defined]
    assert "hostname: invalid value '<img src=x onerror=alert(1)>'" in error_of("cb-hostname")
    assert not d.find_elements(By.CSS_SELECTOR, "img[src=x]")  # type: ignore[attr-defined]
    field("#cb-hostname").clear()  # type: ignore[attr-defined]
    field("#cb-hostname").send_keys("paired")  # type: ignore[attr-defined]

    # A malformed pin: refused as the user types, with the table's message; no file can be made.
    tag = field("#cb-key-cvmfs_tag")
    tag.send_keys("bad tag!")  # type: ignore[attr-defined]
    refused = error_of("cb-key-cvmfs_tag")
    assert refused.startswith("cvmfs_tag: invalid value 'bad tag!' (hint: expected a snapshot tag")
    assert field("#cb-download").get_attribute("disabled") is not None  # type: ignore[attr-defined]
    tag.clear()  # type: ignore[attr-defined]
    tag.send_keys("v1")  # type: ignore[attr-defined]
    field("#cb-key-cvmfs_server").send_keys("10.0.2.2:8000")  # type: ignore[attr-defined]
    script = field("#cb-script")
    script.send_keys("echo no interpreter line")  # type: ignore[attr-defined]
    assert error_of("cb-script").startswith("script: must start with #!")
    script.clear()  # type: ignore[attr-defined]
    script.send_keys("#!/bin/sh\necho made-by-the-page > /root/page.txt\n")  # type: ignore[attr-defined]
    Select(field("#cb-key-resize_rootfs")).select_by_value("off")
    assert all(not error_of(i) for i in ("cb-ssh-keys", "cb-hostname", "cb-key-cvmfs_tag", "cb-script"))
    shown = str(field("#cb-output").text)
    assert "cvmfs_tag=v1" in shown and "#cloud-config" in shown
    field("#cb-download").click()  # type: ignore[attr-defined]
    got = _wait_for_download(downloads)
    assert got.name == "user-data.txt"
    after = d.execute_script(resources)  # type: ignore[attr-defined]
    assert after == loaded, f"requests while the form was filled: {after[len(loaded) :]}"
    assert not console_errors(d)

    # The CLI's check (what create runs) accepts the file and sees every value.
    monkeypatch.setenv("CERNVM_LAUNCH_CONF", str(tmp_path / "absent.conf"))
    assert launch_main(["context", str(got), "--json"]) == 0
    capsys.readouterr()
    parsed = launch_userdata.parse(got.read_bytes(), str(got))
    assert parsed.ucernvm == {"cvmfs_tag": "v1", "cvmfs_server": "10.0.2.2:8000", "resize_rootfs": "0"}
    assert parsed.cloud_config == {"hostname": "paired", "ssh_authorized_keys": [KEY]}
    assert [(p.content_type, p.text) for p in parsed.parts] == [
        ("text/x-shellscript", "#!/bin/sh\necho made-by-the-page > /root/page.txt\n")
    ]
    # ... and so does the bootloader's own reader in the initrd (the MIME part is plain text).
    assert boot_userdata.parse(got.read_bytes()).values == parsed.ucernvm

    # The page's refusal and the CLI's are the same message.
    bad = tmp_path / "bad.txt"
    bad.write_text(got.read_text().replace("cvmfs_tag=v1", "cvmfs_tag=bad tag!"))
    assert launch_main(["context", str(bad)]) == 3
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    hint = next(x for x in err.splitlines() if x.startswith("hint:"))
    assert line.endswith(": " + refused.split(" (hint: ")[0])
    assert refused.endswith(f"(hint: {hint.removeprefix('hint: ')})")
