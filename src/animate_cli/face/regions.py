"""Face regions and openings from 68 iBUG landmarks: how open the mouth and the eyes are, and the mouth
crop the mouth metric is measured on.

Openings are normalised by the inter-ocular distance (outer eye corners, as the landmark error), so
they compare across face sizes. A mouth counts as open when its inner-lip gap exceeds
OPEN_MOUTH_GAP: then teeth or the mouth's inside show, which a warp of a closed mouth cannot give.
All functions take landmarks (68, 2) or batches (..., 68, 2) in pixels.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from ..errors import AnimateError
from .measures import EYE_CORNERS

OPEN_MOUTH_GAP = 0.12  # inner-lip gap / inter-ocular distance above which teeth or the mouth's inside show
MOUTH_BOX_SCALE = 1.6  # side of the mouth crop / mouth width (corner to corner)
MOUTH_METRIC_SIZE = 96  # side the mouth crops are resampled to before LPIPS (about their size in a 256² crop)
EYE_BOX_SCALE = 2.0  # side of an eye's crop / the eye's width (corner to corner): the eye, its lids and some skin
EYE_METRIC_SIZE = 64  # side the eye crops are resampled to before LPIPS (a 256² face's eye box is about 46 px)

# iBUG-68 pairs facing each other across an opening, upper point first
INNER_LIPS = ((61, 67), (62, 66), (63, 65))
EYELIDS = (((37, 41), (38, 40)), ((43, 47), (44, 46)))  # the face's right eye (image left), then left
EYE_POINTS = (slice(36, 42), slice(42, 48))  # each eye's outline, in the same order (corners: measures.EYE_CORNERS)
LIP_CORNERS = (48, 54)
MOUTH_POINTS = slice(48, 68)
# the face's outline: the jaw from ear to ear (0-16), back along the brows (26-17); inside it is face, outside
# hair, neck or background
FACE_OUTLINE = tuple(range(17)) + tuple(range(26, 16, -1))


def _points(landmarks) -> np.ndarray:
    lm = np.asarray(landmarks, np.float64)
    if lm.shape[-2:] != (68, 2):
        raise AnimateError(f"expected 68 landmarks (..., 68, 2), got shape {lm.shape}")
    return lm


def interocular(landmarks) -> np.ndarray:
    """Distance between the outer eye corners (36, 45), the usual normaliser; (...,)."""
    lm = _points(landmarks)
    return np.linalg.norm(lm[..., 36, :] - lm[..., 45, :], axis=-1)


def _gap(lm: np.ndarray, pairs) -> np.ndarray:
    upper = lm[..., [a for a, _ in pairs], :]
    lower = lm[..., [b for _, b in pairs], :]
    return np.linalg.norm(upper - lower, axis=-1).mean(-1)


def mouth_gap(landmarks) -> np.ndarray:
    """Inner-lip gap (mean distance of the three facing inner-lip pairs) / inter-ocular distance; (...,)."""
    lm = _points(landmarks)
    return _gap(lm, INNER_LIPS) / np.maximum(interocular(lm), 1e-6)


def mouth_open(landmarks, threshold: float = OPEN_MOUTH_GAP) -> np.ndarray:
    """True where the inner-lip gap exceeds `threshold` of the inter-ocular distance; (...,) bool."""
    return mouth_gap(landmarks) > threshold


def eye_gaps(landmarks) -> np.ndarray:
    """Eyelid gap of each eye (mean of its two facing lid pairs) / inter-ocular distance; (..., 2)."""
    lm = _points(landmarks)
    iod = np.maximum(interocular(lm), 1e-6)
    return np.stack([_gap(lm, pairs) / iod for pairs in EYELIDS], -1)


def mouth_box(landmarks, scale: float = MOUTH_BOX_SCALE) -> np.ndarray:
    """Square boxes (..., 3) = (x0, y0, side) in pixels: centred on the lips' bounding box, side `scale`
    × the mouth width (corner to corner), so an opening mouth and a band of skin around it fit."""
    lm = _points(landmarks)
    lips = lm[..., MOUTH_POINTS, :]
    centre = (lips.min(-2) + lips.max(-2)) / 2
    side = scale * np.linalg.norm(lm[..., LIP_CORNERS[0], :] - lm[..., LIP_CORNERS[1], :], axis=-1)
    side = np.maximum(side, 1.0)
    return np.concatenate([centre - side[..., None] / 2, side[..., None]], -1)


def eye_boxes(landmarks, scale: float = EYE_BOX_SCALE) -> np.ndarray:
    """Square boxes (..., 2, 3) = (x0, y0, side) per eye: centred on the eye's six points, side `scale` × its width."""
    lm = _points(landmarks)
    out = []
    for (a, b), points in zip(EYE_CORNERS, EYE_POINTS):
        pts = lm[..., points, :]
        centre = (pts.min(-2) + pts.max(-2)) / 2
        side = np.maximum(scale * np.linalg.norm(lm[..., a, :] - lm[..., b, :], axis=-1), 1.0)
        out.append(np.concatenate([centre - side[..., None] / 2, side[..., None]], -1))
    return np.stack(out, -2)


def eye_lpips(pred: np.ndarray, target: np.ndarray, landmarks, lpips_fn: Callable,
              size: int = EYE_METRIC_SIZE) -> np.ndarray:
    """LPIPS on the eyes (the eye metric): both (B,H,W,3) uint8 batches cropped to each eye's box (`eye_boxes`) of
    the *target's* landmarks, LPIPS per eye, the two eyes averaged -> (B,)."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise AnimateError(f"prediction and target differ in shape: {pred.shape} vs {target.shape}")
    boxes = eye_boxes(landmarks).reshape(-1, 2, 3)
    crops = lambda images: np.stack([crop_box(im, b, size) for im, bb in zip(images, boxes) for b in bb])  # noqa: E731
    return np.asarray(lpips_fn(crops(pred), crops(target))).reshape(-1, 2).mean(-1)


def crop_box(image: np.ndarray, box, size: int) -> np.ndarray:
    """The square `box` (x0, y0, side) of an (H,W,C) image resampled to size × size (edges replicated
    where the box leaves the frame)."""
    x0, y0, side = (float(v) for v in box)
    s = size / side
    # pixel centres at integers (as the landmarks): u = s · (x − x0) − 0.5 puts x0 on the crop's left edge
    m = np.array([[s, 0, -s * x0 - 0.5], [0, s, -s * y0 - 0.5]], np.float64)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(np.ascontiguousarray(image), m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def mouth_crops(images: np.ndarray, landmarks, size: int = MOUTH_METRIC_SIZE,
                scale: float = MOUTH_BOX_SCALE) -> np.ndarray:
    """(B,H,W,3) images and (B,68,2) landmarks -> (B,size,size,3) mouth crops (see `mouth_box`)."""
    images = np.asarray(images)
    boxes = mouth_box(landmarks, scale).reshape(-1, 3)
    if images.ndim != 4 or len(images) != len(boxes):
        raise AnimateError(f"mouth crops need (B,H,W,3) images and B landmark sets, got {images.shape} and {len(boxes)}")
    return np.stack([crop_box(im, b, size) for im, b in zip(images, boxes)])


def mouth_lpips(pred: np.ndarray, target: np.ndarray, landmarks, lpips_fn: Callable,
                size: int = MOUTH_METRIC_SIZE) -> np.ndarray:
    """LPIPS on the mouth: both (B,H,W,3) uint8 batches cropped to the box of the *target's* landmarks
    (B,68,2), then `lpips_fn(pred_crops, target_crops)` (e.g. evaluation.metrics.lpips) -> (B,).
    The issue's mouth metric averages it over target frames where `mouth_open(landmarks)`."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise AnimateError(f"prediction and target differ in shape: {pred.shape} vs {target.shape}")
    return np.asarray(lpips_fn(mouth_crops(pred, landmarks, size), mouth_crops(target, landmarks, size)))
