"""Generators: the paper's G(y, ê) (FSTHGenerator) and the warp-guided one (WarpGenerator).

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
from .mouth import MouthRefiner
from .blocks import AdaINParams, ResBlock, ResBlockDown, ResBlockUp, SelfAttention, sn_conv, sn_linear


class Generator(nn.Module):
    """Shared trunk of both generators; build one with build_generator(cfg)."""

    in_ch = 3
    out_ch = 3

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
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

    def _trunk(self, inp: torch.Tensor, e_hat, psi) -> torch.Tensor:
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
        out = self.head(F.relu(h))
        return F.pixel_shuffle(out, 2) if self.shuffle else out


class FSTHGenerator(Generator):
    """The paper's generator: paints the whole frame from the landmark image y and ê."""

    def forward(self, y, e_hat=None, psi=None, warped=None, landmarks=None) -> torch.Tensor:
        """y (B,3,R,R) landmark image -> x̂ (B,3,R,R) in [-1,1]. `warped`, `landmarks`: ignored (uniform call)."""
        return torch.tanh(self._trunk(y, e_hat, psi))


class WarpGenerator(Generator):
    """Warp-guided generator: corrects the reference warped to the target pose.

    Input y ⊕ warped (6 ch); output a correction added to it: x̂ = warped + Δ. The head that makes Δ is
    a plain zero-initialised convolution, so an untrained generator returns exactly the warped reference
    and every gradient reaches the correction at full strength. (A first version blended a painted
    image in through a sigmoid mask that started near 1; the mask starved the painted branch of
    gradient and it never learnt anything useful.) With cfg.mouth_refiner > 0 a second, zoomed
    correction repaints the mouth (models/mouth.py); it needs the target landmarks.
    """
    in_ch = 6
    out_ch = 3

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        k = 4 if self.shuffle else 1
        self.head = nn.Conv2d(self.head.in_channels, self.out_ch * k, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.mouth = MouthRefiner(cfg.mouth_refiner) if cfg.mouth_refiner else None

    def trunk_output(self, y, e_hat=None, psi=None, warped=None) -> torch.Tensor:
        """warped + the trunk's correction: the output before the mouth refiner (which trains on it)."""
        if warped is None:
            raise ValueError("the warp generator needs the warped reference (`warped=`)")
        return warped + self._trunk(torch.cat([y, warped], dim=1), e_hat, psi)

    def forward_parts(self, y, e_hat=None, psi=None, warped=None, landmarks=None):
        """-> (x̂, Δ): the output and the correction added to the warped reference."""
        out = self.trunk_output(y, e_hat, psi, warped)
        if self.mouth is not None:
            if landmarks is None:
                raise ValueError("this generator repaints the mouth and needs the target landmarks (`landmarks=`)")
            out = out + self.mouth(out, y, landmarks.to(out.device).reshape(-1, 68, 2))
        return out, out - warped

    def forward(self, y, e_hat=None, psi=None, warped=None, landmarks=None) -> torch.Tensor:
        """y, warped (B,3,R,R) [, target landmarks (B,68,2) px] -> x̂ (B,3,R,R), about [-1,1]."""
        return self.forward_parts(y, e_hat, psi, warped, landmarks)[0]


def build_generator(cfg: ModelConfig) -> Generator:
    return {"fsth": FSTHGenerator, "warp": WarpGenerator}[cfg.generator](cfg)
