"""The CernVM-FS client parameters (``CVMFS_*`` in ``/etc/cvmfs/*.local``) and where this toolkit
understands each one: the reader's option that does the same job, the μCernVM user-data key that sets it.

The site's client-parameter reference is generated from this table; a test checks that every reader
option named here exists in the ``cernvm-build cvmfs`` parser and every user-data key in the
bootloader's table, so the reference cannot promise an option that is gone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClientParam:
    name: str
    meaning: str
    default: str = ""
    reader: str = ""  # option of the `cernvm-build cvmfs` reader commands that does the same
    userdata: str = ""  # μCernVM user-data key that sets it in an appliance
    group: str = "network"


PARAMS: tuple[ClientParam, ...] = (
    ClientParam(
        "CVMFS_REPOSITORIES", "repositories autofs may mount (comma-separated names)", group="mounting"
    ),
    ClientParam(
        "CVMFS_STRICT_MOUNT",
        "`yes`: refuse to mount repositories not in CVMFS_REPOSITORIES",
        "no",
        group="mounting",
    ),
    ClientParam(
        "CVMFS_SERVER_URL",
        "Stratum 1 URLs, `;`-separated, tried in order; `@fqrn@` stands for the repository name",
        reader="--server",
        userdata="cvmfs_server",
    ),
    ClientParam(
        "CVMFS_HTTP_PROXY",
        "proxy chain: `|` load-balances within a group, `;` fails over between groups; "
        "`DIRECT` for none, `auto` for WPAD",
        reader="--proxy",
        userdata="cvmfs_http_proxy",
    ),
    ClientParam("CVMFS_FALLBACK_PROXY", "proxies tried only after every CVMFS_HTTP_PROXY group failed"),
    ClientParam(
        "CVMFS_PAC_URLS", "where to look for a proxy auto-configuration file when the chain says `auto`"
    ),
    ClientParam("CVMFS_USE_GEOAPI", "`yes`: let a Stratum 1 order CVMFS_SERVER_URL by distance", "no"),
    ClientParam(
        "CVMFS_CLIENT_PROFILE", "`single`: a laptop or one machine without a site proxy (use DIRECT)"
    ),
    ClientParam("CVMFS_TIMEOUT", "seconds to wait for a proxied connection", "5", reader="--timeout"),
    ClientParam("CVMFS_TIMEOUT_DIRECT", "seconds to wait for a direct connection", "10", reader="--timeout"),
    ClientParam("CVMFS_MAX_RETRIES", "retries of a failed download per host", "1", reader="--retries"),
    ClientParam(
        "CVMFS_CACHE_BASE", "folder of the local cache", "/var/lib/cvmfs", reader="--cache", group="cache"
    ),
    ClientParam(
        "CVMFS_QUOTA_LIMIT", "cache size in MB; `-1` for no limit (alien caches)", "4000", group="cache"
    ),
    ClientParam(
        "CVMFS_SHARED_CACHE", "`yes`: one cache and quota for all repositories", "yes", group="cache"
    ),
    ClientParam(
        "CVMFS_ALIEN_CACHE",
        "a cache folder the client fills but never cleans (shared storage)",
        group="cache",
    ),
    ClientParam("CVMFS_CACHE_PRIMARY", "the named cache instance to use (tiered, RAM, ...)", group="cache"),
    ClientParam("CVMFS_MEMCACHE_SIZE", "MB of RAM for metadata caches", "16", group="cache"),
    ClientParam(
        "CVMFS_KEYS_DIR",
        "folder of the repositories' public master keys (`<name>.pub`)",
        "/etc/cvmfs/keys/<domain>",
        reader="--key",
        group="signatures",
    ),
    ClientParam(
        "CVMFS_PUBLIC_KEY", "explicit public key file(s), `:`-separated", reader="--key", group="signatures"
    ),
    ClientParam(
        "CVMFS_BLACKLIST",
        "certificate blacklist: fingerprints of revoked signing certificates (`AB:CD:…`), "
        "`<REPOSITORY N` lines that refuse revisions below N",
        "/etc/cvmfs/blacklist",
        reader="--blacklist",
        userdata="cvmfs_blacklist",
        group="signatures",
    ),
    ClientParam(
        "CVMFS_REPOSITORY_TAG",
        "mount this named snapshot instead of the newest revision",
        reader="--tag",
        userdata="cvmfs_tag",
        group="snapshots",
    ),
    ClientParam(
        "CVMFS_REPOSITORY_DATE",
        "mount the newest revision at or before this UTC time (`YYYY-MM-DDTHH:MM:SSZ`)",
        reader="--date",
        userdata="cvmfs_date",
        group="snapshots",
    ),
    ClientParam(
        "CVMFS_MAX_TTL", "minutes after which a new revision is looked for at the latest", group="snapshots"
    ),
    ClientParam(
        "CVMFS_AUTO_UPDATE", "`no`: stay on the mounted revision until a remount", "yes", group="snapshots"
    ),
    ClientParam("CVMFS_NFILES", "open file descriptors the client may use", "131072", group="tuning"),
    ClientParam("CVMFS_DEBUGLOG", "file for a (very verbose) debug log; unset when done", group="debugging"),
    ClientParam(
        "CVMFS_SYSLOG_LEVEL", "how much goes to syslog: 1 debug, 2 info, 3 notice", "3", group="debugging"
    ),
)

GROUPS = ("mounting", "network", "cache", "signatures", "snapshots", "tuning", "debugging")
