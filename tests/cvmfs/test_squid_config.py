"""``cvmfs squid-config``: what reaches the file is checked (a value with a newline or a space would
add squid directives: an open proxy); the generated file itself is run by the fleet test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cernvm_build.cli.main import main
from cernvm_build.cvmfs.squid import squid_config
from cernvm_build.errors import CvmfsError


def test_defaults_collapse_forwarding_and_allow_only_private_networks(tmp_path: Path) -> None:
    text = squid_config(port=3128, run_dir=tmp_path)
    lines = text.splitlines()
    assert "collapsed_forwarding on" in lines and "http_port 3128" in lines
    assert "http_access deny !cvmfs_clients" in lines and lines[-1] == "http_access deny all"
    assert not any(line.startswith("cache_dir") for line in lines)
    with_disk = squid_config(
        port=3128, run_dir=tmp_path, cache_mb=5000, stratum_hosts=[".cern.ch", "10.1.2.3"]
    )
    assert f"cache_dir ufs {tmp_path.resolve()}/cache 5000 16 256" in with_disk.splitlines()
    assert "http_access deny !cvmfs_strata !cvmfs_strata_ip" in with_disk.splitlines()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clients": ["10.0.0.0/8\nhttp_access allow all"]}, "--client"),
        ({"stratum_hosts": ["a.org http_access allow all"]}, "--stratum"),
        ({"listen": "0.0.0.0\nhttp_port 1"}, "--listen"),
        # pr16f finding 4: ipaddress takes any text after an IPv6 scope id's % (open proxy)
        ({"listen": "::1%x]:3128\nhttp_access allow all\nhttp_port [::1"}, "--listen .*scope id"),
        ({"clients": ["fe80::%x\nhttp_access allow all\n#"]}, "--client .*scope id"),
        ({"stratum_hosts": ["::1%x\nhttp_access allow all"]}, "--stratum .*scope id"),
        ({"clients": ["fe80::%eth0"]}, "--client .*scope id"),
        # pr16f finding 5: a regex's $ matches before a final newline
        ({"stratum_hosts": ["cern.ch\n"]}, "--stratum"),
        # pr26c 2: squid reads a word beginning with '-' as the ACL's flag (an empty ACL: all denied)
        ({"stratum_hosts": ["-n"]}, "--stratum '-n': not a host name"),
        ({"stratum_hosts": ["cern.ch", "-i"]}, "--stratum '-i': not a host name"),
        ({"stratum_hosts": ["a-.cern.ch"]}, "--stratum 'a-.cern.ch': not a host name"),
        # pr26c 8: ipaddress refuses a leading zero, and the text went in as a domain name
        ({"stratum_hosts": ["010.0.0.1"]}, "--stratum '010.0.0.1': neither an IP address nor a host"),
        ({"stratum_hosts": ["10.0.1"]}, "--stratum '10.0.1': neither"),
        ({"run_dir": Path("/tmp/ab\n")}, "run directory"),
        ({"port": 70000}, "--port"),
        ({"memory_mb": 1}, "--memory-mb"),
        ({"run_dir": Path("/tmp/a b")}, "run directory"),
    ],
)
def test_values_that_would_add_directives_are_refused(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"port": 3128, "run_dir": tmp_path, **kwargs}
    with pytest.raises(CvmfsError, match=message):
        squid_config(**args)  # type: ignore[arg-type]


def test_cli_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cvmfs", "squid-config", "--stratum", "bad host"]) != 0
    err = capsys.readouterr().err
    assert (
        err.startswith("error: --stratum 'bad host': a scope id (%), whitespace") and "Traceback" not in err
    )
    # pr19d finding 7: the hint was --client's ("e.g. 10.0.0.0/8 or ::1"), no word on host names
    assert "hint: a name like cvmfs-stratum-one.cern.ch, .cern.ch for a whole domain" in err


@pytest.mark.parametrize(
    ("argv", "where"),
    [
        (["cvmfs", "squid-config", "-o", "{tmp}"], "--output {tmp}: a folder, not a file"),
        (
            ["cvmfs", "squid-config", "-o", "{tmp}/f/squid.conf"],
            "--output {tmp}/f/squid.conf: cannot write it: ",
        ),
        (
            [
                "cvmfs",
                "monitor",
                "http://127.0.0.1:9/cvmfs/a.org",
                "--key",
                "{key}",
                "--timeout",
                "1",
                "--retries",
                "0",
                "--out",
                "{tmp}",
            ],
            "--out {tmp}: a folder, not a file",
        ),
    ],
)
def test_an_output_that_cannot_be_written_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], where: str
) -> None:
    """pr18d finding 7: -o/--out naming a folder (or a place under a file) was an OSError traceback."""
    (tmp_path / "f").write_text("a file, not a folder\n")
    key = Path(__file__).parent / "data" / "fixture.cernvm.test" / "keys" / "fixture.cernvm.test.pub"
    code = main([a.format(tmp=tmp_path, key=key) for a in argv])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err, err
    assert f"error: {where.format(tmp=tmp_path)}" in err, err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cache_mb": 2**31}, "--cache-mb 2147483648: not from 0 to 2147483647"),
        ({"memory_mb": 10**14}, "--memory-mb 100000000000000: not from 8 to 16777216"),
        ({"max_object_mb": 10**20}, "--max-object-mb 100000000000000000000: not from 1 to 16777216"),
    ],
)
def test_sizes_squid_cannot_hold_are_refused(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    """pr18d finding 8: the file was written, and squid refused it ("FATAL: Bungled ... integer overflow")."""
    with pytest.raises(CvmfsError, match=message):
        squid_config(port=3128, run_dir=tmp_path, **kwargs)


@pytest.mark.skipif(shutil.which("squid") is None, reason="squid is not installed")
def test_the_largest_sizes_are_read_by_squid(tmp_path: Path) -> None:
    conf = tmp_path / "squid.conf"
    text = squid_config(port=3128, run_dir=tmp_path, cache_mb=2**31 - 1, memory_mb=2**24, max_object_mb=2**24)
    conf.write_text(text)
    run = subprocess.run(
        ["squid", "-k", "parse", "-f", str(conf)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and "Bungled" not in run.stderr, run.stderr


@pytest.mark.parametrize(
    "argv",
    [["cvmfs", "squid-config"], ["cvmfs", "nginx-config", "{tmp}"], ["profiles", "reference"]],
)
def test_output_dash_is_stdout_not_a_file_named_dash(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr19d finding 12: `squid-config -o -` wrote a file named '-' and said "start it with: squid -N
    -f /cwd/-"; '-' is stdout, as the default."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "srv" / "a.org").mkdir(parents=True)
    (tmp_path / "srv" / "a.org" / ".cvmfspublished").write_bytes(b"")
    assert main([a.replace("{tmp}", str(tmp_path / "srv")) for a in argv] + ["-o", "-"]) == 0
    assert capsys.readouterr().out.startswith("#") and not (tmp_path / "-").exists()


@pytest.mark.parametrize("command", ["stats", "monitor"])
def test_out_dash_is_refused_not_a_file_named_dash(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """pr19d finding 12: `cvmfs stats SRC --out -` wrote a file named '-' (--json is stdout)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["cvmfs", command, str(tmp_path), "--out", "-"])
    assert e.value.code == 2 and not (tmp_path / "-").exists()
    assert "argument --out: '-': this writes a file; --json prints" in capsys.readouterr().err
