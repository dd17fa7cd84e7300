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
        h = x0 = F.pixel_unshuffle(inp, 2) if self.shuffle else inp
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
        out = self.head(self._head_input(h, x0))
        return F.pixel_shuffle(out, 2) if self.shuffle else out

    def _head_input(self, h: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """What the output convolution sees: the trunk's last features (x0: the input after the stem)."""
        return F.relu(h)


class FSTHGenerator(Generator):
    """The paper's generator: paints the whole frame from the landmark image y and ê."""

    def forward(self, y, e_hat=None, psi=None, warped=None, landmarks=None) -> torch.Tensor:
        """y (B,3,R,R) landmark image -> x̂ (B,3,R,R) in [-1,1]. `warped`, `landmarks`: ignored (uniform call)."""
        return torch.tanh(self._trunk(y, e_hat, psi))


class WarpGenerator(Generator):
    """Warp-guided generator: corrects the references warped to the target pose.

    Input y ⊕ the cfg.n_refs warped references (slot 0 = the nearest shot: what the `warp` model shows;
    see references.py). Output: x̂ = ref_0 + Σ_m a_m·(ref_m − ref_0) + Δ, per-pixel blend weights a_m
    that take from another shot what it shows better, and a painted correction Δ. The head that makes
    them is a plain zero-initialised convolution, so an untrained generator returns exactly the nearest
    warped reference and every gradient reaches the blend and the correction at full strength. (A first
    version blended a painted image in through a sigmoid mask that started near 1; the mask starved the
    painted branch of gradient and it never learnt anything useful.) The trunk has no skip connections
    (the paper's design): what reaches the head has passed an 8² bottleneck, too coarse to tell pixel by
    pixel which reference is right. With cfg.skip_width > 0 a one-layer path at the stem's resolution
    hands the head local features of the input (where the references disagree, and how) beside the
    trunk's. With cfg.mouth_refiner > 0 a second, zoomed correction repaints the mouth
    (models/mouth.py); it needs the target landmarks.
    """

    def __init__(self, cfg: ModelConfig):
        n = cfg.n_refs
        super().__init__(cfg, in_ch=3 + 3 * n, out_ch=3 + (n - 1))
        k = 4 if self.shuffle else 1
        width = cfg.skip_width
        self.skip = nn.Sequential(nn.Conv2d(self.in_ch * k, width, 3, padding=1), nn.ReLU()) if width else None
        self.head = nn.Conv2d(self.head.in_channels + width, self.out_ch * k, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.mouth = MouthRefiner(cfg.mouth_refiner) if cfg.mouth_refiner else None

    def _head_input(self, h: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        h = F.relu(h)
        return h if self.skip is None else torch.cat([h, self.skip(x0)], dim=1)

    def trunk_output(self, y, e_hat=None, psi=None, warped=None) -> torch.Tensor:
        """The blended references + the trunk's correction: the output before the mouth refiner."""
        if warped is None:
            raise ValueError("the warp generator needs the warped reference (`warped=`)")
        if warped.shape[1] != 3 * self.cfg.n_refs:
            raise ValueError(f"the warp generator takes {self.cfg.n_refs} warped reference(s) "
                             f"({3 * self.cfg.n_refs} channels), got {warped.shape[1]} channels")
        out = self._trunk(torch.cat([y, warped], dim=1), e_hat, psi)
        base = warped[:, :3]
        x = base + out[:, :3]
        for m in range(1, self.cfg.n_refs):
            x = x + out[:, 2 + m:3 + m] * (warped[:, 3 * m:3 * m + 3] - base)
        return x

    def forward_parts(self, y, e_hat=None, psi=None, warped=None, landmarks=None):
        """-> (x̂, Δ): the output and what it changes in the nearest warped reference."""
        out = self.trunk_output(y, e_hat, psi, warped)
        if self.mouth is not None:
            if landmarks is None:
                raise ValueError("this generator repaints the mouth and needs the target landmarks (`landmarks=`)")
            out = out + self.mouth(out, y, landmarks.to(out.device).reshape(-1, 68, 2))
        return out, out - warped[:, :3]

    def forward(self, y, e_hat=None, psi=None, warped=None, landmarks=None) -> torch.Tensor:
        """y (B,3,R,R), warped (B,3·n_refs,R,R) [, target landmarks (B,68,2) px] -> x̂ (B,3,R,R), about [-1,1]."""
        return self.forward_parts(y, e_hat, psi, warped, landmarks)[0]

    def load_state_dict_widened(self, state: dict) -> None:
        """Load weights trained with fewer references or without the skip path: every tensor that grew
        (the first convolution's input channels, the head's inputs and outputs, their spectral-norm
        vectors) keeps the old values in its leading entries and zeros elsewhere, and parts the old model
        lacked keep their initialisation, so the model behaves exactly as the old one until it trains."""
        own = self.state_dict()
        unknown = sorted(set(state) - set(own))
        if unknown:
            raise ValueError(f"unexpected generator weights: {', '.join(unknown[:3])}")
        merged = dict(own)
        for name, old in state.items():
            new = own[name]
            if old.shape != new.shape:
                if old.dim() != new.dim() or any(o > n for o, n in zip(old.shape, new.shape)):
                    raise ValueError(f"{name}: cannot widen {tuple(old.shape)} to {tuple(new.shape)}")
                grown = torch.zeros_like(new)
                grown[tuple(slice(0, o) for o in old.shape)] = old
                old = grown
            merged[name] = old
        self.load_state_dict(merged)


def build_generator(cfg: ModelConfig) -> Generator:
    return {"fsth": FSTHGenerator, "warp": WarpGenerator}[cfg.generator](cfg)
