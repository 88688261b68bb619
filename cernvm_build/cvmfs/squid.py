"""A site squid for CernVM-FS clients (what ``cvmfs squid-config`` writes).

A site puts one or two forward proxies between its machines and the Stratum-1 servers; clients name
them in ``CVMFS_HTTP_PROXY`` (``cvmfs/proxies.py``). What matters for CernVM-FS, from its
documentation and this project's fleet load test:

- ``collapsed_forwarding on``: a fleet booting at once asks for the same objects at the same time;
  squid then sends one request upstream and lets the others wait for its answer. Without it every
  simultaneous miss goes to the Stratum-1 (the load test measures the difference).
- Objects are content-addressed and large ones exist (chunks up to a few MB, whole files up to the
  chunking threshold), so the object size limits are raised well past squid's defaults (4 MB on disk,
  512 KB in memory); the manifest's short ``max-age`` (``serve.SHORT_CACHE``) keeps new revisions
  visible within a minute, without a rule here.
- Clients are limited to the networks given (``--client``) and, when Stratum hosts are named
  (``--stratum``), requests to anywhere else are refused: an open proxy is an abuse target.

Pid file, logs and the optional disk cache live in one run directory, which squid's own user
(``proxy`` on Debian) must be able to write: the file then runs beside the system's squid. Memory
only when ``cache_mb`` is 0; with a disk cache, run ``squid -z -f FILE`` once to create it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import CvmfsError
from .confpath import listen_at, no_scope, plain_path

#: the private and loopback networks: a site proxy's usual clients
DEFAULT_CLIENTS = ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7")

#: squid reads cache_dir's size as an int of MB, and refused (FATAL: Bungled ...) the file written with
#: more; memory and object sizes past 16 TiB overflowed its byte counts the same way (pr18d finding 8)
MAX_CACHE_MB = 2**31 - 1
MAX_SIZE_MB = 2**24

#: labels as RFC 1123 has them, no '-' first or last: squid read a '-n' or '-i' as the ACL's flag, not a
#: name (an empty ACL: every request refused, pr26c 2)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"\.?{_LABEL}(\.{_LABEL})*")  # fullmatch: $ takes "x\n"


def _network(text: str) -> str:
    no_scope(text, "--client")
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise CvmfsError(
            f"--client {text!r}: not an address or network", hint="e.g. 10.0.0.0/8 or 192.168.1.7"
        ) from None


_STRATUM_HINT = "a name like cvmfs-stratum-one.cern.ch, .cern.ch for a whole domain, or an IP address"


def _strata(hosts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(IP addresses, host names and ``.domain`` names) of ``--stratum``: squid's ``dst`` and
    ``dstdomain`` are separate ACL types."""
    addresses: list[str] = []
    domains: list[str] = []
    for text in hosts:
        # a Stratum is named by host name more often than by address: the hint says both
        no_scope(text, "--stratum", _STRATUM_HINT)
        try:
            addresses.append(str(ipaddress.ip_address(text)))
            continue
        except ValueError:
            pass
        if not _HOST.fullmatch(text) or len(text) > 253:
            raise CvmfsError(
                f"--stratum {text!r}: not a host name or domain",
                hint=_STRATUM_HINT,
            )
        if text.rpartition(".")[2].isdigit():
            # no top-level domain is all digits (RFC 1123): '010.0.0.1', an address ipaddress refuses
            # for its leading zero, went in as a domain name no request's host is (pr26c 8)
            raise CvmfsError(
                f"--stratum {text!r}: neither an IP address nor a host name",
                hint="an IP address is written without leading zeros, e.g. 10.0.0.1",
            )
        domains.append(text.lower())
    return addresses, domains


def squid_config(
    *,
    port: int,
    run_dir: Path,
    listen: str = "",
    clients: Sequence[str] = DEFAULT_CLIENTS,
    stratum_hosts: Sequence[str] = (),
    cache_mb: int = 0,
    memory_mb: int = 256,
    max_object_mb: int = 1024,
) -> str:
    """The configuration text; ``listen`` empty means every address."""
    if not 0 < port < 65536:
        raise CvmfsError(f"--port {port}: not a TCP port", hint="1 .. 65535")
    for value, flag, low, high in (
        (cache_mb, "--cache-mb", 0, MAX_CACHE_MB),
        (memory_mb, "--memory-mb", 8, MAX_SIZE_MB),
        (max_object_mb, "--max-object-mb", 1, MAX_SIZE_MB),
    ):
        if not low <= value <= high:
            raise CvmfsError(f"{flag} {value}: not from {low} to {high}", hint="sizes are in MB")
    where = listen_at(listen, port)
    nets = [_network(c) for c in clients]
    if not nets:
        raise CvmfsError(
            "no --client network: the proxy would refuse everyone", hint="e.g. --client 10.0.0.0/8"
        )
    addresses, domains = _strata(stratum_hosts)
    deny = [*(["!cvmfs_strata"] if domains else []), *(["!cvmfs_strata_ip"] if addresses else [])]
    run = plain_path(run_dir.resolve(), "run directory", "squid")
    lines = [
        "# a site proxy for CernVM-FS clients (cernvm-build cvmfs squid-config)",
        f"# start: squid -N -f THIS_FILE{'   (once before: squid -z -f THIS_FILE)' if cache_mb else ''}",
        f"http_port {where}",
        f"pid_filename {run}/squid.pid",
        f"cache_log {run}/cache.log",
        f"access_log stdio:{run}/access.log",
        "cache_store_log none",
        "netdb_filename none",
        f"coredump_dir {run}",
        # one upstream request for simultaneous misses of the same object (a fleet booting at once)
        "collapsed_forwarding on",
        f"cache_mem {memory_mb} MB",
        "maximum_object_size_in_memory 32 MB",
        f"maximum_object_size {max_object_mb} MB",
        f"cache_dir ufs {run}/cache {cache_mb} 16 256" if cache_mb else "# memory cache only (no cache_dir)",
        "shutdown_lifetime 2 seconds",
        f"acl cvmfs_clients src {' '.join(nets)}",
        *([f"acl cvmfs_strata dstdomain {' '.join(domains)}"] if domains else []),
        *([f"acl cvmfs_strata_ip dst {' '.join(addresses)}"] if addresses else []),
        "http_access deny !cvmfs_clients",
        # squid ANDs the conditions of one line: refused when it is none of the servers
        *([f"http_access deny {' '.join(deny)}"] if deny else []),
        "http_access allow cvmfs_clients",
        "http_access deny all",
        "",
    ]
    return "\n".join(lines)
