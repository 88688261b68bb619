"""The one settings type: a declarative, typed description of a setting, and its converters.

Each area declares its settings once, in its own table of ``Setting`` instances:

- profiles: ``cernvm_build.profile.settings`` (YAML files, plus command-line overrides such as ``--server``),
- cernvm-launch: ``cernvm_build.launch.config`` (``--memory`` flags and ``key=value`` config files),
- the bootloader's user data: ``cernvm_build.bootloader.userdata`` (``[ucernvm-begin]`` keys).

Parsing, validation, defaults, JSON Schema, the reference docs and command-line flags are derived from
those tables. The converters here turn a value as written (text from a flag, a config file or user data;
or a typed YAML scalar) into the typed value, or raise ``Invalid`` with a message and a hint; the caller
adds the place (file:line:column, the flag, the key), because only it knows where the value came from.

Standard library only: the initrd imports this module through ``bootloader.userdata``.
"""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import Callable


class Kind(enum.Enum):
    STR = "string"
    INT = "integer"
    SIZE = "size"  # an integer in ``unit``; text may carry a unit: 4G, 512M, 4096 (= unit)
    DURATION = "duration"  # seconds; text may carry a unit: 90, 90s, 15m, 2h, 1d
    BOOL = "boolean"
    PATH = "path"
    URL = "URL"
    LIST_STR = "list of strings"
    LIST_PATH = "list of paths"
    LIST_URL = "list of URLs"
    DICT_STR = "mapping of strings"

    @property
    def is_list(self) -> bool:
        return self in (Kind.LIST_STR, Kind.LIST_PATH, Kind.LIST_URL)

    @property
    def item(self) -> Kind:
        """The kind of one item of a list (a scalar kind is its own item)."""
        return {Kind.LIST_STR: Kind.STR, Kind.LIST_PATH: Kind.PATH, Kind.LIST_URL: Kind.URL}.get(self, self)

    @property
    def is_text(self) -> bool:
        """Kinds whose YAML scalars are taken as written (so ``2021.10`` stays ``"2021.10"``)."""
        return self.item in (Kind.STR, Kind.PATH, Kind.URL) or self is Kind.DICT_STR


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()  # marks a setting without a default: the merged settings must set it

#: binary multipliers of size units (``4G`` is 4 GiB, as qemu and libvirt read it)
SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


# A NamedTuple, not a dataclass: the initrd's user-data parser imports this module under TCG, where
# dataclasses' import (inspect, ast, dis, tokenize) costs seconds; difflib and urllib.parse are
# imported where used for the same reason.
class Setting(NamedTuple):
    """One setting, declared once.

    ``key`` is how files spell it (dotted for nested YAML); ``field`` the attribute of the typed model
    (default: the key's last part, with ``-`` as ``_``); ``flag`` the command-line spelling, if the
    setting may be given there.
    """

    key: str
    kind: Kind
    help: str
    default: Any = REQUIRED
    nullable: bool = False  # None is a valid value (and the default of optional settings)
    choices: tuple[str, ...] = ()  # for STR, or the items of LIST_STR
    #: values that are known but refused, with the reason (``os.arch: aarch64``)
    unsupported: tuple[tuple[str, str], ...] = ()
    pattern: str | None = None  # regular expression the whole string (or each item/key) matches
    pattern_help: str | None = None  # the pattern in words, for error messages
    minimum: int | None = None  # INT, SIZE (in ``unit``) and DURATION (seconds)
    maximum: int | None = None
    unit: str = ""  # SIZE: what a bare number and the typed value count ("M": MiB)
    schemes: tuple[str, ...] = ("http", "https")  # URL
    unique: bool = False  # lists: duplicates (e.g. from extends) are dropped, first one kept
    single_ok: bool = False  # lists: a single string may stand for a one-item list
    inherit: bool = True  # profiles: False means taken only from the file itself, never from parents
    example: str | None = None
    #: deprecated spellings of ``key`` (renamed settings): still read, with a warning
    aliases: tuple[str, ...] = ()
    field: str | None = None
    flag: str | None = None  # e.g. "--memory"
    metavar: str | None = None  # for ``--help``
    #: STR: the rule its pattern cannot say (a date no calendar has) and the value's one spelling:
    #: raises ``Invalid``, returns the canonical text (``check_text`` refuses by it; the bootloader
    #: writes what it returns)
    canonical: Callable[[str], str] | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def section(self) -> str:
        return self.key.rpartition(".")[0]

    @property
    def name(self) -> str:
        """The model attribute this setting fills."""
        return self.field or self.key.rsplit(".", 1)[-1].replace("-", "_")

    def fresh_default(self) -> Any:
        """A copy of the default (lists and dicts are never shared)."""
        d = self.default
        return list(d) if isinstance(d, list) else dict(d) if isinstance(d, dict) else d

    def range_text(self) -> str:
        """The allowed range in the setting's own terms (``256M..4T``, ``1..512``), or ""."""
        if self.minimum is None and self.maximum is None:
            return ""
        lo = "" if self.minimum is None else self._show(self.minimum)
        hi = "" if self.maximum is None else self._show(self.maximum)
        return f"{lo}..{hi}"

    def _show(self, number: int) -> str:
        if self.kind is Kind.SIZE:
            return format_size(number, self.unit)
        return format_duration(number) if self.kind is Kind.DURATION else str(number)


class Invalid(ValueError):
    """A value a setting refuses: ``message`` says what, ``hint`` what to write instead."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint


def suggest(word: str, options: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or ""; first what in ``word`` is not ASCII
    (``non_ascii``): 'cvmfs' with a zero-width space, or a Cyrillic 'с', looks like the name it is not."""
    import difflib

    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return non_ascii(word) + (f" (did you mean {close[0]!r}?)" if close else "")


def non_ascii(word: str) -> str:
    """`` (it holds U+200B ZERO WIDTH SPACE: names are ASCII)`` for a word with non-ASCII characters
    (the first three, by code point and name), or ""."""
    odd = [c for c in dict.fromkeys(word) if not c.isascii()][:3]
    if not odd:
        return ""
    try:
        import unicodedata  # a C module: the initrd's Python may lack it

        named = [f"U+{ord(c):04X} {unicodedata.name(c, '?')}" for c in odd]
    except ImportError:
        named = [f"U+{ord(c):04X}" for c in odd]
    return f" (it holds {', '.join(named)}: names are ASCII)"


# -- scalar converters -------------------------------------------------------------------------------


def check_text(s: Setting, text: str) -> str:
    """``text`` if it is one of the choices and matches the pattern (STR, PATH, URL and their items)."""
    refused = dict(s.unsupported)
    if text in refused:
        raise Invalid(f"{text!r} is not supported: {refused[text]}", _choose(s))
    if s.choices and text not in s.choices:
        raise Invalid(f"unknown value {text!r}{suggest(text, list(s.choices))}", _choose(s))
    if s.pattern and not re.fullmatch(s.pattern, text):
        raise Invalid("must not be empty" if not text else f"invalid value {text!r}", _expected(s))
    if s.canonical is not None and text:
        s.canonical(text)
    if s.kind.item is Kind.URL and has_credentials(text):
        raise credentials_refused(text)
    if s.kind.item is Kind.URL and not is_url(text, s.schemes):
        raise Invalid(f"not an {_schemes(s)} URL: {text!r}", _expected(s))
    return text


_AUTHORITY = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)")


def _netloc(url: str) -> tuple[str, str] | None:
    """The authority of ``url`` as urllib reads it (``urlsplit`` drops leading blanks and tabs,
    so a regex anchored at the scheme is not enough) and ``url`` without it, split around it; None
    when there is none. A URL urlsplit refuses (``http://[::1``) is read by the pattern alone."""
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        m = _AUTHORITY.match(text)
        return (m.group(2), f"{m.group(1)}\0{text[m.end() :]}") if m else None
    if not parts.netloc:
        return None
    return parts.netloc, urlunsplit(parts._replace(netloc="\0"))


def has_credentials(url: str) -> bool:
    """Whether ``url`` carries a user name or password (``http://user:secret@host/``)."""
    got = _netloc(url)
    return got is not None and "@" in got[0]


def redact_url(url: str) -> str:
    """``url`` with its user name and password replaced by ``***`` (messages never echo them)."""
    got = _netloc(url)
    if got is None or "@" not in got[0]:
        return url
    return got[1].replace("\0", f"***@{got[0].rpartition('@')[2]}", 1)


def credentials_refused(url: str) -> Invalid:
    """A URL with credentials: refused (urllib would send them as part of the host name, and every
    message would echo the password), shown redacted."""
    return Invalid(
        f"a URL with credentials is not supported: {redact_url(url)}",
        "give the URL without user:password@ (credentials are not sent)",
    )


def _schemes(s: Setting) -> str:
    return "http(s)" if set(s.schemes) == {"http", "https"} else "/".join(s.schemes)


def _choose(s: Setting) -> str:
    return f"choose one of: {', '.join(s.choices)}" if s.choices else "see the reference for allowed values"


def _expected(s: Setting) -> str:
    if s.pattern_help:
        return f"expected {s.pattern_help}"
    if s.example:
        return f"e.g. {s.example}"
    return f"expected {s.pattern}" if s.pattern else f"expected a {s.kind.value}"


def is_url(url: str, schemes: tuple[str, ...]) -> bool:
    """An absolute URL with one of ``schemes``, a plausible host name and a valid port."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        return False
    host = parts.hostname or ""
    return (
        parts.scheme in schemes
        and re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|[0-9a-f:.]*:[0-9a-f:.]*", host) is not None
        and not any(c.isspace() for c in url)
    )


#: No setting counts beyond 18 digits. Longer numbers are refused before int() and the arithmetic:
#: Python's int() raises a bare ValueError past 4,300 digits, float() overflows past ~308, and a
#: message would echo them all.
MAX_DIGITS = 18


def _check_digits(text: str, number: str) -> None:
    whole, _, fraction = number.lstrip("+-").partition(".")
    if len(whole.lstrip("0")) > MAX_DIGITS or len(fraction) > MAX_DIGITS:
        shown = text.strip()
        shown = shown if len(shown) <= 24 else f"{shown[:20]}…"
        raise Invalid(f"{shown!r} is too large a number", f"write at most {MAX_DIGITS} digits")


def check_range(s: Setting, number: int) -> int:
    if number.bit_length() > 4 * MAX_DIGITS:  # a YAML integer: not parsed here, and not echoed
        # str() raises past 4,300 digits: estimated from the bits (log10 2) there
        digits = len(str(abs(number))) if number.bit_length() < 14000 else int(number.bit_length() * 0.30103)
        raise Invalid(f"a number of about {digits} digits is too large", f"write at most {MAX_DIGITS} digits")
    if (s.minimum is not None and number < s.minimum) or (s.maximum is not None and number > s.maximum):
        shown = format_size(number, s.unit) if s.kind is Kind.SIZE and number > 0 else str(number)
        what = {Kind.SIZE: "a size", Kind.DURATION: "seconds"}.get(s.kind, "an integer")
        unit = f" (a bare number counts {_unit_name(s.unit)})" if s.kind is Kind.SIZE else ""
        raise Invalid(f"{shown} is out of range", f"expected {what} in {s.range_text()}{unit}")
    return number


def _unit_name(unit: str) -> str:
    return f"{unit}iB" if unit in ("K", "M", "G", "T") else "bytes"


def parse_int(text: str) -> int:
    if not re.fullmatch(r"\s*[-+]?[0-9]+\s*", text):  # \d takes any script's digits (٣ was 3)
        raise Invalid(f"{text.strip()!r} is not a whole number", "write digits, e.g. 2")
    _check_digits(text, text.strip())
    return int(text)


def parse_size(text: str, unit: str = "") -> int:
    """``4G``, ``512M``, ``4096`` (counted in ``unit``), ``1.5G`` → an integer count of ``unit``."""
    m = re.fullmatch(r"\s*([-+]?[0-9]+(?:\.[0-9]+)?)\s*([KMGTkmgt]?)(?:i?[Bb])?\s*", text)
    if m is None:
        raise Invalid(f"{text.strip()!r} is not a size", "write a number with a unit: 4G, 512M, 4096")
    number, suffix = m.group(1), (m.group(2).upper() or unit)
    _check_digits(text, number)
    # deliberate lazy import: fractions (with decimal) is ~2 ms of a one-page site rebuild's start-up,
    # which imports this module for its rules and parses no size
    from fractions import Fraction

    scaled = Fraction(number) * SIZE_UNITS[suffix] / SIZE_UNITS[unit]  # exact, no float overflow
    if scaled.denominator != 1:
        raise Invalid(f"{text.strip()!r} is not a whole number of {_unit_name(unit)}", "give a whole number")
    return int(scaled)


def format_size(count: int, unit: str = "") -> str:
    """The shortest exact spelling of ``count`` ``unit``: 4096 M → ``4G``, 512 M → ``512M``."""
    total = count * SIZE_UNITS[unit]
    for suffix in ("T", "G", "M", "K"):
        if total and total % SIZE_UNITS[suffix] == 0:
            return f"{total // SIZE_UNITS[suffix]}{suffix}"
    return f"{total}B" if unit else str(total)


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` → seconds."""
    m = re.fullmatch(r"\s*([-+]?[0-9]+)\s*([smhd]?)\s*", text)
    if m is None:
        raise Invalid(f"{text.strip()!r} is not a duration", "write seconds, or with s, m, h or d: 900, 15m")
    _check_digits(text, m.group(1))
    return int(m.group(1)) * DURATION_UNITS[m.group(2)]


def format_duration(seconds: int) -> str:
    """The shortest exact spelling: 900 → ``15m``, 90 → ``90s``."""
    for suffix in ("d", "h", "m"):
        if seconds and seconds % DURATION_UNITS[suffix] == 0:
            return f"{seconds // DURATION_UNITS[suffix]}{suffix}"
    return f"{seconds}s"


TRUE_WORDS = ("1", "yes", "on", "true")
FALSE_WORDS = ("0", "no", "off", "false")


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise Invalid(f"{text.strip()!r} is not on/off", "write on or off (yes/no, true/false, 1/0)")


def scalar(s: Setting, value: str | int | bool) -> Any:
    """The typed value of one scalar for ``s`` (an item for lists): text as written, or a YAML int/bool.

    Paths stay text here: where a relative path starts depends on where it was written (the caller's).
    """
    kind = s.kind.item
    if kind in (Kind.STR, Kind.PATH, Kind.URL):
        if not isinstance(value, str):
            raise Invalid(f"expected a {kind.value}", f"e.g. {s.example}" if s.example else "")
        return check_text(s, value)
    if kind is Kind.BOOL:
        return value if isinstance(value, bool) else parse_bool(str(value))
    if isinstance(value, bool):
        raise Invalid(f"expected {'a size' if kind is Kind.SIZE else 'an integer'}, got {value}")
    if isinstance(value, int):
        number = value
    elif kind is Kind.SIZE:
        number = parse_size(value, s.unit)
    elif kind is Kind.DURATION:
        number = parse_duration(value)
    else:
        number = parse_int(value)
    return check_range(s, number)


def from_text(s: Setting, text: str | list[str]) -> Any:
    """The typed value of ``s`` from text (a flag, a config file, user data).

    Lists take repeated values (``--server A --server B``) or one comma-separated text.
    """
    if s.kind.is_list:
        items = text if isinstance(text, list) else [t for t in text.split(",") if t.strip()]
        out: list[Any] = []
        for item in items:
            value = scalar(s, item.strip())
            if not (s.unique and value in out):
                out.append(value)
        return out
    if isinstance(text, list):
        text = text[-1]  # a repeated single-valued flag: the last one wins, as usual on command lines
    if s.kind is Kind.DICT_STR:
        raise Invalid("a mapping cannot be given as text", "write it in the file")
    if s.nullable and text.strip().lower() in ("", "null", "none"):
        return None
    if s.kind in (Kind.STR, Kind.PATH, Kind.URL):
        text = text.strip()
        if not text and not s.pattern:
            raise Invalid("must not be empty", f"e.g. {s.example}" if s.example else "give a value")
    return scalar(s, text)


def render(s: Setting, value: Any) -> str:
    """A typed value as text that ``from_text`` reads back (for listings and user data)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if s.kind is Kind.SIZE and isinstance(value, int):
        return format_size(value, s.unit)
    if s.kind is Kind.DURATION and isinstance(value, int):
        return format_duration(value)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def allowed_text(s: Setting, *, files: bool = True) -> str:
    """What the setting accepts, in words (for references and, with ``files=False``, ``--help``)."""
    parts: list[str] = []
    if s.choices:
        parts.append("one of " + ", ".join(f"`{c}`" for c in s.choices))
    elif s.pattern_help:
        parts.append(s.pattern_help)
    if s.kind.item is Kind.URL:
        parts.append(f"{_schemes(s)} URL")
    if s.range_text():
        parts.append(s.range_text())
    if s.kind is Kind.SIZE:
        parts.append(f"units K, M, G, T (a bare number counts {_unit_name(s.unit)})")
    if s.kind is Kind.DURATION:
        parts.append("seconds, or with s, m, h, d")
    for value, why in s.unsupported:
        parts.append(f"not `{value}` ({why})")
    if s.nullable and files:
        parts.append("may be null")
    if s.example:
        parts.append(f"e.g. `{s.example}`")
    return "; ".join(parts)


def by_key(table: tuple[Setting, ...]) -> dict[str, Setting]:
    """The table by key (two settings with one key, or a key that is also an alias, is a bug)."""
    out = {s.key: s for s in table}
    old = aliases(table)
    assert len(out) == len(table) and not set(out) & set(old), "duplicate keys in a settings table"
    return out


def aliases(table: tuple[Setting, ...]) -> dict[str, str]:
    """Deprecated key → current key."""
    return {old: s.key for s in table for old in s.aliases}


#: the kinds ``rules`` describes: what a browser-side validator (the site's context builder) implements
BROWSER_KINDS = (Kind.STR, Kind.INT, Kind.BOOL)


def rules(s: Setting) -> dict[str, Any]:
    """The setting as data a browser-side validator applies with the same results and messages as
    ``from_text`` (the site's context builder embeds it as JSON): the pattern (Python syntax that
    JavaScript reads alike: classes, groups, ``{m,n}``, lookahead), range, words and the hints
    ``Invalid`` would carry. Only ``BROWSER_KINDS``; anything else is a bug in the caller."""
    if s.kind not in BROWSER_KINDS:
        raise ValueError(f"{s.key}: a {s.kind.value} setting has no browser-side rules")
    return {
        "key": s.key,
        "kind": s.kind.value,
        "help": s.help,
        "allowed": allowed_text(s, files=False),
        "example": s.example,
        "default": None if s.default is REQUIRED or s.default is None else render(s, s.default),
        "pattern": s.pattern,
        "choices": list(s.choices),
        "unsupported": [list(pair) for pair in s.unsupported],
        "minimum": s.minimum,
        "maximum": s.maximum,
        "hints": {
            "expected": _expected(s),
            "choose": _choose(s),
            "empty": f"e.g. {s.example}" if s.example else "give a value",
            "range": f"expected an integer in {s.range_text()}",
            "integer": "write digits, e.g. 2",
            "bool": "write on or off (yes/no, true/false, 1/0)",
        },
        "true_words": list(TRUE_WORDS),
        "false_words": list(FALSE_WORDS),
    }
