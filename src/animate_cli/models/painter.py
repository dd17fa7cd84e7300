"""The warp generator's painters: a small U-Net at a part's own resolution, one for the mouth and one for the
eyes, and their geometry (the crop around the lips or each eye, the masks of the opening and the face in it, the
colours they may paint, the paste back), batched in torch from landmarks in pixels of the R×R frame. The
WarpGenerator (generator.py) decides where their paint goes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..face.regions import EYE_BOX_SCALE, EYE_CORNERS, EYE_POINTS, EYELIDS, INNER_LIPS, LIP_CORNERS, MOUTH_BOX_SCALE
from .blocks import sn_conv

# The painter's blend mask m (1 = the warp generator's output, 0 = painted) starts at sigmoid(±PAINT_PRIOR):
# about 0.95 where the warped shot has what the target shows, 0.05 inside the target's open mouth where it
# has not (the uncovered mouth). So the painter gets the gradient of exactly the pixels the warp cannot make.
PAINT_PRIOR = 3.0
PAINT_FEATHER = 0.2  # the painter's window fades out over this share of the crop's half-side at each edge
MOUTH_HEIGHT_SCALE = 1.3  # the painter's box is also at least this × the lips' height (a wide-open mouth)
INNER_LIP_POINTS, OUTER_LIP_POINTS = slice(60, 68), slice(48, 60)
# The eye painter's crop is the eye metric's box (face.regions.eye_boxes: EYE_BOX_SCALE × the eye's width across),
# the face's left eye mirrored so that both look alike to one network


class Painter(nn.Module):
    """A small U-Net at a part's own resolution (cfg.paint_size² for the mouth, whose box in a 256² face is
    about 100 px; cfg.eye_paint_size² for each eye): the trunk reaches its output only through an 8²
    bottleneck, too coarse for teeth, an iris or the lids' edges; this sees the crop directly and keeps its
    detail through skip connections. Output: tone and whiteness of the painted colour (tinted_colours) and the
    blend mask's logit, from a zero-initialised convolution."""

    def __init__(self, in_ch: int, ch: int):
        super().__init__()
        c = ch
        self.enc1 = nn.ModuleList([sn_conv(in_ch, c), sn_conv(c, c)])
        self.enc2 = nn.ModuleList([sn_conv(c, 2 * c), sn_conv(2 * c, 2 * c)])
        self.enc3 = nn.ModuleList([sn_conv(2 * c, 4 * c), sn_conv(4 * c, 4 * c)])
        self.dec2 = sn_conv(4 * c + 2 * c, 2 * c)
        self.dec1 = sn_conv(2 * c + c, c)
        self.norms = nn.ModuleList(nn.InstanceNorm2d(n, affine=True) for n in (c, 2 * c, 4 * c, 2 * c, c))
        self.head = nn.Conv2d(c, 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def level(convs, norm, h):
            return F.relu(norm(convs[1](F.relu(convs[0](h)))))

        e1 = level(self.enc1, self.norms[0], x)
        e2 = level(self.enc2, self.norms[1], F.avg_pool2d(e1, 2))
        e3 = level(self.enc3, self.norms[2], F.avg_pool2d(e2, 2))
        up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
        d2 = F.relu(self.norms[3](self.dec2(torch.cat([up(e3), e2], dim=1))))
        d1 = F.relu(self.norms[4](self.dec1(torch.cat([up(d2), e1], dim=1))))
        return self.head(d1)


# ----------------------------------------------------------------------------------------------
# The painter's geometry.


def mouth_theta(landmarks: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B,68,2) px -> (B,2,3) affine from the painter's crop to the frame (normalised coordinates, as
    F.affine_grid with align_corners=False): a square centred on the lips, MOUTH_BOX_SCALE × their width (as
    the mouth metric's box, face.regions.mouth_box), at least MOUTH_HEIGHT_SCALE × their height."""
    lips = landmarks[:, 48:68]
    lo, hi = lips.amin(dim=1), lips.amax(dim=1)
    centre = (lo + hi) / 2
    width = (landmarks[:, LIP_CORNERS[0]] - landmarks[:, LIP_CORNERS[1]]).norm(dim=-1)
    side = torch.maximum(MOUTH_BOX_SCALE * width, MOUTH_HEIGHT_SCALE * (hi - lo)[:, 1]).clamp_min(resolution / 16)
    theta = landmarks.new_zeros(len(landmarks), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = side / resolution
    theta[:, :, 2] = (2 * centre + 1) / resolution - 1
    return theta


def mouth_crop(images: torch.Tensor, landmarks: torch.Tensor, size: int,
               resolution: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,C,H,W) images, (B,68,2) px of a `resolution`² frame (default: the images') -> their size × size crops
    around the lips (mouth_theta; bilinear, edges repeated) and the crops' theta: what the painter sees, and
    the critic judges (mouth_view). The crop is in normalised coordinates: feature maps at another size than
    the frame are cropped alike."""
    theta = mouth_theta(landmarks, resolution or images.shape[-1])
    grid = F.affine_grid(theta, (len(landmarks), 1, size, size), align_corners=False)
    crops = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return crops, theta


def to_crop_pixels(points: torch.Tensor, theta: torch.Tensor, size: int, resolution: int) -> torch.Tensor:
    """(B,N,2) frame px -> px of the size × size crop `theta` makes (pixel centres at integers)."""
    frame = (2 * points + 1) / resolution - 1
    u = (frame - theta[:, None, :, 2]) / theta[:, None, [0, 1], [0, 1]]
    return ((u + 1) * size - 1) / 2


def polygon_mask(polygon: torch.Tensor, size: int) -> torch.Tensor:
    """(B,N,2) px -> (B,1,size,size) float: 1 at the pixel centres inside the polygon (even-odd rule), edges
    softened by a 3×3 mean. A degenerate polygon (a closed mouth) is empty."""
    coords = torch.arange(size, device=polygon.device, dtype=polygon.dtype)
    py = coords.view(1, size, 1, 1)
    px = coords.view(1, 1, size, 1)
    x0, y0 = polygon[:, None, None, :, 0], polygon[:, None, None, :, 1]
    nxt = polygon.roll(-1, dims=1)
    x1, y1 = nxt[:, None, None, :, 0], nxt[:, None, None, :, 1]
    spans = (y0 > py) != (y1 > py)
    dy = torch.where(y1 == y0, torch.ones_like(y1), y1 - y0)
    crossing = spans & (px < x0 + (py - y0) * (x1 - x0) / dy)
    inside = (crossing.sum(dim=-1) % 2 == 1).to(polygon.dtype)[:, None]
    return F.avg_pool2d(inside, 3, stride=1, padding=1, count_include_pad=False)


def outline_mask(landmarks: torch.Tensor, theta: torch.Tensor, size: int, resolution: int,
                 points: slice | list[int] = INNER_LIP_POINTS) -> torch.Tensor:
    """(B,1,size,size): the inside of the outline that the target's landmarks `points` draw, in the painter's
    crop: its inner lips (the open mouth), its outer lip line (OUTER_LIP_POINTS) or its face (FACE_OUTLINE)."""
    return polygon_mask(to_crop_pixels(landmarks[:, points], theta, size, resolution), size)


def mouth_gaps(landmarks: torch.Tensor) -> torch.Tensor:
    """(B,68,2) -> (B,) inner-lip gap / outer-eye-corner distance (face.regions.mouth_gap, in torch)."""
    up = landmarks[:, [a for a, _ in INNER_LIPS]]
    lo = landmarks[:, [b for _, b in INNER_LIPS]]
    iod = (landmarks[:, 36] - landmarks[:, 45]).norm(dim=-1).clamp_min(1e-6)
    return (up - lo).norm(dim=-1).mean(dim=-1) / iod


def mouth_stretch(landmarks: torch.Tensor, ref_landmarks: torch.Tensor) -> torch.Tensor:
    """(B,) in [0,1]: how much of the target's mouth opening the warped shot cannot fill: 1 − its own gap /
    the target's (1 for a closed shot driven open, 0 when the shot opens as wide). The spline stretches
    whatever lay between the shot's lips over the target's opening: a closed mouth gives only a smear."""
    target = mouth_gaps(landmarks)
    return (1 - mouth_gaps(ref_landmarks) / target.clamp_min(1e-6)).clamp(0, 1) * (target > 1e-3)


def face_only(image: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """The painter's view of its crop: the face's pixels, everything outside the face's outline (a background
    beside a turned cheek, hair, the neck) replaced by the face's mean colour. A painter that saw a teal wall
    by the chin painted the mouth teal: it reads the colour cast from its crop."""
    mean = (image * face).sum(dim=(2, 3), keepdim=True) / face.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return image * face + mean * (1 - face)


def tinted_colours(image: torch.Tensor, source: torch.Tensor, tone: torch.Tensor, white: torch.Tensor) -> torch.Tensor:
    """A painter's colours, [-1, 1]: per pixel, the mean colour of the image under the mask `source` mixed with
    white (`white`, 0..1) and scaled in brightness (`tone`, 0..2). The mouth's source is its lips: a mouth's
    inside (teeth, tongue, the dark cavity) has the lips' hue or none; a painter free to choose any colour painted
    grey-blue and green mouths on faces unlike its training photos. The eyes' is the skin round them: the white
    of the eye, a dark iris and pupil."""
    mean = ((image + 1) / 2 * source).sum(dim=(2, 3), keepdim=True) / source.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return (tone * ((1 - white) * mean + white)).clamp(0, 1) * 2 - 1


# ----------------------------------------------------------------------------------------------
# The eyes' geometry.


def eye_theta(landmarks: torch.Tensor, resolution: int, eye: int) -> torch.Tensor:
    """(B,68,2) px -> (B,2,3) affine from eye `eye`'s painter crop to the frame (as mouth_theta): a square centred
    on the eye's points, EYE_BOX_SCALE × its width (corner to corner). The face's left eye (eye 1) is mirrored,
    so that both eyes are painted by one network as a right eye."""
    pts = landmarks[:, EYE_POINTS[eye]]
    centre = (pts.amin(dim=1) + pts.amax(dim=1)) / 2
    a, b = EYE_CORNERS[eye]
    side = (EYE_BOX_SCALE * (landmarks[:, a] - landmarks[:, b]).norm(dim=-1)).clamp_min(resolution / 32)
    theta = landmarks.new_zeros(len(landmarks), 2, 3)
    theta[:, 0, 0] = side / resolution * (1 if eye == 0 else -1)
    theta[:, 1, 1] = side / resolution
    theta[:, :, 2] = (2 * centre + 1) / resolution - 1
    return theta


def eye_thetas(landmarks: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B,68,2) -> (2B,2,3): both eyes' crops, every frame's right eye first, then every left eye."""
    return torch.cat([eye_theta(landmarks, resolution, 0), eye_theta(landmarks, resolution, 1)])


def eye_crops(images: torch.Tensor, landmarks: torch.Tensor, size: int,
              resolution: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,C,H,W) images, (B,68,2) px -> (2B,C,size,size) crops of both eyes (eye_thetas' order; the left eyes
    mirrored) and their thetas."""
    theta = eye_thetas(landmarks, resolution or images.shape[-1])
    grid = F.affine_grid(theta, (len(theta), 1, size, size), align_corners=False)
    both = torch.cat([images, images]).float()
    return F.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=False), theta


def eye_opening_masks(landmarks: torch.Tensor, theta: torch.Tensor, size: int, resolution: int) -> torch.Tensor:
    """(2B,1,size,size): the inside of each eye's outline (its six points) in its crop (eye_thetas' order)."""
    outline = torch.cat([landmarks[:, EYE_POINTS[0]], landmarks[:, EYE_POINTS[1]]])
    return polygon_mask(to_crop_pixels(outline, theta, size, resolution), size)


def eye_openings(landmarks: torch.Tensor) -> torch.Tensor:
    """(B,68,2) -> (B,2): each eye's lid gap (mean of its two lid pairs) / its width (face.measures.eye_openness)."""
    out = []
    for (a, b), pairs in zip(EYE_CORNERS, EYELIDS):
        gap = torch.stack([(landmarks[:, u] - landmarks[:, l]).norm(dim=-1) for u, l in pairs]).mean(dim=0)
        out.append(gap / (landmarks[:, a] - landmarks[:, b]).norm(dim=-1).clamp_min(1e-6))
    return torch.stack(out, dim=1)


def eye_stretch(landmarks: torch.Tensor, ref_landmarks: torch.Tensor) -> torch.Tensor:
    """(B,2) in [0,1]: how much of each eye's opening in the target the warped shot cannot fill (mouth_stretch's
    measure for the eyes): 1 for a shut eye driven open, 0 when the shot's eye is as open. The spline stretches
    the shut lids' skin and lashes over the opening."""
    target = eye_openings(landmarks)
    return (1 - eye_openings(ref_landmarks) / target.clamp_min(1e-6)).clamp(0, 1) * (target > 1e-3)


def paint_window(size: int, device=None) -> torch.Tensor:
    """(1,1,size,size): 1 inside, fading smoothly to 0 at the crop's edges, so the paste leaves no seam."""
    u = (2 * torch.arange(size, device=device, dtype=torch.float32) + 1) / size - 1
    ramp = ((1 - u.abs()) / PAINT_FEATHER).clamp(0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    return (ramp[:, None] * ramp[None, :])[None, None]


def paste_crop(crop: torch.Tensor, theta: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B,C,S,S) crop made with `theta` -> (B,C,R,R) in the frame, zero outside the box."""
    inv = torch.zeros_like(theta)
    scale = theta[:, [0, 1], [0, 1]]
    inv[:, 0, 0], inv[:, 1, 1] = 1 / scale[:, 0], 1 / scale[:, 1]
    inv[:, :, 2] = -theta[:, :, 2] / scale
    grid = F.affine_grid(inv, (len(crop), crop.shape[1], resolution, resolution), align_corners=False)
    return F.grid_sample(crop, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def eye_paint_usage(parts: dict) -> dict[str, torch.Tensor]:
    """paint_usage for the eyes (the `eye_` entries of `parts`, both eyes of a frame together): `eye_paint_share`
    and `eye_paint_size` over the target's eye openings, per frame; NaN where both eyes are shut."""
    inside = (parts["eye_inner"] > 0.5).float()
    half = len(inside) // 2
    pair = lambda t: t[:half] + t[half:]  # noqa: E731  a frame's two eyes
    n = pair(inside.sum(dim=(1, 2, 3)))
    nan = torch.full_like(n, float("nan"))
    mean = lambda t: torch.where(n > 0, pair((t * inside).sum(dim=(1, 2, 3))) / n.clamp_min(1), nan)  # noqa: E731
    return {"eye_paint_share": mean(parts["eye_share"]),
            "eye_paint_size": mean(parts["eye_painted"].abs().mean(dim=1, keepdim=True))}


def paint_usage(parts: dict) -> dict[str, torch.Tensor]:
    """What the painter did, per frame, over the target's open mouth (the inner-lip polygon), from the `parts`
    a painting forward filled: `paint_share`, the mean share of those pixels taken from the painted branch
    (1 − m, windowed), and `paint_size`, the mean |painted correction| there on the [-1, 1] scale. NaN where
    the target's mouth is closed."""
    inside = (parts["inner"] > 0.5).float()
    n = inside.sum(dim=(1, 2, 3))
    nan = torch.full_like(n, float("nan"))
    mean = lambda t: torch.where(n > 0, (t * inside).sum(dim=(1, 2, 3)) / n.clamp_min(1), nan)  # noqa: E731
    return {"paint_share": mean(parts["share"]), "paint_size": mean(parts["painted"].abs().mean(dim=1, keepdim=True))}


def mouth_view(images: torch.Tensor, landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """(B,3,R,R) images, (B,68,2) px -> (B,4,size,size): the painter's crop of each image (mouth_theta) and the
    landmarks' open-mouth mask in it: what the mouth critic (discriminator.MouthCritic) judges."""
    lm = landmarks.float().reshape(-1, 68, 2)
    crop, theta = mouth_crop(images, lm, size)
    return torch.cat([crop, outline_mask(lm, theta, size, images.shape[-1], INNER_LIP_POINTS)], dim=1)
