"""``cernvm-build mirror``: verified, incremental yum/apt mirrors (and plain trees) on S3."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.markup import escape

from ..report import ProgressFn
from ..termtext import visible
from . import areas
from .app import Output, group_handler, jobs, subparser
from .inputs import existing_file, existing_folder, local_or_url

if TYPE_CHECKING:  # the mirror needs boto3; handlers import it when they run
    from ..mirror.check import Checked
    from ..mirror.s3sync import SyncReport

# Handlers import the modules of their area when they run (deliberate lazy imports): `--help` and
# the other commands start without loading every area, and a missing optional extra only stops the
# command that needs it.

JOBS = 16  # = mirror.s3sync.JOBS (not imported: the CLI must load without the 'mirror' extra)

S3_HELP = """\
credentials and endpoint come the way boto3 users expect: --profile or AWS_PROFILE, AWS_ACCESS_KEY_ID/
AWS_SECRET_ACCESS_KEY, ~/.aws/{config,credentials}; --endpoint-url or AWS_ENDPOINT_URL for MinIO, Ceph RGW
and other S3-compatible servers (path-style addressing and only-when-required request checksums are used,
which those servers accept)."""

MIRROR_DESCRIPTION = """\
Mirror package repositories to S3, verified and incrementally, never half-published.

  cernvm-build mirror yum ./cvmrepo/yum s3://cvmrepo/yum --gpg-key RPM-GPG-KEY-CernVM
  cernvm-build mirror apt https://example.org/apt s3://cvmrepo/apt --suite bookworm-prod
  cernvm-build mirror yum SRC s3://bucket/prefix --dry-run        show the plan, change nothing
  cernvm-build mirror verify apt s3://cvmrepo/apt --endpoint-url https://s3.cern.ch
  cernvm-build mirror sync ./public s3://bucket/site --last index.html

The source is checked completely first (indexes, every metadata file and package by hash and size,
signatures with --gpg-key); a broken source is refused with the list of what is wrong. Objects are
compared by the SHA-256 stored in their metadata (never by ETag), so same-size changes are found and
unchanged files cost nothing. Packages go first, the indexes (repomd.xml, InRelease, ...) last with a
compare-and-swap, stale objects are deleted after that (keeping --keep previous generations).
A package whose content changed under a name already published is refused (a published name never
changes content) unless --allow-rewrite. Interrupted at any point, the same command run again
finishes the job.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparser(sub, "mirror", help=areas.HELP["mirror"], description=MIRROR_DESCRIPTION)
    msub = p.add_subparsers(title="commands", metavar="COMMAND")
    p.set_defaults(func=group_handler(p))

    for kind in ("yum", "apt"):
        example = (
            "  cernvm-build mirror yum ./repo s3://cvmrepo/yum/cvmfs/EL/9/x86_64 --gpg-key KEY.asc\n"
            "  cernvm-build mirror yum https://host/yum/cvmfs/EL/9/x86_64 s3://bucket/EL/9/x86_64 --dry-run"
            if kind == "yum"
            else "  cernvm-build mirror apt ./apt s3://cvmrepo/apt --gpg-key cernvm.gpg\n"
            "  cernvm-build mirror apt https://host/apt s3://bucket/apt --suite bookworm-prod --json"
        )
        what = (
            "every folder holding repodata/repomd.xml is a repository"
            if kind == "yum"
            else "the top folder holds dists/ and pool/; every dists/<suite> with a Release is mirrored"
        )
        article = "a yum" if kind == "yum" else "an apt"
        mp = subparser(
            msub,
            kind,
            help=f"verify {article} repository and publish it to S3",
            description=f"Verify {article} repository (local folder or http(s) URL) and publish it to\n"
            f"s3://bucket/prefix;\n{what}.\n\n{example}\n\n{S3_HELP}",
            json=True,
            handler=_mirror_handler(kind),
        )
        mp.add_argument(
            "source",
            type=local_or_url,
            metavar="SOURCE",
            help="local folder or http(s) URL of the repository",
        )
        mp.add_argument("dest", metavar="S3URL", help="s3://bucket/prefix to publish to")
        mp.add_argument("--dry-run", action="store_true", help="verify and print the plan, change nothing")
        mp.add_argument(
            "--keep", type=int, default=2, metavar="N", help="previous generations kept (default 2)"
        )
        mp.add_argument("--no-delete", action="store_true", help="never delete stale objects")
        mp.add_argument(
            "--allow-rewrite",
            action="store_true",
            help="publish files whose content changed under an already published name (refused by "
            "default: readers holding the current index would get hash errors); they are written in one "
            "batch right before the index switch, and the report names them and the exposure",
        )
        mp.add_argument(
            "--rehash",
            action="store_true",
            help="hash every file again (default: reuse hashes of files whose inode, size, mtime and "
            "ctime are unchanged since the last run)",
        )
        _common_s3(mp, kind)
        _abort_flag(mp)

    vp = subparser(
        msub,
        "verify",
        help="check a published repository the way a source is checked",
        description="Read a published repository back through S3 and check it like a source: indexes, "
        "signatures, every metadata file and package by hash and size; with --gpg-key, signed RPMs also "
        "with rpm -K (as the sync checks the source).\n\n"
        "  cernvm-build mirror verify yum s3://cvmrepo/yum --gpg-key RPM-GPG-KEY-CernVM\n"
        "  cernvm-build mirror verify apt s3://cvmrepo/apt --json\n\n" + S3_HELP,
        json=True,
        handler=_verify_handler,
    )
    vp.add_argument("kind", choices=["yum", "apt"], help="repository kind")
    vp.add_argument("dest", metavar="S3URL", help="s3://bucket/prefix of the published repository")
    _common_s3(vp, "apt")

    sp = subparser(
        msub,
        "sync",
        help="publish any folder (e.g. a built site) with the same engine",
        description="Make s3://bucket/prefix hold exactly FOLDER, by content hash, with the files "
        "named by --last uploaded after all others and deletions at the end.\n\n"
        "  cernvm-build mirror sync site/public s3://www-bucket/ --last index.html --last sitemap.xml\n\n"
        + S3_HELP,
        json=True,
        handler=_sync_handler,
    )
    sp.add_argument("folder", type=existing_folder, metavar="FOLDER")
    sp.add_argument("dest", metavar="S3URL")
    sp.add_argument(
        "--last", action="append", default=[], metavar="GLOB", help="publish these after the rest"
    )
    sp.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sp.add_argument("--no-delete", action="store_true", help="never delete stale objects")
    _s3_access(sp)
    _abort_flag(sp)


#: = mirror.uploads.ABORT_OLDER_THAN (7 days), which the CLI does not import (see JOBS)
ABORT_OLDER_THAN = "7d"
#: the shortest sweep age: a running sync's upload of a big package is younger (hours at most)
MIN_ABORT_AGE = 3600


def _abort_age(text: str) -> int | None:
    from ..table import Invalid, parse_duration

    if text.strip().lower() == "off":
        return None
    try:
        seconds = parse_duration(text)
    except Invalid as e:
        raise argparse.ArgumentTypeError(f"{e.message} ({e.hint})") from None
    if seconds < MIN_ABORT_AGE:
        raise argparse.ArgumentTypeError(
            f"{text.strip()[:40]!r} is under 1h: a running sync's upload could be aborted "
            "(write 1h or more, or off)"
        )
    return seconds


def _abort_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--abort-uploads-older-than",
        type=_abort_age,
        default=ABORT_OLDER_THAN,
        metavar="AGE",
        help="abort unfinished multipart uploads under the prefix started longer ago than this (interrupted "
        f"syncs' parts, billed until aborted; default {ABORT_OLDER_THAN}, 'off' to keep them: a bucket "
        "lifecycle rule AbortIncompleteMultipartUpload does it too); a killed sync's own are aborted by "
        "the next sync from this machine whatever their age",
    )


def _common_s3(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument(
        "--gpg-key", type=existing_file, metavar="FILE", help="public key: signatures must verify with it"
    )
    if kind == "apt":
        p.add_argument(
            "--suite", action="append", metavar="NAME", help="suite under dists/ (default: all; repeatable)"
        )
    _s3_access(p)


def _s3_access(p: argparse.ArgumentParser) -> None:
    """The flags of every command that talks to a bucket: where, as whom, how many transfers at once."""
    p.add_argument("--endpoint-url", metavar="URL", help="S3-compatible endpoint (MinIO, Ceph RGW, ...)")
    p.add_argument("--profile", metavar="P", help="AWS profile from ~/.aws/config")
    p.add_argument(
        "-j", "--jobs", type=jobs, default=JOBS, metavar="N", help=f"parallel transfers (default {JOBS})"
    )


#: the library's progress stages as the Reporter shows them; a label ending in "bytes" is drawn as sizes
LABELS = {"hash": "hashing bytes", "upload": "uploading bytes", "verify": "verifying files",
          "check": "checking objects", "delete": "deleting objects"}  # fmt: skip


@contextmanager
def _progress(out: Output) -> Iterator[ProgressFn]:
    with out.reporter() as reporter:

        def update(stage: str, done: int, total: int | None) -> None:
            reporter.progress(LABELS.get(stage, stage), done, total)

        yield update


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def _print_problems(out: Output, problems: list[str]) -> None:
    # a problem quotes source text (a Package: name, a Release line): an OSC 52 reached the clipboard
    for p in problems:
        out.err.print(f"  - {visible(p, one_line=True)}", markup=False, highlight=False)


def _render_plan(out: Output, report: SyncReport) -> None:
    if out.quiet:
        return  # -q: a result shown for people (Output.print's rule)
    # A dry run shows every action; a real run only with -v (a big first upload is thousands of lines).
    # Plain lines, not a table: keys must never be truncated.
    if report.actions and (report.dry_run or out.verbose):
        for a in report.actions:
            why = a.reason + (", index: published last" if a.last else "")
            out.print(f"{a.op:<6} {a.rel}  ({a.size} bytes; {why})", markup=False, highlight=False)
    verb = "would upload" if report.dry_run else "uploaded"
    ups, dels = len(report.uploads), len(report.deletions)
    out.print(
        f"{report.dest}: {verb} {ups} object(s) ({sum(a.size for a in report.uploads)} bytes), "
        f"{'would delete' if report.dry_run else 'deleted'} {dels}, unchanged {report.unchanged}"
        + (f", kept {len(report.kept)} from previous generations" if report.kept else ""),
        markup=False,
    )
    if report.rewritten:
        out.warn(
            f"{len(report.rewritten)} file(s) changed content under a published name (--allow-rewrite); "
            f"readers holding the previous index could get hash errors for them during "
            f"{report.exposure_s:.2f} s: " + ", ".join(report.rewritten)
        )
    if report.requests:
        out.detail("requests: " + ", ".join(f"{k} {v}" for k, v in report.requests.items()))
    for note in report.notes:
        out.warn(note)


def _mirror_handler(kind: str) -> Callable[[argparse.Namespace, Output], int]:
    def handler(args: argparse.Namespace, out: Output) -> int:
        from ..mirror.check import SourceBroken
        from ..mirror.publish import mirror
        from ..mirror.s3sync import RewriteRefused

        try:
            with _progress(out) as progress:
                rep = mirror(
                    kind,
                    args.source,
                    args.dest,
                    gpg_key=args.gpg_key,
                    suites=getattr(args, "suite", None),
                    endpoint_url=args.endpoint_url,
                    profile=args.profile,
                    jobs=args.jobs,
                    keep=args.keep,
                    dry_run=args.dry_run,
                    delete=not args.no_delete,
                    progress=progress,
                    rehash=args.rehash,
                    allow_rewrite=args.allow_rewrite,
                    abort_uploads_older_than=args.abort_uploads_older_than,
                )
        # --json: the error's document carries the list (``json_details``) beside the five keys every
        # error has; a document of its own here was {"ok", "problems"} without them
        except RewriteRefused as e:
            if not out.json_mode:
                _print_problems(out, [f"{f}: content changed under the same name" for f in e.files])
            raise
        except SourceBroken as e:
            if not out.json_mode:
                out.err.print(f"{len(e.problems)} problem(s) in the source:")
                _print_problems(out, e.problems)
            raise
        c = rep.checked
        what = _count(len(c.repos), "suite" if kind == "apt" else "repository")
        sig = ", signatures good" if c.signed else ""
        out.info(f"verified {c.source}: {what}, {_count(c.packages, 'package')}{sig}")
        assert rep.sync is not None
        out.data(rep.to_json(), lambda _: _render_plan(out, rep.sync) if rep.sync else None)
        return 0

    return handler


def _verify_handler(args: argparse.Namespace, out: Output) -> int:
    from ..mirror.publish import verify_published

    with _progress(out) as progress:
        checked = verify_published(
            args.kind,
            args.dest,
            gpg_key=args.gpg_key,
            suites=args.suite,
            endpoint_url=args.endpoint_url,
            profile=args.profile,
            jobs=args.jobs,
            progress=progress,
        )

    def render(c: Checked) -> None:
        if not c.problems:
            sig = ", signatures good" if c.signed else ""
            what = _count(len(c.repos), "suite" if c.kind == "apt" else "repository")
            out.print(f"{c.source}: ok, {what}, {_count(c.packages, 'package')}{sig}")

    out.data(checked.to_json(), lambda _: render(checked))
    if checked.problems:
        from ..errors import MirrorError

        if not out.json_mode:  # errors: shown even with -q (on stderr; out.data leaves -q's render out)
            out.err.print(f"{escape(checked.source)}: BROKEN, {len(checked.problems)} problem(s):")
            _print_problems(out, checked.problems)
        raise MirrorError(
            f"{args.dest}: published repository is broken ({_count(len(checked.problems), 'problem')})",
            hint="re-run the mirror command to repair it from a good source",
        )
    return 0


def _sync_handler(args: argparse.Namespace, out: Output) -> int:
    from ..mirror.s3sync import sync_tree

    with _progress(out) as progress:
        rep = sync_tree(
            args.folder,
            args.dest,
            endpoint_url=args.endpoint_url,
            profile=args.profile,
            last=args.last,
            delete=not args.no_delete,
            dry_run=args.dry_run,
            jobs=args.jobs,
            progress=progress,
            abort_uploads_older_than=args.abort_uploads_older_than,
        )
    out.data(rep.to_json(), lambda _: _render_plan(out, rep))
    return 0
