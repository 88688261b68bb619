"""``cernvm-launch`` contexts: where create's user data comes from (a file, ``--context URL``, the
default) and the ``context`` verb, which checks a context exactly as create would and shows what the
instance gets (``launch/contextsrc.py``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import launch
from ..errors import UsageError
from .app import Output
from .inputs import local_or_url
from .launch_common import ask, leaf


def user_data(args: argparse.Namespace, out: Output) -> tuple[bytes, str] | None:
    """create's user data: USER_DATA_FILE or --context URL (read the same way), else the default."""
    source = args.user_data_file or args.context
    if args.user_data_file and args.context:
        raise UsageError("give USER_DATA_FILE or --context URL, not both", hint="drop one of them")
    if source:
        from ..launch.contextsrc import read_context  # here: it loads the profile layer (jinja2, YAML)

        return read_context(source)
    data, name = launch.default_user_data()
    if not args.yes:
        if sys.stdin.isatty():
            out.err.print(data.decode(errors="replace"), markup=False, highlight=False)
        answer = ask("Continue with default context? [Y/n] ", "a USER_DATA_FILE, or --yes", "y")
        if answer.lower() not in ("y", "yes"):
            return None
    return data, name


def cmd_context(args: argparse.Namespace, out: Output) -> int:
    from ..launch.contextsrc import load_context  # see user_data

    data, name, parsed = load_context(args.source)
    cc = parsed.cloud_config or {}
    keys = cc.get("ssh_authorized_keys") if isinstance(cc.get("ssh_authorized_keys"), list) else []
    result: dict[str, Any] = {
        "source": name,
        "bytes": len(data),
        "ucernvm": parsed.ucernvm,
        "cloud_config_keys": sorted(str(k) for k in cc),
        "hostname": cc.get("hostname"),
        "ssh_authorized_keys": len(keys or []),
        "other_parts": [p.content_type for p in parsed.parts],
        "warnings": parsed.warnings,
    }

    def render(d: dict[str, Any]) -> None:
        # each a line of its own (``Output.print``): a cloud-config key is any YAML string, and
        # "a\n  SSH keys: 99" forged the summary's lines of a context fetched from a URL (pr26b 12)
        out.print(f"{d['source']}: a valid context ({d['bytes']} bytes)", highlight=False)
        for k, v in d["ucernvm"].items():
            out.print(f"  ucernvm {k}={v}", highlight=False)
        if d["cloud_config_keys"]:
            out.print(f"  cloud-config: {', '.join(d['cloud_config_keys'])}", highlight=False)
        out.print(f"  SSH keys: {d['ssh_authorized_keys']}", highlight=False)

    out.data(result, render)
    if not out.json_mode:  # (--json has them in its document)
        for w in parsed.warnings:
            out.warn(w)
    return 0


def register(sub: Any) -> None:
    p = leaf(
        sub,
        "context",
        "check a context (user data) as create would",
        "Read a context from a file or URL (http, https, file; at most 1 MiB) and check it exactly as\n"
        "create does: the [ucernvm-begin] keys by the bootloader's table (refused at source:line),\n"
        "cloud-config as YAML, MIME parts, gzip. Prints what the instance will get.\n\n"
        "  cernvm-launch context user-data.txt\n"
        "  cernvm-launch context https://example.org/my-vm.txt --json",
        cmd_context,
        json=True,
    )
    p.add_argument("source", type=local_or_url, metavar="FILE_OR_URL")
