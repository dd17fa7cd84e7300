"""Cross-identity follow scores: animate portraits with other people's clips, then measure how well the
result's eyes, gaze and mouth follow the driver's and how much more it shakes (face.measures).

The result and the driver are both measured with mediapipe's mesh (--measure-with), a detector other
than the one that drove (--landmarks), so the figures do not flatter. --pipeline animate runs
animate.animate() as it is; --pipeline cli runs the `animate` command of another source tree (--src, e.g.
`git archive` of an older commit: the BEFORE figures) in a subprocess; --pipeline staged runs the new driver stages (raw tracking -> face.smooth ->
motion -> gaze field composed with the warp) for the warp model, until animate.py strings them itself.
Usage:

  PYTHONPATH=src python scripts/measure_follow.py --frames 100 --out eval/follow/before.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from animate_cli.animate import AnimateOptions, animate
from animate_cli.face.crop import PasteBack, face_crop_transform, transform_points, warp_to_crop
from animate_cli.face.landmarks import make_detector
from animate_cli.face.measures import follow_scores, jitter, video_landmarks
from animate_cli.face.smooth import smooth_driver
from animate_cli.face.track import fill_missing, track_faces
from animate_cli.gaze import gaze_field, iris_shifts, portrait_gaze, relative_gaze
from animate_cli.motion import procrustes, transfer_relative
from animate_cli.references import references_for
from animate_cli.warp import DEFAULT_REG
from animate_cli.video import VideoWriter, probe_video, read_frames, read_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PORTRAITS = ("data/val/tpsmm_source.png", "fixtures/astronaut.png", "fixtures/einstein.jpg")
DRIVERS = ("data/val/retalking_1.mp4", "data/val/retalking_2.mp4", "data/val/retalking_4.mp4",
           "data/val/retalking_5.mp4", "data/val/tpsmm_driving.mp4", "fixtures/single_face.mp4",
           # 224² VoxCeleb2 clips (training footage, used here only as drivers of the model-free warp): the
           # val clips barely move their eyes; these two frontal ones look around and blink
           "data/train/voxceleb2/id00017/iJOjkDq6rW8/00118.mp4", "data/train/voxceleb2/id00017/OLguY5ofUrY/00051.mp4")


def steady_floor(first_frame: np.ndarray, points: np.ndarray, measurer) -> float:
    """The jitter the measurer itself reads on this face moving as the result moves, but perfectly
    smoothly: the result's first frame moved by its head motion (similarities fitted on rigid points,
    Gaussian-smoothed). Some faces (Einstein's) make every detector tremble under motion; a result
    cannot be steadier than this."""
    params = []
    for p in points:
        s, R, t = procrustes(points[0], p)
        params.append([np.log(s), np.arctan2(R[1, 0], R[0, 0]), t[0], t[1]])
    params = gaussian_filter1d(np.unwrap(np.array(params), axis=0), 3.0, axis=0, mode="nearest")
    h, w = first_frame.shape[:2]
    frames = []
    for ls, ang, tx, ty in params:
        s = np.exp(ls)
        A = np.array([[s * np.cos(ang), -s * np.sin(ang), tx], [s * np.sin(ang), s * np.cos(ang), ty]])
        frames.append(cv2.warpAffine(first_frame, A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return jitter(video_landmarks(frames, measurer)[0])


def trim(src: Path, dst: Path, frames: int) -> Path:
    """The first `frames` frames, re-encoded near-losslessly (the driver the result is measured against)."""
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), "-frames:v",
                    str(frames), "-an", "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", str(dst)], check=True)
    return dst


def staged_warp(portrait_path: Path, driver_path: Path, out: Path, detector, size: int = 256, smooth: bool = True,
                use_gaze: bool = True, batch: int = 8) -> dict:
    """The warp model through the new driver stages; returns seconds per stage."""
    secs, t = {}, time.perf_counter()
    portrait = read_image(portrait_path)
    fit = detector.fit(portrait, detector.detect(portrait)[0])
    M = face_crop_transform(fit.points, size)
    shot = torch.from_numpy(warp_to_crop(portrait, M, size)).permute(2, 0, 1)[None].float() / 127.5 - 1
    shot_lms = transform_points(fit.points, M).astype(np.float32)[None]
    fits = list(track_faces(read_frames(driver_path), detector, smooth=not smooth))  # raw when face.smooth runs
    points = fill_missing([f.points if f else None for f in fits], driver_path.name)
    irises = fill_missing([f.irises if f else None for f in fits], driver_path.name, shape=(2, 2))
    secs["landmarks"], t = time.perf_counter() - t, time.perf_counter()
    if smooth:
        points, irises = smooth_driver(points, irises)
    targets = transform_points(transfer_relative(fit.points, points).reshape(-1, 2), M).reshape(-1, 68, 2)
    targets = targets.astype(np.float32)
    shifts = None
    if use_gaze:
        own = portrait_gaze(shot_lms[0], transform_points(fit.irises, M))
        shifts = iris_shifts(targets, relative_gaze(points, irises), own)
    secs["motion"], t = time.perf_counter() - t, time.perf_counter()
    paste = PasteBack(portrait, M, size)
    with VideoWriter(out, probe_video(driver_path).fps, overwrite=True) as writer:
        for i in range(0, len(targets), batch):
            tb = targets[i:i + batch]
            field = gaze_field(tb, shifts[i:i + batch], size) if shifts is not None else None
            with torch.no_grad():
                crops = references_for(shot, shot_lms, tb, selection=(), reg=DEFAULT_REG, field=field)
            crops = ((crops.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            for c in crops:
                writer.write(paste(c))
    secs["render"] = time.perf_counter() - t
    return secs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--model", default="warp")
    ap.add_argument("--landmarks", default="dlib", help="the detector that drives")
    ap.add_argument("--measure-with", default="mesh", help="the detector that measures (another one)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pipeline", choices=("animate", "cli", "staged"), default="animate")
    ap.add_argument("--src", type=Path, help="cli: the src/ folder whose animate_cli runs")
    ap.add_argument("--keep", type=Path, help="keep the results (and trimmed drivers) in this folder")
    ap.add_argument("--no-smooth", action="store_true", help="staged: the tracker's old One-Euro instead")
    ap.add_argument("--no-gaze", action="store_true", help="staged: no gaze field")
    ap.add_argument("--drivers", nargs="*", default=list(DRIVERS), help="paths under --shared")
    ap.add_argument("--portraits", nargs="*", default=list(PORTRAITS), help="paths under --shared")
    ap.add_argument("--measure-only", action="store_true", help="measure the results already in --keep")
    ap.add_argument("--update", action="store_true",
                    help="keep the pairs of --out whose driver is not run now (and still a default driver)")
    a = ap.parse_args(argv)
    if a.landmarks == a.measure_with:
        print("warning: measuring with the driving detector flatters the scores", file=sys.stderr)
    measurer = make_detector(a.measure_with)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.keep:
            tmp = a.keep
            tmp.mkdir(parents=True, exist_ok=True)
        driving = make_detector(a.landmarks) if a.pipeline == "staged" else None
        for drv in a.drivers:
            driver = tmp / Path(drv).name
            if not (a.measure_only and driver.exists()):
                trim(a.shared / drv, driver, a.frames)
            d_pts, d_iris = video_landmarks(read_frames(driver), measurer)
            for por in a.portraits:
                out = tmp / f"{Path(por).stem}__{Path(drv).stem}.mp4"
                t = time.perf_counter()
                if a.measure_only:
                    stages = {}
                elif a.pipeline == "cli":
                    args = [str(a.shared / por), str(driver), "-o", str(out), "--model", a.model, "--landmarks",
                            a.landmarks, "--no-audio", "--overwrite", "-q", "--device", "cpu"]
                    code = f"from animate_cli.cli import main; raise SystemExit(main({args!r}))"
                    subprocess.run([sys.executable, "-c", code], check=True,
                                   env={**os.environ, "PYTHONPATH": str(a.src.resolve())})
                    stages = {}
                elif a.pipeline == "staged":
                    stages = staged_warp(a.shared / por, driver, out, driving, smooth=not a.no_smooth,
                                         use_gaze=not a.no_gaze)
                else:
                    rep = animate(a.shared / por, driver, out,
                                  AnimateOptions(model=a.model, landmarks=a.landmarks, audio=False, overwrite=True,
                                                 device="cpu"))
                    stages = rep.seconds
                secs = time.perf_counter() - t
                r_pts, r_iris = video_landmarks(read_frames(out), measurer)
                s = follow_scores(r_pts, d_pts, r_iris, d_iris).as_dict()
                s["jitter_floor"] = steady_floor(next(read_frames(out)), r_pts, measurer)
                s["jitter_floor_ratio"] = s["jitter_floor"] / s["jitter_driver"]
                s.update(portrait=Path(por).name, driver=Path(drv).name, seconds=secs, stages=stages)
                rows.append(s)
                print(f"{s['portrait']:18s} {s['driver']:20s} eyes {s['eye_right']:+.2f} {s['eye_left']:+.2f} "
                      f"(blinks {int(s['driver_blinks'])}) gaze {s['gaze_h']:+.2f} {s['gaze_v']:+.2f} "
                      f"mouth {s['mouth']:+.2f} jitter x{s['jitter_ratio']:.2f} head x{s['head_jitter_ratio']:.2f} "
                      f"(floor x{s['jitter_floor_ratio']:.2f})", flush=True)
    if a.update and a.out.exists():
        ran = {Path(d).name for d in a.drivers}
        known = {Path(d).name for d in DRIVERS}
        rows = [r for r in json.loads(a.out.read_text())["pairs"] if r["driver"] not in ran and r["driver"] in known] + rows
    keys = ("eye_right", "eye_left", "gaze_h", "gaze_v", "mouth", "jitter_ratio", "head_jitter_ratio",
            "jitter_floor_ratio")
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    blinking = [r for r in rows if r["driver_blinks"]]
    mean["eye_where_driver_blinks"] = float(np.nanmean([(r["eye_right"] + r["eye_left"]) / 2 for r in blinking])) \
        if blinking else float("nan")
    mean["jitter_ratio_max"] = float(max(r["jitter_ratio"] for r in rows))
    mean["jitter_ratio_median"] = float(np.median([r["jitter_ratio"] for r in rows]))
    mean["head_jitter_ratio_max"] = float(max(r["head_jitter_ratio"] for r in rows))
    # where the measurer's own tremble on the result's face (its floor) is below the driver's jitter
    measurable = [r for r in rows if r["jitter_floor_ratio"] < 1.0]
    mean["jitter_ratio_max_measurable"] = max((r["jitter_ratio"] for r in measurable), default=float("nan"))
    mean["measurable_pairs"] = len(measurable)
    print("mean", json.dumps({k: round(v, 3) for k, v in mean.items()}))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(a).items()}, "mean": mean, "pairs": rows},
                                indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
