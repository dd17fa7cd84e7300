#!/usr/bin/env bash
# GPU check for a CUDA machine lent for a few minutes: the CUDA tests, training throughput on the GPU
# (batch size, bf16 vs fp32, L_CNT at 128² vs 256²), then a continuation of weights/default for the
# seconds left of BUDGET, exported for evaluation on the CPU.
#   usage (repository root): scripts/gpu_check.sh CACHE OUT [BUDGET_S=430] [EXTRA_PYTHONPATH]
# Writes OUT/log.txt, OUT/throughput.csv (losses.csv rows, first column = setting), OUT/run_losses.csv,
# OUT/sample.png and OUT/weights/. Needs "$PY" with torch (CUDA), opencv, safetensors, rich and pytest,
# and the stlpips VGG weights installed or importable through EXTRA_PYTHONPATH (see pack_for_device.py).
set -u
CACHE=$1 OUT=$2 BUDGET=${3:-430}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda} TP_STEPS=${TP_STEPS:-40} TP_TIMEOUT=${TP_TIMEOUT:-75}  # overridable for a dry run on the CPU
export PYTHONPATH=${4:+$4:}$PWD/src PYTHONUNBUFFERED=1
mkdir -p "$OUT"
T0=$(date +%s)
set -o pipefail
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, cv2, safetensors, rich; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 3
timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_warp.py tests/test_finetune.py -k cuda -rs 2>&1 | tail -4
COMMON=(--cache "$CACHE" --init weights/default --no-progress --workers 8 --device "$DEVICE" --checkpoint-every 100000
        --episodes-per-epoch 2048)
throughput() {  # setting name, extra options: TP_STEPS steps, episodes/s logged every 10
  timeout "$TP_TIMEOUT" "$PY" -m animate_cli.train.cli "${COMMON[@]}" --run-dir "/tmp/gpu_tp_$1" --max-steps "$TP_STEPS" \
    --log-every 10 --sample-every 100000 "${@:2}" 2>&1 | tail -1
  sed "s/^/$1,/" "/tmp/gpu_tp_$1/losses.csv" >> "$OUT/throughput.csv"
}
throughput b8 --batch-size 8
throughput b32 --batch-size 32
throughput b8_fp32 --batch-size 8 --no-amp
throughput b8_cnt256 --batch-size 8 --perceptual-size 0
LEFT=$(( BUDGET - ($(date +%s) - T0) ))
MIN=$("$PY" -c "print(round(max(0.5, $LEFT / 60), 2))")
echo "throughput done at $(( $(date +%s) - T0 )) s; training for $MIN min"
if "$PY" -m animate_cli.train.cli "${COMMON[@]}" --run-dir /tmp/gpu_run --batch-size 16 --perceptual-size 0 \
    --mouth-weight 10 --max-minutes "$MIN" --log-every 20 --sample-every 400 2>&1 | tail -2; then
  cp /tmp/gpu_run/losses.csv "$OUT/run_losses.csv"
  "$PY" -m animate_cli.train.cli --run-dir /tmp/gpu_run --export "$OUT/weights" | tail -1
fi
SAMPLE=$(ls /tmp/gpu_run/samples/*.png 2>/dev/null | tail -1); [ -n "$SAMPLE" ] && cp "$SAMPLE" "$OUT/sample.png"
echo "done at $(( $(date +%s) - T0 )) s"
