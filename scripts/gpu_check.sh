#!/usr/bin/env bash
# GPU check for a CUDA machine lent for a few minutes: the CUDA tests, the throughput of mixed training
# (video + photo episodes, mouth painter) on the GPU, then a continuation of weights/default extended with
# the mouth painter, on both sources, for the seconds left of BUDGET, exported for evaluation on the CPU.
#   usage (repository root): scripts/gpu_check.sh CACHE PHOTOS OUT [BUDGET_S=480] [EXTRA_PYTHONPATH]
# CACHE, PHOTOS and EXTRA_PYTHONPATH as written by scripts/pack_for_device.py (DIR/cache, DIR/photos,
# DIR/site). Writes OUT/log.txt, OUT/throughput.csv (losses.csv rows, first column = setting),
# OUT/run_losses.csv, OUT/sample.png and OUT/weights/. Needs "$PY" with torch (CUDA), opencv, safetensors,
# rich, typer and pytest (all on the lent H200's image).
set -u
CACHE=$1 PHOTOS=$2 OUT=$3 BUDGET=${4:-480}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda} TP_STEPS=${TP_STEPS:-30} TP_TIMEOUT=${TP_TIMEOUT:-90}  # overridable for a dry run on the CPU
BATCH=${BATCH:-16} WORKERS=${WORKERS:-12}
export PYTHONPATH=${5:+$5:}$PWD/src PYTHONUNBUFFERED=1
mkdir -p "$OUT"
T0=$(date +%s)
set -o pipefail
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, cv2, safetensors, rich; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 3
timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_warp.py tests/test_finetune.py -k cuda -rs 2>&1 | tail -4
# the painter (preset small: paint_size 64) starts from weights/default's output; photo people get D columns
COMMON=(--cache "$CACHE" --photos "$PHOTOS" --photo-share 0.5 --init weights/default --preset small --no-progress
        --workers "$WORKERS" --device "$DEVICE" --checkpoint-every 100000 --episodes-per-epoch 4096)
throughput() {  # setting name, extra options: TP_STEPS steps, episodes/s logged every 10
  timeout "$TP_TIMEOUT" "$PY" -m animate_cli.train.cli "${COMMON[@]}" --run-dir "/tmp/gpu_tp_$1" --max-steps "$TP_STEPS" \
    --log-every 10 --sample-every 100000 "${@:2}" 2>&1 | tail -1
  sed "s/^/$1,/" "/tmp/gpu_tp_$1/losses.csv" >> "$OUT/throughput.csv"
}
# fp32: at this width the GPU is launch-bound and bf16 autocast was slower (docs/speed.md)
throughput "b${BATCH}_mixed" --batch-size "$BATCH" --perceptual-size 0 --no-amp
LEFT=$(( BUDGET - ($(date +%s) - T0) - 30 ))  # 30 s for the export and the copies
MIN=$("$PY" -c "print(round(max(0.5, $LEFT / 60), 2))")
echo "throughput done at $(( $(date +%s) - T0 )) s; training for $MIN min"
if "$PY" -m animate_cli.train.cli "${COMMON[@]}" --run-dir /tmp/gpu_run --batch-size "$BATCH" --perceptual-size 0 --no-amp \
    --mouth-weight 10 --max-minutes "$MIN" --log-every 20 --sample-every 400 2>&1 | tail -2; then
  [ -f /tmp/gpu_run/losses.csv ] && cp /tmp/gpu_run/losses.csv "$OUT/run_losses.csv"
  "$PY" -m animate_cli.train.cli --run-dir /tmp/gpu_run --export "$OUT/weights" | tail -1
fi
SAMPLE=$(ls /tmp/gpu_run/samples/*.png 2>/dev/null | tail -1); [ -n "$SAMPLE" ] && cp "$SAMPLE" "$OUT/sample.png"
echo "done at $(( $(date +%s) - T0 )) s"
