"""Where a model's whole-face LPIPS comes from, region by region, in the evaluation's self-reenactment setting.

LPIPS is a spatial mean of per-layer distance maps; upsampled to the crop and summed, they give a map whose mean
is the score (to the upsampling's rounding). Its sum over a region of the target, divided by the crop's pixels,
is that region's part of the score: the face (the hull of the jaw and brows), its mouth box (the mouth metric's
crop), the eyes with their brows, and the rest (hair, neck, background). Usage:

  PYTHONPATH=src python scripts/lpips_regions.py CLIPS_DIR [--model default] [--shots 1]
"""
import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from animate_cli.animators import make_animator
from animate_cli.evaluation.protocol import _render, find_clips, load_eval_clip
from animate_cli.face.landmarks import make_detector
from animate_cli.face.regions import mouth_box
from animate_cli.models.perceptual import LPIPS


def lpips_map(net: LPIPS, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B,R,R,3) uint8 pairs -> (B,R,R): the LPIPS distance map, its mean the LPIPS score."""
    x, y = (torch.from_numpy(v).permute(0, 3, 1, 2).float() / 127.5 - 1 for v in (a, b))
    size = a.shape[1:3]
    out = torch.zeros(len(a), *size)
    with torch.no_grad():
        for d in net.layer_maps(x, y):
            out += F.interpolate(d, size=size, mode="bilinear", align_corners=False)[:, 0]
    return out.numpy()


def regions(lm: np.ndarray, size: int) -> dict:
    """Boolean masks of one target's regions, from its 68 landmarks."""
    face = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(lm[:27].astype(np.int32)), 1)
    mouth = np.zeros_like(face)
    x0, y0, side = mouth_box(lm)
    mouth[max(int(y0), 0):int(y0 + side), max(int(x0), 0):int(x0 + side)] = 1
    eyes = np.zeros_like(face)
    for eye, brow in ((slice(36, 42), slice(17, 22)), (slice(42, 48), slice(22, 27))):
        cv2.fillConvexPoly(eyes, cv2.convexHull(np.concatenate([lm[eye], lm[brow]]).astype(np.int32)), 1)
    return {"all": np.ones_like(face, bool), "face": face > 0, "mouth": (mouth > 0) & (face > 0),
            "eyes": eyes > 0, "outside the face": face == 0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", type=Path)
    ap.add_argument("--model", default="default")
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--targets", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    net, detector = LPIPS(), make_detector("dlib")
    animator = make_animator(args.model, device="cpu", finetune_steps=0)
    part, area, n = {}, {}, 0
    for path in find_clips(args.clips):
        clip = load_eval_clip(path, animator.resolution, detector, args.shots, args.targets)
        animator.prepare(list(clip.shots), list(clip.shot_landmarks))
        maps = lpips_map(net, _render(animator, clip.target_landmarks), clip.targets)
        for m, lm in zip(maps, clip.target_landmarks):
            for name, r in regions(lm, m.shape[0]).items():
                part[name] = part.get(name, 0.0) + float(m[r].sum() / m.size)
                area[name] = area.get(name, 0.0) + float(r.mean())
            n += 1
        print(path.name, "done", flush=True)
    print(f"{args.model}, K={args.shots}, {n} targets: part of the LPIPS (share of the crop's area)")
    for name in part:
        print(f"  {name:18s} {part[name] / n:.4f} ({area[name] / n:.3f})")


if __name__ == "__main__":
    main()
