"""Small assertions that also narrow types for the type checker."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def some(value: T | None) -> T:
    """``value``, asserting it is not None (a lookup a test expects to succeed)."""
    assert value is not None, "expected a value, got None"
    return value
