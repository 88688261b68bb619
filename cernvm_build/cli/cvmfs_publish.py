"""``cernvm-build cvmfs keygen | create | publish | resign | tag add | tag remove``: the publisher.

Handlers import the publisher when they run: it needs 'cryptography', which the reading commands (and
``--help``) can do without.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..context import env_epoch
from ..cvmfs.limits import MAX_HOLE_BYTES, MAX_MTIME, MAX_TAR_BYTES, MAX_TAR_ENTRIES, MAX_WHITELIST_DAYS
from ..errors import CvmfsError, UsageError
from .app import Output, size, subparser, whole_number
from .inputs import existing_folder, local_or_url, local_url_or_stdin

if TYPE_CHECKING:
    from ..cvmfs import publish as pub
    from ..cvmfs.keys import KeySet

# Handlers import the modules of their area when they run (deliberate lazy imports): `--help` and
# the other commands start without loading every area, and a missing optional extra only stops the
# command that needs it.


def _load_keys(args: argparse.Namespace, fqrn: str, out: Output, *, signs_whitelist: bool = True) -> KeySet:
    """The keys of ``--keys`` (and ``--master-key``), with a warning for each private key file that
    others may read (keygen writes them 0600; a copy made with cp or a checkout is often 0644)."""
    import os
    import stat

    from ..cvmfs.keys import load_keys

    master = getattr(args, "master_key", None)
    keys = load_keys(args.keys, fqrn, master_key=master, signs_whitelist=signs_whitelist)
    private = [args.keys / f"{fqrn}.key"]
    if keys.master_key_pem:
        private.append(Path(master) if master else args.keys / f"{fqrn}.masterkey")
    for path in private:
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                out.warn(f"{path}: private key readable by others (mode {mode:04o}); chmod 600 it")
    return keys


def _fqrn(stratum: Path, given: str | None) -> str:
    from ..cvmfs.repository import local_fqrn

    found = given or local_fqrn(stratum)
    if not found:
        raise CvmfsError(
            f"{stratum}: not a repository (no .cvmfspublished that names one)",
            hint=f"create it first: cernvm-build cvmfs create {stratum} --fqrn NAME --keys DIR",
        )
    return found


@dataclass
class StratumTarget:
    """Where a command writes: a Stratum directory, or an S3 bucket through its local spool."""

    path: Path
    s3: dict[str, Any] = field(default_factory=dict)  # filled in once the push finished

    def add_to(self, d: dict[str, Any]) -> dict[str, Any]:
        return {**d, "s3": self.s3} if self.s3 else d


@contextlib.contextmanager
def stratum_target(
    args: argparse.Namespace, *, creating: bool = False, replica: bool = False
) -> Iterator[StratumTarget]:
    """``args.stratum`` as a directory; an ``s3://`` one is its spool, pushed when the block succeeds."""
    text = str(args.stratum)
    if not text.startswith("s3://"):
        scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*:/", text)
        if scheme:
            # 'S3://b/p', 's3:/b/p' or 'http://...' made a local folder named 'S3:' and said "created"
            raise UsageError(
                f"{text[:200]!r} is not an s3:// URL (it would be a local folder named {scheme[0][:-1]!r})",
                hint=f"write s3://bucket/prefix (lower case, two slashes), or ./{text[:60]} for that folder",
            )
        yield StratumTarget(Path(text))
        return
    from ..cvmfs import s3upstream

    up = s3upstream.upstream(text, spool=args.spool, endpoint_url=args.endpoint_url, profile=args.profile)
    with s3upstream.session(up, creating=creating, replica=replica) as s:
        target = StratumTarget(s.spool)
        yield target
    assert s.pushed is not None
    target.s3 = {
        "url": str(up.url),
        "spool": str(up.spool),
        "uploaded": len(s.pushed.uploaded),
        "bytes_uploaded": s.pushed.bytes_uploaded,
    }


def add_s3_args(p: argparse.ArgumentParser) -> None:
    """The options of an ``s3://`` destination (as the mirror's)."""
    p.add_argument("--endpoint-url", metavar="URL", help="S3-compatible endpoint (MinIO, Ceph RGW, ...)")
    p.add_argument("--profile", metavar="P", help="AWS profile from ~/.aws/config")
    p.add_argument(
        "--spool",
        type=Path,
        metavar="DIR",
        help="for s3:// destinations: the local working copy (default: one per bucket in the cache)",
    )


def _result(r: pub.PublishResult) -> dict[str, Any]:
    return {
        "revision": r.revision,
        "root_hash": r.root_hash,
        "tag": r.tag,
        "timestamp": r.timestamp,
        "objects_written": r.objects_written,
        "bytes_written": r.bytes_written,
        "files": r.files,
        "catalogs": r.catalogs,
        "catalogs_reused": r.catalogs_reused,
        "nested_by_dirtab": list(r.nested_by_dirtab),
        "nested_auto": list(r.nested_auto),
        "warnings": list(r.warnings),
    }


def _show(out: Output, title: str, d: dict[str, Any]) -> None:
    for w in d.get("warnings", []):
        out.warn(w)

    def render(d: dict[str, Any]) -> None:
        out.print(title)
        for k, v in d.items():
            if k not in ("warnings", "fqrn") and v is not None:  # (the title names the repository)
                out.print(f"  {k.replace('_', ' ')}: {v}")

    out.data(d, render)


def cmd_keygen(args: argparse.Namespace, out: Output) -> int:
    from ..cvmfs.keys import generate_keys, keys_exist, make_folder
    from ..fsutil import held_lock

    def refuse(holder: str) -> None:
        raise CvmfsError(
            f"{args.out}: keys for {args.fqrn} are being made by {holder}",
            hint="wait for it to finish and use its keys",
        )

    # the check and the four files under one lock: two keygens at once both passed the check, and their
    # files interleaved (a .crt beside the other run's .key: every manifest signed with it is refused).
    # The folder is made first, with one line when a file is in the way (the lock's own mkdir raised)
    make_folder(args.out, "--out")
    with held_lock(args.out / f".{args.fqrn}.keygen.lock", f"keygen {args.fqrn}", refuse, remove=True):
        if keys_exist(args.out, args.fqrn) and not args.force:
            raise CvmfsError(
                f"{args.out}: keys for {args.fqrn} already exist",
                hint="keep them (they sign the repository), or pass --force to replace them",
            )
        keys = generate_keys(args.fqrn)
        files = keys.save(args.out)
    d = {"fqrn": args.fqrn, "files": [str(f) for f in files], "fingerprint": keys.fingerprint()}

    def render(d: dict[str, Any]) -> None:
        # two lines, two prints: a print is one line (a newline in it is shown as \x0a, pr26b 13)
        out.print(f"keys for {d['fqrn']} in {args.out} (certificate {d['fingerprint']});")
        out.print(f"clients need {args.out / (args.fqrn + '.pub')}; keep .masterkey and .key secret")

    out.data(d, render)
    return 0


def cmd_create(args: argparse.Namespace, out: Output) -> int:
    from ..cvmfs import publish as pub

    keys = _load_keys(args, args.fqrn, out)
    with stratum_target(args, creating=True) as t:
        r = pub.create_repository(
            t.path, args.fqrn, keys, whitelist_days=args.whitelist_days, epoch=env_epoch()
        )
    # fqrn: as every other cvmfs result names its repository (info, verify, replicate, keygen)
    _show(out, f"created {args.fqrn} in {args.stratum}", {"fqrn": args.fqrn, **t.add_to(_result(r))})
    return 0


def _autocatalogs(value: str) -> Any:
    from ..cvmfs.nesting import AutoCatalogs

    if value == "no":
        return None
    try:
        high, _, low = value.partition(":")
        return AutoCatalogs(int(high), int(low)) if low else AutoCatalogs(int(high))
    except ValueError:
        raise UsageError(
            f"--autocatalogs {value!r}: expected MAX[:MIN] entries with MIN < MAX/2, or 'no'",
            hint="the real server's default is --autocatalogs 100000:1000",
        ) from None


def cmd_publish(args: argparse.Namespace, out: Output) -> int:
    with stratum_target(args) as t:
        fqrn, r = _publish(args, out, t.path)
    _show(out, f"published {fqrn} revision {r.revision}", {"fqrn": fqrn, **t.add_to(_result(r))})
    return 0


def _publish(args: argparse.Namespace, out: Output, stratum: Path) -> tuple[str, pub.PublishResult]:
    from ..cvmfs import publish as pub
    from ..cvmfs.chunking import ChunkingSettings
    from ..cvmfs.tar_limits import TarLimits

    if args.move_tag and args.tag is None:
        raise UsageError("--move-tag without --tag: there is no tag to move", hint="add --tag NAME")
    fqrn = _fqrn(stratum, args.fqrn)
    keys = _load_keys(args, fqrn, out, signs_whitelist=False)
    chunking = ChunkingSettings(enabled=False) if args.no_chunking else None
    common: dict[str, Any] = dict(
        autocatalogs=_autocatalogs(args.autocatalogs),
        tag=args.tag,
        move_tag=args.move_tag,
        description=args.description,
        auto_tag=args.auto_tag,
        base_path=args.base_path,
        chunking=chunking,
        normalize_owner=args.root_owner,
        timestamp=args.timestamp,
        epoch=env_epoch(),
    )
    src = args.source
    with out.progress(transfer=True) as bar:
        task = bar.add_task(f"publishing {fqrn}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        limits = TarLimits(max_bytes=args.max_tar_bytes, max_entries=args.max_tar_entries, flag="tar")
        if src == "-":
            tar = pub.publish_tar(
                stratum, fqrn, keys, sys.stdin.buffer, progress=progress, limits=limits, **common
            )
            return fqrn, tar
        path = Path(src)
        if path.is_dir():
            return fqrn, pub.publish_tree(
                stratum, fqrn, keys, path, progress=progress, max_holes=args.max_hole_bytes, **common
            )
        if path.is_file():
            with open(path, "rb") as f:
                return fqrn, pub.publish_tar(
                    stratum, fqrn, keys, f, progress=progress, limits=limits, **common
                )
        raise UsageError(f"{src}: no such directory or tar file", hint="give a directory, a tar, or -")


def cmd_resign(args: argparse.Namespace, out: Output) -> int:
    from ..cvmfs import publish as pub

    with stratum_target(args) as t:
        fqrn = _fqrn(t.path, args.fqrn)
        keys = _load_keys(args, fqrn, out)
        path = pub.resign_whitelist(
            t.path,
            fqrn,
            keys,
            days=args.days,
            new_certificate=args.new_certificate,
            new_master_key=args.new_master_key,
        )
    out.data(
        t.add_to({"whitelist": str(path), "days": args.days}),
        lambda d: out.print(f"re-signed {d['whitelist']}, valid for {d['days']} days"),
    )
    return 0


def cmd_tag_add(args: argparse.Namespace, out: Output) -> int:
    from ..cvmfs import publish as pub

    with stratum_target(args) as target:
        fqrn = _fqrn(target.path, args.fqrn)
        keys = _load_keys(args, fqrn, out, signs_whitelist=False)
        t, old = pub.add_tag(
            target.path, fqrn, keys, args.name, args.root_hash, args.description, epoch=env_epoch()
        )
    # a moved tag is said as such: archivists pin names like 'slc5-frozen'
    was = (
        None
        if old is None or old.root_hash == t.root_hash
        else {"revision": old.revision, "root_hash": old.root_hash}
    )
    d = target.add_to(
        {"name": t.name, "root_hash": t.root_hash, "revision": t.revision, "description": t.description,
         "moved_from": was}
    )  # fmt: skip

    def show(d: dict[str, Any]) -> None:
        line = f"tagged revision {d['revision']} ({d['root_hash']}) as {d['name']}"
        if d["moved_from"]:
            line += f" (moved from revision {d['moved_from']['revision']}, {d['moved_from']['root_hash']})"
        out.print(line)

    out.data(d, show)
    return 0


def cmd_tag_remove(args: argparse.Namespace, out: Output) -> int:
    from ..cvmfs import publish as pub

    with stratum_target(args) as t:
        fqrn = _fqrn(t.path, args.fqrn)
        keys = _load_keys(args, fqrn, out, signs_whitelist=False)
        pub.remove_tag(t.path, fqrn, keys, args.name, epoch=env_epoch())
    out.data(t.add_to({"removed": args.name}), lambda d: out.print(f"removed tag {d['removed']}"))
    return 0


def _stratum_args(p: argparse.ArgumentParser, *, keys: bool = True) -> None:
    p.add_argument(
        "stratum",
        type=local_or_url,
        metavar="STRATUM",
        help="the directory served as /cvmfs/<fqrn>/, or s3://bucket/prefix",
    )
    add_s3_args(p)
    if keys:
        p.add_argument(
            "--keys",
            type=existing_folder,
            required=True,
            metavar="DIR",
            help="key directory: <fqrn>.crt and .key sign revisions and tags; <fqrn>.masterkey (and .pub)"
            " is needed only to sign the whitelist (resign), so it may be kept offline",
        )
        p.add_argument("--fqrn", help="repository name (default: read from the manifest)")


def register_publish(
    cvmfs_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    tag_sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    p = subparser(
        cvmfs_sub,
        "keygen",
        json=True,
        handler=cmd_keygen,
        help="make a master key and a certificate for a new repository",
        description="Generate a repository's keys: <fqrn>.masterkey (signs the whitelist), <fqrn>.pub\n"
        "(its public half: what clients get as CVMFS_PUBLIC_KEY), <fqrn>.crt and <fqrn>.key\n"
        "(the certificate that signs each manifest). Private keys are written mode 0600.\n\n"
        "  cernvm-build cvmfs keygen demo.cernvm.test --out ./keys",
    )
    p.add_argument("fqrn", metavar="FQRN", help="repository name, e.g. demo.cernvm.test")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for the four files")
    p.add_argument("--force", action="store_true", help="replace existing keys")

    p = subparser(
        cvmfs_sub,
        "create",
        json=True,
        handler=cmd_create,
        help="create an empty repository",
        description="Create a repository in STRATUM (a directory or an S3 bucket): revision 1 with an empty\n"
        "root, the certificate, the history (tag 'trunk') and a whitelist signed with the master key.\n"
        "An s3://bucket/prefix is written from a local working copy (--spool), objects first and the\n"
        "signed manifest last; publish, tag and resign work on it the same way.\n\n"
        "  cernvm-build cvmfs create ./srv/demo.cernvm.test --fqrn demo.cernvm.test --keys ./keys\n"
        "  cernvm-build cvmfs serve ./srv     # then: http://127.0.0.1:8000/cvmfs/demo.cernvm.test\n"
        "  cernvm-build cvmfs create s3://cvmfs/demo.cernvm.test --fqrn demo.cernvm.test --keys ./keys \\\n"
        "      --endpoint-url https://s3.cern.ch   # the bucket must allow anonymous GET; clients use\n"
        "      # https://s3.cern.ch/cvmfs/demo.cernvm.test as the Stratum URL (the real server's layout)",
    )
    p.add_argument(
        "stratum", metavar="STRATUM", help="new directory to hold the repository, or s3://bucket/prefix"
    )
    add_s3_args(p)
    p.add_argument("--fqrn", required=True, help="repository name")
    p.add_argument(
        "--keys", type=existing_folder, required=True, metavar="DIR", help="key directory (from keygen)"
    )
    p.add_argument(
        "--whitelist-days",
        type=whole_number(1, MAX_WHITELIST_DAYS),
        default=30,
        metavar="N",
        help="whitelist validity in days (30)",
    )
    p.add_argument(
        "--master-key",
        metavar="FILE|pkcs11:URI",
        help="the master key that signs the whitelist, if not DIR/<fqrn>.masterkey: a PEM file, or a key on "
        "a token (pkcs11:token=…;object=…?module-path=…&pin-value=…, through OpenSSL's PKCS#11 engine)",
    )

    p = subparser(
        cvmfs_sub,
        "publish",
        json=True,
        handler=cmd_publish,
        help="publish a directory or tar as a new revision",
        description="Publish SOURCE (a directory, a tar file, or '-' for a tar on stdin) as the next\n"
        "revision. Only new content is stored; unchanged files (same size, mtime, mode) are not read\n"
        "again; a '.cvmfscatalog' file makes its directory a nested catalog, so do the rules of a\n"
        "'/.cvmfsdirtab' and the automatic split of catalogs over --autocatalogs entries; files over\n"
        "4 MiB are chunked where the real server cuts them. The manifest is written last: readers\n"
        "see the old revision until the new one is complete, and an interrupted publish can simply\n"
        "be run again.\n\n"
        "  cernvm-build cvmfs publish ./srv/demo.cernvm.test ./rootfs --keys ./keys --tag v1\n"
        "  tar -C rootfs -c . | cernvm-build cvmfs publish ./srv/demo.cernvm.test - --keys ./keys\n"
        "  cernvm-build cvmfs publish REPO ./layer --keys K --base-path /.layers/ab/abcd --json",
    )
    _stratum_args(p)
    p.add_argument(
        "source",
        type=local_url_or_stdin,
        metavar="SOURCE",
        help="directory, tar file (.tar, .tar.gz, ...) or -",
    )
    p.add_argument(
        "--tag", help="also tag the new revision with this name (refused if the name tags a revision already)"
    )
    p.add_argument(
        "--move-tag",
        action="store_true",
        help="with --tag: move the name if it tags an earlier revision (archives pin tag names)",
    )
    p.add_argument("--description", "-m", default="", help="tag description")
    p.add_argument("--auto-tag", action="store_true", help="add a generic-<date> tag, as the server does")
    p.add_argument(
        "--base-path", default="/", metavar="P", help="publish SOURCE at P, keep the rest (default: /)"
    )
    p.add_argument("--root-owner", action="store_true", help="store every entry as owned by uid/gid 0")
    p.add_argument("--no-chunking", action="store_true", help="store large files as single objects")
    p.add_argument(
        "--autocatalogs",
        default="100000:1000",
        metavar="MAX[:MIN]|no",
        help="split a catalog over MAX entries into nested ones of at least MIN (100000:1000)",
    )
    p.add_argument(
        "--timestamp",
        type=whole_number(0, MAX_MTIME),
        metavar="EPOCH",
        help="publish time (default SOURCE_DATE_EPOCH or now)",
    )
    p.add_argument(
        "--max-tar-bytes",
        type=size,
        default=MAX_TAR_BYTES,
        metavar="SIZE",
        help="refuse a tar SOURCE that holds more (default: 64G; a hostile 1 MB .tar.bz2 can inflate to TBs)",
    )
    p.add_argument(
        "--max-hole-bytes",
        type=size,
        default=MAX_HOLE_BYTES,
        metavar="SIZE",
        help="refuse a sparse file of a directory SOURCE with more holes (default: 64G; they are read as"
        " zeros: a 1 KB file of 8E apparent size was read for ever)",
    )
    p.add_argument(
        "--max-tar-entries",
        type=int,
        default=MAX_TAR_ENTRIES,
        metavar="N",
        help="refuse a tar SOURCE of more members (default: %(default)s)",
    )

    p = subparser(
        cvmfs_sub,
        "resign",
        json=True,
        handler=cmd_resign,
        help="re-sign the whitelist before it expires",
        description="Write a new whitelist signed with the master key (clients refuse an expired one).\n"
        "It lists the certificate in DIR; to replace a revoked one (a new <fqrn>.crt and <fqrn>.key,\n"
        "the same master key), pass --new-certificate, then publish: the next revision is signed\n"
        "with it, and readers refuse the current one until then.\n\n"
        "  cernvm-build cvmfs resign ./srv/demo.cernvm.test --keys ./keys --days 30",
    )
    _stratum_args(p)
    p.add_argument(
        "--days",
        type=whole_number(1, MAX_WHITELIST_DAYS),
        default=30,
        metavar="N",
        help="validity in days (30)",
    )
    p.add_argument(
        "--new-master-key",
        action="store_true",
        help="sign with a master key other than the one that signed the current whitelist (a rotation:"
        " clients must have the new .pub first, or they refuse the repository)",
    )
    p.add_argument(
        "--new-certificate",
        action="store_true",
        help="list DIR's certificate although the current revision is signed by another one",
    )
    p.add_argument(
        "--master-key",
        metavar="FILE|pkcs11:URI",
        help="the master key that signs the whitelist, if not DIR/<fqrn>.masterkey: a PEM file, or a key on "
        "a token (pkcs11:token=…;object=…?module-path=…&pin-value=…, through OpenSSL's PKCS#11 engine)",
    )

    p = subparser(
        tag_sub,
        "add",
        json=True,
        handler=cmd_tag_add,
        help="tag the trunk (or a root catalog) with a name",
        description="Add or move a named tag; clients pin it with --tag NAME.\n\n"
        "  cernvm-build cvmfs tag add ./srv/demo.cernvm.test el9-2026.11 --keys ./keys -m 'release'\n"
        "  cernvm-build cvmfs tag add REPO frozen --root-hash 1a2b... --keys ./keys",
    )
    _stratum_args(p)
    p.add_argument("name", metavar="NAME", help="tag name")
    p.add_argument("--root-hash", metavar="HASH", help="root catalog to tag (default: trunk)")
    p.add_argument("--description", "-m", default="", help="tag description")

    p = subparser(
        tag_sub,
        "remove",
        json=True,
        handler=cmd_tag_remove,
        help="remove a named tag",
        description="Remove a tag from the history (its revision stays in the repository).\n\n"
        "  cernvm-build cvmfs tag remove ./srv/demo.cernvm.test el9-2026.11 --keys ./keys",
    )
    _stratum_args(p)
    p.add_argument("name", metavar="NAME", help="tag name")
