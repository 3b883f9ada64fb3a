"""The project's version, reported by health endpoints (matches pyproject.toml)."""

__version__ = "0.1.0"
