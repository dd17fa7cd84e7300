"""The mouth strip: a portrait driven by a clip, the mouth of chosen frames, the driver on top and one row per
model below (e.g. `--model warp --model W`): does an opening mouth show teeth and a mouth's inside, or
stretched lips? Without --frames, the four frames where the driver's mouth opens widest (8 frames apart at
least). With --ref, a last row: the last model given the portrait and those pictures of the same person (its
mouth shots). Usage:

  PYTHONPATH=src python scripts/mouth_strip.py DRIVER OUT.jpg --portrait P --model warp --model W [--ref R]
"""
import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from animate_cli.animate import AnimateOptions, animate
from animate_cli.evaluation.follow import cut_driver
from animate_cli.face.landmarks import make_detector
from animate_cli.face.measures import mouth_opening, video_landmarks
from animate_cli.video import read_frames
from follow_strip import tile_around  # scripts/, beside this one

TILE = (240, 180)  # w, h of each mouth tile


def mouth_tile(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Nose tip to chin, 2.2 × the mouth's width across, centred on the lips, resized to TILE."""
    lips = points[48:68]
    return tile_around(image, lips.mean(axis=0), 2.2 * np.linalg.norm(points[54] - points[48]), TILE)


def widest(openings: np.ndarray, n: int = 4, apart: int = 8) -> list[int]:
    """The n frames of widest opening, at least `apart` frames from each other, in time order."""
    chosen: list[int] = []
    for i in np.argsort(-openings):
        if all(abs(int(i) - j) >= apart for j in chosen):
            chosen.append(int(i))
        if len(chosen) == n:
            break
    return sorted(chosen)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("driver", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--portrait", type=Path, default=Path("examples/portrait.png"))
    ap.add_argument("--frames", type=int, nargs="*")
    ap.add_argument("--model", action="append", help="a model per row (default: warp and default)")
    ap.add_argument("--landmarks", default="auto", help="the detector that drives")
    ap.add_argument("--max-frames", type=int, default=150)
    ap.add_argument("--ref", type=Path, action="append", default=[], help="more pictures: a last row with them")
    a = ap.parse_args()
    models = a.model or ["warp", "default"]
    runs = [(m, []) for m in models] + ([(models[-1], a.ref)] if a.ref else [])
    det = make_detector("dlib")
    with tempfile.TemporaryDirectory() as tmp:
        driver = cut_driver(a.driver, Path(tmp) / "driver.mp4", a.max_frames)
        drivers = list(read_frames(driver))
        d_pts = video_landmarks(drivers, det)[0]
        frames = a.frames or widest(mouth_opening(d_pts))
        rows = [np.concatenate([mouth_tile(drivers[i], d_pts[i]) for i in frames], 1)]
        for k, (model, refs) in enumerate(runs):
            result = Path(tmp) / f"result_{k}.mp4"
            animate(a.portrait, driver, result, AnimateOptions(model=model, landmarks=a.landmarks, audio=False,
                                                               overwrite=True, refs=list(refs)))
            results = list(read_frames(result))
            r_pts = video_landmarks(results, det)[0]
            rows.append(np.concatenate([mouth_tile(results[i], r_pts[i]) for i in frames], 1))
    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    strip = np.concatenate([x for r in rows for x in (r, gap)][:-1], 0)
    cv2.imwrite(str(a.out), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {a.out} ({strip.shape[1]}x{strip.shape[0]}): frames {frames}; rows: driver, " + ", ".join(
        m + (" with " + " ".join(map(str, r)) if r else "") for m, r in runs))


if __name__ == "__main__":
    main()
