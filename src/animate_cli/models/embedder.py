"""Embedder E(x, y) -> ê: maps a frame and its landmark image to a person vector (paper §3.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .blocks import ResBlockDown, SelfAttention


class DownTrunk(nn.Module):
    """E's trunk, reused (with its own weights) by D: residual down blocks without norm to 4x4,
    self-attention after the block that reaches cfg.attn_embed_res. Returns every block's output."""

    def __init__(self, cfg: ModelConfig, in_ch: int = 6):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.attn_index = -1
        self.shuffle = cfg.shuffle_stem
        res, ch = cfg.trunk_resolution, in_ch * 4 if cfg.shuffle_stem else in_ch
        for i, out in enumerate(cfg.embed_channels()):
            self.blocks.append(ResBlockDown(ch, out, norm=False, first=i == 0))
            ch, res = out, res // 2
            if cfg.attention and res == cfg.attn_embed_res:
                self.attn_index = i
        self.attn = SelfAttention(cfg.embed_channels()[self.attn_index]) if self.attn_index >= 0 else None
        self.out_ch = ch

    def forward(self, h: torch.Tensor) -> list[torch.Tensor]:
        if self.shuffle:
            h = F.pixel_unshuffle(h, 2)
        feats = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attn_index:
                h = self.attn(h)
            feats.append(h)
        return feats


class Embedder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = DownTrunk(cfg, in_ch=6)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (B,3,R,R) frame and landmark image -> ê (B, embed_dim): ReLU + global sum pooling."""
        h = self.trunk(torch.cat([x, y], dim=1))[-1]
        return F.relu(h).sum(dim=(2, 3))

    def embed_shots(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (B,K,3,R,R) K shots per person -> mean embedding (B, embed_dim)."""
        b, k = x.shape[:2]
        e = self(x.flatten(0, 1), y.flatten(0, 1))
        return e.view(b, k, -1).mean(dim=1)
