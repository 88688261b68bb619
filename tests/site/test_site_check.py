"""`site check` on built output: internal links, anchors and assets; external links only on request."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sitehelpers import Edit, build_site

import cernvm_build
from cernvm_build.site.check import check_site
from tests.support import hostile

BASE = "https://cvmfs.io/"


def test_real_site_has_no_broken_links(site: Path, tmp_path: Path) -> None:
    report = build_site(site, tmp_path / "out")
    result = check_site(tmp_path / "out", BASE, sources=report.sources)
    assert result.problems == []
    assert result.pages > 30 and result.links > 1000


def test_broken_template_link_and_missing_asset_name_the_line(site: Path, tmp_path: Path, edit: Edit) -> None:
    edit(site / "templates" / "tags.html", "<h1>Tags</h1>", '<h1>Tags</h1>\n<a href="/nowhere/">x</a>')
    (site / "static" / "assets" / "favicon.svg").unlink()
    out = tmp_path / "out"
    report = build_site(site, out)
    result = check_site(out, BASE, sources=report.sources)
    messages = [str(p) for p in result.problems]
    html = (out / "tags/index.html").read_text().splitlines()
    line = next(i for i, text in enumerate(html, 1) if "/nowhere/" in text)
    assert f"tags/index.html:{line}: link to '/nowhere/': no such page or file" in messages
    assert any("favicon.svg" in m and m.startswith("index.html:") for m in messages)


def test_broken_anchor_in_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "index.html").write_text(
        '<p id="here"></p>\n<a href="a/#x">1</a>\n<a href="#here">2</a>\n<a href="#gone">3</a>\n'
    )
    (out / "a" / "index.html").write_text('<h2 id="x">x</h2>\n<a href="../index.html#here">back</a>\n')
    problems = [str(p) for p in check_site(out, BASE).problems]
    assert problems == ["index.html:4: link to '#gone': no element with id 'gone'"]


def test_a_link_or_sitemap_loc_that_is_not_a_url_is_a_problem(tmp_path: Path) -> None:
    """urlsplit refuses ``http://[oops/`` (ValueError): it was a traceback from the check."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text('<p>a</p>\n<a href="http://[oops/">1</a>\n')
    (out / "sitemap.xml").write_text("<urlset>\n<url><loc>https://[cvmfs.io/</loc></url>\n</urlset>\n")
    problems = [str(p) for p in check_site(out, BASE).problems]
    assert problems == [
        "index.html:2: link 'http://[oops/' is not a URL (Invalid IPv6 URL); fix or escape it",
        "sitemap.xml:2: 'https://[cvmfs.io/' is not a URL (Invalid IPv6 URL)",
    ]


def test_problems_past_the_first_100_of_a_page_are_one_line(tmp_path: Path) -> None:
    """pr17d: a page of 10^6 broken links printed 10^6 lines (and its links were all kept meanwhile)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("".join(f'<a href="/gone{i}">x</a>\n' for i in range(1, 151)))
    (out / "ok.html").write_text('<a href="index.html#none">x</a>\n<a href="/nowhere">y</a>\n')
    problems = [str(p) for p in check_site(out, BASE).problems]
    assert problems[:100] == [
        f"index.html:{i}: link to '/gone{i}': no such page or file" for i in range(1, 101)
    ]
    assert problems[100:] == [
        "index.html:150: and 50 more problems (100 shown)",
        "ok.html:1: link to 'index.html#none': no element with id 'none'",
        "ok.html:2: link to '/nowhere': no such page or file",
    ]
    assert check_site(out, BASE).broken == 152  # lf18: the true total, not the lines listed


def test_a_page_whose_problems_are_on_one_line_lists_them_before_its_summary(tmp_path: Path) -> None:
    """A minified page (every link on line 1): its "and N more problems" line sorted first by its text
    and was the command's "first:" broken link (pr19a 11)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("".join(f'<a href="/gone{i}">x</a>' for i in range(150)))
    problems = [str(p) for p in check_site(out, BASE).problems]
    assert problems[0] == "index.html:1: link to '/gone0': no such page or file"
    assert problems[-1] == "index.html:1: and 50 more problems (100 shown)" and len(problems) == 101


@pytest.fixture
def web() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200 if self.path == "/ok" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with hostile.http_server(Handler) as url:
        yield url


@pytest.mark.integration
def test_external_links_only_on_request(tmp_path: Path, web: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text(f'<a href="{web}/ok">ok</a>\n<a href="{web}/gone">gone</a>\n')
    assert check_site(out, BASE).problems == []
    report = check_site(out, BASE, external=True, timeout=5)
    assert [str(p) for p in report.problems] == [f"index.html:2: external link '{web}/gone': HTTP 404"]
    assert report.external == 2


@pytest.mark.integration
def test_an_external_link_redirecting_to_a_url_requests_cannot_parse_is_reported_at_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """requests raises a bare ValueError for ``Location: http://[::1`` (LocationParseError,
    UnicodeDecodeError for others), no RequestException: the probe's thread died with a traceback
    on stderr and the link was reported as not answering once its deadline had passed."""
    from tests.support import listening

    def redirect(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://[::1\r\nContent-Length: 0\r\n\r\n")

    out = tmp_path / "out"
    out.mkdir()
    with listening(redirect) as port:
        url = f"http://127.0.0.1:{port}/x"
        (out / "index.html").write_text(f'<a href="{url}">x</a>\n')
        report = check_site(out, BASE, external=True, timeout=5, deadline=10)
    assert [str(p) for p in report.problems] == [
        f"index.html:1: external link '{url}': InvalidURL: a redirect to a URL that cannot be read"
        " (Invalid IPv6 URL)"
    ]
    assert "Traceback" not in capfd.readouterr().err


@pytest.fixture
def drip() -> Iterator[str]:
    """A server that answers with one header line every 0.5 s, forever: each read is quick, the
    answer never ends (urllib3 gives up only after 100 headers)."""
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                while not stop.wait(0.5):
                    self.wfile.write(b"X-a: b\r\n")
            except OSError:
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    with hostile.http_server(Handler) as url:
        yield f"{url}/slow"
        stop.set()


@pytest.mark.integration
def test_an_external_link_that_never_finishes_is_cut_at_its_deadline(tmp_path: Path, drip: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text(f'<a href="{drip}">slow</a>\n')
    report = check_site(out, BASE, external=True, timeout=5, deadline=1.5)
    assert [str(p) for p in report.problems] == [
        f"index.html:1: external link '{drip}': no answer within 1.5 s"
    ]


@pytest.mark.integration
def test_ctrl_c_stops_the_external_check_without_waiting_for_links(tmp_path: Path, drip: str) -> None:
    """The probes must not hold the process after an interrupt (a thread pool joined its workers at exit)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text(f'<a href="{drip}">slow</a>\n')
    code = (
        "import sys; from pathlib import Path; from cernvm_build.site.check import check_site; "
        "print('started', flush=True); "
        f"check_site(Path({str(out)!r}), 'https://x/', external=True, timeout=5)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(cernvm_build.__file__).parents[1])}  # the code under test
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
    time.sleep(1)  # the probe is under way
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)  # the drip lasts 100 headers x 0.5 s = 50 s
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the interrupted check waited for the link")
    assert b"KeyboardInterrupt" in err


@pytest.mark.integration
def test_external_links_kept_per_url_are_bounded_and_counted(
    tmp_path: Path, web: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lf18: every place an external URL was linked from was kept (a site linking one URL from each
    line of its pages kept them all) and each broken one was a line, past the per-page cap too. Now
    the first MAX_PLACES are listed, the rest counted, and ``broken`` is the true total."""
    from cernvm_build.site import check

    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text(f'<a href="{web}/gone">x</a>\n' * 25 + f'<a href="{web}/ok">y</a>\n')
    (out / "ok.html").write_text(f'<a href="{web}/gone#a">x</a>\n' * 3)
    report = check_site(out, BASE, external=True, timeout=5)
    assert report.broken == 28 and report.external == 2
    assert [str(p) for p in report.problems] == [
        *(f"index.html:{i}: external link '{web}/gone': HTTP 404" for i in range(1, 11)),
        f"index.html:10: external link '{web}/gone': HTTP 404, also in 18 more places not listed",
    ]
    monkeypatch.setattr(check, "MAX_EXTERNAL", 1)  # one URL probed, the other's links counted
    (out / "ok.html").write_text(f'<a href="{web}/ok">x</a>\n<a href="{web}/other">y</a>\n' * 2)
    (out / "index.html").write_text("")
    report = check_site(out, BASE, external=True, timeout=5)
    # skipped, not broken: a site whose probed links all answer passes (mm18c: they were "broken")
    assert report.problems == [] and report.broken == 0 and report.external == 1
    assert report.skipped == 2 and report.skipped_first == "ok.html:2"
    assert report.to_json()["skipped"] == 2


@pytest.mark.integration
def test_an_external_link_s_get_never_reads_a_redirect_s_body(tmp_path: Path) -> None:
    """pr33a: a server refusing HEAD (405) sends the probe's GET a 302 with an endless body:
    requests read it whole before following (all the memory, in a thread the deadline only leaves
    behind). The GET's redirects are followed unread (``Deadlined.get``); the target answers."""
    from tests.support import UNREAD_BOUND, endless_redirect_body, sent_count

    with endless_redirect_body() as (port, sent):
        out = tmp_path / "out"
        out.mkdir()
        (out / "index.html").write_text(f'<a href="http://127.0.0.1:{port}/x">x</a>\n')
        report = check_site(out, BASE, external=True, timeout=5)
        assert sent_count(sent) < UNREAD_BOUND
    assert [str(p) for p in report.problems] == [
        f"index.html:1: external link 'http://127.0.0.1:{port}/x': HTTP 404"
    ]


@pytest.mark.integration
def test_an_external_link_s_head_follows_no_redirect_the_rule_refuses(tmp_path: Path) -> None:
    """rv33a: the HEAD was requests' own, redirects and all: a link's server could have the check
    ask a cloud's metadata service (169.254.169.254) and report what it answered. The HEAD's
    redirects are the downloads' (``httpredirect.refusal``), as the GET's were."""
    from tests.support import listening

    hits: list[bytes] = []

    def redirect(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            hits.append(conn.recv(65536).split(b" ")[0])
            conn.sendall(
                b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/x\r\nContent-Length: 0\r\n\r\n"
            )

    out = tmp_path / "out"
    out.mkdir()
    with listening(redirect) as port:
        url = f"http://127.0.0.1:{port}/x"
        (out / "index.html").write_text(f'<a href="{url}">x</a>\n')
        report = check_site(out, BASE, external=True, timeout=2, deadline=10)
    assert [str(p) for p in report.problems] == [
        f"index.html:1: external link '{url}': RedirectRefused: a redirect to http://169.254.169.254/x"
        " (into a link-local address, from 127.0.0.1)"
    ]
    assert hits == [b"HEAD"]
