"""Motion transfer: move a portrait's landmarks the way a driver's landmarks move.

Pure numpy. The driver is another face, so its landmarks are never copied as they are
(except in absolute mode): head motion is taken as a similarity (scale, rotation,
translation) fitted on points that barely move with expression, and expression as the
per-point residual in the driver's reference frame, mapped onto the portrait.
"""
from __future__ import annotations

import numpy as np

from .errors import AnimateError

# Eye corners (still when blinking), nose bridge and nostrils, and the top of the jaw near
# the ears: rigid with the skull, so a fit on them is not fooled by a smile or an open mouth.
STABLE_POINTS: tuple[int, ...] = (0, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)


def _points(a, name: str, ndim: int = 2) -> np.ndarray:
    """Landmarks as float64 for the fits, with a one-line error for shapes we cannot use."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != ndim or arr.shape[-1] != 2 or (ndim == 3 and arr.shape[0] == 0):
        want = "(68, 2)" if ndim == 2 else "(N, 68, 2)"
        raise AnimateError(f"{name} landmarks must have shape {want}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise AnimateError(f"{name} landmarks contain NaN or infinite values")
    return arr


def procrustes(src, dst, points=STABLE_POINTS) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity with dst ≈ s·R·src + t (Umeyama, no reflection).

    Fitted on `points` only (None = all) so that expression does not leak into head pose.
    """
    src = _points(src, "source")
    dst = _points(dst, "target")
    if src.shape != dst.shape:
        raise AnimateError(f"landmark sets differ in shape: {src.shape} vs {dst.shape}")
    idx = list(points) if points is not None else slice(None)
    a, b = src[idx], dst[idx]
    ma, mb = a.mean(0), b.mean(0)
    a0, b0 = a - ma, b - mb
    var = (a0 ** 2).sum()
    if var < 1e-12:
        raise AnimateError("landmarks are degenerate (all points coincide)")
    cov = b0.T @ a0  # 2x2; R maximising trace(R^T cov)
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    fix = np.diag([1.0, d])  # flip the weakest axis instead of reflecting
    R = u @ fix @ vt
    s = float((sig * np.diag(fix)).sum() / var)
    t = mb - s * R @ ma
    return s, R, t


def apply_similarity(pts, s, R, t) -> np.ndarray:
    """s·R·p + t for points (..., 2); float32 in gives float32 out (the landmark convention)."""
    pts = np.asarray(pts)
    out = s * pts.astype(np.float64) @ np.asarray(R, dtype=np.float64).T + np.asarray(t, dtype=np.float64)
    return out.astype(np.float32) if pts.dtype == np.float32 else out


def _invert(s, R, t):
    """Inverse similarity, so expression can be read in the reference frame."""
    return 1.0 / s, R.T, -(R.T @ t) / s


def transfer_relative(portrait, driver, ref_index: int = 0) -> np.ndarray:
    """Portrait landmarks that move as the driver moves relative to its frame `ref_index`.

    Per frame: T = similarity ref->frame (head motion), e = T⁻¹(frame) − ref (expression in the
    reference frame), A = similarity ref->portrait; result = (A∘T∘A⁻¹)(P + A_lin·e). So the
    reference frame gives back P, the head turns/zooms by T's angle and scale, and
    expressions scale with the ratio of face sizes.
    """
    P = _points(portrait, "portrait")
    L = _points(driver, "driver", ndim=3)
    ref = _ref(L, ref_index)
    if P.shape != L.shape[1:]:
        raise AnimateError(f"portrait has {P.shape[0]} landmarks, driver {L.shape[1]}")
    sA, RA, tA = procrustes(L[ref], P)
    out = np.empty_like(L)
    for i, Lt in enumerate(L):
        sT, RT, tT = procrustes(L[ref], Lt)
        e = apply_similarity(Lt, *_invert(sT, RT, tT)) - L[ref]
        moved = P + sA * e @ RA.T
        # A∘T∘A⁻¹ in closed form (2-D rotations commute): scale sT, rotation RT.
        t = tA + sA * RA @ tT - sT * RT @ tA
        out[i] = apply_similarity(moved, sT, RT, t)
    return out.astype(np.float32)


def transfer_absolute(portrait, driver, ref_index: int = 0) -> np.ndarray:
    """The driver's own shape, placed where the portrait's face is (self-reenactment)."""
    P = _points(portrait, "portrait")
    L = _points(driver, "driver", ndim=3)
    ref = _ref(L, ref_index)
    sA, RA, tA = procrustes(L[ref], P)
    return apply_similarity(L, sA, RA, tA).astype(np.float32)


def find_best_frame(portrait, driver) -> int:
    """The driver frame whose pose and expression best match the portrait's.

    Relative transfer looks most natural when the reference frame already resembles the
    portrait; comparing after a full similarity fit ignores position, size and in-plane roll.
    """
    P = _points(portrait, "portrait")
    L = _points(driver, "driver", ndim=3)
    if P.shape != L.shape[1:]:
        raise AnimateError(f"portrait has {P.shape[0]} landmarks, driver {L.shape[1]}")
    errs = [np.sum((apply_similarity(Lt, *procrustes(Lt, P, points=None)) - P) ** 2) for Lt in L]
    return int(np.argmin(errs))


def _ref(L: np.ndarray, ref_index: int) -> int:
    if not -len(L) <= ref_index < len(L):
        raise AnimateError(f"reference frame {ref_index} is outside the driver's {len(L)} frames")
    return ref_index % len(L)
