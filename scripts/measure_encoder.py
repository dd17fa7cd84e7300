"""How much face detail x264 keeps, how fast it encodes and how big the file gets, per CRF and preset.

A still portrait is written as 25 identical frames at 25 fps (one second) through the bundled ffmpeg with
the arguments video.VideoWriter uses (libx264, yuv420p, mp4) plus `-crf`, `-preset` and `-threads 1`, read
back, and compared: face-box Laplacian-variance ratio decoded ÷ portrait (mean over the frames). With
--moving the 25 frames are instead the portrait animated by the native composite (the head rolls ±4°,
sways ±1.5% of the face and opens the mouth, the warp model's spline at 256²), each decoded frame compared
with the frame that went in: a moving face is what the encoder really gets. Speed is
ffmpeg's CPU time (user + system, from the child-process accounting: robust to a busy machine) per frame.
Portraits: the fixture astronaut.png at 512² and resized to 1024² (INTER_CUBIC), and the fixture einstein.jpg
(1024x817, a real high-resolution photo with its hand-placed landmarks; cropped to an even width).

    PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/measure_encoder.py [--shared ../shared] [--crf 15 18 23]
"""
from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

from animate_cli.composite import Compositor
from animate_cli.face.crop import face_crop_transform, transform_points
from animate_cli.face.landmarks import image_landmarks, make_detector
from animate_cli.sharpness import face_box, laplacian_variance
from animate_cli.video import read_frames, read_image
from animate_cli.warp import DEFAULT_REG, tps_grid

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FRAMES = 25


def portraits(shared: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    astro = read_image(shared / "fixtures" / "astronaut.png")
    lms = image_landmarks(make_detector("dlib"), astro, name="astronaut.png")
    ein = read_image(shared / "fixtures" / "einstein.jpg")[:, :816]
    ein_lms = np.loadtxt(shared / "fixtures" / "einstein.pts", skiprows=3, comments="}") - 1
    return {"astronaut 512²": (astro, lms),
            "astronaut 1024²": (cv2.resize(astro, (1024, 1024), interpolation=cv2.INTER_CUBIC), (lms + 0.5) * 2 - 0.5),
            "einstein 816x1024": (ein, ein_lms)}


def animated(image: np.ndarray, lms: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """FRAMES frames of the portrait moved by the composite, and their landmarks."""
    M = face_crop_transform(lms, 256)
    comp = Compositor(image, M, 256)
    c, extent = lms.mean(0), float((lms.max(0) - lms.min(0)).max())
    frames, targets = [], []
    for i in range(FRAMES):
        ph = 2 * np.pi * i / FRAMES
        a = np.deg2rad(4) * np.sin(ph)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        t = (lms - c) @ rot.T + c + 0.015 * extent * np.array([np.sin(ph), np.cos(2 * ph)])
        t[[55, 56, 57, 58, 59, 65, 66, 67], 1] += 0.04 * extent * (1 - np.cos(ph))
        grid = tps_grid(transform_points(lms, M), transform_points(t, M), (256, 256), reg=DEFAULT_REG)
        frames.append(comp(grid))
        targets.append(t)
    return frames, targets


def encode(frames: list[np.ndarray], path: Path, crf: int, preset: str, tune: str | None) -> float:
    """Write the frames; ffmpeg's CPU seconds."""
    h, w = frames[0].shape[:2]
    params = ["-f", "mp4", "-preset", preset, "-crf", str(crf), "-threads", "1", "-movflags", "+faststart"]
    params += ["-tune", tune] if tune else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen = imageio_ffmpeg.write_frames(str(path), (w, h), fps=25, quality=None, codec="libx264", pix_fmt_out="yuv420p",
                                      macro_block_size=1, ffmpeg_log_level="error", output_params=params)
    gen.send(None)
    for frame in frames:
        gen.send(np.ascontiguousarray(frame))
    gen.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--crf", type=int, nargs="*", default=[12, 15, 18, 20, 23])
    ap.add_argument("--preset", nargs="*", default=["veryfast", "faster", "medium"])
    ap.add_argument("--tune", default=None)
    ap.add_argument("--moving", action="store_true", help="animated frames instead of a still")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    print("| portrait | crf | preset | tune | sharpness kept | ffmpeg CPU ms/frame | kB per second |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (image, lms) in portraits(args.shared).items():
            frames, targets = animated(image, lms) if args.moving else ([image] * FRAMES, [lms] * FRAMES)
            boxes = [face_box(t, image.shape) for t in targets]
            refs = [laplacian_variance(f, b) for f, b in zip(frames, boxes)]
            for preset in args.preset:
                for crf in args.crf:
                    path = Path(tmp) / "out.mp4"
                    cpu = encode(frames, path, crf, preset, args.tune)
                    ratios = [laplacian_variance(f, b) / r for f, b, r in zip(read_frames(path), boxes, refs)]
                    print(f"| {name} | {crf} | {preset} | {args.tune or '-'} | {np.mean(ratios):.3f} "
                          f"| {cpu / FRAMES * 1000:.1f} "
                          f"| {path.stat().st_size / 1024:.0f} |", flush=True)


if __name__ == "__main__":
    main()
