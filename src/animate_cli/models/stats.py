"""Model size and cost: parameters of E/G/D and GFLOPs per generated frame."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .blocks import SelfAttention
from .discriminator import Discriminator
from .embedder import Embedder
from .generator import build_generator


def count_macs(module: nn.Module, *args, **kwargs) -> int:
    """Multiply-accumulates of the conv/linear layers and attention matmuls in one forward pass."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += out.numel() * m.in_features

    def attn_hook(m, inp, out):
        nonlocal total
        b, c, h, w = inp[0].shape
        keys = (h // 2) * (w // 2) if h >= 2 and w >= 2 else h * w
        total += b * h * w * keys * (m.qk_ch + m.v_ch)  # q·k and attn·v

    handles = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, SelfAttention):
            handles.append(m.register_forward_hook(attn_hook))
    try:
        with torch.no_grad():
            module(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return total


def count_params_and_gflops(cfg: ModelConfig) -> dict:
    """Parameters of E, G, D (D without its per-video columns) and GFLOPs (2·MACs) per 1-frame call.

    The generator's figure is per generated frame with psi given (P·ê runs once per person).
    """
    e, g, d = Embedder(cfg).eval(), build_generator(cfg).eval(), Discriminator(cfg, 0).eval()
    r = cfg.resolution
    x = torch.zeros(1, 3, r, r)
    psi = torch.zeros(1, g.n_adain)
    # a painter's cost does not depend on where the mouth or the eyes are: any landmarks will do
    lm = torch.rand(1, 68, 2, generator=torch.Generator().manual_seed(0)) * r
    paint = dict(landmarks=lm, ref_landmarks=lm) if cfg.paint_size or cfg.eye_paint_size else {}

    def n(m):
        return sum(p.numel() for p in m.parameters())

    return {
        "embedder_params": n(e),
        "generator_params": n(g),
        "discriminator_params": d.count_params(with_video_columns=False),
        "n_adain": g.n_adain,
        "generator_gflops": 2 * count_macs(g, x, psi=psi, warped=x, **paint) / 1e9,
        "embedder_gflops": 2 * count_macs(e, x, x) / 1e9,
        "discriminator_gflops": 2 * count_macs(d, x, x, w=torch.zeros(cfg.embed_dim)) / 1e9,
    }
