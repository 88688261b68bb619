"""``cernvm-build cvmfs``: read, verify, export, serve and mount CernVM-FS repositories.

This module holds the reading commands (info, ls, cat, verify, export, tag list) and registers the
group. Serving and mounting (serve, replicate, nginx-config, mount) come from ``cli/cvmfs_serve.py``,
the shared SOURCE options from ``cli/cvmfs_source.py``, and the publisher's commands (keygen, create,
publish, resign, tag add/remove) from ``cli/cvmfs_publish.py`` when it is there.
"""

from __future__ import annotations

import argparse
import itertools
import json
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import utcdate
from ..cvmfs.catalog import DirEntry
from ..cvmfs.repository import Repository, SnapshotSpec
from ..errors import IntegrityError, UsageError
from ..termtext import visible
from . import areas, cvmfs_monitor, cvmfs_publish, cvmfs_serve
from .app import Output, group_handler, jobs, styled, subparser
from .cvmfs_source import add_source, open_from_args

# Handlers import the modules of their area when they run (deliberate lazy imports): `--help` and
# the other commands start without loading every area, and a missing optional extra only stops the
# command that needs it.

DESCRIPTION = """\
CernVM-FS repositories: read, verify, pin, export, serve and mount them (and publish, see below).

  cernvm-build cvmfs info http://host/cvmfs/sft.cern.ch --key sft.cern.ch.pub
  cernvm-build cvmfs ls REPO_DIR /usr/bin -l
  cernvm-build cvmfs cat REPO_DIR /etc/redhat-release --tag slc4-frozen
  cernvm-build cvmfs verify URL --key k.pub --json           every object, hash and size
  cernvm-build cvmfs export URL ./tree   (or out.tar)       a revision as files or a tar
  cernvm-build cvmfs tag list URL                            the history: tags, revisions, dates
  cernvm-build cvmfs serve DIR --port 8000                   a Stratum HTTP server for development
  cernvm-build cvmfs mount URL /mnt/repo --date 2026-01-01T00:00:00Z
  cernvm-build cvmfs monitor URL… --replica-of S1=S0 --out status.json   health, for cron

SOURCE is a Stratum URL (http://host/cvmfs/<fqrn>; repeat --server for fail-over) or a local Stratum
directory (holding .cvmfspublished, or a fixture-style <fqrn>/ with repo/ and keys/).
Snapshots: --tag NAME, --date YYYY-MM-DDTHH:MM:SSZ (newest tag at or before), --root-hash HASH;
default is the trunk. Everything is verified: manifest signature, certificate in the whitelist,
whitelist signature and expiry, every object's hash and size."""


def entry_json(e: DirEntry) -> dict[str, Any]:
    d: dict[str, Any] = {
        "path": e.path,
        "type": "directory"
        if e.is_dir
        else "symlink"
        if e.is_symlink
        else "file"
        if e.is_file
        else "special",
        "mode": oct(stat.S_IMODE(e.mode)),
        "size": e.size,
        "mtime": e.mtime,
        "uid": e.uid,
        "gid": e.gid,
    }
    if e.is_symlink:
        d["target"] = e.symlink
    if e.content_hash:
        d["hash"] = e.content_hash
    if e.chunks:
        d["chunks"] = len(e.chunks)
    if e.linkcount > 1 and not e.is_dir:
        d["hardlinks"] = e.linkcount
    if e.xattrs:
        d["xattrs"] = {k: v.decode("utf-8", "replace") for k, v in e.xattrs.items()}
    return d


def _repo_json(repo: Repository) -> dict[str, Any]:
    m = repo.manifest
    w = repo.whitelist
    return {
        "fqrn": repo.fqrn,
        "revision": repo.revision,
        "root_hash": repo.root_hash,
        "tag": repo.tag,
        "published": repo.timestamp,
        "offline": repo.offline,
        "manifest": None
        if m is None
        else {
            "revision": m.revision,
            "root_hash": m.root_hash,
            "root_size": m.root_size,
            "timestamp": m.timestamp,
            "ttl": m.ttl,
            "certificate": m.certificate_hash,
            "history": m.history_hash,
        },
        "whitelist": None
        if w is None
        # the toolkit's one date form (utcdate; `tag list`'s dates, monitor's): isoformat wrote +00:00
        else {"expires": utcdate.text(int(w.expires.timestamp())), "fingerprints": list(w.fingerprints)},
        "source": repo.fetcher.description,
    }


# -- commands ------------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace, out: Output) -> int:
    with open_from_args(args) as repo:
        data = _repo_json(repo)
        stats = repo.statistics()
        data["files"] = stats.get("self_regular", 0) + stats.get("subtree_regular", 0)
        data["bytes"] = stats.get("self_file_size", 0) + stats.get("subtree_file_size", 0)

    def render(d: dict[str, Any]) -> None:
        rows = [
            ["repository", d["fqrn"]],
            ["revision", d["revision"]],
            ["root catalog", d["root_hash"]],
            ["tag", d["tag"] or "(trunk)" if not d["tag"] else d["tag"]],
            ["published", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(d["published"]))],
            ["files", f"{d['files']} ({d['bytes']} bytes)"],
            ["source", d["source"] + (" (offline, from cache)" if d["offline"] else "")],
        ]
        if d["whitelist"]:
            rows.append(["whitelist expires", d["whitelist"]["expires"]])
        out.table(["", ""], rows)

    out.data(data, render)
    return 0


def _ls_line(e: DirEntry, full_path: bool) -> str:
    kind = stat.filemode(e.mode)
    t = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.mtime))
    name = e.path if full_path else e.name or "/"
    if e.is_symlink:
        name += f" -> {e.symlink}"
    name = visible(name, one_line=True)  # a catalog's names are data: no escape sequence, no forged line
    return f"{kind} {e.linkcount:>3} {e.uid:>5} {e.gid:>5} {e.size:>12} {t} {name}"


def cmd_ls(args: argparse.Namespace, out: Output) -> int:
    # Streamed, entry by entry (JSON too): a directory of a million entries costs no more memory
    # than a small one; a bad entry met half-way ends the listing with one error line.
    with open_from_args(args) as repo:
        if args.recursive:
            entries: Iterator[DirEntry] = repo.walk(args.path)
        else:
            top = repo.stat(args.path)
            entries = repo.iterdir(top.path) if top.is_dir else iter([top])
        write = sys.stdout.write
        if out.json_mode:
            # the first entry before the array begins: an error there (-R of a path that is not there)
            # is still --json's one document; stdout held '[' alone
            first = next(entries, None)
            out.streaming_json()
            write("[")
            for i, e in enumerate(entries if first is None else itertools.chain((first,), entries)):
                write(("," if i else "") + "\n  " + json.dumps(entry_json(e)))
            write("\n]\n")
            return 0
        for e in entries:
            if args.long:
                line = _ls_line(e, args.recursive)
            else:
                line = visible(e.path if args.recursive else e.name, one_line=True)
            write(line.encode("utf-8", "surrogateescape").decode("utf-8", "replace") + "\n")
    return 0


def cmd_cat(args: argparse.Namespace, out: Output) -> int:
    with open_from_args(args) as repo:
        entry = repo.stat(args.path)
        pos = 0
        sink = sys.stdout.buffer
        while pos < entry.size:
            data = repo.read(entry, pos, 1 << 20)
            if not data:
                break
            sink.write(data)
            pos += len(data)
        sink.flush()
    return 0


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    from rich.markup import escape

    def problem(text: str) -> None:
        # Each problem as it is found (there may be millions; the report keeps the first ones).
        if not out.json_mode:
            out.err.print(
                f"[bold red]problem:[/bold red] {escape(visible(text, one_line=True))}",
                highlight=False,
                markup=True,
            )

    with open_from_args(args) as repo:
        with out.progress() as bar:
            task = bar.add_task(f"verifying {repo.fqrn}", total=None)
            report = repo.verify(progress=out.ticker(bar, task), on_problem=problem)
        data = {
            "fqrn": repo.fqrn,
            "revision": repo.revision,
            "root_hash": repo.root_hash,
            "ok": report.ok,
            "catalogs": report.catalogs,
            "entries": report.entries,
            "files": report.files,
            "objects": report.objects,
            "bytes": report.bytes,
            "bulk_absent": report.bulk_absent,
            "tags": report.tags,
            "problems": report.problems,
            "errors": report.errors,
        }

    def render(d: dict[str, Any]) -> None:
        verdict = ("OK", "green") if d["ok"] else (f"{d['problems']} problem(s)", "red")
        out.print(
            styled(
                f"{d['fqrn']} revision {d['revision']}: {d['catalogs']} catalogs, {d['entries']} entries, "
                f"{d['objects']} objects, {d['bytes']} bytes checked: ",
                verdict,
            )
        )
        if d["bulk_absent"]:
            out.print(
                f"{d['bulk_absent']} chunked file(s) name a legacy bulk object the repository does not "
                "hold (optional: their chunks were checked)"
            )

    out.data(data, render)
    if not report.ok:
        raise IntegrityError(
            f"{repo.fqrn}: revision {repo.revision} has {report.problems} problem(s) (listed above)",
            hint="the repository is damaged or hostile: do not use it",
        )
    return 0


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    from ..cvmfs.export import export

    if str(args.dest) == "-":
        # `publish REPO -` reads a tar on stdin, so `export SOURCE -` reads as a tar on stdout: it made
        # a directory named '-'. The export is atomic (a temporary sibling renamed into place): no stream.
        raise UsageError(
            "DEST '-': an export is written to a new directory or a .tar/.tar.gz file, not to stdout",
            hint="give e.g. root.tar (and 'cat root.tar |' it), or a directory such as ./root",
        )
    with open_from_args(args) as repo, out.progress() as bar:
        task = bar.add_task(f"exporting {repo.fqrn} revision {repo.revision}", total=None)
        result = export(
            repo,
            args.dest,
            subtree=args.path,
            jobs=args.jobs,
            devices=args.devices,
            progress=out.ticker(bar, task),
        )
    report = result.report
    for p, why in report.skipped:
        out.warn(f"{p}: skipped ({why})")
    if report.skipped_count > len(report.skipped):
        out.warn(f"... and {report.skipped_count - len(report.skipped)} more skipped")

    def render(d: dict[str, Any]) -> None:
        notable = report.summary()
        tail = f"; {notable}" if notable else ""
        what = f"exported {d['entries']} entries ({d['bytes']} bytes) to {d['path']}"
        out.print(what + tail, highlight=False)

    data = {"path": str(result.path), "entries": result.entries, "files": result.files, "bytes": result.bytes}
    out.data({**data, **report.to_json()}, render)
    return 0


def cmd_tag_list(args: argparse.Namespace, out: Output) -> int:
    with open_from_args(args, SnapshotSpec()) as repo:
        tags = repo.tags()
    rows = [
        {
            "name": t.name,
            "revision": t.revision,
            "root_hash": t.root_hash,
            "timestamp": t.timestamp,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t.timestamp)),
            "description": t.description,
        }
        for t in tags
    ]
    out.data(
        rows,
        lambda rs: out.table(
            ["tag", "revision", "date", "root hash", "description"],
            [[r["name"], r["revision"], r["date"], r["root_hash"], r["description"]] for r in rs],
        ),
    )
    return 0


# -- registration --------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparser(
        sub,
        "cvmfs",
        help=areas.HELP["cvmfs"],
        description=DESCRIPTION,
    )
    group.set_defaults(func=group_handler(group))
    cvmfs_sub = group.add_subparsers(title="commands", metavar="COMMAND")

    p = subparser(
        cvmfs_sub,
        "info",
        json=True,
        handler=cmd_info,
        help="the verified manifest, revision and whitelist",
        description="Show the repository's revision, root catalog, tag and whitelist expiry.\n\n"
        "  cernvm-build cvmfs info http://127.0.0.1:8000/cvmfs/demo.cernvm.test --key demo.pub\n"
        "  cernvm-build cvmfs info ./fixture.cernvm.test --tag slc4-frozen --json",
    )
    add_source(p)

    p = subparser(
        cvmfs_sub,
        "ls",
        json=True,
        handler=cmd_ls,
        help="list a directory of a revision",
        description="List a directory (or -R everything below it).\n\n"
        "  cernvm-build cvmfs ls ./fixture.cernvm.test /usr/bin -l\n"
        "  cernvm-build cvmfs ls URL / -R --json > listing.json\n\n"
        "--json streams the array entry by entry (a million entries take no more memory than ten): an\n"
        "error met after the first entry (a damaged catalog, Ctrl-C) ends it unterminated, with the\n"
        "error on stderr and a non-zero exit code, so a partial listing never parses as a whole one.",
    )
    add_source(p)
    p.add_argument("path", nargs="?", default="/", help="directory in the repository (default /)")
    p.add_argument("-l", "--long", action="store_true", help="mode, links, owner, size, mtime")
    p.add_argument("-R", "--recursive", action="store_true", help="everything below, depth first")

    p = subparser(
        cvmfs_sub,
        "cat",
        handler=cmd_cat,
        help="print a file of a revision",
        description="Write a file's contents to stdout (fetched and verified on the way).\n\n"
        "  cernvm-build cvmfs cat ./fixture.cernvm.test /etc/redhat-release --tag slc4-frozen",
    )
    add_source(p)
    p.add_argument("path", help="file in the repository")

    p = subparser(
        cvmfs_sub,
        "verify",
        json=True,
        handler=cmd_verify,
        help="check every catalog and object",
        description="Verify the signature chain, then every catalog and every object of the revision:\n"
        "hash of the stored bytes, inflated size, chunk layout. Exit code 6 when anything is wrong.\n\n"
        "  cernvm-build cvmfs verify http://host/cvmfs/sft.cern.ch --key sft.cern.ch.pub --json",
    )
    add_source(p)

    p = subparser(
        cvmfs_sub,
        "export",
        json=True,
        handler=cmd_export,
        help="copy a revision to a directory or tar",
        description="Export a revision (or a subtree) to a new directory, or to a tar file when DEST ends\n"
        "in .tar, .tar.gz or .tgz. Modes (setuid/setgid too), symlinks, hard links, FIFOs, mtimes and\n"
        "xattrs are kept, owners too when run as root. Device nodes: a tar carries them; a directory\n"
        "gets them only with --devices (as root). Sockets are skipped. Setuid/setgid files, xattrs and\n"
        "skipped entries are counted in the summary and listed in --json. Nothing is written outside\n"
        "DEST, whatever the repository holds, and DEST appears atomically.\n\n"
        "  cernvm-build cvmfs export URL ./el6-root --tag el6-2026.11\n"
        "  cernvm-build cvmfs export ./repo-dir rootfs.tar --path /opt/sw",
    )
    add_source(p)
    p.add_argument("dest", type=Path, metavar="DEST", help="new directory, or a .tar/.tar.gz file")
    p.add_argument("--path", default="/", help="export only this subtree (default /)")
    p.add_argument("-j", "--jobs", type=jobs, default=4, help="parallel downloads (default 4)")
    p.add_argument("--devices", action="store_true",
                   help="create device nodes in a directory export (needs root)")  # fmt: skip

    tag = subparser(
        cvmfs_sub,
        "tag",
        help="list (and add/remove) named snapshots",
        description="Named snapshots (tags) in the repository's history.\n\n"
        "  cernvm-build cvmfs tag list URL --key k.pub",
    )
    tag.set_defaults(func=group_handler(tag))
    tag_sub = tag.add_subparsers(title="commands", metavar="COMMAND")
    p = subparser(
        tag_sub,
        "list",
        json=True,
        handler=cmd_tag_list,
        help="the tags, newest first",
        description="List the tags of the repository's history database, newest revision first.\n\n"
        "  cernvm-build cvmfs tag list ./fixture.cernvm.test --json",
    )
    add_source(p, snapshot=False)

    cvmfs_serve.register_serve(cvmfs_sub)
    cvmfs_monitor.register_monitor(cvmfs_sub)
    cvmfs_monitor.register_stats(cvmfs_sub)
    cvmfs_publish.register_publish(cvmfs_sub, tag_sub)
