"""``cernvm-build cvmfs serve | replicate | nginx-config | squid-config | mount``: serving repositories,
proxying and mounting them.

The reading commands (info, ls, cat, verify, export, tag list) are ``cli/cvmfs.py``'s, which
registers these beside them; the SOURCE options both share are ``cli/cvmfs_source.py``'s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..cvmfs.trust import keys_to_verify
from ..errors import UsageError
from .app import Output, add_output_file, jobs, retries, seconds, subparser, write_output
from .cvmfs_publish import add_s3_args, stratum_target
from .cvmfs_source import KEYS_HELP, add_blacklist, add_source, blacklist_from_args
from .inputs import existing_file, existing_folder

# Handlers import the modules of their area when they run (deliberate lazy imports): `--help` and
# the other commands start without loading every area, and a missing optional extra only stops the
# command that needs it.


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    from ..cvmfs.serve import serve

    server = serve(args.dir, host=args.host, port=args.port)
    try:
        for name in server.repositories:
            out.print(f"serving {name} at {server.url}/cvmfs/{name}")
        out.info("press Ctrl-C to stop")
        while True:
            time.sleep(3600)
    finally:
        server.close()


def cmd_replicate(args: argparse.Namespace, out: Output) -> int:
    from ..cvmfs.replicate import replicate

    sources = [args.source, *args.server]
    keys = keys_to_verify(args.source, args.fqrn, args.key, verify=True)
    args.stratum = args.dest
    with out.reporter() as reporter, stratum_target(args, replica=True) as target:
        result = replicate(
            sources[0] if len(sources) == 1 else sources,
            target.path,
            public_keys=keys,
            fqrn=args.fqrn,
            proxy=args.proxy,
            jobs=args.jobs,
            timeout=args.timeout,
            retries=args.retries,
            reporter=reporter,
            blacklist=blacklist_from_args(args),
        )

    def render(d: dict[str, Any]) -> None:
        out.print(
            f"{d['fqrn']} revision {d['revision']} replicated to {args.dest}: {d['objects_fetched']} "
            f"object(s) fetched ({d['bytes_fetched']} bytes), {d['objects_skipped']} already there; "
            f"{d['revisions']} revision(s), {d['catalogs']} catalog(s)",
            highlight=False,
        )
        for line in d["below_floor"]:  # (warned while it ran too; here with the result, as --json has it)
            out.print(f"  below the blacklist's floor: {line}", highlight=False)

    out.data(target.add_to({"dest": str(args.dest), **result.as_json()}), render)
    return 0


def cmd_nginx_config(args: argparse.Namespace, out: Output) -> int:
    from ..cvmfs.nginx import nginx_config

    run_dir = args.run_dir or (args.output.resolve().parent if args.output else Path("/run/cvmfs-nginx"))
    text = nginx_config(args.dir, port=args.port, listen=args.listen, run_dir=run_dir, user=args.user)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    write_output(args.output, text.encode(), "--output")
    out.info(f"wrote {args.output}; start it with: nginx -c {args.output.resolve()}")
    return 0


def cmd_squid_config(args: argparse.Namespace, out: Output) -> int:
    from ..cvmfs.squid import DEFAULT_CLIENTS, squid_config

    run_dir = args.run_dir or (args.output.resolve().parent if args.output else Path("/run/cvmfs-squid"))
    text = squid_config(
        port=args.port,
        run_dir=run_dir,
        listen=args.listen,
        clients=args.client or DEFAULT_CLIENTS,
        stratum_hosts=args.stratum,
        cache_mb=args.cache_mb,
        memory_mb=args.memory_mb,
        max_object_mb=args.max_object_mb,
    )
    if args.output is None:
        sys.stdout.write(text)
        return 0
    write_output(args.output, text.encode(), "--output")
    first = f"squid -z -f {args.output.resolve()}; " if args.cache_mb else ""
    out.info(f"wrote {args.output}; start it with: {first}squid -N -f {args.output.resolve()}")
    return 0


def cmd_mount(args: argparse.Namespace, out: Output) -> int:
    from ..cvmfs import mount

    argv: list[str] = []
    for s in [args.source, *args.server]:
        argv += ["--server", str(s)]
    keys = keys_to_verify(args.source, args.fqrn, args.key, verify=not args.no_verify)
    if not keys:  # the FUSE client always checks signatures
        raise UsageError("mount needs a public key", hint="pass --key PATH (the master public key)")
    for k in keys:
        argv += ["--public-key", str(k)]
    blacklist_from_args(args)  # a bad file is one line here, before the daemon forks
    for b in args.blacklist:
        argv += ["--blacklist", str(b)]
    for opt in ("fqrn", "proxy", "tag", "date", "root_hash", "snapshot_file", "log"):
        value = getattr(args, opt, None)
        if value is not None:
            argv += [f"--{opt.replace('_', '-')}", str(value)]
    if args.cache is not None:
        argv += ["--cache", str(args.cache)]
    argv += ["--timeout", str(args.timeout), "--retries", str(args.retries)]
    if args.foreground:
        argv.append("--foreground")
    argv.append(str(args.mountpoint))
    parsed = mount.parse_args(argv)
    assert parsed is not None  # (no --help among the words built above)

    def report(mounted: mount.Mounted) -> None:
        for w in mounted.warnings:
            out.warn(w)
        for note in mounted.notes:
            out.info(note)
        out.data(mounted.to_json(), lambda _: out.print(mounted.line()))
        # in the foreground the command goes on serving: the report is read now, not at its end
        sys.stdout.flush()

    mount.start(parsed, report)
    return 0


def register_serve(cvmfs_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparser(
        cvmfs_sub,
        "serve",
        handler=cmd_serve,
        help="serve Stratum directories over HTTP",
        description="Serve a Stratum directory (or a folder of <fqrn>/ Stratum directories) at\n"
        "http://HOST:PORT/cvmfs/<fqrn>/ with Stratum-1 cache headers, until Ctrl-C.\n\n"
        "  cernvm-build cvmfs serve ./repos --port 8000",
    )
    p.add_argument("dir", type=existing_folder, metavar="DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")

    p = subparser(
        cvmfs_sub,
        "replicate",
        json=True,
        handler=cmd_replicate,
        help="make or update a Stratum-1 replica in a directory or an S3 bucket",
        description="Replicate a repository into DEST (a Stratum directory, or an s3:// bucket through its\n"
        "local working copy --spool, pushed with the signed files last): the signature chain is\n"
        "verified with the master key, every object's hash is checked before it is stored, only\n"
        "objects DEST lacks are fetched (trunk and every tagged revision), and the manifest and\n"
        "whitelist are replaced last, so readers of DEST never see half a revision. A killed run\n"
        "leaves the old revision published; running it again finishes the job.\n\n"
        "  cernvm-build cvmfs replicate http://stratum0/cvmfs/sft.cern.ch /srv/cvmfs/sft.cern.ch "
        "--key sft.cern.ch.pub\n"
        "  cernvm-build cvmfs serve /srv/cvmfs --port 8000\n"
        "  cernvm-build cvmfs replicate http://stratum0/cvmfs/sft.cern.ch s3://cvmfs/sft.cern.ch "
        "--key sft.cern.ch.pub --endpoint-url https://s3.cern.ch",
    )
    p.add_argument("source", metavar="SOURCE_URL", help="Stratum URL or local Stratum directory")
    p.add_argument("dest", metavar="DEST", help="the replica's Stratum directory, or s3://bucket/prefix")
    add_s3_args(p)
    g = p.add_argument_group("repository")
    g.add_argument("--server", action="append", default=[], metavar="URL", help="extra URL for fail-over")
    g.add_argument("--key", action="append", default=[], type=existing_file, metavar="PATH", help=KEYS_HELP)
    add_blacklist(g)
    g.add_argument("--fqrn", help="repository name (default: from the URL or the directory name)")
    g.add_argument("--proxy", metavar="P", help="HTTP proxy URL(s), '|'/';' separated; DIRECT for none")
    g.add_argument("--timeout", type=seconds, default=10.0, help="HTTP timeout in seconds (default: 10)")
    g.add_argument("--retries", type=retries, default=2, help="retries per server (default: 2)")
    p.add_argument("-j", "--jobs", type=jobs, default=8, help="parallel downloads (default 8)")

    p = subparser(
        cvmfs_sub,
        "nginx-config",
        handler=cmd_nginx_config,
        help="write an nginx configuration that serves Stratum directories",
        description="Write a whole nginx.conf (Debian's nginx) serving DIR (a Stratum directory or a\n"
        "folder of <fqrn>/ ones) at http://LISTEN:PORT/cvmfs/<fqrn>/ with the Stratum-1 cache\n"
        "headers: short max-age for .cvmfspublished/.cvmfswhitelist, a year and immutable for\n"
        "data/. Pid file, logs and temporary files go to --run-dir.\n\n"
        "  cernvm-build cvmfs nginx-config /srv/cvmfs --port 80 -o /etc/cvmfs-nginx/nginx.conf\n"
        "  nginx -c /etc/cvmfs-nginx/nginx.conf",
    )
    p.add_argument("dir", type=existing_folder, metavar="STRATUM_DIR")
    p.add_argument("--port", type=int, default=80, help="TCP port (default 80)")
    p.add_argument("--listen", default="*", help="address to listen on (default: all)")
    add_output_file(p, "write here (default, or -: stdout)")
    p.add_argument(
        "--run-dir",
        type=Path,
        metavar="DIR",
        help="pid, logs, temporary files (default: beside --output, else /run/cvmfs-nginx)",
    )
    p.add_argument("--user", help="the workers' user (must read DIR; default: nginx's own)")

    p = subparser(
        cvmfs_sub,
        "squid-config",
        handler=cmd_squid_config,
        help="write a site squid configuration for CernVM-FS clients",
        description="Write a squid.conf (Debian's squid) for a site proxy in front of Stratum-1 servers:\n"
        "collapsed forwarding (a fleet booting at once costs the Stratum-1 one request per object),\n"
        "object size limits fit for CernVM-FS, clients limited to --client networks and, with\n"
        "--stratum, destinations limited to those servers. Clients then set\n"
        "CVMFS_HTTP_PROXY=http://THIS_HOST:PORT (or the user-data key cvmfs_http_proxy).\n\n"
        "  cernvm-build cvmfs squid-config --port 3128 --client 10.0.0.0/8 \\\n"
        "      --stratum cvmfs-stratum-one.cern.ch --cache-mb 50000 -o /etc/cvmfs-squid/squid.conf\n"
        "  squid -z -f /etc/cvmfs-squid/squid.conf && squid -N -f /etc/cvmfs-squid/squid.conf",
    )
    p.add_argument("--port", type=int, default=3128, help="TCP port (default 3128)")
    p.add_argument("--listen", default="", metavar="ADDR", help="address to listen on (default: all)")
    p.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NET",
        help="a network allowed to use the proxy (repeatable; default: loopback and private networks)",
    )
    p.add_argument(
        "--stratum",
        action="append",
        default=[],
        metavar="HOST",
        help="the only servers it fetches from (repeatable; .domain for a domain; default: any)",
    )
    p.add_argument("--cache-mb", type=int, default=0, help="disk cache in MB (default 0: memory only)")
    p.add_argument("--memory-mb", type=int, default=256, help="memory cache in MB (default 256)")
    p.add_argument("--max-object-mb", type=int, default=1024, help="largest object cached (default 1024)")
    add_output_file(p, "write here (default, or -: stdout)")
    p.add_argument(
        "--run-dir",
        type=Path,
        metavar="DIR",
        help="pid, logs, disk cache; squid's user must write it (default: beside -o, else /run/cvmfs-squid)",
    )

    p = subparser(
        cvmfs_sub,
        "mount",
        handler=cmd_mount,
        json=True,
        help="mount a revision read-only with FUSE",
        description="Mount a verified, pinned revision read-only with FUSE (the same code the μCernVM\n"
        "initrd runs). Contents are fetched on demand. Daemonizes once mounted and prints\n"
        "'mounted FQRN revision N root HASH tag TAG' (--json: {fqrn, revision, root_hash, tag,\n"
        "mountpoint, pid, cache}, pid the daemon's; with --foreground once mounted, then it serves);\n"
        "unmount with 'fusermount3 -u MOUNTPOINT'.\n\n"
        "  cernvm-build cvmfs mount http://127.0.0.1:8000/cvmfs/demo.cernvm.test /mnt/demo --key demo.pub\n"
        "  cernvm-build cvmfs mount URL /mnt/el6 --date 2026-01-01T00:00:00Z --cache ~/.cache/cvmfs",
    )
    add_source(p)
    p.add_argument("mountpoint", type=existing_folder, metavar="MOUNTPOINT")
    p.add_argument(
        "--snapshot-file", type=Path, metavar="PATH", help="pin file: read if present, written after"
    )
    p.add_argument("--foreground", action="store_true", help="do not daemonize")
    p.add_argument("--log", type=Path, metavar="FILE", help="daemon log file")
