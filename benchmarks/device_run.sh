#!/usr/bin/env bash
# One call on a lent GPU machine (see DEVELOPERS.md): build with CUDA, run the test
# suite on the GPU, then every benchmark suite. Logs and results land in $OUT
# (the device tool's output folder) or benchmarks/results/.
#   bash benchmarks/device_run.sh            # everything
#   bash benchmarks/device_run.sh --quick    # smaller cases
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/device.txt" 2>&1
python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" >> "$OUT/device.txt"
pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
python -m pytest tests -q -p no:cacheprovider > "$OUT/tests.log" 2>&1
echo "tests: $(tail -1 "$OUT/tests.log")"
python -m benchmarks --device cuda --out "$OUT" "$@" 2>&1 | tee "$OUT/benchmarks.log" | grep -E "^\| |wrote"
