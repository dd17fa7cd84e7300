"""Cross-identity follow scores outside animate-evaluate: any portraits and drivers, and any source tree.

Runs the pairs through `animate` (the current code, or with --src the `animate` command of another source
tree, e.g. `git archive` of an older commit: the BEFORE figures), then measures each result against its driver
with evaluation.follow.measure_pair (mediapipe's mesh by default: not the detector that drives). The VoxCeleb2
drivers are training footage, used here only to drive the model-free warp: they are the two frontal clips that
look around and blink, which the val clips barely do. Usage:

  PYTHONPATH=src python scripts/measure_follow.py --frames 100 --out eval/follow/after.json
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

import numpy as np

from animate_cli.animate import AnimateOptions, animate
from animate_cli.evaluation.follow import FOLLOW_COLUMNS, cut_driver, measure_pair
from animate_cli.face.landmarks import make_detector

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PORTRAITS = ("data/val/tpsmm_source.png", "fixtures/astronaut.png", "fixtures/einstein.jpg")
DRIVERS = ("data/val/retalking_1.mp4", "data/val/retalking_2.mp4", "data/val/retalking_4.mp4",
           "data/val/retalking_5.mp4", "data/val/tpsmm_driving.mp4", "fixtures/single_face.mp4",
           "data/train/voxceleb2/id00017/iJOjkDq6rW8/00118.mp4", "data/train/voxceleb2/id00017/OLguY5ofUrY/00051.mp4")


def run_cli(src: Path, portrait: Path, driver: Path, out: Path, model: str, landmarks: str) -> None:
    """The `animate` command of the source tree `src`, in a subprocess."""
    args = [str(portrait), str(driver), "-o", str(out), "--model", model, "--landmarks", landmarks, "--no-audio",
            "--overwrite", "-q", "--device", "cpu"]
    code = f"from animate_cli.cli import main; raise SystemExit(main({args!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(src.resolve())})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--model", default="warp")
    ap.add_argument("--landmarks", default="dlib", help="the detector that drives")
    ap.add_argument("--measure-with", default="mesh", help="the detector that measures (another one)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--src", type=Path, help="run the `animate` command of this src/ folder instead")
    ap.add_argument("--keep", type=Path, help="keep the results and the cut drivers in this folder")
    ap.add_argument("--drivers", nargs="*", default=list(DRIVERS), help="paths under --shared")
    ap.add_argument("--portraits", nargs="*", default=list(PORTRAITS), help="paths under --shared")
    a = ap.parse_args(argv)
    if a.landmarks == a.measure_with:
        print("warning: measuring with the driving detector flatters the scores", file=sys.stderr)
    measurer, driving, cache, rows = make_detector(a.measure_with), make_detector(a.landmarks), {}, []
    with tempfile.TemporaryDirectory() as tmp:
        work = a.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for drv in a.drivers:
            driver = cut_driver(a.shared / drv, work / Path(drv).name, a.frames)
            for por in a.portraits:
                out = work / f"{Path(por).stem}__{Path(drv).stem}.mp4"
                t = time.perf_counter()
                if a.src:
                    run_cli(a.src, a.shared / por, driver, out, a.model, a.landmarks)
                else:
                    animate(a.shared / por, driver, out, AnimateOptions(model=a.model, landmarks=a.landmarks,
                                                                        audio=False, overwrite=True, device="cpu"))
                row = measure_pair(out, driver, measurer, cache, driven_by=driving)
                row.update(portrait=Path(por).name, driver=Path(drv).name, seconds=time.perf_counter() - t)
                rows.append(row)
                print(f"{row['portrait']:18s} {row['driver']:18s} " +
                      " ".join(f"{k} {row[k]:+.2f}" for k in FOLLOW_COLUMNS), flush=True)
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in FOLLOW_COLUMNS + ("head_jitter_ratio",)}
    for k in ("eyes", "eyes_seen", "gaze_h", "gaze_v"):
        mean[f"{k}_pairs"] = int(np.isfinite([r[k] for r in rows]).sum())
    for k in ("jitter_ratio", "shake_ratio"):
        mean[f"{k}_max"] = float(max(r[k] for r in rows))
        mean[f"{k}_median"] = float(np.median([r[k] for r in rows]))
    print("mean", json.dumps({k: round(v, 3) for k, v in mean.items()}))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(a).items()}, "mean": mean, "pairs": rows},
                                indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
