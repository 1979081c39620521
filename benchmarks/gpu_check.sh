#!/usr/bin/env bash
# The GPU run, in one command on a CUDA host, from the repository root of a fresh checkout
# (scripts/setup.sh run before or not):
#
#   1. set up .venv if it is not (scripts/setup.sh, SKIP_APT=1) and make sure its torch is a CUDA
#      build that sees the GPU, with the matching torchvision for nvjpeg decoding (installs them if not);
#   2. equivalence: the shipped model (model_artifacts/digits-resnet) predicts the held-out digits
#      through the production predict_images on the CPU and on CUDA (tensor path, nvjpeg, bf16 and
#      fp32): the same label for every image, every class probability within the tolerance;
#   3. benchmark: a ResNet-50-shaped ResNetForImageClassification (random weights, 1,000 labels),
#      bf16 autocast, batch sizes 64 and 256: images/s model only and end to end from JPEG bytes in
#      memory (benchmarks/bench_predict.py; the shipped digits model alongside);
#   4. one JSON summary on stdout (and in --out FILE); progress and tables on stderr.
#
# Steps 2 and 3 together stay under --budget-s (480 s: 8 minutes); installing comes before and is
# timed apart (a CUDA torch is a download of a few GB).
#
# Usage: bash benchmarks/gpu_check.sh [options]
#   --dry-run          say what would run and exit 0; installs and runs nothing
#   --out FILE         also write the JSON summary to FILE
#   --python PY        use this interpreter as it is (one that already holds CUDA torch, transformers,
#                      pandas, pyarrow, scikit-learn): no set-up, nothing installed
#   --no-install       use .venv as it is: fail (exit 3) rather than install anything
#   --quick            fewer images and repeats (about a minute of checks)
#   --batch-sizes N,N  benchmark batch sizes (default 64,256)
#   --images N         images per benchmark measurement (default 4096; --quick 1024)
#   --budget-s S       time for steps 2 and 3 together (default 480)
# Environment: GPU_TORCH_SPEC (default "torch==2.14.1 torchvision==0.29.1": the CUDA wheels on
# PyPI for Linux x86_64; pip's own PIP_INDEX_URL / PIP_EXTRA_INDEX_URL choose another index),
# TORCH_SPEC and EXTRAS (passed to scripts/setup.sh; defaults the first of GPU_TORCH_SPEC, and "test"),
# GPU_CHECK_NO_GPU=1 (act as if no GPU were there: the tests use it).
# Exit status: 0 every check passed; 1 a check failed (predictions differ, a step crashed or ran
# out of time); 2 no CUDA device (nothing installed, nothing measured); 3 set-up failed or torch
# cannot use the GPU; 64 a bad option.
set -euo pipefail
CALLER_DIR=$PWD
cd "$(dirname "$0")/.."

DRY_RUN=0 QUICK=0 NO_INSTALL=0 OUT_FILE="" PY="" BATCH_SIZES=64,256 IMAGES="" BUDGET_S=480
GPU_TORCH_SPEC=${GPU_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}

usage() { sed -n '/^# Usage:/,/64 a bad option/p' "$0" | sed 's/^# \{0,1\}//'; }
bad() { echo "gpu_check: $*" >&2; echo "run: bash benchmarks/gpu_check.sh --help" >&2; exit 64; }
while (($#)); do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --quick) QUICK=1 ;;
    --no-install) NO_INSTALL=1 ;;
    --out) [[ $# -ge 2 ]] || bad "--out needs a file"; OUT_FILE=$2; shift ;;
    --python) [[ $# -ge 2 ]] || bad "--python needs an interpreter"; PY=$2; shift ;;
    --batch-sizes) [[ ${2:-} =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || bad "--batch-sizes wants N,N (got '${2:-}')"; BATCH_SIZES=$2; shift ;;
    --images) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || bad "--images wants a positive integer (got '${2:-}')"; IMAGES=$2; shift ;;
    --budget-s) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || bad "--budget-s wants seconds (got '${2:-}')"; BUDGET_S=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) bad "unknown option '$1'" ;;
  esac
  shift
done
# Paths given relative to where the script was called from (it runs from the repository root).
[[ -n $OUT_FILE && $OUT_FILE != /* ]] && OUT_FILE=$CALLER_DIR/$OUT_FILE
[[ $PY == */* && $PY != /* ]] && PY=$CALLER_DIR/$PY
IMAGES=${IMAGES:-$( ((QUICK)) && echo 1024 || echo 4096)}
REPEATS=$( ((QUICK)) && echo 2 || echo 3)

log() { printf '[gpu_check] %s\n' "$*" >&2; }

# --- is there a CUDA device? (nothing is installed before this answer) -------------------------
GPU_NAME=""
if [[ "${GPU_CHECK_NO_GPU:-0}" != 1 ]]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    # nvidia-smi prints "No devices were found" (and fails) where the driver sees none.
    GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null) || GPU_NAME=""
    GPU_NAME=$(head -n1 <<<"$GPU_NAME")
    [[ $GPU_NAME == "No devices"* ]] && GPU_NAME=""
  fi
  if [[ -z $GPU_NAME ]] && compgen -G '/dev/nvidia[0-9]*' >/dev/null; then
    GPU_NAME="an NVIDIA device (/dev/nvidia0; no nvidia-smi)"
  fi
fi
PLAN="equivalence of CPU and CUDA predictions on model_artifacts/digits-resnet, then ResNet-50 (1000 labels, random weights) bf16 at batch sizes $BATCH_SIZES, $IMAGES images, in under ${BUDGET_S}s"
if ((DRY_RUN)); then
  if [[ -n $PY ]]; then how="with $PY as it is"; elif ((NO_INSTALL)); then how="with .venv as it is"; else how="after setting up .venv with CUDA torch ($GPU_TORCH_SPEC) where needed"; fi
  echo "gpu_check: dry run, nothing installed or run: ${GPU_NAME:-no CUDA device} here; would run $how: $PLAN"
  exit 0
fi
if [[ -z $GPU_NAME ]]; then
  echo "gpu_check: no CUDA device (nvidia-smi lists no GPU, no /dev/nvidia0): nothing installed, nothing measured; the GPU figures stay 'not measured'" >&2
  exit 2
fi
log "GPU: $GPU_NAME"

# --- set-up ---------------------------------------------------------------------------------------
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
install_start=$SECONDS
NEEDED="import torch, transformers, sklearn, pandas, pyarrow, PIL, safetensors; import evaluation.predict, monitor.domain.digits"
missing_note() { "$PY" -c "$NEEDED" 2>&1 | tail -n1; }
if [[ -n $PY ]]; then
  command -v "$PY" >/dev/null || { echo "gpu_check: --python $PY: no such interpreter" >&2; exit 3; }
  "$PY" -c "$NEEDED" 2>/dev/null || { echo "gpu_check: $PY lacks what the checks import: $(missing_note)" >&2; exit 3; }
else
  PY=.venv/bin/python
  if ! [[ -x $PY ]] || ! "$PY" -c "$NEEDED" 2>/dev/null; then
    ((NO_INSTALL)) && { echo "gpu_check: .venv is not set up ($( [[ -x $PY ]] && missing_note || echo 'no .venv')) and --no-install was given" >&2; exit 3; }
    log "setting up .venv: scripts/setup.sh (SKIP_APT=1)"
    read -r first_spec _ <<<"$GPU_TORCH_SPEC"
    SKIP_APT=1 TORCH_SPEC=${TORCH_SPEC:-$first_spec} EXTRAS=${EXTRAS:-test} bash scripts/setup.sh >&2 || { echo "gpu_check: scripts/setup.sh failed" >&2; exit 3; }
  fi
fi
export PYTHONUNBUFFERED=1
PIP=("$PY" -m pip --disable-pip-version-check -q)

torch_build() { "$PY" -c 'import torch; print(torch.__version__.split("+")[0], torch.version.cuda or "cpu")' 2>/dev/null; }
read -r TORCH_VERSION TORCH_CUDA <<<"$(torch_build)"
if [[ $TORCH_CUDA == cpu ]]; then
  ((NO_INSTALL)) && { echo "gpu_check: torch $TORCH_VERSION in $PY is a CPU build and --no-install was given" >&2; exit 3; }
  [[ $PY == .venv/bin/python ]] || { echo "gpu_check: torch $TORCH_VERSION in $PY is a CPU build" >&2; exit 3; }
  log "torch $TORCH_VERSION is a CPU build: replacing it with $GPU_TORCH_SPEC"
  "${PIP[@]}" uninstall -y torch torchvision >&2 || true
  # shellcheck disable=SC2086  # the spec is a list of requirements
  "${PIP[@]}" install $GPU_TORCH_SPEC >&2 || { echo "gpu_check: pip install $GPU_TORCH_SPEC failed" >&2; exit 3; }
  read -r TORCH_VERSION TORCH_CUDA <<<"$(torch_build)"
fi
# torchvision gives nvjpeg decoding; without it (or with one that does not match torch) Pillow decodes
# and the summary says so ("decode": "pillow").
if [[ $TORCH_VERSION =~ ^2\.[0-9]+\. && $PY == .venv/bin/python ]] && ((!NO_INSTALL)) && ! "$PY" -c 'import torchvision.io' 2>/dev/null; then
  minor=${TORCH_VERSION#2.}; minor=${minor%%.*}
  log "installing torchvision 0.$((minor + 15)).* for torch $TORCH_VERSION (nvjpeg decoding)"
  "${PIP[@]}" install "torchvision==0.$((minor + 15)).*" "torch==$TORCH_VERSION" >&2 || log "warning: torchvision did not install: JPEGs will be decoded with Pillow"
fi
cuda_error=$("$PY" -c 'import torch; torch.zeros(1, device="cuda"); print("ok")' 2>&1 | tail -n1 || true)
if [[ $cuda_error != ok ]]; then
  # The usual cause: a torch built for a newer CUDA than the driver runs (PyPI's torch 2.14 is CUDA 13,
  # which needs driver 580 or newer): name a matching build in GPU_TORCH_SPEC and its index in PIP_INDEX_URL.
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 || true)
  echo "gpu_check: torch $TORCH_VERSION (CUDA ${TORCH_CUDA}) cannot use $GPU_NAME (driver ${driver:-unknown}): $cuda_error" >&2
  exit 3
fi
install_s=$((SECONDS - install_start))
log "torch $TORCH_VERSION, CUDA $TORCH_CUDA; set-up took ${install_s}s"

# --- the checks, within the budget --------------------------------------------------------------
checks_start=$SECONDS
run_step() {  # name limit_s command...: stdout to $WORK/name.json, stderr shown; sets step_rc
  local name=$1 limit=$2
  shift 2
  log "$name (at most ${limit}s): $*"
  local start=$SECONDS
  set +e
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.json"
  step_rc=$?
  set -e
  printf '%s %s %s\n' "$name" "$step_rc" "$((SECONDS - start))" >>"$WORK/steps"
  log "$name: exit $step_rc after $((SECONDS - start))s"
}
: >"$WORK/steps"
eq_limit=$((BUDGET_S / 4))
run_step equivalence "$eq_limit" "$PY" benchmarks/bench_predict.py --equivalence --device cuda --json --batch-size 64 --fetch-workers 8
left=$((BUDGET_S - (SECONDS - checks_start)))
if ((left < 30)); then
  log "benchmark skipped: only ${left}s of the budget left"
  printf 'benchmark skipped %s\n' 0 >>"$WORK/steps"
else
  run_step benchmark "$left" "$PY" benchmarks/bench_predict.py --device cuda --dtype bf16 --labels 1000 \
    --batch-sizes "$BATCH_SIZES" --images "$IMAGES" --repeats "$REPEATS" --fetch-workers 8 --json
fi
checks_s=$((SECONDS - checks_start))

# --- one JSON summary ---------------------------------------------------------------------------
GPU_INFO=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n1 || echo "$GPU_NAME")
set +e
"$PY" - "$WORK" "$OUT_FILE" "$GPU_INFO" "$install_s" "$checks_s" "$BUDGET_S" "$TORCH_VERSION" "$TORCH_CUDA" <<'PYTHON'
import datetime as dt
import json
import sys
from pathlib import Path

work, out_file, gpu, install_s, checks_s, budget_s, torch_version, torch_cuda = sys.argv[1:]
work = Path(work)
steps = {}
for line in (work / "steps").read_text().splitlines():
    name, rc, seconds = line.split()
    steps[name] = {"exit": rc if rc == "skipped" else int(rc), "seconds": int(seconds)}


def report(name):
    path = work / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


equivalence, benchmark = report("equivalence"), report("benchmark")
problems = []
for name, result in (("equivalence", equivalence), ("benchmark", benchmark)):
    step = steps.get(name, {"exit": "not run"})
    if step["exit"] in (124, 137):
        problems.append(f"{name} ran out of time")
    elif step["exit"] not in (0, 1) or result is None:
        problems.append(f"{name} did not finish (exit {step['exit']})")
if equivalence is not None and not equivalence.get("passed"):
    problems.append("CPU and CUDA predictions differ")
if int(checks_s) > int(budget_s):
    problems.append(f"checks took {checks_s}s, over the {budget_s}s budget")
headline = {}  # the ResNet's figures by batch size: what the README's GPU row quotes
for r in (benchmark or {}).get("results", []):
    if r["model"].startswith("ResNet"):
        headline[f"batch_{r['batch_size']}"] = {
            "model": r["model"], "labels": r["labels"], "model_only_img_s": round(r["model_only"], 1),
            "end_to_end_img_s": round(r["end_to_end"], 1), "ratio": round(r["ratio"], 3), "path": r["path"],
            "decode": r["decode"], "dtype": r["dtype"], "images": r["images"],
        }
summary = {
    "gpu_check": {
        "date": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC", "gpu": gpu,
        "torch": (benchmark or equivalence or {}).get("torch", torch_version), "cuda": (benchmark or equivalence or {}).get("cuda", torch_cuda),
        "torchvision": (benchmark or equivalence or {}).get("torchvision"),
        "install_s": int(install_s), "checks_s": int(checks_s), "budget_s": int(budget_s), "steps": steps,
        "passed": not problems, "problems": problems,
    },
    "headline": headline,
    "equivalence": equivalence,
    "benchmark": benchmark,
}
text = json.dumps(summary, indent=2)
print(text)
if out_file:
    Path(out_file).write_text(text + "\n")
verdict = "passed" if not problems else "FAILED: " + "; ".join(problems)
print(f"[gpu_check] {verdict} (checks {checks_s}s of {budget_s}s, set-up {install_s}s)", file=sys.stderr)
for key, row in headline.items():
    print(f"[gpu_check] {row['model']}, {row['dtype']}, {key.replace('_', ' ')}: model only {row['model_only_img_s']:,.0f} img/s, "
          f"end to end {row['end_to_end_img_s']:,.0f} img/s ({row['path']} path, {row['decode']}; ratio {row['ratio']:.2f})", file=sys.stderr)
sys.exit(0 if not problems else 1)
PYTHON
status=$?
exit $(( status == 0 ? 0 : 1 ))
