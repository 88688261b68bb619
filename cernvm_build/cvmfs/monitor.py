"""Health of repositories and their replicas: ``cernvm-build cvmfs monitor``.

A probe fetches only the signed files (manifest, whitelist) and the certificate they name, and checks
the chain with the reader's own ``verify_signed_files``; no catalog is opened. What it reads becomes a
``Probe`` (revision, publish time, root hash, whitelist expiry) and the health rules become
``Problem``s, each naming what is wrong, where, and what to do. A replica is compared with its
Stratum-0 (revisions behind, seconds between their manifests). The ``MonitorReport`` is plain data:
``--json`` prints it and the site renders the status page from the same JSON (``site/data/monitor.json``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CvmfsError
from ..jsonable import to_json
from . import blacklist as blacklist_mod
from .blacklist import Blacklist, Revoked
from .fetch import Connections, Fetcher, HttpFetcher, make_fetcher
from .limits import MAX_MANIFEST_BYTES, MAX_WHITELIST_BYTES
from .repository import MANIFEST_FILE, WHITELIST_FILE, verify_signed_files
from .store import ObjectStore

#: a signed file (at most 1 MiB) must arrive within this many --timeouts, however slowly it trickles
DEADLINE_FACTOR = 3


@dataclass(frozen=True)
class Thresholds:
    """When a healthy-looking repository is still a problem (all in seconds)."""

    whitelist_warn: int = 7 * 86400  # the whitelist expires within this: re-sign soon
    max_age: int | None = None  # the manifest is older than this: nobody published (or re-signed)
    max_lag: int = 0  # a replica behind its Stratum-0 by more than this


@dataclass(frozen=True)
class Target:
    """One repository to probe: a Stratum URL (or local Stratum folder), the keys that verify it and,
    for a replica, the Stratum-0 it copies."""

    url: str
    keys: tuple[Path, ...]
    fqrn: str | None = None
    replica_of: str | None = None


@dataclass(frozen=True)
class Problem:
    #: unreachable | bad-signature | revoked | whitelist-expired | whitelist-expiring | stale | replica-lag…
    kind: str
    url: str
    message: str
    hint: str

    def line(self) -> str:
        return f"{self.url}: {self.message} (hint: {self.hint})"


@dataclass
class Probe:
    url: str
    fqrn: str
    role: str  # "stratum0" or "replica"
    revision: int | None = None
    published: str | None = None  # ISO time of the manifest (T)
    timestamp: int | None = None
    root_hash: str | None = None
    whitelist_expires: str | None = None
    replica_of: str | None = None
    lag_revisions: int | None = None
    lag_seconds: int | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        return "ok" if self.healthy else "unhealthy"


@dataclass
class MonitorReport:
    checked: str  # ISO time of the check
    thresholds: Thresholds
    probes: list[Probe]

    @property
    def problems(self) -> list[Problem]:
        return [p for probe in self.probes for p in probe.problems]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        d = to_json(self)
        for item, probe in zip(d["probes"], self.probes, strict=True):
            item["status"] = probe.status
        d["healthy"] = self.healthy
        d["problem_count"] = len(self.problems)
        return d


def iso(ts: float | dt.datetime) -> str:
    when = ts if isinstance(ts, dt.datetime) else dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _human(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds}s"


def fqrn_of(url: str) -> str | None:
    parts = url.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "cvmfs" and parts[-1]:
        return parts[-1]
    if not url.startswith(("http://", "https://")):
        from .repository import local_fqrn

        return local_fqrn(url)
    return None


def probe(
    target: Target,
    thresholds: Thresholds,
    now: dt.datetime,
    *,
    timeout: float,
    retries: int,
    connections: Connections | None = None,
    blacklist: Blacklist | None = None,
) -> Probe:
    """One repository's signed files, verified, and the health rules that do not need another probe.
    ``connections``: kept-alive connections shared with the other probes (many repositories live on
    one Stratum server: a new connection per repository cost more than the requests)."""
    name = target.fqrn or fqrn_of(target.url) or target.url
    result = Probe(
        url=target.url,
        fqrn=name,
        role="replica" if target.replica_of else "stratum0",
        replica_of=target.replica_of,
    )

    def problem(kind: str, message: str, hint: str) -> Probe:
        result.problems.append(Problem(kind, target.url, message, hint))
        return result

    if not target.keys:
        return problem(
            "no-key", f"{name}: no public key to verify it", "pass --key PATH or set 'key:' in the config"
        )
    try:
        if target.url.startswith(("http://", "https://")):
            fetcher: Fetcher = HttpFetcher(
                [target.url],
                repo=name,
                timeout=timeout,
                retries=retries,
                connections=connections,
                deadline=DEADLINE_FACTOR * timeout,
            )
        else:
            fetcher = make_fetcher(target.url, repo=name, timeout=timeout, retries=retries)
    except CvmfsError as e:
        return problem("unreachable", str(e), e.hint or "check the URL")
    store = ObjectStore(fetcher, None, repo=name)
    try:
        try:
            mbytes = fetcher.get(MANIFEST_FILE, what="manifest", limit=MAX_MANIFEST_BYTES)
            wbytes = fetcher.get(WHITELIST_FILE, what="whitelist", limit=MAX_WHITELIST_BYTES)
        except CvmfsError as e:
            return problem("unreachable", str(e), "is the server up and the URL right (…/cvmfs/<fqrn>)?")
        try:
            m, w = verify_signed_files(
                name, mbytes, wbytes, store, target.keys, check_expiry=False, blacklist=blacklist
            )
        except Revoked as e:
            return problem("revoked", str(e), e.hint or "do not use this revision")
        except CvmfsError as e:
            return problem("bad-signature", str(e), e.hint or "do not use this server until it is fixed")
    finally:
        store.close()
    result.revision = m.revision
    result.timestamp = m.timestamp
    result.published = iso(m.timestamp)
    result.root_hash = m.root_hash
    result.whitelist_expires = iso(w.expiry_checked)
    left = int((w.expiry_checked - now).total_seconds())
    if left <= 0:
        problem(
            "whitelist-expired",
            f"{name}: whitelist expired on {iso(w.expiry_checked)}: clients refuse the repository",
            "the owner must re-sign it now: cernvm-build cvmfs resign STRATUM --keys DIR",
        )
    elif left <= thresholds.whitelist_warn:
        problem(
            "whitelist-expiring",
            f"{name}: whitelist expires on {iso(w.expiry_checked)}, in {_human(left)}",
            "re-sign it before then: cernvm-build cvmfs resign STRATUM --keys DIR",
        )
    age = int(now.timestamp()) - m.timestamp
    if thresholds.max_age is not None and age > thresholds.max_age:
        problem(
            "stale",
            f"{name}: revision {m.revision} was published {_human(age)} ago ({result.published}), "
            f"more than --max-age {_human(thresholds.max_age)}",
            "is the publisher (or its cron job) running?",
        )
    return result


def _compare(replica: Probe, origin: Probe, thresholds: Thresholds) -> None:
    def problem(kind: str, message: str, hint: str) -> None:
        replica.problems.append(Problem(kind, replica.url, message, hint))

    if origin.revision is None or origin.timestamp is None:
        problem(
            "stratum0-unknown",
            f"{replica.fqrn}: its Stratum-0 {origin.url} could not be read, so the lag is unknown",
            "see the Stratum-0's own problem",
        )
        return
    if replica.revision is None or replica.timestamp is None:
        return  # the replica's own problem says why
    if replica.fqrn != origin.fqrn:
        problem(
            "wrong-origin",
            f"replica of {replica.fqrn!r} is compared with a Stratum-0 of {origin.fqrn!r}",
            "pair each replica with the Stratum-0 of the same repository",
        )
        return
    replica.lag_revisions = origin.revision - replica.revision
    replica.lag_seconds = max(0, origin.timestamp - replica.timestamp)
    if replica.lag_revisions < 0:
        problem(
            "replica-ahead",
            f"{replica.fqrn}: the replica has revision {replica.revision}, newer than the Stratum-0's "
            f"{origin.revision} at {origin.url}",
            "a Stratum-0 rolled back or re-created? check which one is right",
        )
    elif replica.lag_revisions > 0 and replica.lag_seconds > thresholds.max_lag:
        problem(
            "replica-lag",
            f"{replica.fqrn}: replica at revision {replica.revision} ({replica.published}) lags "
            f"{replica.lag_revisions} revision(s), {_human(replica.lag_seconds)}, behind the Stratum-0's "
            f"{origin.revision} ({origin.published})",
            "run the replication (cernvm-build cvmfs replicate) and check its cron job",
        )


def monitor(
    targets: Sequence[Target],
    *,
    thresholds: Thresholds = Thresholds(),
    now: dt.datetime | None = None,
    jobs: int = 8,
    timeout: float = 10,
    retries: int = 1,
    blacklist: Blacklist | None = None,
) -> MonitorReport:
    """Probe every target (a Stratum-0 named only as a replica's origin too, once) in a thread pool,
    then compare each replica with its Stratum-0. ``now`` is an input (tests pass one).
    ``blacklist``: revoked certificates and revision floors (None: the system's, read once here)."""
    now = now or dt.datetime.now(dt.UTC)
    revoked = blacklist if blacklist is not None else blacklist_mod.resolve()
    listed = {t.url for t in targets}
    extra: dict[str, Target] = {}
    for t in targets:
        if t.replica_of and t.replica_of not in listed and t.replica_of not in extra:
            extra[t.replica_of] = Target(t.replica_of, t.keys, t.fqrn)
    todo = [*targets, *extra.values()]
    shared = Connections()
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(todo)))) as pool:
        probes = list(
            pool.map(
                lambda t: probe(
                    t,
                    thresholds,
                    now,
                    timeout=timeout,
                    retries=retries,
                    connections=shared,
                    blacklist=revoked,
                ),
                todo,
            )
        )
    for conns in shared.idle.values():
        for conn in conns:
            conn.close()
    by_url = {p.url: p for p in probes}
    for p in probes:
        if p.replica_of:
            _compare(p, by_url[p.replica_of], thresholds)
    return MonitorReport(checked=iso(now), thresholds=thresholds, probes=probes)
