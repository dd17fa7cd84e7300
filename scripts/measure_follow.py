"""Cross-identity follow scores: animate portraits with other people's clips, then measure how well the
result's eyes, gaze and mouth follow the driver's and how much more it shakes (face.measures).

The result and the driver are both measured with mediapipe's mesh (--measure-with), a detector other
than the one that drove (--landmarks), so the figures do not flatter. Usage:

  PYTHONPATH=src python scripts/measure_follow.py --frames 100 --out eval/follow/before.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from animate_cli.animate import AnimateOptions, animate
from animate_cli.face.landmarks import make_detector
from animate_cli.face.measures import follow_scores, video_landmarks
from animate_cli.video import read_frames

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PORTRAITS = ("data/val/tpsmm_source.png", "fixtures/astronaut.png", "fixtures/einstein.jpg")
DRIVERS = ("data/val/retalking_1.mp4", "data/val/retalking_2.mp4", "data/val/retalking_4.mp4",
           "data/val/retalking_5.mp4", "data/val/tpsmm_driving.mp4", "fixtures/single_face.mp4")


def trim(src: Path, dst: Path, frames: int) -> Path:
    """The first `frames` frames, re-encoded near-losslessly (the driver the result is measured against)."""
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), "-frames:v",
                    str(frames), "-an", "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", str(dst)], check=True)
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--model", default="warp")
    ap.add_argument("--landmarks", default="dlib", help="the detector that drives")
    ap.add_argument("--measure-with", default="mesh", help="the detector that measures (another one)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.landmarks == a.measure_with:
        print("warning: measuring with the driving detector flatters the scores", file=sys.stderr)
    measurer = make_detector(a.measure_with)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for drv in DRIVERS:
            driver = trim(a.shared / drv, tmp / Path(drv).name, a.frames)
            d_pts, d_iris = video_landmarks(read_frames(driver), measurer)
            for por in PORTRAITS:
                out = tmp / f"{Path(por).stem}__{Path(drv).stem}.mp4"
                t = time.perf_counter()
                rep = animate(a.shared / por, driver, out,
                              AnimateOptions(model=a.model, landmarks=a.landmarks, audio=False, overwrite=True,
                                             device="cpu"))
                secs = time.perf_counter() - t
                r_pts, r_iris = video_landmarks(read_frames(out), measurer)
                s = follow_scores(r_pts, d_pts, r_iris, d_iris).as_dict()
                s.update(portrait=Path(por).name, driver=Path(drv).name, fps=rep.fps, seconds=secs)
                rows.append(s)
                print(f"{s['portrait']:18s} {s['driver']:20s} eyes {s['eye_right']:+.2f} {s['eye_left']:+.2f} "
                      f"(blinks {int(s['driver_blinks'])}) gaze {s['gaze_h']:+.2f} {s['gaze_v']:+.2f} "
                      f"mouth {s['mouth']:+.2f} jitter x{s['jitter_ratio']:.2f}", flush=True)
    keys = ("eye_right", "eye_left", "gaze_h", "gaze_v", "mouth", "jitter_ratio")
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    blinking = [r for r in rows if r["driver_blinks"]]
    mean["eye_where_driver_blinks"] = float(np.nanmean([(r["eye_right"] + r["eye_left"]) / 2 for r in blinking])) \
        if blinking else float("nan")
    mean["jitter_ratio_max"] = float(max(r["jitter_ratio"] for r in rows))
    print("mean", json.dumps({k: round(v, 3) for k, v in mean.items()}))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(a).items()}, "mean": mean, "pairs": rows},
                                indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
