"""``cernvm-build site``: build, check, preview and publish the cvmfs.io site."""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path
from typing import Any

from ..errors import BuildError, CernVMError, UsageError
from ..paths import data_dir
from ..report import NULL_REPORTER, Reporter, scoped
from ..termtext import is_utf8, visible
from . import areas
from .app import Output, group_handler, jobs, seconds, styled, subparser, whole_number
from .inputs import existing_folder

# Handlers import the modules of their area when they run (deliberate lazy imports): `--help` and
# the other commands start without loading every area, and a missing optional extra only stops the
# command that needs it.

DESCRIPTION = """\
The cvmfs.io static site, generated from a site folder (Markdown content, release and repository data,
templates, static assets):

  cernvm-build site build                         build into build/site (incremental)
  cernvm-build site build --out /tmp/s --base-url https://example.org/cvmfs/
  cernvm-build site check                         build, then check every internal link and #anchor
  cernvm-build site check --external              ... and the links to other sites
  cernvm-build site serve --port 8000             preview on http://127.0.0.1:8000/, rebuilt on change
  cernvm-build site publish s3://bucket/www --endpoint-url https://s3.cern.ch"""


def _site_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("site")
    g.add_argument(
        "--site",
        type=existing_folder,
        default=None,
        help="site sources (default: the shipped cvmfs.io site, cernvm_build/data/site)",
    )
    g.add_argument(
        "--out", type=Path, default=Path("build/site"), help="output folder (default: %(default)s)"
    )
    g.add_argument(
        "--base-url", help="absolute URL the site is published at (default: base_url in config.yaml)"
    )
    g.add_argument(
        "-j",
        "--jobs",
        type=jobs,
        default=None,
        help="worker processes for rendering (default: one per core)",
    )
    g.add_argument(
        "--repo-metadata",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="read repository NAME's package lists from a local copy in DIR (repeatable)",
    )


#: the regular expressions the builder's modules compile as they are imported, kept between processes
#: (``_import_builder``), in the site cache's root: they depend on the code and Python, not on a site
PATTERNS = "import-patterns.pickle"


def _import_builder() -> tuple[Any, Any]:
    """``site.build.Builder`` and the CLI's reference generators, imported with the patterns their
    modules compile made from those an earlier process kept (``site/recache``: each checked, any it
    does not hold compiled as usual and kept for the next): ~50 module-level ``re.compile`` calls were
    ~20 % of the builder's import CPU, ~4-7 ms of a one-page rebuild. A memo that does not load, or
    cannot be written, only means they are compiled."""
    import pickle

    from ..fsutil import atomic_write, read_capped
    from ..paths import cache_dir
    from ..site import recache

    memo = cache_dir("site") / PATTERNS
    try:
        known = pickle.loads(read_capped(memo, 16 << 20))  # (a FIFO there hung every command)
    except Exception:  # absent, or damaged: compiled, and kept anew
        known = {}
    patterns = recache.Patterns(known if isinstance(known, dict) else {})
    with recache.kept(patterns):
        from ..site.build import Builder
        from .reference import GENERATORS
    entries = patterns.entries()
    if entries is not None:
        try:
            atomic_write(memo, pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL), durable=False)
        except OSError:
            pass
    return Builder, GENERATORS


def _builder(args: argparse.Namespace, out: Output, reporter: Reporter = NULL_REPORTER) -> Any:
    Builder, GENERATORS = _import_builder()
    for flag, folder in (("--site", args.site), ("--out", args.out)):
        # the build's state names its folders and sources as text: a byte that is not UTF-8 in their
        # path was a UnicodeEncodeError traceback (its files' names are refused likewise; pr28b 12)
        if folder is not None and not is_utf8(str(folder.absolute())):
            raise UsageError(
                f"{flag} {os.fsdecode(folder)!r}: the path is not UTF-8 text",
                hint="use a folder whose path is UTF-8 (rename it, or build elsewhere)",
            )

    overrides: dict[str, Path] = {}
    for item in args.repo_metadata:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise UsageError(
                f"--repo-metadata '{item}' is not NAME=DIR",
                hint="for example --repo-metadata cvmfs=mirror/yum",
            )
        path = Path(folder).resolve()
        if not path.is_dir():  # (it was taken as "no metadata": the page built without its packages)
            raise UsageError(
                f"--repo-metadata '{item}': {path} is not a folder",
                hint="name the local copy of the repository, e.g. --repo-metadata cvmfs=mirror/yum/cvmfs",
            )
        overrides[name] = path

    return Builder(
        args.site or data_dir("site"),
        args.out,
        base_url=args.base_url,
        jobs=args.jobs,
        repo_metadata=overrides,
        reporter=reporter,
        generators=GENERATORS,
        # set by ``app.run``: the process ends after this command (an entry point's own, not observed)
        ends_process=getattr(args, "one_shot", False),
    )


def _build(args: argparse.Namespace, out: Output) -> Any:
    with out.reporter() as reporter:
        builder = _builder(args, out, scoped(reporter, "rendering"))
        try:
            report = builder.build()
        except CernVMError as e:
            problems = getattr(e, "problems", None)
            if problems and len(problems) > 1:
                from rich.markup import escape  # only on this path: rich is not imported by a good build

                for p in problems[1:]:  # page text and URLs: data, never markup
                    shown = escape(visible(str(p), one_line=True))
                    out.err.print(f"[bold red]error:[/bold red] {shown}", highlight=False)
            raise
    return builder, report


def cmd_build(args: argparse.Namespace, out: Output) -> int:
    # This process builds once and exits: the cyclic GC stays off from before the site's modules are
    # imported (the build turns it off for itself, ``Builder.build``), and what the process holds is
    # frozen at the end, out of the collection Python makes at exit whether the GC is on or not. Each
    # walked every object the build had made: on again after the build, the first young collection
    # ~35 ms of a one-page rebuild at 1,000 pages, the exit's ~50-65 ms, the imports' ~20 ms. A build's
    # garbage is freed by reference counts, and what is left goes with the process.
    gc.disable()
    _builder_obj, report = _build(args, out)
    data = report.to_json()
    data.pop("sources", None)
    data["path"] = data["out_dir"]  # the key every command names what it wrote by (out_dir: until 2027)

    def show(d: dict[str, Any]) -> None:
        out.print(
            f"built {d['pages']} pages ({d['outputs']} files) into {d['path']} in {d['seconds']:.2f} s: "
            f"{d['rendered']} written, {d['markdown_rendered']} Markdown sources rendered, "
            f"{d['removed']} removed, {d['jobs']} worker(s)"
        )

    out.data(data, show)
    if not out.json_mode:  # (--json has them in its document) after the result, and with -q too
        for w in data["warnings"]:
            out.warn(w)
    gc.freeze()  # see above
    return 0


def cmd_check(args: argparse.Namespace, out: Output) -> int:
    from ..site.check import MAX_EXTERNAL, check_site

    builder, build_report = _build(args, out)
    sources = {k: os.path.relpath(v) for k, v in build_report.sources.items()}
    report = check_site(builder.out_dir, builder.cfg.base_url, external=args.external, sources=sources)
    data = report.to_json()

    def show(d: dict[str, Any]) -> None:
        for p in report.problems:
            out.print(styled(("broken:", "red"), f" {p}"), highlight=False)
        ext = f", {d['external']} external URLs" + (
            " checked" if args.external else " not checked (--external)"
        )
        if d["skipped"]:
            ext += (
                f", {d['skipped']} links to URLs past the first {MAX_EXTERNAL} skipped"
                f" (first: {d['skipped_first']})"
            )
        state = ("ok", "green") if not d["problems"] else (f"{d['broken']} broken", "red")
        out.print(styled(state, f": {d['pages']} pages, {d['links']} links{ext}"))

    out.data(data, show)
    if report.problems:
        first = report.problems[0]
        raise BuildError(
            f"{report.broken} broken link(s), first: {first}",
            hint="fix them in the Markdown source or template named; 'site check --json' lists them all",
        )
    return 0


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    from ..site.serve import Preview

    builder = _builder(args, out)

    def on_build(report: Any, err: CernVMError | None) -> None:
        if err is not None:
            out.error(err)
        else:
            out.info(
                f"built: {report.rendered} file(s) written, {report.markdown_rendered} Markdown source(s) "
                f"rendered in {report.seconds:.2f} s"
            )

    try:
        preview = Preview(builder, host=args.host, port=args.port, interval=args.interval, on_build=on_build)
    except OSError as e:
        raise UsageError(
            f"cannot listen on {args.host}:{args.port}: {e.strerror}",
            hint="pick another --port (or --host: an address of this machine)",
        ) from None
    preview.start()
    out.info(f"serving {builder.out_dir} at {preview.url} (Ctrl+C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        out.info("stopping")
    finally:
        preview.stop()
    return 0


def cmd_publish(args: argparse.Namespace, out: Output) -> int:
    from ..site.publish import publish

    if not args.dest.startswith("s3://"):
        raise UsageError(f"'{args.dest}' is not an s3:// URL", hint="for example s3://cvmfs-www/site")
    if not args.no_build:
        builder, _report = _build(args, out)
        folder = builder.out_dir
    else:
        folder = args.out.resolve()
    labels = {"hash": "hashing", "check": "checking objects", "upload": "uploading", "delete": "deleting"}
    with out.progress(transfer=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(labels.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        report = publish(
            folder, args.dest, endpoint_url=args.endpoint_url, dry_run=args.dry_run, progress=progress
        )
    data = report.to_json() if hasattr(report, "to_json") else {"result": str(report)}

    def show(d: dict[str, Any]) -> None:
        verb = "would publish" if args.dry_run else "published"
        summary = ", ".join(f"{k}: {v}" for k, v in d.items() if isinstance(v, int | float | str))
        out.print(f"{verb} {folder} to {args.dest} ({summary})")

    out.data(data, show)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparser(sub, "site", help=areas.HELP["site"], description=DESCRIPTION)
    p.set_defaults(func=group_handler(p))
    ss = p.add_subparsers(title="site commands", metavar="COMMAND")

    b = subparser(
        ss,
        "build",
        help="build the site (incremental; same bytes as a clean build)",
        description=(
            "Build the site into --out. Only outputs whose inputs changed are written again; the result\n"
            "equals a clean build byte for byte. Broken Markdown links fail the build with file:line.\n\n"
            "  cernvm-build site build\n"
            "  cernvm-build site build --out /srv/www --repo-metadata cvmfs=/srv/mirror/yum/cvmfs"
        ),
        json=True,
        handler=cmd_build,
    )
    b.set_defaults(ends_process=True)  # one-shot: no teardown after the report (app.end_process)
    b.set_defaults(logs=False)  # nothing in the build logs: logging is not imported (app._dispatch)
    _site_args(b)

    c = subparser(
        ss,
        "check",
        help="build, then check every link, #anchor and asset of the built site",
        description=(
            "Build, then check every internal link and #anchor and every referenced asset of the output;\n"
            "with --external also every link to another site. Broken links are listed as\n"
            "file:line and the command fails.\n\n"
            "  cernvm-build site check\n"
            "  cernvm-build site check --external --json"
        ),
        json=True,
        handler=cmd_check,
    )
    _site_args(c)
    c.add_argument("--external", action="store_true", help="also check links to other sites (needs network)")

    s = subparser(
        ss,
        "serve",
        help="preview on 127.0.0.1, rebuilt when a source changes",
        description=(
            "Build, serve the output on 127.0.0.1 and rebuild whenever a site source changes.\n\n"
            "  cernvm-build site serve\n"
            "  cernvm-build site serve --port 8080 --out /tmp/preview"
        ),
        handler=cmd_serve,
    )
    _site_args(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    # (a port past 65535 or below 0 was an OverflowError traceback; an interval of nan or -1 a busy
    # watcher, of 1e308 a dead one)
    s.add_argument(
        "--port",
        type=whole_number(0, 65535),
        default=8000,
        help="port (default: %(default)s; 0 picks a free one)",
    )
    s.add_argument(
        "--interval", type=seconds, default=0.5, help="seconds between change checks (default: %(default)s)"
    )

    pub = subparser(
        ss,
        "publish",
        help="build and publish the site to S3 (assets first, indexes last)",
        description=(
            "Build the site, then make s3://BUCKET/PREFIX hold exactly it, with the mirror's sync engine:\n"
            "changed files found by content hash, assets before pages, sitemap/feed/search index last,\n"
            "stale objects deleted at the end. Credentials come from the usual boto3 places.\n\n"
            "  cernvm-build site publish s3://cvmfs-www/site --endpoint-url https://s3.cern.ch\n"
            "  cernvm-build site publish s3://cvmfs-www/site --dry-run"
        ),
        json=True,
        handler=cmd_publish,
    )
    _site_args(pub)
    pub.add_argument("dest", help="s3://bucket/prefix")
    pub.add_argument("--endpoint-url", help="S3 endpoint (MinIO, Ceph RGW, ...); default: AWS")
    pub.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    pub.add_argument("--no-build", action="store_true", help="publish --out as it is, without building")
