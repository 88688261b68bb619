"""Validation regexes end in ``\\Z``, not ``$``: ``$`` also matches before a final newline, so
``'v1\\n'`` passed a tag check and the newline went on into a file or a header (pr16f finding 5)."""

from __future__ import annotations

import re

import pytest

from cernvm_build import releaseindex, utcdate
from cernvm_build.container import hub_store, image, manifest_list, sbom
from cernvm_build.cvmfs import confpath, objects, publish, serve, whitelist
from cernvm_build.site import versions

CASES = [
    (releaseindex.VERSION_RE, "2025.01-1"),
    (releaseindex.HEX64, "a" * 64),
    (whitelist._FPR_RE, "AB:CD:EF"),
    (confpath._PLAIN, "/srv/a"),
    (utcdate.PATTERN, "2025-01-02T03:04:05Z"),
    (publish.TAG_RE, "v1"),
    (objects._HASH_RE, "a" * 40),
    (objects._MD5_RE, "a" * 32),
    (serve._RANGE_RE, "bytes=0-1"),
    (versions.ARCHIVE, "pkg-1.0"),
    (image._REF_RE, "library/alpine"),
    (image._TAG_RE, "latest"),
    (image._REGISTRY_RE, "example.org:5000"),
    (sbom._SPDX_ID, "MIT"),
    (manifest_list._WORD, "amd64"),
    (hub_store._PLAIN_KEY, "key"),
]


@pytest.mark.parametrize(("regex", "good"), CASES, ids=[f"{r.pattern[:24]}" for r, _ in CASES])
def test_a_final_newline_is_refused(regex: re.Pattern[str], good: str) -> None:
    assert regex.match(good)
    assert not regex.match(good + "\n")
