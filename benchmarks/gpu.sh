#!/usr/bin/env bash
# The one-shot GPU run (issue #28; docs/performance.md, "GPU: Triton kernels and the
# one-shot GPU run"). From the repository root of a fresh GPU machine:
#
#   bash benchmarks/gpu.sh [--out DIR] [--wheels DIR] [--budget SECONDS] [--no-results] [--dry-run]
#
# It uses the machine's own python3 and torch (the project goes on PYTHONPATH; nothing is
# fetched), installs the wheels of missing test dependencies from --wheels (default .whl/,
# made beforehand where there is network by benchmarks/gpu_wheels.sh), and runs, each stage
# under its own time limit and all within --budget (default 480 s = 8 minutes):
#
#   1. environment: the GPU, python, torch, triton                   -> DIR/environment.txt
#   2. the whole test suite on CUDA (the device fixture adds "cuda")  -> DIR/tests.log
#   3. CUDA-graph capture of every selector's training step           -> DIR/graphs.json
#   4. pseudosel bench: eager, compiled and triton rows against the floors (amax, copy) at
#      16x21x512x512, 8x21x321x321, 448x10, 256x1000 (float32)       -> DIR/bench/
#   5. torch.compile == eager on the GPU, every selector (4 processes) -> DIR/compile-*.json
#   6. one markdown section of all of it -> DIR/results_section.md, inserted at the top of
#      benchmarks/RESULTS.md (unless --no-results) with the device name and the date.
#
# A stage that fails or runs out of time is recorded and the run goes on; the exit status is
# that of the test suite. --dry-run prints the stages' commands and runs nothing.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=results/gpu
WHEELS=.whl
BUDGET=480
WRITE_RESULTS=1
DRY_RUN=0
PYTHON=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --no-results) WRITE_RESULTS=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

START=$(date +%s)
mkdir -p "$OUT"
SITE=${TMPDIR:-/tmp}/pseudosel-gpu-site
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# seconds left of the budget, less what the later stages need at least
left() {
  local reserve=$1
  echo $(( BUDGET - ($(date +%s) - START) - reserve ))
}

# stage NAME LIMIT RESERVE -- command...: run under min(LIMIT, what is left), log to DIR/NAME.log
stage() {
  local name=$1 limit=$2 reserve=$3
  shift 4
  local budget
  budget=$(left "$reserve")
  [ "$budget" -lt "$limit" ] && limit=$budget
  if [ "$DRY_RUN" = 1 ]; then
    echo "[$name] timeout $limit: $*"
    return 0
  fi
  if [ "$limit" -le 5 ]; then
    echo "[$name] skipped: the budget is spent" | tee "$OUT/$name.log"
    return 124
  fi
  echo "[$name] up to ${limit}s: $*"
  timeout --signal=INT --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local status=$?
  echo "[$name] exit $status after $(( $(date +%s) - START ))s in all"
  return $status
}

# 0. the wheels of missing test dependencies (cvxpy, cvxpylayers, ...), if carried
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  stage wheels 60 400 -- "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$PYTHONPATH:$SITE"
  export PSEUDOSEL_USB_SITE="$SITE"  # semilearn, for tests/integrations
fi

# 1. environment
stage environment 30 400 -- "$PYTHON" -c "
import platform, subprocess, torch
print('python', platform.python_version(), '| torch', torch.__version__, '| cuda', torch.version.cuda)
try:
    import triton; print('triton', triton.__version__)
except ImportError as error:
    print('triton: not importable:', error)
print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')
print(subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True).stdout.strip())
"
[ "$DRY_RUN" = 1 ] || cp "$OUT/environment.log" "$OUT/environment.txt"

# 2. the whole suite (parallel when pytest-xdist is there); CUDA cases join through the
#    device fixture
WORKERS=()
if "$PYTHON" -c "import xdist" >/dev/null 2>&1; then WORKERS=(-n 12); fi
stage tests 240 250 -- "$PYTHON" -m pytest -q -p no:cacheprovider "${WORKERS[@]}" -ra
TESTS_STATUS=$?
if [ "$DRY_RUN" = 0 ]; then
  grep -E "passed|failed|error" "$OUT/tests.log" | tail -n 1 >"$OUT/tests_summary.txt"
fi

# 3. graph capture of every training step (benchmarks/gpu_checks.py)
stage graphs 60 200 -- "$PYTHON" benchmarks/gpu_checks.py graphs --out "$OUT"

# 4. the GPU rows of pseudosel bench
stage bench 150 60 -- "$PYTHON" -m pseudosel bench --device cuda --dtypes float32 \
  --selectors csl threshold --no-adaptive --out "$OUT/bench" \
  --sizes 16x21x512x512 8x21x321x321 448x10 256x1000

# 5. torch.compile == eager, every selector: four processes compile side by side
stage compile 90 15 -- bash -c '
  for shard in 0 1 2 3; do
    "$0" benchmarks/gpu_checks.py compile --shard "$shard/4" --out "$1" &
  done
  wait' "$PYTHON" "$OUT"

# 6. the results section
RESULTS_ARGS=()
[ "$WRITE_RESULTS" = 1 ] && RESULTS_ARGS=(--results benchmarks/RESULTS.md)
stage results 30 0 -- "$PYTHON" benchmarks/gpu_checks.py results --out "$OUT" "${RESULTS_ARGS[@]}"

echo "gpu.sh: done in $(( $(date +%s) - START ))s; outputs in $OUT"
exit $TESTS_STATUS
