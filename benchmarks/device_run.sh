#!/usr/bin/env bash
# The GPU check in one short call on a lent machine (a device call: one command of at
# most 10 minutes; at most 8 files come back, no more than 2 folders deep):
#   build -> the whole test suite (-n 12) -> a short training run -> the benchmark suites,
# each phase under its own deadline inside one overall budget. Every phase logs to
# $OUT/<phase>.log as it runs, so a phase cut off by its deadline still leaves its
# output; the benchmark results (JSON, markdown, PNG) are packed into one tarball.
#
#   bash benchmarks/device_run.sh            # BUDGET=540 seconds in all
#   BUDGET=300 bash benchmarks/device_run.sh --quick
#
# $OUT then holds: summary.txt (device, versions, each phase's exit code and time),
# build.log, tests-gpu.log, tests-cpu.log, train.log, benchmarks.log and benchmarks.tar.gz.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/device}"
BUDGET="${BUDGET:-540}"
RESERVE=15  # seconds kept for packing the results
mkdir -p "$OUT"
WORK="$(mktemp -d)"
export PYTHONUNBUFFERED=1
export MAX_JOBS="${MAX_JOBS:-16}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

# phase NAME DEADLINE CMD...: CMD under min(DEADLINE, what the budget has left), logged to $OUT/NAME.log.
phase() {
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET - SECONDS - RESERVE))
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    echo "$name: skipped, the budget is spent" | tee -a "$SUMMARY"
    return 1
  fi
  local start=$SECONDS
  timeout --kill-after=5 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local note=""
  ((rc == 124 || rc == 137)) && note=" (cut off by its deadline)"
  echo "$name: exit $rc after $((SECONDS - start)) s of a ${limit} s deadline$note" | tee -a "$SUMMARY"
  return $rc
}

{
  echo "command: bash benchmarks/device_run.sh $*  (BUDGET=$BUDGET s)"
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  python -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'triton', triton.__version__)" 2>&1
  git log -1 --format='commit %H %s' 2>/dev/null
} >> "$SUMMARY"

phase build 200 pip install --no-build-isolation --no-deps -e . || { tail -40 "$OUT/build.log"; exit 1; }
# The tests with "cuda" in their id (the CUDA and Triton backends on GPU tensors) first:
# a deadline that cuts the suite short then cuts the tests a CPU machine runs anyway.
for part in gpu cpu; do
  if [[ $part == gpu ]]; then select="cuda" limit=180; else select="not cuda" limit=120; fi
  phase "tests-$part" "$limit" python -m pytest tests -q -n 12 -p no:cacheprovider --timeout 120 -o addopts="-ra" \
    -k "$select"
  grep -E "passed|failed|error" "$OUT/tests-$part.log" | tail -1 | sed "s/^/tests-$part: /" >> "$SUMMARY"
done
if python -c "import ot" 2> /dev/null; then
  phase train 60 python -m fastgan train --recipe wgan-gp --data 8gaussians --steps 300 --device cuda \
    --out "$WORK/train" --no-progress --no-plots
else
  echo "train: skipped, this machine lacks pot (Python Optimal Transport), which the training job needs" \
    | tee -a "$SUMMARY"
fi
phase benchmarks 600 python -m benchmarks --device cuda --out "$WORK/benchmarks" "$@"
tar czf "$OUT/benchmarks.tar.gz" -C "$WORK" benchmarks 2>> "$SUMMARY"
echo "total: $SECONDS s" | tee -a "$SUMMARY"
