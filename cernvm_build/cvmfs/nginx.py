"""A production nginx configuration for Stratum directories (what ``cvmfs nginx-config`` writes).

Each repository is served at ``/cvmfs/<fqrn>/`` with the cache headers of the development server
(``serve.SHORT_CACHE`` / ``serve.LONG_CACHE``: one cache rule, two servers): the signed files change
with every publication and get a short max-age, so proxies and clients see a new revision within a
minute; objects are content-addressed and never change, so they are cached for a year and marked
immutable. ``data/txn/`` (the publisher's lock and a replicator's scratch) is not served. Errors
carry no cache header (nginx adds them to successful answers only), so a proxy never keeps a 404 of
an object that is still on its way. The file is a whole ``nginx.conf``: pid, logs and temporary
paths live in one run directory, so it runs beside (or instead of) the system's nginx.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CvmfsError
from .confpath import is_plain, listen_at, plain_path, user_name
from .lock import TXN_DIR
from .serve import LONG_CACHE, SHORT_CACHE, find_repositories


def _quoted(path: Path, what: str) -> str:
    return plain_path(path, what, "nginx")


def nginx_config(
    stratum: Path, *, port: int, listen: str = "*", run_dir: Path, user: str | None = None
) -> str:
    """The configuration text for the repositories in ``stratum`` (one Stratum directory or a folder
    of ``<fqrn>/`` ones); ``run_dir`` holds the pid file, logs and nginx's temporary files."""
    if not 0 < port < 65536:
        raise CvmfsError(f"--port {port}: not a TCP port", hint="1 .. 65535")
    where = listen_at(listen, port)
    user = user_name(user) if user else None
    repos = find_repositories(stratum)
    if not repos:
        raise CvmfsError(
            f"{stratum}: no Stratum directory here (no .cvmfspublished, nor <fqrn>/.cvmfspublished)",
            hint="point at a replica or a published repository (cvmfs replicate / cvmfs create)",
        )
    run = _quoted(run_dir.resolve(), "run directory")
    # only a comment names the folder itself (its <fqrn>/ entries may be links to plain paths): a
    # newline in its name ended the comment, the rest a directive (``load_module``; pr26c 1). A path
    # that is not plain goes in escaped on its one line: a refusal turned away '/srv/my strata' too
    folder = str(stratum.resolve())
    folder = folder if is_plain(folder) else ascii(folder)
    lines = [
        f"# the CernVM-FS repositories in {folder} (cernvm-build cvmfs nginx-config)",
        "# start: nginx -c THIS_FILE   (reload: nginx -c THIS_FILE -s reload)",
        *([f"user {user};"] if user else []),
        "worker_processes auto;",
        f"pid {run}/nginx.pid;",
        f"error_log {run}/error.log;",
        "events { worker_connections 4096; }",
        "http {",
        f"    access_log {run}/access.log;",
        *(
            f"    {kind}_temp_path {run}/{kind}_temp;"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
        "    sendfile on;",
        "    tcp_nopush on;",
        "    keepalive_timeout 65;",
        "    keepalive_requests 100000;",
        # `cvmfs serve` refuses a path that resolves outside the Stratum; nginx follows links by
        # default, so a link in the Stratum to /etc/shadow was served (pr26c). `on` refuses every
        # link below the (resolved) alias paths, which the publisher never writes; `if_not_owner`
        # would still follow a root-owned link to a root-owned file
        "    disable_symlinks on;",
        "    types { }",
        "    default_type application/octet-stream;",
        "    server {",
        f"        listen {where};",
        "        server_name _;",
    ]
    for fqrn, directory in sorted(repos.items()):
        if not is_plain(fqrn):
            raise CvmfsError(f"{directory}: repository name {fqrn!r} cannot be a URL path", hint="rename it")
        base = _quoted(directory.resolve(), "Stratum directory")
        url = f"/cvmfs/{fqrn}"
        lines += [
            f"        # {fqrn}",
            f"        location ^~ {url}/{TXN_DIR}/ {{ return 404; }}",
            f"        location ^~ {url}/data/ {{",
            f"            alias {base}/data/;",
            f'            add_header Cache-Control "{LONG_CACHE}";',
            "        }",
            f"        location ^~ {url}/ {{",
            f"            alias {base}/;",
            f'            add_header Cache-Control "{SHORT_CACHE}";',
            "        }",
        ]
    lines += ["        location / { return 404; }", "    }", "}", ""]
    return "\n".join(lines)
