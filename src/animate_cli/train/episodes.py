"""Meta-learning episodes over the preprocessing cache (paper §3.2).

An episode is one training *video* i (one `<identity>/<youtube-id>` folder = one column W_i of D):
K shots and one target frame drawn from that video's clips, the target never among the shots.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import AnimateError
from ..face.draw import landmark_tensor
from ..references import choose_shots, warp_references
from ..warp import DEFAULT_REG
from .preprocess import INDEX, decode_frame, load_clip


def video_split(videos: list[str], val_per_identity: int) -> tuple[list[str], list[str]]:
    """Deterministic hold-out: per identity, the `val_per_identity` videos with the smallest name hash.

    Hashing (not sorting) keeps the choice stable when videos are added and spreads it over the alphabet.
    Identities with too few videos keep at least one for training.
    """
    by_id: dict[str, list[str]] = {}
    for v in videos:
        by_id.setdefault(v.split("/")[0], []).append(v)
    val = set()
    for vs in by_id.values():
        n = min(val_per_identity, len(vs) - 1)
        if n > 0:
            val.update(sorted(vs, key=lambda v: hashlib.sha1(v.encode()).hexdigest())[:n])
    return [v for v in videos if v not in val], [v for v in videos if v in val]


def _mirror_order() -> np.ndarray:
    """iBUG-68 index permutation of a horizontally mirrored face: point i of the mirror image is the
    mirror of point order[i] (the left eye becomes the right eye, the jaw runs the other way, ...)."""
    order = list(range(16, -1, -1))  # jaw
    order += list(range(26, 21, -1)) + list(range(21, 16, -1))  # brows swap sides
    order += [27, 28, 29, 30] + list(range(35, 30, -1))  # nose bridge stays, nostrils reverse
    order += [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes swap, corners stay corners
    order += list(range(54, 47, -1)) + list(range(59, 54, -1))  # outer lips
    order += list(range(64, 59, -1)) + [67, 66, 65]  # inner lips
    return np.array(order)


MIRROR = _mirror_order()


def mirror(images: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,H,W,3), (N,68,2) px -> the horizontally mirrored frames and their landmarks (re-indexed)."""
    w = images.shape[2]
    lms = landmarks[:, MIRROR].copy()
    lms[..., 0] = w - 1 - lms[..., 0]
    return np.ascontiguousarray(images[:, :, ::-1]), lms


def colour_jitter(images: np.ndarray, rng: np.random.Generator, amount: float = 1.0) -> np.ndarray:
    """The same random brightness, contrast, saturation and per-channel gain for all frames of an episode:
    four identities' skin tones and lighting are all the data has, so vary them."""
    x = images.astype(np.float32)
    grey = x.mean(axis=-1, keepdims=True)
    x = grey + (x - grey) * (1 + amount * rng.uniform(-0.3, 0.3))  # saturation
    x = (x - x.mean()) * (1 + amount * rng.uniform(-0.2, 0.2)) + x.mean()  # contrast
    x = x * (1 + amount * rng.uniform(-0.08, 0.08, size=3)) + amount * rng.uniform(-20, 20)  # gain, brightness
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def to_model_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W,3) -> float32 (N,3,H,W) in [-1,1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def from_model_tensor(images: torch.Tensor) -> np.ndarray:
    """float (N,3,H,W) in [-1,1] -> uint8 (N,H,W,3), rounded as the animators round their output."""
    x = ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


class EpisodeDataset(Dataset):
    """Item idx -> an episode of video `idx % n_videos`, its frames drawn with an RNG seeded by
    (seed, epoch, idx), so a resumed run sees exactly the episodes it would have seen.

    `augment` mirrors half the episodes and jitters their colours (training only).
    Returns a dict: x_shots (K,3,R,R) and y_shots (landmark images) in [-1,1], x_t, y_t (3,R,R),
    lm_shots (K,68,2), lm_t (68,2) in pixels at R, video (index of the video = D's W column).
    """

    def __init__(self, cache_dir, k_shots: int = 8, resolution: int | None = None, split: str = "all",
                 val_per_identity: int = 0, episodes_per_epoch: int | None = None, seed: int = 0,
                 augment: bool = False):
        self.root = Path(cache_dir)
        index_path = self.root / INDEX
        if not index_path.exists():
            raise AnimateError(f"no {INDEX} in {self.root}: run animate-preprocess first")
        entries = json.loads(index_path.read_text())
        clips: dict[str, list[tuple[str, int]]] = {}
        for e in entries:
            if e["frames"] > 0:
                clips.setdefault(f"{e['identity']}/{e['video']}", []).append((e["clip"], e["frames"]))
        # a video must hold K+1 distinct frames to make an episode
        videos = sorted(v for v, cs in clips.items() if sum(n for _, n in cs) >= k_shots + 1)
        train, val = video_split(videos, val_per_identity)
        chosen = {"all": videos, "train": train, "val": val}.get(split)
        if chosen is None:
            raise AnimateError(f"unknown split {split!r} (all, train, val)")
        if not chosen:
            raise AnimateError(f"no video in {self.root} ({split} split) has {k_shots + 1} frames")
        self.videos = chosen
        self.clips = [clips[v] for v in chosen]
        self.k = k_shots
        self.seed = seed
        self.augment = augment
        self.epoch = 0
        self.episodes_per_epoch = episodes_per_epoch or len(chosen)
        first = load_clip(self.root / self.clips[0][0][0])
        self.cache_resolution = int(first["resolution"])
        self.resolution = resolution or self.cache_resolution

    @property
    def n_videos(self) -> int:
        return len(self.videos)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.episodes_per_epoch

    def _frames(self, clip: str, which: list[int]) -> tuple[np.ndarray, np.ndarray]:
        z = load_clip(self.root / clip)
        imgs = np.stack([decode_frame(z["jpeg"], z["offsets"], i) for i in which])
        lms = z["landmarks"][which].astype(np.float32)
        if self.resolution != imgs.shape[1]:
            s = self.resolution / imgs.shape[1]
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
            imgs = np.stack([cv2.resize(im, (self.resolution, self.resolution), interpolation=interp) for im in imgs])
            # pixel centres: x_new + 0.5 = s * (x_old + 0.5)
            lms = (lms + 0.5) * s - 0.5
        return imgs, lms

    def sample_indices(self, idx: int) -> tuple[int, list[tuple[int, int]]]:
        """(video, [(clip, frame)] * (K+1)) with the target last; all K+1 distinct by construction."""
        v = idx % self.n_videos
        rng = np.random.default_rng((self.seed, self.epoch, idx))
        counts = np.array([n for _, n in self.clips[v]])
        flat = rng.choice(int(counts.sum()), size=self.k + 1, replace=False)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pairs = []
        for f in flat:
            c = int(np.searchsorted(starts, f, side="right") - 1)
            pairs.append((c, int(f - starts[c])))
        return v, pairs

    def __getitem__(self, idx: int) -> dict:
        v, pairs = self.sample_indices(idx)
        imgs = [None] * len(pairs)
        lms = [None] * len(pairs)
        by_clip: dict[int, list[int]] = {}
        for j, (c, _) in enumerate(pairs):
            by_clip.setdefault(c, []).append(j)
        for c, js in by_clip.items():  # each clip file opened once
            im, lm = self._frames(self.clips[v][c][0], [pairs[j][1] for j in js])
            for j, a, b in zip(js, im, lm):
                imgs[j], lms[j] = a, b
        imgs, lms = np.stack(imgs), np.stack(lms)
        if self.augment:  # mirror half the episodes and jitter colours, all frames alike
            rng = np.random.default_rng((self.seed, self.epoch, idx, 1))
            if rng.random() < 0.5:
                imgs, lms = mirror(imgs, lms)
            imgs = colour_jitter(imgs, rng)
        x = to_model_tensor(imgs)
        lm = torch.from_numpy(lms)
        y = landmark_tensor(lm.numpy(), self.resolution)
        k = self.k
        return {"x_shots": x[:k], "y_shots": y[:k], "x_t": x[k], "y_t": y[k],
                "lm_shots": lm[:k], "lm_t": lm[k], "video": torch.tensor(v, dtype=torch.long)}


def reference_warp(x_shots: torch.Tensor, lm_shots: torch.Tensor, lm_t: torch.Tensor,
                   random_share: float = 0.0, generator: torch.Generator | None = None,
                   reg: float = DEFAULT_REG) -> torch.Tensor:
    """The nearest shot warped (thin-plate spline) into the target pose: (B,3,R,R), batched on the batch's
    device, for the warp-guided generator (references.py), as at inference with many shots. With
    probability `random_share` per episode a random shot is warped instead, as with one shot (a
    closed-mouth portrait driven to speak): nearest shots almost always share the target's mouth and eyes,
    so without far references G never learns to paint an opening mouth. Random draws come from
    `generator` (a CPU generator; the trainer seeds one per step so that a resumed run draws the same),
    else torch's global RNG. `reg`: the model's spline regularisation (ModelConfig.warp_reg)."""
    return reference_warp_and_landmarks(x_shots, lm_shots, lm_t, random_share, generator, reg)[0]


def reference_warp_and_landmarks(x_shots: torch.Tensor, lm_shots: torch.Tensor, lm_t: torch.Tensor,
                                 random_share: float = 0.0, generator: torch.Generator | None = None,
                                 reg: float = DEFAULT_REG) -> tuple[torch.Tensor, torch.Tensor]:
    """reference_warp's image and the landmarks (B,68,2) of the shot each row warped: the mouth painter
    compares that shot's mouth with the target's."""
    chosen = choose_shots(lm_shots, lm_t, (), random_share=random_share, generator=generator)
    rows = torch.arange(len(chosen), device=lm_shots.device)
    return warp_references(x_shots, lm_shots, lm_t, chosen, reg=reg), lm_shots[rows, chosen.to(lm_shots.device)]
