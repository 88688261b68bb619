"""``cernvm-build image``: μCernVM boot images of a profile; inspect and verify their signature block."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..context import BuildContext
from ..errors import UsageError
from .app import HelpFormatter, Output, accept_any_word, subcommands_with_default, subparser
from .profiles import add_override_flags
from .profiles import load as load_profile

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
  cernvm-build image demo --server http://127.0.0.1:8000/cvmfs/demo.cernvm.test \\
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
With --cert the signer must also be that certificate. Exit code 6 when the image was modified,
is unsigned or was signed by someone else.

examples:
  cernvm-build image verify ucernvm-demo.2026.11-1.cernvm.x86_64.iso
  cernvm-build image verify ucernvm-el9.2026.11-1.cernvm.x86_64.hdd --cert cvm-sign.crt --json"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "image",
        help="μCernVM boot images (iso, hdd, qcow2, vmdk, vdi, vhd); inspect, verify",
        description=BUILD_DESCRIPTION,
        formatter_class=HelpFormatter,
        usage="cernvm-build image [build] PROFILE [options]\n"
        "       cernvm-build image inspect IMAGE\n"
        "       cernvm-build image verify IMAGE [--cert PEM]",
    )
    # ``image PROFILE ...`` means ``image build PROFILE ...``; ``image inspect|verify`` stay.
    inner = subcommands_with_default(group, "build", "{PROFILE,build,inspect,verify}")
    b = subparser(inner, "build", help="build the images of PROFILE (the default command)",
                  description=BUILD_DESCRIPTION, json=True, handler=_build)  # fmt: skip
    b.add_argument("profile", metavar="PROFILE", help="profile name (profiles list) or YAML path")
    b.add_argument("--format", default=None, help="comma-separated formats (default: the profile's)")
    b.add_argument(
        "--out", type=Path, default=Path("build/images"), help="output folder (default: %(default)s)"
    )
    b.add_argument("--kernel-cache", type=Path, metavar="DIR",
                   help="where kernel packages are kept (default: $CERNVM_CACHE_DIR/kernel)")  # fmt: skip
    b.add_argument("--sign-key", type=Path, metavar="PEM", help="RSA private key that signs iso/hdd")
    b.add_argument("--sign-cert", type=Path, metavar="PEM", help="its X.509 certificate (embedded)")
    b.add_argument("--python", metavar="PATH", help="interpreter for the initrd (default: /usr/bin/python3)")
    b.add_argument("--initrd-level", type=int, metavar="N", help="zstd level of the initrd, 1-19 (19)")
    add_override_flags(b)

    i = subparser(inner, "inspect", help="show an image's signature block",
                  description=INSPECT_DESCRIPTION, json=True, handler=_inspect)  # fmt: skip
    i.add_argument("image", type=Path, metavar="IMAGE", help="an iso or hdd image")
    v = subparser(inner, "verify", help="check an image's signature",
                  description=VERIFY_DESCRIPTION, json=True, handler=_verify)  # fmt: skip
    v.add_argument("image", type=Path, metavar="IMAGE", help="an iso or hdd image")
    v.add_argument("--cert", type=Path, metavar="PEM", help="the signer must be this certificate")
    accept_any_word(inner)


def _build(args: argparse.Namespace, out: Output) -> int:
    from ..image import build as build_mod
    from ..image import signature

    prof = load_profile(args.profile, out, args)
    build_mod.parse_formats(args.format, list(prof.image.formats))
    if (args.sign_key is None) != (args.sign_cert is None):
        raise UsageError("--sign-key and --sign-cert go together", hint="pass both, or neither")
    signer = signature.load_signer(args.sign_key, args.sign_cert) if args.sign_key else None
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
        )
    doc = {
        "profile": prof.name,
        "repository": result.snapshot.to_json(),
        "kernel": result.kernel.to_json(),
        "initrd": {"size": result.initrd_size, "payload_size": result.initrd_payload},
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
        out.table(
            ["image", "format", "size", "sha256"],
            [(a.path.name, a.format, f"{a.size / 1e6:.1f} MB", a.sha256[:16]) for a in result.artifacts],
        )
        out.print(f"manifest {result.manifest}")

    out.data(doc, render)
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
    doc = {**signature.describe(args.image, t), "valid": True}
    out.data(doc, lambda d: out.print(f"{args.image}: signature OK, signed by {d['signer']}"))
    return 0
