#!/usr/bin/env bash
# One-command GPU check for a machine with an NVIDIA GPU, CuPy and numba-cuda. Finishes within
# 8 minutes.
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]     (default: $TINYNLM_RESULTS, else gpu-results/)
#
# Stages, each under its own `timeout` (SIGINT first, so pytest still writes its report and the
# benchmarks keep the JSON they rewrite as they go; SIGKILL 10 s later), none longer than what
# is left of the 8 minutes. A stage that fails or times out is recorded and the next one runs:
#   install           `pip install --no-deps -e .`, only if `import tinynlm` fails
#   gpu-kernel-tests  tests/kernels, the tests on a real GPU (-k "cuda and not simulator"; the
#                     CUDA-simulator test runs on the CPU and is left to the ordinary test run)
#   gpu-tests         the other tests with a cuda parameter or cuda/gpu in their name
#                     (the `device` fixture's "cuda" case, test_gpu_matches_cpu, ...)
#   attention         python3 -m benchmarks.attention --device cuda  -> attention.json
#   train             python3 -m benchmarks --suite train --device cuda,cpu (the training steps
#                     of a GPT and an LSTM LM on both, the scaled-up GPT on cuda; PyTorch too
#                     where it imports)                               -> train.json
#   ops-layers        python3 -m benchmarks --suite ops,layers --device cuda --quick
#                                                                     -> ops-layers.json
# Each stage's output goes to RESULTS_DIR/<stage>.log, its exit status and duration to
# RESULTS_DIR/stages.jsonl; the summary tables (python3 -m benchmarks.gpu_check summary) are
# printed last. Exit status: 0 when every stage passed, 1 when one failed, 2 without a GPU.

set -u

TOTAL_SECONDS=480      # the whole script
SUMMARY_SECONDS=30     # kept back for the summary at the end
KILL_GRACE_SECONDS=10  # after SIGINT, how long a stage gets before SIGKILL

RESULTS=${1:-${TINYNLM_RESULTS:-gpu-results}}
mkdir -p "$RESULTS" || { echo "gpu_check: cannot create the results directory $RESULTS" >&2; exit 2; }
RESULTS=$(cd "$RESULTS" && pwd)
cd "$(dirname "$0")/.." || exit 2
DEADLINE=$((SECONDS + TOTAL_SECONDS))
STAGES_FILE="$RESULTS/stages.jsonl"
: > "$STAGES_FILE"
FAILED_STAGES=0

record_stage() {  # name exit_code(or null) seconds limit reason
  printf '{"stage": "%s", "exit_code": %s, "seconds": %s, "limit_s": %s, "log": "%s", "reason": "%s"}\n' \
    "$1" "$2" "$3" "$4" "$1.log" "$5" >> "$STAGES_FILE"
}

# run_stage NAME BUDGET_SECONDS COMMAND...: run COMMAND under a timeout of BUDGET_SECONDS, or
# less if less of the 8 minutes is left; skip it if under 20 s are left.
run_stage() {
  local name=$1 budget=$2
  shift 2
  local left=$((DEADLINE - SECONDS - SUMMARY_SECONDS - KILL_GRACE_SECONDS))
  if ((left < 20)); then
    echo "== $name: skipped, only ${left} s of the ${TOTAL_SECONDS} s left"
    record_stage "$name" null 0 0 "out of time"
    FAILED_STAGES=$((FAILED_STAGES + 1))
    return
  fi
  local limit=$((budget < left ? budget : left))
  echo "== $name (timeout ${limit} s): $*"
  local start=$SECONDS
  timeout -s INT -k "$KILL_GRACE_SECONDS" "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
  local status=${PIPESTATUS[0]}
  local took=$((SECONDS - start))
  case $status in
    0) echo "== $name: ok (${took} s)" ;;
    124 | 137) echo "== $name: TIMED OUT after ${limit} s" ;;
    *) echo "== $name: FAILED with exit status $status (${took} s); see $RESULTS/$name.log" ;;
  esac
  record_stage "$name" "$status" "$took" "$limit" ""
  if ((status != 0)); then
    FAILED_STAGES=$((FAILED_STAGES + 1))
  fi
}

echo "gpu_check: results in $RESULTS"
if command -v nvidia-smi > /dev/null; then
  timeout 20 nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv \
    | tee "$RESULTS/nvidia-smi.csv"
else
  echo "gpu_check: nvidia-smi not found (continuing: CuPy decides whether a GPU is usable)"
fi

if python3 -c "import tinynlm" 2> /dev/null; then
  record_stage install null 0 0 "not needed, tinynlm imports"
else
  run_stage install 90 python3 -m pip install --no-deps -e .
fi

if ! python3 -c "import tinynlm as tn, sys; sys.exit(0 if tn.cuda.is_available() else 1)"; then
  echo "gpu_check: no usable CUDA GPU: tn.cuda.is_available() is False. Why, in CuPy's words:" >&2
  python3 -c "import tinynlm as tn; tn.zeros(1, device='cuda')" 2>&1 | tail -n 1 >&2
  exit 2
fi
python3 -c "import numba.cuda, sys; sys.exit(0 if numba.cuda.is_available() else 1)" 2> /dev/null \
  || echo "gpu_check: warning: Numba cannot use the GPU (numba-cuda missing?): the fused CUDA" \
          "kernels are unavailable; their tests are skipped and the attention benchmark stops" >&2
python3 -m pip list 2> /dev/null | grep -iE '^(cupy|numba|numpy|torch)' > "$RESULTS/versions.txt"
cat "$RESULTS/versions.txt"

PYTEST_OPTIONS=(-q -p no:cacheprovider --maxfail=10 -rfE)
run_stage gpu-kernel-tests 80 python3 -m benchmarks.gpu_check pytest "${PYTEST_OPTIONS[@]}" \
  --junitxml="$RESULTS/gpu-kernel-tests.xml" tests/kernels -k "cuda and not simulator"
run_stage gpu-tests 100 python3 -m benchmarks.gpu_check pytest "${PYTEST_OPTIONS[@]}" \
  --junitxml="$RESULTS/gpu-tests.xml" tests --ignore=tests/kernels \
  -k "(cuda or gpu) and not simulator"
run_stage attention 130 python3 -m benchmarks.attention --device cuda --repeats 5 \
  --json "$RESULTS/attention.json"
run_stage train 100 python3 -m benchmarks --suite train --device cuda,cpu --threads "$(nproc)" \
  --repeats 5 --json "$RESULTS/train.json"
run_stage ops-layers 40 python3 -m benchmarks --suite ops,layers --device cuda --quick \
  --json "$RESULTS/ops-layers.json"

echo
timeout "$SUMMARY_SECONDS" python3 -m benchmarks.gpu_check summary "$RESULTS" \
  | tee "$RESULTS/summary.txt"
echo "gpu_check: $FAILED_STAGES stage(s) failed; ${SECONDS} s in all; results in $RESULTS"
((FAILED_STAGES == 0))
