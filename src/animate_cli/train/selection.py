"""Learn which shot to warp: a linear score of landmark distances, fitted to the warp's SSIM on real frames.

With several pictures of a person, the picture whose warp looks most like the frame is not always the one
whose expression is nearest (the `warp` model's rule): one framed and posed like the target moves the
background and the head outline less. Only geometry enters the score (references.SELECTION_FEATURES),
never colours, so what is learned from the few training people carries over to others. For each clip of
a training cache, `n_shots` random frames are warped to `n_targets` others; a ridge regression of the
SSIM on log1p(10·features), both centred per target (only the ranking among one target's shots
matters), gives the weights, which `animate-fit-selection` writes into a weights folder's config.json.
It also picks the spline regularisation of the model's warps (ModelConfig.warp_reg): landmarks are noisy,
and a spline that follows each one exactly drags the picture along with the noise.
"""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..errors import AnimateError
from ..evaluation.metrics import ssim
from ..models.checkpoint import CONFIG_NAME
from ..references import learned_cost, selection_features
from ..warp import warp_image
from .episodes import from_model_tensor, to_model_tensor
from .preprocess import INDEX, decode_frame, load_clip, progress_bar

WARP_REGS = (1e-3, 3e-3, 1e-2, 2e-2, 5e-2, 1e-1)  # the spline regularisations animate-fit-selection tries


@dataclass
class FitSelectionOptions:
    """What `animate-fit-selection` does, with its defaults."""
    shots: int = 8  # random frames of each clip warped to each target
    targets: int = 4  # target frames per clip
    max_clips: int | None = None
    warp_regs: tuple = WARP_REGS  # spline regularisations tried (warp.tps_grid); the best mean SSIM is kept
    seed: int = 0
    threads: int | None = None  # torch CPU threads
    progress: bool = True

    def __post_init__(self) -> None:
        if self.shots < 2:
            raise AnimateError("--shots must be 2 or more: there is nothing to choose from one shot")
        for flag, value in (("--targets", self.targets), ("--max-clips", self.max_clips), ("--threads", self.threads)):
            if value is not None and value < 1:
                raise AnimateError(f"{flag} must be 1 or more (got {value})")
        if not self.warp_regs or not all(0 < r <= 1 for r in self.warp_regs):  # (NaN fails this too)
            raise AnimateError("--warp-reg values must be numbers in (0, 1]")


def usable_clips(cache_dir, n_shots: int, max_clips: int | None = None) -> list[dict]:
    """The cache's index entries with more frames than shots (one is the target), at most max_clips."""
    root = Path(cache_dir)
    if not (root / INDEX).exists():
        raise AnimateError(f"no {INDEX} in {root}: run animate-preprocess first")
    entries = [e for e in json.loads((root / INDEX).read_text()) if e["frames"] > n_shots][:max_clips]
    if not entries:
        raise AnimateError(f"no clip in {root} has more than {n_shots} frames")
    return entries


def _clips(cache_dir, n_shots: int, max_clips: int | None):
    """(index entry, the clip's arrays, its landmarks as float32) for each usable clip; an unreadable clip
    is a one-line error."""
    root = Path(cache_dir)
    for entry in usable_clips(root, n_shots, max_clips):
        try:
            z = load_clip(root / entry["clip"])
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise AnimateError(f"cannot read {entry['clip']} in {root}: {e.__class__.__name__}") from None
        yield entry, z, z["landmarks"].astype(np.float32)


def selection_data(cache_dir, n_shots: int, n_targets: int, seed: int, max_clips: int | None, reg: float,
                   progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(features (P, n_shots, F), SSIM of each shot's warp (P, n_shots), warped with spline regularisation
    `reg`), one row per target frame. `progress(clip)` is called after each clip."""
    rng = np.random.default_rng(seed)
    feats, scores = [], []
    for entry, z, lms in _clips(cache_dir, n_shots, max_clips):
        shots = np.sort(rng.choice(len(lms), n_shots, replace=False))
        others = np.setdiff1d(np.arange(len(lms)), shots)
        targets = rng.choice(others, min(n_targets, len(others)), replace=False)
        images = {i: decode_frame(z["jpeg"], z["offsets"], int(i)) for i in np.concatenate([shots, targets])}
        x = to_model_tensor(np.stack([images[i] for i in shots]))
        with torch.no_grad():
            for t in targets:
                dst = torch.from_numpy(lms[t][None]).expand(n_shots, -1, -1)
                warped = from_model_tensor(warp_image(x, torch.from_numpy(lms[shots]), dst, reg=reg))
                scores.append(ssim(warped, np.repeat(images[t][None], n_shots, 0)))
                feats.append(selection_features(lms[shots], lms[t][None])[0].numpy())
        if progress is not None:
            progress(entry["clip"])
    return np.stack(feats), np.stack(scores)


def warp_reg_scores(cache_dir, regs, n_targets: int, seed: int, max_clips: int | None,
                    progress=None) -> np.ndarray:
    """SSIM of one random frame of each clip warped to `n_targets` others, at each spline regularisation in
    `regs`: (pairs, len(regs)). Small values follow every landmark exactly, noise included; large ones bend
    the picture less than the landmarks ask. `progress(clip)` is called after each clip."""
    rng = np.random.default_rng(seed)
    rows = []
    for entry, z, lms in _clips(cache_dir, 1, max_clips):
        shot = int(rng.integers(len(lms)))
        targets = rng.choice(np.setdiff1d(np.arange(len(lms)), [shot]), min(n_targets, len(lms) - 1), replace=False)
        x = to_model_tensor(decode_frame(z["jpeg"], z["offsets"], shot)[None])
        truth = np.stack([decode_frame(z["jpeg"], z["offsets"], int(t)) for t in targets])
        src = torch.from_numpy(lms[shot][None]).expand(len(targets), -1, -1)
        with torch.no_grad():
            rows.append(np.stack([ssim(from_model_tensor(warp_image(x.expand(len(targets), -1, -1, -1), src,
                                                           torch.from_numpy(lms[targets]), reg=r)), truth)
                                  for r in regs], axis=1))
        if progress is not None:
            progress(entry["clip"])
    return np.concatenate(rows)


def fit_selection(features: np.ndarray, scores: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """Ridge weights w (penalty `ridge` per row): log1p(10·features) · w predicts each shot's score
    relative to the target's other shots."""
    a = np.log1p(10 * np.asarray(features, np.float64))
    a = a - a.mean(axis=1, keepdims=True)
    b = np.asarray(scores, np.float64)
    b = b - b.mean(axis=1, keepdims=True)
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1)
    return np.linalg.solve(a.T @ a + ridge * len(b) * np.eye(a.shape[1]), a.T @ b)


def chosen_score(features: np.ndarray, scores: np.ndarray, weights=()) -> float:
    """Mean score of the shot each rule picks: the nearest shape (no weights) or the learned score."""
    f = torch.as_tensor(np.asarray(features, np.float32))
    cost = f[..., 0] if not len(weights) else learned_cost(f, weights)  # feature 0 = the shape distance
    pick = cost.argmin(dim=1).numpy()
    return float(np.asarray(scores)[np.arange(len(pick)), pick].mean())


def _weights_config(weights_dir) -> tuple[Path, dict, ModelConfig]:
    """(config.json path, its data, the ModelConfig) of a warp model's weights folder, or a clear error."""
    path = Path(weights_dir) / CONFIG_NAME
    if not path.is_file():
        raise AnimateError(f"no {CONFIG_NAME} in {weights_dir}")
    try:
        data = json.loads(path.read_text())
        cfg = ModelConfig.from_dict(data["config"])
    except (ValueError, KeyError, TypeError):
        raise AnimateError(f"{path} is not a model config") from None
    if cfg.generator != "warp":
        raise AnimateError("only the warp generator chooses shots to warp")
    return path, data, cfg


def write_selection(weights_dir, weights: np.ndarray, warp_reg: float | None = None) -> Path:
    """Put the weights (and the spline regularisation, when given) into a weights folder's config.json
    (atomically); the networks stay as they are."""
    path, data, cfg = _weights_config(weights_dir)
    cfg = dataclasses.replace(cfg, selection=tuple(round(float(w), 6) for w in weights))
    if warp_reg is not None:
        cfg = dataclasses.replace(cfg, warp_reg=float(warp_reg))
    data["config"] = cfg.to_dict()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
    return path


def fit_selection_into(cache_dir, weights_dir, opts: FitSelectionOptions | None = None, **kwargs) -> dict:
    """The whole `animate-fit-selection`: pick the spline regularisation, fit the selection on warps made
    with it, write both into the weights folder's config.json; returns a report of the figures."""
    o = dataclasses.replace(opts or FitSelectionOptions(), **kwargs)
    if o.threads:
        torch.set_num_threads(o.threads)
    _weights_config(weights_dir)  # refuse before the long part
    total = len(usable_clips(cache_dir, o.shots, o.max_clips))
    with progress_bar(o.progress, total, "warp at each regularisation") as advance:
        reg_scores = warp_reg_scores(cache_dir, o.warp_regs, o.targets, o.seed, o.max_clips, advance)
    reg = float(o.warp_regs[int(np.argmax(reg_scores.mean(axis=0)))])
    with progress_bar(o.progress, total, "warp each shot to other frames") as advance:
        feats, scores = selection_data(cache_dir, o.shots, o.targets, o.seed, o.max_clips, reg, advance)
    w = fit_selection(feats, scores)
    path = write_selection(weights_dir, w, reg)
    return {"rows": len(scores), "ssim_nearest_shape": round(chosen_score(feats, scores), 4),
            "ssim_learned": round(chosen_score(feats, scores, w), 4),
            "ssim_best_possible": round(float(np.max(scores, axis=1).mean()), 4), "warp_reg": reg,
            "ssim_by_warp_reg": {f"{r:g}": round(float(v), 4) for r, v in zip(o.warp_regs, reg_scores.mean(axis=0))},
            "config": str(path)}
