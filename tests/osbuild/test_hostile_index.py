"""Hostile but validly signed apt lists against the verified index (real gpg, real apt-helper): a
Release of another suite, expired or dated ahead; a Packages list that inflates far past its signed
size; stanzas no Debian tool writes. Each is refused in one line that names the file (and stanza)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build import gpg
from cernvm_build.errors import IntegrityError
from cernvm_build.osbuild import aptindex

pytestmark = pytest.mark.integration

NOW = 1_765_000_000  # 2025-12-06 05:46 UTC
INRELEASE = "deb.debian.org_debian_dists_bookworm_InRelease"
PACKAGES = "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages"
STANZA = (
    "Package: usr-is-merged\nVersion: 37~deb12u1\nArchitecture: all\nSize: 10\n"
    f"SHA256: {'a' * 64}\nPriority: required\nDepends: libc6 (>= 2.36), perl:any | awk\n\n"
)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("key")
    secret, public = gpg.generate_test_key(where)
    ring = where / "ring.gpg"
    with gpg.Keyring([public]) as kr:
        kr._gpg("--export", "--output", ring)
    return secret, ring


def _lists(
    where: Path, key: tuple[Path, Path], packages: bytes, head: str, *, signed: bytes | None = None
) -> Path:
    """A lists folder: the Release (``head`` fields, then the SHA256 of ``signed`` or ``packages``)
    clearsigned with the test key, and the Packages list (``packages`` as stored, maybe compressed)."""
    lists = where / "lists"
    lists.mkdir()
    text = signed if signed is not None else packages
    release = f"{head}SHA256:\n {hashlib.sha256(text).hexdigest()} {len(text)} main/binary-amd64/Packages\n"
    (where / "Release").write_text(release)
    with gpg.Keyring([key[0]]) as kr:
        kr.clearsign(where / "Release", lists / INRELEASE)
    (lists / (PACKAGES + (".gz" if signed is not None else ""))).write_bytes(packages)
    return lists


GOOD = "Origin: Debian\nSuite: oldstable\nCodename: bookworm\nDate: Fri, 05 Dec 2025 03:54:28 UTC\n"


def test_a_current_release_of_the_suite_is_accepted(tmp_path: Path, key: tuple[Path, Path]) -> None:
    lists = _lists(tmp_path, key, STANZA.encode(), GOOD + "Valid-Until: Fri, 12 Dec 2025 03:54:28 UTC\n")
    index = aptindex.load_index(("bookworm",), lists=lists, keyring=key[1], now=NOW)
    pkg = index.packages["usr-is-merged"]
    assert pkg.version == "37~deb12u1" and pkg.depends == (
        (("libc6", ">=", "2.36"),),
        (("perl", "", ""), ("awk", "", "")),
    )


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (
            GOOD.replace("bookworm", "bullseye"),
            r"of suite 'oldstable' \(codename 'bullseye'\), not 'bookworm'",
        ),
        ("Origin: Debian\nDate: Fri, 05 Dec 2025 03:54:28 UTC\n", r"of suite '\?' \(codename '\?'\)"),
        (GOOD + "Valid-Until: Sun, 02 Jan 2000 00:00:00 UTC\n", r"expired \(Valid-Until: Sun, 02 Jan 2000"),
        (
            GOOD.replace("05 Dec 2025", "08 Dec 2025"),
            r"dated Fri, 08 Dec 2025 .* over a day after this clock",
        ),
        (GOOD.replace("Fri, 05 Dec 2025 03:54:28 UTC", "yesterday"), r"Date 'yesterday' is not a date"),
        # field names are case-insensitive (Policy 5.1), as apt reads them (audit13d finding 8)
        (GOOD + "valid-until: Sun, 02 Jan 2000 00:00:00 UTC\n", r"expired \(Valid-Until: Sun, 02 Jan 2000"),
        (GOOD.replace("Date:", "date:").replace("05 Dec 2025", "08 Dec 2025"), r"dated Fri, 08 Dec 2025"),
    ],
    ids=[
        "other-codename",
        "no-suite",
        "valid-until-past",
        "date-future",
        "date-garbage",
        "valid-until-lowercase",
        "date-lowercase",
    ],
)
def test_a_release_of_another_suite_or_time_is_refused(
    tmp_path: Path, key: tuple[Path, Path], head: str, why: str
) -> None:
    lists = _lists(tmp_path, key, STANZA.encode(), head)
    with pytest.raises(IntegrityError, match=rf"{INRELEASE}: .*{why}") as e:
        aptindex.load_index(("bookworm",), lists=lists, keyring=key[1], now=NOW)
    assert "\n" not in str(e.value) and "apt-get update" in (e.value.hint or "")


def test_apt_own_lists_are_not_refused_for_their_age_other_lists_are(
    tmp_path: Path, key: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """apt refused an expired Release when it fetched its own lists; a build a week after the last
    apt-get update must still work from them. A folder apt did not fetch is checked on the clock."""
    lists = _lists(tmp_path, key, STANZA.encode(), GOOD + "Valid-Until: Sun, 02 Jan 2000 00:00:00 UTC\n")
    with pytest.raises(IntegrityError, match="expired"):
        aptindex.load_index(("bookworm",), lists=lists, keyring=key[1])
    monkeypatch.setattr(aptindex, "LISTS", lists)
    index = aptindex.load_index(("bookworm",), lists=lists, keyring=key[1])
    assert "usr-is-merged" in index.packages
    with pytest.raises(IntegrityError, match="expired"):  # an explicit clock checks it anyway
        aptindex.load_index(("bookworm",), lists=lists, keyring=key[1], now=NOW)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (("Size: 10", "Size: ten"), "Size 'ten' is not valid"),
        (("Size: 10", "Size: " + "9" * 5000), "Size '999"),
        (("Package: usr-is-merged\n", ""), "Package is missing"),
        (("Version: 37~deb12u1\n", ""), "Version is missing"),
        (("Version: 37~deb12u1", "Version: x:1"), "Version 'x:1' is not valid"),
        (("Version: 37~deb12u1", "Version: " + "9" * 5000), "Version '999"),
        (("usr-is-merged", "../../../../tmp/x"), "Package '../../../../tmp/x' is not valid"),
        (("(>= 2.36)", "(<> 2.36)"), "'libc6 (<> 2.36)' is not a relation"),
        (("(>= 2.36)", "(>= 1:)"), "names no Debian package name and version"),
    ],
    ids=[
        "size-word",
        "size-5000",
        "no-package",
        "no-version",
        "epoch-word",
        "version-5000",
        "name-path",
        "op",
        "dep-version",
    ],
)
def test_a_stanza_no_debian_tool_writes_is_refused(
    tmp_path: Path, key: tuple[Path, Path], change: tuple[str, str], why: str
) -> None:
    packages = STANZA.replace("usr-is-merged", "base-files") + STANZA.replace(*change)
    lists = _lists(tmp_path, key, packages.encode(), GOOD)
    with pytest.raises(IntegrityError, match=rf"{PACKAGES}: stanza 2: .*{re.escape(why)}") as e:
        aptindex.load_index(("bookworm",), lists=lists, keyring=key[1], now=NOW)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


@pytest.mark.parametrize(
    ("head", "stanza", "where"),
    [
        (
            GOOD + "Valid-Until: Sun, 02 Jan 2000 00:00:00 UTC\nValid-Until: Sun, 02 Jan 2200 00:00:00 UTC\n",
            STANZA,
            INRELEASE,
        ),
        (GOOD.replace("Codename: bookworm", "Codename: sid\nCODENAME: bookworm"), STANZA, INRELEASE),
        (GOOD, STANZA.replace("Priority:", f"sha256: {'b' * 64}\nPriority:"), PACKAGES),
    ],
    ids=["valid-until-past-then-future", "codename-sid-then-bookworm", "two-sha256"],
)
def test_a_field_given_twice_is_refused(
    tmp_path: Path, key: tuple[Path, Path], head: str, stanza: str, where: str
) -> None:
    """Which of two values would count is a guess (the last won, so an expired Release passed as
    current): refused, names compared without case (audit13d finding 8)."""
    lists = _lists(tmp_path, key, stanza.encode(), head)
    with pytest.raises(IntegrityError, match=rf"{where}: stanza 1: field '[^']+' appears twice") as e:
        aptindex.load_index(("bookworm",), lists=lists, keyring=key[1], now=NOW)
    assert "\n" not in str(e.value)


def test_a_list_inflating_past_its_signed_size_is_refused_without_being_held(
    tmp_path: Path, key: tuple[Path, Path]
) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=1)  # 64 MiB from ~280 KB
    lists = _lists(tmp_path, key, bomb, GOOD, signed=STANZA.encode())
    # in a fresh interpreter: its peak memory is this read's, not the test run's
    probe = (
        "import json, sys\nfrom pathlib import Path\nfrom cernvm_build.osbuild import aptindex\n"
        "def hwm():\n"
        "    return int(next(ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')).split()[1])\n"
        "base = hwm()\ntry:\n"
        "    aptindex.load_index(\n"
        f"        ('bookworm',), lists=Path(sys.argv[1]), keyring=Path(sys.argv[2]), now={NOW}\n"
        "    )\n"
        "    err = ''\nexcept Exception as e:\n    err = f'{type(e).__name__}: {e}'\n"
        "print(json.dumps({'err': err, 'grew_kb': hwm() - base}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, lists, key[1]], capture_output=True, text=True, check=True
    )
    out = json.loads(proc.stdout)
    assert out["grew_kb"] < 16 << 10, out  # the 64 MiB were never held
    assert out["err"].startswith("IntegrityError: ") and f"longer than the {len(STANZA)} B" in out["err"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_an_inrelease_that_is_no_file_is_refused_not_waited_on(
    tmp_path: Path, key: tuple[Path, Path], kind: str
) -> None:
    """``os --apt-lists DIR`` whose InRelease is a FIFO or a link to /dev/zero kept gpg waiting or
    reading for ever; a directory was 'no valid signature' (pr19b finding 6)."""
    lists = tmp_path / "lists"
    lists.mkdir()
    inrelease = lists / INRELEASE
    if kind == "fifo":
        os.mkfifo(inrelease)
    elif kind == "dev-zero":
        inrelease.symlink_to("/dev/zero")
    else:
        inrelease.mkdir()
    with pytest.raises(IntegrityError, match=r"InRelease: cannot read the signed file: not a regular file"):
        aptindex.load_index(("bookworm",), lists=lists, keyring=key[1], now=NOW)
