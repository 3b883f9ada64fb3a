"""Loud failures by policy: a broad ``except`` says why it is broad.

ruff's BLE rules (pyproject.toml) make a broad ``except`` that neither
re-raises nor logs with its traceback carry ``# noqa: BLE001 - reason``.
This test adds what ruff cannot: every broad handler that does not re-raise
gives its reason on the ``except`` line (``# noqa: BLE001 - ...`` or
``# broad: ...``), so the next one has to justify itself too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TOPS = ("ryu_app", "host_agent", "measure_model", "measure_common", "measure_cli", "testing",
        "topo", "bench", "examples")
REASON = re.compile(r"#\s*(noqa: BLE001 - |broad: )\S")
BROAD = ("Exception", "BaseException")


def _broad(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return handler.type is None or any(isinstance(k, ast.Name) and k.id in BROAD
                                       for k in kinds)


def _reraises(handler: ast.ExceptHandler) -> bool:
    return any(isinstance(node, ast.Raise) for node in ast.walk(handler))


def unjustified(source: str) -> list[int]:
    """Lines of broad handlers in ``source`` that neither raise nor give a reason."""
    lines = source.splitlines()
    return [h.lineno for h in ast.walk(ast.parse(source))
            if isinstance(h, ast.ExceptHandler) and _broad(h) and not _reraises(h)
            and not REASON.search(lines[h.lineno - 1])]


def test_the_check_finds_a_silent_broad_except():
    silent = "try:\n    f()\nexcept Exception:\n    pass\n"
    assert unjustified(silent) == [3]
    assert unjustified("try:\n    f()\nexcept:\n    pass\n") == [3]
    assert unjustified(silent.replace("Exception:", "Exception:  # broad: keep serving")) == []
    assert unjustified(silent.replace("pass", "raise")) == []
    assert unjustified(silent.replace("Exception", "(OSError, Exception)")) == [3]
    assert unjustified(silent.replace("Exception", "OSError")) == []


def test_every_broad_except_says_why():
    found = []
    for top in TOPS:
        for path in sorted((ROOT / top).rglob("*.py")):
            found += [f"{path.relative_to(ROOT)}:{n}" for n in unjustified(path.read_text())]
    assert found == []
