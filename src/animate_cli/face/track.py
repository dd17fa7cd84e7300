"""Landmarks for every frame of a driving video: detect once, then track.

Full-frame detection costs 100-300 ms on CPU; refitting landmarks in a box derived from the previous
frame's landmarks costs a few ms. So we detect on the first frame and when the face is lost, check
the track cheaply every frame (box jump, appearance change), re-detect lightly in a small region every
`redetect_every` frames to stop drift. The box is held while the face moves less than BOX_HOLD (a fit
moves with its box, so a box following every fit makes a still face tremble). track_landmarks can
smooth with one One-Euro filter for all points; the driver of an animation is smoothed by face.smooth
instead (head pose, expression and gaze apart).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import cv2
import numpy as np

from ..errors import AnimateError
from .landmarks import FaceFit, _iou
from .smooth import OneEuroFilter

PATCH = 32  # side of the grey patch compared between frames to notice a lost/changed face
BOX_HOLD = 0.04  # keep the last box while a new one differs by less than this share of its side
DRIFT = 0.15     # a periodic re-detection replaces the tracked box only when they differ by this share


def _face_width(pts: np.ndarray) -> float:
    return float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 1.0))


def _patch(frame: np.ndarray, pts: np.ndarray) -> np.ndarray | None:
    """Normalised grey patch over the inner face (brows..chin); None when it is featureless (blank)."""
    lo, hi = np.floor(pts[17:].min(0)).astype(int), np.ceil(pts[17:].max(0)).astype(int)
    h, w = frame.shape[:2]
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], w), min(hi[1], h)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    p = cv2.resize(np.ascontiguousarray(frame[y0:y1, x0:x1]), (PATCH, PATCH), interpolation=cv2.INTER_AREA)
    p = cv2.cvtColor(p, cv2.COLOR_RGB2GRAY).astype(np.float32)
    std = p.std()
    if std < 4.0:
        return None
    return (p - p.mean()) / std


def _plausible(pts: np.ndarray, prev: np.ndarray, patch, prev_patch) -> bool:
    """Does this refit still look like the same face as the previous frame?"""
    if patch is None or not np.isfinite(pts).all():
        return False
    w, w0 = _face_width(pts), _face_width(prev)
    if not 0.75 < w / w0 < 1.33:
        return False
    if np.linalg.norm(pts.mean(0) - prev.mean(0)) > 0.35 * w0:
        return False
    if prev_patch is not None and float((patch * prev_patch).mean()) < 0.5:
        return False  # appearance changed a lot: scene cut or the tracker slid off the face
    return True


def _region_detect(detector, frame: np.ndarray, box: np.ndarray, work: int = 256) -> np.ndarray | None:
    """Cheap re-detection in a square region around `box`; the matching box in frame px, or None."""
    side = 2.4 * max(box[2] - box[0], box[3] - box[1])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    a = work / side
    M = np.array([[a, 0, work / 2 - a * cx], [0, a, work / 2 - a * cy]])
    region = cv2.warpAffine(frame, M, (work, work), flags=cv2.INTER_AREA if a < 1 else cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT)
    boxes = detector.detect(region, work_size=work)
    best, best_iou = None, 0.3
    for b in boxes:
        fb = np.array([(b[0] - M[0, 2]) / a, (b[1] - M[1, 2]) / a, (b[2] - M[0, 2]) / a, (b[3] - M[1, 2]) / a],
                      np.float32)
        iou = _iou(fb, box)
        if iou > best_iou:
            best, best_iou = fb, iou
    return best


def _hold(held: np.ndarray | None, box: np.ndarray) -> np.ndarray:
    """The held box unless `box` has moved or resized by more than BOX_HOLD of its side.

    Each frame's box comes from the last frame's fit, and a fit moves with its box (the mesh by up to 4%
    of a face for a pixel), so a box that followed every fit would make a still face tremble; held,
    identical frames give identical points."""
    if held is None:
        return box
    side = max(float(held[2] - held[0]), float(held[3] - held[1]), 1.0)
    if np.abs(np.asarray(box, np.float64) - held).max() > BOX_HOLD * side:
        return box
    return held


def _nearest(boxes: list[np.ndarray], pts: np.ndarray) -> np.ndarray:
    c = pts.mean(0)
    return min(boxes, key=lambda b: float(np.hypot((b[0] + b[2]) / 2 - c[0], (b[1] + b[3]) / 2 - c[1])))


def track_landmarks(frames: Iterable[np.ndarray], detector, face_index: int = 0, smooth: bool = True,
                    redetect_every: int = 15, min_cutoff: float = 0.02,
                    beta: float = 4.0, face_option: str = "--face-index") -> Iterator[np.ndarray | None]:
    """One (68,2) float32 per frame, or None where no face is found (see fill_missing).
    `face_index` counts faces from the largest in the first frame with one; `face_option` names it in errors."""
    for fit in track_faces(frames, detector, face_index, smooth, redetect_every, min_cutoff, beta, face_option):
        yield None if fit is None else fit.points


def track_faces(frames: Iterable[np.ndarray], detector, face_index: int = 0, smooth: bool = True,
                redetect_every: int = 15, min_cutoff: float = 0.02,
                beta: float = 4.0, face_option: str = "--face-index") -> Iterator[FaceFit | None]:
    """One FaceFit per frame (points float32 (68,2), irises (2,2) where the backend finds them), or None.

    `smooth` filters the points only (irises come raw; face.smooth treats pose, expression and gaze
    apart). `face_option` names the face choice in errors."""
    prev = prev_patch = None      # raw landmarks/patch of the last frame where the face was tracked
    last_good = None              # last landmarks ever found: picks the same face after a loss
    filt = scale = held = None
    since_check = misses = 0
    started = False
    for frame in frames:
        frame = np.ascontiguousarray(frame)
        fit = patch = None
        if prev is not None:
            box = detector.box_from_landmarks(prev)
            since_check += 1
            if since_check >= redetect_every:
                since_check = 0
                found = _region_detect(detector, frame, box)
                side = max(float(box[2] - box[0]), float(box[3] - box[1]), 1.0)
                if found is not None and np.abs(found - box).max() > DRIFT * side:
                    box, held = found, None  # the track had drifted: start again from the detection
            box = held = _hold(held, box)
            fit = detector.fit(frame, box)
            patch = _patch(frame, fit.points) if np.isfinite(fit.points).all() else None
            if not _plausible(fit.points, prev, patch, prev_patch):
                fit = None
        if fit is None:
            # Long stretches without a face (cutaways, a faceless video): search only every 5th
            # frame after the first 10 misses; a full detection costs 100-300 ms.
            misses += 1
            searching = misses <= 10 or misses % 5 == 0
            boxes = detector.detect(frame) if searching else []
            if boxes:
                misses = 0
                if not started and face_index >= len(boxes):
                    raise AnimateError(f"{face_option} {face_index} is out of range: {len(boxes)} face(s) "
                                       "in the driver's first frame with a face")
                box = boxes[face_index] if not started else _nearest(boxes, last_good)
                fit = detector.fit(frame, box)
                if np.isfinite(fit.points).all():
                    # refit in the box tracking will use, so the next frame does not jump to it
                    box = held = detector.box_from_landmarks(fit.points)
                    refit = detector.fit(frame, box)
                    fit = refit if np.isfinite(refit.points).all() else fit
                    patch = _patch(frame, fit.points)
                    started, since_check = True, 0
                    filt, scale = OneEuroFilter(min_cutoff, beta), _face_width(fit.points)  # restart: no slide
                else:
                    fit = None  # a box without a fit (the mesh saw no face in it)
        prev, prev_patch = (fit.points if fit is not None else None), patch
        if fit is None:
            yield None
            continue
        last_good = fit.points
        out = filt(fit.points / scale) * scale if smooth else fit.points
        yield FaceFit(np.asarray(out, np.float32), fit.irises)


def fill_missing(seq: list, source_name: str, shape: tuple[int, ...] = (68, 2)) -> np.ndarray:
    """(N,*shape): frames without a face hold the last good landmarks (leading gaps take the first good)."""
    good = [i for i, p in enumerate(seq) if p is not None]
    if not good:
        raise AnimateError(f"no face found in any frame of {source_name}")
    out = np.empty((len(seq), *shape), np.float32)
    last = seq[good[0]]
    for i, p in enumerate(seq):
        if p is not None:
            last = p
        out[i] = last
    return out


# ----------------------------------------------------------------------------------------------- gaps
# Kept apart from tracking and smoothing above: the pipeline notes long gaps, fill_missing hides them.

def longest_gap(seq: list) -> tuple[int, int]:
    """(first frame, length) of the longest run of frames without a face (None); (0, 0) when none."""
    best_start, best_len, start = 0, 0, None
    for i, p in enumerate(list(seq) + [np.zeros(1)]):  # a sentinel face closes a trailing gap
        if p is None and start is None:
            start = i
        elif p is not None and start is not None:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = None
    return best_start, best_len


def gap_note(seq: list, fps: float, source_name: str, min_seconds: float = 1.0) -> str | None:
    """One line when the face is lost for `min_seconds` or more: fill_missing holds the face still there,
    which looks like a frozen animation unless the user is told why."""
    start, length = longest_gap(seq)
    seconds = length / fps if fps > 0 else 0.0
    if length == 0 or seconds < min_seconds:
        return None
    return (f"no face in {source_name} for {seconds:.1f} s (frames {start}-{start + length - 1}): "
            "the animated face holds still there")
