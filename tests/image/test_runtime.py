"""The initrd's Python runtime is self-contained: it runs the initrd's modules from its own
``lib/pythonX.Y`` only."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cernvm_build.bootloader import runtime
from cernvm_build.bootloader.runtime import _own_imports, build_runtime
from cernvm_build.errors import BuildError

pytestmark = pytest.mark.integration


def test_runtime_runs_entry_points_from_its_own_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # the build's helper processes inherit it
    rt = build_runtime(tmp_path / "rt")
    assert not list(tmp.iterdir()), "the build left temporary files behind"
    pycs = tmp_path / "rt" / "lib" / f"python{rt.version}"
    names = [p.relative_to(pycs).as_posix() for p in pycs.rglob("*.pyc")]
    assert not list((tmp_path / "rt" / "lib").glob("*.zip")), "modules are files, not a zip (zipimport costs)"
    assert "cernvm_build/cvmfs/mount.pyc" in names
    assert "cernvm_build/cvmfs/fuse.pyc" in names, "imports inside functions must be followed"
    # the daemon speaks the kernel's FUSE protocol itself: no mfusepy, no libfuse (ctypes: mount(2))
    assert "cernvm_build/cvmfs/fuse_lowlevel.pyc" in names and "ctypes/__init__.pyc" in names
    assert "mfusepy.pyc" not in names and "cernvm_build/cvmfs/fuse_libfuse2.pyc" not in names
    # what the interpreter has frozen in its binary (3.11: os, codecs, importlib's bootstrap, runpy)
    # never reaches the initrd as a pyc: those are loaded from the binary (the entry points below
    # still run, with -m too)
    if tuple(map(int, rt.version.split("."))) >= (3, 11):
        assert not {"os.pyc", "codecs.pyc", "runpy.pyc", "importlib/_bootstrap.pyc"} & set(names)
    assert not any(n.startswith(("cryptography", "yaml", "rich", "cernvm_build/cli/")) for n in names)
    assert not any("libfuse" in lib or "libssl" in lib for lib in rt.libraries)
    # libdeflate goes along (the daemon inflates with it: cvmfs/inflate.py)
    assert "libdeflate.so.0" in rt.libraries and (tmp_path / "rt" / "lib" / "libdeflate.so.0").is_file()
    ud = tmp_path / "user-data"
    ud.write_text("[ucernvm-begin]\ncvmfs_tag=v1\nbad key\n[ucernvm-end]\n")
    lib = tmp_path / "rt" / "lib"
    env = {"PYTHONHOME": str(tmp_path / "rt"), "LD_LIBRARY_PATH": str(lib), "PATH": "/nonexistent"}
    py = [str(lib / "ld-linux-x86-64.so.2"), str(tmp_path / "rt" / "bin" / "python3"), "-S", "-m"]
    r = subprocess.run(
        [*py, "cernvm_build.bootloader.userdata", str(ud)], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "cvmfs_tag=v1\n" and "not key=value" in r.stderr
    # and the runtime's daemon loads it from the runtime's own lib/ (dlopen would also find the host's)
    check = (
        "from cernvm_build.cvmfs import inflate; print(inflate.available()); "
        "print(*{l.split()[-1] for l in open('/proc/self/maps') if 'libdeflate' in l})"
    )
    r = subprocess.run([*py[:-1], "-c", check], env=env, capture_output=True, text=True)
    assert r.stdout == f"True\n{lib / 'libdeflate.so.0'}\n", r.stderr
    # the daemon's SHA-1 of every fetched object is OpenSSL's (fewer instructions a byte than the
    # built-in _sha1), from the runtime's own libcrypto
    check = (
        "import hashlib; print(type(hashlib.sha1()).__module__, hashlib.sha1(b'abc').hexdigest()); "
        "print(*{l.split()[-1] for l in open('/proc/self/maps') if 'libcrypto' in l})"
    )
    r = subprocess.run([*py[:-1], "-c", check], env=env, capture_output=True, text=True)
    sha1_abc = "a9993e364706816aba3e25717850c26c9cd0d89d"
    assert r.stdout == f"_hashlib {sha1_abc}\n{lib / 'libcrypto.so.3'}\n", r.stderr
    # a pinned date (the mount's --date, userdata's cvmfs_date) needs datetime, imported only then
    check = "from cernvm_build.cvmfs.history import parse_date; print(parse_date('1970-01-02T00:00:00Z'))"
    r = subprocess.run([*py[:-1], "-c", check], env=env, capture_output=True, text=True)
    assert r.stdout == "86400\n", r.stderr
    # the codecs our code names only as a string (the mount's report to its parent: unicode_escape)
    # are in it: one missing was the boot's panic, "LookupError: unknown encoding: unicode_escape"
    check = "from cernvm_build.cvmfs import mount; print(mount._escaped('a\\x1bb\\u03bc'))"
    r = subprocess.run([*py[:-1], "-c", check], env=env, capture_output=True, text=True)
    assert r.stdout == "a\\x1bb\\u03bc\n", r.stderr
    r = subprocess.run(
        [*py, "cernvm_build.cvmfs.mount", "--help"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 0 and "--snapshot-file" in r.stdout, r.stderr


def test_codecs_named_as_strings_are_collected(tmp_path: Path) -> None:
    """A codec is looked up by its name at run time: no import statement names its module."""
    src = tmp_path / "m.py"
    src.write_text(
        "def f(t, p):\n"
        "    open(p, encoding='Latin-1')\n"
        "    return t.encode('unicode_escape').decode('ascii'), b''.decode('no-such-codec')\n"
        "def g(b):\n"
        "    import codecs\n"
        "    return str(b, 'cp1252'), codecs.getdecoder('utf-16')\n"
    )
    assert {n for n in _own_imports(src, "m", False) if n.startswith("encodings")} == {
        "encodings.latin_1",
        "encodings.unicode_escape",
        "encodings.ascii",
        "encodings.cp1252",
        "encodings.utf_16",
    }


def test_the_runtime_is_named_and_cached_by_its_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build time is not an input (the cpio dates every member); the modules are: the initrd names
    the runtime by them, and the cached runtime is rebuilt when one of our sources changed."""
    from cernvm_build.bootloader.initrd import runtime_id
    from cernvm_build.bootloader.runtime import cached_runtime

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")  # stages do not read it
    a = cached_runtime(cache=tmp_path / "cache")
    pycs = list((a.root / "lib").glob("python*/**/*.pyc"))
    assert pycs
    # the initrd names the runtime's code by its modules (a boot reuses saved parser output only then)
    rid = runtime_id(a.root)
    assert len(rid) == 65 and rid == runtime_id(a.root)
    pycs[0].write_bytes(pycs[0].read_bytes() + b"\0")
    assert runtime_id(a.root) != rid, "another module's content is another runtime"
    assert cached_runtime(cache=tmp_path / "cache").root == a.root
    assert runtime_id(a.root) != rid, "no source changed: the cached runtime is reused as it is"
    info = a.root.parent / "runtime.json"
    doc = json.loads(info.read_text())
    some = sorted(doc["sources"])[0]
    doc["sources"][some] = "0" * 64  # as if that source had changed since
    info.write_text(json.dumps(doc))
    assert cached_runtime(cache=tmp_path / "cache").root == a.root
    assert runtime_id(a.root) == rid, "a changed source rebuilds the runtime"
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_the_runtime_build_needs_libdeflate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libdeflate the build stops with a hint: the initrd's contents must
    not depend on what the build host happens to have."""
    real = runtime.Path.exists
    monkeypatch.setattr(runtime.Path, "exists", lambda p: "libdeflate" not in str(p) and real(p))
    with pytest.raises(BuildError, match=r"libdeflate\.so\.0 not found") as e:
        runtime.deflate_library()
    assert "apt-get install libdeflate0" in str(e.value.hint)


def test_the_build_manifest_names_the_libdeflate_it_shipped() -> None:
    from cernvm_build.image.build import _tool_versions

    assert "libdeflate0" in _tool_versions()  # the Makefile installs it


def test_a_killed_assembly_of_earlier_inputs_is_reclaimed(tmp_path: Path) -> None:
    """A runtime assembly SIGKILLed (inputs A) left ``.<key A>.<pid>.<rnd>.tmp``; once our sources
    changed (key B) no run reclaimed it (pr19e finding 1): the next assembly does."""
    import os
    import signal
    import sys

    from cernvm_build.bootloader.runtime import cached_runtime

    cache = tmp_path / "cache"
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from cernvm_build.fsutil import atomic_dir\n"
        "with atomic_dir(Path(sys.argv[1])) as t:\n"
        "    (t / 'rt').mkdir()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(cache / ("0" * 24))], env=env, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    rt = cached_runtime(cache=cache)
    assert [p.name for p in cache.iterdir()] == [rt.root.parent.name]


def test_the_cache_keeps_the_newest_entries_and_those_a_running_build_holds(tmp_path: Path) -> None:
    """lf20a item 8: the cache kept one runtime (~60 MB) per toolkit source change, interpreter or
    checkout, for ever. An assembly evicts all but the KEEP most recently used, except an entry a
    running build holds (its shared lock, here taken by a real other process)."""
    import os
    import sys

    from cernvm_build.bootloader.runtime import KEEP, cached_runtime, evict

    cache = tmp_path / "cache"
    old = [cache / f"{n:024x}" for n in range(KEEP + 2)]  # oldest first
    for i, entry in enumerate(old):
        (entry / "rt").mkdir(parents=True)
        (entry / "runtime.json").write_text("{}")
        os.utime(entry, (1_000_000 + i, 1_000_000 + i))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys\n"
         "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
         "fcntl.flock(fd, fcntl.LOCK_SH)\n"
         "print('held', flush=True)\n"
         "sys.stdin.read()\n", str(old[0])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        rt = cached_runtime(cache=cache)
        kept = sorted(p.name for p in cache.iterdir())
        newest = [e.name for e in old[-(KEEP - 1) :]]
        assert kept == sorted([rt.root.parent.name, old[0].name, *newest]), "held and newest kept"
    finally:
        holder.communicate("")  # ends it: its lock goes with it
    assert evict(cache) == [old[0]], "no longer held: evicted"
    assert cached_runtime(cache=cache).root == rt.root, "the entry in use stays"


def test_two_builds_on_a_cold_runtime_cache_assemble_the_entry_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builds on a cold initrd-runtime cache both assembled the entry, and the second's swap took
    the first's entry (which it holds and reads) from under it: a second waits and uses the first's.
    (The assembly is a fake: the lock is the test.)"""
    import threading

    cache = tmp_path / "cache"
    second_waits = threading.Event()
    monkeypatch.setattr(runtime, "_wait", lambda holder: second_waits.set())
    assembled: list[Path] = []
    got: list[object] = []
    doc = {"python": "p", "version": "3", "modules": [], "libraries": [], "sources": {}}

    def assemble(root: Path, python: str, entries: tuple[str, ...]) -> None:
        assembled.append(root)
        if len(assembled) == 1:  # the first build, assembling: the second build comes now
            second = threading.Thread(target=lambda: got.append(runtime.cached_runtime(cache=cache)))
            second.start()
            assert second_waits.wait(60), "the second build did not wait for the first's assembly"
            assemble.second = second  # type: ignore[attr-defined]
        (root / "rt").mkdir(parents=True)
        (root / "runtime.json").write_text(json.dumps(doc))

    monkeypatch.setattr(runtime, "_assemble", assemble)
    first = runtime.cached_runtime(cache=cache)
    assemble.second.join(60)  # type: ignore[attr-defined]
    assert len(assembled) == 1 and got == [first]
    assert [p.name for p in cache.iterdir()] == [first.root.parent.name]  # no lock file left


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_callers_folder_and_environment_are_no_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # none of them is in the cache key: a datetime.py in the folder the build ran from was the
    # initrd's datetime, PYTHONOPTIMIZE=2 compiled pycs without docstrings and asserts, and
    # LD_LIBRARY_PATH's libz was the one copied in; the cache then served that to every later build
    entries = ("cernvm_build.numtext",)
    plain = _files(build_runtime(tmp_path / "plain", entries=entries).root)
    here = tmp_path / "here"
    here.mkdir()
    (here / "datetime.py").write_text("FROM_THE_BUILD_FOLDER = True\n")
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "libz.so.1").write_bytes(Path("/lib/x86_64-linux-gnu/libbz2.so.1.0").resolve().read_bytes())
    monkeypatch.chdir(here)
    monkeypatch.setenv("PYTHONOPTIMIZE", "2")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(libs))
    assert _files(build_runtime(tmp_path / "again", entries=entries).root) == plain


def _without_run_path(tmp_path: Path) -> Path:
    """A copy of this Python's interpreter laid out as a build in /opt with shared libraries and no
    run path (``prefix/bin/python3.X`` needing ``prefix/lib/libpython3.X.so.1.0``): its RUNPATH made
    to name a folder that does not exist and its libpython a name no system folder holds (Debian's
    libpython3.X package would be found: same length, ``libpyth0n``), its lib/ links to the real
    one's files."""
    import sys
    import sysconfig

    exe = Path(sys.executable).resolve()
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "/nonexistent")
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    data = exe.read_bytes()
    where = str(libdir).encode()
    needed = soname.encode() + b"\0"
    if not soname or not (libdir / soname).is_file() or data.count(where + b"\0") != 1 or needed not in data:
        pytest.skip("this Python is not a shared-library build with its lib folder as its run path")
    odd = soname.replace("libpython", "libpyth0n", 1)
    prefix = tmp_path / "opt"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "lib").mkdir()
    patched = prefix / "bin" / exe.name
    data = data.replace(where + b"\0", b"/" + b"x" * (len(where) - 1) + b"\0")
    patched.write_bytes(data.replace(needed, odd.encode() + b"\0"))
    patched.chmod(0o755)
    (prefix / "lib" / odd).symlink_to(libdir / soname)
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    (prefix / "lib" / version).symlink_to(libdir / version)
    return patched


def test_an_interpreter_that_needs_its_own_library_folder_to_start_is_taken(tmp_path: Path) -> None:
    """The target runs with no library path (the caller's is no input: the test above), so a Python
    built in /opt whose libpython the loader finds only through one was refused at image build. Its
    own installation's lib/ (beside its bin/, named by its path) is its path now, and only that."""
    python = _without_run_path(tmp_path)
    bare = subprocess.run([str(python), "-c", "pass"], env={"LD_LIBRARY_PATH": ""}, capture_output=True)
    assert bare.returncode != 0 and b"libpyth0n" in bare.stderr  # it needs the path to start
    rt = build_runtime(tmp_path / "rt", python=str(python), entries=("cernvm_build.numtext",))
    soname = next(name for name in rt.libraries if name.startswith("libpyth0n"))
    assert (tmp_path / "rt" / "lib" / soname).is_file()
    env = runtime.loader_env(str(python))
    assert env == {**runtime.NO_LOADER_ENV, "LD_LIBRARY_PATH": str(python.parent.parent / "lib")}
    # an interpreter that starts without one keeps none (Debian's, one with a run path)
    import sys

    assert runtime.loader_env(sys.executable) == runtime.NO_LOADER_ENV
