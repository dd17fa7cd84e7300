"""What a face does, frame by frame, read off its landmarks: eyes, gaze, mouth, and how much it shakes.

Pure numpy on the 68-point iBUG layout (plus optional iris centres), so the same measures serve the
pipeline (blinks and gaze to transfer) and the evaluation (does the result do what the driver did?).
Every measure is a ratio of distances on one face, so it compares faces of different sizes and people.
Eye order everywhere: eye 0 = points 36-41 (the subject's right eye, on the image's left), eye 1 = 42-47.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..errors import AnimateError

EYES: tuple[tuple[int, ...], ...] = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47))
# Corner pairs ordered left to right in the image, so "+h" is "towards the image's right" for both eyes.
EYE_CORNERS: tuple[tuple[int, int], ...] = ((36, 39), (42, 45))
INNER_LIPS: tuple[tuple[int, int], ...] = ((61, 67), (62, 66), (63, 65))  # upper, lower: left to right
# Eye corners, nose and the top of the jaw: they move only with the head (motion.STABLE_POINTS)
RIGID_POINTS: tuple[int, ...] = (0, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)
BLINK_DEPTH = 0.6  # an eye counts as closing when its openness drops below this share of its median
# a driver looks around on an axis when its gaze spans this many eye widths (open-eyed frames, smoothed over
# about 3 frames so a glance counts and a one-frame outlier does not); below it the eyes hold on the camera
# and a gaze correlation is one of detector noise
GAZE_SPREAD = 0.08


def _series(points, name: str = "landmarks") -> np.ndarray:
    """(N,68,2) float64 from one (68,2) or a series; one-line errors for what we cannot measure."""
    arr = np.asarray(points, np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (68, 2):
        raise AnimateError(f"{name} must have shape (N, 68, 2), got {arr.shape}")
    return arr


def _norm(v: np.ndarray) -> np.ndarray:
    return np.linalg.norm(v, axis=-1)


def interocular(points) -> np.ndarray:
    """(N,) distance between the two eye centres: the face's size, robust to mouth and jaw."""
    p = _series(points)
    return _norm(p[:, 36:42].mean(1) - p[:, 42:48].mean(1))


def eye_openness(points) -> np.ndarray:
    """(N,2) eyelid gap / eye width per eye: ~0.25-0.35 open, < 0.1 shut (the eye aspect ratio)."""
    p = _series(points)
    out = np.empty((len(p), 2))
    for k, (c0, u1, u2, c1, l2, l1) in enumerate(EYES):
        gap = (_norm(p[:, u1] - p[:, l1]) + _norm(p[:, u2] - p[:, l2])) / 2
        out[:, k] = gap / np.maximum(_norm(p[:, c0] - p[:, c1]), 1e-9)
    return out


def mouth_opening(points) -> np.ndarray:
    """(N,) inner-lip gap / inter-ocular distance: 0 for closed lips whatever the face's size."""
    p = _series(points)
    gap = np.mean([_norm(p[:, a] - p[:, b]) for a, b in INNER_LIPS], axis=0)
    return gap / np.maximum(interocular(p), 1e-9)


def eye_frames(points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per eye, a frame tied to its corners: centre (N,2,2), unit axis along the eye (N,2,2), width (N,2).

    The axis runs left to right in the image; its normal (x, y) -> (-y, x) points down the face."""
    p = _series(points)
    a = np.stack([p[:, i] for i, _ in EYE_CORNERS], 1)
    b = np.stack([p[:, j] for _, j in EYE_CORNERS], 1)
    width = np.maximum(_norm(b - a), 1e-9)
    return (a + b) / 2, (b - a) / width[..., None], width


def gaze(points, irises) -> np.ndarray:
    """(N,2,2) iris centre offset from the eye's centre per eye, as (along, across) the eye / eye width.

    h > 0: the iris sits towards the image's right corner; v > 0: lower than the corners' midpoint."""
    p = _series(points)
    iris = np.asarray(irises, np.float64).reshape(len(p), 2, 2)
    centre, axis, width = eye_frames(p)
    normal = np.stack([-axis[..., 1], axis[..., 0]], -1)
    rel = iris - centre
    return np.stack([(rel * axis).sum(-1), (rel * normal).sum(-1)], -1) / width[..., None]


def frame_steps(points, face_size: float | None = None) -> np.ndarray:
    """(N-1,P) frame-to-frame step of every point, in units of the face's median inter-ocular distance."""
    p = np.asarray(points, np.float64)
    if p.ndim != 3 or p.shape[-1] != 2 or len(p) < 2:
        raise AnimateError(f"a landmark series of at least 2 frames (N, P, 2) is needed, got {p.shape}")
    size = face_size if face_size is not None else float(np.median(interocular(p))) if p.shape[1] == 68 else 1.0
    return np.diff(p, axis=0) / max(size, 1e-9)


def jitter(points, sigma: float = 2.0, face_size: float | None = None) -> float:
    """How much a landmark series shakes: mean size of the high-passed frame-to-frame step.

    The steps minus their Gaussian-smoothed trend (sigma in frames): a steady turn or a smooth mouth
    opening is trend and costs nothing; a point that trembles back and forth costs its full step.
    In inter-ocular units, so a result and its driver compare whatever their sizes."""
    steps = frame_steps(points, face_size)
    if len(steps) < 2:
        raise AnimateError("jitter needs at least 3 frames")
    trend = gaussian_filter1d(steps, sigma, axis=0, mode="nearest")
    return float(_norm(steps - trend).mean())


def correlation(a, b) -> float:
    """Pearson correlation of two equally long series; NaN when either is (nearly) constant."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise AnimateError(f"series differ in length: {a.shape[0]} vs {b.shape[0]}")
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    if den < 1e-12 or a.std() < 1e-6 or b.std() < 1e-6:
        return float("nan")
    return float((a * b).sum() / den)


def blinks(openness) -> bool:
    """Does this eye-openness series (N,) or (N,2) close at least once (a blink, a wink, a squint)?"""
    o = np.asarray(openness, np.float64)
    o = o.min(-1) if o.ndim == 2 else o
    return bool(o.min() < BLINK_DEPTH * np.median(o))


def looks_around(gaze_series) -> tuple[bool, bool]:
    """Does a conjugate gaze series (N,2) (h, v in eye widths) move sideways, and up or down?"""
    g = gaussian_filter1d(np.asarray(gaze_series, np.float64), 1.0, axis=0, mode="nearest")
    spread = g.max(0) - g.min(0)
    return bool(spread[0] >= GAZE_SPREAD), bool(spread[1] >= GAZE_SPREAD)


@dataclass
class FollowScores:
    """How well a result's face does what its driver's face did (see follow_scores)."""

    eye_right: float      # correlation of eye openness, eye 0 (points 36-41)
    eye_left: float       # eye 1 (42-47)
    mouth: float          # correlation of the inner-lip opening
    gaze_h: float         # correlation of the horizontal iris offset (both eyes averaged) over the driver's
    gaze_v: float         # open-eyed frames; NaN without irises, or where the driver does not look around
    jitter_result: float  # jitter() of the result's landmarks
    jitter_driver: float
    jitter_ratio: float   # result / driver: 1 = as steady as the driver
    head_jitter_ratio: float  # the same on the rigid points only: head shake, no blinks or syllables
    driver_blinks: bool   # eye correlations only mean much when the driver closes an eye
    driver_looks_h: bool  # and gaze correlations when its eyes move (looks_around)
    driver_looks_v: bool
    frames: int

    def as_dict(self) -> dict:
        return asdict(self)


def follow_scores(result, driver, result_irises=None, driver_irises=None) -> FollowScores:
    """Correlations of eye openness, mouth opening and gaze, result vs driver, and their jitter ratio.

    Both series should come from the same detector, and from one other than the one that drove the
    result: a detector's own quirks, copied into the result, would otherwise count as success."""
    r, d = _series(result, "result landmarks"), _series(driver, "driver landmarks")
    if len(r) != len(d):
        raise AnimateError(f"result has {len(r)} frames of landmarks, driver {len(d)}")
    eo_r, eo_d = eye_openness(r), eye_openness(d)
    gh = gv = float("nan")
    looks = (False, False)
    if result_irises is not None and driver_irises is not None:
        seen = (eo_d >= BLINK_DEPTH * np.median(eo_d, 0)).all(1)  # a shut eye shows no gaze
        g_r, g_d = gaze(r, result_irises).mean(1)[seen], gaze(d, driver_irises).mean(1)[seen]
        looks = looks_around(g_d) if seen.sum() >= 3 else (False, False)
        gh, gv = (correlation(g_r[:, k], g_d[:, k]) if looks[k] else float("nan") for k in (0, 1))
    j_r, j_d = jitter(r), jitter(d)
    rigid = list(RIGID_POINTS)
    h_r = jitter(r[:, rigid], face_size=float(np.median(interocular(r))))
    h_d = jitter(d[:, rigid], face_size=float(np.median(interocular(d))))
    return FollowScores(eye_right=correlation(eo_r[:, 0], eo_d[:, 0]), eye_left=correlation(eo_r[:, 1], eo_d[:, 1]),
                        mouth=correlation(mouth_opening(r), mouth_opening(d)), gaze_h=gh, gaze_v=gv,
                        jitter_result=j_r, jitter_driver=j_d, jitter_ratio=j_r / max(j_d, 1e-12),
                        head_jitter_ratio=h_r / max(h_d, 1e-12),
                        driver_blinks=blinks(eo_d), driver_looks_h=looks[0], driver_looks_v=looks[1],
                        frames=len(r))


def video_landmarks(frames: Iterable[np.ndarray], detector) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw (unsmoothed) tracked landmarks (N,68,2) and iris centres (N,2,2) or None, of a frame stream.

    Unsmoothed on purpose: a measure of jitter must see what the video does, not what a filter left."""
    from .track import fill_missing, track_faces  # track imports cv2 and the detectors; measures stay light

    fits = list(track_faces(frames, detector, smooth=False))
    points = fill_missing([f.points if f is not None else None for f in fits], "the video")
    if any(f is not None and f.irises is None for f in fits):
        return points, None
    irises = fill_missing([f.irises if f is not None else None for f in fits], "the video", shape=(2, 2))
    return points, irises

