"""What markdown-it-py may spend on one page: pages past it are refused in one line, before the
costly part of their parse.

markdown-it-py's parse is linear but slow on some constructs, and a page is at most
``sources.MAX_PAGE_BYTES`` (1 MiB). Measured on 1 MiB pages (CPU-s): a paragraph of ``[`` ending in
one ``]`` 22 (the link rule's label walk, ~20 cached ``skipToken`` steps per ``[`` up to where the
nesting limit cut the last one short), of ``[a`` 7.8, of ``*a`` or ``_a`` 8.5 (emphasis), of ``<``,
``&`` or backticks ~3 (a token's worth of rules per character); a table of 100,000 rows 7.7 (4.8 of
them in the block parse), nine-level lists 4.3. Each is paid by a few kinds of work, counted here:

- ``MAX_COSTLY``: link brackets and emphasis marks (``[ ] * _ ~``) in the page's inline text, ~21 µs
  each at worst (~1.7 CPU-s). The shipped pages have at most a few hundred; a dense real page (a link
  and an emphasis on every line of a MiB) stays under it.
- ``MAX_MARKS``: characters that end a run of text for the inline parser (``text`` rule's
  terminators: punctuation that may start Markdown, line ends), a few µs each (~1 CPU-s). Prose has
  at most ~7 % of its characters so (73,000 in a MiB).
- ``MAX_LINES``: lines, each looked at by the block rules (a quote of 262,000 one-word lines: 3.7
  CPU-s in the block parse alone, ~14 µs a line). Prose has ~15,000 in a MiB.
- ``MAX_BLOCKS``: block tokens (paragraphs, list items, table cells and rows: ~9 µs each with their
  inline parse), counted as they are made, so a huge table stops at its first 200,000 (~1 CPU-s;
  nine-level lists ~2.5). Prose makes one per ~60 bytes (17,000 in a MiB); a generated reference
  table of 5,000 rows and 6 columns with code spans (which send it to this parser) ~100,000: taken.
  (100,000 refused that table: the review rv31b; the price is a second more for a hostile page.)

Only markdown-it-py's parse is held to it: the Rust parser (``mdtree``, ``mdfast``) takes no page
over 512 KiB nor a block with many delimiters, and is fast on what it takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.rules_core import StateCore
    from markdown_it.token import Token

MAX_COSTLY = 80_000
MAX_MARKS = 200_000
MAX_BLOCKS = 200_000
MAX_LINES = 100_000
_COSTLY = "[]*_~"
_HINT = "split the page, or put such text in a code block (``` fences), which is not parsed"
_LINES_HINT = "split the page over several pages (the lines of its code blocks count too)"


class TooCostly(Exception):
    """A page over the budget; ``line``: 0-based in the text, ``hint``: what to do."""

    def __init__(self, line: int, what: str, hint: str = _HINT):
        super().__init__(f"too costly to render: {what}")
        self.line = line
        self.hint = hint


def hold_to_budget(md: MarkdownIt) -> None:
    """Hold ``md``'s parses to the budget: its block parser counts the tokens it makes, and a core
    rule counts the inline marks before the inline parse begins."""
    from markdown_it.rules_block import StateBlock

    class Counted(StateBlock):
        def __init__(self, src: str, md: MarkdownIt, env: Any, tokens: list[Token]) -> None:
            super().__init__(src, md, env, tokens)
            if self.lineMax > MAX_LINES:
                # (the code block the default hint names counts too: its lines are the page's)
                raise TooCostly(MAX_LINES, f"more than {MAX_LINES:,} lines", _LINES_HINT)

        def push(self, ttype: str, tag: str, nesting: Any) -> Token:
            if len(self.tokens) >= MAX_BLOCKS:
                raise TooCostly(
                    self.line,
                    f"more than {MAX_BLOCKS:,} blocks (paragraphs, list items, table cells) up to here",
                    "split the table or list over several pages",
                )
            return super().push(ttype, tag, nesting)

    block = md.block

    def parse(src: str, md: MarkdownIt, env: Any, out: list[Token]) -> list[Token] | None:
        if not src:
            return None
        state = Counted(src, md, env, out)
        block.tokenize(state, state.line, state.lineMax)
        return state.tokens

    block.parse = parse  # type: ignore[method-assign,assignment]  # (this parser's own ParserBlock only)
    md.core.ruler.before("inline", "budget", _count_marks)


def _count_marks(state: StateCore) -> None:
    """A core rule: the inline text's marks, before the inline parse (``TooCostly`` past the budget)."""
    marks = state.md.inline.terminator_re
    costly = every = 0
    for tok in state.tokens:
        if tok.type != "inline":
            continue
        text = tok.content
        costly += sum(map(text.count, _COSTLY))
        every += len(text) - len(marks.sub("", text))
        line = tok.map[0] if tok.map else 0
        if costly > MAX_COSTLY:
            raise TooCostly(
                line, f"more than {MAX_COSTLY:,} link brackets and emphasis marks ([ ] * _ ~) up to here"
            )
        if every > MAX_MARKS:
            raise TooCostly(line, f"more than {MAX_MARKS:,} punctuation marks in its text up to here")
