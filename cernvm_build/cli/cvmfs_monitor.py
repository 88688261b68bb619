"""``cernvm-build cvmfs monitor | stats``: the health of repositories and replicas (``cvmfs/monitor.py``)
and their publish statistics (``cvmfs/pubstats.py``), as data for the site's status and statistics pages."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import CvmfsError, UsageError
from ..table import Invalid, parse_duration
from ..termtext import visible
from .app import Output, also_file, jobs, retries, seconds, subparser, write_output
from .cvmfs_source import KEYS_HELP, add_blacklist, blacklist_from_args
from .inputs import existing_file, local_or_url

DESCRIPTION = """\
Probe repositories and replicas: the verified manifest (signature chain, revision, publish time, root
hash) and whitelist expiry; a replica is compared with its Stratum-0 (revisions and time behind).
Exit code 5 when anything is unhealthy, with one 'problem:' line each (for cron and alerting).
Every --key is tried for every repository (as the client tries the keys of its key folder); without
--key, each repository's own key is looked up as for the other commands.

  cernvm-build cvmfs monitor http://s0/cvmfs/sft.cern.ch --key sft.cern.ch.pub
  cernvm-build cvmfs monitor --replica-of http://s1/cvmfs/a.org=http://s0/cvmfs/a.org --max-lag 2h
  cernvm-build cvmfs monitor --config monitor.yaml --out site/data/monitor.json   # the site's status page

The config file (YAML):
  repositories:
    - url: http://s0/cvmfs/sft.cern.ch
      key: keys/sft.cern.ch.pub        # relative to the file; default: the usual key folders
      replicas: [http://s1/cvmfs/sft.cern.ch]"""


def _duration(flag: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except Invalid as e:
        raise UsageError(f"{flag}: {e.message}", hint=e.hint) from None


def cmd_monitor(args: argparse.Namespace, out: Output) -> int:
    from ..cvmfs import monitor_config
    from ..cvmfs.monitor import Thresholds, monitor

    targets = monitor_config.from_args(args.urls, args.replica_of, args.key)
    if args.config is not None:
        targets += monitor_config.load(args.config, args.key)
    if not targets:
        raise UsageError("nothing to monitor", hint="name Stratum URLs, --replica-of pairs or --config FILE")
    thresholds = Thresholds(
        whitelist_warn=_duration("--whitelist-warn", args.whitelist_warn) or 0,
        max_age=_duration("--max-age", args.max_age),
        max_lag=_duration("--max-lag", args.max_lag) or 0,
    )
    report = monitor(
        targets,
        thresholds=thresholds,
        jobs=args.jobs,
        timeout=args.timeout,
        retries=args.retries,
        blacklist=blacklist_from_args(args),
    )
    data = report.to_json()
    if args.out is not None:
        write_output(args.out, (json.dumps(data, indent=2) + "\n").encode(), "--out")

    def render(d: dict[str, Any]) -> None:
        out.table(
            ["repository", "role", "status", "revision", "published", "whitelist expires", "lag", "url"],
            [
                [
                    p["fqrn"],
                    p["role"],
                    p["status"],
                    p["revision"],
                    p["published"],
                    p["whitelist_expires"],
                    "" if p["lag_revisions"] is None else f"{p['lag_revisions']} rev / {p['lag_seconds']} s",
                    p["url"],
                ]
                for p in d["probes"]
            ],
        )

    out.data(data, render)
    for problem in report.problems:
        out.err.print(visible(f"problem: {problem.line()}", one_line=True), highlight=False, markup=False)
    if not report.healthy:
        n = len(report.problems)
        raise CvmfsError(
            f"{n} problem(s) in {sum(not p.healthy for p in report.probes)} of {len(report.probes)} "
            "repositories (listed above)",
            hint="each 'problem:' line says what to do",
        )
    return 0


def register_monitor(cvmfs_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparser(
        cvmfs_sub,
        "monitor",
        json=True,
        handler=cmd_monitor,
        help="health of repositories and replicas (for cron, alerts and the status page)",
        description=DESCRIPTION,
    )
    p.add_argument("urls", nargs="*", metavar="URL", help="Stratum URL (or local Stratum folder) to probe")
    p.add_argument("--replica-of", action="append", default=[], metavar="REPLICA=STRATUM0",
                   help="a replica URL and the Stratum-0 URL it copies (repeatable)")  # fmt: skip
    p.add_argument(
        "--config", type=existing_file, metavar="FILE", help="repositories and replicas from a YAML file"
    )
    p.add_argument("--key", action="append", default=[], type=existing_file, metavar="PATH", help=KEYS_HELP)
    add_blacklist(p)
    p.add_argument("--out", type=also_file, metavar="FILE", help="also write the report as JSON (atomically)")
    p.add_argument(
        "--max-age", metavar="DURATION", help="a manifest older than this is stale (default: no limit)"
    )
    p.add_argument("--max-lag", metavar="DURATION", help="a replica may lag this much behind (default: 0)")
    p.add_argument("--whitelist-warn", metavar="DURATION", default="7d",
                   help="warn when the whitelist expires within this (default: 7d)")  # fmt: skip
    p.add_argument("-j", "--jobs", type=jobs, default=8, help="repositories probed at once (default 8)")
    p.add_argument("--timeout", type=seconds, default=10.0, help="HTTP timeout in seconds (default: 10)")
    p.add_argument("--retries", type=retries, default=1, help="retries per server (default: 1)")


def cmd_stats(args: argparse.Namespace, out: Output) -> int:
    from ..cvmfs.pubstats import read_source

    repos = [read_source(src, timeout=args.timeout) for src in args.sources]
    data = {"repositories": repos}
    if args.out is not None:
        write_output(args.out, (json.dumps(data, indent=2) + "\n").encode(), "--out")

    def render(d: dict[str, Any]) -> None:
        for r in d["repositories"]:
            out.table(
                [
                    "revision",
                    "finished",
                    "files +/-/~",
                    "bytes added",
                    "bytes removed",
                    "objects",
                    "catalogs",
                ],
                [
                    [
                        p["revision"],
                        p["finish_time"],
                        f"{p['files_added']}/{p['files_removed']}/{p['files_changed']}",
                        p["sz_bytes_added"],
                        p["sz_bytes_removed"],
                        p["chunks_added"],
                        p["catalogs_added"],
                    ]
                    for p in r["publishes"]
                ],
                title=f"{r['fqrn']} ({r['source']})",
            )

    out.data(data, render)
    return 0


def register_stats(cvmfs_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparser(
        cvmfs_sub,
        "stats",
        json=True,
        handler=cmd_stats,
        help="publish statistics of repositories (stats/stats.db), for the site's dashboard",
        description="Read each repository's publish statistics (stats/stats.db, written by every publish;\n"
        "the CernVM-FS server's statistics database layout) from a Stratum folder or URL.\n\n"
        "  cernvm-build cvmfs stats srv/demo.cernvm.test\n"
        "  cernvm-build cvmfs stats http://s0/cvmfs/a.org srv/b.org --out site/data/publish_stats.json",
    )
    p.add_argument("sources", nargs="+", type=local_or_url, metavar="SOURCE", help="Stratum folder or URL")
    p.add_argument(
        "--out", type=also_file, metavar="FILE", help="also write the statistics as JSON (atomically)"
    )
    p.add_argument("--timeout", type=seconds, default=10.0, help="HTTP timeout in seconds (default: 10)")
