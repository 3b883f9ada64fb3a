#!/usr/bin/env bash
# The two entry points of the project, and a developers' check.
#   ./run.sh demo   Mininet tree network + controller + agents answering a task
#   ./run.sh test   ruff, the type checker (mypy, every package listed in
#                   pyproject.toml), then every test tier (unit, netns, mininet)
# Both install what they need first (scripts/install.sh is idempotent) and
# must run as root.
#   ./run.sh check  ruff, mypy and the unit tier only: no root, no apt (it
#                   creates or updates the virtualenv with pip, scripts/venv.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"
VENV=${MEASURE_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
case "${1:-}" in
  demo)
    shift
    "$ROOT/scripts/install.sh"
    exec "$PY" -m topo.demo "$@"
    ;;
  test)
    shift
    "$ROOT/scripts/install.sh"
    "$VENV/bin/ruff" check .
    "$PY" -m mypy
    exec "$PY" -m pytest "$@"
    ;;
  check)
    shift
    "$ROOT/scripts/venv.sh"
    "$VENV/bin/ruff" check .
    "$PY" -m mypy
    exec "$PY" -m pytest -m unit "$@"
    ;;
  *)
    echo "usage: $0 demo|test|check [args]" >&2
    exit 2
    ;;
esac
