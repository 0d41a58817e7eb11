#!/usr/bin/env bash
# The prepared GPU check (issue 13): one command on an H100/H200, <= 8 minutes, everything
# written under $OUT (default outputs/gpu_check/<date>_<time>):
#   1. pytest tests/test_gpu.py                      (timm parity on CUDA, fused attention, bf16 step)
#   2. benchmarks/bench_gpu.py                       (ViT-B/16 training images/s ours vs timm, bf16 +
#                                                     compile + fused AdamW, MFU; captioning decode tokens/s)
#   3. python train.py task=classification|captioning|medical trainer=gpu   (wall time, test metrics)
# then summary.txt: each step's exit status and time, the RATIO lines, each run's metrics.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh
#   bash benchmarks/gpu_check.sh --cpu-smoke         # each step tiny on the CPU (tested in CI)
#
# A failing step does not stop the others; the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-outputs/gpu_check/$(date +%Y%m%d_%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SUMMARY="$OUT/summary.txt"
SMOKE=0
if [[ "${1:-}" == "--cpu-smoke" ]]; then SMOKE=1; elif [[ -n "${1:-}" ]]; then
  echo "usage: [OUT=dir] bash benchmarks/gpu_check.sh [--cpu-smoke]" >&2; exit 2
fi
failed=0

step() {  # step NAME COMMAND...: run it, log to $OUT/NAME.log, record status and seconds
  local name=$1; shift
  local start=$SECONDS
  echo "== $name: $*" | tee -a "$SUMMARY"
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc, $((SECONDS - start)) s" | tee -a "$SUMMARY"
  if [[ $rc -ne 0 ]]; then failed=1; tail -n 20 "$OUT/$name.log"; fi
}

{
  echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"
} | tee "$SUMMARY"

if [[ $SMOKE -eq 1 ]]; then
  BENCH=(--device cpu --tiny --batch 4 --repeats 2 --warmup 1 --decode-batch 2 --decode-tokens 4)
  RUN=(trainer=cpu trainer.fast_dev_run=true model.depth=1 data.batch_size=8 data.num_train=64 data.num_val=16
       data.num_test=16)
  declare -A EXTRA=([classification]="" [captioning]="task.generation.num_beams=1 task.generation.max_new_tokens=4"
                    [medical]="task.bootstrap_samples=50 task.num_heatmaps=1")
else
  BENCH=()
  RUN=(trainer=gpu)
  declare -A EXTRA=([classification]="" [captioning]="" [medical]="")
fi

step test_gpu "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py
step bench_gpu "$PY" benchmarks/bench_gpu.py "${BENCH[@]}"
for task in classification captioning medical; do
  # shellcheck disable=SC2086  # EXTRA holds several overrides
  step "run_$task" "$PY" train.py "task=$task" "${RUN[@]}" ${EXTRA[$task]} \
    callbacks.progress_bar.refresh_rate=0 "hydra.run.dir=$OUT/runs/$task"
done

{
  echo "== results"
  grep -h "^RATIO\|tokens/s\|^ours \|^timm \|^model \|peak" "$OUT/bench_gpu.log" 2>/dev/null
  grep -h "passed\|failed\|skipped" "$OUT/test_gpu.log" 2>/dev/null | tail -n 1
  "$PY" - "$OUT/runs" <<'EOF'
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("*/metrics.json")):
    m = json.loads(f.read_text())
    shown = {k: round(v, 4) for k, v in m.items() if k.startswith("test/") and isinstance(v, float)
             and not k.endswith(("_ci_low", "_ci_high"))}
    print(f"{f.parent.name}: wall {m.get('wall_time_s')} s, {shown}")
EOF
} | tee -a "$SUMMARY"
exit $failed
