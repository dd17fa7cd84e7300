"""How well weights open a mouth the warp has shut: fixed photo episodes of the mouth-closing kind (an open-
mouthed photo, its mouth warped shut as the one shot, the photo as the target), feed-forward, scored on the
mouth crop (L1 and LPIPS, [-1, 1] images) against the plain warp of the shot; with a mouth painter also what it
painted (paint_share, paint_size: models.painter.paint_usage).

A quick check between training sessions that the painter learns: the episodes come from the training photos, so
this measures fitting; held-out figures come from `animate-evaluate` on val (its mouth metric).

    python scripts/mouth_probe.py PHOTO_CACHE WEIGHTS [WEIGHTS ...] [--episodes 32] [--seed 1] [--strip OUT.png]

--strip writes the first 8 episodes' mouths, one row each: the warp, each weights' output, the photo.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from animate_cli.losses import mouth_crop
from animate_cli.models.checkpoint import load_checkpoint
from animate_cli.models.painter import paint_usage
from animate_cli.models.perceptual import lpips
from animate_cli.train.episodes import reference_warp_and_landmarks
from animate_cli.train.photo_episodes import PhotoEpisodeDataset, PhotoEpisodeSettings

STRIP_ROWS = 8
MOUTH_ONLY = PhotoEpisodeSettings(view_weight=0.0, mouth_weight=1.0, eyes_weight=0.0)


@torch.no_grad()
def probe(weights: Path, photos: Path, episodes: int, seed: int, crops: dict | None = None) -> dict:
    """Mean scores over the episodes; `crops`, a dict, gets the mouth crops of the first STRIP_ROWS."""
    cfg, E, G, _ = load_checkpoint(weights)
    data = PhotoEpisodeDataset(photos, k_shots=1, resolution=cfg.resolution, seed=seed, settings=MOUTH_ONLY)
    scores: dict[str, list] = {}
    for i in range(episodes):
        b = {k: v[None] for k, v in data[i].items()}
        warped, ref_lm = reference_warp_and_landmarks(b["x_shots"], b["lm_shots"], b["lm_t"], reg=cfg.warp_reg)
        e_hat = E(b["x_shots"][:, 0], b["y_shots"][:, 0])
        parts: dict = {}
        out = G(b["y_t"], e_hat, warped=warped, landmarks=b["lm_t"], ref_landmarks=ref_lm, parts=parts)
        truth = mouth_crop(b["x_t"], b["lm_t"])
        if crops is not None and i < STRIP_ROWS:
            for name, image in (("warp", warped), (str(weights), out), ("photo", b["x_t"])):
                column = crops.setdefault(name, [])
                if len(column) <= i:  # the warp and the photo are the same for every weights
                    column.append(mouth_crop(image.clamp(-1, 1), b["lm_t"])[0])
        for name, image in (("warp", warped), ("model", out)):
            crop = mouth_crop(image.clamp(-1, 1), b["lm_t"])
            scores.setdefault(f"{name}_l1", []).append((crop - truth).abs().mean().item())
            scores.setdefault(f"{name}_lpips", []).append(lpips(crop, truth).item())
        if parts:
            for k, v in paint_usage(parts).items():
                scores.setdefault(k, []).append(v.item())
    return {k: float(np.nanmean(v)) for k, v in scores.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("photos", type=Path, help="a photo cache (animate-preprocess-photos)")
    ap.add_argument("weights", type=Path, nargs="+", help="weights folders (or a run's checkpoint folder)")
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1, help="which episodes (a run draws with seed 0 by default)")
    ap.add_argument("--strip", type=Path, help="write the first 8 episodes' mouths to this PNG")
    a = ap.parse_args()
    torch.set_num_threads(1)
    crops: dict = {}
    for w in a.weights:
        r = probe(w, a.photos, a.episodes, a.seed, crops if a.strip else None)
        print(f"{w}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items()))
    if a.strip:
        columns = [torch.stack(v) for v in (crops["warp"], *(crops[str(w)] for w in a.weights), crops["photo"])]
        grid = torch.cat([torch.cat(list(c), dim=1) for c in columns], dim=2)  # (3, rows*S, columns*S)
        image = ((grid.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        image = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(a.strip), image[..., ::-1])
        print(f"{a.strip}: rows = episodes; columns = warp, " + ", ".join(map(str, a.weights)) + ", photo")


if __name__ == "__main__":
    main()
