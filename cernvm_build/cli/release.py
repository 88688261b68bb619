"""``cernvm-build release``: build, verify, rebuild and publish a CernVM release."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..context import BuildContext
from ..errors import CernVMError, IntegrityError, UsageError
from ..report import scoped
from . import areas
from .app import (
    HelpFormatter,
    Output,
    accept_any_word,
    group_handler,
    jobs,
    name_list,
    styled,
    subcommands_with_default,
    subparser,
)
from .inputs import existing_file, release_ref

# Handlers import the modules of their area when they run (deliberate lazy imports): `--help` and
# the other commands start without loading every area, and a missing optional extra only stops the
# command that needs it.

DESCRIPTION = """\
A release is every profile's μCernVM images, build manifests and reference containers, with
SHA256SUMS (signed when a key is given), index.json and release notes, in OUT/VERSION/.

  cernvm-build release 2026.11-1 --profiles el7,el8,el9          build into releases/2026.11-1/
  cernvm-build release 2026.11-1 --sign-key release-key.asc --publish s3://cvmrepo/releases \\
      --site-publish s3://cvmfs-www/site --endpoint-url https://s3.cern.ch
  cernvm-build release verify 2026.11-1 --key release-key.pub.asc   every artifact, sums, signature
  cernvm-build release rebuild releases/2026.11-1/index.json       byte-identical? per artifact
  cernvm-build release publish 2026.11-1 s3://cvmrepo/releases      (again) after an interruption

Profiles are built in parallel (--jobs); an interrupted build resumes with the profiles not done."""


#: the release the verify, rebuild and publish commands act on
RELEASE_ARG_HELP = "a version under --out, an index.json or a release folder"


def _repo_targets(args: argparse.Namespace) -> list[Any]:
    from ..release.publish import RepoTarget

    targets = []
    for kind in ("yum", "apt"):
        for item in getattr(args, kind) or []:
            src, sep, dest = item.rpartition("=")
            # an empty SOURCE was the current folder, mirrored as the repository
            if not sep or not src or not dest.startswith("s3://"):
                raise UsageError(
                    f"--{kind} '{item}' is not SOURCE=s3://bucket/prefix",
                    hint=f"e.g. --{kind} ./{kind}=s3://cvmrepo/{kind}",
                )
            targets.append(RepoTarget(kind, src, dest, args.gpg_key))
    return targets


def _publish_targets(args: argparse.Namespace) -> list[Any]:
    """The publishing flags checked (a usage error names the flag): before a build, not after it."""
    if not args.publish.startswith("s3://"):
        raise UsageError(f"'{args.publish}' is not an s3:// URL", hint="for example s3://cvmrepo/releases")
    return _repo_targets(args)


def _publish(args: argparse.Namespace, out: Output, release_dir: Path) -> dict[str, Any]:
    from ..release.publish import publish_release
    from .reference import GENERATORS

    repos = _publish_targets(args)
    with out.reporter() as reporter:
        report = publish_release(
            release_dir,
            args.publish,
            endpoint_url=args.endpoint_url,
            repos=repos,
            site_dest=args.site_publish,
            site_generators=GENERATORS,
            reporter=scoped(reporter, "publish"),
        )
    return report.to_json()


def _build(args: argparse.Namespace, out: Output) -> int:
    from ..release.build import ReleaseOptions, build_release, release_context, release_profiles

    names = args.profiles
    if not names:
        raise UsageError("no profiles given", hint="e.g. --profiles el7,el8,el9")
    if args.publish:
        _publish_targets(args)  # a bad --publish, --yum or --apt was found only after the build
    signer = None
    if args.image_key or args.image_cert:
        if not (args.image_key and args.image_cert):
            raise UsageError("--image-key and --image-cert go together", hint="give both PEM files")
        from ..image.signature import load_signer

        signer = load_signer(args.image_key, args.image_cert)
    opts = ReleaseOptions(
        version=args.version,
        profiles=release_profiles(names),
        out=args.out,
        sign_key=args.sign_key,
        image_signer=signer,
        previous=args.previous,
    )
    started = time.monotonic()
    with out.reporter(steps_as_detail=True) as reporter:
        ctx = release_context(args.version, reporter=reporter, jobs=args.jobs or min(len(names), 2))
        release, directory = build_release(opts, ctx)
    data: dict[str, Any] = {
        "version": release.version,
        "path": str(directory),  # the key every command names what it wrote by
        "directory": str(directory),  # (the same, its former name: until 2027)
        "seconds": round(time.monotonic() - started, 1),
        "signer": release.signer,  # as the index, release verify and image verify name it
        "signed_by": release.signer,  # (its former name: until 2027)
        "profiles": [p.name for p in release.profiles],
        "artifacts": [{"path": a.path, "size": a.size, "sha256": a.sha256} for a in release.artifacts],
    }
    if args.publish:
        data["published"] = _publish(args, out, directory)

    def show(d: dict[str, Any]) -> None:
        out.table(
            ["artifact", "size", "sha256"],
            [(a["path"], a["size"], a["sha256"][:16] + "…") for a in d["artifacts"]],
        )
        out.print(f"release {d['version']} in {d['path']} ({d['seconds']} s)"
                  + (f", SHA256SUMS signed by {d['signer']}" if d["signer"] else ""))  # fmt: skip
        if "published" in d:
            _show_published(out, d["published"])

    out.data(data, show)
    return 0


def _verify(args: argparse.Namespace, out: Output) -> int:
    from ..release.verify import locate_index, verify

    report = verify(locate_index(args.release, args.out), public_keys=args.key or [])
    data = report.to_json()

    def show(d: dict[str, Any]) -> None:
        for f in d["findings"]:
            out.print(styled(("FAIL", "red"), f" {f['artifact']}: {f['problem']}"))
        verdict = ("OK", "green") if d["ok"] else ("FAILED", "red")
        # without --key a signed release's signature is not checked: "OK" must not read as if it were
        if d["signer"]:
            signer = f", signature by {d['signer']}"
        elif d["signed"] and args.key:  # checked and refused (a revoked key): not "pass --key"
            signer = ", signature REFUSED"
        elif d["signed"]:
            signer = ", signature NOT checked (pass --key with the release's OpenPGP public key)"
        else:
            signer = ", not signed"
        out.print(styled(verdict, f": release {d['version']}: {d['checked']} artifacts checked{signer}"))

    out.data(data, show)
    if report.signature and (warning := report.signature.expiry_warning(report.version)):
        out.warn(warning)
    if not report.ok:
        # an error, not only a return code: with --quiet (results left out) the FAIL lines are not
        # shown, and a failed verify was silent but for its exit code
        n, first = len(report.findings), report.findings[0]
        more = "'release verify --json' lists them all"
        raise IntegrityError(
            f"release {report.version}: {n} problem(s), first: {first.artifact}: {first.problem}",
            hint=(f"{first.hint}; {more}" if n > 1 else first.hint) if first.hint else more,
        )
    return 0


def _rebuild(args: argparse.Namespace, out: Output) -> int:
    from ..release.rebuild import rebuild
    from ..release.verify import locate_index

    with out.reporter(steps_as_detail=True) as reporter:
        report = rebuild(
            locate_index(args.release, args.out), ctx=BuildContext.from_environment(reporter=reporter)
        )
    data = report.to_json()

    def show(d: dict[str, Any]) -> None:
        rows = [(a["name"], "yes" if a["identical"] else "no", a["reason"]) for a in d["artifacts"]]
        out.table(["artifact", "byte-identical", "why not"], rows)
        for n in d["notes"]:
            out.print(f"note: {n}")

    out.data(data, show)
    if not report.identical:  # an error line too: --quiet leaves the table out (``_verify``)
        differ = [o for o in report.outcomes if not o.identical]
        what = (
            f"{len(differ)} artifact(s) not byte-identical, first: {differ[0].name}: {differ[0].reason}"
            if differ
            else "no artifact was rebuilt"
        )
        raise CernVMError(f"release {report.version}: {what}", hint="'release rebuild --json' lists them all")
    return 0


def _show_published(out: Output, d: dict[str, Any]) -> None:
    """One line per destination: the whole report (an action per object, thousands on a first
    upload) was the human output of `release publish`; ``--json`` keeps it."""
    syncs = [d["artifacts"], *(r.get("sync") for r in d["repositories"]), d["site"]]
    for sync in (s for s in syncs if isinstance(s, dict) and "dest" in s):
        out.print(
            f"{sync['dest']}: uploaded {len(sync['uploaded'])} object(s) ({sync['bytes_uploaded']} bytes), "
            f"deleted {len(sync['deleted'])}, unchanged {sync['unchanged']}",
            markup=False,
        )


def _publish_cmd(args: argparse.Namespace, out: Output) -> int:
    from ..release.verify import locate_index

    release_dir = locate_index(args.release, args.out).parent
    out.data(_publish(args, out, release_dir), lambda d: _show_published(out, d))
    return 0


def _publish_args(p: argparse.ArgumentParser, *, dest_positional: bool) -> None:
    g = p.add_argument_group("publishing")
    if dest_positional:
        g.add_argument("publish", metavar="S3_URL", help="where releases live, e.g. s3://cvmrepo/releases")
    else:
        g.add_argument("--publish", metavar="S3_URL", help="after building, upload to S3_URL/VERSION/")
    g.add_argument(
        "--site-publish", metavar="S3_URL", help="rebuild the site with this release and upload it"
    )
    g.add_argument(
        "--yum", action="append", metavar="SRC=S3_URL", help="also mirror a yum repository (repeatable)"
    )
    g.add_argument(
        "--apt", action="append", metavar="SRC=S3_URL", help="also mirror an apt repository (repeatable)"
    )
    g.add_argument(
        "--gpg-key", type=existing_file, help="public key the package repositories must be signed with"
    )
    g.add_argument("--endpoint-url", help="S3 endpoint (MinIO, Ceph RGW); default: AWS or AWS_ENDPOINT_URL")


VERIFY_DESCRIPTION = """\
Check every artifact of a release against its index.json (size, sha256), SHA256SUMS against the
index, and, with --key, the OpenPGP signature of SHA256SUMS (revoked keys fail; a key expired since the
signing is a warning, a signature made after the key's expiry fails). Without
--key a signed release's signature is not checked, and the output says so. Exit 6 on any mismatch.

  cernvm-build release verify 2026.11-1                       a version under --out (releases/)
  cernvm-build release verify releases/2026.11-1/index.json --key release.pub.asc
  cernvm-build release verify releases/2026.11-1 --json       findings, for scripts"""

REBUILD_DESCRIPTION = """\
Build the release again from the inputs its index records (profiles, snapshots, SOURCE_DATE_EPOCH)
in a temporary folder and compare every artifact byte for byte, naming what changed for each one
that differs. The profiles must be the ones the release was built from (their settings' sha256 is
recorded), and the repositories must still serve the recorded snapshots.

  cernvm-build release rebuild releases/2026.11-1/index.json
  cernvm-build release rebuild 2026.11-1 --out /archive/releases --json"""

PUBLISH_DESCRIPTION = """\
Upload a built release to S3_URL/VERSION/: artifacts first, index.json last, so a reader never sees
an index naming what is not there yet; then the --yum/--apt mirrors and the site (--site-publish).
A re-run after an interruption uploads only what is missing.

  cernvm-build release publish 2026.11-1 s3://cvmrepo/releases --endpoint-url https://s3.cern.ch"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "release",
        help=areas.HELP["release"],
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
        usage="cernvm-build release [build] VERSION [options]\n"
        "       cernvm-build release {verify,rebuild,publish} ...",
    )
    group.set_defaults(func=group_handler(group))
    inner = subcommands_with_default(group, "build", "{VERSION,build,verify,rebuild,publish}")
    b = subparser(inner, "build", help="build VERSION (the default command)", description=DESCRIPTION,
                  json=True, handler=_build)  # fmt: skip
    b.add_argument("version", metavar="VERSION", help="release version, YYYY.MM-N (e.g. 2026.11-1)")
    b.add_argument(
        "--profiles",
        type=name_list,
        default="el7,el8,el9",
        help="comma-separated profiles, each once (default: %(default)s)",
    )
    b.add_argument(
        "--out", type=Path, default=Path("releases"), help="releases folder (default: %(default)s)"
    )
    b.add_argument("-j", "--jobs", type=jobs, help="profiles built at once (default: up to 2)")
    b.add_argument(
        "--sign-key", type=existing_file, help="OpenPGP secret key (armored) that signs SHA256SUMS"
    )
    b.add_argument("--image-key", type=existing_file, help="PEM private key for the images' signature blocks")
    b.add_argument("--image-cert", type=existing_file, help="PEM certificate of --image-key")
    b.add_argument(
        "--previous", type=existing_file, help="previous release's index.json (for the release notes)"
    )
    _publish_args(b, dest_positional=False)

    v = subparser(inner, "verify", help="check every artifact against the index, SHA256SUMS and signature",
                  description=VERIFY_DESCRIPTION, json=True, handler=_verify)  # fmt: skip
    v.add_argument("release", metavar="VERSION|INDEX|DIR", type=release_ref, help=RELEASE_ARG_HELP)
    v.add_argument(
        "--key",
        type=existing_file,
        action="append",
        help="OpenPGP public key the release must be signed by (repeatable); without it only the hashes "
        "are checked",
    )
    v.add_argument(
        "--out", type=Path, default=Path("releases"), help="releases folder (default: %(default)s)"
    )

    r = subparser(inner, "rebuild", help="rebuild from the recorded inputs; byte-identical per artifact?",
                  description=REBUILD_DESCRIPTION, json=True, handler=_rebuild)  # fmt: skip
    r.add_argument("release", metavar="VERSION|INDEX|DIR", type=release_ref, help=RELEASE_ARG_HELP)
    r.add_argument(
        "--out", type=Path, default=Path("releases"), help="releases folder (default: %(default)s)"
    )

    p = subparser(inner, "publish", help="upload a built release (artifacts, repositories, site) to S3",
                  description=PUBLISH_DESCRIPTION, json=True, handler=_publish_cmd)  # fmt: skip
    p.add_argument("release", metavar="VERSION|INDEX|DIR", type=release_ref, help=RELEASE_ARG_HELP)
    p.add_argument(
        "--out", type=Path, default=Path("releases"), help="releases folder (default: %(default)s)"
    )
    _publish_args(p, dest_positional=True)
    accept_any_word(inner)
