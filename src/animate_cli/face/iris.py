"""Iris centres from the image, for landmark backends that have none (dlib, face-alignment).

The iris and pupil are the darkest part of the eye opening, so the centre is the centroid of the darkest
pixels inside the eyelid polygon, weighted by how much darker than that share they are. The eye is first
resampled so that it is at least MIN_EYE_PX wide (sub-pixel accuracy on a 224² VoxCeleb face); a shut or
degenerate eye gives its opening's centre (nothing to see, nothing to move).
"""
from __future__ import annotations

import cv2
import numpy as np

from .measures import EYES

DARK_SHARE = 0.3     # the darkest share of the opening's pixels taken as iris
MIN_EYE_PX = 32      # eyes are resampled to at least this width
MIN_OPENING = 0.08   # eyelid gap / eye width below which the eye counts as shut


def _opening_centre(poly: np.ndarray) -> np.ndarray:
    return poly.mean(0)


def iris_centre(grey: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """(2,) centre of the dark blob inside the 6-point eye polygon `poly` (image px) of a grey image."""
    poly = np.asarray(poly, np.float64)
    width = float(np.linalg.norm(poly[3] - poly[0]))
    gap = (np.linalg.norm(poly[1] - poly[5]) + np.linalg.norm(poly[2] - poly[4])) / 2
    if width < 2 or gap < MIN_OPENING * width:
        return _opening_centre(poly)
    scale = max(1.0, MIN_EYE_PX / width)
    lo = np.floor(poly.min(0)).astype(int) - 1
    hi = np.ceil(poly.max(0)).astype(int) + 2
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [grey.shape[1], grey.shape[0]])
    if (hi - lo).min() < 2:
        return _opening_centre(poly)
    roi = grey[lo[1]:hi[1], lo[0]:hi[0]].astype(np.float32)
    if scale > 1:
        roi = cv2.resize(roi, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    # pixel (i, j) of the resampled roi sits at lo + ((j, i) + 0.5) / scale - 0.5 in image px
    local = (poly - lo + 0.5) * scale - 0.5
    mask = np.zeros(roi.shape, np.uint8)
    cv2.fillPoly(mask, [np.round(local * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    inside = mask.astype(bool)
    if inside.sum() < 4:
        return _opening_centre(poly)
    values = roi[inside]
    cut = np.partition(values, int(DARK_SHARE * (len(values) - 1)))[int(DARK_SHARE * (len(values) - 1))]
    weight = np.where(inside, np.maximum(cut - roi, 0.0), 0.0)
    if weight.sum() <= 1e-6:  # a flat eye (no contrast): nothing to find
        return _opening_centre(poly)
    m = cv2.moments(weight.astype(np.float32))
    local_c = np.array([m["m10"], m["m01"]]) / m["m00"]
    return lo + (local_c + 0.5) / scale - 0.5


def iris_centres(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(2,2) float32 iris centres of both eyes (face.measures order) of an RGB image with 68 landmarks."""
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    pts = np.asarray(points, np.float64)
    return np.array([iris_centre(grey, pts[list(eye)]) for eye in EYES], np.float32)
