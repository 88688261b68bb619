"""``cernvm-launch``: CernVM instances on libvirt, with the original cernvm-launch's command line.

The verbs, flags (``--sharedFolder`` too), positional USER_DATA_FILE and CONFIGURATION_FILE and
``~/.cernvm-launch.conf`` keys are the original's; ``console``, ``ip``, ``wait``, ``scp``, ``images``,
``list --json`` and ``--connect`` are new. Exit codes are the toolkit's one map (``errors.EXIT_CODES``,
the same as ``cernvm-build``), not the original's 1-4. Questions are asked only on a terminal;
elsewhere the command fails naming the flag that answers them. Every decision (which image, whether
it may boot, which snapshot, what create undoes) is the ``launch`` library's; this module parses,
asks, calls and prints.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__, launch, proc
from ..bootloader import userdata
from ..errors import CernVMError, NotReadyError, UsageError
from ..launch import config
from ..launch.bootwatch import plain, shown
from ..launch.names import validate_name
from ..report import scoped
from ..termtext import visible
from . import flags, launch_context, launch_images
from .app import EXIT_CODES_EPILOG, ArgumentParser, HelpFormatter, Output, run, stopped_early, whole_number
from .inputs import image_ref, local_or_url, present
from .launch_common import Connect, ask, host_of, leaf, settings_of

EPILOG = f"""\
{EXIT_CODES_EPILOG}
  ssh NAME -- CMD exits with the remote command's status.

{config.keys_help()}

precedence: command line > CONFIGURATION_FILE > ~/.cernvm-launch.conf > defaults.
A CONFIGURATION_FILE may be someone else's: it may not set sharedFolder, launchHomeFolder,
releaseKeys, imageIndexes, diskPath, seed or an image path, and its connect= takes only the
parameters name, socket, mode, no_tty and known_hosts.
The libvirt URI: --connect, else $LIBVIRT_DEFAULT_URI, else qemu:///system as root and
qemu:///session otherwise. Instances and images live in launchHomeFolder (default
/var/lib/cernvm-launch for qemu:///system as root, else $XDG_DATA_HOME/cernvm-launch, i.e.
~/.local/share/cernvm-launch, or ~/.cernvm when an earlier version made it; $CERNVM_LAUNCH_HOME)."""

DESCRIPTION = """\
Run CernVM virtual machines on libvirt (KVM when it works, TCG otherwise).

  cernvm-launch images add build/ucernvm-demo.2026.11-1.cernvm.x86_64.iso --profile demo
  cernvm-launch create --name analysis --cpus 2 --memory 4096 user-data.txt
  cernvm-launch create --name web --context https://example.org/vm.txt   # made on cvmfs.io/context/
  cernvm-launch ssh analysis -- cat /etc/os-release
  cernvm-launch scp results.root analysis:/tmp/
  cernvm-launch list --json
  cernvm-launch stop analysis && cernvm-launch start analysis
  cernvm-launch destroy --force analysis

Preservation: cernvm-launch create --profile el5 --snapshot TAG (or --date 2011-06-01) boots a
frozen profile's verified image pinned to that CernVM-FS snapshot; the base image is never written.
create is all or nothing: failed or interrupted (Ctrl-C, SIGTERM) at any step, it leaves nothing."""

# -- create -----------------------------------------------------------------------------------------


CREATE_FLAGS = ("name", "cpus", "memory", "disk", "sharedFolder", "image", "profile", "network", "sshPort",
                "sshUser", "waitTimeout", "seed")  # fmt: skip
IMPORT_FLAGS = ("name", "cpus", "memory", "disk", "sharedFolder")


def cmd_create(args: argparse.Namespace, out: Output) -> int:
    s = settings_of(args, *CREATE_FLAGS)
    # the user-data keys given as flags, checked by the bootloader's table (it would ignore bad ones)
    given = flags.given(args, userdata.SETTINGS)
    # (a --date no calendar has is refused here too: the setting's own rule, table.Setting.canonical)
    block = config.from_flags(given)
    host = host_of(args, s)
    name = s.name
    if not name:
        source = args.user_data_file or args.context
        suggestion = Path(source.rstrip("/")).stem if source else "CernVM"
        name = (
            suggestion
            if args.yes
            else ask(f"Enter VM name [{suggestion}]: ", "--name NAME (or --yes for the default)", suggestion)
        )
    name = validate_name(name)
    ud = launch_context.user_data(args, out)
    if ud is None:
        out.info("aborted")
        return UsageError.exit_code
    spec = launch.InstanceSpec(
        settings=s,
        name=name,
        user_data=ud[0],
        user_data_source=ud[1],
        image=args.iso,
        snapshot=block.get("snapshot"),
        date=block.get("date"),
        cert=Path(args.cert) if args.cert else None,
        cvmfs_server=block.get("cvmfs_server"),
        cvmfs_http_proxy=block.get("cvmfs_http_proxy"),
        start=not args.no_start,
        context_label=args.context_label,
        forwards=tuple(launch.parse_forward(f) for f in args.forward or ()),
    )
    return _create(
        host, spec, out, wait=not args.no_start and not args.no_wait, rm_on_failure=args.rm_on_failure
    )


def _create(
    host: launch.Host, spec: launch.InstanceSpec, out: Output, *, wait: bool, rm_on_failure: bool = False
) -> int:
    name = spec.name
    with out.reporter() as report:
        inst = launch.create_instance(spec, host=host, reporter=scoped(report, f"creating {name}"))
    acc = host.accel
    out.detail(f"accelerator: {acc.name.upper()} ({acc.reason})")
    if wait:
        home = launch.home_for(spec.settings, host.uri)
        _wait(
            host,
            name,
            spec.settings.wait_timeout,
            out,
            home,
            remove_on_failure=home if rm_on_failure else None,
        )
    out.info(f"instance '{name}' {inst.state} ({acc.name.upper()}); ssh: cernvm-launch ssh {name}")
    if out.json_mode:
        out.data(launch.get_instance(host, name).to_json())
    return 0


def _wait(
    host: launch.Host,
    name: str,
    timeout: float,
    out: Output,
    home: Path,
    *,
    remove_on_failure: Path | None = None,
) -> None:
    try:
        with out.reporter() as report:
            launch.wait_ready(
                host,
                name,
                timeout=timeout,
                reporter=scoped(report, name),
                remove_on_failure=remove_on_failure,
                home=home,
            )
    except NotReadyError as e:
        if e.console_tail:
            out.err.print(f"--- {name}'s console ---", markup=False)
            out.err.print(visible(shown(e.console_tail)), markup=False, highlight=False)  # the guest wrote it
            out.err.print("---", markup=False)
        raise


# -- other verbs ------------------------------------------------------------------------------------


def _line(text: str) -> None:
    """The original's tab-separated lines, untouched by rich (which would expand the tabs); each field
    made visible as one line: a domain's metadata (editable by anyone who can define domains on a
    shared hypervisor) may hold a CR, a newline or a C1 control (U+009B is CSI), which XML allows."""
    sys.stdout.write("\t".join(visible(f, one_line=True) for f in text.split("\t")) + "\n")


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    host = host_of(args)
    found = launch.list_instances(host, running_only=args.running)
    if args.name:
        found = [i for i in found if i.name == args.name]
        if not found:
            launch.get_instance(host, args.name)  # raises the "no instance" line
    if out.json_mode:
        out.data([i.to_json() for i in found])
        return 0
    if out.quiet:  # -q: the listing is a result shown for people (Output.print's rule)
        return 0
    for inst in found:
        m = inst.meta
        assert m is not None
        version = Path(m.image).name
        port = m.ssh_port if m.network == "user" else m.network
        if args.name:
            _line(f"{inst.name}:")
            for key, value in (
                ("state", inst.state),
                ("cpus", m.cpus),
                ("memory", m.memory),
                ("disk", m.disk),
                ("cernvmVersion", version),
                ("profile", m.profile or "-"),
                ("snapshot", m.snapshot or "-"),
                ("baseFolder", m.home),
                ("sharedFolder", m.shared_folder or "-"),
                ("host key", m.host_fingerprint),
            ):
                _line(f"\t{key}: {value}")
            if inst.broken:
                _line(f"\tbroken: {inst.broken} (remove it: cernvm-launch destroy {inst.name})")
            if m.network == "user":
                _line(f"\tforwarded ports: {m.api_port} (VM) --> {m.ssh_port} (localhost)")
        else:
            _line(f"{inst.name}:\tCVM: {version}\tport: {port}\tstate: {inst.state}")
    return 0


def cmd_start(args: argparse.Namespace, out: Output) -> int:
    s = settings_of(args, "waitTimeout")
    host = host_of(args, s)
    inst = launch.start(host, args.name, fresh=args.fresh)
    out.info(f"instance '{args.name}' {inst.state}")
    if args.wait:
        _wait(host, args.name, s.wait_timeout, out, launch.home_for(s, host.uri))
    return 0


def cmd_stop(args: argparse.Namespace, out: Output) -> int:
    mode = "poweroff" if args.force else "shutdown" if args.shutdown else "save"
    inst = launch.stop(host_of(args), args.name, mode=mode)
    out.info(f"instance '{args.name}' {inst.state}")
    return 0


def cmd_pause(args: argparse.Namespace, out: Output) -> int:
    launch.pause(host_of(args), args.name)
    out.info(f"instance '{args.name}' paused; 'cernvm-launch start {args.name}' resumes it")
    return 0


def cmd_destroy(args: argparse.Namespace, out: Output) -> int:
    host = host_of(args)
    inst = launch.get_instance(host, args.name)
    force = args.force
    if not force and not inst.broken and launch.is_active(host, args.name):
        answer = ask(f"{args.name} is {inst.state}, do you want to destroy it? [y/N] ", "--force", "n")
        if answer.lower() not in ("y", "yes"):
            out.info("not destroyed")
            return CernVMError.exit_code
        force = True
    left = launch.destroy(host, args.name, force=force, home=launch.home_for(settings_of(args), host.uri))
    if left is not None:
        out.warn(
            f"{left}: not removed, it is not instance '{args.name}''s own folder under the launch home"
            " (the domain's metadata named it); remove it yourself if it is a leftover"
        )
    out.info(f"instance '{args.name}' destroyed")
    return 0


def cmd_ssh(args: argparse.Namespace, out: Output) -> int:
    """As OpenSSH: a command runs without a terminal (stdin passed on when it is not one), unless -t;
    no command is a login shell on a terminal, unless -T; -X/-Y hand the session to OpenSSH's own
    client (X11 forwarding), with the instance's key and pinned host key."""
    settings = settings_of(args)
    host = host_of(args, settings)
    home = launch.home_for(settings, host.uri)  # the key used must be in its folder there
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    tty_in = sys.stdin.isatty()
    if args.x11:
        argv = launch.openssh_argv(host, args.target, command, x11=args.x11, tty=args.tty, home=home)
        return proc.run(argv, capture=False, check=False).returncode
    want_tty = args.tty if args.tty is not None else not command
    if want_tty and tty_in:
        return launch.ssh_interactive(host, args.target, command, home=home)
    stdin = None if tty_in or args.no_stdin else sys.stdin.buffer
    out_, err_ = sys.stdout.buffer, sys.stderr.buffer
    return launch.ssh_run(host, args.target, command, stdin=stdin, stdout=out_, stderr=err_, home=home)


def cmd_forward(args: argparse.Namespace, out: Output) -> int:
    host_port, guest_port = launch.parse_forward(args.ports, flag="PORTS")
    host = host_of(args)
    launch.add_forward(host, args.name, host_port, guest_port)
    where = f"{host.remote}'s 127.0.0.1" if host.remote else "127.0.0.1"
    out.info(f"{where}:{host_port} --> port {guest_port} of '{args.name}' (kept for later boots)")
    tunnel = launch.forward_command(host, args.name, host_port)
    if tunnel:
        out.info(f"to reach it from here: {shlex.join(tunnel)}")
    return 0


def cmd_scp(args: argparse.Namespace, out: Output) -> int:
    if len(args.paths) < 2:
        raise UsageError(
            "scp needs a SOURCE and a DEST", hint="e.g. cernvm-launch scp -r results analysis:/tmp/"
        )
    *sources, dest = args.paths
    settings = settings_of(args)
    host = host_of(args, settings)
    landed = launch.scp(
        host, sources, dest, recursive=args.recursive, home=launch.home_for(settings, host.uri)
    )
    out.detail(f"copied to {', '.join(landed)}")
    return 0


#: ``--lines N``: 0 printed the whole tail, -3 all of it but its first 3 lines
MAX_LOG_LINES = 10000
_lines = whole_number(1, MAX_LOG_LINES)


def cmd_console(args: argparse.Namespace, out: Output) -> int:
    host = host_of(args)
    launch.get_instance(host, args.name)  # "no instance named ..." before anything else
    if args.log or not sys.stdin.isatty():
        tail = launch.console_tail(host, args.name, args.lines)
        if sys.stdout.isatty():  # the guest wrote it: no escape sequence reaches the terminal
            tail = visible(plain(tail))
        sys.stdout.write(tail + ("\n" if tail else ""))
        return 0
    out.info("console: press Ctrl-] to leave")
    proc.run(["virsh", "-c", host.uri, "console", args.name], capture=False, check=False)
    return 0


def cmd_ip(args: argparse.Namespace, out: Output) -> int:
    host = host_of(args)
    addr = launch.address(host, args.name)
    if addr is None:
        raise NotReadyError(
            f"instance '{args.name}' has no address yet", hint=f"'cernvm-launch wait {args.name}'"
        )
    # on a remote hypervisor the address is one on that machine (ssh/scp go through it)
    via = {"on": host.remote} if host.remote else {}
    out.data(
        {"name": args.name, "host": addr[0], "port": addr[1], **via},
        lambda d: out.print(f"{d['host']}:{d['port']}" + (f" on {d['on']}" if "on" in d else "")),
    )
    return 0


def cmd_wait(args: argparse.Namespace, out: Output) -> int:
    s = settings_of(args, "waitTimeout")
    host = host_of(args, s)
    _wait(host, args.name, s.wait_timeout, out, launch.home_for(s, host.uri))
    out.info(f"instance '{args.name}' answers SSH")
    return 0


def cmd_import(args: argparse.Namespace, out: Output) -> int:
    """The original imported an OVA into VirtualBox; here its boot disk becomes a cached hdd image
    (checked against the OVA's manifest) and an instance boots it with the default context."""
    s = settings_of(args, *IMPORT_FLAGS)
    ova = Path(args.ova_image_file)
    host = host_of(args, s)  # fail early when libvirt is not reachable
    image = launch.import_ova(host, s, ova)
    out.info(f"imported {ova.name} as image {image.name}")
    user_data, source = launch.default_user_data()
    name = validate_name(s.name or ova.stem)
    spec = launch.InstanceSpec(
        settings=s,
        name=name,
        user_data=user_data,
        user_data_source=source,
        image=str(image.path),
        start=not args.no_start,
    )
    return _create(host, spec, out, wait=False)


# -- parser -----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="cernvm-launch", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    parser.add_argument("-v", "--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--connect", metavar="URI", help="libvirt URI (default: see below)")
    sub = parser.add_subparsers(title="operations", metavar="COMMAND")

    p = leaf(
        sub,
        "create",
        "create (and start) an instance",
        "Create a CernVM instance and, unless --no-start, "
        "start it and wait until SSH answers.\n\n  cernvm-launch create --name a --memory 4096 ctx.txt\n"
        "  cernvm-launch create --profile el5 --snapshot TAG --name aleph --yes",
        cmd_create,
        json=True,
    )
    p.add_argument("--no-start", action="store_true", help="define the instance but do not start it")
    flags.add(p, [config.BY_KEY[k] for k in CREATE_FLAGS])
    p.add_argument("--iso", type=image_ref, metavar="PATH", help="boot this image file (iso, hdd or qcow2)")
    snap = p.add_mutually_exclusive_group()
    flags.add(snap, [userdata.SPEC["cvmfs_tag"], userdata.SPEC["cvmfs_date"]])
    p.add_argument(
        "--cert", type=present, metavar="PEM", help="require the image signature to be by this certificate"
    )
    flags.add(p, [userdata.SPEC["cvmfs_server"], userdata.SPEC["cvmfs_http_proxy"]])
    p.add_argument(
        "--context-label",
        choices=("CONFIG-2", "cidata"),
        default="CONFIG-2",
        help="volume label of the context ISO (default CONFIG-2)",
    )
    p.add_argument("--no-wait", action="store_true", help="return once started, without waiting for SSH")
    p.add_argument(
        "--rm-on-failure",
        action="store_true",
        help="remove the instance when its boot fails (default: power it off)",
    )
    p.add_argument(
        "--forward",
        action="append",
        metavar="HOST:GUEST",
        help="forward 127.0.0.1:HOST to the guest's port GUEST (repeatable; user networking)",
    )
    p.add_argument("-y", "--yes", action="store_true", help="accept the default context and name")
    p.add_argument(
        "--context", metavar="URL", help="fetch the context (user data) from a URL (http(s), file)"
    )
    p.add_argument(
        "user_data_file",
        nargs="?",
        type=local_or_url,
        metavar="USER_DATA_FILE",
        help="context: amiconfig, cloud-config, MIME",
    )
    p.add_argument(
        "configuration_file", nargs="?", type=present, metavar="CONFIGURATION_FILE", help="key=value settings"
    )

    p = leaf(
        sub,
        "import",
        "create an instance from an OVA appliance's boot disk",
        "Take the boot disk of an OVA (checked against its manifest), keep it as a cached hdd\n"
        "image, and create an instance from it with the default context.\n\n"
        "  cernvm-launch import --name old CernVM-4.ova",
        cmd_import,
        json=True,
    )
    p.add_argument("--no-start", action="store_true", help="define the instance but do not start it")
    flags.add(p, [config.BY_KEY[k] for k in IMPORT_FLAGS])
    p.add_argument(
        "ova_image_file",
        type=present,
        metavar="OVA_IMAGE_FILE",
        help="the appliance (a tar of .ovf, .mf and one self-contained .vmdk disk)",
    )
    p.add_argument(
        "configuration_file", nargs="?", type=present, metavar="CONFIGURATION_FILE", help="key=value settings"
    )

    p = leaf(
        sub,
        "destroy",
        "remove an instance and its disks, context and keys",
        "Remove the instance: domain, scratch disk, context ISO, keys, console log.\n"
        "A running instance needs --force (asked on a terminal).",
        cmd_destroy,
    )
    p.add_argument("--force", action="store_true", help="destroy even if running")
    p.add_argument("name", metavar="MACHINE_NAME")

    p = leaf(
        sub,
        "list",
        "list instances",
        "List instances: 'name:\\tCVM: <image>\\tport: <port>'; "
        "with NAME its details.\n\n  cernvm-launch list --running\n  cernvm-launch list --json",
        cmd_list,
        json=True,
    )
    p.add_argument("--running", action="store_true", help="only running instances")
    p.add_argument("name", nargs="?", metavar="MACHINE_NAME")

    for verb, helptext, func in (
        ("pause", "pause a running instance (start resumes it)", cmd_pause),
        ("ssh", "log in (or run a command: ssh NAME -- CMD)", cmd_ssh),
        ("start", "start (or resume) an instance", cmd_start),
        ("stop", "stop an instance, keeping its running state (like the original's savestate)", cmd_stop),
        ("console", "the serial console (interactive on a terminal, else its log)", cmd_console),
        ("ip", "where SSH answers (host:port)", cmd_ip),
        ("wait", "wait until the instance answers SSH", cmd_wait),
    ):
        p = leaf(sub, verb, helptext, helptext[0].upper() + helptext[1:] + ".", func, json=verb == "ip")
        if verb == "ssh":
            p.description = (
                "Log in with the instance's own key; the host key is the one launch generated.\n\n"
                "  cernvm-launch ssh analysis\n  cernvm-launch ssh user@analysis -- ls /cvmfs"
            )
            p.add_argument("target", metavar="[user@]MACHINE_NAME")
            tty = p.add_mutually_exclusive_group()
            tty.add_argument("-t", dest="tty", action="store_true", default=None, help="allocate a terminal")
            tty.add_argument("-T", dest="tty", action="store_false", help="no terminal, even for a shell")
            p.add_argument(
                "-n", dest="no_stdin", action="store_true", help="stdin from /dev/null (as ssh -n)"
            )
            x11 = p.add_mutually_exclusive_group()
            x11.add_argument(
                "-X", dest="x11", action="store_const", const="-X", help="X11 forwarding (untrusted)"
            )
            x11.add_argument(
                "-Y", dest="x11", action="store_const", const="-Y", help="X11 forwarding (trusted)"
            )
            p.add_argument("command", nargs=argparse.REMAINDER, help="command to run (after --)")
            continue
        p.add_argument("name", metavar="MACHINE_NAME")
        if verb == "start":
            p.add_argument("--fresh", action="store_true", help="discard a saved running state and boot")
            p.add_argument("--wait", action="store_true", help="wait until SSH answers")
            flags.add(p, [config.BY_KEY["waitTimeout"]])
        if verb == "stop":
            how = p.add_mutually_exclusive_group()
            how.add_argument("--shutdown", action="store_true", help="ask the guest to shut down (ACPI)")
            how.add_argument("--force", action="store_true", help="power off at once")
        if verb == "console":
            # the guest writes every byte of its console: say what reaches the terminal (pr26b)
            p.description = (
                "The serial console: interactive on a terminal (virsh console: the guest's output reaches\n"
                "the terminal as it is, escape sequences too; Ctrl-] leaves), else its log's last lines.\n"
                "The log printed to a terminal shows control characters escaped (\\x1b) and colours\n"
                "dropped; into a pipe or file it is the guest's text as written."
            )
            p.add_argument("--log", action="store_true", help="print the console log instead of attaching")
            p.add_argument(
                "--lines",
                type=_lines,
                default=50,
                metavar="N",
                help=f"lines of log to print (1..{MAX_LOG_LINES}; default 50)",
            )
        if verb == "wait":
            flags.add(p, [config.BY_KEY["waitTimeout"]])

    p = leaf(
        sub,
        "scp",
        "copy files and folders to or from an instance",
        "Copy as scp does; the remote side is [user@]NAME:PATH (globs expand on the instance).\n\n"
        "  cernvm-launch scp data.txt analysis:/tmp/\n  cernvm-launch scp -r results analysis:work/\n"
        "  cernvm-launch scp 'analysis:/tmp/*.root' .",
        cmd_scp,
    )
    p.add_argument("-r", dest="recursive", action="store_true", help="copy folders and their contents")
    p.add_argument("paths", nargs="+", metavar="SOURCE... DEST")

    p = leaf(
        sub,
        "forward",
        "forward a 127.0.0.1 port to a running instance",
        "Forward 127.0.0.1:HOST to the instance's port GUEST now; later boots keep it.\n\n"
        "  cernvm-launch forward analysis 8080:80",
        cmd_forward,
    )
    p.add_argument("name", metavar="MACHINE_NAME")
    p.add_argument("ports", metavar="HOST:GUEST")

    launch_images.register(sub)
    launch_context.register(sub)

    h = sub.add_parser("help", help="show this help (help COMMAND: that command's)")
    h.add_argument("topic", nargs="*", metavar="COMMAND")
    h.set_defaults(func=_help_on(parser))
    return parser


def _help_on(parser: argparse.ArgumentParser) -> Any:
    """``help``, ``help create``, ``help images add``: the help of the command named (people type it
    the way git and pip take it)."""

    def show(args: argparse.Namespace, out: Output) -> int:
        target = parser
        for word in args.topic:
            subs = [a for a in target._actions if isinstance(a, argparse._SubParsersAction)]
            choices = subs[0].choices if subs else {}
            if word not in choices:
                known = ", ".join(sorted(c for c in choices if c != "help")) or "none"
                raise UsageError(
                    f"help: no command {' '.join(args.topic)!r}",
                    hint=f"commands here: {known}",
                )
            target = choices[word]
        target.print_help(sys.stdout)
        return 0

    return show


def _connect(uri: str | None) -> launch.Host:
    # launch.connect loads the libvirt bindings (~0.1 CPU-s): only a command that opens a host pays it,
    # not --help, --version or a usage error
    return launch.connect(uri)


def main(argv: Sequence[str] | None = None, *, connect: Connect = _connect) -> int:
    """``connect`` opens the libvirt host for a URI (tests pass one on libvirt's test driver)."""
    os.environ.setdefault("LIBVIRT_LOG_OUTPUTS", "")  # keep libvirt's own logging off our stderr
    try:
        parser = build_parser()
    except KeyboardInterrupt:
        return stopped_early(sys.argv[1:] if argv is None else argv)
    parser.set_defaults(open_host=connect)
    return run(parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
