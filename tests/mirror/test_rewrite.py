"""A published name never changes content: a same-name rebuild is refused by default (nothing
written, the files listed); with --allow-rewrite it is written in one batch right before the index
switch, and a reader that checks the index and every file it names sees mismatches only for the files
of that batch, only during it. On moto and on Ceph RGW, for yum and apt."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.mirror.publish import mirror, verify_published
from cernvm_build.mirror.s3sync import RewriteRefused

from .conftest import Target
from .repos import make_apt_repo, make_deb, make_rpm, make_yum_repo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Per kind: [tool 1.0, tool 1.0 rebuilt with other bytes (same file name), extra 1.0, extra2 1.0]."""
    w = tmp_path_factory.mktemp("builds")
    return {
        "yum": [
            make_rpm(w / "r1", "cvm-tool", payload=b"first build\n" * 50),
            make_rpm(w / "r2", "cvm-tool", payload=b"second build\n" * 50),
            make_rpm(w / "r3", "cvm-extra", payload=b"extra\n" * 50),
            make_rpm(w / "r4", "cvm-more", payload=b"more\n" * 50),
        ],
        "apt": [
            make_deb(w / "d1" / "cvm-tool_1.0_all.deb", "cvm-tool", payload=b"first build\n" * 50),
            make_deb(w / "d2" / "cvm-tool_1.0_all.deb", "cvm-tool", payload=b"second build\n" * 50),
            make_deb(w / "d3" / "cvm-extra_1.0_all.deb", "cvm-extra", payload=b"extra\n" * 50),
            make_deb(w / "d4" / "cvm-more_1.0_all.deb", "cvm-more", payload=b"more\n" * 50),
        ],
    }


def publish_source(kind: str, src: Path, packages: list[Path]) -> None:
    """(Re)make the source repository holding exactly ``packages``."""
    pool = src / ("Packages" if kind == "yum" else "pool/main")
    for old in pool.glob("*") if pool.exists() else []:
        old.unlink()
    if kind == "yum":
        make_yum_repo(src, packages)
    else:
        make_apt_repo(src, "stable", packages)


def tool_rel(kind: str) -> str:
    return "Packages/cvm-tool-1.0-1.noarch.rpm" if kind == "yum" else "pool/main/cvm-tool_1.0_all.deb"


def mismatched(kind: str, target: Target, prefix: str) -> set[str]:
    """The files the live index names whose bytes do not match it (what a dnf/apt reader would hit).

    apt: the suites say Acquire-By-Hash, so apt reads Packages through by-hash/SHA256/<hash> (checked
    here); the fixed-name Packages files are replaced next to Release, with the window the Debian
    archive has too, and no reader that follows Acquire-By-Hash reads them."""
    checked = verify_published(kind, target.url(prefix), client=target.client, jobs=4)
    bad = {p.split(":", 1)[0] for p in checked.problems}
    if kind == "apt":
        bad = {b for b in bad if not (b.startswith("dists/") and "/by-hash/" not in b)}
    return bad


@pytest.mark.parametrize("kind", ["yum", "apt"])
def test_same_name_rebuild_is_refused_and_listed(
    kind: str,
    builds: dict[str, list[Path]],
    tmp_path: Path,
    target: Target,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, rebuilt, extra, _ = builds[kind]
    src = tmp_path / "src"
    publish_source(kind, src, [first])
    mirror(kind, str(src), target.url("r"), client=target.client)
    before = target.objects()

    publish_source(kind, src, [rebuilt, extra])
    with pytest.raises(RewriteRefused) as err:
        mirror(kind, str(src), target.url("r"), client=target.client)
    assert err.value.files == [tool_rel(kind)]
    assert target.objects() == before  # nothing written, not even the new package

    # The CLI: the file listed, one error line with the flag in its hint, nothing else on -q.
    rc = main(["mirror", kind, str(src), target.url("r"), "--endpoint-url", target.endpoint, "-q"])
    out, errout = capsys.readouterr()
    assert rc != 0 and out == ""
    assert f"{tool_rel(kind)}: content changed under the same name" in errout
    assert errout.count("error:") == 1 and "--allow-rewrite" in errout and "Traceback" not in errout
    assert target.objects() == before
    # A dry run says the same (it would be refused).
    with pytest.raises(RewriteRefused):
        mirror(kind, str(src), target.url("r"), client=target.client, dry_run=True)

    # With the flag: published, and the rewritten file and the exposure are reported.
    rc = main(
        ["mirror", kind, str(src), target.url("r"), "--endpoint-url", target.endpoint, "--allow-rewrite"]
    )
    out, errout = capsys.readouterr()
    assert rc == 0, errout
    assert "1 file(s) changed content under a published name (--allow-rewrite)" in errout
    assert tool_rel(kind) in errout and " s: " in errout
    assert mismatched(kind, target, "r") == set()


@pytest.mark.parametrize("kind", ["yum", "apt"])
def test_rewrite_is_one_batch_right_before_the_index_switch(
    kind: str, builds: dict[str, list[Path]], tmp_path: Path, target: Target
) -> None:
    first, rebuilt, extra, more = builds[kind]
    src = tmp_path / "src"
    publish_source(kind, src, [first, extra])
    mirror(kind, str(src), target.url("r"), client=target.client)

    # A reader checks the live publication at every step of the sync (the checkpoint runs in the
    # sync's own worker, so the state it sees is exactly the state between two writes).
    seen: list[tuple[str, str, set[str]]] = []

    def reader(event: str, key: str) -> None:
        seen.append((event, key, mismatched(kind, target, "r")))

    publish_source(kind, src, [rebuilt, extra, more])
    rep = mirror(kind, str(src), target.url("r"), client=target.client, allow_rewrite=True, checkpoint=reader)
    assert rep.sync is not None
    assert rep.sync.rewritten == [tool_rel(kind)] and rep.sync.exposure_s > 0
    events = [e for e, _, _ in seen]
    # Order: new content, then the rewrite, then the indexes.
    assert events.index("rewritten") > max(i for i, e in enumerate(events) if e == "uploaded")
    assert events.index("rewritten") < events.index("index")
    for event, key, bad in seen:
        if event in ("verified", "planned", "uploaded"):
            assert bad == set(), (event, key, bad)  # before the batch: the old index is whole
        assert bad <= set(rep.sync.rewritten), (event, key, bad)  # never outside the batch
    # The check can fail: right after the batch, the old index names the old bytes.
    assert next(b for e, _, b in seen if e == "rewritten") == {tool_rel(kind)}
    assert mismatched(kind, target, "r") == set()


#: yum on both servers; apt (its own index files and order) on the real one, in fewer rounds (suite time)
POLLED = [
    pytest.param("yum", "moto", id="yum-moto"),
    pytest.param("yum", "rgw", id="yum-rgw"),
    pytest.param("apt", "rgw", id="apt-rgw"),
]


@pytest.mark.parametrize(("kind", "target"), POLLED, indirect=["target"])
def test_reader_polling_during_syncs_never_sees_a_mismatch(
    kind: str, builds: dict[str, list[Path]], tmp_path: Path, target: Target
) -> None:
    """Default mode: packages come and go over several syncs while a reader keeps checking the index
    and every file it names; a refused rebuild in between changes nothing."""
    first, rebuilt, extra, more = builds[kind]
    src = tmp_path / "src"
    publish_source(kind, src, [first])
    mirror(kind, str(src), target.url("r"), client=target.client)
    stop = threading.Event()
    bad: list[set[str]] = []
    polls = [0]

    def poll() -> None:
        while not stop.is_set():
            found = mismatched(kind, target, "r")
            if found:
                bad.append(found)
            polls[0] += 1

    uploads_seen = [0]

    def at_every_step(event: str, key: str) -> None:
        if event == "uploaded":
            # new content does not change what the live index names: the first upload of a sync is
            # checked here, the others by the polling reader (a full check per upload doubled the time)
            uploads_seen[0] += 1
            if uploads_seen[0] > 1:
                return
        elif event == "verified":
            uploads_seen[0] = 0  # a new sync
        found = mismatched(kind, target, "r")
        if found:
            bad.append(found)

    t = threading.Thread(target=poll)
    t.start()
    try:
        rounds = [[first, extra], [extra, more], [rebuilt, more], [first, more], [more]]
        refused = 0
        for packages in rounds if kind == "yum" else rounds[:3]:
            publish_source(kind, src, packages)
            try:
                mirror(
                    kind, str(src), target.url("r"), client=target.client, keep=1, checkpoint=at_every_step
                )
            except RewriteRefused:
                assert rebuilt in packages
                refused += 1
    finally:
        stop.set()
        t.join()
    assert polls[0] > 0 and refused == 1
    assert bad == []
