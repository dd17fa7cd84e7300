"""Square face crops at model resolution, and pasting generated crops back into the full frame.

Crops follow the VoxCeleb look the models are trained on (face ~60% of the side, room above the
head, no rotation). Every crop carries a 2x3 affine M (source px -> crop px) so results can go back.
"""
from __future__ import annotations

import cv2
import numpy as np

DEFAULT_MARGIN = 0.8   # side = extent * 1.8: the landmark box (brows..chin) fills ~55-60% of the crop
RAISE = 0.12           # centre moves up by this * extent: leaves room for forehead and hair
DEFAULT_FEATHER = 0.12  # soft edge width of the paste-back mask, as a fraction of the crop side


def _crop_params(landmarks: np.ndarray, margin: float) -> tuple[float, float, float]:
    pts = np.asarray(landmarks, np.float64)
    lo, hi = pts.min(0), pts.max(0)
    extent = max(hi[0] - lo[0], hi[1] - lo[1], 1.0)
    cx, cy = (lo + hi) / 2
    return cx, cy - RAISE * extent, extent * (1 + margin)


def _transform(cx: float, cy: float, side: float, size: int) -> np.ndarray:
    a = size / side
    return np.array([[a, 0, size / 2 - a * cx], [0, a, size / 2 - a * cy]], np.float64)


def face_crop_transform(landmarks: np.ndarray, size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """2x3 affine, source px -> crop px: a square centred on the face, side = extent*(1+margin)."""
    return _transform(*_crop_params(landmarks, margin), size)


def transform_points(pts: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (...,2) points."""
    pts = np.asarray(pts, np.float64)
    M = np.asarray(M, np.float64)
    return (pts @ M[:, :2].T + M[:, 2]).astype(np.float32)


def invert_affine(M: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine (crop px -> source px)."""
    return cv2.invertAffineTransform(np.asarray(M, np.float64))


def warp_to_crop(image: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    """The crop itself; outside the image is mirrored so faces at the border still get a full crop."""
    M = np.asarray(M, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    if scale < 0.5:  # strong shrink: pre-shrink with area averaging, bilinear alone would alias
        f = min(1.0, 2 * scale)
        image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        M = M.copy()
        M[:, :2] /= f
    return cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def soft_mask(size: int, feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """(size,size) float32 rounded-square mask: 1 inside, smooth fall to 0 at the crop's border.

    The rounded square (superellipse) keeps more of the face than an ellipse while the soft edge hides
    the seam where generated pixels meet the original frame."""
    u = (np.arange(size, dtype=np.float64) + 0.5) / size * 2 - 1
    r = (np.abs(u)[None, :] ** 4 + np.abs(u)[:, None] ** 4) ** 0.25
    t = np.clip((1 - r) / max(feather, 1e-6), 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def paste_back(frame: np.ndarray, crop: np.ndarray, M: np.ndarray, mask: np.ndarray | None = None,
               feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """`frame` with `crop` put back where M took it from, blended through a feathered mask."""
    return PasteBack(frame, M, crop.shape[0], mask, feather)(crop)


class PasteBack:
    """paste_back for a stream of crops going to the same place of the same frame (a portrait).

    The mask, the frame region the crop covers and the frame's share of the blend are computed once;
    per frame only that region is warped and blended."""

    def __init__(self, frame: np.ndarray, M: np.ndarray, size: int, mask: np.ndarray | None = None,
                 feather: float = DEFAULT_FEATHER):
        h, w = frame.shape[:2]
        mask = soft_mask(size, feather) if mask is None else np.asarray(mask, np.float32)
        if mask.max() > 1.0:
            mask = mask / 255.0
        Minv = invert_affine(M)
        corners = transform_points(np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float32), Minv)
        x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, [w, h])
        x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 1, 0, [w, h])
        self.frame = frame
        self.region = (slice(y0, y1), slice(x0, x1))
        self.region_size = (int(x1 - x0), int(y1 - y0))
        self.M_region = Minv.astype(np.float64).copy()
        self.M_region[:, 2] -= [x0, y0]
        if x1 <= x0 or y1 <= y0:  # the crop lies wholly outside the frame
            self.alpha = None
            return
        self.alpha = cv2.warpAffine(mask, self.M_region, self.region_size, flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
        self.base = frame[self.region].astype(np.float32) * (1 - self.alpha)

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        out = self.frame.copy()
        if self.alpha is None:
            return out
        back = cv2.warpAffine(crop, self.M_region, self.region_size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        blended = self.base + back.astype(np.float32) * self.alpha
        out[self.region] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return out


class CropSmoother:
    """Steadies a per-frame crop (centre and side) so the crop does not shake with landmark jitter.

    Adaptive exponential smoothing: changes small relative to the crop side are followed slowly,
    large ones (real head motion) at once."""

    def __init__(self, size: int, min_alpha: float = 0.1, jump: float = 0.08):
        self.size = size
        self.min_alpha = min_alpha
        self.jump = jump
        self.state: np.ndarray | None = None

    def __call__(self, M: np.ndarray) -> np.ndarray:
        M = np.asarray(M, np.float64)
        a = M[0, 0]
        side = self.size / a
        cx, cy = (self.size / 2 - M[0, 2]) / a, (self.size / 2 - M[1, 2]) / a
        new = np.array([cx, cy, side])
        if self.state is None:
            self.state = new
        else:
            delta = new - self.state
            alpha = np.clip(np.abs(delta) / (self.jump * self.state[2]), self.min_alpha, 1.0)
            self.state = self.state + alpha * delta
        return _transform(*self.state, self.size)
