"""The composite: the animator's motion applied to the full-resolution portrait, then the frame around it.

The animator works at model resolution R (256²): it computes a backward sampling grid in the face crop
(warp.tps_grid) and, for a neural model, paints a correction on top of the warped crop. Resizing that R² crop
back into the portrait (face/crop.py's PasteBack) throws away every detail finer than a crop pixel. Here the
grid is used instead of the crop: each output pixel p of the face region goes
    p -> crop px (M of the portrait) -> grid (bilinear, as grid_sample reads it) -> the shot's crop px
      -> the shot's source px (its M⁻¹)
and the shot's full-resolution picture is sampled once, there: bicubic, from a copy of the face's
surroundings oversampled 2x with a long Lanczos filter once per shot (oversample2), because a short kernel
read at fractional positions would blur pixel-scale detail. The network's correction is upsampled and
added only where it is not negligible, so skin the network did not repaint keeps all its detail.

The seam: the spline is pinned at the crop border, and the displacement is faded to exactly zero over a
thin band inside it, so the moved region meets the still portrait continuously: no alpha blend, hence no
halo or double edge, and pixels where nothing moves are the portrait's own bytes. A shot from another picture
(a --ref) has another background, so its region is blended into the portrait through the feathered mask
PasteBack used, now at full resolution.

Work is bounded by the face region (the crop square), processed in strips of at most STRIP_PIXELS pixels:
a huge portrait costs one copy of the frame plus a few strip-sized buffers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .errors import AnimateError
from .face.crop import DEFAULT_FEATHER, PasteBack, invert_affine, soft_mask

MOTION_FEATHER = 0.05  # displacement fades to 0 over this fraction of the crop side inside its border
CORRECTION_LOW = 3.0  # correction below this (uint8 levels, after a small blur) is ignored ...
CORRECTION_HIGH = 8.0  # ... and used fully from this level up; smooth in between
STRIP_PIXELS = 1 << 20  # the region is computed in strips of at most this many pixels (bounded memory)
MAX_SOURCE_STEP = 2.0  # a source denser than this many px per output px is pre-shrunk (INTER_AREA)
OVERSAMPLE_BELOW = 1.5  # a source with fewer px per output px than this is read from a 2x oversampled copy
OVERSAMPLE_MARGIN = 0.125  # of the crop side: how far beyond the crop square the oversampled copy reaches
OVERSAMPLE_BUDGET = 256 << 20  # bytes all oversampled copies may take; shots beyond it use plain bicubic
HALFBAND_LOBES = 8  # the oversampling filter: Lanczos-8 (16 taps) at the half-pixel positions
INTERPOLATION = cv2.INTER_CUBIC  # of the per-frame read from the (oversampled) source


@dataclass(frozen=True)
class ShotSource:
    """The full-resolution picture a shot was cropped from, and its crop transform."""

    image: np.ndarray  # uint8 (H, W, 3)
    M: np.ndarray  # 2x3 affine, image px -> crop px (face_crop_transform at the model resolution)


def _affine3(M) -> np.ndarray:
    return np.vstack([np.asarray(M, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])


def _scale(M) -> float:
    """Length ratio of an affine (geometric mean of its axes)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(M, np.float64)[:2, :2]))))


def border_window(size: int, feather: float = MOTION_FEATHER) -> np.ndarray:
    """(size, size) float32: 1 inside, smoothstep to exactly 0 at the outermost pixel centres.

    Multiplies the displacement so the moved region ends where the still portrait begins. Separable
    (a product of two ramps), so the corners fade no earlier than the sides need to."""
    dist = np.minimum(np.arange(size), size - 1 - np.arange(size)).astype(np.float64)
    t = np.clip(dist / max(feather * size, 1.0), 0.0, 1.0)
    ramp = t * t * (3 - 2 * t)
    return np.outer(ramp, ramp).astype(np.float32)


def correction_weight(correction: np.ndarray, low: float = CORRECTION_LOW, high: float = CORRECTION_HIGH) -> np.ndarray:
    """(R,R) in [0,1]: where a correction (R,R,3, uint8 units) is worth adding.

    Small differences are mostly the network's blur of texture it did not mean to change; adding them
    back would blur the native-resolution skin. The blur before the threshold keeps the weight smooth."""
    mag = np.abs(correction).max(axis=2)
    mag = cv2.GaussianBlur(mag, (0, 0), sigmaX=1.5)
    t = np.clip((mag - low) / max(high - low, 1e-6), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def oversample2(image: np.ndarray, lobes: int = HALFBAND_LOBES) -> np.ndarray:
    """(2H−1, 2W−1, C) float32: the even pixels are `image` itself, the odd ones Lanczos-interpolated.

    Why: any short kernel (bilinear, bicubic) read at a half-pixel position averages neighbours and
    erases detail at the scale of a pixel; the warp moves the face by fractions of a pixel everywhere.
    Bicubic read from this copy keeps ~0.95 of the face-box Laplacian variance (bicubic alone ~0.8,
    bilinear ~0.5) at the cost of bicubic per frame; the long filter runs once per shot. Float, not
    uint8: a second rounding would add its own pixel noise (visible as false detail on soft pictures),
    and OpenCV's bicubic remap is faster on float32 than on uint8."""
    taps = np.arange(-lobes + 1, lobes + 1) - 0.5  # offsets of the source pixels from a half position
    kernel = np.sinc(taps) * np.sinc(taps / lobes)
    kernel = (kernel / kernel.sum()).astype(np.float32)
    src = image.astype(np.float32)
    h, w = src.shape[:2]
    out = np.empty((2 * h - 1, 2 * w - 1) + src.shape[2:], np.float32)
    half = cv2.filter2D(src, -1, kernel[None, :], anchor=(lobes - 1, 0), borderType=cv2.BORDER_REFLECT_101)
    out[0::2, 0::2], out[0::2, 1::2] = src, half[:, :w - 1]
    rows = out[0::2]
    half = cv2.filter2D(rows, -1, kernel[:, None], anchor=(0, lobes - 1), borderType=cv2.BORDER_REFLECT_101)
    out[1::2] = half[:h - 1]
    return np.clip(out, 0, 255, out=out)


@dataclass
class _Source:
    """What one shot's frames are sampled from."""

    image: np.ndarray  # the shot's picture, or an oversampled / pre-shrunk copy of the part around the face
    to_source: np.ndarray  # 2x3, canvas px -> image px where nothing moves
    crop_lin: np.ndarray  # 2x2 float32, crop px -> image px (to carry displacements)
    blend: bool  # another picture than the portrait: its region is blended in through the feathered mask


def _prepare_source(image: np.ndarray, M, canvas_to_crop: np.ndarray, resolution: int, blend: bool,
                    budget: int) -> _Source:
    """The shot's picture made ready for sampling at the canvas's density (see MAX_SOURCE_STEP,
    OVERSAMPLE_BELOW); an oversampled copy only if it fits in `budget` bytes."""
    crop_to_source = _affine3(invert_affine(M))
    step = _scale(crop_to_source @ canvas_to_crop)  # source px per canvas px
    if step > MAX_SOURCE_STEP:  # bilinear/bicubic alone would alias: pre-shrink once, as warp_to_crop does
        f = MAX_SOURCE_STEP / step
        image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        crop_to_source = np.diag([f, f, 1.0]) @ crop_to_source
    elif step < OVERSAMPLE_BELOW:
        h, w = image.shape[:2]
        r = resolution
        corners = np.array([[-0.5, -0.5, 1], [r - 0.5, -0.5, 1], [-0.5, r - 0.5, 1], [r - 0.5, r - 0.5, 1]])
        pts = corners @ crop_to_source[:2].T
        margin = OVERSAMPLE_MARGIN * float((pts.max(0) - pts.min(0)).max())
        x0, y0 = np.clip(np.floor(pts.min(0) - margin).astype(int), 0, [w - 1, h - 1])
        x1, y1 = np.clip(np.ceil(pts.max(0) + margin).astype(int) + 1, 1, [w, h])
        if (2 * (x1 - x0) - 1) * (2 * (y1 - y0) - 1) * 12 <= budget and x1 - x0 > 1 and y1 - y0 > 1:
            image = oversample2(image[y0:y1, x0:x1])
            crop_to_source = np.array([[2.0, 0, -2.0 * x0], [0, 2.0, -2.0 * y0], [0, 0, 1]]) @ crop_to_source
    return _Source(image, (crop_to_source @ canvas_to_crop)[:2], crop_to_source[:2, :2].astype(np.float32), blend)


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (torch stays an optional import here)
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, np.float32)


class Compositor:
    """Renders output frames at the portrait's resolution from the animator's crop-space motion.

    portrait: uint8 (H,W,3), the picture whose frame is the output; M: its crop transform (portrait px ->
    crop px) at the animator's `resolution`. shots: the pictures the animator's shots came from, in its
    order (default: the portrait alone); a shot whose image is the portrait array itself with the same M
    needs no blending. crop_only: the output is the crop square itself, at its native size in portrait
    pixels (rounded to an even number, as H.264 needs) or at `size` px.
    """

    def __init__(self, portrait: np.ndarray, M, resolution: int, shots: Sequence[ShotSource] | None = None,
                 crop_only: bool = False, size: int | None = None, motion_feather: float = MOTION_FEATHER,
                 blend_feather: float = DEFAULT_FEATHER):
        portrait = _checked_image(portrait, "the portrait")
        if size is not None and size < 2:
            raise AnimateError(f"--size must be at least 2 (got {size})")
        self.portrait = portrait
        self.resolution = R = int(resolution)
        self.M = np.asarray(M, np.float64).reshape(2, 3)
        shots = list(shots) if shots is not None else [ShotSource(portrait, self.M)]
        if not shots:
            raise AnimateError("the compositor needs at least one shot")
        self.crop_only = crop_only

        # The canvas (the output frame), where its pixels fall in the crop, and the region the face covers.
        if crop_only:
            n = int(size) if size is not None else max(2, 2 * int(round(R / _scale(self.M) / 2)))
            k = R / n  # crop px per canvas px, pixel centres matched: c = (q + 0.5)·k − 0.5
            self.to_crop = np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5]])
            self.shape = (n, n)
            self.region = (slice(0, n), slice(0, n))
        else:
            self.to_crop = self.M.copy()
            self.shape = portrait.shape[:2]
            self.region = self._crop_square_region()
        ys, xs = self.region
        self.origin = (xs.start, ys.start)
        self.region_size = (xs.stop - xs.start, ys.stop - ys.start)  # (w, h)
        self.empty = self.region_size[0] <= 0 or self.region_size[1] <= 0

        self.window = border_window(R, motion_feather)
        self.blend_mask = soft_mask(R, blend_feather)
        canvas_to_crop = _affine3(self.to_crop)
        self.sources = []
        budget = OVERSAMPLE_BUDGET  # the first shots (the portrait first) get the sharpest sampling
        for shot in shots:
            image = _checked_image(shot.image, "a shot's picture")
            is_portrait = shot.image is portrait and np.allclose(np.asarray(shot.M, np.float64), self.M)
            source = _prepare_source(image, shot.M, canvas_to_crop, R, not is_portrait, budget)
            budget -= source.image.nbytes if source.image.dtype == np.float32 else 0
            self.sources.append(source)
        self.pasteback = None  # made when a painted crop first comes (paste)
        self.background = None
        if crop_only and any(s.blend for s in self.sources):  # the still portrait on the crop canvas
            still = next((s for s in self.sources if not s.blend), None)  # sampled as the portrait's frames are
            if still is None:
                still = _prepare_source(portrait, self.M, canvas_to_crop, R, False, OVERSAMPLE_BUDGET)
            self.background = np.empty(self.shape + (3,), np.uint8)
            self._render(self.background, still, (np.zeros((R, R), np.float32),) * 2, None)

    def _crop_square_region(self) -> tuple[slice, slice]:
        """The canvas pixels the crop square [−0.5, R−0.5]² covers, clipped to the canvas."""
        h, w = self.shape
        R = self.resolution
        inv = invert_affine(self.to_crop)
        square = np.array([[-0.5, -0.5], [R - 0.5, -0.5], [-0.5, R - 0.5], [R - 0.5, R - 0.5]])
        corners = square @ inv[:, :2].T + inv[:, 2]
        x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, [w, h])
        x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 1, 0, [w, h])
        return slice(int(y0), int(y1)), slice(int(x0), int(x1))

    def displacement(self, grid) -> np.ndarray:
        """(R,R,2) float32 crop px: where each output crop pixel reads, minus itself (zero = still)."""
        g = _as_numpy(grid)
        R = self.resolution
        if g.ndim == 4 and g.shape[0] == 1:
            g = g[0]
        if g.shape != (R, R, 2):
            raise AnimateError(f"the sampling grid must be ({R}, {R}, 2), got {g.shape}")
        centres = np.arange(R, dtype=np.float32)
        d = (g + 1.0) * (R / 2.0) - 0.5  # normalised -> px (align_corners=False): x = ((u + 1)·R − 1) / 2
        d[..., 0] -= centres[None, :]
        d[..., 1] -= centres[:, None]
        return d

    def __call__(self, grid, shot: int = 0, correction=None, where=None) -> np.ndarray:
        """One output frame (uint8, canvas-sized): shot `shot` moved by `grid`, sampled at full resolution.

        grid: (R,R,2) or (1,R,R,2), grid_sample coords (align_corners=False) in the shot's crop, as
        warp.tps_grid gives. correction: optional (3,R,R) or (R,R,3), network output − warped in [-1,1]
        image units; where: optional (R,R) weight in [0,1] saying where it is used (default:
        correction_weight). Neither is needed for the warp model."""
        if not 0 <= shot < len(self.sources):
            raise AnimateError(f"shot index {shot} is outside the {len(self.sources)} shot(s)")
        source = self.sources[shot]
        d = self.displacement(grid) * self.window[..., None]
        out = np.empty(self.shape + (3,), np.uint8) if self.crop_only else self.portrait.copy()
        if not self.empty:
            d_src = d @ source.crop_lin.T  # crop px -> the source's px (the linear part: a displacement)
            self._render(out, source, (np.ascontiguousarray(d_src[..., 0]), np.ascontiguousarray(d_src[..., 1])),
                         self._weighted_correction(correction, where))
        return out

    def paste(self, crop: np.ndarray) -> np.ndarray:
        """One output frame from a crop (R,R,3 uint8) a network painted whole, with no motion to apply at full
        resolution (an fsth generator): resized to the crop canvas, or pasted back into the portrait through the
        feathered mask. As sharp as the crop, no sharper."""
        crop = _checked_image(crop, "a painted crop")
        if crop.shape[:2] != (self.resolution,) * 2:
            raise AnimateError(f"a painted crop must be {self.resolution}² (got {crop.shape[1]}x{crop.shape[0]})")
        if self.crop_only:
            interp = cv2.INTER_AREA if self.shape[0] < self.resolution else cv2.INTER_CUBIC
            return cv2.resize(crop, self.shape[::-1], interpolation=interp)
        if self.pasteback is None:
            self.pasteback = PasteBack(self.portrait, self.M, self.resolution, self.blend_mask)
        return self.pasteback(crop)

    def _render(self, out: np.ndarray, source: _Source, d_src: tuple[np.ndarray, np.ndarray],
                corr: np.ndarray | None) -> None:
        """Fill the region of `out`, strip by strip: displacement (already in source px) upsampled to the
        canvas, plus where each pixel sits when still, read from the source; correction and blend after."""
        w, h = self.region_size
        x0, y0 = self.origin
        T = source.to_source
        xs = np.arange(x0, x0 + w, dtype=np.float64)
        inverse = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        rows = max(1, STRIP_PIXELS // max(w, 1))
        for top in range(0, h, rows):
            sh = min(rows, h - top)
            strip_to_crop = self.to_crop.copy()
            strip_to_crop[:, 2] += self.to_crop[:, :2] @ [x0, y0 + top]
            ys = np.arange(y0 + top, y0 + top + sh, dtype=np.float64)
            maps = []
            for axis in (0, 1):  # one channel at a time: OpenCV warps two 1-channel maps faster than one 2-channel
                m = cv2.warpAffine(d_src[axis], strip_to_crop, (w, sh), flags=inverse,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                a, b, c = T[axis]
                if b == 0 and axis == 0:  # crops are axis-aligned: add a row (or a column), not a full plane
                    m += (a * xs + c).astype(np.float32)[None, :]
                elif a == 0 and axis == 1:
                    m += (b * ys + c).astype(np.float32)[:, None]
                else:
                    m += np.add.outer(b * ys, a * xs + c).astype(np.float32)
                maps.append(m)
            # reads past an oversampled copy's edge (its margin exceeded: implausibly strong motion) mirror there
            moved = cv2.remap(source.image, maps[0], maps[1], INTERPOLATION, borderMode=cv2.BORDER_REFLECT_101)
            if corr is not None or source.blend or moved.dtype != np.uint8:
                moved = moved.astype(np.float32, copy=False)
                if corr is not None:
                    moved += cv2.warpAffine(corr, strip_to_crop, (w, sh), flags=inverse,
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                if source.blend:
                    alpha = cv2.warpAffine(self.blend_mask, strip_to_crop, (w, sh), flags=inverse,
                                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
                    still = self._still(top, sh).astype(np.float32)
                    moved = still + (moved - still) * alpha
                # negatives to 0 first: convertScaleAbs rounds and saturates at 255, but takes |x|
                moved = cv2.convertScaleAbs(cv2.threshold(moved, 0, 0, cv2.THRESH_TOZERO)[1])
            out[y0 + top:y0 + top + sh, x0:x0 + w] = moved

    def _still(self, top: int, rows: int) -> np.ndarray:
        x0, y0 = self.origin
        still = self.background if self.crop_only else self.portrait
        return still[y0 + top:y0 + top + rows, x0:x0 + self.region_size[0]]

    def _weighted_correction(self, correction, where) -> np.ndarray | None:
        """The correction in uint8 units, (R,R,3), faded by where it is used and to 0 towards the crop border
        (the paste-back mask); None when nothing of it is left."""
        if correction is None:
            return None
        R = self.resolution
        c = _as_numpy(correction)
        if c.ndim == 4 and c.shape[0] == 1:
            c = c[0]
        if c.shape == (3, R, R):
            c = c.transpose(1, 2, 0)
        if c.shape != (R, R, 3):
            raise AnimateError(f"the correction must be (3, {R}, {R}), got {c.shape}")
        c = np.ascontiguousarray(c * 127.5)
        weight = correction_weight(c) if where is None else _as_numpy(where).reshape(R, R)
        weight = weight * self.blend_mask
        if not weight.any():
            return None
        return c * weight[..., None]


def _checked_image(image, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise AnimateError(f"{what} must be an RGB uint8 image, got {image.dtype} {image.shape}")
    return image
