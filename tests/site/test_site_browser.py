"""The built site in a real browser (Debian chromium, headless): pages load without console errors or
missing resources, search works offline, and screenshots are taken for people to judge the design.

Screenshots land in the test's tmp folder, or in $SITE_SCREENSHOTS when set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sitehelpers import Builder

from cernvm_build.site.serve import Preview

pytestmark = pytest.mark.integration


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    flags = (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
    )  # fmt: skip
    for arg in flags:
        opts.add_argument(arg)
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium'}")
    opts.add_argument("--window-size=1366,900")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def served(site: Path, tmp_path: Path) -> Iterator[Preview]:
    preview = Preview(Builder(site, tmp_path / "out"), port=0, interval=3600)
    preview.start()
    yield preview
    preview.stop()


def shots_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("SITE_SCREENSHOTS") or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def console_errors(driver: object) -> list[str]:
    logs = driver.get_log("browser")  # type: ignore[attr-defined]
    return [e["message"] for e in logs if e["level"] == "SEVERE"]


def failed_resources(driver: object) -> list[str]:
    entries = driver.execute_script(  # type: ignore[attr-defined]
        "return performance.getEntriesByType('resource').map(e => [e.name, e.responseStatus || 0]);"
    )
    return [f"{name} -> {status}" for name, status in entries if status >= 400]


def test_pages_load_cleanly_and_search_works(browser: object, served: Preview, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    wait = WebDriverWait(d, 30)  # type: ignore[arg-type]
    shots = shots_dir(tmp_path)

    d.get(served.url)  # type: ignore[attr-defined]
    assert "CernVM-FS" in d.title  # type: ignore[attr-defined]
    hero = d.find_element(By.CSS_SELECTOR, ".hero h1")  # type: ignore[attr-defined]
    assert hero.is_displayed() and hero.size["height"] > 40
    # the stylesheet applied: the top bar is sticky and the cards are laid out in a grid
    assert d.execute_script("return getComputedStyle(document.querySelector('.topbar')).position") == "sticky"  # type: ignore[attr-defined]
    assert d.execute_script("return getComputedStyle(document.querySelector('.cards')).display") == "grid"  # type: ignore[attr-defined]
    d.save_screenshot(str(shots / "home.png"))  # type: ignore[attr-defined]
    assert console_errors(d) == [] and failed_resources(d) == []

    d.get(served.url + "docs/quickstart/client/")  # type: ignore[attr-defined]
    current = d.find_element(By.CSS_SELECTOR, '.sidebar a[aria-current="page"]')  # type: ignore[attr-defined]
    assert current.text == "The client"
    assert d.find_element(By.CSS_SELECTOR, "pre.highlight .copy")  # type: ignore[attr-defined]  # script ran
    d.save_screenshot(str(shots / "docs-client.png"))  # type: ignore[attr-defined]
    assert console_errors(d) == [] and failed_resources(d) == []

    # type into the header search box: results appear as you type, from the offline index
    box = d.find_element(By.CSS_SELECTOR, "form.search input")  # type: ignore[attr-defined]
    box.click()
    box.send_keys("proxy squid")
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".search-pop a")))
    hits = [a.get_attribute("href") for a in d.find_elements(By.CSS_SELECTOR, ".search-pop a")]  # type: ignore[attr-defined]
    assert any(h.endswith("/docs/quickstart/client/") for h in hits)
    assert d.find_element(By.CSS_SELECTOR, ".search-pop mark").text.lower() in ("proxy", "squid")  # type: ignore[attr-defined]
    d.save_screenshot(str(shots / "search-dropdown.png"))  # type: ignore[attr-defined]

    # the search page, with a query that must be escaped rather than executed
    d.get(served.url + "search/?q=snapshot%20%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")  # type: ignore[attr-defined]
    wait.until(lambda drv: "match" in drv.find_element(By.ID, "search-status").text)
    d.get(served.url + "search/?q=snapshot")  # type: ignore[attr-defined]
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#search-results li a")))
    results = d.find_elements(By.CSS_SELECTOR, "#search-results li a")  # type: ignore[attr-defined]
    assert len(results) >= 3
    d.save_screenshot(str(shots / "search-page.png"))  # type: ignore[attr-defined]

    # a phone-sized window: the menu collapses behind a button
    d.set_window_size(400, 850)  # type: ignore[attr-defined]
    d.get(served.url + "docs/guides/preservation/")  # type: ignore[attr-defined]
    toggle = d.find_element(By.CSS_SELECTOR, ".menu-toggle")  # type: ignore[attr-defined]
    assert toggle.is_displayed()
    assert not d.find_element(By.ID, "menu").is_displayed()  # type: ignore[attr-defined]
    # nothing is wider than the screen (long code lines scroll inside their own box)
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")  # type: ignore[attr-defined]
    toggle.click()
    assert d.find_element(By.ID, "menu").is_displayed()  # type: ignore[attr-defined]
    d.save_screenshot(str(shots / "mobile-docs.png"))  # type: ignore[attr-defined]

    assert console_errors(d) == [] and failed_resources(d) == []
    assert [r for r in served.requests if r[0] >= 400] == []
    assert sorted(p.name for p in shots.glob("*.png")) == [
        "docs-client.png", "home.png", "mobile-docs.png", "search-dropdown.png", "search-page.png",
    ]  # fmt: skip
    if not os.environ.get("SITE_SCREENSHOTS"):
        shutil.rmtree(shots)
