"""What every command shares: common flags, output (human, ``--json``, quiet), error handling.

Handlers have the signature ``handler(args, out) -> int`` and never print directly: they call ``out``.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import errno
import io
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from _typeshed import SupportsWrite
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.text import Text

from ..cvmfs.limits import MAX_JOBS, MAX_RETRIES
from ..errors import EXIT_CODES, EXIT_INTERRUPTED, EXIT_TERMINATED, CernVMError, UsageError
from ..procexit import end_process
from ..report import Reporter
from ..termtext import visible
from . import extras, inputs

Handler = Callable[[argparse.Namespace, "Output"], int]

# argparse looks each of its own words up in gettext's catalogues as it builds a parser ("usage: ",
# "options", "show this help message and exit", ...), and every look-up searches the locale folders
# again (``gettext.find``: ``locale.normalize`` of $LANGUAGE/$LC_ALL/$LC_MESSAGES/$LANG, a stat per
# candidate; ~0.1-0.2 ms each, none found): 22 of them, ~4 ms, and the import of ``locale`` in the
# start of every command, a twentieth of a one-page site rebuild. Python ships no catalogue for them
# and this CLI's own messages are English: argparse's stay as written, with them. The identity, not
# ``str``: argparse also passes None through it (a subcommand group's missing description), and
# ``str(None)`` printed a line "None" under every "commands:" heading of --help.
argparse._ = lambda text: text  # type: ignore[attr-defined]


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line for ``Output.print`` where some parts carry a style: ``styled(("ok", "green"), " ", name)``.
    Every part is data (made visible, never parsed as markup): a path holding ``[/b]`` crashed the print
    and one holding ``[link=...]`` made a hyperlink (pr16d finding 1). One line: an artifact name holding
    a newline printed ``release verify``'s "FAIL" line and then a forged "OK: release ..." (pr26b 8)."""
    from rich.text import Text

    def shown(text: str) -> str:
        return visible(text, one_line=True)

    return Text.assemble(*(shown(p) if isinstance(p, str) else (shown(p[0]), p[1]) for p in parts))


def seconds(text: str) -> float:
    """An argparse type for timeouts: a positive, finite number of seconds (``inf`` overflowed the
    socket's timeout into a traceback, ``nan`` meant no deadline)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds, more than 0 and at most 86400")
    return value


def size(text: str) -> int:
    """An argparse type for a size (``64M``, ``4096``) of at least one byte: a malformed one was
    argparse's "invalid parse_size value: 'abc'" (pr21 N16), and 0 or -5 a cap no layer meets."""
    from ..table import Invalid, parse_size

    try:
        value = parse_size(text)
    except Invalid as e:
        raise argparse.ArgumentTypeError(f"{e.message[:80]} ({e.hint})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: expected a size of at least 1 byte, e.g. 64M")
    return value


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse type for a count from ``low`` to ``high``: argparse's error names the flag, the
    range says what it takes (an out-of-range value was silently clamped to it)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text[:40]!r}: expected a whole number from {low} to {high}")
        return value

    return parse


#: the argparse type of ``-j/--jobs``: 1 to MAX_JOBS (-3 ran, 100000 was a traceback: a usage line now)
jobs = whole_number(1, MAX_JOBS)
#: the argparse type of ``--retries`` (-1 was taken silently, as 0, with no word)
retries = whole_number(0, MAX_RETRIES)


def name_list(text: str) -> list[str]:
    """An argparse type for a comma-separated list of names, each given once (``--profiles
    demo,demo`` built the profile twice into the same folders, found only by the build)."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise argparse.ArgumentTypeError(f"{twice!r:.80} is given twice")
    return names


def output_file(text: str) -> Path | None:
    """An argparse type for ``-o FILE`` of a command that prints to stdout by default: ``-`` is stdout
    (``-o -`` wrote a file named '-' and told to start squid with it, pr19d finding 12)."""
    return None if text == "-" else Path(text)


def add_output_file(p: argparse.ArgumentParser, help: str) -> None:
    """``-o/--output FILE`` of a command that prints to stdout by default (``output_file``), also
    spelled ``--out``: the other commands' spelling of where the output goes (pr28c)."""
    p.add_argument("-o", "--output", "--out", type=output_file, metavar="FILE", help=help)


def also_file(text: str) -> Path:
    """An argparse type for ``--out FILE`` that writes a file besides the printed output: ``-`` is
    refused (it wrote a file named '-'); ``--json`` is what prints the data on stdout."""
    if text == "-":
        raise argparse.ArgumentTypeError("'-': this writes a file; --json prints the same JSON on stdout")
    return Path(text)


def write_output(path: Path, data: bytes, flag: str) -> None:
    """``data`` written atomically to the file ``flag`` names, or a one-line error saying why not: a
    folder, a read-only place or a missing disk was an ``OSError`` traceback (pr18d finding 7)."""
    from ..fsutil import atomic_write, reclaim_stale

    if path.is_dir():
        raise UsageError(
            f"{flag} {path}: a folder, not a file",
            hint=f"name the file to write in it: {flag} {path / 'FILE'}",
        )
    try:
        reclaim_stale(path)  # a killed run's ``.<file>.<pid>.<n>.tmp`` beside it stayed for ever
        atomic_write(path, data)
    except OSError as e:
        raise UsageError(
            f"{flag} {path}: cannot write it: {e.strerror}", hint="choose a writable place for the file"
        ) from None


def tcp_port(text: str) -> int:
    """An argparse type for a TCP port to listen on: 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port from 1 to 65535")
    return value


EXIT_CODES_EPILOG = "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())


#: a table's width into a pipe or file: as wide as its cells
_PIPE_WIDTH = 100_000


def _reader_left() -> None:
    """stdout's reader left (``| head -1``) while rich wrote: as ``run()`` ends any broken pipe, exit 0.
    rich's own handler raised SystemExit(1), so a table cut short exited 1 and a --json one 0."""
    _stdout_gone()
    raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def _stdout_gone() -> None:
    """The interpreter's last flush of stdout goes nowhere (its reader left, its disk is full): it
    would fail again at the exit ("Exception ignored", exit 120)."""
    with contextlib.suppress(OSError, ValueError):  # (no descriptor: a caller's own stream)
        fd = sys.stdout.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


def _quiet_when_gone(console: Console) -> Console:
    """``console`` (stderr) falls silent when its reader left (``2>&1 | true``): the command goes on,
    and its exit code says how it ended, as with a full stderr. rich's own handler pointed stdout at
    /dev/null and raised SystemExit(1): every error's code was 1, and a warning ended the command."""

    def gone() -> None:
        console.quiet = True  # (rich then drops what it holds, and everything after)

    console.on_broken_pipe = gone  # type: ignore[method-assign]
    return console


def _wide_enough(console: Console) -> Console:
    """``console`` with a width of at least one column: rich takes ``$COLUMNS=0`` as a width of 0 and
    then writes nothing at all, so ``COLUMNS=0 cernvm-build profiles show nosuch`` exited 3 without
    its error line (shells and argparse read 0 as "unknown"); then 80, rich's own default."""
    if console.width < 1:
        console.width = 80
    return console


class Output:
    """Human output on stderr/stdout with rich, or one JSON document on stdout with ``--json``.

    rich is imported when something is first shown with it (deliberate lazy imports): it is a third
    of the CLI's start-up, and a command run with ``--json`` or ``--quiet`` that succeeds (a site
    rebuild from a script, a benchmark) shows nothing with it."""

    def __init__(self, *, json_mode: bool = False, quiet: int = 0, verbose: int = 0):
        self.json_mode = json_mode
        #: how many times -q was given (``QUIET_HELP``): 1 leaves out progress, steps, notes and a
        #: result shown for people; 2 warnings too. A bool (True) counts as 1.
        self.quiet = int(quiet)
        self.verbose = verbose
        self._json_written = False  # stdout holds this command's JSON document

    @cached_property
    def console(self) -> Console:
        from rich.console import Console

        # emoji off: data such as a fingerprint ("03:AB:07") or a path (":smile:") is never a shortcode
        console = _wide_enough(Console(highlight=False, soft_wrap=True, emoji=False))
        if not console.is_terminal:
            # into a pipe or file, a table's cells whole (a root hash cut to 'c5ab55a8…' is of no use
            # to a script); a terminal's width shapes tables only where someone reads them
            console.width = _PIPE_WIDTH
        console.on_broken_pipe = _reader_left  # type: ignore[method-assign]
        return console

    @cached_property
    def err(self) -> Console:
        from rich.console import Console

        return _quiet_when_gone(
            _wide_enough(Console(stderr=True, highlight=False, soft_wrap=True, emoji=False))
        )

    # -- results -------------------------------------------------------------------------------
    # ``-q`` leaves out a result shown for people (a line, a table, a rendered result) too; ``--json``
    # asks for the result by name, and bytes a command exists to write to stdout (``cvmfs cat``,
    # ``profiles schema``) are its output, not a report: both stay.
    def data(self, obj: Any, render: Callable[[Any], None] | None = None) -> None:
        """Emit a result: JSON in ``--json`` mode, else ``render(obj)`` (or pretty JSON)."""
        if self.json_mode:
            # set first: a document stdout refused (a full disk) is not followed by an error's document
            self._json_written = True
            sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
        elif self.quiet:
            return
        elif render is not None:
            render(obj)
        else:
            # ASCII: rich writes non-ASCII characters raw (ensure_ascii=False), and JSON escapes only
            # C0 controls: a C1 CSI (U+009B) or a bidi override in a value reached the terminal
            self.console.print_json(json.dumps(obj, default=str), ensure_ascii=True)

    def streaming_json(self) -> None:
        """The command writes its JSON document to stdout itself, a piece at a time (``cvmfs ls``):
        an error met half-way ends it with stderr's line only, no second document after the first's
        part."""
        self._json_written = True

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
        if self.quiet:
            return
        from rich.table import Table
        from rich.text import Text

        # cells and titles are data (names, URLs from servers): Text, never markup
        t = Table(
            title=None if title is None else Text(visible(title, one_line=True)),
            show_edge=False,
            header_style="bold",
        )
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*(Text("" if v is None else visible(str(v), one_line=True)) for v in r))
        self.console.print(t)

    def print(self, text: str | Text = "", *, lines: bool = False, **kw: Any) -> None:
        """Primary human output (stdout); suppressed in JSON mode and with ``--quiet``. ``text`` is
        data, never markup: a line that wants style is built with ``styled``. One line (``visible``
        ``one_line``: a name quoted in a result holding a newline forged result lines, as a context's
        cloud-config key did its summary, pr26b finding 13) unless ``lines``: a text of many lines
        (a profile as written, its YAML)."""
        if not self.json_mode and not self.quiet:
            kw.setdefault("markup", False)
            self.console.print(visible(text, one_line=not lines) if isinstance(text, str) else text, **kw)

    # -- diagnostics (stderr) ------------------------------------------------------------------
    # Diagnostics carry the user's data (names, paths, console lines with [brackets]): never markup.
    # Each is one line: a repository's path holding a newline ("cvmfs export"'s "P: skipped") forged
    # a line of its own, "error: ..." or "hint: ..." (pr26b finding 5).
    def info(self, text: str) -> None:
        if not self.quiet:
            self.err.print(_escape(visible(text, one_line=True)), highlight=False)

    def detail(self, text: str) -> None:
        if self.verbose and not self.quiet:
            self.err.print(f"[dim]{_escape(visible(text, one_line=True))}[/dim]", highlight=False)

    def warn(self, text: str) -> None:
        if self.quiet >= 2:  # -qq: a warning is what -q keeps (apt, pip, git: it is not progress)
            return
        self.err.print(f"[yellow]warning:[/yellow] {_escape(visible(text, one_line=True))}", highlight=False)

    def error(self, err: CernVMError) -> None:
        where = None if err.where is None else str(err.where)
        self._error_document(
            visible(str(err), one_line=True), err.message, where, err.hint, err.exit_code, err.json_details()
        )
        # The message and hint are the user's data (paths, URLs, `pip install 'x[extra]'`): never markup.
        # A stderr that takes no writes (2>/dev/full) leaves the exit code to say it: the failed write
        # was an OSError out of run(), an unseen traceback and exit 1 for every error (pr28b 10)
        with contextlib.suppress(OSError):
            self.err.print(
                f"[bold red]error:[/bold red] {_escape(visible(str(err), one_line=True))}",
                markup=True,
                highlight=False,
            )
            if err.hint:
                self.err.print(f"[cyan]hint:[/cyan] {_escape(visible(err.hint, one_line=True))}")

    def stopped(self, line: str, code: int) -> None:
        """A command ended by Ctrl-C or SIGTERM: ``line`` on stderr (and as --json's document)."""
        self._error_document(line, line, None, None, code)
        with contextlib.suppress(OSError):  # as error's
            self.err.print(line)

    def _error_document(
        self,
        error: str,
        message: str,
        where: str | None,
        hint: str | None,
        code: int,
        details: dict[str, object] | None = None,
    ) -> None:
        """With --json, the error as stdout's one document, unless the command already wrote its own:
        a script reading it gets one document whether the command worked or not (it got nothing on an
        error, and parsed an empty stdout: pr24b finding 4)."""
        if self.json_mode and not self._json_written:
            with contextlib.suppress(OSError):  # stdout itself may be what failed; stderr still says it
                doc = {"error": error, "message": message, "where": where, "hint": hint, "exit_code": code}
                self.data({**doc, **(details or {})})

    def _bars_off(self) -> bool:
        # decided before rich is imported where it can be (--quiet, --json)
        return self.quiet > 0 or self.json_mode or not self.err.is_terminal

    def ticker(self, bar: Progress, task: TaskID) -> Callable[[object], None] | None:
        """A per-entry callback advancing ``task``, or None when no bar is shown: a disabled rich bar
        still keeps a speed sample per advance (about 1.3 CPU-s a million; an export or verify of a
        million entries paid it once an entry for nothing)."""
        if self._bars_off():
            return None
        return lambda _entry: bar.advance(task)

    @contextmanager
    def progress(self, *, transfer: bool = False) -> Iterator[Progress]:
        """A progress display on stderr; silent with ``--quiet``/``--json`` or when not a terminal."""
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

        cols: list[Any] = [_description(), BarColumn()]
        cols.append(DownloadColumn() if transfer else TextColumn("{task.completed}/{task.total}"))
        cols.append(TimeElapsedColumn())
        with Progress(*cols, console=self.err, disable=self._bars_off(), transient=True) as p:
            yield p

    @contextmanager
    def reporter(self, *, steps_as_detail: bool = False) -> Iterator[Reporter]:
        """The library's ``Reporter`` for this command: steps as lines on stderr (only with ``-v`` when
        ``steps_as_detail``), progress as bars (byte counts as sizes), warnings as warnings."""
        if self._bars_off():
            yield _CliReporter(self, None, steps_as_detail)
            return
        from rich.progress import BarColumn, Progress, TimeElapsedColumn

        cols: list[Any] = [_description(), BarColumn(), _amount(), TimeElapsedColumn()]
        with Progress(*cols, console=self.err, transient=True) as bar:
            yield _CliReporter(self, bar, steps_as_detail)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _description() -> Any:
    """A progress column: the task's description, which names an image, a URL, a repository or a
    file: data, never markup (pr21 N12), shown ``visible`` on one line. The live line is redrawn in
    place: a URL from an image index holding ESC ] 52 wrote the clipboard, ESC [ 2J cleared the
    screen, U+202E reversed the line (pr26b finding 1)."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class Description(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(visible(task.description, one_line=True))

    return Description()


def _amount() -> Any:
    """A progress column: ``done/total``; sizes for tasks that count bytes."""
    from rich.filesize import decimal
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class Amount(ProgressColumn):
        def render(self, task: Task) -> Text:
            fmt = decimal if task.fields.get("bytes") else str
            total = "?" if task.total is None else fmt(int(task.total))
            return Text(f"{fmt(int(task.completed))}/{total}")

    return Amount()


class _CliReporter:
    """``bar``: None when progress is not shown (``Output._bars_off``)."""

    def __init__(self, out: Output, bar: Progress | None, steps_as_detail: bool):
        self.out, self.bar, self.steps_as_detail = out, bar, steps_as_detail
        self.tasks: dict[str, Any] = {}
        self.status: Any = None

    def step(self, message: str) -> None:
        # the latest step stays visible on a status line (transient); the log line is kept too
        if self.bar is not None:
            if self.status is None:
                self.status = self.bar.add_task(message, total=None)
            self.bar.update(self.status, description=message)
        (self.out.detail if self.steps_as_detail else self.out.info)(message)

    def progress(self, what: str, done: int, total: int | None) -> None:
        if self.bar is None:
            return
        if what not in self.tasks:
            self.tasks[what] = self.bar.add_task(what, total=total, bytes=what.endswith("bytes"))
        self.bar.update(self.tasks[what], completed=done, total=total)

    def warn(self, message: str) -> None:
        self.out.warn(message)


#: the one rule of -q, as apt, pip and git have it: -q hides progress and notes, never a warning
QUIET_HELP = (
    "-q: no progress, notes or results shown for people, only warnings and errors; -qq: only errors"
    " (a --json result, or data a command writes to stdout, stays)"
)


def add_common(parser: argparse.ArgumentParser, *, json: bool = False) -> argparse.ArgumentParser:
    """Flags every leaf command takes (so they work after the subcommand, where users type them)."""
    g = parser.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more detail (repeat for debug logs)")
    g.add_argument("-q", "--quiet", action="count", default=0, help=QUIET_HELP)
    if json:
        g.add_argument(
            "--json",
            action="store_true",
            help="print the result as JSON on stdout (for scripts); an error is one JSON document too:"
            ' {"error", "message", "where", "hint", "exit_code"}',
        )
    return parser


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def subparser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str | None = None,
    json: bool = False,
    handler: Handler | None = None,
    aliases: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """Add a subcommand with the shared formatter, common flags and (for leaves) a handler."""
    p = sub.add_parser(
        name,
        help=help,
        description=description or help,
        formatter_class=HelpFormatter,
        aliases=list(aliases),
    )
    # Deeper subcommands override this default, so a handler knows the command it runs for.
    p.set_defaults(command_name=p.prog)
    if handler is not None:
        add_common(p, json=json)
        p.set_defaults(func=handler)
    return p


def group_handler(parser: argparse.ArgumentParser) -> Handler:
    """For a command group called without a subcommand: show its help and fail as a usage error."""

    def show(args: argparse.Namespace, out: Output) -> int:
        parser.print_help(sys.stderr)
        return UsageError.exit_code

    return show


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports usage errors in our one-line style with exit code 2."""

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        # argparse drops a failed write: `--help >/dev/full` exited 0 with no help written. stdout's
        # (help, version) is the command's result: its error reaches ``run``; stderr's stays dropped
        if not message:
            return
        if file is sys.stdout:
            print(message, end="", file=file, flush=True)
            return
        with contextlib.suppress(OSError):
            (file or sys.stderr).write(message)

    def error(self, message: str) -> NoReturn:
        # argparse reports a subcommand's unknown flag from the top parser: `cernvm-build image el9
        # --plan` showed the top usage and "see 'cernvm-build --help'" (pr24b finding 13)
        shown = _command_of(self, _argv_parsed) if message.startswith("unrecognized arguments") else self
        shown.print_usage(sys.stderr)
        hint = f"see '{shown.prog} --help'"
        meant = _meant(message, shown)
        if meant:
            hint = f"did you mean {meant}? {hint}"
        Output(json_mode=_json_asked).error(UsageError(message, hint=hint))
        raise SystemExit(UsageError.exit_code)


def _meant(message: str, parser: argparse.ArgumentParser) -> str | None:
    """What a mistyped command, choice or flag of a usage error was probably meant to be: Python 3.11's
    argparse names none ('imgae', 'biuld', --outt, or --output where the command spells it --out)."""
    import difflib  # only on this error path
    import re

    choice = re.search(r"invalid choice: '(.*?)' \(choose from (.*)\)\Z", message, re.S)
    if choice:
        # quoted by 3.11 and 3.12.0-6 ('a', 'b'), not by 3.12.7+ and 3.13 (a, b): str() of each
        listed = choice[2]
        options = re.findall(r"'([^']*)'", listed) or [o.strip() for o in listed.split(",")]
        typed = [choice[1]]
    elif message.startswith("unrecognized arguments: "):
        typed = [w.split("=", 1)[0] for w in message.split()[2:] if w.startswith("--")]
        options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    else:
        return None
    # compared without the leading dashes, which every flag shares ('--bogus' is not near '--out')
    bare = {o.lstrip("-"): o for o in options}
    for word in typed:
        close = difflib.get_close_matches(word.lstrip("-"), list(bare), n=1, cutoff=0.6)
        if close:
            return f"'{bare[close[0]]}'"
    return None


def _command_of(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The deepest subcommand parser ``argv``'s words name, starting at ``parser``. In a group with a
    default subcommand (``image [build] PROFILE``), a word that is none of its subcommands runs the
    default one: its flags are what a mistyped flag is looked up in (the hint named the group's --help,
    which lists no flag of ``image build``)."""
    for word in argv:
        if word == "--":
            break
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word.startswith("-"):
            continue
        chosen = sub.choices.get(word)
        if chosen is None and isinstance(sub, _DefaultSubcommand):
            chosen = sub.choices.get(sub.default_name)
        if isinstance(chosen, argparse.ArgumentParser):
            parser = chosen
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the program is, so that undo stacks (``launch.transaction``) and
    ``finally`` blocks run as they do for Ctrl-C."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: The commands whose re-run finishes what an interrupted one began (each keeps what is done and
#: writes its results atomically: their help or module says so), by their words after the program's
#: name. Ctrl-C (or SIGTERM) of one says so; of any other command (a preview, a mount, a session:
#: ``site serve``, ``cvmfs serve``, ``cernvm-launch ssh``, whose interrupt is how they end, or a
#: check) only that it was interrupted.
RESUMABLE = frozenset(
    {
        "cvmfs publish",  # the manifest last: "an interrupted publish can simply be run again"
        "cvmfs replicate",  # objects by rename, signed files last: the next run fetches the rest
        "os",  # the tree by atomic_dir, a killed build's half reclaimed
        "image build",  # "an interrupted run re-run goes on from the work folder"
        "container build",  # "the next run clears [the folder] and finishes the job"
        "hub ingest",  # "a re-run finishes the job"
        "site build",  # the next build finishes an interrupted one (the state records the outputs)
        "mirror yum",  # mirror: "interrupted at any point, the same command run again finishes"
        "mirror apt",
        "mirror sync",
        "release build",  # "an interrupted build resumes with the profiles not done"
        "release publish",  # "a re-run after an interruption uploads only what is missing"
    }
)


def stopped_line(what: str, command: str) -> str:
    """The line an interrupted (``what``) ``command`` (its parser's prog) ends with."""
    words = command.split(" ", 1)
    if len(words) == 2 and words[1] in RESUMABLE:
        return f"{what}; re-run the same command to finish"
    return what


#: the command line being run asks for --json: its usage errors, found before its flags are, are a JSON
#: document on stdout too
_json_asked = False
#: the command line being parsed, for a usage error's usage line and hint (``_command_of``)
_argv_parsed: Sequence[str] = ()


def standard_streams() -> None:
    """Make the process's standard streams usable, whatever it was started with (the entry points).

    A standard descriptor closed at the start (``<&-``, ``>&-``) left ``sys.stdin``/``sys.stdout``
    None (``profiles schema >&-``, ``cvmfs publish REPO - <&-``: AttributeError tracebacks), and the
    next file the command opened would take the descriptor, which the tools it runs inherit as their
    output. Each is ``/dev/null`` now: stdin reads nothing, output goes nowhere (as rich's already
    did). A locale whose encoding is not UTF-8 (``LC_ALL=en_US.ISO-8859-1``) made stdout fail at the
    first 'μ' of ``--help`` (a UnicodeEncodeError traceback): a character it cannot encode is written
    as an escape (``\\u03bc``), as stderr's are; in a JSON document that is the same character."""
    for fd, name, flags in (
        (0, "stdin", os.O_RDONLY),
        (1, "stdout", os.O_WRONLY),
        (2, "stderr", os.O_WRONLY),
    ):
        if getattr(sys, name) is not None:
            continue
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, flags)  # the lowest free descriptor: ``fd`` (done in order)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        raw.name = f"<{name}>"  # type: ignore[misc]  # as Python names its own (messages name it)
        buffered = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        setattr(sys, name, io.TextIOWrapper(buffered, errors="backslashreplace", line_buffering=fd == 2))
    stdout = sys.stdout
    if (
        isinstance(stdout, io.TextIOWrapper)
        # (surrogateescape: Python's own for the C locale with its UTF-8 mode off, PYTHONUTF8=0: a
        # 'μ' was a UnicodeEncodeError traceback there too)
        and stdout.errors in ("strict", "surrogateescape")
        and codecs.lookup(stdout.encoding).name != "utf-8"
    ):
        stdout.reconfigure(errors="backslashreplace")


def asks_json(argv: Sequence[str]) -> bool:
    """Whether ``--json`` is among ``argv``'s options (before a ``--``)."""
    for word in argv:
        if word == "--":
            return False
        # argparse takes --js and --jso for --json (no other flag begins so): a usage error of such a
        # line was plain text, while the line's other errors are --json's document
        if len(word) >= 4 and "--json".startswith(word):
            return True
    return False


def asks_help(argv: Sequence[str]) -> bool:
    """Whether ``-h``/``--help`` (or argparse's ``--he``...) is among ``argv``'s words (before a ``--``)."""
    for word in argv:
        if word == "--":
            return False
        if word == "-h" or (len(word) > 2 and "--help".startswith(word)):
            return True
    return False


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None, *, own_process: bool = False) -> int:
    """The one handler of both entry points: a CernVMError is one line, a hint and its class's exit
    code (``errors.EXIT_CODES``); Ctrl-C exits 130 and SIGTERM 143, after undoing what was half-done.

    ``own_process``: the command line is this process's (an entry point, not a caller in the same
    interpreter); a command whose parser sets ``ends_process`` then ends it here (``end_process``)."""
    global _json_asked, _argv_parsed
    _argv_parsed = sys.argv[1:] if argv is None else argv
    _json_asked = asks_json(_argv_parsed)
    try:
        if asks_help(_argv_parsed):
            with inputs.unchecked():
                args = parser.parse_args(argv)  # (exits 0 at the --help)
        # (a line argparse took no --help in: ``-h`` an option's value, a word of the missing-extra
        # stand-in) parsed as any other, its inputs checked
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        return stopped_early(_argv_parsed)
    except CernVMError as e:  # an argument's type found it wrong (``cli.inputs``: a file not there)
        Output(json_mode=_json_asked).error(e)
        return e.exit_code
    except BrokenPipeError:  # ``--help | head -1``: as a command's output cut short
        _stdout_gone()
        return 0
    except OSError as e:  # --help or --version to a full disk (``ArgumentParser._print_message``)
        err = _environment_error(e)
        if err is None:
            raise
        _stdout_gone()  # (what stdout still holds is not written again at the exit)
        Output(json_mode=_json_asked).error(err)
        return err.exit_code
    finally:
        _json_asked, _argv_parsed = False, ()
    # told to the command (the parser's ``ends_process`` says it may end, this that it will), which may
    # then leave to the process's end what it would tidy up
    args.one_shot = own_process and getattr(args, "ends_process", False) and not _observed()
    code = _dispatch(parser, args)
    if own_process:
        _ended()
    if args.one_shot and threading.active_count() == 1:
        end_process(code, run_atexit=True, output_is_result=True)
    return code


def _ended() -> None:
    """The command has ended (its output written, its exit code known): a Ctrl-C now could undo
    nothing, so it is ignored. It was a KeyboardInterrupt traceback or, once Python's finalization had
    put back the default action, death by SIGINT: a silent 130 after ``cvmfs publish`` had printed
    its summary (rv34a). Only with no other thread left to join: a hang there stays interruptible."""
    if threading.current_thread() is threading.main_thread() and threading.active_count() == 1:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def stopped_early(argv: Sequence[str]) -> int:
    """Ctrl-C before the command began (its modules imported, its line parsed: the first ~0.3 s) ends
    as a command's Ctrl-C does: "interrupted", exit 130, --json's document; it was a KeyboardInterrupt
    traceback and exit 1, or death by SIGINT. (What Python imports before ``main`` runs stays uncovered.)"""
    Output(json_mode=asks_json(argv)).stopped("interrupted", EXIT_INTERRUPTED)
    return EXIT_INTERRUPTED


def _observed() -> bool:
    """Under a profiler or tracer (python -m cProfile, a debugger), which writes its results after the
    command returns: on 3.12+ cProfile registers with ``sys.monitoring`` and sets no profile function."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)
    return monitoring is not None and any(monitoring.get_tool(i) is not None for i in range(6))


def _configure_logging(verbose: int, quiet: int = 0) -> None:
    """The CLI's log format and level (-v INFO, -vv DEBUG, -qq ERROR: a logged warning is a
    warning). A command that sets ``logs=False`` (its code never logs: ``site build``) skips this
    unless -v: importing logging is ~5 CPU-ms of a ~0.2 s one-page rebuild. A record logged there
    anyway still reaches stderr at WARNING (logging's last-resort handler), without the level and
    logger name."""
    import logging

    from ..termtext import log_formatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG
        if verbose >= 2
        else logging.INFO
        if verbose
        else logging.ERROR
        if quiet >= 2
        else logging.WARNING,
        handlers=[handler],
    )


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    verbose = getattr(args, "verbose", 0)
    quiet = getattr(args, "quiet", 0)
    out = Output(json_mode=getattr(args, "json", False), quiet=quiet, verbose=verbose)
    if verbose or getattr(args, "logs", True):
        _configure_logging(verbose, quiet)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return UsageError.exit_code
    command = getattr(args, "command_name", parser.prog)
    try:
        try:
            with _sigterm_raises():
                return func(args, out)
        except ImportError as e:
            # An area whose extra is not installed fails where it first imports it: name the extra.
            words = command.split()
            missing = extras.from_import_error(e, command, prefer=words[1] if len(words) > 1 else None)
            if missing is None:
                raise
            raise missing from None
    except CernVMError as e:
        out.error(e)
        return e.exit_code
    except Terminated:
        out.stopped(stopped_line("terminated", command), EXIT_TERMINATED)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        out.stopped(stopped_line("interrupted", command), EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except OSError as e:
        # The place a command reads or writes could not be used: a folder of someone else's
        # (launchHomeFolder=/root/x), a full disk or quota, a read-only file system. Each was a
        # traceback wherever no code expected it (pr24b finding 3); other OSErrors stay bugs.
        err = _environment_error(e)
        if err is None:
            raise
        out.error(err)
        return err.exit_code
    except RuntimeError as e:
        # Path.resolve() before Python 3.13 reports a symlink loop so (3.13: OSError ELOOP, above):
        # `cernvm-launch create --sharedFolder LOOP` and any other resolved path was a traceback
        loop = str(e).removeprefix(_SYMLINK_LOOP)
        if loop == str(e):
            raise
        err = CernVMError(
            "a loop of symbolic links", where=loop.strip("'\""), hint="point it at a real file or folder"
        )
        out.error(err)
        return err.exit_code


_SYMLINK_LOOP = "Symlink loop from "


#: errno -> hint, for an OSError that says something about the machine rather than about the code
_ENVIRONMENT_ERRNOS = {
    errno.EACCES: "check the permissions of it and of the folders above it",
    errno.EPERM: "check the permissions of it and of the folders above it",
    errno.ENOSPC: "free some space on that file system, or use another one",
    errno.EDQUOT: "your disk quota there is used up: free some space, or use another file system",
    errno.EROFS: "that file system is read-only: use a writable place",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.ELOOP: "a part of that path is a loop of symbolic links",
    errno.ENAMETOOLONG: "use a shorter path",
}


def _environment_error(e: OSError) -> CernVMError | None:
    if e.errno is None and e.args and isinstance(e.args[0], list):  # shutil.copytree's, for every file
        from ..fsutil import copytree_error  # only on this error path

        e = copytree_error(e)
    if e.errno == errno.ENOENT and e.filename is None and _working_folder_gone():
        # os.getcwd() of a folder removed under the command (``os.path.abspath``, ``Path.resolve``, a
        # relative name shown relative to it): a FileNotFoundError traceback naming no file
        return CernVMError(
            "the current folder no longer exists",
            where=os.environ.get("PWD") or None,
            hint="cd to a folder that exists and run the command again",
        )
    if isinstance(e.filename, (str, bytes, os.PathLike)):
        from ..paths import variable_behind  # only on this error path

        behind = variable_behind(os.fsdecode(e.filename), e.errno)
        if behind is not None:
            # the cache root or launch home where $XDG_*/$HOME/$CERNVM_* put it (/proc, a file, a
            # read-only mount): ENOENT there was a traceback, and the others did not name the variable
            variable, root = behind
            value = os.environ.get(variable, "")
            return CernVMError(
                f"cannot make or use this folder (${variable} is {value[:200]!r}):"
                f" {e.strerror or os.strerror(e.errno or 0)}",
                where=str(root),
                hint=f"point ${variable} at a folder you can write"
                + (", or unset it" if variable != "HOME" else " (or set $XDG_CACHE_HOME and $XDG_DATA_HOME)"),
            )
    hint = _ENVIRONMENT_ERRNOS.get(e.errno or 0)
    if e.errno == errno.EEXIST and isinstance(e.filename, (str, bytes, os.PathLike)):
        # mkdir(exist_ok=True) of a folder where a file is (`container --out FILE`, `cvmfs export SRC
        # FILE/x`, $CERNVM_CACHE_DIR a file): a FileExistsError traceback (pr28a finding 12); any
        # other EEXIST (an O_EXCL race) stays a bug
        path = os.fsdecode(e.filename)
        if os.path.lexists(path) and not os.path.isdir(path):
            return CernVMError(
                "a file where a folder is expected", where=path, hint="remove it, or choose another path"
            )
        return None
    if hint is None:
        return None
    strerror = e.strerror or os.strerror(e.errno or 0)
    if e.filename is None:  # a write to a full disk names no file
        return CernVMError(strerror, hint=hint) if e.errno in (errno.ENOSPC, errno.EDQUOT) else None
    if not isinstance(e.filename, (str, bytes, os.PathLike)):
        return None  # a descriptor (os.listdir(fd)): the code's own business, and fsdecode's TypeError
    from ..fsutil import shown  # only on this error path

    return CernVMError(strerror, where=shown(os.fsdecode(e.filename)), hint=hint)


def _working_folder_gone() -> bool:
    try:
        os.getcwd()
    except FileNotFoundError:
        return True
    return False


class _DefaultSubcommand(argparse._SubParsersAction):  # type: ignore[type-arg]
    """``group ARG ...`` means ``group <default> ARG ...`` when ARG is not one of the subcommands."""

    default_name = "build"

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        vals = list(values or [])
        if vals and vals[0] not in self._name_parser_map:
            vals = [self.default_name, *vals]
        super().__call__(parser, namespace, vals, option_string)


class _AnyName(dict[str, argparse.ArgumentParser]):
    """Choices that accept any word (argparse checks choices before the action runs)."""

    def __contains__(self, key: object) -> bool:
        return True


def subcommands_with_default(
    group: argparse.ArgumentParser, default: str, metavar: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Subcommands of ``group`` where a first word that is no subcommand runs ``default`` with it.

    Call ``accept_any_word(action)`` after adding the subparsers.
    """
    action_class = type("DefaultTo", (_DefaultSubcommand,), {"default_name": default})
    group.register("action", "parsers", action_class)
    # prog: argparse would name the leaves after the group's usage text, which such a group writes
    # over several lines ('release verify --help' began "cernvm-build release [build] VERSION
    # [options]\n  cernvm-build release {verify,rebuild,publish} ... verify")
    return group.add_subparsers(title="commands", metavar=metavar, prog=group.prog)


def accept_any_word(action: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    action.choices = _AnyName(action.choices or {})
