#!/usr/bin/env bash
# Mutation score of the core modules (not part of CI, like the benchmarks): mutmut (pinned in the `dev`
# extra: `.venv/bin/pip install -e '.[dev]'`) mutates one module at a time, in a scratch copy of the
# tracked files, and runs only that module's own test file(s) against each mutant. Prints, per module:
# mutants, killed, survived, equivalent (reviewed, scripts/mutation-equivalent.txt), timeout, not run
# (the time bound ran out first) and score = killed / (mutants run - equivalent).
#
#   bash scripts/mutation.sh [MODULE ...]      # default: health sampling alerts store indexing metrics
#
# Settings (environment):
#   MUTATION_SECONDS   time bound per module, seconds (default 1200); mutants left are counted as "not run"
#   MUTATION_CHILDREN  parallel test processes (default 2: a 2-core box)
#   MUTATION_DIR       scratch directory (default: ${TMPDIR:-/tmp}/class-health-mutation); results are kept
#                      there, so a re-run with the same sources only tests what is new
#   MUTATION_ONLY      mutant-name globs to run instead of all of a module's mutants (space separated),
#                      e.g. 'monitor.alerts.x_raise_alerts__mutmut_*'
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
SECONDS_PER_MODULE=${MUTATION_SECONDS:-1200}
CHILDREN=${MUTATION_CHILDREN:-2}
WORK=${MUTATION_DIR:-${TMPDIR:-/tmp}/class-health-mutation}
MODULES=("$@")
[ ${#MODULES[@]} -gt 0 ] || MODULES=(health sampling alerts store indexing metrics)

"$PY" -c 'import mutmut' 2>/dev/null || { echo "mutmut is not installed: run .venv/bin/pip install -e '.[dev]'" >&2; exit 2; }
MUTMUT="$(dirname "$PY")/mutmut"
[ -x "$MUTMUT" ] || MUTMUT=mutmut

# module -> files to mutate | its own tests (pytest arguments)
spec() {
    case "$1" in
        health)   echo 'monitor/health.py|tests/test_health.py' ;;
        sampling) echo 'monitor/sampling.py|tests/test_sampling.py' ;;
        alerts)   echo 'monitor/alerts.py|tests/test_alerts.py' ;;
        store)    echo 'monitor/storage.py monitor/embedded.py|tests/test_store.py' ;;
        indexing) echo 'monitor/indexing.py|tests/test_indexing.py -m not_gcs' ;;
        metrics)  echo 'evaluation/metrics.py|tests/test_metrics.py' ;;
        *) echo "unknown module '$1' (known: health sampling alerts store indexing metrics)" >&2; return 1 ;;
    esac
}

REPORTS=()
for module in "${MODULES[@]}"; do
    IFS='|' read -r files tests <<<"$(spec "$module")"
    dir="$WORK/$module"
    mkdir -p "$dir"
    # A scratch copy of the tracked files (the mutants/ folder of an earlier run is kept: mutmut reuses it).
    git ls-files -z | (cd "$ROOT" && xargs -0 tar -cf - ) | tar -xf - -C "$dir"
    MODULE_FILES="$files" MODULE_TESTS="$tests" "$PY" - "$dir/pyproject.toml" <<'EOF'
import json, os, re, sys
path = sys.argv[1]
text = re.sub(r"\n\[tool\.mutmut\].*?(?=\n\[|\Z)", "", open(path).read(), flags=re.S)
files = os.environ["MODULE_FILES"].split()
tests = os.environ["MODULE_TESTS"].replace("not_gcs", "not gcs").split(" ", 1)
args = [tests[0]] + (["-m", tests[1].split(" ", 1)[1]] if len(tests) > 1 else [])
text += "\n[tool.mutmut]\n"
text += 'source_paths = ["monitor", "evaluation", "dashboards"]\n'
text += f"only_mutate = {json.dumps(files)}\n"
text += f"pytest_add_cli_args_test_selection = {json.dumps(args)}\n"
text += 'pytest_add_cli_args = ["-q", "-x"]\n'
text += 'also_copy = ["model_artifacts", "benchmarks", "scripts", "dags", "docs", "README.md"]\n'
text += 'process_isolation = "fork"\n'
text += "use_git_change_detection = false\ntimeout_constant = 5.0\n"
open(path, "w").write(text)
EOF
    echo "== $module: mutating $files, running $tests (bound ${SECONDS_PER_MODULE}s, $CHILDREN processes)"
    # The copy must import its own (mutated) sources, never an editable install of another checkout.
    # shellcheck disable=SC2086
    (cd "$dir" && PYTHONPATH= timeout --signal=INT --kill-after=60 "$SECONDS_PER_MODULE" \
        "$MUTMUT" run --max-children "$CHILDREN" ${MUTATION_ONLY:-} >"$dir/mutmut.log" 2>&1) || echo "   (mutmut stopped: exit $?, see $dir/mutmut.log)"
    (cd "$dir" && "$MUTMUT" results --all true >"$dir/results.txt" 2>>"$dir/mutmut.log") || true
    REPORTS+=("$module=$dir/results.txt")
done
"$PY" scripts/mutation_report.py --equivalent scripts/mutation-equivalent.txt "${REPORTS[@]}"
