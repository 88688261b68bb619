"""``cernvm-build container``: reference containers from a profile's CernVM-FS snapshot, and verify."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import profile as profile_mod
from ..artifact import Artifact
from ..container.layering import DEFAULT_LAYER_BYTES
from ..container.provenance import verify_image
from ..container.registry import RegistryOptions, check_policy, check_registries_d
from ..context import BuildContext
from ..cvmfs.repository import SnapshotSpec
from . import areas
from .app import (
    HelpFormatter,
    Output,
    accept_any_word,
    group_handler,
    size,
    styled,
    subcommands_with_default,
    subparser,
)
from .inputs import existing_file, existing_folder, existing_path, profile_ref

# Handlers import the modules of their area when they run (deliberate lazy imports): `--help` and
# the other commands start without loading every area, and a missing optional extra only stops the
# command that needs it.

BUILD_DESCRIPTION = """\
Build reference containers whose root tree is the profile's CernVM-FS repository path, read from
the pinned snapshot (profile cvmfs.snapshot, or --tag/--root-hash) and verified object by object.

formats (--format, comma-separated; default: the profile's container.formats):
  oci             OUT/NAME.oci/ (OCI image layout) and OUT/NAME.oci.tar (oci-archive)
  docker-archive  OUT/NAME.docker.tar, for 'docker load' / 'podman load'
  apptainer       OUT/NAME.sandbox/, a flat sandbox with .singularity.d/ ('apptainer run')
  thin            OUT/NAME.thin.oci/, a DUCC thin image: thin.json names the layer in the hub
  cvmfs           publish into a CernVM-FS hub in DUCC's layout (--hub-stratum, --hub-keys)

The layers are deterministic: sorted entries, owners and modes from the repository, hard links as
tar hard links, xattrs as PAX SCHILY.xattr.*, mtimes the repository's, none later than the revision's
time (--keep-mtimes: as they are). Directories heavier than --layer-size are cut into layers of their
own (subdirectories; the rest), so the image of the next snapshot shares every unchanged layer;
a change spread over the tree (a package's files and the package database) still changes several.
--parent IMAGE (an earlier NAME.oci or NAME.oci.tar of the same repository path, checked digest by
digest) builds on top of it instead: its layers byte for byte, plus one layer with every entry that
is new or changed and an OCI whiteout (.wh.NAME, .wh..wh..opq) for every one removed. After 16 such
layers, or when the delta is over 25 % of the parent's layers, the tree is cut again (said in the
output). A parent is never taken implicitly: the image then depends on the parent as well as on
the snapshot.
Sockets are never copied: each is skipped with a warning and counted in the label
cvmfs.skipped. Layers carry device nodes; the sandbox creates them only with --devices (as root).
Setuid/setgid files and xattrs are kept, counted in the summary and listed in --json (setid, xattrs).
Labels record the origin (cvmfs.repository, .path, .tag, .root_hash, .revision).

examples:
  cernvm-build container el6 --format oci,docker-archive --out build/containers
  cernvm-build container demo --source http://127.0.0.1:8000/cvmfs/demo.cernvm.test --json
  cernvm-build container el4 --tag slc4-frozen --name registry.example/cernvm/el4:frozen
  cernvm-build container el9 --tag 2026.12 --parent build/containers/el9.oci   # the 2026.11 image
  cernvm-build container verify build/containers/el6.oci"""

VERIFY_DESCRIPTION = """\
Check an image against the CernVM-FS snapshot its labels name: every file's content hash, type,
mode, owner, link target and hard-link grouping. Differences are listed file by file; the exit
code is 6 (integrity failure) when there is any. Works on OCI layouts and archives,
docker-archives and Apptainer sandboxes made by 'cernvm-build container'.

The repository is read from --source, else the server recorded in the image (label
cvmfs.server), else the servers of the profile recorded in the image (label cernvm.profile).

examples:
  cernvm-build container verify build/containers/el6.oci
  cernvm-build container verify el6.docker.tar --source /srv/cvmfs/sft.example.test --key sft.pub"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "container",
        help=areas.HELP["container"],
        description=BUILD_DESCRIPTION,
        formatter_class=HelpFormatter,
        usage="cernvm-build container [build] PROFILE [options]\n       cernvm-build container verify IMAGE\n"
        "       cernvm-build container push IMAGE DEST",
    )
    group.set_defaults(func=group_handler(group))
    # ``container PROFILE ...`` means ``container build PROFILE ...``; ``container verify`` stays.
    inner = subcommands_with_default(group, "build", "{PROFILE,build,verify,push}")
    b = subparser(inner, "build", help="build containers of PROFILE (the default command)",
                  description=BUILD_DESCRIPTION, json=True, handler=_build)  # fmt: skip
    b.add_argument(
        "profile", metavar="PROFILE", type=profile_ref, help="profile name (profiles list) or YAML path"
    )
    b.add_argument("--format", default=None, help="comma-separated formats (default: the profile's)")
    b.add_argument("--out", type=Path, default=Path("build/containers"),
                   help="output folder (default: %(default)s)")  # fmt: skip
    b.add_argument("--source", action="append", metavar="URL|DIR",
                   help="Stratum URL or repository folder (default: the profile's servers)")  # fmt: skip
    b.add_argument("--key", action="append", type=existing_file, metavar="PATH",
                   help="repository public key (default: the profile's)")  # fmt: skip
    snap = b.add_mutually_exclusive_group()
    snap.add_argument("--tag", help="read this tag instead of the profile's snapshot")
    snap.add_argument("--root-hash", help="read the revision with this root catalog hash")
    b.add_argument("--path", help="repository path of the root tree (default: the profile's cvmfs.path)")
    b.add_argument(
        "--name", metavar="REGISTRY/REPO:TAG", help="image reference (default: cernvm/PROFILE:TAG)"
    )
    b.add_argument("--keep-mtimes", action="store_true", help="keep the repository's mtimes")
    b.add_argument(
        "--layer-size",
        type=size,
        default=DEFAULT_LAYER_BYTES,
        metavar="SIZE",
        help="cut directories heavier than this into layers of their own (default: 64M)",
    )
    b.add_argument(
        "--parent",
        type=existing_path,
        metavar="IMAGE",
        help="build on top of this earlier image of the same repository path (NAME.oci or NAME.oci.tar):"
        " its layers reused byte for byte, plus one layer with what changed (see above)",
    )
    b.add_argument("--devices", action="store_true",
                   help="create device nodes in trees written to disk (sandbox; needs root)")  # fmt: skip
    b.add_argument("--basename", help="output file base name (default: the profile name)")
    hub = b.add_argument_group("cvmfs and thin formats")
    hub.add_argument(
        "--hub-fqrn", default="unpacked.cern.ch", help="hub repository name (default: %(default)s)"
    )
    hub.add_argument(
        "--hub-stratum", type=existing_folder, help="local Stratum-0 folder of the hub (cvmfs format)"
    )
    hub.add_argument("--hub-keys", type=existing_folder, help="folder with the hub's keys (cvmfs format)")

    v = subparser(inner, "verify", help="check an image against the snapshot it names",
                  description=VERIFY_DESCRIPTION, json=True, handler=_verify)  # fmt: skip
    v.add_argument(
        "image", type=existing_path, metavar="IMAGE", help="OCI layout/archive, docker-archive or sandbox"
    )
    v.add_argument("--source", action="append", metavar="URL|DIR", help="Stratum URL or repository folder")
    v.add_argument("--key", action="append", type=existing_file, metavar="PATH", help="repository public key")
    p = subparser(inner, "push", help="copy an OCI layout to a registry, signed with gpg if asked",
                  description=PUSH_DESCRIPTION, json=True, handler=_push)  # fmt: skip
    p.add_argument(
        "image", type=existing_path, metavar="IMAGE", help="an OCI layout made by 'container' (NAME.oci)"
    )
    p.add_argument("dest", metavar="DEST", help="host[:port]/repository:tag")
    p.add_argument("--tag", help="which tag of the layout (default: its first)")
    registry_options(p)
    p.add_argument("--sign-by", metavar="KEY", help="sign with this gpg key (skopeo's simple signing)")
    accept_any_word(inner)


PUSH_DESCRIPTION = """\
Copy an image (an OCI layout made by 'cernvm-build container') to a registry with skopeo. With
--sign-by KEY (a gpg key id or fingerprint; GNUPGHOME applies) the image is signed with skopeo's
simple signing; the signature goes to the lookaside store that --registries-d configures, where
skopeo and podman check it against a policy.json.

examples:
  cernvm-build container push build/containers/el9.oci registry.example/cernvm/el9:2026.11-1
  cernvm-build container push el9.oci 127.0.0.1:5000/cernvm/el9:r2 --no-tls-verify --sign-by KEYID \\
      --registries-d ./registries.d"""


def _checked(check: Callable[[Path], None]) -> Callable[[str], Path]:
    """The argparse type of a skopeo configuration flag: read and checked as the command line is
    (a bad policy failed only after the pull): one usage line with the file:line and a hint."""

    def convert(text: str) -> Path:
        from ..errors import CernVMError

        path = Path(text)
        try:
            check(path)
        except CernVMError as e:
            raise argparse.ArgumentTypeError(f"{e} ({e.hint})" if e.hint else str(e)) from None
        return path

    return convert


def registry_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-tls-verify", action="store_true", help="plain http or unverified TLS (local registries)"
    )
    p.add_argument(
        "--registries-d",
        type=_checked(check_registries_d),
        metavar="DIR",
        help="skopeo's registries.d (signature stores)",
    )
    p.add_argument(
        "--policy", type=_checked(check_policy), metavar="FILE", help="policy.json to check images against"
    )


def registry_opts(args: argparse.Namespace) -> RegistryOptions:
    return RegistryOptions(
        tls_verify=not args.no_tls_verify, registries_d=args.registries_d, policy=args.policy
    )


def _push(args: argparse.Namespace, out: Output) -> int:
    from ..container.registry import push

    digest = push(args.image, args.dest, tag=args.tag, sign_by=args.sign_by, opts=registry_opts(args))
    # signer: as release and image verify name it (signed_by, its former name: until 2027)
    doc = {"image": str(args.image), "dest": args.dest, "digest": digest, "signer": args.sign_by}
    doc["signed_by"] = args.sign_by
    out.data(doc, lambda d: out.print(f"{args.dest}@{digest}" + (" (signed)" if args.sign_by else "")))
    return 0


def _build(args: argparse.Namespace, out: Output) -> int:
    from ..container.from_profile import HubOptions, build_profile

    prof = profile_mod.load(args.profile)
    snapshot = SnapshotSpec(tag=args.tag, root_hash=args.root_hash) if args.tag or args.root_hash else None
    with out.reporter() as reporter:
        made = build_profile(
            prof,
            out_dir=args.out,
            formats=args.format.split(",") if args.format else None,
            basename=args.basename,
            sources=args.source,
            keys=args.key,
            snapshot=snapshot,
            path=args.path,
            reference=args.name,
            keep_mtimes=args.keep_mtimes,
            layer_bytes=args.layer_size,
            devices=args.devices,
            hub=HubOptions(fqrn=args.hub_fqrn, stratum=args.hub_stratum, keys_dir=args.hub_keys),
            parent=args.parent,
            ctx=BuildContext.from_environment(reporter=reporter),
        )
    for path, reason in made.result.skipped:
        out.warn(f"{made.description}: {path}: skipped ({reason})")

    def render(d: dict[str, Any]) -> None:
        out.print(styled((str(made.spec.reference), "bold"), f" from {made.description}"))
        out.table(
            ["format", "path", "sha256", "size"],
            [[a.format, _where(a), a.sha256[:16], _size(a)] for a in made.result.artifacts],
        )
        if made.result.parent is not None:
            out.print(made.result.parent.summary(), highlight=False)
        notable = made.result.report.summary()
        if notable:
            out.print(f"{notable} (listed with --json)", highlight=False)

    out.data(made.to_json(), render)
    return 0


def _where(a: Artifact) -> str:
    if a.format != "cvmfs":
        return str(a.path)
    state = "unchanged" if a.meta.get("unchanged") else f"revision {a.meta.get('revision')}"
    return f"{a.path}: {a.meta.get('public_path')} ({state})"


def _size(a: Artifact) -> str:
    if a.format == "cvmfs":
        return "-"
    return f"{a.size / 1e6:.1f} MB" if a.size >= 1e5 else f"{a.size} B"


def _verify(args: argparse.Namespace, out: Output) -> int:
    with out.progress(transfer=True) as bar:
        task = bar.add_task(f"verify {args.image.name}", total=None)
        result = verify_image(
            args.image,
            sources=args.source or (),
            keys=args.key or (),
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if not result.signatures_checked:
        out.warn("no public key: signatures not checked; contents are checked against the root hash")
    report = result.report

    def render(d: dict[str, Any]) -> None:
        if report.ok:
            out.print(
                styled(("ok", "green"), f" {args.image}: {report.checked} entries match {result.snapshot}")
            )
            return
        out.table(["path", "what", "expected", "found"],
                  [[x.path, x.what, x.expected, x.found] for x in report.differences])  # fmt: skip

    out.data(report.to_json(), render)
    result.raise_for_differences()
    return 0
