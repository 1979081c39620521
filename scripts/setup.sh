#!/usr/bin/env bash
# Sets up everything the project needs on a fresh Debian machine: system packages (Chromium for
# the browser tests and screenshots, PostgreSQL and Redis for the multi-host Airflow test), a virtual
# environment at .venv with every Python package, and the project itself (editable, so `.venv/bin/monitor`
# runs this checkout).
# Idempotent: a second run installs nothing new. Environment knobs:
#   PYTHON=python3.11    interpreter for the venv
#   TORCH_SPEC=...       torch requirement (default torch==2.13.0; on a GPU host e.g. a CUDA build of the same version)
#   SKIP_APT=1           do not install Debian packages (no root, or no browser/PostgreSQL/Redis wanted)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-test,airflow}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# Chromium for the browser tests; PostgreSQL and Redis for the multi-host Airflow test (tests/dags/test_multihost.py
# starts them itself, on loopback: the services Debian starts with them are not used).
APT_PACKAGES=(chromium chromium-driver postgresql redis-server)
have_apt_packages() {
  command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v redis-server >/dev/null \
    && compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
if [[ "${SKIP_APT:-0}" != 1 ]] && ! have_apt_packages; then
  if [[ $(id -u) == 0 ]]; then
    log "installing Debian packages: ${APT_PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
  elif command -v sudo >/dev/null; then
    log "installing Debian packages with sudo: ${APT_PACKAGES[*]}"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
  else
    log "warning: ${APT_PACKAGES[*]} not all installed and no root: browser and multi-host Airflow tests will fail (set SKIP_APT=1 to silence)"
  fi
fi

if ! command -v java >/dev/null; then
  log "warning: no java on PATH; Spark needs Java 17 (apt-get install openjdk-17-jre-headless)"
fi

if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

# torch first and pinned: a bare "torch" requirement would pull a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  log "installing $TORCH_SPEC"
  "${PIP[@]}" install "$TORCH_SPEC" 2> >(grep -v "is ignored" >&2)
fi

stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${EXTRAS//,/_}
if [[ ! -f $stamp ]]; then
  log "installing the project and its dependencies ([$EXTRAS])"
  "${PIP[@]}" install -e ".[$EXTRAS]" 2> >(grep -v "is ignored" >&2)
  rm -f .venv/.installed-* && touch "$stamp"
fi

if [[ ! -f model_artifacts/digits-resnet/model.safetensors ]]; then
  log "training the shipped digits model (a few seconds)"
  .venv/bin/python model_artifacts/train_digits.py
fi
# The embedded default's image source (held-out digits in data/source), unless one is configured.
if [[ -z "${MONITOR_SOURCE_URI:-}" && ! -d "${MONITOR_DATA_DIR:-data}/source" ]]; then
  log "building the demo image source (held-out digits) in ${MONITOR_DATA_DIR:-data}/source"
  .venv/bin/monitor demo --source-only
fi
log "ready: .venv/bin/monitor --help"
