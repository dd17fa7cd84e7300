"""Motion transfer: move a portrait's landmarks the way a driver's landmarks move.

Pure numpy. The driver is another face, so its landmarks are never copied as they are
(except in absolute mode): head motion is taken as a similarity (scale, rotation,
translation) fitted on points that barely move with expression, and expression as the
per-point residual in the driver's reference frame, mapped onto the portrait.
"""
from __future__ import annotations

import numpy as np

from .errors import AnimateError
from .face.measures import EYE_CORNERS, INNER_LIPS, RIGID_POINTS, eye_openness, interocular
from .face.regions import EYELIDS as LID_PAIRS  # per eye, (upper, lower)

# Eye corners (still when blinking), nose bridge and nostrils, and the top of the jaw near
# the ears: rigid with the skull, so a fit on them is not fooled by a smile or an open mouth.
STABLE_POINTS: tuple[int, ...] = RIGID_POINTS


def _points(a, name: str, ndim: int = 2) -> np.ndarray:
    """Landmarks as float64 for the fits, with a one-line error for shapes we cannot use."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != ndim or arr.shape[-1] != 2 or (ndim == 3 and arr.shape[0] == 0):
        want = "(68, 2)" if ndim == 2 else "(N, 68, 2)"
        raise AnimateError(f"{name} landmarks must have shape {want}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise AnimateError(f"{name} landmarks contain NaN or infinite values")
    return arr


# Eyelids and inner lips are moved as gaps, not as deltas (see transfer_relative).
OUTER_LIP_OF: dict[int, int] = {61: 50, 62: 51, 63: 52, 67: 58, 66: 57, 65: 56}  # inner lip point -> outer one
SHUT_SHARE = 0.2       # a driver eye this open, relative to its resting openness, reads as shut
WIDEST = 1.3           # a portrait eye opens at most this much wider than it is in the portrait
UPPER_LID_SHARE = 0.8  # a blink is mostly the upper lid coming down
# A portrait's eye this open or less (lid gap / eye width; open eyes read 0.25-0.35) is shut. Its own gap would
# keep it shut whatever the driver does; with an eye painter to paint what the lids hid (reopen_eyes), it opens
# to REOPENED at the driver's rest instead, a typical open eye, and follows the driver from there
SHUT_PORTRAIT = 0.12
REOPENED = 0.25
UPPER_LIP_SHARE = 0.3  # an opening mouth is mostly the jaw and lower lip going down


def eyelid_scale(openness, rest) -> np.ndarray:
    """How open the portrait's eye should be, as a share of its own openness, for a driver eye this open.

    r = openness / rest: at or below SHUT_SHARE the eye is shut (0), at rest it is as in the portrait (1),
    linear between; wider than rest opens it somewhat, easing towards WIDEST. Works per element."""
    r = np.asarray(openness, np.float64) / np.maximum(np.asarray(rest, np.float64), 1e-9)
    closing = np.clip((r - SHUT_SHARE) / (1 - SHUT_SHARE), 0.0, 1.0)
    widening = 1 + (WIDEST - 1) * np.tanh((r - 1) / (WIDEST - 1))
    return np.where(r <= 1, closing, widening)


def lip_gap(gap, ref_gap, portrait_gap) -> np.ndarray:
    """The portrait's inner-lip gap (inter-ocular units) for a driver gap, given the driver's gap in its
    reference frame: closed lips stay closed (0 -> 0), the reference gives the portrait's own gap, and
    opening beyond the reference adds the driver's extra opening. Works per element."""
    gap, ref_gap, portrait_gap = (np.asarray(v, np.float64) for v in (gap, ref_gap, portrait_gap))
    below = portrait_gap * gap / np.maximum(ref_gap, 1e-9)
    return np.maximum(np.where(gap >= ref_gap, portrait_gap + gap - ref_gap, below), 0.0)


def _across(pts: np.ndarray, a: int, b: int) -> np.ndarray:
    """Unit normal of the line a -> b (left to right in the image), pointing down the face."""
    d = pts[b] - pts[a]
    d = d / max(float(np.linalg.norm(d)), 1e-9)
    return np.array([-d[1], d[0]])


def _set_gap(pts: np.ndarray, upper: int, lower: int, normal: np.ndarray, target: float, upper_share: float,
             followers: dict[int, int] | None = None) -> None:
    """Move `upper` and `lower` along `normal` (in place) so their gap across it is `target` px."""
    change = target - float((pts[lower] - pts[upper]) @ normal)
    for idx, step in ((upper, -upper_share * change), (lower, (1 - upper_share) * change)):
        pts[idx] += step * normal
        if followers and idx in followers:
            pts[followers[idx]] += step * normal


def _gaps(pts: np.ndarray, pairs, normal: np.ndarray) -> np.ndarray:
    return np.array([float((pts[lo] - pts[up]) @ normal) for up, lo in pairs])


def rest_lid_gaps(portrait: np.ndarray, reopen_eyes: bool = False) -> np.ndarray:
    """(2,2) px: each lid pair's gap in the portrait, what the driver's resting eye gives; with reopen_eyes, a shut
    eye's (openness <= SHUT_PORTRAIT) is REOPENED × its width instead."""
    out = np.empty((2, 2))
    openness = eye_openness(portrait[None])[0]
    for k, pairs in enumerate(LID_PAIRS):
        a, b = EYE_CORNERS[k]
        out[k] = np.maximum(_gaps(portrait, pairs, _across(portrait, a, b)), 0.0)
        if reopen_eyes and openness[k] <= SHUT_PORTRAIT:
            out[k] = REOPENED * float(np.linalg.norm(portrait[b] - portrait[a]))
    return out


def set_eyes_and_lips(moved: np.ndarray, portrait: np.ndarray, lid_scale: np.ndarray, lip_gaps: np.ndarray,
                      lid_rest: np.ndarray | None = None) -> None:
    """Give `moved` (68,2, in place) the eyelid gaps lid_rest (2,2 px per lid pair; default the portrait's own,
    rest_lid_gaps) times lid_scale (2,) per eye and the inner-lip gaps lip_gaps (3,) in the portrait's
    inter-ocular units."""
    rest = rest_lid_gaps(portrait) if lid_rest is None else lid_rest
    for k, pairs in enumerate(LID_PAIRS):
        n_m = _across(moved, *EYE_CORNERS[k])
        for (up, lo), gap in zip(pairs, rest[k]):
            _set_gap(moved, up, lo, n_m, gap * lid_scale[k], UPPER_LID_SHARE)
    n_m = _across(moved, 60, 64)
    io = float(interocular(portrait)[0])
    for (up, lo), gap in zip(INNER_LIPS, lip_gaps):
        _set_gap(moved, up, lo, n_m, gap * io, UPPER_LIP_SHARE, OUTER_LIP_OF)


def _lip_gaps(L: np.ndarray) -> np.ndarray:
    """(N,3) inner-lip gaps across the mouth, in each frame's inter-ocular units."""
    out = np.empty((len(L), len(INNER_LIPS)))
    for i, Lt in enumerate(L):
        out[i] = _gaps(Lt, INNER_LIPS, _across(Lt, 60, 64)) / max(float(interocular(Lt)[0]), 1e-9)
    return out


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


def transfer_relative(portrait, driver, ref_index: int = 0, reopen_eyes: bool = False) -> np.ndarray:
    """Portrait landmarks that move as the driver moves relative to its frame `ref_index`.

    Per frame: T = similarity ref->frame (head motion), e = T⁻¹(frame) − ref (expression in the
    reference frame), A = similarity ref->portrait; result = (A∘T∘A⁻¹)(P + A_lin·e). So the
    reference frame gives back P, the head turns/zooms by T's angle and scale, and
    expressions scale with the ratio of face sizes.

    Eyelids and inner lips are gaps, not deltas: added to another face, a driver's closing eyelid
    would leave a wide-eyed portrait's eye half open and push a narrow one's lids through each other.
    So each eye's gap is the portrait's own times eyelid_scale(driver openness / its median openness
    over the clip: a blink in the reference frame still reads as a blink), and each inner-lip gap is
    lip_gap() of the driver's (closed stays closed). A shut portrait eye stays shut, unless `reopen_eyes` (a
    model with an eye painter): then it opens as a typical eye would (rest_lid_gaps).
    """
    P = _points(portrait, "portrait")
    L = _points(driver, "driver", ndim=3)
    ref = _ref(L, ref_index)
    if P.shape != L.shape[1:]:
        raise AnimateError(f"portrait has {P.shape[0]} landmarks, driver {L.shape[1]}")
    sA, RA, tA = procrustes(L[ref], P)
    openness = eye_openness(L)
    rest = np.median(openness, 0)
    lid_scale = np.where(rest > 0.05, eyelid_scale(openness, rest), 1.0)  # no eyes to read: leave them
    d_lips = _lip_gaps(L)
    lips = lip_gap(d_lips, d_lips[ref], _lip_gaps(P[None])[0])
    lid_rest = rest_lid_gaps(P, reopen_eyes)
    out = np.empty_like(L)
    for i, Lt in enumerate(L):
        sT, RT, tT = procrustes(L[ref], Lt)
        e = apply_similarity(Lt, *_invert(sT, RT, tT)) - L[ref]
        moved = P + sA * e @ RA.T
        set_eyes_and_lips(moved, P, lid_scale[i], lips[i], lid_rest)
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
