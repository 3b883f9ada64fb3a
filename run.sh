#!/usr/bin/env bash
# The two entry points of the project. Both install what they need first
# (scripts/install.sh is idempotent) and must run as root.
#   ./run.sh demo   Mininet tree network + controller + agents answering a task
#   ./run.sh test   ruff, the type checker (mypy, modules listed in pyproject.toml),
#                   then every test tier (unit, netns, mininet)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"
"$ROOT/scripts/install.sh"
PY=$ROOT/.venv/bin/python
case "${1:-}" in
  demo)
    shift
    exec "$PY" -m topo.demo "$@"
    ;;
  test)
    shift
    "$ROOT/.venv/bin/ruff" check .
    "$PY" -m mypy
    exec "$PY" -m pytest "$@"
    ;;
  *)
    echo "usage: $0 demo|test [args]" >&2
    exit 2
    ;;
esac
