"""Registries, both ways, through the real ``skopeo``: push an image (signed with gpg, skopeo's
"simple signing", when asked) and pull one into an OCI layout for the hub to ingest.

Signatures live beside the registry (skopeo's lookaside store, configured in a ``registries.d``
folder), where ``skopeo``/``podman`` verify them against a ``policy.json``. Errors are one line
naming the image and what skopeo said; nothing is left half-written (a pull goes to a scratch
folder first).

skopeo follows a registry's redirects itself (Go's client: up to 10, anywhere), also into loopback and
link-local addresses, which ``httpredirect`` refuses for our own downloads. Not closed here: skopeo
1.9 has no option for it; a pre-flight of ours would see the manifest's answers, not the blobs'
(registries send those to CDNs, and a hostile one can answer skopeo otherwise); and an
``HTTPS_PROXY`` of ours that refused such hops would never see one to a literal loopback address
(Go's client does not proxy those). What skopeo fetches is only written to the scratch layout and
checked (digests, ``Quota``) before anything is ingested: the exposure is the request to such an
address; its answer fails the blob's digest (unless the registry knew it already) and the scratch
layout is removed (lf34a).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import dataload
from ..cvmfs.fetch import LOW_SPEED
from ..errors import BuildError, Location, utf8_text
from ..fsutil import TooLarge, atomic_dir, read_capped
from .manifest_list import MAX_RAW

_TIMEOUT = 1800
#: ``inspect`` and ``list-tags`` ask for a manifest or a tag list, small answers: a registry trickling
#: its manifest one byte a second held them for ``_TIMEOUT`` (30 minutes) a reference (mm18c). skopeo's
#: ``--command-timeout`` ends them with its message; our deadline, a little later, is the backstop.
#: The default of ``RegistryOptions.query_timeout`` (``hub ingest --registry-timeout``): skopeo reads a
#: tag list's pages in one command, and a registry paging a very large one slowly may need more.
QUERY_TIMEOUT = 120
#: the flag that sets ``query_timeout``, named by the error when a query runs out of it
QUERY_TIMEOUT_FLAG = "--registry-timeout"
#: skopeo holds what a registry answers: a tag list whose next page is itself grew it by 20 MB/s
#: (Go's runtime cannot run under RLIMIT_AS, so its size is watched); a copy of a large image stays
#: under 200 MB, as it streams the blobs
MAX_SKOPEO_RSS = 1 << 30
_POLL = 0.5
#: a pull whose layout grew by less than ``LOW_SPEED`` bytes/s (the CernVM-FS fetcher's rule) over this
#: many seconds is given up: a registry stalling on one layer held a pull for ``_TIMEOUT`` (30 min)
LOW_SPEED_TIME = 60


@dataclass(frozen=True)
class RegistryOptions:
    tls_verify: bool = True
    #: skopeo's registries.d folder (where signatures are written and looked up)
    registries_d: Path | None = None
    #: a policy.json that pulls are checked against (signatures); None: skopeo's default
    policy: Path | None = None
    #: seconds an ``inspect`` or a whole ``list-tags`` (every page) may take
    query_timeout: int = QUERY_TIMEOUT


#: the most of a policy.json or a registries.d file read (real ones are a few KB)
MAX_CONFIG = 1 << 20
#: the most ``*.yaml`` files of a registries.d folder checked
MAX_CONFIG_FILES = 1000
_POLICY_HINT = "a containers-policy.json(5): a JSON object with a 'default' list of requirements"
_REGISTRIES_HINT = "a folder of containers-registries.d(5) YAML files (docker: lookaside: ...)"


def check_policy(path: Path) -> None:
    """``path`` is a policy skopeo can read (a JSON object with ``default``), else one ``BuildError``
    at its file:line:column: checked when the flag is read, before any registry is asked (skopeo's
    own complaint came after the pull, and named no line)."""
    text = _config_text(path, _POLICY_HINT)
    try:
        doc = dataload.load(json.loads, text)
    except json.JSONDecodeError as e:
        raise BuildError(f"not JSON: {e.msg}", where=Location(file=str(path), line=e.lineno, column=e.colno),
                         hint=_POLICY_HINT) from None  # fmt: skip
    except dataload.TooComplex as e:
        raise BuildError(e.message, where=Location(file=str(path)), hint=e.hint) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("default"), list):
        raise BuildError("no 'default' list of requirements", where=Location(file=str(path), line=1),
                         hint=_POLICY_HINT)  # fmt: skip


def check_registries_d(path: Path) -> None:
    """``path`` is a folder whose ``*.yaml`` files (what skopeo reads there) are YAML mappings, else
    one ``BuildError`` at the file:line:column."""
    import yaml

    from ..yamlerror import describe

    if not path.is_dir():
        raise BuildError(f"{path}: not a folder", hint=_REGISTRIES_HINT)
    try:
        names = sorted(n.name for n in path.iterdir() if n.name.endswith(".yaml"))
    except OSError as e:  # a folder this user may not list: a PermissionError traceback from argparse
        raise BuildError(
            f"{path}: cannot list the folder: {e.strerror or e}", hint=_REGISTRIES_HINT
        ) from None
    if len(names) > MAX_CONFIG_FILES:
        raise BuildError(f"{path}: more than {MAX_CONFIG_FILES} .yaml files", hint=_REGISTRIES_HINT)
    for name in names:
        text = _config_text(path / name, _REGISTRIES_HINT)
        try:
            doc = dataload.load(yaml.safe_load, text)
        except yaml.YAMLError as e:
            problem = describe(e)
            raise BuildError(problem.what, where=problem.location(str(path / name)),
                             hint=_REGISTRIES_HINT) from None  # fmt: skip
        except dataload.TooComplex as e:
            raise BuildError(e.message, where=Location(file=str(path / name)), hint=e.hint) from None
        if doc is not None and not isinstance(doc, dict):
            raise BuildError("not a mapping of settings", where=Location(file=str(path / name), line=1),
                             hint=_REGISTRIES_HINT)  # fmt: skip


def _config_text(path: Path, hint: str) -> str:
    try:
        data = read_capped(path, MAX_CONFIG)
    except OSError as e:
        raise BuildError(f"{path}: {e.strerror or e}", hint=hint) from None
    return utf8_text(data, str(path), hint)


@dataclass(frozen=True)
class Quota:
    """The most bytes skopeo may write under ``folder`` (a pull's scratch layout), and the least it
    must write per second (``LOW_SPEED`` over ``LOW_SPEED_TIME``); ``layers``: the digests the
    manifests declare, those not in the layout named when the pull stalls."""

    folder: Path
    max_bytes: int
    layers: tuple[str, ...] = ()


def _skopeo(args: list[str], what: str, timeout: int | None = None, quota: Quota | None = None) -> bytes:
    """skopeo's output as it wrote it (``inspect --raw``: the registry's bytes, which its digest
    is of; text mode turned a CR LF into LF). ``timeout``: seconds skopeo is given (its
    ``--command-timeout``), else ``_TIMEOUT``. ``quota``: skopeo is stopped once it wrote more."""
    if shutil.which("skopeo") is None:
        raise BuildError(f"{what}: needs skopeo", hint="apt-get install skopeo")
    limit = _TIMEOUT
    if timeout is not None:
        args = ["--command-timeout", f"{timeout}s", *args]
        limit = timeout + 10  # skopeo's own end first, with its message
    with subprocess.Popen(["skopeo", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        window = time.monotonic()
        deadline = window + limit
        window_written = 0
        while True:
            try:
                out, err = proc.communicate(timeout=_POLL)
                break
            except subprocess.TimeoutExpired:
                rss = _rss(proc.pid)
                written = _bytes_under(quota.folder) if quota is not None else 0
                now = time.monotonic()
                if quota is not None and now - window >= LOW_SPEED_TIME:
                    if written - window_written < LOW_SPEED * (now - window):
                        proc.kill()
                        proc.communicate()
                        raise _stalled(what, quota, now - window) from None
                    window, window_written = now, written
                if quota is not None and written > quota.max_bytes:
                    proc.kill()
                    proc.communicate()
                    raise BuildError(
                        f"{what}: the registry sent more than the {quota.max_bytes} bytes its manifest"
                        f" declares ({written} written), stopped",
                        hint="the registry is damaged or hostile: a blob larger than the manifest says",
                    ) from None
                if rss <= MAX_SKOPEO_RSS and time.monotonic() < deadline:
                    continue
                proc.kill()
                proc.communicate()
                if rss > MAX_SKOPEO_RSS:
                    raise BuildError(
                        f"{what}: skopeo took {rss >> 20} MiB (at most {MAX_SKOPEO_RSS >> 20} MiB), stopped",
                        hint="the registry's answers do not end (a tag list whose next page is itself?)",
                    ) from None
                raise BuildError(
                    f"{what}: skopeo gave no answer in {limit} s", hint=_slow_hint(timeout)
                ) from None
    if proc.returncode != 0:
        message = skopeo_message(err.decode(errors="replace"))
        if timeout is not None and message.endswith("context deadline exceeded"):
            raise BuildError(
                f"{what}: no whole answer from the registry in {timeout} s ({message})",
                hint=_slow_hint(timeout),
            )
        hint = "check the image name, the registry and its TLS (--no-tls-verify)"
        if "exceeded maximum allowed size" in message:
            # skopeo's words for a manifest over its 4 MiB begin "Error parsing image name": the name
            # was fine, the registry's answer was not
            hint = "the registry answered more than skopeo accepts (a manifest: 4 MiB): damaged or hostile"
        raise BuildError(f"{what}: {message}", hint=hint)
    return out


def _stalled(what: str, quota: Quota, seconds: float) -> BuildError:
    blobs = quota.folder / "blobs" / "sha256"
    missing = [d for d in quota.layers if not (blobs / d.removeprefix("sha256:")).is_file()]
    layers = f"layer {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} not complete, "
    return BuildError(
        f"{what}: the registry sent less than {LOW_SPEED} bytes/s for {seconds:.0f} s "
        f"({layers if missing else ''}{_bytes_under(quota.folder)} bytes by then), stopped",
        hint="is the registry overloaded, or hostile? Try again later",
    )


def _bytes_under(folder: Path) -> int:
    """The bytes of the files under ``folder`` (0 for what vanished while it was walked)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _slow_hint(timeout: int | None) -> str:
    if timeout is None:
        return "is the registry reachable?"
    return (
        "is the registry reachable, and answering at a usable speed? A very large tag list read "
        f"slowly may need more time: {QUERY_TIMEOUT_FLAG} SECONDS (now {timeout})"
    )


def _rss(pid: int) -> int:
    """The resident bytes of process ``pid`` (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    kb = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0")
    return int(kb) << 10


def skopeo_message(stderr: str) -> str:
    """skopeo's last line; its logger writes ``time="…" level=fatal msg="…"`` with the message
    quoted as Go does (``\\"`` and ``\\\\``): shown as skopeo meant it."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()] or ["no message"]
    head, sep, msg = lines[-1].partition('msg="')
    if not sep:
        return head
    return re.sub(r'\\(["\\])', r"\1", msg.removesuffix('"'))


def _common(opts: RegistryOptions) -> list[str]:
    out = []
    if opts.registries_d is not None:
        out += ["--registries.d", str(opts.registries_d)]
    return out


def _docker(ref: str) -> str:
    return ref if ref.startswith("docker://") else f"docker://{ref}"


def _tls(opts: RegistryOptions, side: str = "") -> str:
    """skopeo's TLS option; ``side``: "src-" or "dest-" for a copy."""
    return f"--{side}tls-verify={str(opts.tls_verify).lower()}"


_LAYOUT_HINT = "push NAME.oci/ as built by 'container', or give the tag: --tag TAG"


def oci_source(image: Path, tag: str | None = None) -> str:
    """The skopeo name of an OCI layout (its first tag when none is given)."""
    if not (image / "oci-layout").is_file():
        raise BuildError(
            f"{image}: not an OCI layout (no oci-layout)", hint="push NAME.oci/ as built by 'container'"
        )
    if tag is None:
        try:
            data = read_capped(image / "index.json", MAX_RAW)  # a FIFO is refused, not waited on
            index = dataload.load(json.loads, data)  # the one hostile-JSON loader: depth, digits
            names = [
                m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in index["manifests"]
            ]
        except TooLarge as e:
            raise BuildError(
                f"{image}/index.json is {e.strerror}: not an OCI index", hint=_LAYOUT_HINT
            ) from None
        except OSError as e:
            raise BuildError(f"{image}/index.json cannot be read: {e.strerror}", hint=_LAYOUT_HINT) from None
        except dataload.TooComplex as e:
            raise BuildError(
                f"{image}/index.json is not an OCI index: {e.message}", hint=_LAYOUT_HINT
            ) from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            what = f"no {e}" if isinstance(e, KeyError) else str(e)
            raise BuildError(
                f"{image}/index.json is not an OCI index: {what}"[:300], hint=_LAYOUT_HINT
            ) from None
        tag = next((n for n in names if n), None)
        if tag is None:
            raise BuildError(f"{image}: the layout names no image", hint="give the tag: IMAGE:TAG")
    return _oci_name(image, tag, "rename the folder, or push it through a link whose path holds no ':'")


def _oci_name(layout: Path, tag: str, hint: str) -> str:
    """skopeo's name of the OCI layout ``layout``: its path ends at the first ':', so 'oci:a:b.oci:t'
    was the layout ``a`` (another image pushed, or a pull written beside the scratch; pr21 N8)."""
    if ":" in str(layout):
        raise BuildError(f"{layout}: skopeo cannot name a folder whose path holds ':'", hint=hint)
    return f"oci:{layout}:{tag}"


def push(
    image: Path, dest: str, *, tag: str | None = None, sign_by: str | None = None, opts: RegistryOptions
) -> str:
    """Copy the OCI layout ``image`` to ``dest`` (``host[:port]/repo:tag``); returns the manifest
    digest the registry holds. ``sign_by``: a gpg key id or fingerprint (``GNUPGHOME`` applies)."""
    from .ingest import Wish  # (ingest imports this module)

    # skopeo reads 'cernvm/el9:1' as docker.io/cernvm/el9:1: a push meant for a site's registry went
    # to Docker Hub (pr21 N14). The destination names its registry, as an ingested image does.
    wish = Wish.parse(dest)
    if any(c in wish.tag for c in "*?["):
        raise BuildError(
            f"{dest!r:.200}: a push names one tag, not a pattern", hint="e.g. reg.example/cernvm/el9:1"
        )
    target = _docker(dest)
    # skopeo's digest file in a scratch folder of its own: beside the image, a push from a read-only
    # folder failed after the copy, and two pushes of one image shared the file
    with tempfile.TemporaryDirectory(prefix="cernvm-push-") as scratch:
        digest_file = Path(scratch) / "digest"
        args = ["copy", "--quiet", *_common(opts), _tls(opts, "dest-")]
        args += ["--digestfile", str(digest_file)]
        if sign_by:
            args += ["--sign-by", sign_by]
        _skopeo([*args, oci_source(image, tag), target], f"push {image} to {dest}")
        return digest_file.read_text().strip()


def pull(
    ref: str,
    dest: Path,
    *,
    opts: RegistryOptions,
    all_platforms: bool = False,
    max_bytes: int | None = None,
    layers: tuple[str, ...] = (),
) -> Path:
    """Copy ``ref`` (``host[:port]/repo:tag``) into the OCI layout ``dest`` (tagged ``latest``),
    checked against ``opts.policy`` when given; ``all_platforms``: a manifest list with every
    image it lists (else skopeo picks this machine's). ``max_bytes``: what the manifests declare
    (skopeo checks a blob's digest only at its end: a 102-byte layer whose body never ended wrote
    1 GiB, and would have gone on until the disk was full or 30 minutes had passed), and the pull is
    given up when it writes less than ``LOW_SPEED`` a second; ``layers``: the layers' digests the
    manifests declare (the stalled ones are named)."""
    source = _docker(ref)
    # the policy checks the signatures on the way; an OCI layout cannot keep them
    args = [
        "copy",
        "--quiet",
        "--remove-signatures",
        *_common(opts),
        _tls(opts, "src-"),
    ]
    if opts.policy is not None:
        args += ["--policy", str(opts.policy)]
    if all_platforms:
        args += ["--all"]
    with atomic_dir(dest) as tmp:
        into = _oci_name(tmp, "latest", "point TMPDIR at a folder whose path holds no ':'")
        quota = Quota(tmp, max_bytes, layers) if max_bytes is not None else None
        _skopeo([*args, source, into], f"pull {ref}", quota=quota)
    return dest


def inspect_raw(ref: str, *, opts: RegistryOptions) -> bytes:
    """The registry's manifest of ``ref`` (an image's, or a manifest list) as it sent it: its
    digest names the same manifest (``ingest`` pulls by it)."""
    args = ["inspect", "--raw", *_common(opts), _tls(opts)]
    return _skopeo([*args, _docker(ref)], f"inspect {ref}", opts.query_timeout)


def list_tags(repository: str, *, opts: RegistryOptions) -> list[str]:
    """The tags of ``host[:port]/repo`` in the registry."""
    args = ["list-tags", *_common(opts), _tls(opts)]
    out = _skopeo([*args, _docker(repository)], f"list the tags of {repository}", opts.query_timeout)
    tags: list[str] = json.loads(out).get("Tags") or []
    return sorted(tags)
