"""The run folder: everything a training run leaves on disk, and what lets it resume exactly.

    checkpoint/      E, G, D (safetensors, models.checkpoint) + train_state.pt (optimisers, step, RNG
                     states: our own file, read with weights_only=True); replaced atomically
    options.json     the TrainOptions of the first start
    losses.csv       one row per logged step
    samples/*.png    driver landmarks | shots | warped reference | output | truth
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import AnimateError
from ..models.checkpoint import load_checkpoint, save_checkpoint

CHECKPOINT = "checkpoint"
STATE = "train_state.pt"
OPTIONS = "options.json"
LOSSES = "losses.csv"
SAMPLES = "samples"


def rng_state() -> dict:
    """All RNG states as tensors and plain numbers, so torch.load(weights_only=True) can read them."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else torch.zeros(0, dtype=torch.uint8),
            "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_rest": [int(pos), int(has_gauss), float(gauss)],
            "python": list(random.getstate()[1])}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if torch.cuda.is_available() and s["cuda"].numel():
        torch.cuda.set_rng_state(s["cuda"])
    pos, has_gauss, gauss = s["numpy_rest"]
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss), gauss))
    random.setstate((3, tuple(s["python"]), None))


def save_run_checkpoint(run: Path, cfg, E, G, D, state: dict) -> Path:
    """Atomic: write checkpoint.tmp, move the old one aside, rename, delete the old. A kill at any point
    leaves a complete checkpoint (or checkpoint.old) behind."""
    final, tmp, old = run / CHECKPOINT, run / (CHECKPOINT + ".tmp"), run / (CHECKPOINT + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, cfg, E, G, D, extra={"step": state["step"]})
    torch.save(state, tmp / STATE)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(run: Path) -> Path | None:
    """The run's checkpoint folder, or None before the first save."""
    for name in (CHECKPOINT, CHECKPOINT + ".old"):  # .old survives a kill between the two renames
        if (run / name / STATE).exists():
            return run / name
    return None


def load_run_checkpoint(folder: Path):
    """(cfg, E, G, D, training state) of a checkpoint folder, on the CPU."""
    cfg, E, G, D = load_checkpoint(folder, device="cpu", with_discriminator=True)
    return cfg, E, G, D, torch.load(folder / STATE, map_location="cpu", weights_only=True)


def write_options(run: Path, opts) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / OPTIONS).write_text(json.dumps(dataclasses.asdict(opts), indent=1))


def append_losses(run: Path, row: dict) -> None:
    """One row of losses.csv (the header with the first row)."""
    path = run / LOSSES
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def write_sample_grid(path: Path, rows: list[list[torch.Tensor]]) -> None:
    """Tiles (3,R,R) in [-1,1], one list per row, side by side, as a PNG written atomically."""
    grid = torch.cat([torch.cat([t.float().cpu() for t in tiles], dim=2) for tiles in rows], dim=1)
    img = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    os.replace(tmp, path)


def export(run_or_checkpoint, out_dir) -> Path:
    """The inference checkpoint (E, G, D safetensors + config.json), without optimiser state."""
    src = Path(run_or_checkpoint)
    for cand in (src / CHECKPOINT, src / (CHECKPOINT + ".old"), src):
        if (cand / "config.json").exists():
            src = cand
            break
    else:
        raise AnimateError(f"no checkpoint in {run_or_checkpoint}")
    cfg, E, G, D = load_checkpoint(src, device="cpu", with_discriminator=True)
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, cfg, E, G, D)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
