"""The systemd units shipped in ``contrib/systemd``, read as a test needs them.

``parse_unit`` reads ``Key=value`` lines; ``unit_command`` turns an
``Exec*=`` line into the argv a test runs, with the virtualenv and
systemd's directories substituted.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from testing.netns import ROOT

UNITS = Path(ROOT) / "contrib" / "systemd"


def parse_unit(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (every value of a repeated key, in order)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def unit_command(unit: dict[str, list[str]], key: str, dirs: dict[str, str]) -> list[str]:
    """An ``Exec*=`` line as argv, with the venv and systemd's directories substituted."""
    (line,) = unit[key]
    line = line.replace("/opt/endhost-measure/.venv/bin/", os.path.dirname(sys.executable) + "/")
    for var, path in dirs.items():
        line = line.replace(f"${{{var}}}", path)
    return shlex.split(line)
