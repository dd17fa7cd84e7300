"""The README's blink-and-glance strip: examples/portrait.png driven by fixtures/carphone.mp4 (the default
model), four frames (the first, a blink, a glance left, a glance right); top the driver, below the result of
each --model (default: the default model), each an eye band (brows to nose tip) that follows its face. Usage:

  PYTHONPATH=src python scripts/follow_strip.py ../shared/fixtures/carphone.mp4 examples/follow_strip.jpg \
      --frames 0 42 92 110 [--portrait P] [--model warp --model default]
"""
import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from animate_cli.animate import AnimateOptions, animate
from animate_cli.face.landmarks import make_detector
from animate_cli.face.measures import video_landmarks
from animate_cli.video import read_frames

TILE = (320, 200)  # w, h of each eye band


def tile_around(image: np.ndarray, centre, width: float, tile: tuple[int, int]) -> np.ndarray:
    """The box of `width` px across (and tile's aspect) centred on `centre`, resized to `tile` (w, h)."""
    scale = tile[0] / width
    A = np.float32([[scale, 0, tile[0] / 2 - centre[0] * scale], [0, scale, tile[1] / 2 - centre[1] * scale]])
    return cv2.warpAffine(image, A, tile, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def eye_band(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Brows to nose tip, eye corner to eye corner and a margin, resized to TILE."""
    x0, x1 = points[36, 0], points[45, 0]
    return tile_around(image, ((x0 + x1) / 2, (points[19, 1] + points[33, 1]) / 2), 1.6 * (x1 - x0), TILE)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("driver", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--portrait", type=Path, default=Path("examples/portrait.png"))
    ap.add_argument("--frames", type=int, nargs="+", default=[0, 42, 89, 116])
    ap.add_argument("--model", action="append", help="a row per model (repeatable; default: default)")
    ap.add_argument("--landmarks", default="auto", help="the detector that drives")
    a = ap.parse_args()
    det = make_detector("dlib")
    drivers = list(read_frames(a.driver))
    # each band follows its face (landmarks of that frame): the head turns, the irises move inside the eyes
    d_pts = video_landmarks(drivers, det)[0]  # tracked: the same face
    rows = [np.concatenate([eye_band(drivers[i], d_pts[i]) for i in a.frames], 1)]
    for model in a.model or ["default"]:
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "result.mp4"
            animate(a.portrait, a.driver, result, AnimateOptions(model=model, landmarks=a.landmarks, audio=False,
                                                                 overwrite=True))
            results = list(read_frames(result))
        r_pts = video_landmarks(results, det)[0]
        rows.append(np.concatenate([eye_band(results[i], r_pts[i]) for i in a.frames], 1))
    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    strip = np.concatenate([r for row in rows for r in (row, gap)][:-1], 0)
    cv2.imwrite(str(a.out), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {a.out} ({strip.shape[1]}x{strip.shape[0]})")


if __name__ == "__main__":
    main()
