"""Smoothing a driver's landmark series: the head steady, the eyelids and lips quick.

A detector's noise shakes the whole face when it leaks into the head pose (every point moves with it),
while a blink lasts three frames and must survive. So each frame is split into a head pose (a
similarity fitted on rigid points, motion.STABLE_POINTS) and an expression (the points in the head's
own frame), and each part gets its own One-Euro filter: strong on the pose, light on eyelids and lips,
in between for jaw, brows and nose. The whole series is known before rendering, so each filter runs
forwards and backwards and the two are averaged: the lag of one pass cancels the lead of the other
(zero lag on a step, see tests), and the noise is averaged twice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import AnimateError
from ..motion import STABLE_POINTS, apply_similarity, procrustes
from .measures import eye_frames
from .regions import EYELIDS, MOUTH_POINTS


class OneEuroFilter:
    """One-Euro filter (Casiez et al. 2012), per coordinate, time measured in frames.

    Low cutoff when a point is slow (kills jitter), cutoff rising with speed (no lag on fast motion).
    Cutoffs are in cycles per frame."""

    def __init__(self, min_cutoff: float = 0.02, beta: float = 4.0, d_cutoff: float = 0.2):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x.copy()
        a_d = self._alpha(self.d_cutoff)
        self.dx = self.dx + a_d * ((x - self.x) - self.dx)
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self.dx))
        self.x = self.x + a * (x - self.x)
        return self.x.copy()


def noise_level(series, floor: float = 1e-9) -> np.ndarray:
    """Per-column noise (std per frame) of a series (N, ...): from the spread of its second differences,
    which smooth motion barely has and white noise has √6 times over (median-based: a blink or a
    saccade is an outlier, not noise)."""
    x = np.asarray(series, np.float64).reshape(len(series), -1)
    if len(x) < 3:
        return np.full(x.shape[1:], floor)
    d2 = np.diff(x, 2, axis=0)
    mad = np.median(np.abs(d2 - np.median(d2, 0)), 0)
    return np.maximum(1.4826 * mad / math.sqrt(6), floor).reshape(np.shape(series)[1:])


@dataclass(frozen=True)
class Euro:
    """One-Euro settings: cutoff (cycles/frame) when still, and how fast it opens with speed. Speeds are
    counted in units of the series' own noise (noise_level), so a noisy driver (a 224² face) is smoothed
    harder than a clean one and its noise never opens the filter: beta is per noise-std per frame."""

    min_cutoff: float
    beta: float

    def run(self, series: np.ndarray, noise=None) -> np.ndarray:
        """Zero-phase One-Euro over axis 0: the mean of a forward and a backward pass. `noise`: the unit of
        speed (a scalar or one per column); by default each column's own noise_level."""
        x = np.asarray(series, np.float64)
        unit = noise_level(x) if noise is None else np.broadcast_to(np.asarray(noise, np.float64), x.shape[1:])
        unit = np.maximum(unit, 1e-9)
        z = x / unit
        fwd, bwd = OneEuroFilter(self.min_cutoff, self.beta), OneEuroFilter(self.min_cutoff, self.beta)
        a = np.stack([fwd(v) for v in z])
        b = np.stack([bwd(v) for v in z[::-1]])[::-1]
        return (a + b) / 2 * unit


@dataclass(frozen=True)
class Smoothing:
    """How hard each part of the face is smoothed (speeds in units of the driver's noise, see Euro)."""

    pose: Euro = Euro(0.005, 0.01)     # the head: still when still; a move of 10 noise-stds a frame opens it
    face: Euro = Euro(0.01, 0.02)      # jaw, brows, nose: noisy points (the jaw most) that move slowly
    eyes_lips: Euro = Euro(0.05, 0.1)  # eyelids and lips: a 3-frame blink and a syllable must survive
    gaze: Euro = Euro(0.05, 0.1)       # iris offsets: still between saccades, a saccade is a step


DEFAULT_SMOOTHING = Smoothing()
EYELIDS_AND_LIPS: tuple[int, ...] = (tuple(sorted(i for eye in EYELIDS for pair in eye for i in pair))
                                     + tuple(range(68)[MOUTH_POINTS]))


def _pose_params(s: float, R: np.ndarray, t: np.ndarray, size: float) -> np.ndarray:
    return np.array([math.log(s), math.atan2(R[1, 0], R[0, 0]), t[0] / size, t[1] / size])


def _pose(params: np.ndarray, size: float) -> tuple[float, np.ndarray, np.ndarray]:
    c, s = math.cos(params[1]), math.sin(params[1])
    return math.exp(params[0]), np.array([[c, -s], [s, c]]), params[2:] * size


def smooth_driver(points, irises=None, settings: Smoothing = DEFAULT_SMOOTHING
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Smoothed (N,68,2) landmarks and (N,2,2) iris centres (None in, None out) of a whole driver."""
    L = np.asarray(points, np.float64)
    if L.ndim != 3 or L.shape[1:] != (68, 2) or not np.isfinite(L).all():
        raise AnimateError(f"driver landmarks must be finite with shape (N, 68, 2), got {L.shape}")
    if len(L) < 2:
        return L.astype(np.float32), None if irises is None else np.asarray(irises, np.float32)
    centre = L[0, list(STABLE_POINTS)].mean(0)  # poses about the face, not the image corner: uncoupled
    L = L - centre
    ref = L[0]
    size = float(np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))) or 1.0
    poses, expr = [], np.empty_like(L)
    for i, Lt in enumerate(L):
        s, R, t = procrustes(ref, Lt, STABLE_POINTS)  # ref -> frame
        poses.append(_pose_params(s, R, t, size))
        expr[i] = apply_similarity(Lt - t, 1.0 / s, R.T, np.zeros(2))  # the frame seen in ref's frame
    poses = np.unwrap(np.array(poses), axis=0)
    smooth_pose = settings.pose.run(poses)
    # the rigid points' expression is the detector's noise alone: the unit for every point's speed
    noise = float(np.median(noise_level(expr[:, list(STABLE_POINTS)])))
    fast = np.zeros(68, bool)
    fast[list(EYELIDS_AND_LIPS)] = True
    smooth_expr = np.empty_like(expr)
    smooth_expr[:, fast] = settings.eyes_lips.run(expr[:, fast], noise)
    smooth_expr[:, ~fast] = settings.face.run(expr[:, ~fast], noise)
    out = np.stack([apply_similarity(e, *_pose(p, size)) for e, p in zip(smooth_expr, smooth_pose)]) + centre
    if irises is None:
        return out.astype(np.float32), None
    return out.astype(np.float32), _smooth_irises(L + centre, out, np.asarray(irises, np.float64), settings.gaze)


def _smooth_irises(raw: np.ndarray, smoothed: np.ndarray, irises: np.ndarray, euro: Euro) -> np.ndarray:
    """Irises smoothed as offsets in their eye's frame, then put back into the smoothed eyes.

    So an iris moves with its (steadied) head and only its own motion, the gaze, is filtered."""
    if irises.shape != (len(raw), 2, 2) or not np.isfinite(irises).all():
        raise AnimateError(f"iris centres must be finite with shape (N, 2, 2), got {irises.shape}")
    c0, ax0, w0 = eye_frames(raw)
    n0 = np.stack([-ax0[..., 1], ax0[..., 0]], -1)
    rel = irises - c0
    offsets = np.stack([(rel * ax0).sum(-1), (rel * n0).sum(-1)], -1) / w0[..., None]  # (N,2 eyes,2)
    offsets = euro.run(offsets.reshape(len(raw), -1)).reshape(offsets.shape)
    c1, ax1, w1 = eye_frames(smoothed)
    n1 = np.stack([-ax1[..., 1], ax1[..., 0]], -1)
    return (c1 + (offsets[..., :1] * ax1 + offsets[..., 1:] * n1) * w1[..., None]).astype(np.float32)
