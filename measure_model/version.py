"""The one version string of the service (pyproject.toml reads it), and what "compatible" means.

Agents and the controller exchange it when an agent registers. Versions
are ``MAJOR.MINOR.PATCH``; two parts interoperate when their MAJOR.MINOR
differ by at most one minor release (an upgrade rolls agents and the
controller one minor version at a time), and refuse each other otherwise
with a message naming both versions.
"""

from __future__ import annotations

__version__ = "0.2.0"


def _major_minor(version: str) -> tuple[int, int]:
    parts = version.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        raise ValueError(f"version {version!r} is not MAJOR.MINOR[.PATCH]")
    return int(parts[0]), int(parts[1])


def compatible(mine: str, theirs: str) -> bool:
    """True when ``theirs`` may talk to ``mine`` (same major, minor within one)."""
    (a_major, a_minor), (b_major, b_minor) = _major_minor(mine), _major_minor(theirs)
    return a_major == b_major and abs(a_minor - b_minor) <= 1


def incompatibility(mine: str, theirs: str, who: str) -> str | None:
    """None when compatible, else a message naming both versions."""
    try:
        ok = compatible(mine, theirs)
    except ValueError as exc:
        return f"{who}: {exc}"
    if ok:
        return None
    return (f"{who} runs version {theirs}, this side runs {mine}: versions must share the "
            "major number and differ by at most one minor release; upgrade one side")
