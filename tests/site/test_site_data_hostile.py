"""The status and statistics pages render JSON files from site/data, which anybody can edit: a file
of another shape is one error naming the file and key (a template TypeError in a build worker was a
traceback), and a statistics row lacking fields shows them empty."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sitehelpers import build_site

from cernvm_build.errors import BuildError
from cernvm_build.site import config, data, plan, plots

PROBE = {
    "fqrn": "a.org", "url": "http://s0/cvmfs/a.org", "role": "stratum0", "status": "ok", "revision": 3,
    "published": None, "whitelist_expires": None, "lag_revisions": None, "lag_seconds": None, "problems": [],
}  # fmt: skip
REPORT = {"checked": "2026-12-02T07:00:00Z", "healthy": True, "problem_count": 0, "probes": [PROBE]}


@pytest.mark.parametrize(
    ("report", "error"),
    [
        ([1, 2], "monitor.json: the report must be a mapping"),
        ({**REPORT, "probes": 5}, "monitor.json: probes: must be a list of mappings"),
        ({**REPORT, "probes": [{**PROBE, "problems": 7}]}, "probes[0].problems: must be a list of mappings"),
        (
            {**REPORT, "probes": [{**PROBE, "problems": [{"kind": "x"}]}]},
            "probes[0].problems[0].message: must",
        ),
        ({k: v for k, v in REPORT.items() if k != "checked"}, "monitor.json: checked: must be there"),
    ],
    ids=["list", "probes-int", "problems-int", "problem-fields", "no-checked"],
)
def test_a_monitor_report_of_another_shape_is_one_error(report: Any, error: str) -> None:
    with pytest.raises(BuildError) as e:
        data._check_monitor(report, "site/data/monitor.json")
    assert error in str(e.value)


def test_a_genuine_report_passes() -> None:
    data._check_monitor(REPORT, "site/data/monitor.json")


def test_statistics_rows_lacking_fields_show_them_empty() -> None:
    (repo,) = plots.publish_dashboard({"repositories": [{"fqrn": "a.org", "publishes": [{"revision": 2}]}]})
    (row,) = repo["rows"]
    assert row["finish_time"] is None and row["files_added"] is None and row["duration"] == 0.0


CFG = config.load(Path(__file__).parents[2] / "cernvm_build/data/site")
GOOD_REPO = {
    "name": "cvmfs-apt",
    "kind": "apt",
    "url": "https://h.example/~cvm/apt",
    "gpgkey": "https://h/k.gpg",
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", "javascript:alert(document.domain)//"),
        ("url", "http://h.example/apt"),  # shown in commands run as root: https only
        ("gpgkey", "https://x/$(touch /tmp/pwn)"),
        ("name", 'a"; rm -rf ~; echo "'),
        ("name", "a b"),
        ("release_package", "https://x/r.rpm; id"),
        ("component", "main contrib"),
        ("kind", "zypper"),
        ("name", 5),
        # pr26c 3: name=TITLE in the .repo file shown for copying; the newline began keys of its own
        ("title", "CernVM-FS\nsslverify=0\nproxy=http://evil.example:3128"),
        ("title", "CernVM-FS\rgpgcheck=0"),
    ],
    ids=[
        "url-javascript",
        "url-http",
        "gpgkey-subshell",
        "name-quote",
        "name-space",
        "release-semicolon",
        "component-two-words",
        "kind",
        "name-int",
        "title-newline",
        "title-cr",
    ],
)
def test_a_hostile_repositories_entry_is_one_error_naming_its_key(
    tmp_path: Path, field: str, value: object
) -> None:
    (tmp_path / "repositories.yaml").write_text(json.dumps({"repositories": [{**GOOD_REPO, field: value}]}))
    with pytest.raises(BuildError) as e:
        data.load_repositories(tmp_path, CFG, {})
    assert str(e.value.where).endswith(f"repositories.yaml: repositories[0].{field}")
    assert "is not" in e.value.message and e.value.hint


@pytest.mark.parametrize("field", ["url", "gpgkey", "release_package"])
def test_a_repository_url_with_credentials_is_refused_shown_redacted(tmp_path: Path, field: str) -> None:
    """The https pattern allows '@' (a path's character): 'https://user:secret@host/…' was published on
    /repositories/ and in the commands people copy (pr19a 20)."""
    entry = {**GOOD_REPO, field: "https://mirror:s3cret@h.example/yum/x"}
    (tmp_path / "repositories.yaml").write_text(json.dumps({"repositories": [entry]}))
    with pytest.raises(BuildError, match="carries credentials") as e:
        data.load_repositories(tmp_path, CFG, {})
    assert "s3cret" not in str(e.value) and str(e.value.where).endswith(f"repositories[0].{field}")


def test_repository_commands_are_quoted_for_the_shell(tmp_path: Path) -> None:
    (tmp_path / "repositories.yaml").write_text(json.dumps({"repositories": [GOOD_REPO]}))
    (repo,) = data.load_repositories(tmp_path, CFG, {})
    # '~' is not shell-safe: the deb line is one quoted word, the release suite expands in double quotes
    assert repo["sh"]["deb"] == (
        "'deb [signed-by=/usr/share/keyrings/cvmfs-apt.gpg] https://h.example/~cvm/apt'"
        ' "$(lsb_release -cs)-prod" main'
    )
    assert repo["sh"]["gpgkey"] == "https://h/k.gpg" and repo["sh"]["name"] == "cvmfs-apt"


def _index(**over: Any) -> dict[str, Any]:
    snap = {"repository": "r.cern.ch", "path": "/cvm4/el9", "root_hash": None, "revision": 4, "tag": "t"}
    return {
        "schema": 1, "version": "2026.11-1", "date": "2026-11-20T12:00:00Z", "source_date_epoch": 1,
        "previous": "2026.10-1", "signature": "SHA256SUMS.asc", "signer": "Release Team",
        "profiles": [
            {"name": "el9", "os": "Alma", "frozen": False, "snapshot": snap, "profile_sha256": "0" * 64}
        ],
        "artifacts": [],
        **over,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("over", "key", "what"),
    [
        ({"signature": 5}, "signature", "should be str or null, is int"),
        ({"signature": "../../x.asc"}, "signature", "leaves the release directory"),
        ({"previous": ["x"]}, "previous", "should be str or null, is list"),
        ({"previous": "../../javascript:alert(1)//"}, "previous", "is not of the form YYYY.MM-N"),
        ({"signer": {"a": 1}}, "signer", "should be str or null, is dict"),
        (
            {"profiles": [{**_index()["profiles"][0], "snapshot": {"revision": "<x>"}}]},
            "profiles[0].snapshot.revision",
            "should be int or null, is str",
        ),
        (
            {"profiles": [{**_index()["profiles"][0], "snapshot": {"tag": True}}]},
            "profiles[0].snapshot.tag",
            "should be str or null, is bool",
        ),
    ],
    ids=["signature-int", "signature-up", "previous-list", "previous-js", "signer-dict", "revision", "tag"],
)
def test_release_index_fields_of_another_type_are_one_error(
    tmp_path: Path, over: dict[str, Any], key: str, what: str
) -> None:
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases/2026.11-1.json").write_text(json.dumps(_index(**over)))
    with pytest.raises(BuildError) as e:
        data.load_releases(tmp_path, CFG)
    assert str(e.value.where).endswith(f"2026.11-1.json: {key}") and what in e.value.message


def test_a_genuine_release_index_loads(tmp_path: Path) -> None:
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases/2026.11-1.json").write_text(json.dumps(_index()))
    (release,) = data.load_releases(tmp_path, CFG)
    assert release["previous"] == "2026.10-1" and release["signature_url"].endswith("/SHA256SUMS.asc")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("releases_url", "javascript:alert(1)//{version}/"),
        ("releases_url", "ftp://x/{version}/"),
        ("edit_url", "javascript:alert(1)//{path}"),
        ("edit_url", "data:text/html,x"),
    ],
    ids=["releases-js", "releases-ftp", "edit-js", "edit-data"],
)
def test_config_links_must_be_http_or_a_site_path(tmp_path: Path, key: str, value: str) -> None:
    (tmp_path / "config.yaml").write_text(json.dumps({"title": "t", "base_url": "https://x/", key: value}))
    with pytest.raises(BuildError) as e:
        config.load(tmp_path)
    assert str(e.value.where).endswith(f"config.yaml: {key}") and "is not an http(s) URL" in e.value.message


@pytest.mark.parametrize("key", ["releases_url", "edit_url"])
@pytest.mark.parametrize(
    "value", ["//evil.example/{version}/", "/\\evil.example/x"], ids=["slashes", "backslash"]
)
def test_a_protocol_relative_config_link_is_refused(tmp_path: Path, key: str, value: str) -> None:
    """'//host/…' starts with '/' but is another host to a browser (over http on an http page):
    refused, the hint gives the https form and the site-path form (lf16)."""
    (tmp_path / "config.yaml").write_text(json.dumps({"title": "t", "base_url": "https://x/", key: value}))
    with pytest.raises(BuildError, match="is a protocol-relative URL") as e:
        config.load(tmp_path)
    assert str(e.value.where).endswith(f"config.yaml: {key}")
    assert f"'https://{value[2:]}'" in (e.value.hint or "")


def test_an_http_url_without_a_host_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        json.dumps({"title": "t", "base_url": "https://x/", "edit_url": "https:/x"})
    )
    with pytest.raises(BuildError, match="is not an http"):
        config.load(tmp_path)


@pytest.mark.parametrize(
    ("over", "where", "message"),
    [
        ({"feed": {"limit": "abc"}}, "feed.limit", "feed.limit must be a whole number"),
        ({"feed": {"limit": 1e999}}, "feed.limit", "feed.limit must be a whole number"),
        ({"feed": {"limit": [1]}}, "feed.limit", "feed.limit must be a whole number"),
        ({"feed": {"limit": -5}}, "feed.limit", "feed.limit must be a whole number"),
        ({"sections": {"docs": [1]}}, "sections.docs", "section 'docs' must be a mapping"),
        ({"sections": {"docs": "x"}}, "sections.docs", "section 'docs' must be a mapping"),
        ({"sections": {"docs": {"sidebar": "no"}}}, "sections.docs.sidebar", "must be true or false"),
        ({"releases_url": "https://[::1/{version}/"}, "releases_url", "is not a URL: Invalid IPv6 URL"),
        ({"edit_url": "https://[h/{path}"}, "edit_url", "is not a URL"),
        ({"menu": [{"title": "x", "url": "javascript:alert(1)"}]}, "menu", "is not an http(s) URL"),
        ({"menu": [{"title": "x", "url": "//evil.example/"}]}, "menu", "is a protocol-relative URL"),
        ({"menu": [{"title": "x", "url": "data:text/html,<script>"}]}, "menu", "is not an http(s) URL"),
        ({"menu": [{"title": "x", "url": "vbscript:msgbox"}]}, "menu", "is not an http(s) URL"),
        ({"menu": [{"title": "x", "url": "mailto:"}]}, "menu", "is not a plain mailto: address"),
        ({"menu": [{"title": "x", "url": "mailto:a b@x"}]}, "menu", "is not a plain mailto: address"),
        ({"menu": [{"title": "x", "url": 'tel:1"><script>'}]}, "menu", "is not a plain tel: address"),
        ({"edit_url": "mailto:team@example.org"}, "edit_url", "is not an http(s) URL"),
        ({"base_url": "https://[::1/"}, "base_url", "is not a URL"),
        ({"base_url": "https://x:99999/"}, "base_url", "has a port that is not 1-65535"),
        ({"base_url": 'https://x/"><script>/'}, "base_url", "is not a plain site address"),
        ({"base_url": "https://x/a b/"}, "base_url", "is not a plain site address"),
        ({"base_url": "https://x/?q=1"}, "base_url", "is not a plain site address"),
        ({"base_url": "https://x/#f"}, "base_url", "is not a plain site address"),
        ({"base_url": "https://x/a/%2e%2e/"}, "base_url", "is not a plain site address"),
        ({"base_url": "https://u:secret@x/"}, "base_url", "'https://***@x/' is not a plain site address"),
    ],
)
def test_config_values_of_another_shape_are_one_line(
    tmp_path: Path, over: dict[str, Any], where: str, message: str
) -> None:
    """Each was a traceback (ValueError, TypeError, OverflowError) or went into every page as given
    (a 'javascript:' menu link, a quote in the base path, credentials; pr19a 5)."""
    (tmp_path / "config.yaml").write_text(json.dumps({"title": "t", "base_url": "https://x/", **over}))
    with pytest.raises(BuildError) as e:
        config.load(tmp_path)
    assert str(e.value.where).endswith(f"config.yaml: {where}"), e.value.where
    assert message in e.value.message and "secret" not in e.value.message


def test_a_menu_may_link_to_a_mail_address_or_phone_number(tmp_path: Path) -> None:
    """A "Contact" item (``mailto:``, ``tel:``) is a normal docs link: kept as written, not put under the
    base path as the site's own paths are (an https one neither)."""
    menu = [
        {"title": "Docs", "url": "/docs/"},
        {"title": "Contact", "url": "mailto:cernvm.support@cern.ch"},
        {"title": "Call", "url": "TEL:+41-22-767-1111"},
        {"title": "Code", "url": "https://github.com/cvmfs/cvmfs"},
    ]
    (tmp_path / "config.yaml").write_text(
        json.dumps({"title": "t", "base_url": "https://x.org/cvmfs/", "menu": menu})
    )
    cfg = config.load(tmp_path)
    shown = plan._site_context(cfg, {})["menu"]
    assert [m["url"] for m in shown] == [
        "/cvmfs/docs/",
        "mailto:cernvm.support@cern.ch",
        "TEL:+41-22-767-1111",
        "https://github.com/cvmfs/cvmfs",
    ]


def test_a_bad_base_url_flag_is_named_as_the_flag_and_a_non_utf8_config_by_line(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(json.dumps({"title": "t", "base_url": "https://x/"}))
    with pytest.raises(BuildError, match="is not a plain site address") as e:
        config.load(tmp_path, base_url="https://x/?a")
    assert e.value.where == "--base-url"
    (tmp_path / "config.yaml").write_bytes(b"title: t\nbase_url: https://x/\ndescription: \xff\n")
    with pytest.raises(BuildError, match="not UTF-8 text") as e:
        config.load(tmp_path)
    assert str(e.value.where).endswith("config.yaml:3")


def test_an_unknown_highlighting_style_is_one_line(site: Path, tmp_path: Path) -> None:
    cfg = site / "config.yaml"
    cfg.write_text(cfg.read_text().replace("highlight_style: friendly", "highlight_style: nosuchstyle"))
    with pytest.raises(BuildError, match="no highlighting style 'nosuchstyle'") as e:
        build_site(site, tmp_path / "out", jobs=1)
    assert str(e.value.where).endswith("config.yaml: highlight_style")


def test_releases_url_replaces_only_the_version(tmp_path: Path) -> None:
    """Not str.format: '{x}' was a KeyError traceback and '{version.__class__}' was evaluated."""
    (tmp_path / "config.yaml").write_text(
        json.dumps(
            {"title": "t", "base_url": "https://x/", "releases_url": "/r/{x}/{version.__class__}/{version}/"}
        )
    )
    cfg = config.load(tmp_path)
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases/2026.11-1.json").write_text(json.dumps(_index()))
    (release,) = data.load_releases(tmp_path, cfg)
    assert release["base_url"] == "/r/{x}/{version.__class__}/2026.11-1/"


BENCH_ROW = {"bench": "b", "metric": "m", "value": 4.4, "unit": "s", "reference_value": None, "ratio": None}
BENCH_META = {"date": "2026-11-25", "cores": "2", "mode": "quick", "python": "3.11.7"}


@pytest.mark.parametrize(
    ("results", "error"),
    [
        ([1], "benchmarks.json: the results must be a mapping"),
        ({"results": 5}, "benchmarks.json: results: must be a list of mappings"),
        ({"results": [{**BENCH_ROW, "value": "fast"}]}, "results[0].value: must be a number"),
        ({"results": [{**BENCH_ROW, "value": True}]}, "results[0].value: must be a number"),
        ({"results": [{**BENCH_ROW, "ratio": "2"}]}, "results[0].ratio: must be a number or null"),
        ({"meta": [], "results": []}, "benchmarks.json: meta: must be a mapping"),
        # keys the page shows: a missing one was the template's "undefined value" error
        ({"meta": {}, "results": [BENCH_ROW]}, "benchmarks.json: meta.date: must be there"),
        ({"meta": BENCH_META, "results": [{"value": 1}]}, "results[0].bench: must be there"),
        (
            {"meta": BENCH_META, "results": [{**BENCH_ROW, "reference_value": 2}]},
            "results[0].reference: must",
        ),
    ],
    ids=[
        "list",
        "results-int",
        "value-str",
        "value-bool",
        "ratio-str",
        "meta-list",
        "no-date",
        "no-bench",
        "no-ref",
    ],
)
def test_benchmark_results_of_another_shape_are_one_error(results: Any, error: str) -> None:
    with pytest.raises(BuildError) as e:
        data._check_benchmarks(results, "site/data/benchmarks.json")
    assert error in str(e.value)
    data._check_benchmarks(
        {"meta": BENCH_META, "results": [BENCH_ROW], "failures": []}, "b.json"
    )  # the real shape


def test_benchmarks_without_results_build_the_page_without_figures(site: Path, tmp_path: Path) -> None:
    """A mapping with no 'results' passed the check, then the page's template failed on b.results."""
    (site / "data" / "benchmarks.json").write_text('{"meta": {}}')
    build_site(site, tmp_path / "out")
    assert (
        "No figures yet"
        in (tmp_path / "out" / "docs" / "reference" / "benchmarks" / "index.html").read_text()
    )


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("title: [\n", "config.yaml is not valid YAML: ", 2),
        ("- a\n- b\n", "config.yaml must be a mapping", 1),
    ],
    ids=["not-yaml", "a-list"],
)
def test_a_broken_config_is_not_called_front_matter(
    tmp_path: Path, text: str, message: str, line: int
) -> None:
    """config.yaml was told to be front matter between '---' markers (rv34a): it is a file of its own."""
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(BuildError) as e:
        config.load(tmp_path)
    assert e.value.message.startswith(message) and e.value.where.line == line
    assert "front matter" not in e.value.message and "front matter" not in (e.value.hint or "")
    assert "'---'" not in (e.value.hint or "")


def test_a_config_value_of_the_wrong_type_names_it_in_words(tmp_path: Path) -> None:
    """'must be a str' was Python's name for text (rv34a)."""
    (tmp_path / "config.yaml").write_text("title: t\nbase_url: 5\n")
    with pytest.raises(BuildError) as e:
        config.load(tmp_path)
    assert e.value.message == "'base_url' must be text, not a number"
