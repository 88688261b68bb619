"""The render child (``site/renderchild.py``): pages rendered in a forked process that imported jinja2
are the pages rendered here; a template's error comes back as the same one-line error; a child that is
gone, or a context that does not pickle, falls back to rendering here; the child is always reaped."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from cernvm_build.errors import BuildError
from cernvm_build.site import templates as tpl_mod
from cernvm_build.site.renderchild import RenderChild


def _env(tmp_path: Path) -> tpl_mod.Environment:
    folder = tmp_path / "templates"
    folder.mkdir(parents=True)
    (folder / "page.html").write_text("<h1>{{ title }}</h1>{{ body }} {{ pid }}\n")
    (folder / "broken.html").write_text("<p>{{ nope }}</p>\n")
    (tmp_path / "jinja").mkdir()
    return tpl_mod.environment(folder, tmp_path / "jinja")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_child_renders_what_this_process_would_and_its_errors_are_ours(tmp_path: Path) -> None:
    env = _env(tmp_path)
    ctx: dict[str, Any] = {"title": "a < b", "body": tpl_mod.Markup("<em>kept</em>"), "pid": 0}
    local = _env(tmp_path / "here").render("page.html", ctx)
    env.use(RenderChild.start(env.folder, env.bytecode_cache))
    child = env.child
    assert child is not None and child.pid > 0
    try:
        assert env.render("page.html", ctx) == local == "<h1>a &lt; b</h1><em>kept</em> 0\n"
        with pytest.raises(BuildError) as there:
            env.render("broken.html", {})
        with pytest.raises(BuildError) as here:
            _env(tmp_path / "again").render("broken.html", {})
        assert (there.value.message, str(there.value.where), there.value.hint) == (
            here.value.message,
            str(here.value.where).replace(str(tmp_path / "again"), str(tmp_path)),
            here.value.hint,
        )
        assert env.child is child  # an error of the template's: the child renders on
    finally:
        pid = child.pid
        env.close()
    assert env.child is None and _gone(pid)


def test_a_dead_child_or_an_unpicklable_context_is_rendered_here(tmp_path: Path) -> None:
    env = _env(tmp_path)
    env.use(RenderChild.start(env.folder, env.bytecode_cache))
    child = env.child
    assert child is not None
    pid = child.pid
    # a context that does not pickle: rendered here, and the child ended
    got = env.render("page.html", {"title": "t", "body": "b", "pid": lambda: 1})
    assert got.startswith("<h1>t</h1>b ") and _gone(pid) and child.pid == -1
    env.close()

    env = _env(tmp_path / "second")
    env.use(RenderChild.start(env.folder, env.bytecode_cache))
    child = env.child
    assert child is not None
    os.kill(child.pid, signal.SIGKILL)  # the child dies (killed, crashed): the page is made here
    assert env.render("page.html", {"title": "t", "body": "b", "pid": 2}) == "<h1>t</h1>b 2\n"
    assert child.pid == -1  # reaped at once, not left for the end
    env.close()


def test_a_forked_process_renders_itself(tmp_path: Path) -> None:
    """Only the process that forked the child talks to it: a forked write worker renders itself (the
    child is stopped meanwhile: a worker that asked it would wait for good)."""
    env = _env(tmp_path)
    env.use(RenderChild.start(env.folder, env.bytecode_cache))
    child = env.child
    assert child is not None
    os.kill(child.pid, signal.SIGSTOP)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the forked process
            code = 1
            try:
                out = env.render("page.html", {"title": "w", "body": "", "pid": 7})
                code = 0 if out == "<h1>w</h1> 7\n" and child.pid > 0 else 2
                env.close()  # not its child: nothing happens
            finally:
                os._exit(code)
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0
    finally:
        os.kill(child.pid, signal.SIGCONT)
    assert env.render("page.html", {"title": "p", "body": "", "pid": 1}) == "<h1>p</h1> 1\n"
    assert not _gone(child.pid)  # the worker's close left it to its owner
    env.close()


def _refuse(what: str) -> None:
    raise BuildError(f"no {what}", where="here.txt", hint="a hint")


def test_a_call_runs_in_the_child_while_this_process_goes_on(tmp_path: Path) -> None:
    """``start_call``/``end_call`` (``search.offload``): a function runs in the child and its result
    comes back; its own error is ours, one line; one request at a time; a child gone is (False, None)."""
    env = _env(tmp_path)
    child = RenderChild.start(env.folder, env.bytecode_cache)
    assert child is not None
    try:
        assert child.start_call("call", os.getpid, ())
        assert not child.start_call("call", os.getpid, ())  # one at a time
        assert child.render("page.html", {}) is None  # (rendered here meanwhile)
        assert child.end_call() == (True, child.pid)
        assert child.end_call() == (False, None)  # nothing sent
        assert child.start_call("call", _refuse, ("luck",))
        with pytest.raises(BuildError) as there:
            child.end_call()
        got = (there.value.message, str(there.value.where), there.value.hint)
        assert got == ("no luck", "here.txt", "a hint")
        assert child.start_call("call", divmod, (1, 0))  # any other error: done here, without the child
        assert child.end_call() == (False, None) and child.pid == -1
    finally:
        child.close()
    child = RenderChild.start(env.folder, env.bytecode_cache)
    assert child is not None
    assert not child.start_call("call", os.getpid, (lambda: 1,))  # does not pickle: the child ended
    assert child.pid == -1
    child = RenderChild.start(env.folder, env.bytecode_cache)
    assert child is not None
    pid = child.pid
    os.kill(pid, signal.SIGKILL)
    child.start_call("call", time.sleep, (0,))  # (sent, or not: the kill may not have landed yet)
    assert child.end_call() == (False, None) and child.pid == -1 and _gone(pid)


def _imported(name: str) -> bool:
    import sys

    return name in sys.modules


def test_the_child_imports_the_next_calls_modules_while_it_waits_after_a_render(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a render and no request for ``IDLE_WAIT``, the child imports ``IDLE_IMPORTS`` (the search
    shard's modules): not on the critical path when the shard's call comes (sp33b)."""
    import sys

    from cernvm_build.site import renderchild

    monkeypatch.delitem(sys.modules, "colorsys", raising=False)  # (a module standing for them)
    monkeypatch.setattr(renderchild, "IDLE_IMPORTS", ("colorsys",))
    env = _env(tmp_path)
    child = RenderChild.start(env.folder, env.bytecode_cache)
    assert child is not None
    try:
        assert child.start_call("call", _imported, ("colorsys",))
        assert child.end_call() == (True, False)  # only after a render
        assert child.render("page.html", {"title": "t", "body": "", "pid": 0}) is not None
        time.sleep(0.2)
        assert child.start_call("call", _imported, ("colorsys",))
        assert child.end_call() == (True, True)
    finally:
        child.close()


def test_the_child_serves_on_when_its_pipes_are_numbered_above_1023(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process with many files open (``site serve`` watching many folders) gives the child pipes
    numbered ≥ 1024, which ``select.select`` refuses: the child died after its first render (lf34a)."""
    import resource
    import sys

    from cernvm_build.site import renderchild

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE's hard limit {hard} is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    spare = os.open(os.devnull, os.O_RDONLY)
    filler = [os.dup(spare) for _ in range(1100 - spare)]
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    monkeypatch.setattr(renderchild, "IDLE_IMPORTS", ("colorsys",))
    env = _env(tmp_path)
    child = None
    try:
        child = RenderChild.start(env.folder, env.bytecode_cache)
        assert child is not None and min(child.requests, child.replies) >= 1024
        assert child.render("page.html", {"title": "t", "body": "", "pid": 0}) is not None
        time.sleep(0.2)  # the child waits for the next request (and imports meanwhile)
        assert child.start_call("call", _imported, ("colorsys",))
        assert child.end_call() == (True, True)
    finally:
        if child is not None:
            child.close()
        for fd in [spare, *filler]:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(
    ("loadavg", "idle"),
    [
        ("0.00 0.01 0.05 1/120 9", True),  # this process alone runnable: the second core is free
        ("1.20 1.02 1.01 1/120 9", True),  # a minute of builds (and their children): still free now
        ("0.10 0.10 0.10 2/120 9", False),  # another thread runnable: both cores taken
        ("5.20 4.00 3.00 7/150 9", False),
        ("garbled", False),  # no figure: assumed busy
    ],
)
def test_a_core_is_idle_when_nothing_else_is_runnable_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loadavg: str, idle: bool
) -> None:
    """``idle_core`` reads the runnable count of this moment, not the 1-minute average (which builds run
    back to back keep near 1 by themselves: on 2 cores that read as busy and never forked)."""
    from cernvm_build.site import renderchild

    fake = tmp_path / "loadavg"
    fake.write_text(loadavg + "\n")
    monkeypatch.setattr(renderchild, "LOADAVG", str(fake))
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    assert renderchild.idle_core() is idle
    monkeypatch.setattr(renderchild, "LOADAVG", str(tmp_path / "absent"))
    assert renderchild.idle_core() is False


#: run in a fresh interpreter (pytest's has imported jinja2): the pages the child renders, and whether
#: the child had imported jinja2's compiler when it rendered them
_FRESH = """
import sys
from pathlib import Path
from cernvm_build.site import templates
from cernvm_build.site.renderchild import RenderChild

def imported(name):
    return name in sys.modules

folder, cache = Path(sys.argv[1]), Path(sys.argv[2])
env = templates.environment(folder, cache)
env.use(RenderChild.start(env.folder, env.bytecode_cache))
child = env.child
ctx = {"title": "a < b", "body": templates.Markup("<em>k</em>"), "pid": 3, "page": {}}
for name in sys.argv[3:]:
    print(repr(env.render(name, ctx)))
assert child.start_call("call", imported, ("jinja2.compiler",))
print(child.end_call()[1], "jinja2" in sys.modules)
env.close()
"""


def test_the_child_renders_from_the_bytecode_cache_without_jinja2s_compiler(tmp_path: Path) -> None:
    """A template whose compiled code is in jinja2's bytecode cache (an earlier build's) is rendered by
    the child without importing jinja2's compiler, lexer and environment (``jinjaless``: ~75M
    instructions of its warm-up); extends, ``from … import`` of a macro, a filter, autoescaping and
    StrictUndefined's error as jinja2 makes them. A template not in the cache: jinja2 compiles it."""
    import subprocess
    import sys

    folder = tmp_path / "templates"
    (folder / "partials").mkdir(parents=True)
    (folder / "base.html").write_text("<title>{{ title }}</title>{% block main %}{% endblock %}\n")
    (folder / "partials" / "m.html").write_text("{% macro b(x) %}<b>{{ x|upper }}</b>{% endmacro %}")
    (folder / "page.html").write_text(
        '{% extends "base.html" %}{% from "partials/m.html" import b %}'
        "{% block main %}{{ b(title) }}{{ body }} {{ pid|string }} {{ [1, 2]|join(',') }}"
        "{% if page.x is defined %}x{% endif %}{% endblock %}"
    )
    (folder / "broken.html").write_text("<p>{{ nope }}</p>\n")
    cache = tmp_path / "jinja"
    cache.mkdir()
    env = tpl_mod.environment(folder, cache)
    ctx: dict[str, Any] = {"title": "a < b", "body": tpl_mod.Markup("<em>k</em>"), "pid": 3, "page": {}}
    expected = env.render("page.html", ctx)  # (an earlier build: it fills the cache)
    assert expected == "<title>a &lt; b</title><b>A &lt; B</b><em>k</em> 3 1,2"

    def run(*names: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", _FRESH, str(folder), str(cache), *names],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.splitlines()

    assert run("page.html") == [repr(expected), "False False"]
    import jinja2.bccache

    from cernvm_build.site import jinjaless

    assert jinja2.bccache.bc_magic == jinjaless.MAGIC  # (another jinja2's format: a new test)
    # not in the cache: jinja2 (compiler and all) renders it there, the same page as ever
    (folder / "other.html").write_text("{{ title }}!")
    assert run("other.html") == [repr("a &lt; b!"), "True False"]


def test_the_cached_code_path_opens_no_fifo_an_extends_names(tmp_path: Path) -> None:
    """``{% extends name %}`` with a name only known while rendering: a FIFO there is left to jinja2
    (not a file: TemplateNotFound, one line), not opened and waited on for ever."""
    from cernvm_build.site import jinjaless

    env = _env(tmp_path)
    (env.folder / "inc.html").write_text("{% extends name %}")
    os.mkfifo(env.folder / "fifo")
    with pytest.raises(BuildError):  # (and its code is in the cache now)
        env.render("inc.html", {"name": "fifo"})
    fast = jinjaless.Fast(env.folder, env.bytecode_cache)
    fast.warm()
    signal.alarm(20)
    try:
        assert fast.render("inc.html", {"name": "fifo"}) is None
        assert fast.render("page.html", {"title": "t", "body": "", "pid": 1}) is None  # not cached
    finally:
        signal.alarm(0)
