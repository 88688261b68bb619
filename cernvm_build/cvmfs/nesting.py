"""Where nested catalogs go without hand-placed markers: ``/.cvmfsdirtab`` rules and automatic splits.

Both add marker files to the stage, as the real server adds them to the repository (so an exported
tree re-published keeps its catalog layout, and the catalog builder needs to know only markers):

- **.cvmfsdirtab** (read from the new revision's root, as ``cvmfs_server publish`` does): one path
  pattern per line; ``#`` starts a comment line, ``!`` a negation; leading blanks are skipped, the rest
  of the line is the pattern, verbatim. A pattern is split at ``/``; in each part ``*`` matches any
  run of characters except ``/`` (names starting with a dot included), ``?`` one character, ``\\x``
  the character x. Every directory (not a symlink) whose absolute path a positive rule matches gets a
  nested catalog unless a negation matches it; negations may be relative and there ``*`` also matches
  across ``/`` (``! */.git`` excludes every ``.git``). A positive rule must be absolute; a pattern both
  positive and negated is an error. The marker is an empty ``.cvmfscatalog`` (0644).
- **automatic catalogs** (the real server's ``CVMFS_AUTOCATALOGS``): a catalog holding more than
  ``max_weight`` entries is split. Its directories are visited children first; while a directory's
  weight (1 + its entries, a nested catalog counting 1) exceeds ``max_weight / 2``, its heaviest
  subdirectory that weighs at least ``min_weight`` becomes a nested catalog (weight 1 from then on).
  Markers ``.cvmfscatalog`` and ``.cvmfsautocatalog`` (0600, owned as the directory). A source
  directory holding ``.cvmfsautocatalog`` markers (e.g. exported from a repository) is re-decided.

Markers take the directory's mtime (the real server uses the publish time), so an unchanged
directory keeps an unchanged nested catalog, which the next publish reuses by hash.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import CvmfsError
from .catalog_write import Entry
from .stage import Stage

DIRTAB = "/.cvmfsdirtab"
MARKER = ".cvmfscatalog"
AUTO_MARKER = ".cvmfsautocatalog"
#: a ``.cvmfsdirtab`` is read whole and each of its rules is tried on every directory of the tree:
#: real ones are a few lines; a 2 MB one of 200,000 rules took 30 s over 200 directories
MAX_DIRTAB_BYTES = 64 << 10
MAX_DIRTAB_RULES = 1000


@dataclass(frozen=True)
class AutoCatalogs:
    """The real server's defaults (``CVMFS_AUTOCATALOGS_MAX_WEIGHT`` / ``_MIN_WEIGHT``)."""

    max_weight: int = 100_000
    min_weight: int = 1_000

    def __post_init__(self) -> None:
        if not 0 < self.min_weight < self.max_weight // 2:
            raise ValueError("autocatalog weights must satisfy 0 < min < max / 2")


# -- .cvmfsdirtab ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    text: str
    absolute: bool
    parts: tuple[tuple[str, ...], ...]  # per path part its tokens: "*" a star, else one character's regex

    def regex(self, relaxed: bool) -> re.Pattern[str]:
        """The rule as one expression; a star matches within a part, or ``relaxed`` across parts.

        The text between two stars is matched at its first place after the previous one, in an
        atomic group (as ``fnmatch`` does): plain ``.*`` for each star backtracked through every way
        to place them, so ``!*a*a*a*a*a*a*a*a*a*a*a*a*b`` against a long path took hours. The first
        place is always the best one: a star can take whatever a later start skipped."""
        star, lazy = (".*", ".*?") if relaxed else ("[^/]*", "[^/]*?")
        between: list[list[str]] = [[]]  # the tokens between the stars
        for i, part in enumerate(self.parts):
            if i:
                between[-1].append("/")
            for token in part:
                if token == "*":
                    between.append([])
                else:
                    between[-1].append(token)
        body = "".join(between[0])
        body += "".join(f"(?>{lazy}{''.join(t)})" for t in between[1:-1])
        if len(between) > 1:
            body += star + "".join(between[-1])
        return re.compile("^" + ("/" if self.absolute else "") + body + "/?\\Z", re.S)


def _part(text: str, where: str) -> tuple[str, ...]:
    tokens = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 == len(text):
                raise CvmfsError(f"{where}: pattern ends in a lone backslash", hint="escape it as \\\\")
            tokens.append(re.escape(text[i + 1]))
            i += 2
            continue
        tokens.append("*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
        i += 1
    return tuple(tokens)


def _rule(text: str, where: str) -> Rule:
    parts = tuple(_part(p, where) for p in text.split("/") if p)
    if not parts:
        raise CvmfsError(f"{where}: {text!r} names no directory", hint="give a path like /sw/*")
    return Rule(text, text.startswith("/"), parts)


@dataclass(frozen=True)
class Dirtab:
    positive: tuple[re.Pattern[str], ...]
    negative: tuple[re.Pattern[str], ...]

    def selects(self, path: str) -> bool:
        """Whether the directory ``path`` (absolute, ``/a/b``) gets a nested catalog."""
        return any(r.match(path) for r in self.positive) and not any(r.match(path) for r in self.negative)


def parse_dirtab(text: str, where: str = DIRTAB) -> Dirtab:
    """Rules of a ``.cvmfsdirtab``; a bad line is an error naming ``where:line``."""
    positive: list[Rule] = []
    negative: list[Rule] = []
    for n, raw in enumerate(text.split("\n"), start=1):
        line = raw.lstrip(" \t")
        if not line or line.startswith("#"):
            continue
        at = f"{where}:{n}"
        negation = line.startswith("!")
        if negation:
            line = line[1:].lstrip(" \t")
            if not line:
                continue
        if len(positive) + len(negative) == MAX_DIRTAB_RULES:
            raise CvmfsError(
                f"{at}: more than {MAX_DIRTAB_RULES} rules",
                hint="each rule is tried on every directory; merge them",
            )
        rule = _rule(line, at)
        if not negation and not rule.absolute:
            raise CvmfsError(
                f"{at}: {line!r} is not an absolute path",
                hint="nested catalog rules start at the repository root, like /sw/*/*",
            )
        (negative if negation else positive).append(rule)
    both = {(r.absolute, r.parts) for r in positive} & {(r.absolute, r.parts) for r in negative}
    if both:
        bad = next(r.text for r in positive if (r.absolute, r.parts) in both)
        raise CvmfsError(f"{where}: {bad!r} is both selected and negated", hint="keep one of the two lines")
    return Dirtab(
        tuple(r.regex(relaxed=False) for r in positive), tuple(r.regex(relaxed=True) for r in negative)
    )


# -- the stage's directory tree ----------------------------------------------------------------------


@dataclass
class _Dir:
    entry_count: int = 0  # direct children, every kind
    subdirs: list[str] | None = None  # child directories that are not catalog mountpoints
    catalog: bool = False  # a nested catalog starts here (marker or kept reference)
    weight: int = 0


def _tree(stage: Stage) -> dict[str, _Dir]:
    """Every staged directory with its children counts (only directories are held in memory)."""
    dirs: dict[str, _Dir] = {}
    for (path,) in stage.db.execute("SELECT path FROM stage WHERE (mode & 61440) = 16384"):
        dirs[str(path)] = _Dir()
    for parent, count in stage.db.execute("SELECT parent, COUNT(*) FROM stage GROUP BY parent"):
        if parent in dirs:
            dirs[parent].entry_count = int(count)
    for (parent,) in stage.db.execute(
        "SELECT parent FROM stage WHERE name = ? AND (mode & 61440) = 32768", (MARKER,)
    ):
        if parent in dirs:
            dirs[parent].catalog = True
    for (path,) in stage.db.execute("SELECT path FROM stage WHERE nested_hash IS NOT NULL"):
        if path in dirs:
            dirs[path].catalog = True
    for path in sorted(dirs):
        if path:
            parent = dirs.get(path.rsplit("/", 1)[0])
            if parent is not None and not dirs[path].catalog:
                if parent.subdirs is None:
                    parent.subdirs = []
                parent.subdirs.append(path)
    return dirs


def _postorder(dirs: dict[str, _Dir], top: str) -> Iterator[str]:
    """``top`` and the directories of its catalog, children before parents (no recursion limit)."""
    stack: list[tuple[str, bool]] = [(top, False)]
    while stack:
        path, expanded = stack.pop()
        if expanded:
            yield path
            continue
        stack.append((path, True))
        for child in reversed(dirs[path].subdirs or []):
            stack.append((child, False))


def _marker(stage: Stage, directory: str, name: str, perm: int, empty_digest: bytes) -> None:
    d = stage.get(directory)
    assert d is not None
    stage.put(
        Entry(
            path=f"{directory}/{name}",
            mode=stat.S_IFREG | perm,
            mtime=d.entry.mtime,
            mtimens=d.entry.mtimens,
            uid=d.entry.uid,
            gid=d.entry.gid,
            digest=empty_digest,
        )
    )


# -- the two passes ------------------------------------------------------------------------------------


def apply_dirtab(stage: Stage, dirtab: Dirtab, empty_digest: bytes) -> list[str]:
    """Mark every directory the dirtab selects; returns the directories newly marked."""
    marked = []
    for (path,) in stage.db.execute(
        "SELECT path FROM stage WHERE (mode & 61440) = 16384 AND path != '' ORDER BY path"
    ).fetchall():
        if dirtab.selects(path) and not stage.has(f"{path}/{MARKER}"):
            _marker(stage, path, MARKER, 0o644, empty_digest)
            marked.append(str(path))
    return marked


def drop_auto_markers(stage: Stage) -> None:
    """Automatic catalogs are decided again on every publish: their markers in the source go."""
    for (parent,) in stage.db.execute("SELECT parent FROM stage WHERE name = ?", (AUTO_MARKER,)).fetchall():
        stage.db.execute(
            "DELETE FROM stage WHERE path IN (?, ?)", (f"{parent}/{AUTO_MARKER}", f"{parent}/{MARKER}")
        )


def balance(stage: Stage, limits: AutoCatalogs, empty_digest: bytes) -> list[str]:
    """Split every catalog heavier than ``limits.max_weight``; returns the new catalog directories."""
    dirs = _tree(stage)
    half = limits.max_weight // 2
    made: list[str] = []
    for top in [p for p, d in dirs.items() if p == "" or d.catalog]:
        for path in _postorder(dirs, top):  # weights as the catalog is now
            d = dirs[path]
            d.weight = 1 + d.entry_count + sum(dirs[c].weight - 1 for c in d.subdirs or [])
        if dirs[top].weight <= limits.max_weight:
            continue
        for path in _postorder(dirs, top):
            d = dirs[path]
            d.weight = 1 + d.entry_count + sum(dirs[c].weight - 1 for c in d.subdirs or [])
            candidates = list(d.subdirs or [])
            while d.weight > half:
                heaviest = max(candidates, key=lambda c: dirs[c].weight, default=None)
                if heaviest is None or dirs[heaviest].weight < limits.min_weight:
                    break  # nothing here can take the weight off (as the real server, say nothing)
                d.weight -= dirs[heaviest].weight - 1
                dirs[heaviest].weight = 1
                candidates.remove(heaviest)
                made.append(heaviest)
    for path in sorted(made):
        _marker(stage, path, MARKER, 0o600, empty_digest)
        _marker(stage, path, AUTO_MARKER, 0o600, empty_digest)
    return sorted(made)


@dataclass(frozen=True)
class Placed:
    dirtab: list[str]  # directories given a catalog by /.cvmfsdirtab
    auto: list[str]  # directories given a catalog by the automatic split


def place_catalogs(
    stage: Stage, read: Callable[[Entry], bytes], empty_digest: bytes, limits: AutoCatalogs | None
) -> Placed:
    """Both passes over a complete stage, before catalogs are built: the dirtab first (as
    ``cvmfs_server publish`` applies it before syncing), then the split of what is still too heavy."""
    by_dirtab: list[str] = []
    if limits is not None:
        drop_auto_markers(stage)
    s = stage.get(DIRTAB)
    if s is not None and stat.S_ISREG(s.entry.mode):
        if s.entry.size > MAX_DIRTAB_BYTES:
            raise CvmfsError(
                f"{DIRTAB}: {s.entry.size} bytes is too big for a dirtab"
                f" (at most {MAX_DIRTAB_BYTES >> 10} KiB)",
                hint="keep it short: one directory pattern a line",
            )
        try:
            text = read(s.entry).decode("utf-8")
        except UnicodeDecodeError:
            raise CvmfsError(f"{DIRTAB}: not UTF-8 text", hint="write the rules as plain text") from None
        by_dirtab = apply_dirtab(stage, parse_dirtab(text), empty_digest)
    auto = balance(stage, limits, empty_digest) if limits is not None else []
    return Placed(by_dirtab, auto)
