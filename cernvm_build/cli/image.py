"""``cernvm-build image``: μCernVM boot images of a profile; their pre-warmed scratch disks (seeds);
inspect and verify their signature block."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

from .. import table
from ..context import BuildContext
from ..errors import UsageError
from ..launch import config as launch_config
from . import areas, flags
from .app import HelpFormatter, Output, accept_any_word, subcommands_with_default, subparser, whole_number
from .inputs import existing_file, profile_ref
from .profiles import add_override_flags
from .profiles import load as load_profile

#: ``--initrd-level``: lz4's levels (``bootloader.initrd.LEVELS["lz4"]``, the compressor image builds
#: use), and ``seed --jobs``: ``cvmfs.replicate.MAX_JOBS``'s threads; copied, not imported, so that
#: parsing loads neither area (a test keeps them equal). Out of range, both were silently clamped.
INITRD_LEVELS = (1, 12)
SEED_JOBS = (1, 64)

# Handlers import the modules of their area when they run (deliberate lazy imports): `--help` and
# the other commands start without loading every area, and a missing optional extra only stops the
# command that needs it.

BUILD_DESCRIPTION = """\
Build μCernVM boot images of PROFILE: a Debian kernel (or the profile's vmlinuz + modules) and an
initrd that mounts the profile's CernVM-FS repository and path, pinned to a snapshot on first
boot, under a writable overlay on the scratch disk, then switch_roots into the OS.

The build opens the repository (signatures checked) to record the snapshot the profile's selector
names right now; an unreachable repository fails the build. The kernel package is fetched with apt
into the kernel cache once and checked against apt's SHA256.

formats (--format, comma-separated; default: the profile's image.formats):
  iso    hybrid ISO (isolinux, El Torito), signature block appended
  hdd    raw disk: MBR + one FAT partition with syslinux, signature block appended
  qcow2, vmdk, vdi, vhd   converted from the hdd with qemu-img

outputs in --out: ucernvm-<branch>.<YYYY.MM>-<N>.cernvm.x86_64.<fmt> with a .sha256 beside each,
and <name>.manifest.json listing every input (kernel package and sha256, busybox, Python, profile
hash, repository root hash/revision/tag) and every output. Same inputs + SOURCE_DATE_EPOCH give
byte-identical images. Outputs appear only when the whole build succeeded.

examples:
  cernvm-build image el9
  cernvm-build image demo --format iso,hdd,qcow2 --out build/images --json
  # signed (the build time, SOURCE_DATE_EPOCH, is the signing time: the certificate must cover it):
  SOURCE_DATE_EPOCH=$(date +%s) cernvm-build image demo \\
      --server http://127.0.0.1:8000/cvmfs/demo.cernvm.test \\
      --sign-key my-release.key --sign-cert my-release.crt
  cernvm-build image inspect build/images/ucernvm-demo.2026.11-1.cernvm.x86_64.iso
  cernvm-build image verify ucernvm-demo.2026.11-1.cernvm.x86_64.hdd --cert release.crt"""

INSPECT_DESCRIPTION = """\
Show the signature block of an iso or hdd image: the metadata (version, OS repository, snapshot
root hash, revision and tag, kernel), the signer's certificate and the image's sha256.

examples:
  cernvm-build image inspect ucernvm-demo.2026.11-1.cernvm.x86_64.iso
  cernvm-build image inspect ucernvm-demo.2026.11-1.cernvm.x86_64.hdd --json"""

VERIFY_DESCRIPTION = """\
Check the signature of an iso or hdd image: it covers every byte of the image plus the metadata.
With --cert the signer must also be that certificate; without it the image is only shown to be
unchanged since it was signed, by whoever holds the certificate it carries (a warning says so, and
--json has "trusted": false). Exit code 6 when the image was modified, is unsigned or was signed
by someone else.

examples:
  cernvm-build image verify ucernvm-demo.2026.11-1.cernvm.x86_64.iso
  cernvm-build image verify ucernvm-el9.2026.11-1.cernvm.x86_64.hdd --cert cvm-sign.crt --json"""

SEED_DESCRIPTION = """\
Make a pre-warmed scratch disk ("seed") for PROFILE's images: a qcow2 laid out as the μCernVM initrd
lays out the scratch disk on a first boot (MBR, ext4 UROOT), whose cache already holds the objects
a boot reads, verified and inflated as the in-guest mount daemon keeps them. An instance whose
scratch disk is a copy-on-write overlay on the seed (qemu-img create -b SEED -F qcow2) boots without
fetching them: as fast as a reboot, and the squids do not serve the same boot objects to every VM.

The seed holds no pin and nothing instance-specific: the first boot picks its snapshot as without
a seed. Objects are content-addressed, so a seed made for one revision still serves every file a
newer revision did not change (the others are fetched as usual).

The trace (--trace, repeatable) says which objects: the access log of the HTTP server during one
boot, from which every /data/XX/... object name is taken (failed requests are skipped), or a plain
list of object names (<hash>[suffix], one a line). Get one by booting once against a server that
logs: 'cernvm-build cvmfs serve DIR -vv 2> access.log', or your nginx/squid access log. Only the
names come from the trace: every object is fetched from the repository and checked against its hash
and its catalog entry. An object the repository lacks or whose bytes are wrong stops the run with
the trace line that named it; nothing is written then. An interrupted run re-run goes on from the
objects it has (kept in .OUTPUT.seed-work beside the output).

The repository, its name, keys and snapshot are the profile's; --server (a profile setting),
--source, --fqrn and --key override them. Needs mke2fs (e2fsprogs) and qemu-img (qemu-utils), no root.

examples:
  cernvm-build image seed debian12 --trace access.log -o debian12.seed.qcow2
  cernvm-build image seed demo --server http://127.0.0.1:8000/cvmfs/demo.cernvm.test \\
      --trace boot.log -o demo.seed.qcow2 --disk 20G --json
  cernvm-build image seed demo --source /srv/cvmfs/demo.cernvm.test --trace objects.txt -o s.qcow2"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "image",
        help=areas.HELP["image"],
        description=BUILD_DESCRIPTION,
        formatter_class=HelpFormatter,
        usage="cernvm-build image [build] PROFILE [options]\n"
        "       cernvm-build image seed PROFILE --trace FILE -o OUT.qcow2 [options]\n"
        "       cernvm-build image inspect IMAGE\n"
        "       cernvm-build image verify IMAGE [--cert PEM]",
    )
    # ``image PROFILE ...`` means ``image build PROFILE ...``; ``image inspect|verify`` stay.
    inner = subcommands_with_default(group, "build", "{PROFILE,build,seed,inspect,verify}")
    b = subparser(inner, "build", help="build the images of PROFILE (the default command)",
                  description=BUILD_DESCRIPTION, json=True, handler=_build)  # fmt: skip
    b.add_argument(
        "profile", metavar="PROFILE", type=profile_ref, help="profile name (profiles list) or YAML path"
    )
    b.add_argument("--format", default=None, help="comma-separated formats (default: the profile's)")
    b.add_argument(
        "--out", type=Path, default=Path("build/images"), help="output folder (default: %(default)s)"
    )
    b.add_argument("--kernel-cache", type=Path, metavar="DIR",
                   help="where kernel packages are kept (default: $CERNVM_CACHE_DIR/kernel)")  # fmt: skip
    b.add_argument("--sign-key", type=existing_file, metavar="PEM", help="RSA private key that signs iso/hdd")
    b.add_argument("--sign-cert", type=existing_file, metavar="PEM", help="its X.509 certificate (embedded)")
    b.add_argument("--python", metavar="PATH", help="interpreter for the initrd (default: /usr/bin/python3)")
    b.add_argument(
        "--initrd-level",
        type=whole_number(*INITRD_LEVELS),
        metavar="N",
        help=f"lz4 level of the initrd, {INITRD_LEVELS[0]}-{INITRD_LEVELS[1]} ({INITRD_LEVELS[1]})",
    )
    b.add_argument(
        "--boot-list",
        action="append",
        type=existing_file,
        metavar="TRACE",
        help="carry the object names of this boot's trace (an access log or a list of names, "
        "as image seed reads; repeatable) in the initrd: the first boot's mount fetches them "
        "ahead, pipelined, once mounted. KBs in the image, works with any scratch disk, still "
        "fetches over the network; a seed (image seed) fetches nothing but is a ~100 MB disk",
    )
    add_override_flags(b)

    s = subparser(inner, "seed", help="a pre-warmed scratch disk (qcow2) from a boot's trace",
                  description=SEED_DESCRIPTION, json=True, handler=_seed)  # fmt: skip
    s.add_argument(
        "profile", metavar="PROFILE", type=profile_ref, help="profile name (profiles list) or YAML path"
    )
    s.add_argument("--trace", action="append", required=True, type=existing_file, metavar="FILE",
                   help="an access log of one boot or a list of object names (repeatable)")  # fmt: skip
    s.add_argument(
        "-o",
        "--output",
        "--out",  # the other commands' spelling of where the output goes
        required=True,
        type=Path,
        metavar="OUT.qcow2",
        help="the seed disk",
    )
    s.add_argument("--source", metavar="URL|DIR",
                   help="fetch from this Stratum URL or local folder (default: the servers)")  # fmt: skip
    s.add_argument("--fqrn", help="repository name (default: the profile's cvmfs.repository)")
    s.add_argument("--key", action="append", default=[], type=existing_file, metavar="PEM",
                   help="master public key (repeatable; default: the profile's public_keys)")  # fmt: skip
    s.add_argument("--proxy", metavar="P", help="HTTP proxy of this host, '|'/';' separated (default: none)")
    s.add_argument(
        "-j",
        "--jobs",
        type=whole_number(*SEED_JOBS),
        default=8,
        help=f"parallel downloads, {SEED_JOBS[0]}-{SEED_JOBS[1]} (default 8)",
    )
    flags.add(s, [launch_config.BY_KEY["disk"]])
    add_override_flags(s)

    i = subparser(inner, "inspect", help="show an image's signature block",
                  description=INSPECT_DESCRIPTION, json=True, handler=_inspect)  # fmt: skip
    i.add_argument("image", type=existing_file, metavar="IMAGE", help="an iso or hdd image")
    v = subparser(inner, "verify", help="check an image's signature",
                  description=VERIFY_DESCRIPTION, json=True, handler=_verify)  # fmt: skip
    v.add_argument("image", type=existing_file, metavar="IMAGE", help="an iso or hdd image")
    v.add_argument("--cert", type=existing_file, metavar="PEM", help="the signer must be this certificate")
    accept_any_word(inner)
    # argparse builds a leaf's prog from the group's usage text (several lines here): name them plainly
    for name, leaf in (("build", b), ("seed", s), ("inspect", i), ("verify", v)):
        leaf.prog = f"cernvm-build image {name}"
        leaf.set_defaults(command_name=leaf.prog)


def _build(args: argparse.Namespace, out: Output) -> int:
    from ..image import build as build_mod
    from ..image import signature

    prof = load_profile(args.profile, out, args)
    build_mod.parse_formats(args.format, list(prof.image.formats))
    if (args.sign_key is None) != (args.sign_cert is None):
        raise UsageError("--sign-key and --sign-cert go together", hint="pass both, or neither")
    signer = signature.load_signer(args.sign_key, args.sign_cert) if args.sign_key else None
    boot_list = None
    if args.boot_list:
        from ..bootloader import seed

        boot_list = seed.boot_list(args.boot_list, prof.cvmfs.repository)
    with out.reporter(steps_as_detail=True) as reporter:
        result = build_mod.build_image(
            prof,
            args.out,
            ctx=BuildContext.from_environment(reporter=reporter),
            formats=args.format,
            kernel_cache=args.kernel_cache,
            signer=signer,
            python=args.python,
            initrd_level=args.initrd_level,
            boot_list=boot_list,
        )
    doc = {
        "profile": prof.name,
        "repository": result.snapshot.to_json(),
        "kernel": result.kernel.to_json(),
        "initrd": {"size": result.initrd_size, "payload_size": result.initrd_payload},
        "boot_list": {"names": result.boot_list[0], "bytes": result.boot_list[1]},
        "manifest": str(result.manifest),
        "artifacts": [a.to_json() for a in result.artifacts],
    }

    def render(d: dict[str, Any]) -> None:
        s = result.snapshot
        out.print(f"repository {s.fqrn} revision {s.revision} root {s.root_hash} tag {s.tag or '-'}")
        out.print(
            f"kernel {result.kernel.version} ({result.kernel.package or 'tree'}), initrd "
            f"{result.initrd_size / 1e6:.1f} MB ({result.initrd_payload / 1e6:.1f} MB unpacked)"
        )
        if result.boot_list[0]:
            out.print(f"boot list {result.boot_list[0]} object names ({result.boot_list[1] / 1e3:.1f} KB)")
        out.table(
            ["image", "format", "size", "sha256"],
            [(a.path.name, a.format, f"{a.size / 1e6:.1f} MB", a.sha256[:16]) for a in result.artifacts],
        )
        out.print(f"manifest {result.manifest}")

    out.data(doc, render)
    return 0


def _seed(args: argparse.Namespace, out: Output) -> int:
    from ..bootloader import seed
    from ..cvmfs import blacklist
    from ..cvmfs.repository import SnapshotSpec

    prof = load_profile(args.profile, out, args)
    size_mb = launch_config.from_flags(flags.given(args, [launch_config.BY_KEY["disk"]])).get(
        "disk", launch_config.DEFAULTS.disk
    )
    if args.source and table.has_credentials(args.source):
        refused = table.credentials_refused(args.source)
        raise UsageError(f"--source: {refused.message}", hint=refused.hint)
    source: str | list[str] = args.source or prof.cvmfs.server_urls()
    if not source:
        raise UsageError(f"profile {prof.name} names no server", hint="pass --server URL or --source URL|DIR")
    fqrn = args.fqrn or prof.cvmfs.repository
    objects = seed.traces_objects(
        args.trace,
        fqrn,
        seed.MAX_SEED_NAMES,
        "seed",
        "seed the objects of a few boots, not a whole repository",
    )
    if not objects:
        raise UsageError(
            f"{', '.join(map(str, args.trace))}: no object names in the trace",
            hint="an access log with GET /cvmfs/<fqrn>/data/XX/... lines, or one object name a line",
        )
    snap = prof.cvmfs.snapshot
    # the folders -o names that are not there yet: a failed seed leaves none of them behind (an
    # interrupted one keeps its work folder, which a re-run goes on from)
    made = [d for d in Path(os.path.abspath(args.output)).parents if not d.exists()]
    try:
        with out.reporter() as reporter:
            result = seed.make_seed(
                source,
                fqrn,
                args.key or prof.cvmfs.public_keys,
                objects,
                args.output,
                size_mb=size_mb,
                reporter=reporter,
                proxy=args.proxy,
                jobs=args.jobs,
                snapshot=SnapshotSpec(tag=snap.tag, date=snap.date, root_hash=snap.root_hash),
                blacklist=blacklist.of_image(prof.cvmfs.blacklist),
            )
    except Exception:
        for d in made:  # deepest first; only empty ones
            with contextlib.suppress(OSError):
                d.rmdir()
        raise

    def render(d: dict[str, Any]) -> None:
        out.print(
            f"{d['path']}: {d['objects']} objects of {d['fqrn']} revision {d['revision']} "
            f"({d['inflated'] / 1e6:.1f} MB inflated, {d['catalogs']} catalogs), "
            f"{d['size_mb']} MB disk, {d['disk_bytes'] / 1e6:.1f} MB on the host"
        )
        if d["foreign"]:
            out.print(f"{d['foreign']} traced files are not in that revision: kept compressed")

    out.data(result.to_json(), render)
    return 0


def _inspect(args: argparse.Namespace, out: Output) -> int:
    from ..image import signature

    doc = signature.describe(args.image, signature.read_trailer(args.image))

    def render(d: dict[str, Any]) -> None:
        rows = [(k, v) for k, v in d["metadata"].items()]
        rows += [
            ("signed", "yes" if d["signed"] else "no"),
            ("signer", d["signer"] or "-"),
            ("sha256", d["sha256"]),
        ]
        out.table(["field", "value"], rows, title=str(args.image))

    out.data(doc, render)
    return 0


def _verify(args: argparse.Namespace, out: Output) -> int:
    from ..image import signature

    trusted = signature.load_certificate(args.cert) if args.cert else None
    t = signature.verify(args.image, trusted)
    # without --cert the image is only whole: anyone can sign with a certificate of their own
    doc = {**signature.describe(args.image, t), "valid": True, "trusted": trusted is not None}
    out.data(doc, lambda d: out.print(f"{args.image}: signature OK, signed by {d['signer']}"))
    v = doc["certificate_validity"]
    if v["valid_when_signed"] is None:
        out.warn(
            f"{args.image}: the signature block records no build time: the certificate's validity "
            f"({v['not_before']} to {v['not_after']}) was checked against no time"
        )
    elif v["expired_on"]:
        out.warn(
            f"{args.image}: the certificate was valid when signed ({v['build_time']}); expired on "
            f"{v['expired_on']}"
        )
    if trusted is None:
        out.warn(
            f"{args.image}: the signer's certificate is the one in the image, trusted by nothing: the "
            "image is unchanged since signing, not proven to be the publisher's; pass --cert PEM of the "
            "release signer"
        )
    return 0
