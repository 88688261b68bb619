"""Mount a repository read-only with FUSE: the command the μCernVM initrd runs for the OS root.

    python3 -m cernvm_build.cvmfs.mount --fqrn FQRN --server URL [--server URL...] --public-key PATH
        [--cache DIR] [--proxy P] [--tag T | --date D | --root-hash H] [--snapshot-file PATH]
        [--blacklist FILE...] [--no-magic-xattrs] [--prefetch-in-order] [--boot-list FILE]
        [--foreground] MOUNTPOINT

Needs only the standard library and /dev/fuse (and ``fusermount3`` when not run as root): the daemon
speaks the kernel's FUSE protocol itself (``fuse_lowlevel``). Without ``--foreground`` it forks; the
child opens and verifies the repository, mounts, and reports back through a pipe once the kernel has
the mount; the parent then prints ``mounted FQRN revision N root HASH tag TAG`` and exits 0, or
prints one error line and exits non-zero. ``--snapshot-file``: if it exists and no selector is
given, its first line (a root hash) is mounted; after a successful mount ``root_hash\\ntag\\n`` is
written to it atomically, so the next boot mounts the same snapshot.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import CernVMError, CvmfsError, UsageError
from ..fsutil import TooLarge, atomic_write, read_capped, read_regular
from ..termtext import visible
from . import blacklist as blacklist_mod
from .bootlist import BootList
from .limits import MAX_RETRIES
from .objects import parse_hash
from .plaincache import STALE_TMP_S, PlainCache
from .quota import MB, Quota
from .repository import Repository, SnapshotSpec, open_repository

PROG = "python3 -m cernvm_build.cvmfs.mount"
USAGE = f"usage: {PROG} --fqrn FQRN --server URL [--server URL...] --public-key PATH [options] MOUNTPOINT"
HINT = f"see '{PROG} --help'"

#: The options: name -> (kind, metavar, help). kind: "flag" (no value), "str", "list" (repeatable),
#: "path", "int" or "float". Parsed by ``parse_args``, not argparse: argparse and the help
#: formatter it builds per option (which imports shutil, bz2, lzma, gettext, locale) were 20 M of
#: the initrd mount's ~130 M instructions before it serves, under emulation on a reboot's critical
#: path (issue 13).
OPTIONS: dict[str, tuple[str, str, str]] = {
    "--fqrn": ("str", "FQRN", "repository name, e.g. sft.cern.ch (default: from the URL)"),
    "--server": (
        "list",
        "URL",
        "Stratum URL http://host/cvmfs/<fqrn> or a local Stratum directory; repeat for fail-over (required)",
    ),
    "--public-key": ("list", "PATH", "master public key (repeatable)"),
    "--blacklist": (
        "list",
        "FILE",
        "certificate blacklist: revoked certificates' fingerprints and '<REPOSITORY N' revision floors "
        "(repeatable, the files add up; default: /etc/cvmfs/blacklist when it exists)",
    ),
    "--cache": ("path", "DIR", "object cache directory (default: none)"),
    "--quota-limit": (
        "int",
        "MB",
        "size limit of the cache (CVMFS_QUOTA_LIMIT): least recently used objects are evicted, "
        "catalogs never",
    ),
    "--proxy": ("str", "P", "HTTP proxy URL(s), '|'/';' separated, DIRECT for none"),
    "--tag": ("str", "TAG", "mount this named tag"),
    "--date": ("str", "DATE", "mount the newest tag at or before YYYY-MM-DDTHH:MM:SSZ"),
    "--root-hash": (
        "str",
        "HASH",
        "mount exactly this root catalog hash (one of --tag, --date, --root-hash)",
    ),
    "--snapshot-file": (
        "path",
        "PATH",
        "pin: read 'root_hash\\ntag' from here when no selector is given; written after mounting",
    ),
    "--foreground": ("flag", "", "stay in the foreground (do not daemonize)"),
    "--timeout": ("float", "S", "HTTP timeout in seconds (default 10)"),
    "--retries": ("int", "N", "retries per server (default 2)"),
    "--no-allow-other": ("flag", "", "only the mounting user may read it"),
    "--log": ("path", "FILE", "daemon log file (default: discard)"),
    "--debug": ("flag", "", "FUSE debug output"),
    "--stats": (
        "path",
        "FILE",
        "write FUSE request counts, handler seconds and handler CPU seconds (lines: name count seconds "
        "cpu; @ready and @process: seconds since the start and the process's CPU when the mount was "
        "ready and now) here every 10 s",
    ),
    "--no-magic-xattrs": (
        "flag",
        "",
        "show no virtual attributes (user.fqrn, user.revision, ...); if the revision has no attributes "
        "of its own either, the kernel is told to stop asking (an OS root: overlayfs and exec ask for "
        "every file)",
    ),
    "--prefetch-in-order": (
        "flag",
        "",
        "fetch a directory's next files ahead only for a reader going through it in name order, not on "
        "every open: for a CPU-starved guest, where every fetch ahead costs the reader",
    ),
    "--boot-list": (
        "path",
        "FILE",
        "object names (one a line) to fetch ahead in the background once the mount is ready, pipelined, "
        "those not cached yet: a first boot's working set (bootlist.py). Never fatal: unreadable lines "
        "and missing objects are skipped",
    ),
}


class MountArgs:
    """The mount's command line, parsed (``parse_args``): one attribute per option (``--quota-limit``:
    ``quota_limit``), unset ones at their defaults, and ``mountpoint``."""

    def __init__(self) -> None:
        self.fqrn: str | None = None
        self.server: list[str] = []
        self.public_key: list[str] = []
        self.blacklist: list[str] = []
        self.cache: Path | None = None
        self.quota_limit: int | None = None
        self.proxy: str | None = None
        self.tag: str | None = None
        self.date: str | None = None
        self.root_hash: str | None = None
        self.snapshot_file: Path | None = None
        self.foreground = False
        self.timeout = 10.0
        self.retries = 2
        self.no_allow_other = False
        self.log: Path | None = None
        self.debug = False
        self.stats: Path | None = None
        self.no_magic_xattrs = False
        self.prefetch_in_order = False
        self.boot_list: Path | None = None
        self.mountpoint = ""
        self.pin_note: str | None = None  # why a pin file was ignored (``snapshot_from_args``)


def help_text() -> str:
    lines = [USAGE, "", __doc__.split("\n\n", 2)[2].strip() if __doc__ else "", "", "options:"]
    for name, (kind, metavar, text) in OPTIONS.items():
        lines.append(f"  {name}{'' if kind == 'flag' else ' ' + metavar}\n      {text}")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str]) -> MountArgs | None:
    """``argv`` as the mount's options (``--name value`` or ``--name=value``) and one MOUNTPOINT;
    None for ``-h``/``--help``. UsageError names the option and what is wrong."""
    args, positional = MountArgs(), list[str]()
    words = iter(argv)
    for word in words:
        if word in ("-h", "--help"):
            return None
        if word == "--":
            positional.extend(words)
            break
        if not word.startswith("-") or word == "-":
            positional.append(word)
            continue
        name, eq, value = word.partition("=")
        spec = OPTIONS.get(name)
        if spec is None:
            raise UsageError(f"unknown option {name}", hint=HINT)
        kind, metavar, _ = spec
        dest = name[2:].replace("-", "_")
        if kind == "flag":
            if eq:
                raise UsageError(f"{name} takes no value", hint=HINT)
            setattr(args, dest, True)
            continue
        if not eq:
            got = next(words, None)
            if got is None:
                raise UsageError(f"{name} needs a value ({metavar})", hint=HINT)
            value = got
        if kind == "list":
            getattr(args, dest).append(value)
        elif kind in ("int", "float"):
            try:
                setattr(args, dest, int(value) if kind == "int" else float(value))
            except ValueError:
                raise UsageError(f"{name}: {value[:40]!r} is not a number", hint=HINT) from None
        else:
            setattr(args, dest, Path(value) if kind == "path" else value)
    if len(positional) != 1:
        raise UsageError(f"one MOUNTPOINT expected, got {len(positional)}", hint=USAGE)
    args.mountpoint = positional[0]
    if not args.server:
        raise UsageError("--server is required", hint=HINT)
    if sum(x is not None for x in (args.tag, args.date, args.root_hash)) > 1:
        raise UsageError("--tag, --date and --root-hash exclude each other", hint="give one of them")
    return args


#: a pin is ``root_hash\ntag\n``: a hash (at most 50 characters) and a tag name (cut to PIN_TAG_MAX)
PIN_MAX = 512
#: characters of the tag written in the pin (at most 4 UTF-8 bytes each: with the hash, within PIN_MAX)
PIN_TAG_MAX = 100


def read_pin(path: Path) -> tuple[str | None, str | None]:
    """The root hash pinned in ``path``, and a note (one line) when the file is there but unusable.

    The file is on the scratch disk, which the OS root may write: a FIFO or a link to /dev/zero
    there must not hang or exhaust the daemon (and so the boot), nor bytes that are not UTF-8 end
    it with a traceback. The toolkit writes the file itself (atomically): a link is never followed."""
    try:
        data = read_capped(path, PIN_MAX, follow_links=False)
    except FileNotFoundError:
        return None, None
    except TooLarge:
        return None, _pin_ignored(path, f"more than {PIN_MAX} bytes")
    except OSError as e:
        why = "a symbolic link" if e.errno == errno.ELOOP else (e.strerror or str(e))
        return None, _pin_ignored(path, why)
    first = data.decode("utf-8", "replace").split("\n", 1)[0].strip()
    if not first:
        return None, None  # an empty pin: nothing was pinned
    try:
        parse_hash(first)
    except ValueError:
        return None, _pin_ignored(path, f"its first line is not a root hash: {first[:60]!r}")
    return first, None


def _pin_ignored(path: Path, why: str) -> str:
    return f"pin file {path}: {why}; ignored: the newest revision is mounted and pinned instead"


def snapshot_from_args(args: MountArgs) -> SnapshotSpec:
    """The snapshot to mount; ``args.pin_note`` says why a pin file was ignored (or is None)."""
    if args.tag or args.date or args.root_hash:
        return SnapshotSpec(tag=args.tag, date=args.date, root_hash=args.root_hash)
    sf: Path | None = args.snapshot_file
    if sf is not None:
        root_hash, args.pin_note = read_pin(sf)
        if root_hash is not None:
            return SnapshotSpec(root_hash=root_hash)
    return SnapshotSpec()


class Mounted:
    """What a mount that is ready reports (``start``): the repository's revision, where, by which
    process, with which cache; ``warnings`` (a pin file ignored) and ``notes`` (what the start found
    of the last stop) are lines for stderr. A plain class: this module avoids ``dataclasses``'s
    imports on the initrd's boot path (``errors.Location``)."""

    __slots__ = ("cache", "fqrn", "mountpoint", "notes", "pid", "revision", "root_hash", "tag", "warnings")

    def __init__(
        self,
        fqrn: str,
        revision: int,
        root_hash: str,
        tag: str | None,
        mountpoint: str,
        cache: str | None,
        pid: int,
    ) -> None:
        self.fqrn, self.revision, self.root_hash, self.tag = fqrn, revision, root_hash, tag
        self.mountpoint, self.cache, self.pid = mountpoint, cache, pid
        self.warnings: list[str] = []
        self.notes: list[str] = []

    def line(self) -> str:
        """The one documented line of stdout (the initrd logs it)."""
        # the tag of --date is a name from the repository's history: shown, never an escape sequence
        tag = visible(self.tag or "-", one_line=True)
        return f"mounted {self.fqrn} revision {self.revision} root {self.root_hash} tag {tag}"

    def to_json(self) -> dict[str, object]:
        """``cvmfs mount --json``'s document: the keys of ``cvmfs info`` for the same things."""
        return {
            "fqrn": self.fqrn,
            "revision": self.revision,
            "root_hash": self.root_hash,
            "tag": self.tag,
            "mountpoint": self.mountpoint,
            "pid": self.pid,
            "cache": self.cache,
        }

    def wire(self) -> str:
        """The daemon's report to the process that started it (``_from_wire``): tab-separated fields,
        each one line of ASCII (``_escaped``), then a line per warning and note."""
        fields = (self.fqrn, str(self.revision), self.root_hash, self.tag or "", self.cache or "")
        head = "\t".join(["ok", *map(_escaped, fields)])
        said = [("warning", w) for w in self.warnings] + [("note", n) for n in self.notes]
        lines = [head, *(f"{kind}\t{_escaped(line)}" for kind, line in said)]
        return "\n".join(lines)


def _escaped(text: str) -> str:
    """``text`` as one line of ASCII that ``_from_wire`` reads back as it was: the tag of a daemon's
    ``--json`` was ``visible``'s form (``\\x1b``), the foreground's the name itself; the caller
    shows it visible where it prints it (``line``, ``Output``)."""
    return text.encode("unicode_escape").decode("ascii")


def _from_wire(text: str, mountpoint: str, pid: int) -> Mounted | None:
    """The ``Mounted`` a daemon's ``wire`` text says, or None when it is no such report."""
    head, *rest = text.split("\n")
    fields = head.split("\t")
    if len(fields) != 6 or fields[0] != "ok" or not fields[2].isdigit():
        return None
    try:
        fqrn, revision, root_hash, tag, cache = (
            f.encode("ascii").decode("unicode_escape") for f in fields[1:]
        )
        said = [
            (kind, line.encode("ascii").decode("unicode_escape"))
            for kind, _, line in (r.partition("\t") for r in rest)
        ]
    except UnicodeError:
        return None
    mounted = Mounted(fqrn, int(revision), root_hash, tag or None, mountpoint, cache or None, pid)
    for kind, line in said:
        (mounted.warnings if kind == "warning" else mounted.notes).append(line)
    return mounted


class DaemonError(CernVMError):
    """The mount daemon's error, as its process sent it (message, hint and exit code)."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


def cache_line(plain: PlainCache | None) -> str | None:
    """What the start found of the last stop (``PlainCache.take_clean``): an operator reading the
    console after a crash learns why the first reads are slower. None without an owned cache."""
    if plain is None or plain.took_clean is None:
        return None
    if plain.took_clean:
        return "cache: the last stop was clean: cached files are served without a first-use checksum check"
    return "cache: no clean stop recorded (a first start, a crash): each cached file is checked on first use"


def _have_ssl() -> bool:
    """The μCernVM initrd's runtime ships no ssl (no OpenSSL, no CA bundle)."""
    try:
        import ssl  # noqa: F401
    except ImportError:
        return False
    return True


def _open(args: MountArgs) -> Repository:
    mp = Path(args.mountpoint)
    if not mp.is_dir():
        raise CvmfsError(f"{mp}: mount point is not a directory", hint="create it first")
    args.mountpoint = os.path.abspath(mp)
    if args.snapshot_file is not None:
        args.snapshot_file = Path(os.path.abspath(args.snapshot_file))
    servers: list[str] = [s if "://" in s else os.path.abspath(s) for s in args.server]
    https = [s for s in servers if s.lower().startswith("https://")]
    if https and not _have_ssl():
        raise CvmfsError(
            f"{https[0]}: https is not available (this Python has no ssl module)",
            hint="use an http:// server: objects are verified against the signed manifest anyway",
        )
    keys = [Path(os.path.abspath(k)) for k in args.public_key]
    revoked = blacklist_mod.resolve([Path(os.path.abspath(b)) for b in args.blacklist])
    cache: Path | None = None
    if args.cache is not None:
        # The absolute path, resolved in this process's root: after switch_root that root stays the
        # old initramfs, where the initrd leaves the scratch disk mounted (bind-mounted into the OS,
        # not moved), so the path keeps naming the disk. Nothing may go through /proc (the initrd
        # unmounts it before switch_root; a /proc/self/fd/N path would then name an empty
        # directory of the initramfs and the cache would silently fill RAM).
        cache = Path(os.path.abspath(args.cache))
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CvmfsError(f"{args.cache}: cache directory unusable: {e.strerror}") from e
    source: str | Sequence[str] = servers[0] if len(servers) == 1 else servers
    if not 0 < args.timeout <= 86400:  # nan too: it compares false
        raise UsageError(f"--timeout {args.timeout}: expected seconds, more than 0 and at most 86400")
    if not 0 <= args.retries <= MAX_RETRIES:
        raise UsageError(f"--retries {args.retries}: expected retries from 0 to {MAX_RETRIES}")
    if args.quota_limit is not None and (cache is None or args.quota_limit < 1):
        raise UsageError("--quota-limit needs --cache and a size of at least 1 MB")
    repo = open_repository(
        source,
        fqrn=args.fqrn,
        public_keys=keys,
        cache_dir=cache,
        proxy=args.proxy,
        snapshot=snapshot_from_args(args),
        timeout=args.timeout,
        retries=args.retries,
        inflated=True,
        blacklist=revoked,
    )
    objects, plain = repo.store.cache, repo.store.plain_cache
    if objects is not None and plain is not None:
        # file contents and catalogs are read from inflated copies (plaincache.py), the objects
        # stay a Stratum
        quota = None
        stale = time.time() - STALE_TMP_S
        if args.quota_limit is not None:
            quota = Quota(objects.root, args.quota_limit * MB)
            quota.scan(sweep_before=stale)  # one walk, the plain cache's sweep too
            objects.on_use = plain.on_use = quota.used
            repo.store.quota = quota
        # The daemon owns its cache: what it holds is kept in memory from here on, so a cold
        # object's misses (plain copy, object, the prefetcher's look) cost no failed opens. Without
        # a size limit, the plain cache's temporaries are swept in the same listing. Listed beside
        # the mount's start (a reboot's 512 cold directory reads were ~0.24 guest-s before "ready").
        sweep = None if quota is not None else stale
        held = (objects.hold(background=True), plain.hold(sweep_before=sweep, background=True))
        # A clean stop of the last daemon (its marker, taken away before serving): what it left
        # is served without the first-use checksum check (plaincache.py).
        plain.take_clean()
        if quota is not None:

            def evicted(path: str) -> None:
                for h in held:
                    h.forget_path(path)

            quota.on_evict = evicted
    return repo


def _after_mount(args: MountArgs, repo: Repository) -> None:
    if args.snapshot_file is not None:
        # the tag is the history's name, for the init's log line ("pinned snapshot ... tag ..."): shown
        # visible on its one line, and cut so the pin stays within PIN_MAX: a 600-byte tag made the
        # next boot ignore the pin and mount the newest revision; ESC reached the console (pr26b 9)
        tag = visible(repo.tag or "", one_line=True)[:PIN_TAG_MAX]
        pin = f"{repo.root_hash}\n{tag}\n".encode()
        try:  # not a regular file (a FIFO): rewritten, never waited on
            same = read_regular(args.snapshot_file, PIN_MAX, follow_links=False) == pin
        except OSError:
            same = False
        if not same:  # a reboot on its pin writes nothing (two fsyncs before the mount is ready)
            atomic_write(args.snapshot_file, pin)


def _mounted(args: MountArgs, repo: Repository, plain: PlainCache | None) -> Mounted:
    cache = None if args.cache is None else os.path.abspath(args.cache)
    mounted = Mounted(repo.fqrn, repo.revision, repo.root_hash, repo.tag, args.mountpoint, cache, os.getpid())
    pin_note = getattr(args, "pin_note", None)
    if pin_note is not None:
        mounted.warnings.append(pin_note)
    note = cache_line(plain)
    if note is not None:
        mounted.notes.append(note)
    return mounted


def _serve(args: MountArgs, repo: Repository, report: Callable[[Mounted], None]) -> None:
    """Serve ``repo`` at the mount point until it is unmounted; ``report`` gets the mount once the
    kernel has it."""
    from .fuse import Serving, run_fuse

    plain = repo.store.plain_cache if repo.store.cache is not None else None
    boot_list = None
    if args.boot_list is not None and repo.store.cache is not None:
        boot_list = BootList(repo, Path(os.path.abspath(args.boot_list)))

    def on_ready() -> None:
        _after_mount(args, repo)
        if boot_list is not None:  # after the pin is written: the list only ever adds to the cache
            boot_list.start()
        report(_mounted(args, repo, plain))

    try:
        run_fuse(
            repo,
            args.mountpoint,
            on_ready=on_ready,
            allow_other=False if args.no_allow_other else None,
            debug=args.debug,
            stats=os.path.abspath(args.stats) if args.stats else None,
            serving=Serving(magic_xattrs=not args.no_magic_xattrs, prefetch_in_order=args.prefetch_in_order),
        )
    finally:
        # However serving ended (unmounted, a signal, an error), what was renamed into place
        # before the sync began is on the disk: the next start may trust it (plaincache.mark_clean).
        # Not marking only costs the next start its checks: never an error of its own.
        if boot_list is not None:
            boot_list.stop()
        if plain is not None:
            with contextlib.suppress(OSError):
                plain.mark_clean()


def _error_text(e: BaseException) -> str:
    """One line (the initrd shows the last line of the log): the error, then the hint. ``visible``:
    the error quotes a server's answer (its status line's reason), which reached the console raw, an
    ESC ] 0 retitling the terminal, a newline forging a line of its own (pr26b finding 4)."""
    if isinstance(e, CernVMError):
        text = f"error: {e}" + (f" (hint: {e.hint})" if e.hint else "")
    else:
        text = f"error: {type(e).__name__}: {e}"
    return visible(text, one_line=True)


def _error_wire(e: BaseException) -> str:
    """A failed daemon's report (``_daemon``): the error's message and hint, one line each."""
    if isinstance(e, CernVMError):
        message, hint = str(e), e.hint or ""
    else:
        message, hint = f"{type(e).__name__}: {e}", ""
    return "\t".join(["error", visible(message, one_line=True), visible(hint, one_line=True)])


def _daemon(args: MountArgs) -> Mounted:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: becomes the FUSE daemon
        os.close(r)
        code = 0
        try:
            os.setsid()
            repo = _open(args)
            log_path = str(args.log) if args.log else os.devnull
            fd_in = os.open(os.devnull, os.O_RDONLY)
            fd_out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd_in, 0)
            os.dup2(fd_out, 1)
            os.dup2(fd_out, 2)

            def ready(mounted: Mounted) -> None:
                os.write(w, (mounted.wire() + "\n\n").encode())
                os.close(w)

            _serve(args, repo, ready)
        except BaseException as e:
            code = getattr(e, "exit_code", 1)
            try:
                os.write(w, (_error_wire(e) + "\n").encode())
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        block = os.read(r, 4096)
        if not block:
            break
        chunks.append(block)
        if block.endswith(b"\n\n") and b"".join(chunks).startswith(b"ok\t"):
            break
    os.close(r)
    text = b"".join(chunks).decode(errors="replace").strip("\n")  # (not tabs: empty last fields)
    mounted = _from_wire(text, os.path.abspath(args.mountpoint), pid)
    if mounted is not None:
        return mounted
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    kind, _, said = text.partition("\t")
    message, _, hint = said.partition("\t")
    if kind != "error" or not message:
        message, hint = "the FUSE process ended before the mount was ready", ""
    raise DaemonError(message, hint=hint or None, exit_code=code if code > 0 else 1)


def _tame_malloc() -> None:
    """A long-running daemon that allocates many multi-MB buffers from several threads: with glibc's
    defaults (an arena per thread, an mmap threshold that grows) freed chunks stay resident. Fixed
    threshold and two arenas keep the RSS near what is live. No-op where this is not glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        m_mmap_threshold, m_arena_max = -3, -8
        libc.mallopt(m_mmap_threshold, 1 << 20)
        libc.mallopt(m_arena_max, 2)
    except (OSError, AttributeError):
        pass


def _more_descriptors() -> None:
    """Each open file of the mount holds a descriptor on its inflated copy (plaincache.py): the soft
    limit goes up to the hard one (the real client raises its own too), so a reader holding a
    thousand files open does not meet EMFILE first."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, OSError, ValueError):
        pass


def start(args: MountArgs, report: Callable[[Mounted], None]) -> None:
    """Mount as ``args`` say; ``report`` gets the mount once the kernel has it. In the foreground this
    returns when the mount ends; otherwise once the daemon it forks is ready. A failure raises the
    ``CernVMError`` (a daemon's as ``DaemonError``, with its exit code)."""
    _tame_malloc()
    _more_descriptors()
    if args.foreground:
        _serve(args, _open(args), report)
    else:
        report(_daemon(args))


def _say(mounted: Mounted) -> None:
    """The mount's report as this entry point (the initrd's) writes it: stdout keeps the one
    documented line, the warnings and notes go to stderr."""
    print(mounted.line(), flush=True)
    for line in [*mounted.warnings, *mounted.notes]:
        # a note quotes the pin file's path, which the CLI's Output shows visible: so does the init's log
        print(visible(line, one_line=True), file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(_error_text(e), file=sys.stderr)
        return e.exit_code
    if args is None:
        sys.stdout.write(help_text())
        return 0
    try:
        start(args, _say)
        return 0
    except CernVMError as e:
        print(_error_text(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
