"""``--policy`` and ``--registries-d`` (``hub ingest``, ``container push``) are read as the command line
is: a bad one is one usage line naming the flag and the file:line, before any registry is asked or
the hub opened (skopeo refused it only at the pull)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build.cli.main import main

BAD = [
    (
        "policy.json",
        '{"default": [\n  {"type": "insecureAcceptAnything"}\n  "transports": {}}\n',
        ":3:3: not JSON",
    ),
    ("policy.json", '{"transports": {}}\n', ":1: no 'default' list"),
    ("registries.d/default.yaml", "docker:\n  r.example:\n    lookaside: [x\n", "default.yaml:4:1: "),
    ("registries.d/default.yaml", "- a list\n", "default.yaml:1: not a mapping"),
    ("registries.d", None, "registries.d: not a folder"),
]


@pytest.mark.parametrize(
    ("name", "text", "message"), BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD)]
)
@pytest.mark.parametrize("command", ["hub", "push"])
def test_a_bad_policy_or_registries_d_is_one_usage_line(
    name: str,
    text: str | None,
    message: str,
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if text is not None:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    flag = "--policy" if name == "policy.json" else "--registries-d"
    value = tmp_path / ("policy.json" if flag == "--policy" else "registries.d")
    for there in ("s", "k", "image.oci"):  # a missing input is its own usage error (lf32a)
        (tmp_path / there).mkdir()
    if command == "hub":  # no hub there: reaching the handler would fail on it, not on the flag
        argv = ["hub", "ingest", "127.0.0.1:9/x/y:1", "--hub-stratum", str(tmp_path / "s"),
                "--hub-keys", str(tmp_path / "k")]  # fmt: skip
    else:
        argv = ["container", "push", str(tmp_path / "image.oci"), "127.0.0.1:9/x/y:1"]
    with pytest.raises(SystemExit) as e:
        main([*argv, flag, str(value)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert e.value.code == 2 and "Traceback" not in err, err
    assert len(errors) == 1 and errors[0].startswith(f"error: argument {flag}: "), err
    assert message in errors[0] and "(a " in errors[0], err


def test_a_good_policy_and_registries_d_pass(tmp_path: Path) -> None:
    from cernvm_build.container.registry import check_policy, check_registries_d

    (tmp_path / "policy.json").write_text('{"default": [{"type": "reject"}]}')
    (tmp_path / "registries.d").mkdir()
    (tmp_path / "registries.d" / "default.yaml").write_text(
        "docker:\n  r.example:\n    lookaside: file:///x\n"
    )
    (tmp_path / "registries.d" / "empty.yaml").write_text("")
    check_policy(tmp_path / "policy.json")
    check_registries_d(tmp_path / "registries.d")


def test_a_registries_d_that_cannot_be_listed_is_one_usage_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder this user may not read (mode 000, not root): the listing's PermissionError was a
    traceback out of argparse. (The refusal is simulated: tests may run as root, who reads it.)"""
    folder = tmp_path / "registries.d"
    folder.mkdir()
    real = Path.iterdir

    def refused(self: Path):  # type: ignore[no-untyped-def]
        if self == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", refused)
    (tmp_path / "image.oci").mkdir()  # there: a missing IMAGE is its own error (lf32a)
    with pytest.raises(SystemExit) as e:
        main(["container", "push", str(tmp_path / "image.oci"), "127.0.0.1:9/x/y:1",
              "--registries-d", str(folder)])  # fmt: skip
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err, err
    assert "error: argument --registries-d: " in err, err
    assert "cannot list the folder: Permission denied" in err, err
