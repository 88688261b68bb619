"""The built site in a real browser (Debian chromium, headless): pages load without console errors or
missing resources, search works offline, and screenshots are taken for people to judge the design.

Screenshots land in the test's tmp folder (kept for review), or in $SITE_SCREENSHOTS when set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sitehelpers import Builder

from cernvm_build.cli import reference as cli_reference
from cernvm_build.site.releases import snapshot_docs
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
    # a past release's docs beside the current ones, as the release tool leaves them
    snapshot_docs(site, "2026.11-1", cli_reference.GENERATORS)
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


ESCAPED = ("&lt;p&gt;", "&lt;strong&gt;", "&lt;code&gt;", "&lt;a href", "&amp;lt;", "&lt;/")

#: real queries and the heading each must land on (the first result's link, fragment included)
QUERIES = (
    ("configuring a squid proxy", "/docs/guides/replication/#configuring-a-squid-proxy"),
    ("stratum 1", "/docs/guides/replication/#stratum-1-a-replica"),
    ("pin a tag", "/docs/guides/snapshots/#pin-a-tag-on-the-client"),
    ("DUCC", "/docs/guides/containers/#ducc-publishing-images-unpacked"),
)


def visible_text_is_clean(driver: object) -> None:
    text = driver.execute_script("return document.body.innerText")  # type: ignore[attr-defined]
    for bad in ("<p>", "<strong>", "</a>", "<code>", *ESCAPED):
        assert bad not in text, bad


def header_search(driver: object, query: str) -> list[str]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    box = driver.find_element(By.CSS_SELECTOR, "form.search input")  # type: ignore[attr-defined]
    box.clear()
    box.click()
    box.send_keys(query)
    WebDriverWait(driver, 30).until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".search-pop a")))  # type: ignore[arg-type]
    # results of earlier keystrokes may be on screen for a moment: wait until they settle
    last: list[str] = []
    for _ in range(20):
        now = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, ".search-pop a")]  # type: ignore[attr-defined]
        if now == last:
            break
        last = now
        driver.execute_script("return new Promise(r => setTimeout(r, 150))")  # type: ignore[attr-defined]
    return last


def test_the_site_in_a_real_browser(browser: object, served: Preview, tmp_path: Path) -> None:
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
    assert d.execute_script("return getComputedStyle(document.querySelector('.topbar')).position") == "sticky"  # type: ignore[attr-defined]
    assert d.execute_script("return getComputedStyle(document.querySelector('.cards')).display") == "grid"  # type: ignore[attr-defined]
    visible_text_is_clean(d)
    d.save_screenshot(str(shots / "home.png"))  # type: ignore[attr-defined]
    assert console_errors(d) == [] and failed_resources(d) == []

    # lists with excerpts show them as text, not as escaped HTML
    for url in ("news/", "tags/cvmfs/", "downloads/", "repositories/", "docs/reference/benchmarks/"):
        d.get(served.url + url)  # type: ignore[attr-defined]
        visible_text_is_clean(d)
        assert "missed" not in d.find_element(By.TAG_NAME, "main").text  # type: ignore[attr-defined]
        assert console_errors(d) == [] and failed_resources(d) == [], url

    d.get(served.url + "docs/guides/replication/")  # type: ignore[attr-defined]
    current = d.find_element(By.CSS_SELECTOR, '.sidebar a[aria-current="page"]')  # type: ignore[attr-defined]
    assert current.text == "Stratum 1 and proxies"
    # copy buttons are visible without hovering; the page says when it changed and where to edit it
    copy = d.find_element(By.CSS_SELECTOR, "pre.highlight .copy")  # type: ignore[attr-defined]
    assert copy.is_displayed() and float(copy.value_of_css_property("opacity")) >= 0.7
    assert (
        d.find_element(By.CSS_SELECTOR, ".page-meta a.edit")
        .get_attribute("href")
        .endswith(  # type: ignore[attr-defined]
            "/content/docs/guides/replication.md"
        )
    )
    toc = d.find_element(By.CSS_SELECTOR, "details.toc")  # type: ignore[attr-defined]
    assert toc.get_attribute("open") is not None and toc.find_element(By.CSS_SELECTOR, "a").is_displayed()
    visible_text_is_clean(d)
    d.save_screenshot(str(shots / "docs-page.png"))  # type: ignore[attr-defined]
    assert console_errors(d) == [] and failed_resources(d) == []

    # the version switcher moves to the same page in the release's docs, and back
    from selenium.webdriver.support.ui import Select

    Select(d.find_element(By.CSS_SELECTOR, "select.version-select")).select_by_visible_text("2026.11-1")  # type: ignore[attr-defined]
    wait.until(lambda drv: drv.current_url.endswith("/docs-2026.11-1/guides/replication/"))
    assert "documentation of release 2026.11-1" in d.find_element(By.CSS_SELECTOR, ".version-note").text  # type: ignore[attr-defined]
    d.save_screenshot(str(shots / "docs-version.png"))  # type: ignore[attr-defined]
    Select(d.find_element(By.CSS_SELECTOR, "select.version-select")).select_by_visible_text("Latest")  # type: ignore[attr-defined]
    wait.until(lambda drv: drv.current_url.endswith("/docs/guides/replication/"))
    assert console_errors(d) == [] and failed_resources(d) == []

    # the theme toggle switches to dark and the choice survives a page load
    bg = d.execute_script("return getComputedStyle(document.body).backgroundColor")  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, ".theme-toggle").click()  # type: ignore[attr-defined]
    assert d.execute_script("return getComputedStyle(document.body).backgroundColor") != bg  # type: ignore[attr-defined]
    d.refresh()  # type: ignore[attr-defined]
    theme = d.execute_script("return document.documentElement.getAttribute('data-theme')")  # type: ignore[attr-defined]
    assert (
        theme in ("dark", "light")
        and d.execute_script("return getComputedStyle(document.body).backgroundColor") != bg
    )  # type: ignore[attr-defined]
    d.save_screenshot(str(shots / "docs-page-dark.png"))  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, ".theme-toggle").click()  # type: ignore[attr-defined]

    # real queries land on the heading that answers them (stemming, phrases, one-letter words)
    for query, want in QUERIES:
        hits = header_search(d, query)
        assert hits and hits[0].endswith(want), (query, hits[:3])
    header_search(d, "configuring a squid proxy")
    d.save_screenshot(str(shots / "search-dropdown.png"))  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, ".search-pop a").click()  # type: ignore[attr-defined]
    wait.until(lambda drv: drv.current_url.endswith("#configuring-a-squid-proxy"))

    # the search page, with a query that must be escaped rather than executed
    d.get(served.url + "search/?q=snapshot%20%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")  # type: ignore[attr-defined]
    wait.until(lambda drv: "match" in drv.find_element(By.ID, "search-status").text)
    d.get(served.url + "search/?q=garbage%20collection")  # type: ignore[attr-defined]
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#search-results li a")))
    first = d.find_element(By.CSS_SELECTOR, "#search-results li a")  # type: ignore[attr-defined]
    assert first.get_attribute("href").endswith("/docs/guides/publishing/#garbage-collection")
    assert d.find_element(By.CSS_SELECTOR, "#search-results mark")  # type: ignore[attr-defined]
    d.save_screenshot(str(shots / "search-page.png"))  # type: ignore[attr-defined]
    assert console_errors(d) == [] and failed_resources(d) == []

    # a phone-sized window: the menu collapses behind a button, the page's contents fold above it
    d.set_window_size(400, 850)  # type: ignore[attr-defined]
    d.get(served.url + "docs/guides/snapshots/")  # type: ignore[attr-defined]
    toggle = d.find_element(By.CSS_SELECTOR, ".menu-toggle")  # type: ignore[attr-defined]
    assert toggle.is_displayed()
    assert not d.find_element(By.ID, "menu").is_displayed()  # type: ignore[attr-defined]
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")  # type: ignore[attr-defined]
    toc = d.find_element(By.CSS_SELECTOR, "details.toc")  # type: ignore[attr-defined]
    link = toc.find_element(By.CSS_SELECTOR, "a")
    assert toc.is_displayed() and toc.get_attribute("open") is None and not link.is_displayed()
    toc.find_element(By.CSS_SELECTOR, "summary").click()
    assert link.is_displayed()
    d.save_screenshot(str(shots / "mobile-toc.png"))  # type: ignore[attr-defined]
    link.click()
    wait.until(lambda drv: "#" in drv.current_url)
    toggle.click()
    assert d.find_element(By.ID, "menu").is_displayed()  # type: ignore[attr-defined]
    d.save_screenshot(str(shots / "mobile.png"))  # type: ignore[attr-defined]

    assert console_errors(d) == [] and failed_resources(d) == []
    assert [r for r in served.requests if r[0] >= 400] == []
    assert {"home.png", "docs-page.png", "search-dropdown.png", "mobile.png"} <= {
        p.name for p in shots.glob("*.png")
    }


def test_search_over_a_sharded_index(
    browser: object, site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big site's index is in shards that the browser merges: every shard is loaded, the queries find
    their heading, with no console errors or missing files. (The script ranks over the statistics of
    all shards together, so the cut does not change the order.)"""
    import bisect
    import json

    from cernvm_build.site import search, stemmer

    monkeypatch.setattr(search, "SHARD_FROM", 1)
    monkeypatch.setattr(search, "SHARD_PAGES", 12)  # the shipped site is one shard: cut it in three
    preview = Preview(Builder(site, tmp_path / "out"), port=0, interval=3600)
    preview.start()
    try:
        shards = json.loads((tmp_path / "out/search-index/shards.json").read_text())["shards"]
        assert len(shards) > 2
        d = browser
        d.get(preview.url + "docs/")  # type: ignore[attr-defined]
        for query, want in QUERIES:
            hits = header_search(d, query)
            assert hits and hits[0].endswith(want), (query, hits[:3])
        # from each shard, only the buckets that can hold a word typed (or a word it begins) were fetched
        typed = {q[:n] for q, _w in QUERIES for n in range(2, len(q) + 1)}
        words = {w for q in typed for w in stemmer.words(q)} | {
            stemmer.stem(w) for q in typed for w in stemmer.words(q)
        }

        def holding(starts: list[str], w: str) -> range:
            keys = [search._utf16(x) for x in starts]
            first = max(0, bisect.bisect_right(keys, search._utf16(w)) - 1)
            return range(first, max(first, bisect.bisect_right(keys, search._utf16(w + "\uffff")) - 1) + 1)

        wanted = {
            f"/search-index/{s['bundle']}b/{s['buckets'][b]}.json"
            for s in shards
            for w in words
            for b in holding(s["starts"], w)
        }
        fetched = {p for _st, p in preview.requests if "/b/" in p}
        assert fetched <= wanted and {p for p in wanted if "/more/" in p} & fetched, sorted(fetched)
        assert len({p.split("/b/")[0] for p in fetched}) == len(shards)
        assert console_errors(d) == [] and failed_resources(d) == []
        assert [r for r in preview.requests if r[0] >= 400] == []
    finally:
        preview.stop()
