"""The jinja2 sandbox profiles are rendered in, with limits on what one profile's templates may cost.

jinja2's own sandbox stops templates from reaching Python internals, but not from asking for a
3-gigabyte string (``'x'.center(3000000000)``), a loop of 10^10 iterations or an exponential macro.
A profile value never needs more than a few hundred characters, so the limits are far from real use:

- every value a template makes (an operator, a call, a filter, an output) is at most ``MAX_SIZE``
  characters or items, checked *before* the work where the size can be known in advance (widths,
  repeat counts, joins, replacements, format specs), after it otherwise;
- one profile's templates take at most ``MAX_STEPS`` steps (loop iterations, calls, filters), and the
  values they read and make add up to at most ``MAX_WORK`` characters or items.

Breaking a limit raises ``TemplateLimitError``; the caller turns it into a one-line ``ProfileError``.
The budget is per ``budget()`` block (one profile's rendering); outside one, only the size checks apply.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter

MAX_SIZE = 100_000  # characters or items of any value a template makes
MAX_STEPS = 50_000  # loop iterations, calls and filters of one profile's templates
MAX_WORK = 5_000_000  # characters or items read and made by them

#: printf specs (``%-10.3f``, ``%*d``): the width and precision decide the result's size
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


class TemplateLimitError(SecurityError):
    """A template asked for more than the limits allow."""


@dataclass
class _Budget:
    steps: int = 0
    work: int = 0


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


@contextlib.contextmanager
def budget() -> Iterator[None]:
    """One profile's rendering: steps and work are counted from zero inside."""
    token = _BUDGET.set(_Budget())
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _step() -> None:
    b = _BUDGET.get()
    if b is not None:
        b.steps += 1
        if b.steps > MAX_STEPS:
            raise TemplateLimitError(f"more than {MAX_STEPS} steps (loop iterations, calls, filters)")


def _spend(amount: int) -> None:
    b = _BUDGET.get()
    if b is not None:
        b.work += amount
        if b.work > MAX_WORK:
            raise TemplateLimitError(f"more than {MAX_WORK} characters or items read and made")


def weight(value: Any, limit: int = MAX_WORK) -> int:
    """Characters and items in ``value``, counted through nested lists and mappings (stops past
    ``limit``, so counting costs no more than the value is allowed to be)."""
    total, stack = 0, [value]
    while stack and total <= limit:
        v = stack.pop()
        if isinstance(v, str | bytes):
            total += len(v) + 1
        elif isinstance(v, dict):
            total += len(v) + 1
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list | tuple | set | frozenset):
            total += len(v) + 1
            stack.extend(v)
        else:
            total += 1
    return total


def _allow(size: int, what: str) -> None:
    if size > MAX_SIZE:
        raise TemplateLimitError(f"{what} would have more than {MAX_SIZE} characters or items")


def _made(value: Any, what: str) -> Any:
    w = weight(value, MAX_SIZE)
    _allow(w, what)
    _spend(w)
    return value


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _check_printf(fmt: str, args: Any) -> None:
    values = args if isinstance(args, tuple) else (args,) if not isinstance(args, dict) else ()
    for m in _PRINTF.finditer(fmt):
        for n in m.groups():
            if n == "*":
                if any(abs(_int(a)) > MAX_SIZE for a in values):
                    raise TemplateLimitError(f"a '*' width in {fmt[:40]!r} is larger than {MAX_SIZE}")
            elif n is not None:
                _allow(int(n), f"the format {fmt[:40]!r}")


class _Formatter(SandboxedFormatter):
    """``str.format`` with each field's width and precision checked (after nested ``{}`` are filled)."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        for n in _DIGITS.findall(format_spec):
            _allow(int(n), f"the format spec {format_spec[:40]!r}")
        return super().format_field(value, format_spec)


def _joined_size(items: list[Any], sep: str) -> int:
    return sum(len(str(x)) for x in items) + len(sep) * max(len(items) - 1, 0)


def _replaced_size(s: str, old: str, new: str, count: Any = -1) -> int:
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * (len(new) - len(old))


def _str_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Check a call of a ``str`` method before it runs; returns the (possibly materialized) args."""
    s, name = obj.__self__, obj.__name__
    first = args[0] if args else next(iter(kwargs.values()), None)
    if name in ("center", "ljust", "rjust", "zfill"):
        _allow(max(len(s), _int(first)), f"str.{name}")
    elif name == "expandtabs":
        tab = _int(first) if args or kwargs else 8
        _allow(len(s) + s.count("\t") * tab, "str.expandtabs")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        _allow(_replaced_size(s, args[0], args[1], args[2] if len(args) > 2 else -1), "str.replace")
    elif name == "join" and args:
        items = list(args[0])
        _allow(_joined_size(items, s), "str.join")
        return (items, *args[1:])
    return args


def _filter_precheck(name: str, args: list[Any], kwargs: dict[str, Any], env: Any) -> None:
    """Check a built-in filter's size arguments before it runs (``args[0]`` is the filtered value)."""

    def arg(i: int, key: str, default: Any) -> Any:
        return args[i] if len(args) > i else kwargs.get(key, default)

    value = args[0] if args else None
    if name == "center":
        _allow(_int(arg(1, "width", 80)), "the center filter")
    elif name == "indent":
        width = arg(1, "width", 4)
        lines = str(value).count("\n") + 1
        _allow(lines * (len(width) if isinstance(width, str) else _int(width)) + len(str(value)), "indent")
    elif name == "format":
        _check_printf(str(value), tuple(args[1:]) or kwargs)
    elif name == "wordwrap":
        text, width = str(value), max(_int(arg(1, "width", 79)), 1)
        wrap = arg(3, "wrapstring", None) or env.newline_sequence
        _allow(len(text) + (len(text) // width + 1) * len(str(wrap)), "the wordwrap filter")
    elif name in ("batch", "slice"):
        _allow(_int(arg(1, "linecount" if name == "batch" else "slices", 0)), f"the {name} filter")
    elif name == "tojson":
        indent = arg(1, "indent", None)
        size = len(indent) if isinstance(indent, str) else _int(indent)
        if size > 16:
            raise TemplateLimitError("the tojson filter's indent is larger than 16")
    elif name == "replace" and len(args) >= 3:
        count = arg(3, "count", None)
        size = _replaced_size(str(value), str(args[1]), str(args[2]), -1 if count is None else count)
        _allow(size, "the replace filter")


def _checked_filter(name: str, func: Callable[..., Any], env: Any) -> Callable[..., Any]:
    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        _step()
        # filters marked pass_context/pass_eval_context/pass_environment get that first
        skip = 1 if args and getattr(func, "jinja_pass_arg", None) is not None else 0
        own = list(args[skip:])
        if name == "join" and own:
            own[0] = list(own[0])
            sep = own[1] if len(own) > 1 else kwargs.get("d", "")
            attribute = own[2] if len(own) > 2 else kwargs.get("attribute")
            if attribute is None:
                _allow(_joined_size(own[0], str(sep)), "the join filter")
        _filter_precheck(name, own, kwargs, env)
        _spend(weight(own, MAX_SIZE))
        return _made(func(*args[:skip], *own, **kwargs), f"the {name} filter")

    return run


class _Steps:
    """A loop's iterable, counting each iteration as a step."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self._it = iter(iterable)

    def __iter__(self) -> _Steps:
        return self

    def __next__(self) -> Any:
        item = next(self._it)
        _step()
        return item


class _CodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # ``a ~ b`` goes through the environment (jinja2 compiles it to a plain join otherwise)
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox with the limits above."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._finalize, **options)
        del self.globals["lipsum"]  # lorem ipsum of any length: nothing a profile needs
        self.filters = {name: _checked_filter(name, f, self) for name, f in self.filters.items()}
        self.filters["_steps"] = _Steps

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_steps", [], [], None, None, lineno=loop.lineno)
        return tree

    @staticmethod
    def _finalize(value: Any) -> Any:
        _spend(weight(value, MAX_SIZE))
        return value

    def concat(self, pieces: Iterable[str]) -> str:  # type: ignore[override]
        """The output of a template, a macro or a block, stopped as soon as it is too long."""
        out: list[str] = []
        size = 0
        for piece in pieces:
            size += len(piece)
            _allow(size, "the output")
            out.append(piece)
        return "".join(out)

    def checked_concat(self, values: Iterable[Any]) -> str:
        pieces = [str(v) for v in values]
        _allow(sum(map(len, pieces)), "'~'")
        joined = "".join(pieces)
        _spend(len(joined))
        return joined

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and ints and right > 0 and abs(left).bit_length() * right > MAX_SIZE:
            raise TemplateLimitError(f"{left} ** {right} is too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    _allow(weight(seq, MAX_SIZE) * n, "'*'")
        elif operator == "+" and not ints:
            _allow(weight(left, MAX_SIZE) + weight(right, MAX_SIZE), "'+'")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left, right)
        return _made(super().call_binop(context, operator, left, right), f"'{operator}'")

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _step()
        wrapped = getattr(__obj, "__wrapped__", None)
        target = wrapped if wrapped is not None else __obj
        if isinstance(getattr(target, "__self__", None), str | bytes):
            if target.__name__ in ("format", "format_map") and wrapped is not None:
                fmt = _Formatter(__self)
                f_self = target.__self__
                if target.__name__ == "format_map":
                    return _made(fmt.vformat(f_self, (), args[0] if args else {}), "str.format_map")
                return _made(fmt.vformat(f_self, args, kwargs), "str.format")
            args = _str_method(target, args, kwargs)
        _spend(weight(args, MAX_SIZE) + weight(kwargs, MAX_SIZE))
        return _made(super().call(__context, __obj, *args, **kwargs), "a call")


__all__ = ["MAX_SIZE", "MAX_STEPS", "MAX_WORK", "LimitedSandbox", "TemplateLimitError", "budget"]
