#!/usr/bin/env bash
# The project's virtualenv, without root and without apt: create .venv (or
# $MEASURE_VENV) if missing and install the requirements and the project,
# only when requirements*.txt, constraints.txt or pyproject.toml changed
# since the last install. On a machine where scripts/install.sh never ran,
# packages that compile C (NetfilterQueue) need their Debian headers first.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MEASURE_VENV:-$ROOT/.venv}
PY=${MEASURE_PYTHON:-python3}

log() { printf '[install] %s\n' "$*"; }

# Rebuilt only when what it is built from changes.
stamp_src=$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" \
  "$ROOT/constraints.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
stamp_file=$VENV/.measure-install-stamp
if [ -x "$VENV/bin/python" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_src" ]; then
  log "venv: $VENV up to date"
else
  log "venv: creating/updating $VENV"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  export PIP_CONSTRAINT=$ROOT/constraints.txt
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  "$VENV/bin/pip" install -q -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt"
  "$VENV/bin/pip" install -q --no-deps -e "$ROOT"
  echo "$stamp_src" > "$stamp_file"
fi

