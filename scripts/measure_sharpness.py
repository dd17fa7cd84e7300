"""Face sharpness, today's path (warp at 256² + PasteBack) against the native-resolution composite.

Portraits at 256, 512, 1024 and 2048 px are made by resizing two square pictures: the fixture astronaut.png
(512²) and frame 0 of the val clip retalking_2.mp4 (844²) — INTER_AREA to shrink, INTER_CUBIC to enlarge
(so the 1024/2048 versions carry no detail the source lacks). Landmarks are detected once on the source
picture (dlib) and scaled. One more row: the fixture einstein.jpg as it is (1024x817, a real photo with
film grain) with its hand-placed landmarks. The motion: the first --frames frames of a driver (default the fixture
single_face.mp4), tracked, transferred onto the portrait (motion.transfer_relative), warped by the spline
at 256² exactly as the warp model does. Reported: face-box Laplacian-variance ratio output ÷ portrait at
frame 0 and its mean over the clip, and per-frame milliseconds of PasteBack and of the composite (CPU time
of this process on one thread: wall time on a shared machine mostly measures the neighbours). --strip PATH also renders a strip of frames with strong synthetic head motion at 1024².

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/measure_sharpness.py [--shared ../shared] [--frames 30] [--strip /tmp/strip.png]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from animate_cli.composite import Compositor
from animate_cli.face.crop import PasteBack, face_crop_transform, transform_points, warp_to_crop
from animate_cli.face.landmarks import image_landmarks, make_detector
from animate_cli.face.track import fill_missing, track_landmarks
from animate_cli.motion import transfer_relative
from animate_cli.sharpness import sharpness_ratio
from animate_cli.video import read_frames, read_image
from animate_cli.warp import DEFAULT_REG, resample, tps_grid

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SIZES = (256, 512, 1024, 2048)
R = 256


def sources(shared: Path) -> dict[str, np.ndarray]:
    clip = shared / "data" / "val" / "retalking_2.mp4"
    return {"astronaut": read_image(shared / "fixtures" / "astronaut.png"),
            "retalking_2": next(read_frames(clip, max_frames=1))}


def einstein(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    """A real high-resolution photo (1024x817, film grain) with its 68 hand-placed points, as it is."""
    pts = np.loadtxt(shared / "fixtures" / "einstein.pts", skiprows=3, comments="}") - 1
    return read_image(shared / "fixtures" / "einstein.jpg"), pts.astype(np.float32)


def resized(image: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A square picture at size², and its landmarks moved with it (pixel centres kept aligned)."""
    s = size / image.shape[0]
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return (cv2.resize(image, (size, size), interpolation=interp),
            ((landmarks + 0.5) * s - 0.5).astype(np.float32))


def grids_for(portrait_lms: np.ndarray, targets_full: np.ndarray, M: np.ndarray) -> torch.Tensor:
    """The warp model's sampling grids (B,R,R,2) at 256², one per target."""
    shot = transform_points(portrait_lms, M)
    targets = transform_points(targets_full.reshape(-1, 2), M).reshape(-1, 68, 2)
    return tps_grid(torch.from_numpy(np.repeat(shot[None], len(targets), 0)), torch.from_numpy(targets),
                    (R, R), reg=DEFAULT_REG)


def today(portrait: np.ndarray, M: np.ndarray, grids: torch.Tensor) -> tuple[list[np.ndarray], float]:
    """Warp at 256² and paste back (the pipeline before issue 17); ms per frame of the paste alone."""
    crop = torch.from_numpy(warp_to_crop(portrait, M, R)).permute(2, 0, 1)[None].float() / 127.5 - 1
    warped = resample(crop.expand(len(grids), -1, -1, -1), grids)
    crops = ((warped.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    paste = PasteBack(portrait, M, R)
    t = time.process_time()
    frames = [paste(c) for c in crops]
    return frames, (time.process_time() - t) / len(crops) * 1000


def native(portrait: np.ndarray, M: np.ndarray, grids: torch.Tensor) -> tuple[list[np.ndarray], float]:
    comp = Compositor(portrait, M, R)
    g = grids.numpy()
    comp(g[0])  # warm-up
    t = time.process_time()
    frames = [comp(x) for x in g]
    return frames, (time.process_time() - t) / len(g) * 1000


def strong_motion(lms: np.ndarray, n: int = 6) -> np.ndarray:
    """n target landmark sets: the head rolls ±14°, nods, turns (the near side compresses, the nose moves
    across), shifts, and the mouth opens; about the strongest a driver gives."""
    c = lms.mean(0)
    extent = float((lms.max(0) - lms.min(0)).max())
    out = []
    for i in range(n):
        ph = 2 * np.pi * i / n
        roll, turn, nod = np.deg2rad(14) * np.sin(ph), 0.12 * np.sin(ph + 1.0), 0.08 * np.cos(ph)
        p = lms - c
        half = extent / 2
        p[:, 0] = p[:, 0] * (1 - 0.1 * abs(np.sin(ph + 1.0))) + turn * extent * (1 - (p[:, 0] / half) ** 2)
        p[:, 1] += nod * extent * (1 - (p[:, 1] / half) ** 2)
        p[48:68, 1] += np.where(p[48:68, 1] > p[48:68, 1].mean(), 0.08, -0.02) * extent * (i % 2)
        rot = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
        out.append(p @ rot.T + c + [0.05 * extent * np.sin(ph), 0.04 * extent * np.cos(ph)])
    return np.asarray(out, np.float32)


def render_strip(image: np.ndarray, lms: np.ndarray, path: Path) -> None:
    """Top row: today's path; bottom: the composite; each tile the crop square (plus a margin) of a 1024²
    portrait under strong motion, so seams at the region's edge and the face's detail both show."""
    portrait, plms = resized(image, lms, 1024)
    M = face_crop_transform(plms, R)
    grids = grids_for(plms, strong_motion(plms), M)
    rows = [today(portrait, M, grids)[0], native(portrait, M, grids)[0]]
    comp = Compositor(portrait, M, R)
    ys, xs = comp.region
    pad = (xs.stop - xs.start) // 10
    y0, y1 = max(ys.start - pad, 0), min(ys.stop + pad, 1024)
    x0, x1 = max(xs.start - pad, 0), min(xs.stop + pad, 1024)
    tiles = [[f[y0:y1, x0:x1] for f in row] for row in rows]
    strip = np.concatenate([np.concatenate(r, 1) for r in tiles], 0)
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    print(f"strip: {path} ({strip.shape[1]}x{strip.shape[0]}; tiles x {x0}..{x1}, y {y0}..{y1} of 1024²; "
          f"region x {xs.start}..{xs.stop}, y {ys.start}..{ys.stop})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder (default ../shared)")
    ap.add_argument("--driver", type=Path, default=None, help="default: fixtures/single_face.mp4")
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    ap.add_argument("--strip", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    detector = make_detector("dlib")
    args.driver = args.driver or args.shared / "fixtures" / "single_face.mp4"
    driver = fill_missing(list(track_landmarks(read_frames(args.driver, max_frames=args.frames), detector)),
                          args.driver.name)
    results = []
    print("| portrait | size | face region px | today f0 | today mean | native f0 | native mean | paste ms "
          "| composite ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    found = [(name, image, image_landmarks(detector, image, name=name)) for name, image in sources(args.shared).items()]
    cases = [(name, image, lms, size) for name, image, lms in found for size in args.sizes]
    cases.append(("einstein (as is)", *einstein(args.shared), None))
    for name, image, lms, size in cases:
        portrait, plms = resized(image, lms, size) if size else (image, lms)
        size = size or max(image.shape[:2])
        targets = transfer_relative(plms, driver)
        M = face_crop_transform(plms, R)
        grids = grids_for(plms, targets, M)
        row = {"portrait": name, "size": size, "region": Compositor(portrait, M, R).region_size[0]}
        for label, fn in (("today", today), ("native", native)):
            frames, ms = fn(portrait, M, grids)
            ratios = [sharpness_ratio(f, portrait, t, plms) for f, t in zip(frames, targets)]
            row.update({f"{label}_f0": ratios[0], f"{label}_mean": float(np.mean(ratios)), f"{label}_ms": ms})
        results.append(row)
        print(f"| {name} | {size} | {row['region']}² | {row['today_f0']:.3f} | {row['today_mean']:.3f} "
              f"| {row['native_f0']:.3f} | {row['native_mean']:.3f} | {row['today_ms']:.2f} | {row['native_ms']:.2f} |",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.strip:
        render_strip(found[0][1], found[0][2], args.strip)


if __name__ == "__main__":
    main()
