"""One plain-text table layout for every CLI view, drawn by ``rich``.

The tables are read by people and by scripts and tests (``grep``, ``awk``),
so they are plain whatever the output: no box, no colour, no markup read
from the cells (a key like ``[::1]`` stays as it is), never wrapped (a long
cell widens its column; ``measure watch`` cuts the lines to the terminal).
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

NO_WRAP_WIDTH = 100_000  # the console is this wide: a table is never wrapped


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def render_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Left-aligned columns separated by two spaces; numbers (and gaps among them,
    shown as '-') right-aligned."""
    table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False,
                  header_style="", highlight=False)
    for i, header in enumerate(headers):
        numeric = any(_is_number(r[i]) for r in rows) and all(
            _is_number(r[i]) or r[i] is None for r in rows)
        table.add_column(Text(str(header)), justify="right" if numeric else "left",
                         no_wrap=True)
    for row in rows:  # a tab is spaced out here: rich would measure it as one cell
        table.add_row(*(Text("-" if v is None else str(v).expandtabs()) for v in row))
    out = io.StringIO()
    Console(file=out, width=NO_WRAP_WIDTH, force_terminal=False, color_system=None,
            highlight=False, markup=False, emoji=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip("\n").split("\n"))
