"""Thin-plate spline backward warp: move an image so its landmarks land on new positions.

The model-free animator and the guide for the warp generator. Torch only, batched and
differentiable, on the device and dtype of its inputs. Coordinates: landmark pixel (x, y)
with pixel centres at integers (as cv2), normalised as grid_sample(align_corners=False)
expects: u = (2x + 1) / W − 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import AnimateError

DEFAULT_REG = 1e-3  # in normalised units; keeps coincident points (closed lips) solvable
DEFAULT_STEP = 4  # kernel evaluated every `step` pixels, then upsampled bilinearly


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


def _normalise(pts: torch.Tensor, h: int, w: int) -> torch.Tensor:
    scale = pts.new_tensor([2.0 / w, 2.0 / h])
    return (pts + 0.5) * scale - 1.0


def _kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """U(r) = r² log r² between (B,N,2) and (B,P,2) -> (B,N,P); clamped so U(0)=0 has a finite grad."""
    d2 = (a.unsqueeze(2) - b.unsqueeze(1)).pow(2).sum(-1).clamp_min(1e-12)
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


def tps_grid(src, dst, size, anchors: bool = True, reg: float = DEFAULT_REG,
             step: int = DEFAULT_STEP) -> torch.Tensor:
    """Sampling grid (B,H,W,2) for F.grid_sample: output pixel at dst[i] reads input at src[i].

    Fits the spline dst -> (src − dst) in normalised coordinates (so equal landmarks give the
    identity exactly), solves the small system in float64 for stability, and evaluates the
    radial part on a grid `step` times coarser, upsampled bilinearly: it is smooth, and this
    is what makes a 256² frame take milliseconds. The affine part is exact at full resolution.
    """
    h, w = int(size[0]), int(size[1])
    ref = src if torch.is_tensor(src) and src.is_floating_point() else dst
    dtype = ref.dtype if torch.is_tensor(ref) and ref.is_floating_point() else torch.float32
    device = ref.device if torch.is_tensor(ref) else None
    src, dst = _batch_points(src, dst, device, dtype)
    bsz = src.shape[0]
    if anchors:
        anc = border_anchors((h, w), device=device, dtype=dtype).expand(bsz, -1, -1)
        src, dst = torch.cat([src, anc], 1), torch.cat([dst, anc], 1)
    c = _normalise(dst, h, w)  # control points live in the output frame
    disp = _normalise(src, h, w) - c
    n = c.shape[1]

    # [K + reg·I, Q; Qᵀ, 0] [wts; aff] = [disp; 0], with Q = [1, x, y].
    c64 = c.double()
    q = torch.cat([torch.ones_like(c64[..., :1]), c64], -1)
    top = torch.cat([_kernel(c64, c64) + reg * torch.eye(n, device=device, dtype=torch.float64), q], 2)
    bottom = torch.cat([q.transpose(1, 2), q.new_zeros(bsz, 3, 3)], 2)
    rhs = torch.cat([disp.double(), q.new_zeros(bsz, 3, 2)], 1)
    sol = torch.linalg.solve(torch.cat([top, bottom], 1), rhs).to(dtype)
    wts, aff = sol[:, :n], sol[:, n:]

    ys, xs = _axis(h, h, device, dtype), _axis(w, w, device, dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy], -1).expand(bsz, h, w, 2)
    flow = aff[:, None, None, 0] + base[..., :1] * aff[:, None, None, 1] + base[..., 1:] * aff[:, None, None, 2]

    lh, lw = (h, w) if step <= 1 else (max(2, -(-h // step) + 1), max(2, -(-w // step) + 1))
    ly, lx = torch.meshgrid(_axis(h, lh, device, dtype), _axis(w, lw, device, dtype), indexing="ij")
    pts = torch.stack([lx, ly], -1).reshape(1, -1, 2).expand(bsz, -1, -1)
    radial = (_kernel(pts, c) @ wts).reshape(bsz, lh, lw, 2)
    if (lh, lw) != (h, w):
        radial = F.interpolate(radial.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                               align_corners=True).permute(0, 2, 3, 1)
    return base + flow + radial


def tps_flow(src, dst, size, **kwargs) -> torch.Tensor:
    """Backward flow in pixels (B,H,W,2): output (x, y) reads input at (x, y) + flow.

    For callers that want to reuse or compose the motion rather than a grid_sample grid.
    """
    grid = tps_grid(src, dst, size, **kwargs)
    h, w = grid.shape[1:3]
    ys, xs = _axis(h, h, grid.device, grid.dtype), _axis(w, w, grid.device, grid.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return (grid - torch.stack([gx, gy], -1)) * grid.new_tensor([w / 2.0, h / 2.0])


def warp_image(image: torch.Tensor, src, dst, anchors: bool = True, **kwargs) -> torch.Tensor:
    """`image` (B,C,H,W) moved so that what sat at `src` (px) now sits at `dst` (px).

    Bilinear sampling with border padding, so nothing black enters from outside the frame.
    """
    if not torch.is_tensor(image) or image.dim() != 4 or not image.is_floating_point():
        raise AnimateError("warp_image needs a float (B, C, H, W) tensor")
    src = torch.as_tensor(src, device=image.device).to(image.dtype)
    dst = torch.as_tensor(dst, device=image.device).to(image.dtype)
    grid = tps_grid(src, dst, image.shape[-2:], anchors=anchors, **kwargs)
    if grid.shape[0] != image.shape[0]:
        if image.shape[0] != 1:
            raise AnimateError(f"warp batch mismatch: {image.shape[0]} images, {grid.shape[0]} landmark sets")
        image = image.expand(grid.shape[0], -1, -1, -1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
