"""``NamedTuple`` for the builder's modules: ``typing.NamedTuple``'s class syntax and type, made without its
per-field type checks.

``class Page(NamedTuple): ...`` with ``typing``'s made each field's annotation (a string, under
``from __future__ import annotations``) a ``ForwardRef`` twice, compiling the string each time: ~0.15 ms
a class, ~3 ms of the ~30 CPU-ms the builder's ~20 classes took to import in every ``site build``
(measured: 28.6 vs 32.0 CPU-ms, median of 8 alternated imports of the CLI and the builder). Here a class
is ``collections.namedtuple`` of the annotated fields, their defaults, and the class body's methods and
docstring, as ``typing`` makes it; its ``__annotations__`` keep the strings as written. Type checkers
see ``typing.NamedTuple`` itself. Not supported (and unused): the functional form, generic named tuples.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    #: what a class body may not define (``typing``'s list: namedtuple's own attributes)
    _PROHIBITED = frozenset(
        {
            "__new__",
            "__init__",
            "__slots__",
            "__getnewargs__",
            "_fields",
            "_field_defaults",
            "_make",
            "_replace",
            "_asdict",
            "_source",
        }
    )
    #: what the class body holds that is not copied onto the tuple type
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})

    class _Maker(type):
        def __new__(cls, typename: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
            fields = dict(ns.get("__annotations__", {}))
            defaults = []
            for name in fields:
                if name in ns:
                    defaults.append(ns[name])
                elif defaults:
                    raise TypeError(
                        f"Non-default namedtuple field {name} cannot follow default field"
                        f"{'s' if len(defaults) > 1 else ''} " + ", ".join(n for n in fields if n in ns)
                    )
            made = collections.namedtuple(typename, fields, defaults=defaults, module=ns["__module__"])
            made.__annotations__ = made.__new__.__annotations__ = fields
            for key, value in ns.items():
                if key in _PROHIBITED:
                    raise AttributeError("Cannot overwrite NamedTuple attribute " + key)
                if key not in _SPECIAL and key not in made._fields:
                    setattr(made, key, value)
            return made

    _Base = type.__new__(_Maker, "NamedTuple", (), {})

    def NamedTuple(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("only the class form of NamedTuple is supported here (cernvm_build.site.ntuple)")

    NamedTuple.__mro_entries__ = lambda bases: (_Base,)
