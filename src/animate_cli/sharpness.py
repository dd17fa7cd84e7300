"""How much of the portrait's fine detail survives into the output: the face box's variance of the Laplacian.

The Laplacian responds to detail at the scale of a pixel (skin pores, paint crackle, eyelashes); its variance
over the face drops when the face is resampled through a smaller copy or blurred by an encoder. The ratio
output ÷ portrait is 1 for a perfect copy, about 0.98 for a portrait encoded as a still video, and falls
towards 0 as detail is lost. The box is the landmarks' bounding box (brows to chin): the skin and features,
not the background the face is pasted into.
"""
from __future__ import annotations

import cv2
import numpy as np

from .errors import AnimateError


def face_box(landmarks: np.ndarray, shape) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the landmarks' bounding box, clipped to an image of `shape` (exclusive ends)."""
    pts = np.asarray(landmarks, np.float64).reshape(-1, 2)
    h, w = int(shape[0]), int(shape[1])
    x0, y0 = np.clip(np.floor(pts.min(0)).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(pts.max(0)).astype(int) + 1, 0, [w, h])
    if x1 - x0 < 3 or y1 - y0 < 3:
        raise AnimateError("the face box is smaller than 3 px (or outside the image)")
    return int(x0), int(y0), int(x1), int(y1)


def laplacian_variance(image: np.ndarray, box: tuple[int, int, int, int] | None = None) -> float:
    """Variance of the 3x3 Laplacian of the grey image (0..255 scale) over `box` (default: all of it).

    Computed on the box plus a one-pixel margin, so the box's edge sees its real neighbours."""
    img = np.asarray(image)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box if box is not None else (0, 0, w, h)
    mx0, my0, mx1, my1 = max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, w), min(y1 + 1, h)
    patch = img[my0:my1, mx0:mx1]
    grey = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY) if patch.ndim == 3 else patch
    lap = cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT_101)
    lap = lap[y0 - my0:y0 - my0 + (y1 - y0), x0 - mx0:x0 - mx0 + (x1 - x0)]
    return float(lap.var())


def sharpness_ratio(output: np.ndarray, portrait: np.ndarray, output_landmarks: np.ndarray,
                    portrait_landmarks: np.ndarray | None = None) -> float:
    """Face-box Laplacian variance of `output` ÷ that of `portrait`.

    The output's box follows the face where the motion moved it (`output_landmarks`, output px); the
    portrait's box is its own landmarks' (default: the same points, for a still face)."""
    ref_lms = output_landmarks if portrait_landmarks is None else portrait_landmarks
    ref = laplacian_variance(portrait, face_box(ref_lms, portrait.shape))
    if ref <= 0:
        raise AnimateError("the portrait's face box is flat (no detail to compare against)")
    return laplacian_variance(output, face_box(output_landmarks, output.shape)) / ref
