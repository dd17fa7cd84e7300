"""Gaze transfer: slide the portrait's irises the way the driver's eyes turn.

Landmarks move eyelids, not eyeballs, so the warp alone leaves the portrait staring ahead. The driver's
gaze (iris offset from the eye's centre, in eye widths: face.measures.gaze) is taken relative to its
median over the clip (people mostly look at the camera), averaged over both eyes (the eyes turn
together), clamped, and turned into a shift of each portrait iris in the target frame. The shift is
applied as a local displacement field: full inside the eye's opening, falling to zero at the eyelids
and corners (an ellipse through the eye's landmarks), so lids and skin stay put and the iris slides under
them. The field is composed with the warp's sampling grid (warp.displace_grid), so the image is still
resampled once.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import AnimateError
from .face.measures import eye_frames, eye_openness, gaze
from .face.regions import EYELIDS as LID_PAIRS
from .warp import LocalField

MAX_SHIFT = 0.2     # the driver's gaze change, in eye widths, is clamped to this (sideways)
MAX_ECCENTRIC = 0.25  # and the portrait's iris centre stays this close to its eye's centre (corners at 0.5)
MAX_LIFT = 0.3      # a vertical shift is at most this share of the eyelid gap
LID_RAMP = 0.35     # across the eye, the field falls to 0 over this outer share of the half-opening (lids, lashes)
CORNER_RAMP = 0.4   # along it, over this share of the half-width before the opening's edge on that row


def relative_gaze(points, irises) -> np.ndarray:
    """(N,2) the driver's conjugate gaze (h, v) minus its median over the clip, in eye widths, clamped."""
    g = gaze(points, irises).mean(1)
    rel = g - np.median(g, 0)
    return np.clip(rel, -MAX_SHIFT, MAX_SHIFT)


def iris_shifts(targets, rel_gaze, portrait_gaze=None) -> np.ndarray:
    """(N,2,2) shift of each portrait iris in target pixels for the targets' eye geometry (N,68,2).

    portrait_gaze (2,2), the portrait's own offsets (face.measures.gaze), keeps an iris that already looks
    sideways from leaving its eye: the total offset stays within MAX_ECCENTRIC. Vertical shifts stay
    within MAX_LIFT of the eyelid gap, so an eye that is nearly shut gets nearly none."""
    t = np.asarray(targets, np.float64)
    rel = np.asarray(rel_gaze, np.float64)
    if t.ndim != 3 or t.shape[1:] != (68, 2) or rel.shape != (len(t), 2):
        raise AnimateError(f"gaze needs (N,68,2) targets and (N,2) offsets, got {t.shape} and {rel.shape}")
    own = np.zeros((2, 2)) if portrait_gaze is None else np.asarray(portrait_gaze, np.float64).reshape(2, 2)
    h = np.clip(own[None, :, 0] + rel[:, None, 0], -MAX_ECCENTRIC, MAX_ECCENTRIC) - own[None, :, 0]
    lift = MAX_LIFT * eye_openness(t)  # (N,2) in eye widths
    v = np.clip(rel[:, None, 1], -lift, lift)
    _, axis, width = eye_frames(t)
    normal = np.stack([-axis[..., 1], axis[..., 0]], -1)
    return (h[..., None] * axis + v[..., None] * normal) * width[..., None]


def eye_ellipses(targets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame and eye: centre (N,2,2), unit long axis (N,2,2), semi-axes (N,2,2) (along, across) of the
    ellipse through the corners and the lid gap."""
    t = np.asarray(targets, np.float64)
    mid, axis, width = eye_frames(t)
    normal = np.stack([-axis[..., 1], axis[..., 0]], -1)
    centre, semi = np.empty_like(mid), np.empty_like(mid)
    for k, pairs in enumerate(LID_PAIRS):
        lids = np.stack([(t[:, u] + t[:, l]) / 2 for u, l in pairs], 1).mean(1)  # the opening's middle line
        gap = np.mean([((t[:, l] - t[:, u]) * normal[:, k]).sum(-1) for u, l in pairs], 0)
        centre[:, k] = mid[:, k] + ((lids - mid[:, k]) * normal[:, k]).sum(-1, keepdims=True) * normal[:, k]
        semi[:, k] = np.stack([width[:, k] / 2, np.maximum(gap / 2, 0.25)], -1)
    return centre, axis, semi


def gaze_field(targets, shifts, size: int, device=None, dtype=torch.float32) -> LocalField:
    """Backward displacement in grid_sample units over the window holding both eyes of every target:
    output pixel x should show what sits at x − field(x). Full shift over most of each eye's opening, so
    the iris slides as a whole; zero at and beyond the lids (a thin ramp: lashes stay) and the corners
    (a wider one: the white is squeezed there)."""
    centre, axis, semi = eye_ellipses(targets)
    s = np.asarray(shifts, np.float64)
    reach = semi[..., :1] + np.abs(s).max(-1, keepdims=True)  # the ellipse and where it reads from
    lo = np.floor((centre - reach).reshape(-1, 2).min(0)).astype(int) - 1
    hi = np.ceil((centre + reach).reshape(-1, 2).max(0)).astype(int) + 2
    x0, y0 = np.clip(lo, 0, size - 1)
    x1, y1 = np.maximum(np.clip(hi, 1, size), [x0 + 1, y0 + 1])
    c, ax, semi_t, s_t = (torch.as_tensor(a, device=device, dtype=dtype) for a in (centre, axis, semi, s))
    ys, xs = torch.meshgrid(torch.arange(y0, y1, device=device, dtype=dtype),
                            torch.arange(x0, x1, device=device, dtype=dtype), indexing="ij")
    px = torch.stack([xs, ys], -1).reshape(1, 1, -1, 2)
    rel = px - c.unsqueeze(2)  # (B,2,P,2)
    along = (rel * ax.unsqueeze(2)).sum(-1) / semi_t[..., :1]
    normal = torch.stack([-ax[..., 1], ax[..., 0]], -1)
    across = (rel * normal.unsqueeze(2)).sum(-1) / semi_t[..., 1:]
    half_row = (1 - across ** 2).clamp_min(0).sqrt()  # the opening's half-width on this row
    weight = (((1 - across.abs()) / LID_RAMP).clamp(0, 1)
              * ((half_row - along.abs()) / CORNER_RAMP).clamp(0, 1))  # (B,2,P)
    field_px = (weight.unsqueeze(-1) * s_t.unsqueeze(2)).sum(1)  # (B,P,2): eyes do not overlap
    values = (field_px * (2.0 / size)).reshape(len(s), y1 - y0, x1 - x0, 2)
    return LocalField(values, int(y0), int(x0))


def portrait_gaze(points, irises) -> np.ndarray | None:
    """(2,2) the portrait's own iris offsets, or None when it has no irises."""
    if irises is None:
        return None
    return gaze(np.asarray(points)[None], np.asarray(irises)[None])[0]

