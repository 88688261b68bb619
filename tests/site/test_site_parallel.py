"""fork_map: the site build's forked workers (pages rendered and written in parallel)."""

from __future__ import annotations

import os
import pickle
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_build.errors import BuildError
from cernvm_build.site import parallel
from cernvm_build.site.model import LinkErrors
from cernvm_build.site.parallel import fork_map


def _arrived(where: Path) -> None:
    """A forked child says it has taken an item (``_children_at_work`` waits for it)."""
    if os.getpid() != int(where.name):
        (where / str(os.getpid())).touch()


def _children_at_work(where: Path, n: int) -> Callable[[], None]:
    """fork_map's ``meanwhile``: this process takes no run before ``n`` children have taken one (on a
    loaded machine it could otherwise take every run before a child is scheduled)."""

    def wait() -> None:
        deadline = time.monotonic() + 60
        while sum(1 for _ in where.iterdir()) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    return wait


def _here(tmp_path: Path) -> Path:
    where = tmp_path / str(os.getpid())
    where.mkdir()
    return where


def _pid_and_double(where: Path, item: int) -> tuple[int, int]:
    _arrived(where)
    time.sleep(0.002)  # work: each process takes runs of items while the others work theirs
    return os.getpid(), item * 2


def test_results_keep_the_items_order_and_the_work_is_shared(tmp_path: Path) -> None:
    items = list(range(100))
    where = _here(tmp_path)
    got = fork_map(_pid_and_double, where, items, jobs=3, least=2, meanwhile=_children_at_work(where, 2))
    assert [r for _pid, r in got] == [i * 2 for i in items]
    pids = {pid for pid, _r in got}
    # three processes, this one among them (it works a share instead of waiting)
    assert len(pids) == 3 and os.getpid() in pids


def _fail_in_a_child(where: Path, item: int) -> int:
    _arrived(where)
    if os.getpid() != int(where.name):
        raise ValueError(f"bad item {item}")
    time.sleep(0.01)  # this process is slow: the child takes runs too
    return item


def test_a_failing_worker_is_a_build_error_naming_the_failure(tmp_path: Path) -> None:
    where = _here(tmp_path)
    with pytest.raises(BuildError, match="worker failed: ValueError: bad item") as e:
        fork_map(
            _fail_in_a_child, where, list(range(10)), jobs=2, least=2, meanwhile=_children_at_work(where, 1)
        )
    assert "--jobs 1" in str(e.value.hint)


def _full_disk_in_a_child(where: Path, item: int) -> int:
    _arrived(where)
    if os.getpid() != int(where.name):
        raise OSError(28, "No space left on device", f"/out/page{item}.html")
    time.sleep(0.01)
    return item


def test_a_workers_full_disk_reaches_the_parent_as_itself(tmp_path: Path) -> None:
    # pr28a finding 2: a worker's ENOSPC arrived as text ("a site build worker failed: OSError: [Errno
    # 28] ...", hint "run again with --jobs 1"); as itself the CLI names the file and says to free space
    where = _here(tmp_path)
    with pytest.raises(OSError) as e:
        fork_map(
            _full_disk_in_a_child,
            where,
            list(range(10)),
            jobs=2,
            least=2,
            meanwhile=_children_at_work(where, 1),
        )
    assert type(e.value) is OSError and e.value.errno == 28
    assert str(e.value.filename).startswith("/out/page")


def _link_errors_in_a_child(where: Path, item: int) -> int:
    _arrived(where)
    if os.getpid() != int(where.name):
        raise LinkErrors([("docs/a.md", 3, "no such page x.md")], 2)
    time.sleep(0.01)
    return item


def test_a_workers_error_that_does_not_unpickle_reaches_the_parent_as_its_text(tmp_path: Path) -> None:
    # rv27a: LinkErrors pickles but its __init__ (found, total) cannot be called with its args: sent as
    # itself, the parent read a garbled message and said "worker process died", the error's words lost
    where = _here(tmp_path)
    with pytest.raises(BuildError, match=r"worker failed: LinkErrors: docs/a\.md:3: no such page x\.md"):
        fork_map(
            _link_errors_in_a_child,
            where,
            list(range(10)),
            jobs=2,
            least=2,
            meanwhile=_children_at_work(where, 1),
        )


def _die_in_a_child(where: Path, item: int) -> int:
    _arrived(where)
    if os.getpid() != int(where.name):
        os._exit(3)
    time.sleep(0.01)
    return item


def test_a_worker_that_dies_is_a_build_error(tmp_path: Path) -> None:
    where = _here(tmp_path)
    with pytest.raises(BuildError, match="worker process died"):
        fork_map(
            _die_in_a_child, where, list(range(10)), jobs=2, least=2, meanwhile=_children_at_work(where, 1)
        )


def _fail_here(parent: int, item: int) -> int:
    if os.getpid() == parent:
        raise ValueError("here")
    return item


def _children() -> set[str]:
    # this process's children, zombies too (not yet waited for); fork_map forks from this thread
    return set(Path(f"/proc/self/task/{os.getpid()}/children").read_text().split())


def test_an_error_in_this_process_ends_the_workers_and_is_raised_as_is() -> None:
    before = _children()
    with pytest.raises(ValueError, match="here"):
        fork_map(_fail_here, os.getpid(), list(range(10)), jobs=3, least=2)
    assert _children() == before  # every worker ended and waited for: none running, no zombie


def _note(folder: Path, item: int) -> int:
    (folder / f"{item}.{os.getpid()}").touch()
    return item


def _until(folder: Path, n: int) -> Callable[[], None]:
    """A ``meanwhile`` that waits (20 s at most) until the children made ``n`` files in ``folder``."""

    def meanwhile() -> None:
        deadline = time.monotonic() + 20
        while len(list(folder.iterdir())) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    return meanwhile


def test_the_runs_go_to_the_processes_free_to_take_them() -> None:
    """This process's own work first (``meanwhile``), while the children take every run: it waits
    here until they did all items but the first (made before the fork); with shares fixed in advance
    a third of them would have waited for this process, and the wait would end without them."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        meanwhile = _until(folder, 99)
        got = fork_map(_note, folder, list(range(100)), jobs=3, least=2, meanwhile=meanwhile)
        assert got == list(range(100))
        by = [name.split(".") for name in os.listdir(folder)]
        here = sorted(int(item) for item, pid in by if int(pid) == os.getpid())
        assert len(by) == 100 and here == [0]


def test_no_item_before_the_fork_when_the_caller_warmed_up() -> None:
    """``first=False``: every item is in a run (the caller did its warm-up work itself); ``size``: the
    caller's runs (items that are runs of their own already)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        meanwhile = _until(folder, 20)
        got = fork_map(
            _note, folder, list(range(20)), jobs=2, least=2, meanwhile=meanwhile, size=1, first=False
        )
        assert got == list(range(20))
        by = [name.split(".") for name in os.listdir(folder)]
        assert len(by) == 20 and all(int(pid) != os.getpid() for _item, pid in by)


def test_the_work_meanwhile_is_done_without_children_too(tmp_path: Path) -> None:
    done: list[int] = []
    got = fork_map(_pid_and_double, _here(tmp_path), [1, 2], jobs=1, meanwhile=lambda: done.append(1))
    assert [r for _pid, r in got] == [2, 4] and done == [1]


def test_many_items_are_cut_into_runs_a_pipe_holds() -> None:
    from cernvm_build.site import parallel

    assert parallel.run_size(1000, 2) == parallel.RUN_ITEMS and parallel.run_size(20, 2) == 1
    for n in (10, 1000, 32_768, 100_000, 1_000_000):
        size = parallel.run_size(n, 2)
        assert -(-n // size) <= parallel.MAX_RUNS and parallel.MAX_RUNS * parallel._RUN.size <= 4096
    # 9,000 runs of one item would have blocked this process writing their numbers
    assert fork_map(_times, 1, list(range(9000)), jobs=2, least=2) == list(range(9000))
    # a run size the caller chose is raised as far as the pipe needs
    assert fork_map(_times, 1, list(range(9000)), jobs=2, least=2, size=1, first=False) == list(range(9000))


def _times(shared: int, item: int) -> int:
    return item * shared


_TAKEN: list[int] = []  # the items a forked child has taken (its own copy of this list)


def _second_waits_for_the_first(where: Path, item: int) -> tuple[int, int]:
    """A child's second item waits until this process has read the child's first result: it could not
    if a child sent its results only at its end. This process's own items take a while, so it reads
    between them."""
    if os.getpid() == int(where.name):
        time.sleep(0.02)
        return os.getpid(), item
    _arrived(where)
    _TAKEN.append(item)
    deadline = time.monotonic() + 30
    while len(_TAKEN) > 1 and not (where / "read").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the first result was not read while this child worked")
        time.sleep(0.005)
    return os.getpid(), item


def test_a_childs_results_are_read_while_it_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where = _here(tmp_path)
    drain = parallel._Inbox.drain

    def noted(self: parallel._Inbox) -> None:
        drain(self)
        if self.runs:
            (where / "read").touch()

    monkeypatch.setattr(parallel._Inbox, "drain", noted)
    items = list(range(60))
    got = fork_map(
        _second_waits_for_the_first,
        where,
        items,
        jobs=2,
        least=2,
        meanwhile=_children_at_work(where, 1),
        size=1,
        first=False,
    )
    assert [i for _pid, i in got] == items
    assert {pid for pid, _i in got} - {os.getpid()}  # the child did its share


def _big(_shared: int, item: int) -> bytes:
    return bytes([item % 256]) * 200_000


def test_results_bigger_than_the_pipe_arrive_whole() -> None:
    # 12 MB from two processes: a child's pipe fills many times over, whether or not this process is
    # still taking runs when the child sends
    got = fork_map(_big, 0, list(range(60)), jobs=2, least=2, size=1)
    assert got == [_big(0, i) for i in range(60)]


def test_a_worker_that_dies_in_the_middle_of_a_message_is_a_build_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def half_then_die(fd: int, message: object) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        frame = parallel._FRAME.pack(len(data)) + data
        os.write(fd, frame[: len(frame) // 2])
        os._exit(3)

    monkeypatch.setattr(parallel, "_send", half_then_die)  # only children send
    with pytest.raises(BuildError, match="worker process died"):
        fork_map(_plus_one, None, list(range(200)), jobs=2, least=2)


def _plus_one(_shared: None, item: int) -> int:
    return item + 1


#: fork_map under the CLI's SIGTERM handler (raise ``Terminated``), each child SIGTERMed the moment
#: ``os.fork`` returns in it, before ``_child`` resets the handler (the parent stopping early, as on a
#: hostile data file, does that); the child must end quietly, not unwind the parent's stack
TERM_AT_FORK = """
import os, signal, sys
from cernvm_build.cli.app import _sigterm_raises
from cernvm_build.errors import BuildError
from cernvm_build.site import parallel
fork = os.fork
def fork_then_term():
    pid = fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGTERM)
    return pid
parallel.os.fork = fork_then_term
with _sigterm_raises():
    try:
        parallel.fork_map(lambda shared, item: item, None, list(range(20)), jobs=3, least=1)
    except BuildError as e:
        print("error:", e)
    except BaseException as e:
        print(f"pid {os.getpid()}: {type(e).__name__}")
"""


def test_a_worker_terminated_at_its_fork_ends_quietly() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", TERM_AT_FORK], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.splitlines() == ["error: a site build worker process died"], proc.stdout


TERM_PARENT_AT_FORK = """
import os, signal, time
from cernvm_build.cli.app import _sigterm_raises
from cernvm_build.site import parallel
fork = os.fork
forked = []
def fork_then_term_parent():
    pid = fork()
    if pid != 0:
        forked.append(pid)
        os.kill(os.getpid(), signal.SIGTERM)  # held while blocked across the fork
    return pid
parallel.os.fork = fork_then_term_parent
def slow(shared, item):
    time.sleep(0.02)
    return item
with _sigterm_raises():
    try:
        parallel.fork_map(slow, None, list(range(20)), jobs=3, least=1)
    except BaseException as e:
        print(type(e).__name__)
for pid in forked:
    try:
        print("left running" if os.waitpid(pid, os.WNOHANG) == (0, 0) else "left a zombie")
    except ChildProcessError:
        print("reaped")
"""


def test_the_parent_terminated_at_a_fork_ends_and_reaps_that_child() -> None:
    # The SIGTERM is delivered when the mask is restored: only after the new child is registered,
    # so fork_map's cleanup terminates and waits for it too.
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", TERM_PARENT_AT_FORK], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.splitlines() == ["Terminated", "reaped"], proc.stdout


def test_a_failed_fork_leaves_no_pipe_open(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(parallel.os, "fork", no_fork)
    before = sorted(os.listdir("/proc/self/fd"))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    with pytest.raises(BlockingIOError):
        parallel.fork_map(lambda shared, item: item, None, list(range(20)), jobs=3, least=1)
    assert sorted(os.listdir("/proc/self/fd")) == before
    assert signal.pthread_sigmask(signal.SIG_BLOCK, ()) == mask


def test_arrived_gets_each_childs_run_as_it_is_read(tmp_path: Path) -> None:
    """(sp20b) ``arrived``: this process is handed every run a child made, (run number, results), before
    the map returns, none of its own; an exception it raises ends the map and its children."""
    where = _here(tmp_path)
    got: list[tuple[int, list[tuple[int, int]]]] = []
    items = list(range(40))
    out = fork_map(
        _pid_and_double,
        where,
        items,
        jobs=2,
        least=2,
        meanwhile=_children_at_work(where, 1),
        size=1,
        first=False,
        arrived=lambda run, results: got.append((run, results)),
    )
    assert got and all(results == [out[run]] for run, results in got)
    theirs = {run for run, (pid, _r) in enumerate(out) if pid != os.getpid()}
    assert {run for run, _results in got} == theirs and len(got) == len(theirs)

    def refuse(run: int, results: list[object]) -> None:
        raise ValueError("refused here")

    (tmp_path / "again").mkdir()
    again = _here(tmp_path / "again")
    before = _children()
    with pytest.raises(ValueError, match="refused here"):
        fork_map(_pid_and_double, again, items, jobs=2, least=2, size=1, first=False, arrived=refuse)
    assert _children() == before
