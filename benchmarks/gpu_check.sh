#!/usr/bin/env bash
# All CUDA checks and a short GPU benchmark, in under 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh            # results under ${OUT:-benchmarks/results/gpu}
#
# 1. the environment (torch, CUDA device, natten); 2. the device-parametrised tests
# (tests/test_devices.py: every backend on cuda, fp32 forward+backward against CPU float64,
# bf16, FlexAttention compiled training, the exported BlockMask, NATTEN's fused na2d against
# functional.attention where natten is installed); 3. benchmarks/gpu.py in bf16, whose
# auto_rule section (compiled flex / compiled eager layer, forward without gradient, per case)
# is the measurement that decides auto's CUDA rule (AUTO_FLEX_ON_CUDA, off until then); it
# writes its files after every case, so a step cut short keeps what it finished; 4. an fp32
# eager anchor (uncompiled, one case). Each step has its own time limit (30 + 230 + 190 + 20 s
# = 7.8 min at most), so one stuck step cannot eat the others' time; the script exits non-zero
# if any step failed.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
status=0
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - t0))s; tail of $OUT/$name.log:"
  tail -n 15 "$OUT/$name.log"
  [ "$rc" -eq 0 ] || status=1
}
step env 30 python -c "
import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NONE')
try:
    import natten; print('natten', natten.__version__)
except ImportError as e: print('natten not installed:', e)
import attnblocks; print('attnblocks', attnblocks.__file__)"
step tests_cuda 230 python -m pytest -q -p no:cacheprovider --maxfail=20 --durations=15 \
  tests/test_devices.py
step bench_bf16 190 python -m benchmarks.gpu --device cuda --dtype bf16 --out "$OUT/bf16"
step bench_fp32 20 python -m benchmarks.gpu --device cuda --dtype fp32 --cases swin --no-compile \
  --out "$OUT/fp32"
echo "== done: status=$status, results in $OUT"
exit $status
