"""The mouth: a zoomed crop that follows the lips, and a small network that repaints it.

The mouth is where a warp fails most: an opening mouth stretches the closed lips of the reference
over the gap where teeth and the dark inside should be. At the scale of the whole 256² frame it is
a few percent of the pixels, so the full generator barely learns it; here it gets its own zoom.
Crop and paste are differentiable affine resamplings, so the network trains end to end.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MOUTH = slice(48, 68)  # iBUG-68 indices of the outer and inner lips
MOUTH_CROP = 64  # side of the zoomed crop


def mouth_box(landmarks: torch.Tensor, h: int, w: int, margin: float = 0.6) -> torch.Tensor:
    """(B,68,2) px -> (B,2,3) affine `theta` mapping the crop's normalised coordinates to the frame's.

    The square box is centred on the lips and `1 + margin` times their larger extent (at least a tenth
    of the frame), so an opening mouth fills the crop whatever the face size."""
    pts = landmarks.float().reshape(-1, 68, 2)[:, MOUTH]
    lo, hi = pts.amin(dim=1), pts.amax(dim=1)
    centre = (lo + hi) / 2
    half = ((hi - lo).amax(dim=1) * (1 + margin) / 2).clamp_min(max(h, w) / 20)
    theta = torch.zeros(len(pts), 2, 3, device=pts.device)
    theta[:, 0, 0] = 2 * half / w
    theta[:, 1, 1] = 2 * half / h
    theta[:, 0, 2] = (2 * centre[:, 0] + 1) / w - 1
    theta[:, 1, 2] = (2 * centre[:, 1] + 1) / h - 1
    return theta


def mouth_crop(images: torch.Tensor, landmarks: torch.Tensor, size: int = MOUTH_CROP) -> torch.Tensor:
    """(B,C,H,W) -> (B,C,size,size): each image's mouth, zoomed (see `mouth_box`)."""
    b, c, h, w = images.shape
    theta = mouth_box(landmarks.to(images.device), h, w)
    grid = F.affine_grid(theta, (b, c, size, size), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def feather(size: int, device) -> torch.Tensor:
    """(1,1,size,size) window: 1 in the middle, falling smoothly to 0 at the crop's edge, so a pasted
    correction leaves no seam."""
    t = torch.linspace(-1, 1, size, device=device).abs()
    ramp = ((1 - t) / 0.25).clamp(0, 1)  # the outer eighth of each side fades out
    ramp = 0.5 - 0.5 * torch.cos(torch.pi * ramp)
    return (ramp[:, None] * ramp[None, :])[None, None]


def mouth_paste(crop: torch.Tensor, landmarks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of `mouth_crop`: a (B,C,s,s) crop back into (B,C,h,w) frames, zero outside the box and
    feathered at its edge."""
    b, c, s, _ = crop.shape
    theta = mouth_box(landmarks.to(crop.device), h, w)
    # frame -> crop: invert the 2x2 diagonal scale and the shift
    inv = torch.zeros_like(theta)
    inv[:, 0, 0] = 1 / theta[:, 0, 0]
    inv[:, 1, 1] = 1 / theta[:, 1, 1]
    inv[:, 0, 2] = -theta[:, 0, 2] / theta[:, 0, 0]
    inv[:, 1, 2] = -theta[:, 1, 2] / theta[:, 1, 1]
    grid = F.affine_grid(inv, (b, c, h, w), align_corners=False)
    soft = crop.float() * feather(s, crop.device)
    return F.grid_sample(soft, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class _Res(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.a = nn.Conv2d(ch, ch, 3, padding=1)
        self.b = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.b(F.relu(self.a(F.relu(x))))


class MouthRefiner(nn.Module):
    """A small U-Net on the mouth crop: (image ⊕ target landmark image) -> correction of the image.

    The image is the generator trunk's output (the warped reference, corrected). Like the trunk's
    head, the last layer starts at zero: untrained, it changes nothing. Being small and working at
    64², it can be trained alone, quickly, on mouth crops (train/mouth.py)."""

    def __init__(self, channels: int = 32, size: int = MOUTH_CROP):
        super().__init__()
        c = channels
        self.size = size
        self.stem = nn.Conv2d(6, c, 3, padding=1)
        self.down1 = nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)
        self.down2 = nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1)
        self.mid = nn.Sequential(_Res(4 * c), _Res(4 * c))
        self.up2 = nn.Conv2d(4 * c + 2 * c, 2 * c, 3, padding=1)
        self.up1 = nn.Conv2d(2 * c + c, c, 3, padding=1)
        self.head = nn.Conv2d(c, 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward_crop(self, image_crop: torch.Tensor, y_crop: torch.Tensor) -> torch.Tensor:
        """Crops (B,3,s,s) -> correction (B,3,s,s) to add to the image crop (before feathering)."""
        h0 = F.relu(self.stem(torch.cat([image_crop, y_crop], 1)))
        h1 = F.relu(self.down1(h0))
        h = self.mid(F.relu(self.down2(h1)))
        h = F.relu(self.up2(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), h1], 1)))
        h = F.relu(self.up1(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), h0], 1)))
        return self.head(h)

    def forward(self, image: torch.Tensor, y: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Full frames (B,3,H,W) and the target landmarks (B,68,2 px) -> full-frame correction, zero
        away from the mouth."""
        h, w = image.shape[-2:]
        delta = self.forward_crop(mouth_crop(image, landmarks, self.size), mouth_crop(y, landmarks, self.size))
        return mouth_paste(delta, landmarks, h, w).to(image.dtype)
