"""The one settings type's converters: each kind, its ranges, units and messages."""

from __future__ import annotations

from typing import Any

import pytest

from cernvm_build import table
from cernvm_build.table import Invalid, Kind, Setting

MEMORY = Setting("memory", Kind.SIZE, "memory", default=2048, unit="M", minimum=256, maximum=4 << 20)
CPUS = Setting("cpus", Kind.INT, "CPUs", default=1, minimum=1, maximum=512)
TIMEOUT = Setting("timeout", Kind.DURATION, "wait", default=900, minimum=1, maximum=86400)
ON = Setting("on", Kind.BOOL, "a switch", default=False)
ARCH = Setting(
    "arch", Kind.STR, "arch", choices=("x86_64",), unsupported=(("aarch64", "x86-64 only"),), default="x86_64"
)
NAME = Setting("name", Kind.STR, "a name", pattern=r"[a-z]+", pattern_help="lower-case letters")
SERVERS = Setting("servers", Kind.LIST_URL, "servers", unique=True)


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("4096", 4096),
        ("4G", 4096),
        ("4g", 4096),
        ("4GiB", 4096),
        ("512M", 512),
        ("1.5G", 1536),
        ("1T", 1 << 20),
    ],
)
def test_sizes_with_units_count_in_the_settings_unit(text: str, mib: int) -> None:
    assert table.from_text(MEMORY, text) == mib


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("-5", "-5 is out of range", "expected a size in 256M..4T (a bare number counts MiB)"),
        ("10", "10M is out of range", "256M..4T"),
        ("lots", "'lots' is not a size", "4G, 512M"),
        ("1000K", "'1000K' is not a whole number of MiB", "whole number"),
        ("5T", "5T is out of range", "256M..4T"),
    ],
)
def test_bad_sizes_say_what_and_what_to_write(text: str, message: str, hint: str) -> None:
    with pytest.raises(Invalid) as e:
        table.from_text(MEMORY, text)
    assert e.value.message == message and hint in e.value.hint


def test_sizes_are_shown_in_their_shortest_exact_unit() -> None:
    assert [table.format_size(n, "M") for n in (4096, 512, 1536, 1 << 20)] == ["4G", "512M", "1536M", "1T"]
    assert table.render(MEMORY, 4096) == "4G" and table.from_text(MEMORY, table.render(MEMORY, 1536)) == 1536


def test_integers_have_ranges() -> None:
    assert table.from_text(CPUS, " 2 ") == 2
    for text, message in (("0", "0 is out of range"), ("513", "513 is out of range"), ("two", "not a whole")):
        with pytest.raises(Invalid, match=message):
            table.from_text(CPUS, text)
    assert table.scalar(CPUS, 4) == 4  # a YAML integer
    with pytest.raises(Invalid, match="expected an integer"):
        table.scalar(CPUS, True)  # YAML's yes is no number


def test_durations_take_units_and_are_shown_with_the_largest_exact_one() -> None:
    assert [table.format_duration(n) for n in (900, 90, 7200, 86400)] == ["15m", "90s", "2h", "1d"]
    assert [table.from_text(TIMEOUT, t) for t in ("90", "90s", "15m", "2h", "1d")] == [
        90,
        90,
        900,
        7200,
        86400,
    ]
    with pytest.raises(Invalid, match="not a duration"):
        table.from_text(TIMEOUT, "soon")
    with pytest.raises(Invalid, match="172800 is out of range"):
        table.from_text(TIMEOUT, "2d")


def test_booleans_take_the_usual_words() -> None:
    assert [table.from_text(ON, t) for t in ("on", "Yes", "1", "true")] == [True] * 4
    assert [table.from_text(ON, t) for t in ("off", "no", "0", "FALSE")] == [False] * 4
    with pytest.raises(Invalid, match="'maybe' is not on/off"):
        table.from_text(ON, "maybe")


def test_choices_suggest_and_refused_values_say_why() -> None:
    assert table.from_text(ARCH, "x86_64") == "x86_64"
    with pytest.raises(Invalid) as e:
        table.from_text(ARCH, "x86-64")
    assert "unknown value 'x86-64' (did you mean 'x86_64'?)" in e.value.message
    assert e.value.hint == "choose one of: x86_64"
    with pytest.raises(Invalid, match="'aarch64' is not supported: x86-64 only"):
        table.from_text(ARCH, "aarch64")


def test_patterns_use_their_words() -> None:
    with pytest.raises(Invalid) as e:
        table.from_text(NAME, "Bad1")
    assert (e.value.message, e.value.hint) == ("invalid value 'Bad1'", "expected lower-case letters")
    with pytest.raises(Invalid, match="must not be empty"):
        table.from_text(NAME, "")


@pytest.mark.parametrize(
    "url", ["not-a-url", "ftp://host/x", "http://[::1/x", "http://host:99999/", "http://a b/"]
)
def test_urls_are_absolute_with_a_scheme_host_and_port(url: str) -> None:
    with pytest.raises(Invalid, match=r"not an http\(s\) URL"):
        table.from_text(SERVERS, [url])


def test_lists_take_repeats_or_commas_and_drop_duplicates() -> None:
    a, b = "http://a.example/cvmfs/@fqrn@", "https://b.example:8000/cvmfs/@fqrn@"
    assert table.from_text(SERVERS, [a, b, a]) == [a, b]
    assert table.from_text(SERVERS, f"{a},{b}") == [a, b]


def test_a_table_with_a_key_twice_is_a_bug() -> None:
    with pytest.raises(AssertionError):
        table.by_key((CPUS, CPUS))
    renamed = Setting("cores", Kind.INT, "CPUs", default=1, aliases=("cpus",))
    assert table.aliases((renamed,)) == {"cpus": "cores"}
    with pytest.raises(AssertionError):
        table.by_key((renamed, CPUS))


def test_allowed_text_describes_ranges_units_and_refusals() -> None:
    assert "256M..4T" in table.allowed_text(MEMORY) and "MiB" in table.allowed_text(MEMORY)
    assert "not `aarch64` (x86-64 only)" in table.allowed_text(ARCH)


@pytest.mark.parametrize(
    ("setting", "text"),
    [
        (CPUS, "9" * 5000),  # past Python's int() digit limit (a bare ValueError)
        (CPUS, "-" + "9" * 19),
        (MEMORY, "9" * 400 + "G"),  # float() overflows
        (MEMORY, "1." + "0" * 5000 + "1G"),
        (TIMEOUT, "9" * 5000 + "d"),
    ],
    ids=["int-5000", "int-19", "size-400", "size-fraction-5000", "duration-5000"],
)
def test_huge_numbers_are_one_line_naming_a_prefix(setting: table.Setting, text: str) -> None:
    with pytest.raises(Invalid) as e:
        table.from_text(setting, text)
    assert "too large a number" in e.value.message and len(e.value.message) < 60
    assert "18 digits" in e.value.hint


def test_huge_yaml_integers_are_too_large_and_not_echoed() -> None:
    with pytest.raises(Invalid, match="a number of about 4000 digits is too large"):
        table.scalar(CPUS, 10**3999)
    assert table.from_text(CPUS, "000000000000000000000002") == 2  # leading zeros are no digits
    assert table.from_text(MEMORY, "0.50000000000000000T") == 512 << 10


def test_urls_with_credentials_are_refused_redacted() -> None:
    with pytest.raises(Invalid) as e:
        table.from_text(SERVERS, "http://ok.example/x,http://alice:s3cret@h.example:8000/cvmfs")
    assert e.value.message == "a URL with credentials is not supported: http://***@h.example:8000/cvmfs"
    assert "s3cret" not in e.value.hint
    assert table.redact_url("https://u@h/p?q=1") == "https://***@h/p?q=1"
    assert table.redact_url("http://h/a@b") == "http://h/a@b"  # an @ in the path is no credential
    # decided as urllib reads the URL: it drops leading blanks and tabs inside the scheme
    for url in (" http://alice:s3cret@h/x", "\thttp://alice:s3cret@h/x", "ht\ttp://alice:s3cret@h/x"):
        assert table.has_credentials(url) and table.redact_url(url) == "http://***@h/x"
    assert table.redact_url("http://u:p@[::1/x") == "http://***@[::1/x"  # urlsplit refuses it
    assert not table.has_credentials("/tmp/a@b") and not table.has_credentials("a@b.example")


@pytest.mark.parametrize(
    ("parse", "text"),
    [(table.parse_int, "٣"), (table.parse_int, "२२"), (table.parse_size, "١G"), (table.parse_duration, "٥m")],
)
def test_numbers_are_ascii_digits_only(parse: Any, text: str) -> None:
    """``\\d`` matches any script's digits and int() reads them: ``cpus=٣`` was 3 cpus, ``sshPort=٢٢``
    port 22, while ``²`` was refused; a number in a setting is written with 0-9."""
    with pytest.raises(table.Invalid, match="is not a"):
        parse(text)
