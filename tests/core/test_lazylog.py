"""lazylog: ``logging.getLogger`` looked up on the first message, records as logging's own."""

from __future__ import annotations

import logging

import pytest

from cernvm_build import lazylog


def test_a_record_names_the_line_that_logged(caplog: pytest.LogCaptureFixture) -> None:
    log = lazylog.get("cernvm_build.test_lazylog")
    with caplog.at_level(logging.DEBUG, logger="cernvm_build.test_lazylog"):
        log.debug("d %s", 1)
        log.info("i")
        log.warning("w")
        log.error("e")
        try:
            raise ValueError("x")
        except ValueError:
            log.exception("x %d", 2)
    assert [r.getMessage() for r in caplog.records] == ["d 1", "i", "w", "e", "x 2"]
    assert [r.levelno for r in caplog.records] == [10, 20, 30, 40, 40]
    assert {r.name for r in caplog.records} == {"cernvm_build.test_lazylog"}
    assert {(r.filename, r.funcName) for r in caplog.records} == {
        ("test_lazylog.py", "test_a_record_names_the_line_that_logged")
    }
    assert caplog.records[-1].exc_info is not None


def test_the_logger_is_looked_up_once() -> None:
    log = lazylog.get("cernvm_build.test_lazylog.once")
    assert log.logger() is log.logger() is logging.getLogger("cernvm_build.test_lazylog.once")


def test_a_message_without_configured_logging_is_one_visible_line() -> None:
    """pr26b finding 10: in the initrd's mount nobody configures logging: a read's error quoting a
    server's answer went through logging's last-resort handler raw (ESC ] 0, a forged line)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from cernvm_build import lazylog\n"
        "lazylog.get('cernvm_build.cvmfs.fuse').error('%s', 'HTTP 503 \\x1b]0;pwned\\x07\\x9b\\nforged')\n"
    )
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert r.stderr == "HTTP 503 \\x1b]0;pwned\\x07\\x9b\\x0aforged\n"
