"""JSON request bodies with a nesting limit: a deep document is bad input (400), never
a RecursionError deep inside a validator or the parser (500).

``loads(data)`` is ``json.loads`` that raises ``ValueError`` (which every body
parser already maps to 400) for a document nested more than ``MAX_NESTING``
levels, checked without recursion, and for one too deep for the parser itself.
"""

from __future__ import annotations

import json
from typing import Any

MAX_NESTING = 64  # a report (the deepest body we send) nests about 8 levels


def depth(value: Any) -> int:
    """How deep lists and objects nest in ``value`` (a scalar: 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def loads(data: str | bytes, max_nesting: int = MAX_NESTING, **kwargs: Any) -> Any:
    """``json.loads`` with a nesting limit (``ValueError`` past it)."""
    try:
        value = json.loads(data, **kwargs)
    except RecursionError:
        raise ValueError(f"nested more than {max_nesting} levels deep") from None
    if depth(value) > max_nesting:
        raise ValueError(f"nested more than {max_nesting} levels deep")
    return value
