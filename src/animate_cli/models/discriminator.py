"""Projection discriminator D(x, y, i) (paper §3.2): no sigmoid, hinge loss outside.

Meta-learning: r = V·(W[i] + w0) + b, one column W[i] per training video.
Fine-tuning on a new person (one consistent reading of the paper): r = V·w' + b, where the caller
passes w' as `w`, initialised to w0 + ê_new (see `new_person_w`) and then trained.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .blocks import ResBlock
from .embedder import DownTrunk


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig, n_videos: int = 0):
        super().__init__()
        self.cfg = cfg
        self.n_videos = n_videos
        self.trunk = DownTrunk(cfg, in_ch=6)
        self.final = ResBlock(cfg.embed_dim, adain=False)
        d = cfg.embed_dim
        self.W = nn.Parameter(torch.randn(n_videos, d) * 0.02)
        self.w0 = nn.Parameter(torch.zeros(d))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, x, y, video_idx=None, w=None):
        """x, y (B,3,R,R); video_idx (B,) long or w (D,)/(B,D) -> (score (B,), block activations)."""
        feats = self.trunk(torch.cat([x, y], dim=1))
        h = self.final(feats[-1])
        feats.append(h)
        v = F.relu(h).sum(dim=(2, 3))  # V (B, D)
        if w is not None:
            proj = w
        elif video_idx is not None:
            proj = self.W[video_idx] + self.w0
        else:
            raise ValueError("discriminator needs video_idx or w")
        score = (v * proj).sum(dim=-1) + self.b
        return score, feats

    def new_person_w(self, e_hat: torch.Tensor) -> torch.Tensor:
        """Starting value of the fine-tuned person column: w' = w0 + ê_new (detached copy to train)."""
        return (self.w0.detach() + e_hat.detach().reshape(-1)).clone()

    def count_params(self, with_video_columns: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if with_video_columns else n - self.W.numel()


class MouthCritic(nn.Module):
    """A patch critic of the mouth alone (training only, for the mouth painter; not in the exported weights).

    The mouth term (L_CNT + L1 on a zoom of the mouth) is met best by the mean of what an opening might hold, a
    blur: teeth, tongue and the dark cavity each sit in a slightly different place in every photo. This critic
    judges the painter's crop (painter.mouth_view: the mouth at the painter's resolution and the target's
    open-mouth mask, so it asks "is this a plausible inside for this opening") patch by patch, hinge loss, no
    sigmoid."""

    def __init__(self, ch: int = 32):
        super().__init__()
        # plain strided convolutions: spectral norm with average pooling bounded the score gap by the small
        # difference a painted opening makes to the crop, and the critic never told the two apart
        chans = (4, ch, 2 * ch, 4 * ch)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in zip(chans, chans[1:]))
        self.out = nn.Conv2d(4 * ch, 1, 3, padding=1)

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        """(B,4,S,S) mouth_view -> (B,1,S/8,S/8) patch scores."""
        h = view
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
        return self.out(h)
