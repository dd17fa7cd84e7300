"""Lag on a synthetic step (0.3 inter-ocular distances at frame 40) and depth of a 3-frame blink: face.smooth
(zero-phase, noise-scaled One-Euro) against the tracker's old causal One-Euro. Usage:

  PYTHONPATH=src:tests python scripts/smoothing_lag.py
"""
import numpy as np
from test_motion import face
from animate_cli.face.measures import interocular, eye_openness
from animate_cli.face.smooth import smooth_driver, OneEuroFilter
from animate_cli.motion import apply_similarity
def crossing(x, level): return int(np.argmax(np.asarray(x) >= level))
base = face(); io = float(interocular(base)[0])
rng = np.random.default_rng(0)
for part in ("head", "mouth"):
    frames = []
    for i in range(80):
        f = base.copy()
        if i >= 40:
            if part == "head": f = apply_similarity(f, 1.0, np.eye(2), np.array([0.3 * io, 0.0]))
            else: f[[56, 57, 58, 65, 66, 67], 1] += 0.3 * io
        frames.append(f)
    raw = np.array(frames) + rng.normal(0, 0.2, (80, 68, 2))
    new, _ = smooth_driver(raw)
    scale = max(np.ptp(raw[0, :, 0]), np.ptp(raw[0, :, 1]))
    filt = OneEuroFilter(0.02, 4.0); old = np.array([filt(p / scale) * scale for p in raw])
    for name, out in (("new zero-phase", new), ("old causal", old)):
        pos = out[:, 30:36, 0].mean(1) if part == "head" else out[:, 66, 1]
        pos = (pos - pos[:30].mean()) / (pos[50:].mean() - pos[:30].mean())
        print(f"{part:5s} step, {name:15s}: 50% at frame {crossing(pos, 0.5) - 40:+d}, 90% at {crossing(pos, 0.9) - 40:+d} (frames after the step)")
# blink: 3 frames
frames = [face() for _ in range(60)]
from test_face_measures import shut_eye
for i in (30, 31, 32): frames[i] = shut_eye(frames[i], 0, 0.1)
raw = np.array(frames) + rng.normal(0, 0.6, (60, 68, 2))
new, _ = smooth_driver(raw)
scale = max(np.ptp(raw[0, :, 0]), np.ptp(raw[0, :, 1]))
filt = OneEuroFilter(0.02, 4.0); old = np.array([filt(p / scale) * scale for p in raw])
for name, out in (("raw", raw), ("new", new), ("old", old)):
    o = eye_openness(out)[:, 0]; print(f"3-frame blink (to 10% open), {name}: deepest {o[28:36].min() / np.median(o):.2f} of rest")
