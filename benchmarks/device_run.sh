#!/usr/bin/env bash
# The GPU check in one short call on a lent machine (a device call: one command of at
# most 10 minutes; at most 8 files come back, no more than 2 folders deep):
#   build -> GPU tests -> a short captured training run -> host-overhead benchmarks -> the
#   other tests -> kernel benchmarks,
# each phase under its own deadline inside one overall budget. Every phase logs to
# $OUT/<phase>.log as it runs, so a phase cut off by its deadline still leaves its
# output; the benchmark results (JSON, markdown, PNG) are packed into one tarball.
#
#   bash benchmarks/device_run.sh            # BUDGET=540 seconds in all
#   BUDGET=300 bash benchmarks/device_run.sh --quick
#
# $OUT then holds: summary.txt (device, versions, each phase's exit code and time),
# build.log, tests-gpu.log, train.log, bench-host.log, tests-cpu.log, bench-kernels.log and
# benchmarks.tar.gz: eight files, what a device call brings back.
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
# Most wanted first, so that the budget cuts the least wanted: the tests marked gpu (those
# a CPU machine skips, and those on CUDA tensors: tests/conftest.py marks them), the
# captured main job, the host overhead and whole-iteration suites (issue 11's GPU rows),
# the tests a CPU machine also runs (GPU-present branches), then the kernel suites.
tests() {  # tests PART MARKERS DEADLINE
  phase "tests-$1" "$3" python -m pytest tests -q -n 12 -p no:cacheprovider --timeout 120 -o addopts="-ra" -m "$2"
  grep -E "passed|failed|error" "$OUT/tests-$1.log" | tail -1 | sed "s/^/tests-$1: /" >> "$SUMMARY"
}
tests gpu "gpu" 180
# The README's main job, shortened: one CUDA graph per iteration (the default on CUDA)
# with linear lr decay. W1 comes from scipy where pot is missing (GPU machines lack it);
# 1,000 evaluation samples keep its exact assignment under a second.
phase train 90 python -m fastgan train --recipe wgan-gp --data 8gaussians --steps 1000 --hidden 256 --lr 3e-4 \
  --lr-decay linear --device cuda --eval-samples 1000 --out "$WORK/train" --no-progress --no-plots
grep -E "steps in" "$OUT/train.log" | tail -1 | sed "s/^/train: /" >> "$SUMMARY"
# --quick: 50 repetitions, not 200, so that the iteration suite's torch.compile rows fit too
# (a suite writes its results when it ends; its log has each case's rows as they come).
phase bench-host 240 python -m benchmarks --device cuda --quick --out "$WORK/benchmarks" --suite overhead \
  --suite iteration "$@"
tests cpu "not gpu" 120
phase bench-kernels 600 python -m benchmarks --device cuda --out "$WORK/benchmarks" --suite losses --suite penalty \
  --suite clip --suite bias_act --suite r1r2 --suite vae "$@"
tar czf "$OUT/benchmarks.tar.gz" -C "$WORK" benchmarks 2>> "$SUMMARY"
echo "total: $SECONDS s" | tee -a "$SUMMARY"
