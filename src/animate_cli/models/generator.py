"""Generators: the paper's G(y, ê) (FSTHGenerator) and the warp-guided one (WarpGenerator), with its
optional mouth painter (MouthPainter, cfg.paint_size > 0).

Both share one trunk: residual down blocks with instance norm (attention at cfg.attn_down_res),
AdaIN residual blocks at the bottleneck, AdaIN residual up blocks (attention at cfg.attn_up_res).
All AdaIN scales and biases psi = P·ê come from one spectral-normed linear layer P; fine-tuning on
a new person replaces P·ê by its own trained psi (passed as `psi=`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..face.regions import FACE_OUTLINE, INNER_LIPS, LIP_CORNERS, MOUTH_BOX_SCALE
from .blocks import AdaINParams, ResBlock, ResBlockDown, ResBlockUp, SelfAttention, sn_conv, sn_linear

# The painter's blend mask m (1 = the warp generator's output, 0 = painted) starts at sigmoid(±PAINT_PRIOR):
# about 0.95 where the warped shot has what the target shows, 0.05 inside the target's open mouth where it
# has not (the uncovered mouth). So the painter gets the gradient of exactly the pixels the warp cannot make.
PAINT_PRIOR = 3.0
PAINT_FEATHER = 0.2  # the painter's window fades out over this share of the crop's half-side at each edge
MOUTH_HEIGHT_SCALE = 1.3  # the painter's box is also at least this × the lips' height (a wide-open mouth)
INNER_LIP_POINTS, OUTER_LIP_POINTS = slice(60, 68), slice(48, 60)


class Generator(nn.Module):
    """Shared trunk of both generators; build one with build_generator(cfg)."""

    in_ch = 3
    out_ch = 3

    def __init__(self, cfg: ModelConfig, in_ch: int | None = None, out_ch: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.in_ch = in_ch or self.in_ch
        self.out_ch = out_ch or self.out_ch
        chans = [cfg.channels(i) for i in range(cfg.g_down)]  # output of down block i
        res = cfg.trunk_resolution
        self.shuffle = cfg.shuffle_stem
        k = 4 if self.shuffle else 1  # space-to-depth multiplies the channels by 4
        self.down = nn.ModuleList()
        self.down_attn_index = -1
        ch = self.in_ch * k
        for i, out in enumerate(chans):
            self.down.append(ResBlockDown(ch, out, norm=True, first=i == 0))
            ch, res = out, res // 2
            if cfg.attention and res == cfg.attn_down_res:
                self.down_attn_index = i
        self.down_attn = SelfAttention(chans[self.down_attn_index]) if self.down_attn_index >= 0 else None
        self.res = nn.ModuleList(ResBlock(ch, adain=True) for _ in range(cfg.g_res_blocks))
        # up block j mirrors down block g_down-1-j; the last one keeps base channels at full resolution
        up_out = chans[-2::-1] + [chans[0]]
        self.up = nn.ModuleList()
        self.up_attn_index = -1
        for j, out in enumerate(up_out):
            self.up.append(ResBlockUp(ch, out))
            ch, res = out, res * 2
            if cfg.attention and res == cfg.attn_up_res:
                self.up_attn_index = j
        self.up_attn = SelfAttention(up_out[self.up_attn_index]) if self.up_attn_index >= 0 else None
        self.head = sn_conv(ch, self.out_ch * k)
        self.n_adain = sum(b.n_adain for b in self.res) + sum(b.n_adain for b in self.up)
        self.P = sn_linear(cfg.embed_dim, self.n_adain)

    def project(self, e_hat: torch.Tensor) -> torch.Tensor:
        """ê (B, embed_dim) -> psi (B, n_adain): all AdaIN scales and biases."""
        return self.P(e_hat)

    def _features(self, inp: torch.Tensor, e_hat, psi) -> torch.Tensor:
        """The trunk's last activations, before the output convolution: (B, C, R', R') at trunk resolution."""
        if psi is None:
            if e_hat is None:
                raise ValueError("generator needs e_hat or psi")
            psi = self.project(e_hat)
        if psi.dim() == 1:
            psi = psi.unsqueeze(0)
        if psi.shape[-1] != self.n_adain:
            raise ValueError(f"psi has {psi.shape[-1]} entries, generator expects {self.n_adain}")
        psi = psi.expand(inp.shape[0], -1)
        params = AdaINParams(psi)
        h = F.pixel_unshuffle(inp, 2) if self.shuffle else inp
        for i, block in enumerate(self.down):
            h = block(h)
            if i == self.down_attn_index:
                h = self.down_attn(h)
        for block in self.res:
            h = block(h, params)
        for j, block in enumerate(self.up):
            h = block(h, params)
            if j == self.up_attn_index:
                h = self.up_attn(h)
        return h

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        out = self.head(F.relu(h))
        return F.pixel_shuffle(out, 2) if self.shuffle else out

    def _trunk(self, inp: torch.Tensor, e_hat, psi) -> torch.Tensor:
        return self._head(self._features(inp, e_hat, psi))


class FSTHGenerator(Generator):
    """The paper's generator: paints the whole frame from the landmark image y and ê."""

    def forward(self, y, e_hat=None, psi=None, warped=None, landmarks=None, ref_landmarks=None,
                parts=None) -> torch.Tensor:
        """y (B,3,R,R) landmark image -> x̂ (B,3,R,R) in [-1,1]. `warped`, the landmarks and `parts`: ignored
        (one call for both kinds)."""
        return torch.tanh(self._trunk(y, e_hat, psi))


class WarpGenerator(Generator):
    """Warp-guided generator: corrects the reference shot warped to the target pose, and (cfg.paint_size > 0)
    paints the mouth the warp cannot give.

    Input y ⊕ the warped reference (what the `warp` model shows; see references.py). Output: x̂ = warped
    reference + Δ, a painted correction. The head that makes Δ is a plain zero-initialised convolution, so
    an untrained generator returns exactly the warped reference and every gradient reaches the correction
    at full strength. (A first version blended a painted image in through a sigmoid mask that started near
    1; the mask starved the painted branch of gradient and it never learnt anything useful.) The trunk
    has no skip connections (the paper's design).

    With the painter, x̂ = X + paste(s·(P − X)), X = warped + Δ, s = window·face·(1 − m): the MouthPainter paints
    the mouth box at its own resolution (see there), from the crop of X (the face only), masks of the target's
    lips and the trunk's features. P is a colour of the lips' hue or none (mouth_colours); m is its blend mask,
    starting low only inside the target's open mouth, as far as it opens wider than the warped shot's
    (mouth_stretch): the gradient the painter gets comes from the open mouths the warp cannot make (photo
    episodes that close a mouth and ask for it open). A fresh painter's zero output convolution paints the lips'
    colour half-whitened there (and 5% of it around): it does not start from exactly the trunk's output.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, in_ch=6, out_ch=3)
        self.head = nn.Conv2d(self.head.in_channels, self.head.out_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # in, at the crop: X, the target's lips as masks (inner, outer, the uncovered mouth) and the trunk's last
        # activations (which carry y and ê). Masks, not the landmark image: the painter copied its part colours
        # (purple inner lips, yellow nose) into the mouth early in training
        self.painter = MouthPainter(3 + 3 + self.head.in_channels, cfg.base_channels) if cfg.paint_size else None

    def forward(self, y, e_hat=None, psi=None, warped=None, landmarks=None, ref_landmarks=None,
                parts: dict | None = None) -> torch.Tensor:
        """y (B,3,R,R), warped reference (B,3,R,R) -> x̂ (B,3,R,R), about [-1,1]. The painter also needs the
        target's `landmarks` and the warped shot's `ref_landmarks` (B,68,2 px at R); `parts`, a dict, is
        filled with what it did (paint_usage reads it)."""
        if warped is None:
            raise ValueError("the warp generator needs the warped reference (`warped=`)")
        if warped.shape[1] != 3:
            raise ValueError(f"the warp generator takes one warped reference (3 channels), "
                             f"got {warped.shape[1]} channels")
        h = self._features(torch.cat([y, warped], dim=1), e_hat, psi)
        out = warped + self._head(h)
        if self.painter is None:
            return out
        if landmarks is None or ref_landmarks is None:
            raise ValueError("the mouth painter needs the target's and the warped shot's landmarks")
        return self._paint(out, F.relu(h), landmarks, ref_landmarks, parts)

    def _paint(self, out, features, landmarks, ref_landmarks, parts):
        size, res = self.cfg.paint_size, out.shape[-1]
        lm = torch.as_tensor(landmarks, device=out.device).float().reshape(-1, 68, 2)
        ref = torch.as_tensor(ref_landmarks, device=out.device).float().reshape(-1, 68, 2)
        theta = mouth_theta(lm, res)
        grid = F.affine_grid(theta, (len(lm), 1, size, size), align_corners=False)
        crop = lambda t: F.grid_sample(t.float(), grid, mode="bilinear", padding_mode="border",  # noqa: E731
                                       align_corners=False)
        with torch.no_grad():
            inner = outline_mask(lm, theta, size, res, INNER_LIP_POINTS)
            outer = outline_mask(lm, theta, size, res, OUTER_LIP_POINTS)
            uncovered = inner * mouth_stretch(lm, ref).view(-1, 1, 1, 1)
            face = outline_mask(lm, theta, size, res, list(FACE_OUTLINE))
        seen = crop(out)
        image = face_only(seen, face)
        raw = self.painter(torch.cat([image, inner, outer, uncovered, crop(features) * face], dim=1))
        tone, white, logit = raw[:, :1], raw[:, 1:2], raw[:, 2:]
        colour = mouth_colours(image, (outer - inner).clamp(0, 1), 2 * torch.sigmoid(tone), torch.sigmoid(white))
        m = torch.sigmoid(logit + PAINT_PRIOR * (1 - 2 * uncovered))
        share = paint_window(size, out.device) * face * (1 - m)
        painted = share * (colour - seen)
        if parts is not None:
            parts.update(share=share.detach(), painted=painted.detach(), inner=inner, uncovered=uncovered)
        return out + paste_crop(painted, theta, res).to(out.dtype)


class MouthPainter(nn.Module):
    """A small U-Net at the mouth's own resolution (cfg.paint_size²: the mouth box of a 256² face is about
    100 px): the trunk reaches its output only through an 8² bottleneck, too coarse for teeth and the lips'
    inner edge; this sees the crop directly and keeps its detail through skip connections. Output: tone and
    whiteness of the painted colour (mouth_colours) and the blend mask's logit, from a zero-initialised
    convolution."""

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
# The painter's geometry: batched, in torch, from landmarks in pixels of the R×R frame.


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


def mouth_colours(image: torch.Tensor, lips: torch.Tensor, tone: torch.Tensor, white: torch.Tensor) -> torch.Tensor:
    """The painter's colours, [-1, 1]: per pixel, its lips' mean colour mixed with white (`white`, 0..1) and
    scaled in brightness (`tone`, 0..2). A mouth's inside (teeth, tongue, the dark cavity) has the lips' hue
    or none; a painter free to choose any colour painted grey-blue and green mouths on faces unlike its
    training photos."""
    lip = ((image + 1) / 2 * lips).sum(dim=(2, 3), keepdim=True) / lips.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return (tone * ((1 - white) * lip + white)).clamp(0, 1) * 2 - 1


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


def extend_with_painter(new: WarpGenerator, old: WarpGenerator) -> None:
    """Load a warp generator without a painter into one with a painter (the same config otherwise): every
    weight but the painter's is copied, and the painter keeps its fresh start: `new` returns what `old` does
    outside the mouth box, and blends its first colours into it (WarpGenerator)."""
    if new.painter is None or getattr(old, "painter", None) is not None:
        raise ValueError("extend_with_painter: `new` must have a painter and `old` none")
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    if unexpected or any(not k.startswith("painter.") for k in missing):
        raise ValueError(f"the generators differ beyond the painter: {(unexpected + missing)[:3]}")


def build_generator(cfg: ModelConfig) -> Generator:
    return {"fsth": FSTHGenerator, "warp": WarpGenerator}[cfg.generator](cfg)
