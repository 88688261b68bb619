"""``site.ntuple.NamedTuple``: typing's class syntax, made as ``typing.NamedTuple`` makes it (without its
per-field checks, which cost every build's import ~3 ms)."""

from __future__ import annotations

import importlib
import pickle
import typing
from pathlib import Path

import pytest

from cernvm_build.site import ntuple
from cernvm_build.site.ntuple import NamedTuple


class Point(NamedTuple):
    """A point."""

    x: int
    y: str = "b"
    z: tuple[int, ...] = ()

    def total(self) -> str:
        return f"{self.x}{self.y}"


class TypingPoint(typing.NamedTuple):
    """A point."""

    x: int
    y: str = "b"
    z: tuple[int, ...] = ()

    def total(self) -> str:
        return f"{self.x}{self.y}"


def test_a_class_is_what_typing_makes() -> None:
    p = Point(1)
    assert p == (1, "b", ()) and p.total() == "1b" and p._replace(y="c") == (1, "c", ())
    assert Point._fields == TypingPoint._fields and Point._field_defaults == TypingPoint._field_defaults
    assert Point.__bases__ == TypingPoint.__bases__ == (tuple,)
    assert (Point.__doc__, Point.__module__, Point.__qualname__) == ("A point.", __name__, "Point")
    assert Point.__annotations__ == {"x": "int", "y": "str", "z": "tuple[int, ...]"}
    assert pickle.loads(pickle.dumps(Point(2, "q"))) == Point(2, "q")
    assert repr(Point(1)) == repr(TypingPoint(1)).replace("TypingPoint", "Point")
    with pytest.raises(TypeError, match="cannot follow default"):

        class Bad(NamedTuple):
            a: int = 1
            b: int

    with pytest.raises(AttributeError, match="_replace"):

        class Worse(NamedTuple):
            a: int

            def _replace(self) -> None: ...


def test_the_builder_makes_its_named_tuples_here() -> None:
    """Every NamedTuple class of the builder's modules is made by ``ntuple`` (``typing``'s keeps each
    annotation as a ForwardRef, ours the string as written)."""
    site = Path(ntuple.__file__).parent
    found = 0
    for path in sorted(site.glob("*.py")):
        module = importlib.import_module(f"cernvm_build.site.{path.stem}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, tuple) and hasattr(value, "_fields"):
                if value.__module__ != module.__name__:
                    continue
                found += 1
                assert all(isinstance(a, str) for a in value.__annotations__.values()), value
    assert found >= 20
