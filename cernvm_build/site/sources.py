"""Step 1 of a site build: find the sources, key each Markdown file by its content, render the new ones.

A source's key is ``sha(renderer code, base path, source path, digest of its bytes, generated text)``:
anything that changes the rendered page changes the key, so a cached rendering is always the one a clean
build makes. A file's digest (and its ``generate:`` name) is taken from the state when its size, mtime,
ctime and inode are the ones recorded, so a rebuild reads only the files that changed. A file is
recorded only once its mtime and ctime are ``SETTLED_NS`` old: a write in the same clock tick as the
recorded stat could otherwise go unseen, and nothing (not ``touch``, not ``utime``) sets a ctime back.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import stat as stat_mod
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import BuildError, CernVMError, Location
from ..fsutil import open_regular
from ..report import Reporter
from ..termtext import is_utf8
from . import frontmatter, recache
from . import markdown as md_mod
from .cache import State
from .model import BAD_PATH_CHARS, ContentText, code_sha, sha, sha_after
from .ntuple import NamedTuple
from .parallel import PARALLEL_MIN, both, fork_map

#: bump when the build changes what it keeps per rendered source
BUILD_VERSION = "1"

Generators = Mapping[str, Callable[[], str]]
GENERATE_RE = re.compile(rb"^generate:\s*([\w-]+)\s*$", re.M)
#: a front matter's layout, roughly (``Sources.layouts``: a wrong guess costs a template compiled)
LAYOUT_RE = re.compile(rb"""^layout:[ \t]*["']?([\w.-]+)["']?[ \t]*$""", re.M)
TAGS_RE = re.compile(rb"^tags:", re.M)
#: a fenced code block's language, roughly (``warm_highlighting``: a wrong guess costs a lookup), after
#: a newline: a literal first character the regex engine searches for fast, where a ``^`` under
#: ``re.M`` was tried at every position (4x the time)
FENCE_LANG = re.compile(rb"\n {0,3}(?:`{3,}|~{3,})[ \t]*([\w+#.-]+)")
#: an unindented fence's opening line, after a newline (``fence_blocks``): its fence and info string
FENCE_OPEN = re.compile(rb"\n(`{3,}|~{3,})([^\n]*)\n")
#: a language with this many fenced blocks to render has its lexer's states joined at once
#: (``lexfast.join_early``): fewer would not win back the regexes compiled
MANY_BLOCKS = 100
#: the CPU-ms a cold process takes to make a lexer (its states joined, a sample lexed; Pygments 2.19,
#: sp34e): the forked lexers' step splits the languages by it (``lexers_order``); unknown ones cost
#: ``LEXER_COST_DEFAULT``. Only the order uses it: a wrong guess costs an idle core, not an output
LEXER_COST = {"python": 98, "sql": 83, "cpp": 55, "c": 49, "js": 43, "javascript": 43, "xml": 41}
LEXER_COST_DEFAULT = 30
#: a file's stat is trusted (its digest not taken again) only once it is this old (module docstring)
SETTLED_NS = 2_000_000_000
#: the rendered Markdown (HTML and search text, in characters) the render step hands the write step in
#: memory; the sources rendered past it are kept in the state at once and the write step reads their
#: HTML back a unit at a time (~15 KB a page held to the build's end: 150 MB at 10,000 pages). A site
#: under it (the bench's 4,000 pages hold ~58 MB) renders as before.
HELD_MAX = 64 << 20
#: what the state knows of a source: file -> ((size, mtime, ctime, inode), digest, generate name)
Known = dict[str, tuple[tuple[int, int, int, int], str, str]]


class Sources(NamedTuple):
    markdown: dict[str, tuple[str, str, str]]  # content-relative path -> (file, digest, generate name)
    assets: dict[str, Path]  # site-relative path -> file (content/ first, then static/)
    #: state rows of the Markdown files whose digest was taken now and whose stat is settled, and the
    #: recorded files that are gone (``State.put_sources``)
    rows: list[tuple[str, int, int, int, int, str, str]]
    gone: list[str]
    #: the languages the fenced blocks of the Markdown files read now name (file -> ``FENCE_LANG``'s
    #: finds), for ``warm_highlighting``: a cold build read each file once, not twice
    fences: dict[str, list[bytes]]
    #: the ``layout:`` lines of the front matters of the Markdown files read now (content-relative
    #: path -> layout), for ``pages.likely_layouts``
    layouts: dict[str, str]
    tagged: bool  # one of those front matters has ``tags:`` (the site has tag pages, likely)


class Source(NamedTuple):
    """One Markdown file to render, with everything the renderer needs (sent to a worker)."""

    key: str
    rel: str
    file: str
    base_path: str
    generated: str  # the text of its ``generate:`` reference, '' when it has none


def scan(site_dir: Path, known: Known | None = None) -> Sources:
    """The sources; ``known``: what the state recorded of the Markdown files (``State.sources``)."""
    content = site_dir / "content"
    if not content.is_dir():
        raise BuildError(f"no content/ folder in {site_dir}", hint="put the Markdown pages in content/")
    known = known or {}
    settled = time.time_ns() - SETTLED_NS
    md_sources: dict[str, tuple[str, str, str]] = {}
    rows: list[tuple[str, int, int, int, int, str, str]] = []
    fences: dict[str, list[bytes]] = {}
    layouts: dict[str, str] = {}
    tagged = False
    assets: dict[str, Path] = {}
    top = str(content)
    inside = os.path.realpath(site_dir) + os.sep
    for folder in ("content", "static", "data", "templates"):  # every folder the build reads whole
        _inside_folder(str(site_dir / folder), inside)
    for root, dirs, files in os.walk(top):
        dirs[:] = _subfolders(root, dirs)
        prefix = root[len(top) + 1 :] + "/" if len(root) > len(top) else ""
        names = sorted(name for name in files if not name.startswith("."))
        # the folder's names checked at once ('/' is in no name and not refused): each name only in a
        # folder where one is refused or one is not ASCII (``_check_name``'s UTF-8 check: a name's
        # bytes that are no UTF-8 match no refused character), there in order (a search and a call a
        # file fewer)
        joined = prefix + "/".join(names)
        suspect = not joined.isascii() or _BAD_NAME.search(joined) is not None
        for name in names:
            full = f"{root}/{name}"  # (os.walk's root has no trailing '/': os.path.join's result)
            if suspect:
                _check_name(prefix + name, full)
            if name.endswith(".md"):
                st = os.lstat(full)
                if stat_mod.S_ISLNK(st.st_mode):
                    st = _linked(full, inside)
                if not stat_mod.S_ISREG(st.st_mode):
                    raise not_regular(full)
                check_size(full, st.st_size)
                stat = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                got = known.get(full)
                if got is not None and got[0] == stat:
                    md_sources[prefix + name] = (full, got[1], got[2])  # a str: a Path each costs
                    continue
                raw = _read_source(full, st.st_size)
                head = _front(raw)
                digest, gen = hashlib.sha256(raw).hexdigest(), _generate(head)
                layout = LAYOUT_RE.search(head)
                if layout:
                    layouts[prefix + name] = layout.group(1).decode("ascii", "replace")
                tagged = tagged or TAGS_RE.search(head) is not None
                fences[full] = FENCE_LANG.findall(b"\n" + raw)
                md_sources[prefix + name] = (full, digest, gen)
                if max(st.st_mtime_ns, st.st_ctime_ns) < settled and len(raw) == st.st_size:
                    rows.append((full, *stat, digest, gen))
            else:
                if os.path.islink(full):
                    _linked(full, inside)
                assets[prefix + name] = Path(full)
    static = site_dir / "static"
    if static.is_dir():
        for root, dirs, files in os.walk(static):
            dirs[:] = _subfolders(root, dirs)
            for name in sorted(files):
                if not name.startswith("."):
                    p = Path(root) / name
                    rel = p.relative_to(static).as_posix()
                    _check_name(rel, str(p))
                    if os.path.islink(p):
                        _linked(str(p), inside)
                    if rel in assets:
                        raise BuildError(
                            f"{rel} is both {assets[rel]} and {p}: one output, two files",
                            where=str(p),
                            hint="remove one of them",
                        )
                    assets[rel] = p
    seen = {path for path, _d, _g in md_sources.values()}
    return Sources(md_sources, assets, rows, sorted(set(known) - seen), fences, layouts, tagged)


#: what a source's path (content- or static-relative) must not hold: a page's path is its file name
_BAD_NAME = re.compile(f"[{BAD_PATH_CHARS}]")


def _check_name(rel: str, full: str) -> None:
    # (``isascii``: the common case, one C pass); a name of bytes that are no UTF-8: every hash of it
    # was a traceback
    if not rel.isascii() and not is_utf8(rel):
        raise BuildError(
            f"the file name {rel!r} is not UTF-8",
            where=full.encode("unicode_escape").decode("ascii"),
            hint="rename the file: the bytes of its name are not UTF-8 text",
        )
    bad = _BAD_NAME.search(rel)
    if bad is not None:
        raise BuildError(
            f"the file name {rel!r} holds {bad.group()!r}, which cannot be part of a URL",
            where=full.encode("unicode_escape").decode("ascii"),  # one line, whatever the name holds
            hint="rename the file (no control, bidi or line-separator characters, none of '\"<>\\?#')",
        )


#: how ``scan`` opens a source: never blocking (a FIFO or device named ``*.md`` is refused, not waited
#: on for ever), not inherited by the render workers' children
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _read_source(full: str, size: int, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``full`` (``size``: its stat's; all of them, also if it grew
    since, or more than ``limit`` of them, which says it is too large). os.open/os.read, not
    ``open()``: the buffered file object's set-up was a third of reading a page (~5 of ~15 CPU-ms for
    1,000 pages), which a build reads for every source whose stat it does not trust (a cold build, the
    first rebuild after one of a fresh checkout)."""
    try:
        fd = os.open(full, _OPEN_FLAGS)
    except OSError as e:
        raise BuildError(
            f"cannot read a page source: {e.strerror}", where=full, hint="check the file"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):  # replaced since the scan's stat
            raise not_regular(full)
        if limit is not None:  # the file's own size, not the limit: a buffer of the limit's size
            size = min(st.st_size, limit)  # (1 MiB) was allocated for every rendered page
        raw = os.read(fd, size + 1)
        if len(raw) != size:  # it grew (the rest too, as a reader of the whole file would have it),
            rest = [raw]  # or a short read (a network file system): on to the end
            total = len(raw)
            while (limit is None or total <= limit) and (chunk := os.read(fd, 1 << 20)):
                rest.append(chunk)
                total += len(chunk)
            raw = b"".join(rest)
        return raw
    finally:
        os.close(fd)


def not_regular(full: str) -> BuildError:
    """A FIFO, a device or a socket where the build reads a source or a static file (``filedigest``):
    opening or reading one would wait for ever (a FIFO with no writer) or never end (``/dev/zero``)."""
    return BuildError(
        "not a regular file (a FIFO, a device or a socket): the build reads only files",
        where=full,
        hint="remove it, or put the file it stands for in its place",
    )


def _subfolders(root: str, dirs: list[str]) -> list[str]:
    """The folders ``os.walk`` goes into next, in order (not hidden ones). A symbolic link to a folder
    is refused: ``os.walk`` does not follow it, so its pages were left out without a word (a link to it
    then 'does not exist'), and following it could leave the site or loop."""
    for d in dirs:
        full = f"{root}/{d}"
        if not d.startswith(".") and os.path.islink(full):
            raise BuildError(
                f"a symbolic link to the folder {os.path.realpath(full)}: the build does not follow it",
                where=full,
                hint="move or copy the folder here instead of linking to it",
            )
    return sorted(d for d in dirs if not d.startswith("."))


def _linked(full: str, inside: str) -> os.stat_result:
    """The stat of the file a symbolic link in content/ or static/ points to, which must be inside the
    site folder (``inside``: its real path and a separator): a link elsewhere would publish that file
    (``/etc/passwd``, a key) with the site."""
    real = os.path.realpath(full)
    if not real.startswith(inside):
        raise BuildError(
            f"a symbolic link to {real}, outside the site folder",
            where=full,
            hint="copy the file into the site instead of linking to it",
        )
    try:
        return os.stat(real)
    except OSError as e:
        raise BuildError(
            f"a symbolic link to {real}, which cannot be read: {e.strerror}",
            where=full,
            hint="fix or remove the link",
        ) from None


def _inside_folder(top: str, inside: str) -> None:
    """A folder the build reads whole (content/, static/, data/, templates/) must be inside the site
    folder: ``os.walk`` follows a link at its top, so ``content -> ~/.ssh`` would publish the keys."""
    real = os.path.realpath(top)
    if not os.path.isdir(real):
        return
    if not (real + os.sep).startswith(inside):
        raise BuildError(
            f"{os.path.basename(top)}/ is a symbolic link to {real}, outside the site folder",
            where=top,
            hint="move the folder into the site instead of linking to it",
        )


def _front(raw: bytes) -> bytes:
    """A source's front matter, roughly (b'' without one)."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a BOM (``page_text`` drops it too)
    if not raw.startswith(b"---"):
        return b""
    return raw[: raw.find(b"\n---", 3) + 1] if b"\n---" in raw else raw


def _generate(head: bytes) -> str:
    """The ``generate: NAME`` of a source's front matter ('' without one)."""
    m = GENERATE_RE.search(head)  # a regex, not YAML: cheap, and the name is part of the key
    return m.group(1).decode() if m else ""


def _generated(file: str, name: str, generators: Generators, cache: dict[str, str]) -> str:
    """The reference text a page asks for with ``generate: NAME`` in its front matter."""
    if not name:
        return ""
    if name not in generators:
        raise BuildError(
            f"unknown generator '{name}'",
            where=Location(file=file, key="generate"),
            hint="this build knows: "
            + ", ".join(sorted(generators))
            + " (the command reference 'cli' comes with cernvm_build.cli.reference.GENERATORS)",
        )
    if name not in cache:
        cache[name] = generators[name]()
    return cache[name]


def plan_sources(sources: Sources, base_path: str, generators: Generators) -> dict[str, Source]:
    """Every Markdown source with its key."""
    key_of = sha_after(render_version(), base_path)  # a key: sha(version, base_path, rel, digest, gen)
    generated: dict[str, str] = {}
    out: dict[str, Source] = {}
    for rel, (path, digest, name) in sources.markdown.items():
        gen = _generated(path, name, generators, generated)
        key = key_of(rel, digest, gen)
        out[rel] = Source(key, rel, path, base_path, gen)
    return out


_VERSION: list[str] = []

#: the modules whose code shapes a source's rendered HTML or the search text kept with it: the three
#: renderers and their tree walker, and ``model`` (the permalink anchor, ``HEADING_ROLES``); the
#: highlighter's code comes with ``markdown.code_salt`` (the rendered HTML holds the blocks); the front
#: matter's rules come with ``frontmatter.LOADER_VERSION`` (an unchanged page is checked again)
RENDERER = ("markdown.py", "mdbudget.py", "mdfast.py", "mdhtml.py", "mdtree.py", "model.py")


def render_version() -> str:
    # The renderer's own code is part of every cache key: changing it re-renders everything.
    if not _VERSION:
        code = [code_sha(name) for name in RENDERER]
        _VERSION.append(
            sha(md_mod.VERSION, BUILD_VERSION, md_mod.code_salt(), str(frontmatter.LOADER_VERSION), *code)
        )
    return _VERSION[0]


#: a Markdown source's size limit: the worst page (one paragraph of emphasis or strikethrough) takes
#: ~230x its size in memory while rendered (in each worker of ``--jobs``) and ~5 CPU-s a MiB, so 1 MiB
#: (4 MiB took 33 s and 957 MB; audit17b finding 4); docs/ARCHITECTURE.md and the site guide say it
MAX_PAGE_BYTES = 1024 * 1024
#: a lone CR (old Mac line ends): a line end for Markdown, not for the front matter's ``---`` lines
_LONE_CR = re.compile(r"\r(?!\n)")


def check_size(file: str, size: int) -> None:
    """A source over ``MAX_PAGE_BYTES`` is one line (at the scan, before it is read; again where it is
    rendered, in case it grew)."""
    if size > MAX_PAGE_BYTES:
        raise BuildError(
            f"page is {size:,} bytes, over the limit of {MAX_PAGE_BYTES:,}",
            where=file,
            hint="split it into several pages (rendering one can take ~250x its size in memory)",
        )


def page_text(data: bytes) -> str:
    """A source's text: UTF-8 with its byte-order mark dropped (it would hide the front matter's first
    ``---``), lone CRs made line ends as Markdown reads them."""
    text = data.decode("utf-8-sig")
    return _LONE_CR.sub("\n", text) if "\r" in text else text


def _render_source(
    known: tuple[Mapping[str, str], Mapping[str, bytes]], src: Source
) -> tuple[str, Any, str, dict[str, str], ContentText | None, list[str]] | tuple[str, tuple[str, str, str]]:
    """Worker: front matter + Markdown of one source; ``known``: the code blocks highlighted and the
    front matters parsed by earlier builds. Returns (key, meta, html, code blocks highlighted now, what
    the search index reads of the html, warnings: ``frontmatter.misspelt``) or (key, error)."""
    known_code, known_fm = known
    # here, not at the top: a build that renders nothing (a no-change rebuild) does not load the
    # Rust parser's extension (~10 ms of its start-up); ``md_mod.render`` imports it anyway
    from . import mdbudget, mdtree

    try:
        data = _read_source(src.file, MAX_PAGE_BYTES, MAX_PAGE_BYTES)  # (a FIFO since the scan?)
        check_size(src.file, len(data))
        text = page_text(data)
        raw, body, first_line = frontmatter.split_raw(text, src.file)
        memo = frontmatter.Memo(known_fm)
        fm = frontmatter.parse(raw, src.file, first_line=2, memo=memo) if raw is not None else {}
        # the key of the text YAML parsed, made once there; none for a front matter read without YAML
        # (``frontmatter.parse``'s plain form: read again for less than its key's sha256)
        fm_key = next(iter(memo.now), "")
        warnings = frontmatter.misspelt(fm, raw, src.file, 2) if raw is not None else []
        if fm.get("generate") and not src.generated:
            raise BuildError(
                f"unknown generator {fm['generate']!r}",
                where=Location(file=src.file, key="generate"),
                hint="write 'generate: NAME' with a plain name",
            )
        if src.generated:
            body = body.rstrip("\n") + "\n\n" + src.generated
        r = md_mod.render(
            body, src_path=src.rel, first_line=first_line, base_path=src.base_path, known_code=known_code
        )
    except mdtree.TooDeep as e:
        hint = "nest lists and quotes fewer levels deep (each list is two levels: list and item)"
        return src.key, (str(e), f"{src.file}:{first_line + e.line}", hint)
    except mdbudget.TooCostly as e:
        return src.key, (str(e), f"{src.file}:{first_line + e.line}", e.hint)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        where = f"{src.file}:{line}"
        return src.key, (f"not UTF-8 text (byte {e.start})", where, "save the file as UTF-8")
    except CernVMError as e:
        # exceptions do not cross the process boundary with their fields: send the parts
        return src.key, (e.message, str(e.where) if e.where else "", e.hint or "")
    meta = {
        "fm": fm,
        "fm_key": fm_key,  # its text's, so the next edit of the page finds it parsed (``render_markdown``)
        "h1": r.h1,
        "toc": r.toc,
        "ids": r.ids,
        "links": [(x.target, x.line, x.kind) for x in r.links],
        "excerpt_html": r.excerpt_html,
        "summary": r.excerpt_text[:200],  # the page's description unless its front matter has one
        "code": sorted(r.code),
    }
    return src.key, meta, r.html, {k: v for k, v in r.code.items() if k not in known_code}, r.search, warnings


def warm_highlighting(
    todo: list[Source],
    fences: Mapping[str, list[bytes]] | None = None,
    jobs: int = 1,
    meanwhile: Callable[[], object] | None = None,
) -> bool:
    """Make the lexers of the languages the sources' fenced blocks name, before the render workers
    fork: each worker would otherwise import and compile them again (~0.15 CPU-s for Python, bash and
    YAML, most of it Pygments compiling the Python lexer's rules); those of ``MANY_BLOCKS`` blocks or
    more with their states joined at once. ``fences``: the languages of the files ``scan`` read
    (``Sources.fences``); the others are read here. ``jobs``: more than one, the lexers are made by
    two processes, this one doing ``meanwhile`` first (``markdown.warm_lexers``); returns whether it
    did."""
    found: Counter[bytes] = Counter()
    fences = fences or {}
    for src in todo:
        got = fences.get(src.file)
        if got is not None:
            found.update(got)
            continue
        try:
            with open_regular(Path(src.file)) as f:
                found.update(FENCE_LANG.findall(b"\n" + f.read()))
        except OSError:  # (NotRegularFile too)
            continue  # the worker reports it
    blocks: Counter[str] = Counter()
    for name, n in found.items():
        blocks[name.decode("ascii", "replace").lower()] += n
    langs = sorted(blocks)[:32]
    samples = _samples(todo, fences, {lang for lang in langs if blocks[lang] >= MANY_BLOCKS})
    order = lexers_order(langs, blocks)
    return md_mod.warm_lexers(
        [(lang, blocks[lang] >= MANY_BLOCKS, samples.get(lang, ())) for lang in order], jobs, meanwhile
    )


def lexers_order(langs: Iterable[str], blocks: Mapping[str, int]) -> list[str]:
    """``langs``, the costliest first: those of ``MANY_BLOCKS`` blocks or more (their states joined, a
    sample lexed), each group by ``LEXER_COST``. The forked lexers' step hands them out in this order,
    the first to the forked process while the builder does its own work first: by name, the builder
    got Python (the costliest, ~0.1 CPU-s) after that work while the forked process made bash and YAML,
    and that process then waited ~60 ms for it (sp34b)."""
    return sorted(
        langs,
        key=lambda lang: (blocks[lang] < MANY_BLOCKS, -LEXER_COST.get(lang, LEXER_COST_DEFAULT), lang),
    )


def _samples(todo: list[Source], fences: Mapping[str, list[bytes]], langs: set[str]) -> dict[str, list[str]]:
    """A block of each of ``langs`` (the first the sources hold), for ``warm_highlighting`` to lex
    before the workers fork: each worker would otherwise compile the lexer states and alternations
    the language's code meets again (~0.1 CPU-s for the prose corpus's 18 languages), and lexes
    the block no more (``markdown._highlighted`` keeps it). Reads only files that name a language
    still wanted (``fences``: the scan's finds; a file it did not read is read for them)."""
    got: dict[str, list[str]] = {}
    for src in todo:
        if len(got) == len(langs):
            break
        named = fences.get(src.file)
        if named is not None and not any(
            n.decode("ascii", "replace").lower() in langs.difference(got) for n in named
        ):
            continue
        try:
            with open_regular(Path(src.file)) as f:
                data = f.read()
        except OSError:  # (NotRegularFile too)
            continue  # the worker reports it
        for lang, code in fence_blocks(data):
            if lang in langs and lang not in got:
                try:
                    got[lang] = [code.decode("utf-8")]
                except UnicodeDecodeError:
                    continue
    return got


def fence_blocks(data: bytes) -> Iterator[tuple[str, bytes]]:
    """The unindented fenced blocks of a Markdown file: (language as ``markdown.Code`` reads it, text).
    Linear: each opening's closer is searched for once and the scan goes on after it; an unclosed
    fence ends the scan (it swallows the rest, in CommonMark as in markdown-it, whose input has its
    CRLFs made LFs, as here). A block read other than the renderer does only misses a sample."""
    data = b"\n" + data.replace(b"\r\n", b"\n")
    pos = 0
    while (m := FENCE_OPEN.search(data, pos)) is not None:
        fence, info = m.group(1), m.group(2)
        if fence[:1] == b"`" and b"`" in info:  # not a fence: a backtick fence's info has none
            pos = m.end() - 1
            continue
        close = re.compile(rb"\n {0,3}" + re.escape(fence) + re.escape(fence[:1]) + rb"*[ \t]*(?=\n|\Z)")
        c = close.search(data, m.end() - 1)
        if c is None:
            return
        words = info.decode("utf-8", "replace").strip().split()
        yield (words[0].lower() if words else ""), data[m.end() : c.start() + 1]
        pos = c.end()


def render_markdown(
    planned: dict[str, Source],
    metas: dict[str, Any],
    state: State,
    jobs: int,
    reporter: Reporter,
    earlier: Collection[str] = (),
    meanwhile: Callable[[], object] | None = None,
    fences: Mapping[str, list[bytes]] | None = None,
    warn: Callable[[str], object] | None = None,
    rendering: Callable[[], object] | None = None,
) -> tuple[dict[str, str | None], dict[str, ContentText], Callable[[], None]]:
    """Render the sources whose key is not cached (``metas`` gains them), with the code blocks earlier
    builds highlighted and the front matters of ``earlier`` (keys of former versions of the sources,
    in ``metas``) parsed. Returns {key: html, or None where it was kept in the state at once (past
    ``HELD_MAX``)}, {key: what the search index reads of it} (where the Markdown stage could tell,
    ``mdhtml``; none of those kept at once) and what keeps the rest in the state (once, however often
    called): the builder calls it while the pages are written (serial work the other processes do not
    wait for), or when a step before that fails. ``meanwhile``: the builder's work done here while the
    workers render, when there is anything to render (``parallel.fork_map``), or beside the lexers'
    forked process (``warm_highlighting``); ``rendering``: the builder's work done while the workers
    render, after ``meanwhile``, never beside the lexers' process (there this one's share was the longer:
    the templates' warm-up made it ~0.1 CPU-s longer than the forked one's at 1,000 pages, serial time
    the other core did not overlap); ``fences``: ``Sources.fences`` (``warm_highlighting``); ``warn``:
    given the warnings of the sources rendered now (a misspelt front matter key), said once, when the
    source is rendered."""
    todo = sorted((s for s in planned.values() if s.key not in metas), key=lambda s: (s.key, s.rel))
    fresh: dict[str, str | None] = {}
    texts: dict[str, ContentText] = {}
    if not todo:
        return fresh, texts, nothing
    errors: list[tuple[str, str, str]] = []
    rows: list[tuple[str, Any, str]] = []
    total = len(todo)
    reporter.progress("markdown", 0, total)
    known_code = state.code()
    known_fm = {
        m["fm_key"]: pickle.dumps(m["fm"], protocol=pickle.HIGHEST_PROTOCOL)
        for m in (metas.get(k) for k in earlier)
        if m and m.get("fm_key")
    }
    new_code: dict[str, str] = {}
    # the lexers' (and templates') patterns compiled by an earlier build on this Python: made from
    # their code, not compiled again (``recache``)
    patterns = recache.Patterns(state.memo(recache.MEMO))
    held = 0

    def keep(run: list[Any]) -> list[Any]:
        # each run's results as they are made or arrive: past ``HELD_MAX`` kept in the state at once and
        # dropped (their HTML and search text), so what the render step holds is bounded
        nonlocal held
        spilled = []
        for n, res in enumerate(run):
            if len(res) == 6:
                key, meta, html, code, text, warned = res
                held += len(html) + (_text_size(text) if text is not None else 0)
                if held > HELD_MAX:
                    spilled.append((key, meta, html))
                    run[n] = (key, meta, None, code, None, warned)
        if spilled:
            state.put_md(spilled)
        return run

    try:
        with recache.kept(patterns):
            # (with one job too: the lexers of many blocks joined at once); made by two processes,
            # this one does ``meanwhile`` there instead
            if total >= PARALLEL_MIN and warm_highlighting(todo, fences, jobs, meanwhile):
                meanwhile = None
            if rendering is not None:
                meanwhile = rendering if meanwhile is None else both(meanwhile, rendering)
            results = fork_map(
                _render_source, (known_code, known_fm), todo, jobs, meanwhile=meanwhile, keep=keep
            )
    finally:
        known_code.close()
    for n, res in enumerate(results, 1):
        if len(res) == 2:
            errors.append(res[1])
            continue
        key, meta, html, code, text, warned = res  # type: ignore[misc]
        if warn is not None:
            for w in warned:
                warn(w)
        if text is not None:
            texts[key] = text
        new_code.update(code)
        metas[key] = meta
        fresh[key] = html
        if html is not None:  # (else kept in the state by ``keep``)
            rows.append((key, meta, html))
        if n % 50 == 0 or n == total:
            reporter.progress("markdown", n, total)
    if errors:
        message, where, hint = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BuildError(message + more, where=where or None, hint=hint or None)
    stored: list[bool] = []

    def store() -> None:
        if not stored:
            stored.append(True)
            state.put_md(rows)
            state.put_code(new_code)
            if (entries := patterns.entries()) is not None:
                state.put_memo(recache.MEMO, entries)

    return fresh, texts, store


def _text_size(text: ContentText) -> int:
    return len(text.lead) + len(text.title) + sum(len(h) + len(t) for _i, h, t in text.sections)


def nothing() -> None:
    """A ``meanwhile``/store step with nothing to do."""
