#!/usr/bin/env bash
# Idempotent installer for a fresh Debian 12 machine (run as root).
#   - apt packages (only the missing ones)
#   - a virtualenv in .venv with the project installed (skipped when the
#     requirement files and pyproject are unchanged since the last install)
#   - Open vSwitch started with the userspace datapath (no kernel module)
# Works without a pip wheel cache (PIP_NO_CACHE_DIR is honoured).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MEASURE_VENV:-$ROOT/.venv}
PY=${MEASURE_PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive

log() { printf '[install] %s\n' "$*"; }

APT_PACKAGES=(
  openvswitch-switch mininet libnetfilter-queue-dev iptables iproute2
  iputils-ping ethtool iperf iperf3 netcat-openbsd tcpdump hping3 sqlite3
  build-essential python3-dev python3-venv procps psmisc nfdump
  chromium chromium-driver prometheus postgresql bridge-utils
)

if [ "$(id -u)" != 0 ]; then
  echo "install.sh must run as root (it installs packages and starts Open vSwitch)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "apt: all ${#APT_PACKAGES[@]} packages present"
fi

# The virtualenv: rebuilt only when what it is built from changes.
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

# The elastic engine's compiled update (cffi, in place next to its sources;
# the numpy path is the fallback when it is missing). Rebuilt when its source changes.
elastic_src=$(sha256sum "$ROOT/measure_model/sketch/elastic_c.py" | cut -d' ' -f1)
elastic_stamp=$ROOT/measure_model/sketch/.elastic-build-stamp
if ls "$ROOT"/measure_model/sketch/_elastic_cffi*.so >/dev/null 2>&1 \
    && [ -f "$elastic_stamp" ] && [ "$(cat "$elastic_stamp")" = "$elastic_src" ]; then
  log "elastic: compiled update up to date"
else
  log "elastic: building the compiled update"
  (cd "$ROOT" && "$VENV/bin/python" -m measure_model.sketch.elastic_c >/dev/null)
  echo "$elastic_src" > "$elastic_stamp"
fi

# Open vSwitch, userspace datapath only (no kernel module on these machines).
if ovs-vsctl --timeout=3 show >/dev/null 2>&1; then
  log "ovs: running"
else
  log "ovs: starting"
  /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random --no-monitor \
    >/dev/null 2>&1 || true
  ovs-vsctl --timeout=10 show >/dev/null
fi
log "ready: $VENV"
