"""The site's data: free-form data files, the release indexes and the package repositories.

Layout under ``site/data/``:

- ``*.yaml`` / ``*.json``: free-form data, available to templates as ``data.<stem>``;
- ``releases/<version>.json``: a release index exactly as ``cernvm-build release`` writes it
  (``cernvm_build.releaseindex``); download URLs come from ``releases_url`` in config.yaml;
- ``repositories.yaml``: the package repositories; their package lists are read from the
  repositories' own metadata (``repos.py``).
"""

from __future__ import annotations

import json
import re
import shlex
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import table
from ..bootloader import userdata
from ..errors import BuildError, CernVMError, Location, utf8_text
from .config import SiteConfig
from .frontmatter import Memo, is_yaml_error, load_nested

if TYPE_CHECKING:
    from .repos import Platform


def _load_file(path: Path, memo: Memo | None = None) -> Any:
    """A data file's value; ``memo``: YAML texts parsed before (``frontmatter.Memo``)."""
    try:
        text = utf8_text(path.read_bytes(), str(path))
        return load_nested(json.loads if path.suffix == ".json" else (memo or Memo()).load, text, str(path))
    except json.JSONDecodeError as e:
        raise BuildError(
            f"not valid JSON: {e.msg}", where=Location(file=str(path), line=e.lineno, column=e.colno)
        ) from None
    except Exception as e:
        if isinstance(e, BuildError) or not is_yaml_error(e):
            raise
        from .. import yamlerror

        problem = yamlerror.describe(e)  # type: ignore[arg-type]
        raise BuildError(
            f"not valid YAML: {problem.what}",
            where=problem.location(str(path)),
            hint="check the indentation and quote values holding ':' or '#'",
        ) from None


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def load_releases(data_dir: Path, cfg: SiteConfig) -> list[dict[str, Any]]:
    """Every release index in ``data/releases/``, newest first, as plain data for templates."""
    folder = data_dir / "releases"
    if not folder.is_dir():
        return []
    from .. import releaseindex as release_index  # the release engineer's reader and checks

    out: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")):
        try:
            idx = release_index.load(path)
        except CernVMError as e:
            raise BuildError(str(e.message), where=e.where or str(path), hint=e.hint) from None
        base = cfg.releases_url.replace("{version}", idx.version)  # not str.format: config is input
        profiles = []
        for p in idx.profiles:
            arts = [
                {
                    "name": a.name,
                    "kind": a.kind,
                    "format": a.format,
                    "size": a.size,
                    "size_human": human_size(a.size),
                    "sha256": a.sha256,
                    "url": base + a.path,
                }
                for a in idx.artifacts
                if a.profile == p.name
            ]
            profiles.append(
                {
                    "name": p.name,
                    "os": p.os,
                    "frozen": p.frozen,
                    "snapshot": {
                        "repository": p.snapshot.repository,
                        "path": p.snapshot.path,
                        "root_hash": p.snapshot.root_hash,
                        "revision": p.snapshot.revision,
                        "tag": p.snapshot.tag,
                    },
                    "artifacts": arts,
                }
            )
        out.append(
            {
                "version": idx.version,
                "date": idx.date[:10],
                "datetime": idx.date,
                "previous": idx.previous,
                "signer": idx.signer,
                "base_url": base,
                "sums_url": base + "SHA256SUMS",
                "signature_url": base + idx.signature if idx.signature else None,
                "index_url": base + "index.json",
                "profiles": profiles,
                "artifact_count": len(idx.artifacts),
                "source": str(path),
            }
        )
    out.sort(key=lambda r: (r["datetime"], r["version"]), reverse=True)
    return out


# One table of what a repositories.yaml entry may hold (audit17c: a name holding '"' or ';' broke out of
# the shell commands shown for copying, a url 'javascript:' became a link). The URLs are shown in commands
# people paste as root, so only https and a character set that needs no quoting is accepted; the
# commands quote every value anyway (shlex.quote), and the template escapes HTML.
_HTTPS = re.compile(r"https://[A-Za-z0-9._~:/%+@=-]+")
_REPO_RULES: dict[str, tuple[re.Pattern[str], bool, str]] = {
    # key: (whole-value pattern, required, what it must be)
    "name": (re.compile(r"[a-z0-9][a-z0-9._-]*"), True, "lower-case letters, digits, '.', '_' and '-'"),
    "kind": (re.compile(r"yum|apt"), True, "'yum' or 'apt'"),
    "url": (_HTTPS, True, "an https:// URL without spaces, quotes or shell characters"),
    "gpgkey": (_HTTPS, False, "an https:// URL without spaces, quotes or shell characters"),
    "release_package": (_HTTPS, False, "an https:// URL without spaces, quotes or shell characters"),
    "component": (
        re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*"),
        False,
        "one word (letters, digits, '.', '_', '-')",
    ),
    # the .repo file shown for copying has name=TITLE: a line break there began keys of its own
    # (sslverify=0, proxy=..., pr26c 3)
    "title": (re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]+"), False, "one line of text"),
}


def _check_repository(r: Any, source: str, at: str) -> None:
    if not isinstance(r, dict) or not {k for k, rule in _REPO_RULES.items() if rule[1]} <= set(r):
        raise BuildError(
            "a repository needs 'name', 'kind' (yum|apt) and 'url'",
            where=Location(file=source, key=at),
            hint="for example: {name: cvmfs, kind: yum, url: https://…/yum/cvmfs}",
        )
    for key, (pattern, required, what) in _REPO_RULES.items():
        value = r.get(key)
        if value is None and not required:
            continue
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise BuildError(
                f"{key} {value!r} is not {what}",
                where=Location(file=source, key=f"{at}.{key}"),
                hint=f"{key} is shown in commands people copy and in links; write {what}",
            )
        if pattern is _HTTPS and table.has_credentials(value):  # ('@' is a path's character too)
            raise BuildError(
                f"{key} {table.redact_url(value)} carries credentials: the page would publish them",
                where=Location(file=source, key=f"{at}.{key}"),
                hint="write the repository's public URL, without 'user:password@'",
            )


def _unknown_overrides(overrides: dict[str, Path], names: set[str], path: Path) -> None:
    """A ``--repo-metadata`` name that no repository of ``path`` has (a misspelt one was ignored
    without a word, the page built without its packages), the file there or not."""
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise BuildError(
            f"--repo-metadata {unknown[0]}=…: no repository '{unknown[0]}' in {path.name}",
            where=str(path),
            hint=("the names are " + ", ".join(sorted(names)))
            if names
            else f"{path} lists none: add the repository there, or leave the flag out",
        )


def load_repositories(
    data_dir: Path, cfg: SiteConfig, overrides: dict[str, Path], memo: Memo | None = None
) -> list[dict[str, Any]]:
    path = data_dir / "repositories.yaml"
    if not path.is_file():
        _unknown_overrides(overrides, set(), path)
        return []
    raw = _load_file(path, memo) or {}
    items = raw.get("repositories") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise BuildError(
            "'repositories' must be a list",
            where=Location(file=str(path), key="repositories"),
            hint="see docs/ARCHITECTURE.md, section site, for the format",
        )
    out: list[dict[str, Any]] = []
    _unknown_overrides(overrides, {str(r.get("name")) for r in items if isinstance(r, dict)}, path)
    for i, r in enumerate(items):
        key = f"repositories[{i}]"
        _check_repository(r, str(path), key)
        name, kind = str(r["name"]), str(r["kind"])
        meta_dir: Path | None = overrides.get(name)
        if meta_dir is None and cfg.repositories.get(name):
            meta_dir = Path(cfg.repositories[name])
        if meta_dir is None and r.get("metadata"):
            meta_dir = Path(str(r["metadata"]))
        # as configured, for the page: the resolved folder named where the site was built, and the
        # repositories page's context (its fingerprint, the search index's key) with it (pr19e 14)
        configured = meta_dir
        if meta_dir is not None and not meta_dir.is_absolute():
            meta_dir = data_dir / meta_dir
        platforms: list[Platform] = []
        missing = None
        if meta_dir is None or not meta_dir.is_dir():
            missing = str(configured) if configured else "no metadata folder configured"
        else:
            from . import repos  # deliberate lazy import: most builds read no package metadata

            try:
                platforms = repos.read_yum(meta_dir) if kind == "yum" else repos.read_apt(meta_dir)
            except OSError as e:  # its walk met a path too long, a folder not readable: was a traceback
                raise BuildError(
                    f"cannot read the package metadata under {meta_dir}: {e.strerror or e}",
                    where=Location(file=str(path), key=f"{key}.metadata"),
                    hint="point it (or --repo-metadata NAME=DIR) at a copy of the repository alone",
                ) from None
        url = str(r["url"]).rstrip("/")
        gpgkey, release_package = r.get("gpgkey"), r.get("release_package")
        component = str(r.get("component", "main"))
        out.append(
            {
                "name": name,
                "title": str(r.get("title", name)),
                "kind": kind,
                "url": url,
                "description": str(r.get("description", "")),
                "gpgkey": gpgkey,
                "release_package": release_package,
                "component": component,
                # the copyable command lines: each value quoted for the shell (the template escapes HTML)
                "sh": {
                    "name": shlex.quote(name),
                    "gpgkey": shlex.quote(str(gpgkey)) if gpgkey else None,
                    "release_package": shlex.quote(str(release_package)) if release_package else None,
                    "deb": shlex.quote(f"deb [signed-by=/usr/share/keyrings/{name}.gpg] {url}")
                    + ' "$(lsb_release -cs)-prod" '
                    + shlex.quote(component),
                },
                "missing": missing,
                "platforms": [
                    {
                        "path": p.path,
                        "url": f"{url}/{p.path}",
                        "id": p.path.replace("/", "-"),
                        "count": p.count,
                        "packages": [
                            {"name": x.name, "version": x.version, "arch": x.arch, "summary": x.summary}
                            for x in p.latest()
                        ],
                    }
                    for p in platforms
                ],
            }
        )
    return out


def _shape_error(source: str, key: str | None, what: str, whole: str, hint: str) -> BuildError:
    """A data file the pages iterate is not of the shape its writer makes: one error naming the key
    (``key`` None: the file as a whole, called ``whole``)."""
    return BuildError(
        f"{'must' if key else whole + ' must'} be {what}", where=Location(file=source, key=key), hint=hint
    )


def _mappings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, dict) for x in value)


_REPORT_KEYS = ("checked", "healthy", "problem_count", "probes")
_PROBE_KEYS = ("fqrn", "url", "role", "status", "revision", "published", "whitelist_expires", "lag_revisions",
               "lag_seconds", "problems")  # fmt: skip


def _check_monitor(report: Any, source: str) -> None:
    """The status page iterates what ``cvmfs monitor --out`` wrote; another shape is one error naming
    the key (a template TypeError was a traceback from a build worker)."""

    bad = partial(
        _shape_error,
        source,
        whole="the report",
        hint="write the file with 'cernvm-build cvmfs monitor --out'",
    )

    def need(item: dict[str, Any], keys: tuple[str, ...], at: str) -> None:
        for k in keys:
            if k not in item:
                raise bad(f"{at}{k}", "there (the status page shows it)")

    if not isinstance(report, dict):
        raise bad(None, "a mapping")
    need(report, _REPORT_KEYS, "")
    probes = report["probes"]
    if not _mappings(probes):
        raise bad("probes", "a list of mappings")
    for i, probe in enumerate(probes):
        need(probe, _PROBE_KEYS, f"probes[{i}].")
        problems = probe["problems"]
        if not _mappings(problems):
            raise bad(f"probes[{i}].problems", "a list of mappings")
        for j, problem in enumerate(problems):
            need(problem, ("kind", "message", "hint"), f"probes[{i}].problems[{j}].")


def _check_benchmarks(report: Any, source: str) -> None:
    """The benchmarks page formats each result's numbers ('%.4g'); a string there was a template
    TypeError traceback (audit17c). The shape ``bench/`` writes, or one error naming the key."""

    bad = partial(
        _shape_error, source, whole="the results", hint="write the file with 'make bench' (bench/run_all.py)"
    )

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not isinstance(report, dict):
        raise bad(None, "a mapping")
    if not isinstance(report.get("meta", {}), dict):
        raise bad("meta", "a mapping")
    if not isinstance(report.get("failures", []), list):
        raise bad("failures", "a list")
    results = report.get("results", [])
    if not _mappings(results):
        raise bad("results", "a list of mappings")
    for i, r in enumerate(results):
        if not number(r.get("value")):
            raise bad(f"results[{i}].value", "a number")
        for k in ("reference_value", "ratio"):
            if r.get(k) is not None and not number(r[k]):
                raise bad(f"results[{i}].{k}", "a number or null")
        for k in (
            "bench",
            "metric",
            "unit",
            *(("reference",) if r.get("reference_value") is not None else ()),
        ):
            if k not in r:
                raise bad(f"results[{i}].{k}", "there (the benchmarks page shows it)")
    # what the page shows of a run with results (a key missing here or in a result was the
    # template's 'undefined value' error)
    for k in ("date", "cores", "mode", "python") if results else ():
        if k not in report.get("meta", {}):
            raise bad(f"meta.{k}", "there (the benchmarks page shows it)")


def load_all(
    site_dir: Path, cfg: SiteConfig, repo_overrides: dict[str, Path], memo: Memo | None = None
) -> dict[str, Any]:
    """Every data file's value, the releases and repositories; ``memo``: YAML texts parsed before."""
    data_dir = site_dir / "data"
    data: dict[str, Any] = {}
    if data_dir.is_dir():
        for path in sorted(data_dir.iterdir()):
            if path.is_file() and path.suffix in (".yaml", ".yml", ".json") and path.stem != "repositories":
                data[path.stem] = _load_file(path, memo)
    if "monitor" in data:
        _check_monitor(data["monitor"], str(data_dir / "monitor.json"))
    if "benchmarks" in data:
        _check_benchmarks(data["benchmarks"], str(data_dir / "benchmarks.json"))
    if "publish_stats" in data:
        from . import plots  # deliberate lazy import: only a site with publish statistics plots

        # the plots are made here, from data, so they are part of the pages' fingerprints
        data["publish_dashboard"] = plots.publish_dashboard(
            data["publish_stats"], str(data_dir / "publish_stats.json")
        )
    # the context builder validates in the browser by the bootloader's own key table (so it cannot drift)
    data["context_keys"] = [table.rules(s) for s in userdata.SETTINGS]
    data["releases"] = load_releases(data_dir, cfg)
    data["repositories"] = load_repositories(data_dir, cfg, repo_overrides, memo)
    return data
