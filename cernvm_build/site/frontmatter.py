"""Front matter: a YAML block between ``---`` lines at the top of a Markdown file; and the ``Memo`` of
YAML texts parsed before.

PyYAML is imported when a text is parsed (deliberate lazy import, ~10 ms of a start): a rebuild finds
the texts it parsed before (config.yaml, data files, the front matter of a page whose edit kept it) in
a ``Memo`` and needs no YAML at all.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from .. import dataload
from ..errors import BuildError, Location

#: the loader's rules (what ``yaml_load`` refuses or builds); raise it at every rule change, so that a
#: value a ``Memo`` kept from an older rule is parsed again (an incremental build refuses what a clean
#: one does)
LOADER_VERSION = 2


def key(raw: str) -> str:
    """A YAML text's key in a ``Memo``: the text and the ``LOADER_VERSION`` that parsed it."""
    h = hashlib.sha256(f"yaml-loader-{LOADER_VERSION}\0".encode())
    h.update(raw.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


class Memo:
    """YAML texts parsed before (``known``: by ``key``, the value pickled, so every caller gets its own
    copy); ``now``: the texts asked for since, which are worth keeping for the next build."""

    def __init__(self, known: Mapping[str, bytes] | None = None):
        self.known = known or {}
        self.now: dict[str, bytes] = {}

    def load(self, raw: str) -> Any:
        """``yaml.safe_load(raw)`` (libyaml's loader when present); raises ``yaml.YAMLError``."""
        k = key(raw)
        blob = self.known.get(k)
        if blob is not None:
            self.now[k] = blob
            return pickle.loads(blob)
        value = yaml_load(raw)
        self.now[k] = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return value


#: values a YAML text's aliases may add when expanded (``plain``, JSON, templates copy every use): a
#: "billion laughs" text of a few hundred bytes expands to 10^9 values and gigabytes
ALIAS_BUDGET = 100_000
#: characters of text the aliases may add: a few aliases of one long string are few values but
#: gigabytes (40,000 characters used 90,000 times: 7 GB)
ALIAS_CHARS = 10_000_000


def yaml_load(raw: str) -> Any:
    """``yaml.safe_load(raw)`` that refuses what would pass unnoticed or blow up later, as a marked
    ``yaml.YAMLError`` (file:line via ``yamlerror``): a key given twice in one mapping (YAML keeps
    the last silently), a value Python cannot build (``2026-02-30``, a time zone of +99:00), and aliases
    that expand past ``ALIAS_BUDGET`` values or ``ALIAS_CHARS`` characters."""
    import yaml

    value = yaml.load(raw, Loader=_loader())
    if "*" in raw:  # no alias without one
        extra, chars = _alias_extra(value)
        if extra > ALIAS_BUDGET or chars > ALIAS_CHARS:
            m = _ALIAS.search(raw)
            at = m.start(1) if m else 0
            line = raw.count("\n", 0, at)
            mark = yaml.Mark("<yaml>", at, line, at - (raw.rfind("\n", 0, at) + 1), "", 0)
            what = (
                f"{ALIAS_BUDGET:,} values" if extra > ALIAS_BUDGET else f"{ALIAS_CHARS:,} characters of text"
            )
            raise yaml.constructor.ConstructorError(None, None, f"aliases expand to more than {what}", mark)
    return value


#: an alias (``*name``) where YAML reads one: after a space, a flow indicator or at a line's start
_ALIAS = re.compile(r"(?:^|[\s\[{,])(\*)[^\s,\[\]{}]", re.M)


def _alias_extra(value: Any) -> tuple[int, int]:
    """How many more values, and characters of text, ``value`` holds written out than it holds as
    built (aliases share one object per anchor; a deep copy does not): each container's expanded size
    is counted once, each text's characters once as built and at every use written out."""
    sizes: dict[int, tuple[int, int]] = {}
    texts: set[int] = set()
    distinct = distinct_chars = 0

    def size(v: Any) -> tuple[int, int]:
        nonlocal distinct, distinct_chars
        if isinstance(v, dict):
            items: Any = [*v.keys(), *v.values()]
        elif isinstance(v, list):
            items = v
        else:
            return 1, len(v) if isinstance(v, str | bytes) else 0
        known = sizes.get(id(v))
        if known is not None:
            return known
        distinct += 1
        for x in items:
            if not isinstance(x, dict | list):
                distinct += 1
                if isinstance(x, str | bytes) and id(x) not in texts:
                    texts.add(id(x))
                    distinct_chars += len(x)
        n, chars = 1, 0
        for x in items:
            xn, xc = size(x)
            n += xn
            chars += xc
        sizes[id(v)] = n, chars
        return n, chars

    if not isinstance(value, dict | list):
        return 0, 0
    n, chars = size(value)
    return n - distinct, chars - distinct_chars


@lru_cache(maxsize=1)
def _loader() -> Any:
    import yaml
    from yaml.constructor import ConstructorError, SafeConstructor

    # libyaml's parser when present: the pure-Python one dominates builds of small pages (the
    # constructor, subclassed here, is Python's either way)
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc,valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    k = self.construct_object(key_node)
                    try:
                        dup = k in seen
                        seen.add(k)
                    except TypeError:  # unhashable: YAML's own error follows
                        continue
                    if dup:
                        raise ConstructorError(
                            None, None, f"key {k!r} is given twice in one mapping", key_node.start_mark
                        )
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_timestamp(self, node: Any) -> Any:
            try:
                return SafeConstructor.construct_yaml_timestamp(self, node)
            except (ValueError, OverflowError) as e:
                raise ConstructorError(
                    None, None, f"not a valid date or time: {e}", node.start_mark
                ) from None

    Loader.add_constructor("tag:yaml.org,2002:timestamp", Loader.construct_yaml_timestamp)
    return Loader


def load_nested(load: Callable[[str], Any], text: str, where: str | Location, what: str = "") -> Any:
    """``load(text)`` (``Memo.load``, ``json.loads``) through ``dataload.load``: a value nested too
    deeply or a number of more digits than Python reads is one line with the file and a hint, not a
    traceback. ``what``: what the text is where the file holds more (the front matter), said in the
    message. The one handler for data files, config.yaml and front matter."""
    try:
        return dataload.load(load, text)
    except dataload.TooComplex as e:
        message = (f"{what} is {e.message}" if e.nested else f"{what}: {e.message}") if what else e.message
        raise BuildError(message, where=where, hint=e.hint) from None


#: YAML's kinds of values in words (Python's names were shown: 'must be a str'), for both sides of
#: 'must be text, not a number'
KIND_WORDS: dict[type, str] = {dict: "a mapping", list: "a list", str: "text", type(None): "empty"}


def yaml_kind(v: Any) -> str:
    """A YAML value's kind in words, for 'must be text, not …'."""
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, int):
        return "a number"
    if isinstance(v, float):
        return "a decimal number"
    return KIND_WORDS.get(type(v), type(v).__name__)


#: the front matter keys the site build reads (``pages``, ``plan``, ``sources``); a theme's templates
#: may read any other (``page.meta.headline``), so another key is kept, and only one close to these is
#: said (``misspelt``)
KEYS = frozenset(
    (
        *("data", "date", "description", "draft", "generate", "layout", "nav_title", "noindex"),
        *("tags", "title", "updated", "url", "weight"),
    )
)
#: warnings a page's front matter may give (its keys are bounded only by the page size)
MAX_MISSPELT = 10


def misspelt(fm: Mapping[Any, Any], raw: str, file: str, first_line: int) -> list[str]:
    """A warning (file:line) for each key of ``fm`` that is none of ``KEYS`` but close to one:
    ``darft: true`` left the page published and ``titel:`` took the title from the first heading,
    without a word (Hugo and MkDocs say nothing either). ``raw``: the YAML text, which starts on
    line ``first_line``."""
    unknown = [k for k in fm if isinstance(k, str) and k not in KEYS]
    if not unknown:
        return []
    import difflib  # (only for a page with a key of its theme's or a typo)

    found: list[str] = []
    for k in unknown[: MAX_MISSPELT * 10]:
        close = difflib.get_close_matches(k.lower().replace("-", "_"), KEYS, n=1, cutoff=0.8)
        if not close:
            continue
        m = re.search(rf"^['\"]?{re.escape(k)}['\"]?[ \t]*:", raw, re.M)
        line = first_line + (raw.count("\n", 0, m.start()) if m else 0)
        found.append(
            f"{file}:{line}: front matter key {k!r:.60} is unknown (a template may read it):"
            f" did you mean {close[0]!r}?"
        )
        if len(found) == MAX_MISSPELT:
            break
    return found


def is_yaml_error(e: Exception) -> bool:
    import yaml  # loaded already: only ``Memo.load`` raises what is asked about

    return isinstance(e, yaml.YAMLError)


def split(text: str, file: str) -> tuple[dict[str, Any], str, int]:
    """Return (front matter, body, line number of the body's first line, 1-based)."""
    raw, body, first_line = split_raw(text, file)
    return (parse(raw, file, first_line=2) if raw is not None else {}), body, first_line


def split_raw(text: str, file: str) -> tuple[str | None, str, int]:
    """Return (the front matter's YAML text, None without one; body; line number of the body's first
    line, 1-based). The YAML starts on line 2."""
    if not text.startswith("---\n") and not text.startswith("---\r\n"):
        return None, text, 1
    lines = text.splitlines(keepends=True)
    for i in range(1, len(lines)):
        if lines[i].rstrip("\r\n") in ("---", "..."):
            return "".join(lines[1:i]), "".join(lines[i + 1 :]), i + 2
    raise BuildError(
        "front matter is not closed",
        where=Location(file=file, line=1, column=1),
        hint="end the YAML block with a line holding only '---'",
    )


def parse(
    raw: str, file: str, first_line: int = 1, memo: Memo | None = None, *, what: str = "front matter"
) -> dict[str, Any]:
    """The mapping a YAML text holds (``memo``: texts parsed before). ``what``: the text in messages, a
    page's front matter or a whole file (``config.yaml``), whose hints then say nothing of '---'."""
    plain = _plain(raw)
    if plain is not None:
        return plain
    fm = what == "front matter"
    try:
        meta = load_nested((memo or Memo()).load, raw, Location(file=file, line=first_line), what)
    except Exception as e:
        if isinstance(e, BuildError) or not is_yaml_error(e):
            raise
        from .. import yamlerror

        problem = yamlerror.describe(e, first_line)  # type: ignore[arg-type]
        raise BuildError(
            f"{what} is not valid YAML: {problem.what}",
            where=Location(file=file, line=problem.line or first_line, column=problem.column),
            hint=f"{what} is YAML: 'key: value' lines; quote values that contain ':' or '#'",
        ) from None
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise BuildError(
            f"{what} must be a mapping of keys to values",
            where=Location(file=file, line=first_line),
            hint="write 'title: My page' style lines between the '---' markers"
            if fm
            else "write 'key: value' lines",
        )
    return meta


#: a line of the plain form: a lowercase key and a double-quoted string without escapes or quotes, a
#: decimal integer without a leading zero or sign, or unquoted words (what a page's front matter
#: mostly is): words of letters, digits and ``_.,'()/+-``, one space between them, the first word
#: starting with a letter. YAML reads those as text unless the whole is a bool or null word
#: (``_NOT_STRING``): its other implicit types (numbers, dates, ``~``, ``<<``, ``=``) and its indicators
#: (``!&*|>%@`#``, ``- ``, ``? ``, flow collections) start with no letter, and a ``:`` or ``#`` (a key, a
#: comment) is not among the characters
_PLAIN_LINE = re.compile(
    r'([a-z][a-z0-9_]*): (?:"([^"\\]*)"|([1-9][0-9]{0,17})|([A-Za-z][\w.,\'()/+-]*(?: [\w.,\'()/+-]+)*))',
    re.A,
)
#: words YAML 1.1 reads as a bool or null, not a string, as a key or a whole unquoted value (any case:
#: more than YAML's own, none fewer)
_NOT_STRING = frozenset(("yes", "no", "true", "false", "on", "off", "null", "y", "n"))


def _plain(raw: str) -> dict[str, Any] | None:
    """The mapping of a front matter whose every line is ``key: "text"``, ``key: 123`` or ``key: some
    words``, without YAML; None for any other text (YAML then parses it, and reports its errors). The
    same values as YAML's: each form is read by one rule there too. libyaml plus keeping the value for
    the next build cost ~57 µs a page (0.057 CPU-s of a 1,000-page build); this ~2 µs."""
    if not raw.endswith("\n"):
        return None
    out: dict[str, Any] = {}
    for line in raw[:-1].split("\n"):
        m = _PLAIN_LINE.fullmatch(line)
        if m is None:
            return None
        k, text, number, words = m.groups()
        if k in out or k in _NOT_STRING:
            return None
        if number is not None:
            out[k] = int(number)
        elif words is not None:
            if words.lower() in _NOT_STRING:
                return None
            out[k] = words
        elif text.isprintable():  # no tab, control or line-separator character: YAML's own rules there
            out[k] = text
        else:
            return None
    return out
