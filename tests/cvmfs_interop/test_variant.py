"""Variant symlinks (``$(ARCH)/lib``): the project's FUSE client shows what the real ``cvmfs2`` shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.cvmfs.variant import expand

from .conftest import FQRN, VARIANT_CONFIG, VARIANTS, Interop
from .real import CHECKOUT, _unmount, mounted


@pytest.mark.parametrize(("target", "shown"), VARIANTS.items())
def test_expand_follows_the_real_client_rules(target: str, shown: str) -> None:
    assert expand(target, VARIANT_CONFIG) == shown


def test_expand_leaves_plain_targets_and_uses_defaults_only_for_unset_names() -> None:
    assert expand("../lib64/libc.so.6", {}) == "../lib64/libc.so.6"
    assert expand("$(ARCH:-x86_64)/lib", {"ARCH": ""}) == "/lib"
    assert expand("$(ARCH:-x86_64)/lib", {}) == "x86_64/lib"


def _links(mnt: Path) -> dict[str, tuple[str, int]]:
    d = mnt / "variants"
    return {p.name: (os.readlink(p), p.lstat().st_size) for p in sorted(d.iterdir())}


@pytest.mark.integration
def test_variant_symlinks_read_the_same_through_both_clients(interop: Interop, tmp_path: Path) -> None:
    want = {f"v{i:02d}": (shown, len(shown.encode())) for i, shown in enumerate(VARIANTS.values())}
    with mounted(
        interop.tools, interop.url_template, FQRN, interop.pub, tmp_path / "real", **VARIANT_CONFIG
    ) as mnt:
        assert _links(mnt) == want
    ours = tmp_path / "ours"
    ours.mkdir()
    cmd = [sys.executable, "-m", "cernvm_build.cvmfs.mount", "--fqrn", FQRN, "--server"]
    cmd += [
        interop.server.repo_url(FQRN),
        "--public-key",
        str(interop.pub),
        "--cache",
        str(tmp_path / "cache"),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("ARCH", "X", "Y", "UNSET_VAR", "NOPE")}
    r = subprocess.run(
        [*cmd, str(ours)], capture_output=True, text=True, timeout=120, cwd=CHECKOUT, env=env | VARIANT_CONFIG
    )
    assert r.returncode == 0, r.stderr
    try:
        assert _links(ours) == want
        assert os.readlink(ours / "variants" / "v00") == "/lib"  # $(ARCH)/lib, ARCH unset
    finally:
        _unmount(ours)
