"""Single-photo episodes: pairs made from one still, so that thousands of people can teach the generator.

A photo has no second view, so the shots are made from it and the photo itself is the target:
- `view`: the photo warped (thin-plate spline) to landmarks moved a little: rotation, scale, shift, a
  yaw-like squeeze of one side of the face and expression jitter;
- `mouth`: an open-mouthed photo with its mouth warped shut (inner lips brought together, lower lip and
  chin raised with them): to get the target back the model must open the mouth and paint teeth, tongue
  and the dark inside — what four video identities cannot teach and a warp cannot do;
- `eyes`: likewise with the eyelids shut: the model must paint the eyes open.

Closing a gap with one smooth spline would smear what lay in the gap (teeth) into the closed line. So a
closing is two splines, one that takes each lip (lid) from its own side and one from the other,
joined along the closed line; a ring of points around the mouth (eye), moved by the spline of the
untouched points, pins both to the same motion outside it, so the join leaves no seam beyond the ring.
A made shot is resampled once more than a real one (the trainer warps it to the target's pose), so it is
lightly sharpened: G sees references as sharp as real ones and does not learn to undo a double blur.

Items are the video `EpisodeDataset`'s dict (x_shots, y_shots, x_t, y_t, lm_shots, lm_t, video), with
`video` the person's index; `MixedEpisodeDataset` draws from video and photo episodes in a set ratio.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import AnimateError
from ..face.draw import landmark_tensor
from ..face.regions import EYELIDS, INNER_LIPS, OPEN_MOUTH_GAP, interocular
from ..warp import DEFAULT_REG, resample, tps_grid
from .episodes import colour_jitter, mirror, to_model_tensor
from .photos import PHOTO_INDEX
from .preprocess import decode_frame, load_clip

KINDS = ("view", "mouth", "eyes")
# outer-lip points that move with the inner upper / lower lip, and how much (the ones by the corners half)
UPPER_OUTER_LIP = {49: 0.5, 50: 1.0, 51: 1.0, 52: 1.0, 53: 0.5}
LOWER_OUTER_LIP = {55: 0.5, 56: 1.0, 57: 1.0, 58: 1.0, 59: 0.5}
# jaw points that rise with the lower lip when the mouth closes (the chin most; the jaw hinges by the ears)
JAW_FOLLOW = {4: 0.2, 5: 0.4, 6: 0.6, 7: 0.8, 8: 1.0, 9: 0.8, 10: 0.6, 11: 0.4, 12: 0.2}
EYE_POINTS = (slice(36, 42), slice(42, 48))
# the edges of each opening, corner to corner: (upper, lower)
MOUTH_EDGES = ((60, 61, 62, 63, 64), (60, 67, 66, 65, 64))
EYE_EDGES = (((36, 37, 38, 39), (36, 41, 40, 39)), ((42, 43, 44, 45), (42, 47, 46, 45)))
RING_POINTS = 12
CONTOUR_STEPS = 3


@dataclass(frozen=True)
class PhotoEpisodeSettings:
    """How photo episodes are made (one typed place for the defaults)."""
    view_weight: float = 0.3  # shares of the three kinds (a kind without eligible photos drops out)
    mouth_weight: float = 0.5
    eyes_weight: float = 0.2
    rotation_deg: float = 6.0  # view: uniform in ±, about the face's centre
    scale: float = 0.05  # view: relative, uniform in ±
    shift: float = 0.03  # view: fraction of the crop side, uniform in ± per axis
    yaw: float = 0.15  # view: how much one side of the face is squeezed towards the nose (a turn)
    expression: float = 0.015  # view: landmark noise, in inter-ocular distances
    closing_pose: float = 0.5  # mouth / eyes: the view's perturbation scaled by this (0 = shut only)
    upper_lip_share: float = 0.3  # of a mouth's gap, the part the upper lip moves (the jaw drops the rest)
    upper_lid_share: float = 0.8  # of an eye's gap, the part the upper lid moves
    lip_overlap: float = 0.04  # a closed lip is read this far (inter-ocular distances) beyond its landmark
    lid_overlap: float = 0.02  # likewise an eyelid
    open_eye_gap: float = 0.05  # eyes episodes need both eyelid gaps above this (inter-ocular distances)
    # unsharp mask of the made shots (amount, sigma px): after the trainer's warp a made shot keeps 0.82 of
    # the photo's Laplacian energy, a real shot 0.83 (0.68 without it; 20 LFW photos)
    sharpen: float = 0.5
    sharpen_sigma: float = 0.7
    warp_reg: float = DEFAULT_REG
    made_shots: int = 2  # an episode's K shots cycle through this many made ones (10-25 ms of CPU each at 256²)


# ----------------------------------------------------------------------------------------------
# Landmarks of the made shots.


def perturb_view(landmarks: np.ndarray, rng: np.random.Generator, size: int,
                 settings: PhotoEpisodeSettings = PhotoEpisodeSettings(), amount: float = 1.0) -> np.ndarray:
    """(68,2) px -> the same face a little turned, tilted, moved and re-expressed."""
    s = settings
    lm = np.asarray(landmarks, np.float64)
    iod = float(interocular(lm))
    centre = lm.mean(0)
    # yaw-like turn: the side the face turns to is squeezed towards the nose line, the nose follows a little
    yaw = rng.uniform(-1, 1) * s.yaw * amount
    midline = lm[27:31, 0].mean()
    dx = lm[:, 0] - midline
    towards = np.sign(dx) == np.sign(yaw)
    squeeze = np.where(towards, 1 - abs(yaw), 1 + 0.3 * abs(yaw))
    out = lm.copy()
    out[:, 0] = midline + dx * squeeze
    out[27:36, 0] += yaw * 0.25 * iod
    # expression: a brow raise and per-point noise
    out[17:27, 1] += rng.normal(0, 1.5 * s.expression * amount) * iod
    out += rng.normal(0, s.expression * amount, out.shape) * iod
    # similarity about the face's centre
    angle = np.deg2rad(rng.uniform(-1, 1) * s.rotation_deg * amount)
    scale = 1 + rng.uniform(-1, 1) * s.scale * amount
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shift = rng.uniform(-1, 1, 2) * s.shift * size * amount
    return ((out - centre) @ rot.T + centre + shift).astype(np.float32)


def close_mouth(landmarks: np.ndarray, upper_share: float = PhotoEpisodeSettings.upper_lip_share) -> np.ndarray:
    """(68,2) px -> the inner lips brought together: the upper lip moves `upper_share` of the gap down,
    the lower lip the rest up, and the chin rises with it."""
    lm = np.asarray(landmarks, np.float64)
    out = lm.copy()
    gaps = np.array([lm[lo] - lm[up] for up, lo in INNER_LIPS])  # (3,2) upper -> lower
    for i, (up, lo) in enumerate(INNER_LIPS):
        out[up] = out[lo] = lm[up] + upper_share * gaps[i]
    upper_move, lower_move = upper_share * gaps.mean(0), -(1 - upper_share) * gaps.mean(0)
    for i, w in UPPER_OUTER_LIP.items():
        out[i] = lm[i] + w * upper_move
    for i, w in (LOWER_OUTER_LIP | JAW_FOLLOW).items():
        out[i] = lm[i] + w * lower_move
    return out.astype(np.float32)


def close_eyes(landmarks: np.ndarray, upper_share: float = PhotoEpisodeSettings.upper_lid_share) -> np.ndarray:
    """(68,2) px -> both eyes shut: each upper lid moves `upper_share` of the gap down, the lower lid the rest up."""
    lm = np.asarray(landmarks, np.float64)
    out = lm.copy()
    for pairs in EYELIDS:
        for up, lo in pairs:
            out[up] = out[lo] = lm[up] + upper_share * (lm[lo] - lm[up])
    return out.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# The warps.


def _ring(points: np.ndarray, width_scale: float, height_scale: float) -> np.ndarray:
    """RING_POINTS px on an ellipse around `points`, its axes scaled from their width."""
    lo, hi = points.min(0), points.max(0)
    centre, width = (lo + hi) / 2, max(hi[0] - lo[0], 1.0)
    t = np.linspace(0, 2 * np.pi, RING_POINTS, endpoint=False)
    return np.stack([centre[0] + width_scale * width * np.cos(t), centre[1] + height_scale * width * np.sin(t)], 1)


def smooth_contour(points: np.ndarray, per_segment: int = CONTOUR_STEPS) -> np.ndarray:
    """A polyline of landmarks -> points along a smooth curve through them (Catmull-Rom), `per_segment`
    steps a segment, ends included: a lip's edge bulges between its landmarks, the chord does not."""
    p = np.asarray(points, np.float64)
    padded = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    out = [p[:1]]
    t = np.arange(1, per_segment + 1)[:, None] / per_segment
    for i in range(len(p) - 1):
        p0, p1, p2, p3 = padded[i:i + 4]
        out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3))
    return np.concatenate(out)


def closing_regions(dst: np.ndarray, kind: str) -> list[tuple[list[int], list[int], np.ndarray]]:
    """Per opening shut in `dst`: (its upper edge's landmarks corner to corner, its lower edge's, the
    ring around it in `dst` px)."""
    if kind == "mouth":
        return [(list(MOUTH_EDGES[0]), list(MOUTH_EDGES[1]), _ring(dst[48:60], 0.85, 0.6))]
    if kind == "eyes":
        return [(list(up), list(lo), _ring(dst[sl], 0.85, 0.55)) for (up, lo), sl in zip(EYE_EDGES, EYE_POINTS)]
    raise AnimateError(f"unknown closing {kind!r} (mouth, eyes)")


def _lower_mask(lines: list[np.ndarray], rings: list[np.ndarray], size) -> np.ndarray:
    """(H,W) float32 in [0,1]: 1 inside a ring and below its closed line, where the lower side is read
    from; edges antialiased (polygons drawn with 4 bits of sub-pixel precision)."""
    h, w = size
    mask = np.zeros((h, w), np.float32)
    fixed = lambda p: np.round(np.asarray(p) * 16).astype(np.int32)  # noqa: E731  (cv2's shift=4)
    for line, ring in zip(lines, rings):
        inside, half = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
        cv2.fillPoly(inside, [fixed(ring)], 255, cv2.LINE_AA, 4)
        far = 4 * max(h, w)
        below = np.concatenate([[[line[0, 0] - far, line[0, 1]]], line, [[line[-1, 0] + far, line[-1, 1]]],
                                [[line[-1, 0] + far, line[-1, 1] + far], [line[0, 0] - far, line[0, 1] + far]]])
        cv2.fillPoly(half, [fixed(below)], 255, cv2.LINE_AA, 4)
        mask = np.maximum(mask, np.minimum(inside, half).astype(np.float32) / 255)
    return mask


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()


def _spline_at(src: np.ndarray, dst: np.ndarray, points: np.ndarray, size, reg: float, coarse: int = 64) -> np.ndarray:
    """Where the spline taking `dst` to `src` (px in a `size` frame) reads from at `points` (N,2) px.

    The spline lives in normalised coordinates, so it is solved on a coarse × coarse frame (points
    rescaled alike, evaluated exactly) and read there bilinearly: the same spline at a fraction of the cost."""
    h, w = size
    scale = np.array([coarse / w, coarse / h])
    small = lambda p: torch.from_numpy(((np.asarray(p, np.float64) + 0.5) * scale - 0.5).astype(np.float32))  # noqa: E731
    grid = tps_grid(small(src), small(dst), (coarse, coarse), reg=reg, step=1)  # (1,c,c,2) normalised
    uv = torch.from_numpy(((np.asarray(points, np.float64) + 0.5) * [2.0 / w, 2.0 / h] - 1.0).astype(np.float32))
    read = resample(grid.permute(0, 3, 1, 2), uv.view(1, 1, -1, 2))[0, :, 0].T  # (N,2) normalised
    return (read.double().numpy() + 1.0) * [w / 2.0, h / 2.0] - 0.5


def warp_photo(image: np.ndarray, src: np.ndarray, dst: np.ndarray, closing: str | None = None,
               overlap: float = 0.0, reg: float = DEFAULT_REG) -> np.ndarray:
    """(H,W,3) uint8 photo whose landmarks are `src` -> the photo moved so they sit at `dst` (px).

    `closing` ("mouth" or "eyes"): dst has those openings shut (facing points coincide), and each side
    of the closed line is read from its own side of the photo (see the module's docstring), `overlap`
    px beyond its landmark: landmarks sit near, not on, a lip's edge, and what lies between (a sliver of
    teeth) must not show in the closed line."""
    size = image.shape[:2]
    x = _as_tensor(image)
    pts = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731  (float32 grids: 2x faster)
    if closing is None:
        out = resample(x, tps_grid(pts(src), pts(dst), size, reg=reg))[0]
    else:
        src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
        regions = closing_regions(dst, closing)
        moved = {i for up, lo, _ in regions for i in up[1:-1] + lo[1:-1]}  # the corners stay put
        keep = [i for i in range(68) if i not in moved]
        rings = [r for _, _, r in regions]
        # the ring moves as the untouched points make it move, in both splines alike
        rings_src = _spline_at(src[keep], dst[keep], np.concatenate(rings), size, reg)
        # the closed line, densely along the lips' curves; each spline reads it from one side
        lines, line_dst, from_upper, from_lower = [], [], [], []
        for up, lo, _ in regions:
            line = smooth_contour(dst[up])
            up_src, lo_src = smooth_contour(src[up])[1:-1], smooth_contour(src[lo])[1:-1]
            away = up_src - lo_src
            away /= np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-6)
            lines.append(line)
            line_dst.append(line[1:-1])
            from_upper.append(up_src + overlap * away)
            from_lower.append(lo_src - overlap * away)
        common_src, common_dst = np.concatenate([src[keep], rings_src]), np.concatenate([dst[keep], *rings])
        srcs = np.stack([np.concatenate([common_src, *from_upper]), np.concatenate([common_src, *from_lower])])
        dsts = np.concatenate([common_dst, *line_dst])
        grids = tps_grid(pts(srcs), pts(dsts)[None], size, reg=reg)
        both = resample(x.expand(2, -1, -1, -1), grids)
        m = torch.from_numpy(_lower_mask(lines, rings, size))[None]
        out = both[0] * (1 - m) + both[1] * m
    return np.round(out.permute(1, 2, 0).clamp(0, 255).numpy()).astype(np.uint8)


def sharpen(image: np.ndarray, amount: float, sigma: float) -> np.ndarray:
    """Unsharp mask: the made shot is resampled once more in training (shot -> target pose) than a real
    shot; this gives back the detail that second resample takes (see PhotoEpisodeSettings.sharpen)."""
    if amount <= 0:
        return image
    x = image.astype(np.float32)
    x = x + amount * (x - cv2.GaussianBlur(x, (0, 0), sigma))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def make_shot(image: np.ndarray, landmarks: np.ndarray, kind: str, rng: np.random.Generator,
              settings: PhotoEpisodeSettings = PhotoEpisodeSettings()) -> tuple[np.ndarray, np.ndarray]:
    """One made shot of the photo for an episode of `kind` -> (image, its landmarks)."""
    size = image.shape[0]
    if kind == "view":
        dst = perturb_view(landmarks, rng, size, settings)
        shot = warp_photo(image, landmarks, dst, reg=settings.warp_reg)
        return sharpen(shot, settings.sharpen, settings.sharpen_sigma), dst
    if kind not in ("mouth", "eyes"):
        raise AnimateError(f"unknown photo episode kind {kind!r} ({', '.join(KINDS)})")
    moved = perturb_view(landmarks, rng, size, settings, settings.closing_pose) if settings.closing_pose > 0 else landmarks
    # shut after moving, so that the facing points coincide exactly
    dst = close_mouth(moved, settings.upper_lip_share) if kind == "mouth" else close_eyes(moved, settings.upper_lid_share)
    overlap = (settings.lip_overlap if kind == "mouth" else settings.lid_overlap) * float(interocular(landmarks))
    shot = warp_photo(image, landmarks, dst, kind, overlap, settings.warp_reg)
    return sharpen(shot, settings.sharpen, settings.sharpen_sigma), dst


# ----------------------------------------------------------------------------------------------
# Datasets.


class PhotoEpisodeDataset(Dataset):
    """Item idx -> a photo episode (kind and photo drawn with an RNG seeded by (seed, epoch, idx)): K shots
    made from one photo, the photo itself as the target; the same dict as EpisodeDataset, `video` being
    the person's index (one discriminator column per person). `augment` mirrors half the episodes and
    jitters colours, as the video episodes."""

    def __init__(self, cache_dir, k_shots: int = 8, resolution: int | None = None,
                 episodes_per_epoch: int | None = None, seed: int = 0, augment: bool = False,
                 settings: PhotoEpisodeSettings = PhotoEpisodeSettings()):
        self.root = Path(cache_dir)
        index_path = self.root / PHOTO_INDEX
        if not index_path.exists():
            raise AnimateError(f"no {PHOTO_INDEX} in {self.root}: run `animate-preprocess-photos` first")
        self.entries = json.loads(index_path.read_text())
        if not self.entries:
            raise AnimateError(f"no cached photo in {self.root}")
        self.people = sorted({e["person"] for e in self.entries})
        person_index = {p: i for i, p in enumerate(self.people)}
        self.person = np.array([person_index[e["person"]] for e in self.entries])
        self.pools = {
            "view": np.arange(len(self.entries)),
            "mouth": np.flatnonzero([e["mouth_gap"] > OPEN_MOUTH_GAP for e in self.entries]),
            "eyes": np.flatnonzero([min(e["eye_gaps"]) > settings.open_eye_gap for e in self.entries]),
        }
        weights = np.array([settings.view_weight, settings.mouth_weight, settings.eyes_weight], np.float64)
        weights *= [len(self.pools[k]) > 0 for k in KINDS]
        if weights.sum() <= 0:
            raise AnimateError("photo episode weights leave no kind to draw")
        self.kind_p = weights / weights.sum()
        self.k, self.seed, self.augment, self.settings = k_shots, seed, augment, settings
        self.epoch = 0
        self.episodes_per_epoch = episodes_per_epoch or len(self.entries)
        first = load_clip(self.root / self.entries[0]["file"])
        self.cache_resolution = int(first["resolution"])
        self.resolution = resolution or self.cache_resolution

    @property
    def n_videos(self) -> int:
        """Discriminator columns: one per person."""
        return len(self.people)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.episodes_per_epoch

    def sample(self, idx: int) -> tuple[str, int]:
        """(kind, photo entry) of episode idx."""
        rng = np.random.default_rng((self.seed, self.epoch, idx))
        kind = KINDS[int(rng.choice(len(KINDS), p=self.kind_p))]
        pool = self.pools[kind]
        return kind, int(pool[rng.integers(len(pool))])

    def photo(self, entry: int) -> tuple[np.ndarray, np.ndarray]:
        """(image (R,R,3) uint8, landmarks (68,2) px) of a cached photo at the dataset's resolution."""
        z = load_clip(self.root / self.entries[entry]["file"])
        image, lms = decode_frame(z["jpeg"], z["offsets"], 0), z["landmarks"][0].astype(np.float32)
        if self.resolution != image.shape[0]:
            s = self.resolution / image.shape[0]
            image = cv2.resize(image, (self.resolution, self.resolution),
                               interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            lms = (lms + 0.5) * s - 0.5
        return image, lms

    def __getitem__(self, idx: int) -> dict:
        kind, entry = self.sample(idx)
        image, lms = self.photo(entry)
        rng = np.random.default_rng((self.seed, self.epoch, idx, 1))
        made = [make_shot(image, lms, kind, rng, self.settings) for _ in range(max(1, min(self.k, self.settings.made_shots)))]
        shots = [made[j % len(made)] for j in range(self.k)]
        imgs = np.stack([s for s, _ in shots] + [image])
        all_lms = np.stack([l for _, l in shots] + [lms]).astype(np.float32)
        if self.augment:
            if rng.random() < 0.5:
                imgs, all_lms = mirror(imgs, all_lms)
            imgs = colour_jitter(imgs, rng)
        x = to_model_tensor(imgs)
        lm = torch.from_numpy(np.ascontiguousarray(all_lms))
        y = landmark_tensor(all_lms, self.resolution)
        k = self.k
        return {"x_shots": x[:k], "y_shots": y[:k], "x_t": x[k], "y_t": y[k], "lm_shots": lm[:k], "lm_t": lm[k],
                "video": torch.tensor(int(self.person[entry]), dtype=torch.long)}


class MixedEpisodeDataset(Dataset):
    """Video and photo episodes in one stream: item idx is a photo episode with probability `photo_share`
    (a coin seeded by (seed, epoch, idx), so a resumed run sees the same mix). Discriminator columns: the
    videos' first, then the photo people's (`video` of a photo item is offset by the number of videos)."""

    def __init__(self, videos, photos: PhotoEpisodeDataset, photo_share: float = 0.5, seed: int = 0,
                 episodes_per_epoch: int | None = None):
        if not 0.0 <= photo_share <= 1.0:
            raise AnimateError(f"photo_share must be within [0, 1], got {photo_share}")
        if videos.k != photos.k or videos.resolution != photos.resolution:
            raise AnimateError(f"video episodes ({videos.k} shots, {videos.resolution}px) and photo episodes "
                               f"({photos.k} shots, {photos.resolution}px) must agree")
        self.videos, self.photos, self.photo_share, self.seed = videos, photos, photo_share, seed
        self.k, self.resolution = videos.k, videos.resolution
        self.epoch = 0
        self.episodes_per_epoch = episodes_per_epoch or len(videos)

    @property
    def n_videos(self) -> int:
        return self.videos.n_videos + self.photos.n_videos

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.videos.set_epoch(epoch)
        self.photos.set_epoch(epoch)

    def __len__(self) -> int:
        return self.episodes_per_epoch

    def is_photo(self, idx: int) -> bool:
        return bool(np.random.default_rng((self.seed, self.epoch, idx, 2)).random() < self.photo_share)

    def __getitem__(self, idx: int) -> dict:
        if not self.is_photo(idx):
            return self.videos[idx]
        item = self.photos[idx]
        item["video"] = item["video"] + self.videos.n_videos
        return item
