#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: unit tests and the tests against real
# local servers (GCS emulator, Spark, Airflow on SQLite, headless Chromium). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest "$@"
