"""Generators: the paper's G(y, ê) (FSTHGenerator) and the warp-guided one (WarpGenerator), with its
optional mouth and eye painters (painter.py, cfg.paint_size > 0, cfg.eye_paint_size > 0).

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
from ..face.regions import FACE_OUTLINE
from .blocks import AdaINParams, ResBlock, ResBlockDown, ResBlockUp, SelfAttention, sn_conv, sn_linear
from .painter import (INNER_LIP_POINTS, OUTER_LIP_POINTS, PAINT_PRIOR, Painter, eye_crops, eye_opening_masks,
                      eye_stretch, face_only, mouth_crop, mouth_stretch, outline_mask, paint_window, paste_crop,
                      tinted_colours, to_crop_pixels, polygon_mask)


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

    With the painter, x̂ = X + paste(s·(P − X)), X = warped + Δ, s = window·face·(1 − m): the mouth Painter paints
    the mouth box at its own resolution (see there), from the crop of X (the face only), masks of the target's
    lips and the trunk's features. P is a colour of the lips' hue or none (tinted_colours); m is its blend mask,
    starting low only inside the target's open mouth, as far as it opens wider than the warped shot's
    (mouth_stretch): the gradient the painter gets comes from the open mouths the warp cannot make (photo
    episodes that close a mouth and ask for it open). A fresh painter's zero output convolution paints the lips'
    colour half-whitened there (and 5% of it around): it does not start from exactly the trunk's output.

    The eye painter (cfg.eye_paint_size) does the same for each eye (the left one mirrored), before the mouth:
    in, the eye's crop of X, the masks of the target's eye opening and of the part of it the warped shot's lids
    cannot fill (eye_stretch: a shut eye driven open), and the trunk's features; out, colours of the skin's hue
    or none (the white, the iris and pupil) where the opening is uncovered, only as far as it is (EYE_GATE).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, in_ch=6, out_ch=3)
        self.head = nn.Conv2d(self.head.in_channels, self.head.out_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # in, at the crop: X, the target's lips as masks (inner, outer, the uncovered mouth) and the trunk's last
        # activations (which carry y and ê). Masks, not the landmark image: the painter copied its part colours
        # (purple inner lips, yellow nose) into the mouth early in training
        self.painter = Painter(3 + 3 + self.head.in_channels, cfg.base_channels) if cfg.paint_size else None
        # in, at each eye: X, the target's eye opening and its uncovered part as masks, the trunk's activations
        self.eye_painter = Painter(3 + 2 + self.head.in_channels, cfg.base_channels) if cfg.eye_paint_size else None

    def forward(self, y, e_hat=None, psi=None, warped=None, landmarks=None, ref_landmarks=None,
                parts: dict | None = None, eye_ref_landmarks=None) -> torch.Tensor:
        """y (B,3,R,R), warped reference (B,3,R,R) -> x̂ (B,3,R,R), about [-1,1]. The painters also need the
        target's `landmarks` and the warped shot's `ref_landmarks` (B,68,2 px at R; the eyes' shot
        `eye_ref_landmarks` where the mouth comes from another shot, else the same); `parts`, a dict, is filled
        with what they did (paint_usage, eye_paint_usage read it)."""
        if warped is None:
            raise ValueError("the warp generator needs the warped reference (`warped=`)")
        if warped.shape[1] != 3:
            raise ValueError(f"the warp generator takes one warped reference (3 channels), "
                             f"got {warped.shape[1]} channels")
        h = self._features(torch.cat([y, warped], dim=1), e_hat, psi)
        out = warped + self._head(h)
        if self.painter is None and self.eye_painter is None:
            return out
        if landmarks is None or ref_landmarks is None:
            raise ValueError("the painters need the target's and the warped shot's landmarks")
        if self.eye_painter is not None:
            out = self._paint_eyes(out, F.relu(h), landmarks,
                                   ref_landmarks if eye_ref_landmarks is None else eye_ref_landmarks, parts)
        if self.painter is None:
            return out
        return self._paint(out, F.relu(h), landmarks, ref_landmarks, parts)

    def _paint_eyes(self, out, features, landmarks, ref_landmarks, parts):
        lm = torch.as_tensor(landmarks, device=out.device).float().reshape(-1, 68, 2)
        ref = torch.as_tensor(ref_landmarks, device=out.device).float().reshape(-1, 68, 2)
        with torch.no_grad():
            per_eye = eye_stretch(lm, ref)
        if parts is not None:  # what it did is asked for every frame
            return self._eyes_painted(out, features, lm, per_eye, parts)
        # only the frames where an eye's gate opens: the others keep the trunk's output exactly, at no cost
        rows = (per_eye > EYE_GATE[0]).any(dim=1).nonzero()[:, 0]
        if len(rows) == len(out):
            return self._eyes_painted(out, features, lm, per_eye, None)
        if len(rows) == 0:
            return out
        return out.index_put((rows,), self._eyes_painted(out[rows], features[rows], lm[rows], per_eye[rows], None))

    def _eyes_painted(self, out, features, lm, per_eye, parts):
        """The eye painter on these frames; per_eye: each eye's stretch (B,2)."""
        size, res, n = self.cfg.eye_paint_size, out.shape[-1], len(out)
        seen, theta = eye_crops(out, lm, size)
        with torch.no_grad():
            inner = eye_opening_masks(lm, theta, size, res)
            stretch = torch.cat([per_eye[:, 0], per_eye[:, 1]]).view(-1, 1, 1, 1)
            uncovered = inner * stretch
            outline = torch.cat([lm, lm])[:, list(FACE_OUTLINE)]
            face = polygon_mask(to_crop_pixels(outline, theta, size, res), size)
        trunk = eye_crops(features, lm, size, res)[0]
        share, painted = _blend(self.eye_painter, seen, face, [inner, uncovered], trunk, (face - inner).clamp(0, 1),
                                uncovered, gate=((stretch - EYE_GATE[0]) / (EYE_GATE[1] - EYE_GATE[0])).clamp(0, 1))
        if parts is not None:
            parts.update(eye_share=share.detach(), eye_painted=painted.detach(), eye_inner=inner)
        return out + (paste_crop(painted[:n], theta[:n], res) + paste_crop(painted[n:], theta[n:], res)).to(out.dtype)

    def _paint(self, out, features, landmarks, ref_landmarks, parts):
        size, res = self.cfg.paint_size, out.shape[-1]
        lm = torch.as_tensor(landmarks, device=out.device).float().reshape(-1, 68, 2)
        ref = torch.as_tensor(ref_landmarks, device=out.device).float().reshape(-1, 68, 2)
        seen, theta = mouth_crop(out, lm, size)
        with torch.no_grad():
            inner = outline_mask(lm, theta, size, res, INNER_LIP_POINTS)
            outer = outline_mask(lm, theta, size, res, OUTER_LIP_POINTS)
            uncovered = inner * mouth_stretch(lm, ref).view(-1, 1, 1, 1)
            face = outline_mask(lm, theta, size, res, list(FACE_OUTLINE))
        trunk = mouth_crop(features, lm, size, res)[0]  # the features at the crop (another size than the frame)
        share, painted = _blend(self.painter, seen, face, [inner, outer, uncovered], trunk, (outer - inner).clamp(0, 1),
                                uncovered)
        if parts is not None:
            parts.update(share=share.detach(), painted=painted.detach(), inner=inner, uncovered=uncovered)
        return out + paste_crop(painted, theta, res).to(out.dtype)


def _blend(painter, seen, face, masks, trunk, source, uncovered, gate=None):
    """A painter at its crop: it sees the crop `seen` (the face only), the `masks` and the trunk's features, and
    paints colours tinted from the crop under `source` (tinted_colours); returns its share of each pixel
    (window · face · (1 − m) [· gate], m starting low only where `uncovered`) and the correction it adds there."""
    image = face_only(seen, face)
    raw = painter(torch.cat([image, *masks, trunk * face], dim=1))
    tone, white, logit = raw[:, :1], raw[:, 1:2], raw[:, 2:]
    colour = tinted_colours(image, source, 2 * torch.sigmoid(tone), torch.sigmoid(white))
    m = torch.sigmoid(logit + PAINT_PRIOR * (1 - 2 * uncovered))
    share = paint_window(seen.shape[-1], seen.device) * face * (1 - m)
    if gate is not None:
        share = share * gate
    return share, share * (colour - seen)


PAINTERS = ("painter", "eye_painter")  # the WarpGenerator's painters: the mouth's, the eyes'
# The eye painter paints only where the shot's lids hide much of the target's opening (a shut eye driven open):
# its share is scaled from 0 at a stretch of EYE_GATE[0] to 1 at EYE_GATE[1]. An eye a little wider than the
# shot's (a talking clip's eyes, against its first frame: stretch under 0.26 on 95% of val's targets) keeps the
# trunk's output exactly; a blink driven open reads 0.52 or more. Ungated, the painter took a tenth of every open
# eye and cost 0.0012 whole-face LPIPS on val (0 of 5 clips); gated from 0 to 0.25, still 0.0005 (1 of 5)
EYE_GATE = (0.35, 0.5)  # stretch at which the eye painter's share starts, and where it is whole


def extend_with_painter(new: WarpGenerator, old: WarpGenerator) -> None:
    """Load a warp generator into one with more painters (the same config otherwise): every weight of `old` is
    copied, and the painters it lacks keep their fresh start: `new` returns what `old` does outside their
    boxes, and blends their first colours into them (WarpGenerator)."""
    added = [p for p in PAINTERS if getattr(new, p, None) is not None and getattr(old, p, None) is None]
    if not added or any(getattr(old, p, None) is not None and getattr(new, p, None) is None for p in PAINTERS):
        raise ValueError("extend_with_painter: `new` must have every painter of `old` and more")
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    if unexpected or any(not k.startswith(tuple(f"{p}." for p in added)) for k in missing):
        raise ValueError(f"the generators differ beyond the painters: {(unexpected + missing)[:3]}")


def build_generator(cfg: ModelConfig) -> Generator:
    return {"fsth": FSTHGenerator, "warp": WarpGenerator}[cfg.generator](cfg)
