#!/usr/bin/env bash
# Idempotent installer for a fresh Debian 12 machine (run as root).
#   - apt packages (only the missing ones)
#   - a virtualenv in .venv with the project installed (scripts/venv.sh:
#     skipped when the requirement files and pyproject are unchanged)
#   - the eBPF capture object (clang -O2 -target bpf) built from source when it is
#     missing or stale (a kernel without BTF/BPF only loses capture: ebpf)
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
  clang llvm libbpf-dev libbpf1 bpftool
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

# The virtualenv (scripts/venv.sh needs neither root nor apt).
MEASURE_VENV=$VENV MEASURE_PYTHON=$PY "$ROOT/scripts/venv.sh"

# The eBPF capture's object: never committed, built here from its source.
if (cd "$ROOT" && "$VENV/bin/python" -m host_agent.capture.ebpf check >/dev/null 2>&1); then
  log "ebpf: object up to date"
elif (cd "$ROOT" && "$VENV/bin/python" -m host_agent.capture.ebpf build); then
  log "ebpf: object built"
else
  log "ebpf: build failed; capture: ebpf will be refused (nfqueue and nflog still work)"
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
