"""Per-frame costs of the new driver stages (issue 20), one thread. Usage, pinned to one core:

  PYTHONPATH=src taskset -c 0 python scripts/eyes_speed.py [SHARED]   (default ../shared; mesh needs mediapipe)
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1].parent / 'shared'
torch.set_num_threads(1)
from animate_cli.face.landmarks import make_detector
from animate_cli.face.iris import iris_centres
from animate_cli.face.smooth import smooth_driver
from animate_cli.face.track import track_faces
from animate_cli.face.crop import face_crop_transform, transform_points, warp_to_crop
from animate_cli.gaze import gaze_field, iris_shifts, relative_gaze
from animate_cli.motion import transfer_relative
from animate_cli.references import references_for
from animate_cli.warp import DEFAULT_REG
from animate_cli.video import read_frames, read_image
frames = list(read_frames(str(SHARED / 'fixtures/single_face.mp4')))
def best_ms(fn, n, reps=3):
    fn(); out = []
    for _ in range(reps):
        t = time.perf_counter()
        for i in range(n): fn(i)
        out.append((time.perf_counter() - t) / n * 1000)
    return min(out)
res = {}
for name in ("mesh", "dlib"):
    det = make_detector(name); box = det.box_from_landmarks(det.landmarks(frames[0], det.detect(frames[0])[0]))
    res[f"{name} fit (68 points + irises), ms/frame"] = best_ms(lambda i=0: det.fit(frames[i % 72], box), 72)
dl = make_detector("dlib"); box = dl.box_from_landmarks(dl.landmarks(frames[0], dl.detect(frames[0])[0]))
pts = [dl.landmarks(f, box) for f in frames]
res["dlib landmarks alone, ms/frame"] = best_ms(lambda i=0: dl.landmarks(frames[i % 72], box), 72)
res["dark-blob irises alone, ms/frame"] = best_ms(lambda i=0: iris_centres(frames[i % 72], pts[i % 72]), 72)
fits = list(track_faces(frames, dl, smooth=False))
P = np.array([f.points for f in fits]); I = np.array([f.irises for f in fits])
res["face.smooth (whole driver), ms/frame"] = best_ms(lambda i=0: smooth_driver(P, I), 1) / 72
img = read_image(str(SHARED / 'fixtures/astronaut.png')); pl = dl.landmarks(img, dl.detect(img)[0])
res["motion.transfer_relative, ms/frame"] = best_ms(lambda i=0: transfer_relative(pl, P), 1) / 72
M = face_crop_transform(pl, 256)
shot = torch.from_numpy(warp_to_crop(img, M, 256)).permute(2, 0, 1)[None].float() / 127.5 - 1
sl = transform_points(pl, M).astype(np.float32)[None]
T = transform_points(transfer_relative(pl, P).reshape(-1, 2), M).reshape(-1, 68, 2).astype(np.float32)[:8]
sh = iris_shifts(T, relative_gaze(P, I)[:8])
res["warp render, batch 8, ms/frame"] = best_ms(lambda i=0: references_for(shot, sl, T, selection=(), reg=DEFAULT_REG), 4) / 8
res["warp render + gaze field, batch 8, ms/frame"] = best_ms(lambda i=0: references_for(shot, sl, T, selection=(), reg=DEFAULT_REG, field=gaze_field(T, sh, 256)), 4) / 8
for k, v in res.items(): print(f"{k:50s} {v:7.2f}")
