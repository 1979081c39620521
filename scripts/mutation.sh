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
#   MUTATION_SAMPLE    run a deterministic sample: only the mutants whose number ends in one of these digits
#                      (e.g. 05: a fifth of them); the rest are counted as "not run". Default: all.
#   MUTATION_REPORT    1: run nothing, print the table of the results kept in MUTATION_DIR
#   MUTATION_ONLY      mutant-name globs to run instead (space separated), e.g. 'monitor.domain.alerts.x_raise_alerts__mutmut_*'
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

# module -> files to mutate | its own tests | how mutmut starts each mutant's tests | pytest -m | pytest -k.
# "fork" forks from the process that ran the clean tests (fast: imports and the health calibration are
# already done); "forkserver" starts each from a fresh process, for tests that are not fork-safe: apprise's
# notifier threads (alerts) and the JVM of a SparkSession (metrics). Health leaves out its seven
# end-to-end and Monte Carlo tests of 45 s or more each (8 minutes of its 10 on this box): every mutant
# would pay them; the faster tests pin the same functions at their boundaries.
# Metrics: the functions of the pandas path and the code it shares with the Spark one (input checks,
# labels, _finish: the sanity flags, Wilson bounds and row shape), against the non-Spark tests, which
# include a plain-Python and an sklearn reference. class_metrics_spark and _spark_input are left out:
# a mutant there needs a SparkSession per mutant (a JVM start: minutes on a busy 2-core box), and
# mutmut 3 mutates code inside functions only, so the SQL text (module constants) is never mutated.
METRICS_FUNCTIONS='evaluation.metrics.x__pandas_input__mutmut_* evaluation.metrics.x__label_list__mutmut_* evaluation.metrics.x__finish__mutmut_* evaluation.metrics.x__float_or_none__mutmut_* evaluation.metrics.x_class_metrics_pandas__mutmut_*'
SLOW_HEALTH='not (test_compute_health_uses_per_class_targets or test_a_new_class_leaves_stored_verdicts or test_recovery_run_length_matches_monte_carlo or test_calibrated_threshold_is_the_smallest or test_compute_health_moves_from_insufficient or test_a_settings_change_applies_from_its_day or test_a_class_with_none_right_is_flagged_on_its_first_day)'
spec() {
    case "$1" in
        health)   echo "monitor/domain/health/calibration.py monitor/domain/health/detector.py monitor/domain/health/judge.py monitor/domain/health/policy.py monitor/orchestration/health_stage.py|tests/domain/test_health.py tests/orchestration/test_calibration_cache.py|fork||$SLOW_HEALTH" ;;
        sampling) echo 'monitor/domain/sampling.py|tests/domain/test_sampling.py|fork||' ;;
        alerts)   echo 'monitor/domain/alerts.py|tests/domain/test_alerts.py|forkserver||' ;;
        compare)  echo 'monitor/domain/compare.py|tests/domain/test_compare.py|fork|not spark|' ;;
        store)    echo 'monitor/store/base.py monitor/store/common.py monitor/store/mongo.py monitor/store/embedded_store.py monitor/store/embedded.py|tests/store/test_store.py tests/store/test_hardening_store.py|fork||' ;;
        indexing) echo 'monitor/domain/indexing.py|tests/domain/test_indexing.py|fork|not gcs|' ;;
        metrics)  echo "evaluation/metrics.py|tests/evaluation/test_metrics.py|fork|not spark||$METRICS_FUNCTIONS" ;;
        *) echo "unknown module '$1' (known: health sampling alerts compare store indexing metrics)" >&2; return 1 ;;
    esac
}

REPORTS=()
for module in "${MODULES[@]}"; do
    IFS='|' read -r files tests isolation marks keywords functions <<<"$(spec "$module")"
    dir="$WORK/$module"
    if [ "${MUTATION_REPORT:-}" = 1 ]; then
        [ ! -d "$dir/mutants" ] || (cd "$dir" && "$MUTMUT" results --all true >"$dir/results.txt" 2>/dev/null) || true
        REPORTS+=("$module=$dir/results.txt"); continue
    fi
    mkdir -p "$dir"
    # A scratch copy of the tracked files (the mutants/ folder of an earlier run is kept: mutmut reuses it).
    git ls-files -z | (cd "$ROOT" && xargs -0 tar -cf - ) | tar -xf - -C "$dir"
    MODULE_FILES="$files" MODULE_TESTS="$tests" MODULE_ISOLATION="$isolation" MODULE_MARKS="$marks" MODULE_KEYWORDS="$keywords" "$PY" - "$dir/pyproject.toml" <<'EOF'
import json, os, re, sys
path = sys.argv[1]
text = re.sub(r"\n\[tool\.mutmut\].*?(?=\n\[|\Z)", "", open(path).read(), flags=re.S)
files = os.environ["MODULE_FILES"].split()
args = os.environ["MODULE_TESTS"].split()
args += ["-m", os.environ["MODULE_MARKS"]] if os.environ["MODULE_MARKS"] else []
args += ["-k", os.environ["MODULE_KEYWORDS"]] if os.environ["MODULE_KEYWORDS"] else []
text += "\n[tool.mutmut]\n"
text += 'source_paths = ["monitor", "evaluation", "dashboards"]\n'
text += f"only_mutate = {json.dumps(files)}\n"
text += f"pytest_add_cli_args_test_selection = {json.dumps(args)}\n"
text += 'pytest_add_cli_args = ["-q", "-x"]\n'
text += 'also_copy = ["model_artifacts", "benchmarks", "scripts", "dags", "docs", "README.md"]\n'
text += f'process_isolation = "{os.environ["MODULE_ISOLATION"]}"\n'
# a fresh process re-imports torch/pyspark and recalibrates: its fixed cost is part of every mutant's time
text += f'timeout_constant = {60.0 if os.environ["MODULE_ISOLATION"] == "forkserver" else 5.0}\n'
text += "timeout_multiplier = 3.0\n"
text += "use_git_change_detection = false\n"
open(path, "w").write(text)
EOF
    only=${MUTATION_ONLY:-}
    if [ -z "$only" ] && [ -n "${functions:-}" ]; then
        only=$functions
        [ -z "${MUTATION_SAMPLE:-}" ] || only=$(echo "$functions" | sed "s/__mutmut_\*/__mutmut_*[${MUTATION_SAMPLE}]/g")
    fi
    [ -z "${MUTATION_SAMPLE:-}" ] || [ -n "$only" ] || only="*__mutmut_*[${MUTATION_SAMPLE}]"
    read -ra patterns <<<"$only"
    echo "== $module: mutating $files, running $tests${marks:+ -m '$marks'}${keywords:+ -k (${#keywords} chars)} (bound ${SECONDS_PER_MODULE}s, $CHILDREN processes${only:+, only $only})"
    # The copy must import its own (mutated) sources, never an editable install of another checkout.
    # shellcheck disable=SC2086
    (cd "$dir" && PYTHONPATH= timeout --signal=INT --kill-after=60 "$SECONDS_PER_MODULE" \
        "$MUTMUT" run --max-children "$CHILDREN" "${patterns[@]}" >"$dir/mutmut.log" 2>&1) || echo "   (mutmut stopped: exit $?, see $dir/mutmut.log)"
    (cd "$dir" && "$MUTMUT" results --all true >"$dir/results.txt" 2>>"$dir/mutmut.log") || true
    REPORTS+=("$module=$dir/results.txt")
done
"$PY" scripts/mutation_report.py --equivalent scripts/mutation-equivalent.txt "${REPORTS[@]}"
