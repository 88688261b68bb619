"""numtext.decimal: the one rule for a decimal number in untrusted text."""

from __future__ import annotations

import pytest

from cernvm_build.numtext import decimal


@pytest.mark.parametrize(
    ("text", "want"),
    [("0", 0), ("42", 42), ("007", 7), ("9" * 18, int("9" * 18))],
)
def test_ascii_digits_are_read(text: str, want: int) -> None:
    assert decimal(text) == want


@pytest.mark.parametrize(
    "text", ["", "²", "٣", "1²", "-1", "+1", " 1", "1 ", "1e3", "0x10", "9" * 19, "9" * 5000]
)
def test_anything_else_is_none_never_a_value_error(text: str) -> None:
    assert decimal(text) is None


def test_the_bound_is_the_callers() -> None:
    assert decimal("65535", 5) == 65535
    assert decimal("655350", 5) is None
