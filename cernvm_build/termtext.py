"""Text from outside (a server's answer, a repository's names, user data, a guest's console) made safe to
print to a terminal or a log someone will ``cat``: **the** one rule, ``visible``. Standard library
only: the initrd's mount prints its error line with it (``cvmfs/mount.py``), as does the CLI
(``cli/app.py``: every line, table cell and progress label).
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # typing's own costs importing typing (the initrd's mount imports this module)
if TYPE_CHECKING:
    import logging

#: C0/C1 control characters but newline and tab: an ESC from a server's answer, a repository name or a
#: user-data key would otherwise reach the terminal as an escape sequence (rich passes ESC through);
#: and the bidirectional controls (U+061C, U+200E-200F, U+202A-202E, U+2066-2069), which reorder what follows
#: them on the screen: a name holding U+202E showed its end reversed (audit13d finding 6)
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
#: and the characters that show nothing, the format characters (Unicode's Cf) that are no bidi control
#: and the line and paragraph separators: zero-width U+200B-200D, U+2060-2064, U+FEFF, the soft
#: hyphen, U+180E, U+206A-206F, the interlinear annotation U+FFF9-FFFB and the tag characters
#: U+E0000-E007F, which spell hidden ASCII: a repository's "setup\u200b.sh" printed as "setup.sh",
#: the same as its neighbour (pr26b finding 3). An emoji joined by U+200D shows as its parts, with the
#: joiner named. (The Arabic number signs, also Cf, draw a mark: they stay.)
_INVISIBLE = (
    "\u00ad\u180e\u200b-\u200d\u2028\u2029\u2060-\u2064\u206a-\u206f\ufeff\ufff9-\ufffb"
    "\U000e0001\U000e0020-\U000e007f"
)
#: and a lone surrogate: a path's byte that is not UTF-8, as ``os.fsdecode`` keeps it (U+DC80-DCFF),
#: which no terminal encoding takes: an error line naming such a path was a UnicodeEncodeError
#: traceback in the CLI's own error handler; it is shown as the byte, ``\xff``
_SURROGATE = "\ud800-\udfff"
_CONTROL = f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}{_INVISIBLE}{_SURROGATE}]"
#: the same and newline and tab, for one line: a listing's names, and error, hint and problem lines
#: (a file name holding a newline would otherwise forge a line of its own, "error: none" or a hint)
_CONTROL_LINE = f"[\x00-\x1f\x7f-\x9f{_BIDI}{_INVISIBLE}{_SURROGATE}]"
#: the two classes compiled, on first use: with their ranges they cost re's compiler ~1.3M instructions
#: each, ~1 % of a one-page ``site build --json``, which shows no untrusted text
_compiled: dict[str, re.Pattern[str]] = {}


def _pattern(source: str) -> re.Pattern[str]:
    p = _compiled.get(source)
    if p is None:
        p = _compiled[source] = re.compile(source)
    return p


def _shown(m: re.Match[str]) -> str:
    c = ord(m.group())
    if 0xDC80 <= c <= 0xDCFF:  # os.fsdecode's escape of the byte c - 0xDC00
        c -= 0xDC00
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" if c < 0x10000 else f"\\U{c:08x}"


def visible(text: str, *, one_line: bool = False) -> str:
    """``text`` with control characters shown as ``\\xNN`` (bidi controls and zero-width characters
    as ``\\uNNNN``): safe to print to a terminal; with ``one_line`` newline and tab too (names from a
    catalog or a tar, printed one per line, and every error, hint and problem line: they quote such
    names)."""
    if text.isprintable():  # none of the characters above is (they are Cc, Cf, Zl, Zp): C-fast, and
        return text  # the regex's astral ranges cost twice the old one's time per name (cvmfs ls -R)
    return _pattern(_CONTROL_LINE if one_line else _CONTROL).sub(_shown, text)


def log_formatter(fmt: str | None = None) -> logging.Formatter:
    """A ``logging.Formatter`` whose lines are ``visible`` and one line each: a log message quotes
    what came from outside (the request line a network client sent ``cvmfs serve``, a name a process
    looked up in the mount); ``-vv`` wrote it raw to the operator's terminal (pr26b finding 7). An
    exception's traceback, appended after the message, stays as Python wrote it."""
    import logging  # here: the mount imports this module, and logs only on rare paths (lazylog)

    class Visible(logging.Formatter):
        def formatMessage(self, record: logging.LogRecord) -> str:
            return visible(super().formatMessage(record), one_line=True)

    return Visible(fmt)


def is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8: a path or file name whose bytes are not UTF-8 holds their
    surrogate escapes (``os.fsdecode``), which a JSON state or an output name cannot take."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
