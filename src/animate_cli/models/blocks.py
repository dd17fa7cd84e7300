"""Building blocks shared by E, G and D (BigGAN-style residual blocks, AdaIN, SAGAN attention).

Every conv and linear layer is spectral-normed (torch.nn.utils.parametrizations.spectral_norm): its
state is plain tensors (original weight + power-iteration vectors u, v), so a safetensors round trip
of state_dict() reproduces the outputs bit-exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def sn_conv(in_ch: int, out_ch: int, kernel: int = 3, bias: bool = True) -> nn.Module:
    return spectral_norm(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias))


def sn_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Module:
    return spectral_norm(nn.Linear(in_features, out_features, bias=bias))


def adain(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Instance-normalise x (B,C,H,W), then x*(1+scale)+bias with per-sample (B,C) parameters.

    Scales are offsets from 1 so that psi = 0 is a plain instance norm: a freshly initialised P
    then does not blow up or kill the activations.
    """
    x = F.instance_norm(x, eps=eps)
    return x * (1 + scale[:, :, None, None]) + bias[:, :, None, None]


class AdaINParams:
    """Hands out consecutive (scale, bias) slices of psi (B, n_adain) to the AdaIN layers in order."""

    def __init__(self, psi: torch.Tensor):
        self.psi = psi
        self.pos = 0

    def take(self, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.psi[:, self.pos:self.pos + channels]
        bias = self.psi[:, self.pos + channels:self.pos + 2 * channels]
        self.pos += 2 * channels
        return scale, bias


class ResBlockDown(nn.Module):
    """Pre-activation residual block that halves the resolution; optional instance norm.

    `first` skips the pre-activation: the input is an image, ReLU would drop its negative half.
    Convs that feed a norm have no bias (the norm would cancel it).
    """

    def __init__(self, in_ch: int, out_ch: int, norm: bool = False, first: bool = False):
        super().__init__()
        self.first = first
        self.norm1 = nn.InstanceNorm2d(in_ch, affine=True) if norm and not first else nn.Identity()
        self.norm2 = nn.InstanceNorm2d(out_ch, affine=True) if norm else nn.Identity()
        self.conv1 = sn_conv(in_ch, out_ch, bias=not norm)
        self.conv2 = sn_conv(out_ch, out_ch)
        self.skip = sn_conv(in_ch, out_ch, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(self.norm1(x))
        h = self.conv1(h)
        h = self.conv2(F.relu(self.norm2(h)))
        # 1x1 conv and average pooling commute: pool first, it is 4x cheaper
        return F.avg_pool2d(h, 2) + self.skip(F.avg_pool2d(x, 2))


class ResBlock(nn.Module):
    """Same-resolution residual block, identity skip. AdaIN when `adain=True` (params passed in)."""

    def __init__(self, ch: int, adain: bool = False):
        super().__init__()
        self.ch = ch
        self.adain = adain
        self.conv1 = sn_conv(ch, ch, bias=not adain)
        self.conv2 = sn_conv(ch, ch)

    @property
    def n_adain(self) -> int:
        return 4 * self.ch if self.adain else 0

    def forward(self, x: torch.Tensor, params: AdaINParams | None = None) -> torch.Tensor:
        h = adain(x, *params.take(self.ch)) if self.adain else x
        h = self.conv1(F.relu(h))
        if self.adain:
            h = adain(h, *params.take(self.ch))
        h = self.conv2(F.relu(h))
        return x + h


class ResBlockUp(nn.Module):
    """Pre-activation residual block that doubles the resolution (nearest), with AdaIN."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.conv1 = sn_conv(in_ch, out_ch, bias=False)
        self.conv2 = sn_conv(out_ch, out_ch)
        self.skip = sn_conv(in_ch, out_ch, kernel=1)

    @property
    def n_adain(self) -> int:
        return 2 * (self.in_ch + self.out_ch)

    def forward(self, x: torch.Tensor, params: AdaINParams) -> torch.Tensor:
        h = F.relu(adain(x, *params.take(self.in_ch)))
        h = self.conv1(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = F.relu(adain(h, *params.take(self.out_ch)))
        h = self.conv2(h)
        # 1x1 conv and nearest upsampling commute: convolve at the low resolution
        return h + F.interpolate(self.skip(x), scale_factor=2, mode="nearest")


class SelfAttention(nn.Module):
    """SAGAN self-attention; keys/values max-pooled 2x (as in BigGAN) to cut the cost 4x.

    gamma starts at 0 so the block starts as the identity.
    """

    def __init__(self, ch: int):
        super().__init__()
        self.qk_ch = max(ch // 8, 1)
        self.v_ch = max(ch // 2, 1)
        self.query = sn_conv(ch, self.qk_ch, kernel=1, bias=False)
        self.key = sn_conv(ch, self.qk_ch, kernel=1, bias=False)
        self.value = sn_conv(ch, self.v_ch, kernel=1, bias=False)
        self.out = sn_conv(self.v_ch, ch, kernel=1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, qk)
        pooled = F.max_pool2d(x, 2) if h >= 2 and w >= 2 else x
        k = self.key(pooled).flatten(2).transpose(1, 2)  # (B, HW/4, qk)
        v = self.value(pooled).flatten(2).transpose(1, 2)  # (B, HW/4, v)
        attn = torch.softmax(q @ k.transpose(1, 2), dim=-1)  # SAGAN: no 1/sqrt(d) scaling
        o = (attn @ v).transpose(1, 2).reshape(b, self.v_ch, h, w)
        return x + self.gamma * self.out(o)
