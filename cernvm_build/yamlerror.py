"""What a YAML syntax error says and where, read the same way for every YAML file the toolkit loads.

PyYAML spreads this over optional attributes (``problem``/``context`` and their marks, 0-based),
and only its marked errors carry a position; each loader used to read them its own way.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from .errors import Location


@dataclass(frozen=True)
class YamlProblem:
    what: str
    line: int | None  # 1-based, in the file (not in the YAML text, which may start later)
    column: int | None  # 1-based

    def location(self, file: str) -> Location:
        return Location(file=file, line=self.line, column=self.column)


def describe(e: yaml.YAMLError, first_line: int = 1) -> YamlProblem:
    """The problem and its place; ``first_line`` is the file line the YAML text starts on."""
    problem = getattr(e, "problem", None)
    context = getattr(e, "context", None)
    what = f"{problem} ({context})" if problem and context else problem or context
    if not what:
        what = (str(e).splitlines() or ["invalid YAML"])[0]
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    if mark is None:
        return YamlProblem(what, None, None)
    return YamlProblem(what, first_line + mark.line, mark.column + 1)
