"""Thin-plate spline backward warp: move an image so its landmarks land on new positions.

The model-free animator and the guide for the warp generator. Torch only, batched and
differentiable, on the device and dtype of its inputs. Coordinates: landmark pixel (x, y)
with pixel centres at integers (as cv2), normalised as grid_sample(align_corners=False)
expects: u = (2x + 1) / W − 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import AnimateError
from .face.measures import EYE_CORNERS
from .face.regions import EYELIDS as LID_PAIRS  # per eye, (upper, lower) pairs
from .face.regions import MOUTH_POINTS

# The spline's regularisation (normalised units) of the model-free `warp` animator, and ModelConfig's default;
# > 0 keeps coincident points (closed lips) solvable. The functions below take `reg` from their caller.
DEFAULT_REG = 1e-3
DEFAULT_STEP = 4  # kernel evaluated every `step` pixels, then upsampled bilinearly
# The upper and lower eyelids of the 68 iBUG points: fitted at DEFAULT_REG at most whatever `reg`. A blink is a
# few pixels of local motion between still eye corners, which a smoother spline (a model's own warp_reg)
# averages away: the eyes of the default model (reg 0.05) barely closed where the driver's shut.
EYELIDS = tuple(sorted(i for eye in LID_PAIRS for pair in eye for i in pair))  # (37, 38, 40, 41, 43, ...)
# The lips (outer and inner line), likewise: the mouth's shape is what a talking face says, and at the model's
# reg the smoother spline rounded it off (the default followed the driver's mouth less than the warp: 0.72 vs 0.77)
LIPS = tuple(range(68)[MOUTH_POINTS])  # (48, ..., 67)
N_LANDMARKS = 68
# A closing eye. The spline cannot shut one: the target's upper and lower lid points meet while they read from
# lids apart in the shot, so it splits the difference and the closed line shows the middle of the eye (the
# iris) - a blink looked like a squint. So the spline is given lids at least LIDS_MIN_OPEN of the shot's gap
# apart, and a per-pixel remap (lid_field) closes them the rest of the way: above the closed line the upper
# lid's skin slides down, below it the lower lid comes up, and the eye between them is squeezed out of view.
# The remap takes nearly all of a lid's travel: the spline, closing a lid, also dragged the skin up to the brow
# along (the brows crumpled on a blink, and the upper face read as shaking); the remap moves a band of lid skin.
LIDS_MIN_OPEN = 0.9
LID_MARGIN = 0.15  # lid_field reads this share of the opening beyond the spline's lid lines (and half a pixel)
LID_REACH = (0.35, 0.25)  # skin above the upper lid and below the lower one that moves with them, × eye width


def border_anchors(size_hw, per_side: int = 9, device=None, dtype=torch.float32) -> torch.Tensor:
    """(4·per_side − 4, 2) pixel points on the outermost pixel centres, mapped to themselves.

    They pin the frame border so the background stays still while the face moves.
    """
    h, w = int(size_hw[0]), int(size_hw[1])
    xs = torch.linspace(0, w - 1, per_side, device=device, dtype=dtype)
    ys = torch.linspace(0, h - 1, per_side, device=device, dtype=dtype)[1:-1]
    top = torch.stack([xs, torch.zeros_like(xs)], 1)
    bottom = torch.stack([xs, torch.full_like(xs, h - 1)], 1)
    left = torch.stack([torch.zeros_like(ys), ys], 1)
    right = torch.stack([torch.full_like(ys, w - 1), ys], 1)
    return torch.cat([top, bottom, left, right])


def open_lids(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """dst (B,68,2) with each lid pair at least LIDS_MIN_OPEN × its gap in `src` apart (scaled by the eyes'
    widths): the lids the spline is fitted to. Wider pairs are left as they are. The missing gap is given back
    to each lid in proportion to how far it has closed from where it sits in `src` (about the eye corners), so
    a lid that did not move stays put: widened about the midpoint, a blink (the upper lid falling) pushed the
    lower lid's spline point down and the cheek under the eye bobbed with every blink."""
    out = dst.clone()
    for (a, b), pairs in zip(EYE_CORNERS, LID_PAIRS):
        scale = (dst[:, b] - dst[:, a]).norm(dim=-1) / (src[:, b] - src[:, a]).norm(dim=-1).clamp_min(1e-6)
        down_d, down_s = _down(dst[:, a], dst[:, b]), _down(src[:, a], src[:, b])
        depth_d = lambda i: ((dst[:, i] - dst[:, a]) * down_d).sum(-1)  # noqa: E731  below the corner line
        depth_s = lambda i: ((src[:, i] - src[:, a]) * down_s).sum(-1) * scale  # noqa: E731
        for up, lo in pairs:
            gap = depth_d(lo) - depth_d(up)
            least = LIDS_MIN_OPEN * (depth_s(lo) - depth_s(up))
            missing = (least - gap).clamp_min(0)
            fell = (depth_d(up) - depth_s(up)).clamp_min(0)  # the upper lid's travel down, the lower's up
            rose = (depth_s(lo) - depth_d(lo)).clamp_min(0)
            share_up = torch.where(fell + rose > 1e-6, fell / (fell + rose).clamp_min(1e-6),
                                   torch.full_like(fell, 0.5))
            out[:, up] = dst[:, up] - (missing * share_up)[:, None] * down_d
            out[:, lo] = dst[:, lo] + (missing * (1 - share_up))[:, None] * down_d
    return out


def _down(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,2) unit normal of the corner line a -> b, pointing down the face (image y grows downwards)."""
    along = b - a
    return torch.stack([-along[:, 1], along[:, 0]], -1) / along.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def _knot_weights(knots: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B,3,P): how far each position t (B,P) has come along each of the 3 segments between 4 increasing knots
    (B,4), 0 to 1. A polyline through values v at those knots is then v0 + Σ w_i (v_i+1 − v_i): flat beyond
    the end knots."""
    k0, k1 = knots[:, :3, None], knots[:, 1:, None]
    return ((t[:, None] - k0) / (k1 - k0).clamp_min(1e-6)).clamp(0, 1)


def _polyline(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B,4) values at the knots, (B,3,P) weights (_knot_weights) -> (B,P)."""
    return values[:, :1] + (weights * (values[:, 1:] - values[:, :3])[..., None]).sum(1)


def _remap(a, top, up_f, lo_f, bottom, up_s, lo_s):
    """The across-coordinate in the spline's frame that the output's `a` reads: [top, up_f] <- [top, up_s]
    (the upper lid's skin), [up_f, lo_f] <- [up_s, lo_s] (what is left of the eye), [lo_f, bottom] <-
    [lo_s, bottom] (the lower lid's skin); identity outside."""
    def lerp(x, x0, x1, y0, y1):
        return y0 + (x - x0) * (y1 - y0) / (x1 - x0).clamp_min(1e-6)
    out = torch.where((a >= top) & (a < up_f), lerp(a, top, up_f, top, up_s), a)
    out = torch.where((a >= up_f) & (a < lo_f), lerp(a, up_f, lo_f, up_s, lo_s), out)
    return torch.where((a >= lo_f) & (a < bottom), lerp(a, lo_f, bottom, lo_s, bottom), out)


def lid_field(opened: torch.Tensor, dst: torch.Tensor, size_hw) -> list[LocalField]:
    """The remap (LocalFields, grid units, one per eye) that takes the spline's `opened` lids (open_lids) to
    the target's `dst` ones; empty where no lid was opened. Each eye's frame comes from its corners (which the
    remap keeps); along it the lids are polylines through the outline points."""
    rows = (opened != dst).flatten(1).any(1).nonzero()[:, 0]
    if len(rows) == 0:
        return []
    h, w = int(size_hw[0]), int(size_hw[1])
    everyone, opened, dst = len(dst), opened[rows], dst[rows]  # only the rows with a closing eye are remapped
    fields = []
    for (a, b), pairs in zip(EYE_CORNERS, LID_PAIRS):
        upper = [a] + [up for up, _ in pairs] + [b]  # corner, the lid's points left to right, corner
        lower = [a] + [lo for _, lo in pairs] + [b]
        along = dst[:, b] - dst[:, a]
        width = along.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        pts = torch.cat([dst[:, upper + lower], opened[:, upper + lower]], 1).reshape(-1, 2)
        pad = max(LID_REACH) * width.max() + 2
        x0, y0 = [int(v) for v in (pts.amin(0) - pad).floor().clamp_min(0).tolist()]
        x1, y1 = [int(v) for v in (pts.amax(0) + pad).ceil().tolist()]
        x1, y1 = min(w, x1 + 1), min(h, y1 + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        ys, xs = torch.meshgrid(torch.arange(y0, y1, device=dst.device, dtype=dst.dtype),
                                torch.arange(x0, x1, device=dst.device, dtype=dst.dtype), indexing="ij")
        centre = (dst[:, a] + dst[:, b]) / 2
        axis = along / width
        down = _down(dst[:, a], dst[:, b])

        def frame(points):  # (B,P,2) px -> t along in half-widths, across in px
            rel = points - centre[:, None]
            return (rel * axis[:, None]).sum(-1) / (width / 2), (rel * down[:, None]).sum(-1)

        t, across = frame(torch.stack([xs, ys], -1).reshape(1, -1, 2))
        # open_lids moves points across the eye only: the target's and the spline's lids share their knots
        t_up, a_up = frame(dst[:, upper])
        t_lo, a_lo = frame(dst[:, lower])
        w_up, w_lo = _knot_weights(t_up, t), _knot_weights(t_lo, t)
        up_f, lo_f = _polyline(a_up, w_up), _polyline(a_lo, w_lo)
        up_s, lo_s = _polyline(frame(opened[:, upper])[1], w_up), _polyline(frame(opened[:, lower])[1], w_lo)
        # the spline's lids bow between their points: reach a little beyond the polylines (or a sliver of the
        # eye's white stays in view at a closed eye's corners), as much as the lids were closed, so the remap
        # grows from nothing as the lids pass the spline's share
        gap_s = (lo_s - up_s).clamp_min(0)
        closed = ((gap_s - (lo_f - up_f)) / gap_s.clamp_min(1e-6)).clamp(0, 1)
        margin = (LID_MARGIN * gap_s + 0.5) * closed
        up_s, lo_s = up_s - margin, lo_s + margin
        top, bottom = up_s - LID_REACH[0] * width, lo_s + LID_REACH[1] * width
        inside = (t.abs() < 1) & (across > top) & (across < bottom)
        moved = torch.where(inside, _remap(across, top, up_f, lo_f, bottom, up_s, lo_s) - across, 0.0)
        values = dst.new_zeros(everyone, y1 - y0, x1 - x0, 2)
        shift = -moved[..., None] * down[:, None] * dst.new_tensor([2.0 / w, 2.0 / h])
        values[rows] = shift.reshape(len(rows), y1 - y0, x1 - x0, 2)
        fields.append(LocalField(values, y0, x0))
    return fields


def _normalise(pts: torch.Tensor, h: int, w: int) -> torch.Tensor:
    scale = pts.new_tensor([2.0 / w, 2.0 / h])
    return (pts + 0.5) * scale - 1.0


def _kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """U(r) = r² log r² between (B,N,2) and (B,P,2) -> (B,N,P).

    Squared distances via one matmul (the broadcast difference is several times slower on
    CPU); clamped so U(0) = 0 keeps a finite gradient.
    """
    sq = a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(1)
    d2 = torch.baddbmm(sq, a, b.transpose(1, 2), alpha=-2).clamp_min(1e-12)
    return d2 * torch.log(d2)


def _axis(n: int, m: int, device, dtype) -> torch.Tensor:
    """m normalised coordinates from the first to the last of n pixel centres."""
    return torch.linspace(-1 + 1 / n, 1 - 1 / n, m, device=device, dtype=dtype)


def _batch_points(src, dst, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.as_tensor(src, device=device).to(dtype)
    dst = torch.as_tensor(dst, device=device).to(dtype)
    if src.dim() == 2:
        src = src.unsqueeze(0)
    if dst.dim() == 2:
        dst = dst.unsqueeze(0)
    if src.dim() != 3 or src.shape[-1] != 2 or src.shape[1:] != dst.shape[1:]:
        raise AnimateError(f"warp landmarks must be (B, P, 2) and alike, got {tuple(src.shape)} and {tuple(dst.shape)}")
    b = max(src.shape[0], dst.shape[0])
    return src.expand(b, -1, -1), dst.expand(b, -1, -1)


def tps_grid(src, dst, size, *, reg: float, anchors: bool = True, step: int = DEFAULT_STEP) -> torch.Tensor:
    """Sampling grid (B,H,W,2) for F.grid_sample: output pixel at dst[i] reads input at src[i].

    Fits the spline dst -> (src − dst) in normalised coordinates (so equal landmarks give the
    identity exactly), solves the small system in float64 for stability, and evaluates the
    displacement on a grid `step` px coarser, upsampled bilinearly: the spline is smooth
    (at step 4 errors are sub-pixel, ~1 px at worst between tightly packed lip points) and
    this is what makes a 256² frame take milliseconds; affine motion stays exact. Use
    step=1 for the exact spline. `reg` trades landmark fit for smoothness (not on 68-point sets' eyelids:
    EYELIDS). A 68-point set's lids closing past LIDS_MIN_OPEN are closed by lid_field, not the spline.
    """
    h, w = int(size[0]), int(size[1])
    ref = src if torch.is_tensor(src) else dst  # device/dtype follow the caller's tensors
    dtype = ref.dtype if torch.is_tensor(ref) and ref.is_floating_point() else torch.float32
    device = ref.device if torch.is_tensor(ref) else None
    src, dst = _batch_points(src, dst, device, dtype)
    bsz = src.shape[0]
    close, lids = [], []
    if src.shape[1] == N_LANDMARKS:
        opened = open_lids(src, dst)
        lids, dst = lid_field(opened, dst, (h, w)), opened
        close = list(EYELIDS) + list(LIPS)
    if anchors:
        anc = border_anchors((h, w), device=device, dtype=dtype).expand(bsz, -1, -1)
        src, dst = torch.cat([src, anc], 1), torch.cat([dst, anc], 1)
    c = _normalise(dst, h, w)  # control points live in the output frame
    disp = _normalise(src, h, w) - c
    n = c.shape[1]

    # [K + reg·I, Q; Qᵀ, 0] [wts; aff] = [disp; 0], with Q = [1, x, y].
    c64 = c.double()
    q = torch.cat([torch.ones_like(c64[..., :1]), c64], -1)
    diag = torch.full((n,), float(reg), device=device, dtype=torch.float64)
    diag[close] = min(float(reg), DEFAULT_REG)
    top = torch.cat([_kernel(c64, c64) + torch.diag(diag), q], 2)
    bottom = torch.cat([q.transpose(1, 2), q.new_zeros(bsz, 3, 3)], 2)
    rhs = torch.cat([disp.double(), q.new_zeros(bsz, 3, 2)], 1)
    sol = torch.linalg.solve(torch.cat([top, bottom], 1), rhs).to(dtype)
    wts, aff = sol[:, :n], sol[:, n:]

    # Displacement on a coarse grid spanning the same first/last pixel centres, so that
    # align_corners=True upsampling lands exactly on the fine pixels (affine part exact).
    lh, lw = (h, w) if step <= 1 else (min(h, max(2, -(-h // step) + 1)), min(w, max(2, -(-w // step) + 1)))
    ly, lx = torch.meshgrid(_axis(h, lh, device, dtype), _axis(w, lw, device, dtype), indexing="ij")
    pts = torch.stack([lx, ly], -1).reshape(1, -1, 2).expand(bsz, -1, -1)
    coarse = torch.baddbmm(aff[:, :1], pts, aff[:, 1:]) + _kernel(pts, c) @ wts
    coarse = coarse.transpose(1, 2).reshape(bsz, 2, lh, lw)
    if (lh, lw) != (h, w):
        coarse = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
    grid = _base_grid(h, w, device, dtype) + coarse.permute(0, 2, 3, 1)
    for field in lids:
        grid = displace_grid(grid, field)
    return grid


def _base_grid(h: int, w: int, device, dtype) -> torch.Tensor:
    """(H,W,2) identity grid: the normalised centre of every pixel."""
    gy, gx = torch.meshgrid(_axis(h, h, device, dtype), _axis(w, w, device, dtype), indexing="ij")
    return torch.stack([gx, gy], -1)


def tps_flow(src, dst, size, *, reg: float, anchors: bool = True, step: int = DEFAULT_STEP) -> torch.Tensor:
    """Backward flow in pixels (B,H,W,2): output (x, y) reads input at (x, y) + flow.

    For callers that want to reuse or compose the motion rather than a grid_sample grid.
    """
    grid = tps_grid(src, dst, size, reg=reg, anchors=anchors, step=step)
    h, w = grid.shape[1:3]
    return (grid - _base_grid(h, w, grid.device, grid.dtype)) * grid.new_tensor([w / 2.0, h / 2.0])


@dataclass
class LocalField:
    """A backward displacement (B,h,w,2, grid units) over the window of the output frame whose top-left
    pixel is (top, left); zero elsewhere. Local, so a small motion (the irises) costs only its window."""

    values: torch.Tensor
    top: int = 0
    left: int = 0


def displace_grid(grid: torch.Tensor, field: LocalField) -> torch.Tensor:
    """The sampling grid `grid` (B,H,W,2) read at x − field(x): a local motion in the output frame
    (gaze.gaze_field) composed with the warp, so the image is still resampled once."""
    h, w = grid.shape[1:3]
    fh, fw = field.values.shape[1:3]
    y0, x0 = field.top, field.left
    if y0 < 0 or x0 < 0 or y0 + fh > h or x0 + fw > w:
        raise AnimateError(f"a {fh}x{fw} field at ({y0}, {x0}) does not fit a {h}x{w} grid")
    where = _base_grid(h, w, grid.device, grid.dtype)[y0:y0 + fh, x0:x0 + fw] - field.values.to(grid.dtype)
    out = grid.clone()
    out[:, y0:y0 + fh, x0:x0 + fw] = resample(grid.permute(0, 3, 1, 2), where).permute(0, 2, 3, 1)
    return out


def warp_image(image: torch.Tensor, src, dst, *, reg: float, anchors: bool = True,
               step: int = DEFAULT_STEP, field: LocalField | None = None) -> torch.Tensor:
    """`image` (B,C,H,W) moved so that what sat at `src` (px) now sits at `dst` (px), then by `field`
    (displace_grid) where one is given.

    Bilinear sampling with border padding, so nothing black enters from outside the frame. `reg`: the
    spline's regularisation (tps_grid).
    """
    if not torch.is_tensor(image) or image.dim() != 4 or not image.is_floating_point():
        raise AnimateError("warp_image needs a float (B, C, H, W) tensor")
    src = torch.as_tensor(src, device=image.device).to(image.dtype)
    dst = torch.as_tensor(dst, device=image.device).to(image.dtype)
    grid = tps_grid(src, dst, image.shape[-2:], reg=reg, anchors=anchors, step=step)
    if field is not None:
        b = field.values.shape[0]
        grid = displace_grid(grid.expand(b, -1, -1, -1) if grid.shape[0] == 1 else grid, field)
    if grid.shape[0] != image.shape[0]:  # one image, many poses, or one pose for many images
        if 1 not in (grid.shape[0], image.shape[0]):
            raise AnimateError(f"warp batch mismatch: {image.shape[0]} images, {grid.shape[0]} landmark sets")
        b = max(grid.shape[0], image.shape[0])
        image, grid = image.expand(b, -1, -1, -1), grid.expand(b, -1, -1, -1)
    return resample(image, grid)


def resample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`image` (B,C,H,W) read at `grid` (B,H,W,2, as tps_grid gives): bilinear, border-padded. A grid is
    itself an image of positions, so resample(grid_a as image, grid_b) composes two motions into one."""
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=False)
