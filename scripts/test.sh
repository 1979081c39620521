#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the tests on every core (pytest-xdist, one test file per worker at a time).
#
#   bash scripts/test.sh            the whole suite: unit tests and the tests against real local servers (GCS
#                                   emulator, Spark, Airflow on SQLite, headless Chromium, the CLI as a process);
#                                   the 25 slowest tests are listed at the end
#   bash scripts/test.sh --fast     the unit lane: every module, no server, JVM, browser or long simulation
#
# Other arguments go to pytest (a file, -k EXPR, -x ...). TEST_WORKERS=N sets the number of workers
# (default: one per core; TEST_WORKERS=0 runs in this process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONUNBUFFERED=1

lane=(--durations=25)
args=()
for arg in "$@"; do
  if [[ $arg == --fast ]]; then
    lane=(-m "not slow")
  else
    args+=("$arg")
  fi
done
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-auto}" --dist loadfile "${lane[@]}" "${args[@]}"
