"""Planning a sync: what is here (hashed via the cache), what is there (LIST + the sync manifest +
HEAD for the few objects the manifest cannot vouch for), and what must change.

Each object we write carries its SHA-256 in ``x-amz-meta-sha256``. An ETag is never read as an MD5
(multipart uploads, SSE and some servers break that); it is only an opaque "this object has not
changed" token. The manifest (``.cernvm-sync.json`` under the prefix) caches key → (ETag, size,
SHA-256) from the last sync, so a re-sync costs one LIST plus one GET: an object whose listed ETag and
size still match the manifest has the recorded hash; any other object of the same size as the local
file is asked (HEAD) for its stored hash. So same-size edits are found, and unchanged files cost nothing.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import stat
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import botocore.exceptions

from ..errors import MirrorError
from ..numtext import decimal
from ..report import ProgressFn
from .hashcache import HashCache
from .s3client import META_SHA256, S3Client, S3Url, error_code, http_status, s3_error

MANIFEST = ".cernvm-sync.json"
PROBE_PREFIX = ".cernvm-sync-probe-"

#: ``progress(stage, done, total)``; stages: "hash" and "upload" in bytes, "check" and "delete" in objects.
Progress = ProgressFn  # see report.Reporter.progress


@dataclass(frozen=True)
class LocalFile:
    rel: str
    path: Path
    size: int
    sha256: str
    sig: tuple[int, ...] = ()  # the file's identity when it was hashed (see hashcache)


@dataclass(frozen=True)
class RemoteObject:
    rel: str
    size: int
    etag: str
    sha256: str | None = None


@dataclass(frozen=True)
class Action:
    op: str  # "create" | "update" | "delete"
    rel: str
    size: int
    reason: str
    last: bool = False
    etag: str | None = None  # the ETag the plan saw (for If-Match)


def matches(rel: str, pattern: str) -> bool:
    """A pattern with a slash matches the whole key; without one, the file name (``repomd.xml``)."""
    target = rel if "/" in pattern else rel.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(target, pattern)


def last_rank(rel: str, last: Sequence[str]) -> int | None:
    for i, pattern in enumerate(last):
        if matches(rel, pattern):
            return i
    return None


#: Folders walked plus files listed before walk_files gives up: links that form no loop can still
#: fan out (``d0/{a,b} -> ../d1``, ``d1/{a,b} -> ../d2``...: 2^N paths from 2N links, an endless walk
#: and 2^N keys to upload), while links must stay allowed (``dists/stable -> bookworm`` is listed
#: under both names). The largest real mirrors hold a few hundred thousand files.
MAX_LISTED = 2_000_000
#: pages of a remote listing with no object in them (a real one has at most a few, with delimiters)
MAX_EMPTY_PAGES = 1000


def walk_files(root: Path, *, limit: int = MAX_LISTED) -> Iterator[tuple[str, Path]]:
    """Every regular file under ``root``: its ``/``-separated relative path and its path, folders in
    sorted order. Links inside the tree are followed (a suite like dists/stable -> bookworm is listed
    under both names). A link to a folder that holds it is passed over (the tree would be endless;
    archive.ubuntu.com has ``ubuntu -> .``, which ``rsync -a`` keeps). A link that leaves the tree is
    refused: a tree copied with its links from a hostile upstream would otherwise publish whatever
    the link names on this machine (``Packages/x.rpm -> ~/.aws/credentials``). FIFOs, sockets and
    devices are passed over (not files of a repository; reading a FIFO would wait forever). More
    than ``limit`` folders and files together is one MirrorError (``MAX_LISTED``): links that form
    no loop can still fan out (2^N paths from 2N links).

    Each real folder (by device and inode) is read once, whatever names reach it, and its entries
    are checked there: a name reached again costs only its path's string. Walking every name through
    the links (os.walk, realpath of each deep path) cost ~180 us per entry, and a link farm took
    15-20 CPU minutes to reach the cap."""
    top = os.path.realpath(root)
    base = str(root)
    listings: dict[tuple[int, int], _Listing] = {}
    st = os.stat(top)
    # depth-first, in sorted order: (real folder, its relative path + "/", its id, depth)
    stack: list[tuple[str, str, tuple[int, int], int]] = [(top, "", (st.st_dev, st.st_ino), 0)]
    chain: list[tuple[int, int]] = []  # the ids of the folders from the top to the current one
    listed = 0
    while stack:
        real, rel, key, depth = stack.pop()
        del chain[depth:]
        chain.append(key)
        listing = listings.get(key)
        if listing is None:
            listing = listings[key] = _list_folder(root, top, real, rel)
        dirs, files = listing
        listed += 1 + len(files)
        if listed > limit:
            raise MirrorError(
                f"{root}: more than {limit} folders and files (links fanning out into the same folders?)",
                hint="a repository names each folder by a few links at most; remove the extra links",
            )
        for name in files:
            yield rel + name, Path(f"{base}/{rel}{name}")
        for name, sub_real, sub_key in reversed(dirs):
            # a link to a folder that holds it (``ubuntu -> .`` on archive.ubuntu.com, kept by
            # ``rsync -a``) would make the tree endless: passed over, its folder is listed already
            if sub_key not in chain:
                stack.append((sub_real, f"{rel}{name}/", sub_key, depth + 1))


#: a real folder's sub-folders (name, real path, (device, inode)) and regular files, sorted by name
_Listing = tuple[list[tuple[str, str, tuple[int, int]]], list[str]]


def _list_folder(root: Path, top: str, real: str, rel: str) -> _Listing:
    """The entries of the real folder ``real`` (reached as ``rel`` under ``root``, whose real path
    is ``top``), links followed; MirrorError for a link leading out of the tree."""
    dirs: list[tuple[str, str, tuple[int, int]]] = []
    files: list[str] = []
    with os.scandir(real) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)  # one link: its folder is real already
                    if target != top and not target.startswith(top.rstrip("/") + "/"):
                        raise MirrorError(
                            f"{root}: '{rel}{entry.name}' is a link to {target}, outside the folder",
                            hint="links may only point inside the source folder; copy the file in or remove"
                            " the link",
                        )
                    st = os.stat(target)
                    path = target
                else:
                    st = entry.stat(follow_symlinks=False)
                    path = entry.path
            except OSError as e:
                if e.errno in _GONE:  # a broken link, or removed meanwhile
                    continue
                raise
            if stat.S_ISDIR(st.st_mode):
                dirs.append((entry.name, path, (st.st_dev, st.st_ino)))
            elif stat.S_ISREG(st.st_mode):
                files.append(entry.name)
    return dirs, files


#: what pathlib's is_file() takes as "no file here" rather than an error
_GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF})


def check_key_name(root: Path, rel: str) -> None:
    """MirrorError unless ``rel`` (a file under ``root``) can be an object key: UTF-8."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise MirrorError(
            f"{root}: '{shown}' is not a UTF-8 name, which an object key must be",
            hint="rename the file (or remove it from the source folder)",
        ) from None


#: the longest object key S3 (AWS, Ceph RGW) takes, in UTF-8 bytes
MAX_KEY_BYTES = 1024


def check_key_lengths(url: S3Url, rels: Iterable[str]) -> None:
    """MirrorError if a file's key under ``url`` is longer than S3 allows: found before anything is
    written, not by the server partway through a sync (moto takes such keys; AWS and RGW do not)."""
    for rel in rels:
        n = len(url.key(rel).encode("utf-8"))
        if n > MAX_KEY_BYTES:
            raise MirrorError(
                f"{url}: the key of '{rel[:80]}…' would be {n} bytes; S3 takes at most {MAX_KEY_BYTES}",
                hint="shorten the file's path or the destination prefix",
            )


def scan_local(
    root: Path,
    *,
    jobs: int = 4,
    progress: Progress | None = None,
    cache: HashCache | None = None,
    exclude: Sequence[str] = (),
) -> dict[str, LocalFile]:
    """Every regular file under ``root`` by its ``/``-separated relative path, with its SHA-256.

    ``cache`` remembers hashes by file identity (a verified source was just hashed; an unchanged tree
    was hashed by the last run). Uploads check the identity again, so a file that changes after it
    was hashed is never sent under a stale hash. ``exclude``: patterns (as ``last``'s) of files that
    are not part of the publication (a CernVM-FS spool's ``data/txn/`` working state).
    """
    hasher = cache or HashCache()
    if not root.is_dir():
        raise MirrorError(f"{root}: not a directory", hint="give the folder to publish")
    paths: list[tuple[str, Path, int]] = []
    for rel, p in walk_files(root):
        if any(matches(rel, pattern) for pattern in exclude):
            continue
        check_key_name(root, rel)
        if rel == MANIFEST or rel.startswith(PROBE_PREFIX):
            raise MirrorError(f"{p}: this name is reserved for the sync manifest", hint="rename it")
        paths.append((rel, p, p.stat().st_size))
    total = sum(s for _, _, s in paths)
    done = 0
    lock = threading.Lock()

    def one(item: tuple[str, Path, int]) -> LocalFile:
        nonlocal done
        rel, p, size = item
        digest, _, sig = hasher.digest(p)
        if progress:
            with lock:
                done += size
                progress("hash", done, total)
        return LocalFile(rel, p, size, digest, sig)

    # Remembered hashes cost a stat; only the files that must be read go to the thread pool.
    files: list[LocalFile] = []
    todo: list[tuple[str, Path, int]] = []
    for rel, p, size in paths:
        hit = hasher.remembered(p)
        if hit is None:
            todo.append((rel, p, size))
        else:
            files.append(LocalFile(rel, p, size, hit[0], hit[2]))
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            files.extend(pool.map(one, todo))
    return {f.rel: f for f in sorted(files, key=lambda f: f.rel)}


def list_remote(client: S3Client, url: S3Url) -> dict[str, RemoteObject]:
    """Every object under the prefix (key, size, ETag).

    botocore turns each listed object into a dict and parses its LastModified with dateutil, which
    costs more than the request itself for big listings. We read Key/Size/ETag from the XML with
    ElementTree before botocore parses it and hand botocore the page without its <Contents>.
    """
    out: dict[str, RemoteObject] = {}
    me = threading.get_ident()
    empty_pages = 0

    def grab(response_dict: dict[str, Any], **_: Any) -> None:
        nonlocal empty_pages
        if threading.get_ident() != me or int(response_dict.get("status_code", 0)) >= 300:
            return
        try:
            root = ET.fromstring(response_dict["body"])
        except ET.ParseError:
            return  # let botocore report it
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        encoded = root.findtext(f"{ns}EncodingType") == "url"
        contents = root.findall(f"{ns}Contents")
        for c in contents:
            key = c.findtext(f"{ns}Key") or ""
            key = unquote_plus(key) if encoded else key
            _listed(out, client, url, key, c.findtext(f"{ns}Size") or "", c.findtext(f"{ns}ETag") or "")
            root.remove(c)
        # A server that says "truncated" with a new token every time lists for ever (botocore stops
        # only at a repeated token): objects or empty pages beyond any real bucket's end it here.
        empty_pages += not contents
        if len(out) > MAX_LISTED or empty_pages > MAX_EMPTY_PAGES:
            raise MirrorError(
                f"{client.meta.endpoint_url}: the listing of {url} does not end (more than "
                + (f"{MAX_LISTED} objects)" if len(out) > MAX_LISTED else f"{MAX_EMPTY_PAGES} empty pages)"),
                hint="the S3 server answers a broken or hostile ListObjectsV2; check the endpoint",
            )
        response_dict["body"] = ET.tostring(root)

    hook = f"cernvm-list-{uuid.uuid4().hex}"
    client.meta.events.register("before-parse.s3.ListObjectsV2", grab, unique_id=hook)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=url.bucket, Prefix=url.list_prefix)
        for page in pages:
            for obj in page.get("Contents", []):  # only if the hook could not read the page
                _listed(out, client, url, str(obj["Key"]), str(obj["Size"]), str(obj["ETag"]))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        raise s3_error(e, str(url)) from e
    finally:
        client.meta.events.unregister("before-parse.s3.ListObjectsV2", unique_id=hook)
    return out


def _listed(
    out: dict[str, RemoteObject], client: S3Client, url: S3Url, key: str, size: str, etag: str
) -> None:
    """One listed object into ``out``. A key outside the prefix (a gateway that ignores ``Prefix``)
    is passed over: sliced blindly it would stand for another key of ours (``el8/P/x.rpm`` for
    ``P/x.rpm`` under ``el9``) and could vouch for an object that is missing."""
    if not key.startswith(url.list_prefix) or key == url.list_prefix:
        return
    # "abc", "-1", " 5", "1e3"; and 5000 digits, past int()'s limit (a ValueError traceback)
    number = decimal(size)
    if number is None:
        raise MirrorError(
            f"{client.meta.endpoint_url}: malformed listing of {url}: <Size> '{size[:40]}' of '{key[:200]}'",
            hint="the S3 server answered a broken ListObjectsV2; check the endpoint",
        )
    rel = url.rel(key)
    out[rel] = RemoteObject(rel, number, etag)


@dataclass
class Manifest:
    objects: dict[str, tuple[str, int, str]] = field(default_factory=dict)  # rel → (etag, size, sha256)
    generations: list[list[str]] = field(default_factory=list)  # newest first
    etag: str | None = None  # of the manifest object itself, for the compare-and-swap

    def to_bytes(self) -> bytes:
        doc = {
            "format": "cernvm-sync/1",
            "objects": {k: list(v) for k, v in sorted(self.objects.items())},
            "generations": self.generations,
        }
        return json.dumps(doc, indent=0, sort_keys=True).encode()


#: the largest sync manifest read (~150 bytes an object: millions of them); a larger one is damaged
MAX_MANIFEST = 1 << 30


def read_manifest(client: S3Client, url: S3Url, listing: dict[str, RemoteObject]) -> Manifest:
    seen = listing.get(MANIFEST)
    if seen is None:
        return Manifest()
    try:
        if seen.size > MAX_MANIFEST:
            raise ValueError("too large")
        resp = client.get_object(Bucket=url.bucket, Key=url.key(MANIFEST))
        body = resp["Body"].read(MAX_MANIFEST + 1)  # the server may send more than it listed
        if len(body) > MAX_MANIFEST:
            raise ValueError("too large")
        doc = json.loads(body)
        objects = {str(k): (str(v[0]), int(v[1]), str(v[2])) for k, v in doc.get("objects", {}).items()}
        gens = [[str(x) for x in g] for g in doc.get("generations", [])]
        return Manifest(objects, gens, str(resp["ETag"]))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        if error_code(e) == "NoSuchKey":
            return Manifest()
        raise s3_error(e, f"{url}/{MANIFEST}") from e
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        # A damaged cache is not an error: we fall back to asking each object for its hash. (Nested
        # too deeply for json, or larger than MAX_MANIFEST, it is damaged too.)
        return Manifest(etag=str(seen.etag))


def head_sha256(client: S3Client, url: S3Url, rel: str) -> tuple[str | None, str | None]:
    """(stored sha256, current etag) of one object; (None, None) if it vanished."""
    try:
        resp = client.head_object(Bucket=url.bucket, Key=url.key(rel))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        if http_status(e) == 404:
            return None, None
        raise s3_error(e, f"{url}/{rel}") from e
    meta = {k.lower(): v for k, v in resp.get("Metadata", {}).items()}
    return meta.get(META_SHA256), str(resp["ETag"])


@dataclass
class Plan:
    url: S3Url
    local: dict[str, LocalFile]
    remote: dict[str, RemoteObject]
    manifest: Manifest
    actions: list[Action]
    unchanged: int
    kept: list[str]


def make_plan(
    client: S3Client,
    url: S3Url,
    local: dict[str, LocalFile],
    *,
    last: Sequence[str],
    delete: bool,
    protect: Collection[str],
    keep: int,
    jobs: int,
    progress: Progress | None,
    fallback_protect: Callable[[], Collection[str]] | None = None,
) -> Plan:
    listing = list_remote(client, url)
    manifest = read_manifest(client, url, listing)
    remote = {r: o for r, o in listing.items() if r != MANIFEST}

    # Which objects' stored hashes must we ask for? Only same-size ones the manifest cannot vouch for.
    unknown: list[str] = []
    resolved: dict[str, RemoteObject] = {}
    for rel, obj in remote.items():
        lf = local.get(rel)
        cached = manifest.objects.get(rel)
        if cached and cached[0] == obj.etag and cached[1] == obj.size:
            resolved[rel] = RemoteObject(rel, obj.size, obj.etag, cached[2])
        elif lf is not None and lf.size == obj.size:
            unknown.append(rel)
        else:
            resolved[rel] = obj
    if unknown:
        done = 0
        lock = threading.Lock()

        def ask(rel: str) -> RemoteObject:
            nonlocal done
            sha, etag = head_sha256(client, url, rel)
            if progress:
                with lock:
                    done += 1
                    progress("check", done, len(unknown))
            obj = remote[rel]
            return RemoteObject(rel, obj.size, etag or obj.etag, sha)

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for obj in pool.map(ask, unknown):
                resolved[obj.rel] = obj

    actions: list[Action] = []
    unchanged = 0
    for rel in sorted(local):
        lf = local[rel]
        is_last = last_rank(rel, last) is not None
        ro = resolved.get(rel)
        if ro is None:
            actions.append(Action("create", rel, lf.size, "new", is_last))
        elif ro.sha256 == lf.sha256:
            unchanged += 1
        else:
            reason = "size differs" if ro.size != lf.size else "content differs (same size)"
            if ro.sha256 is None and ro.size == lf.size:
                reason = "no stored hash"
            actions.append(Action("update", rel, lf.size, reason, is_last, ro.etag))

    kept: list[str] = []
    if delete:
        protected = set(protect)
        for gen in manifest.generations[:keep]:
            protected.update(gen)
        stale = set(remote) - set(local)
        if stale - protected and keep > 0 and not manifest.generations and fallback_protect:
            # No record of earlier generations (first sync by this tool, or the manifest was lost):
            # keep at least what the indexes now published name, for readers that hold them.
            protected.update(fallback_protect())
        for rel in sorted(set(remote) - set(local)):
            if rel in protected:
                kept.append(rel)
            else:
                actions.append(
                    Action("delete", rel, remote[rel].size, "not in source", False, remote[rel].etag)
                )
    return Plan(url, local, resolved, manifest, actions, unchanged, kept)


# -- writing -------------------------------------------------------------------------------------
