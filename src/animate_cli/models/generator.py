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
from .blocks import AdaINParams, ResBlock, ResBlockDown, ResBlockUp, SelfAttention, sn_conv, sn_linear


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

    def forward(self, y, e_hat=None, psi=None, warped=None) -> torch.Tensor:
        """y (B,3,R,R) landmark image -> x̂ (B,3,R,R) in [-1,1]. `warped`: ignored (one call for both kinds)."""
        return torch.tanh(self._trunk(y, e_hat, psi))


class WarpGenerator(Generator):
    """Warp-guided generator: corrects the reference shot warped to the target pose.

    Input y ⊕ the warped reference (what the `warp` model shows; see references.py). Output: x̂ = warped
    reference + Δ, a painted correction. The head that makes Δ is a plain zero-initialised convolution, so
    an untrained generator returns exactly the warped reference and every gradient reaches the correction
    at full strength. (A first version blended a painted image in through a sigmoid mask that started near
    1; the mask starved the painted branch of gradient and it never learnt anything useful.) The trunk
    has no skip connections (the paper's design).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, in_ch=6, out_ch=3)
        self.head = nn.Conv2d(self.head.in_channels, self.head.out_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, y, e_hat=None, psi=None, warped=None) -> torch.Tensor:
        """y (B,3,R,R), warped reference (B,3,R,R) -> x̂ (B,3,R,R), about [-1,1]."""
        if warped is None:
            raise ValueError("the warp generator needs the warped reference (`warped=`)")
        if warped.shape[1] != 3:
            raise ValueError(f"the warp generator takes one warped reference (3 channels), "
                             f"got {warped.shape[1]} channels")
        return warped + self._trunk(torch.cat([y, warped], dim=1), e_hat, psi)


def build_generator(cfg: ModelConfig) -> Generator:
    return {"fsth": FSTHGenerator, "warp": WarpGenerator}[cfg.generator](cfg)
