"""Perceptual networks for the content loss (L_CNT) and the LPIPS metric.

No wheel ships ImageNet VGG19 or VGGFace, so the default trunk is the anti-aliased ("shift tolerant")
VGG16 that `stlpips-pytorch` ships together with its LPIPS heads. We rebuild it here in plain torch and
only read its weight file: the package itself imports torchvision, which does not load next to the CPU
torch. Real VGG19 / VGGFace state dicts can be given by path to follow the paper exactly.
"""
from __future__ import annotations

import importlib.util
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AnimateError

STLPIPS_HINT = "pip install --no-deps stlpips-pytorch"
CHANNELS = (64, 128, 256, 512, 512)
# Paper weights. The stlpips VGG16 trunk stands in for VGG19 and so takes VGG19's weight.
VGG19_WEIGHT = 1.5e-1
VGGFACE_WEIGHT = 2.5e-2
# The paper's activation indices (ReLU outputs) into torchvision-style `features` of each network.
VGG19_LAYERS = (1, 6, 11, 20, 29)
VGGFACE_LAYERS = (1, 6, 11, 18, 25)
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512)


def stlpips_weights_path() -> Optional[Path]:
    """Where pip put `vgg_shift_tolerant.pth`, found without importing the package."""
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "vST0.0" / "vgg_shift_tolerant.pth"
    return path if path.is_file() else None


def _load_state(path: Optional[Path], what: str) -> dict:
    """Tensors only (weights_only): never unpickle code from a weight file."""
    if path is None or not Path(path).is_file():
        hint = f"; run `{STLPIPS_HINT}`" if what == "stlpips" else ""
        raise AnimateError(f"{what} perceptual weights not found" + (f" at {path}" if path else "") + hint)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file must not escape as a library error
        raise AnimateError(f"cannot read {what} weights {path}: {exc.__class__.__name__}") from None


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling ([1,2,1]² blur, reflect pad 2) used after a stride-1 max-pool."""

    def __init__(self, channels: int):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :]) / 16.0
        self.register_buffer("filt", k.expand(channels, 1, 3, 3).clone())

    def forward(self, x):
        x = F.pad(x, (2, 2, 2, 2), mode="reflect")
        return F.conv2d(x, self.filt.to(x.dtype), stride=2, groups=x.shape[1])


def _conv(cin, cout):
    return nn.Conv2d(cin, cout, 3, padding=1)


class PerceptualNet(nn.Module):
    """The stlpips anti-aliased VGG16 trunk; returns the ReLU output after each of the 5 slices.

    Module indices mirror the weight file (slice2 = max-pool(2, s1) @4, BlurPool @5, conv @6 ...), so the
    state dict loads strictly. `layers` picks which slice outputs to return (the trunk stops at the last).
    """

    def __init__(self, layers: Sequence[int] = (0, 1, 2, 3, 4), weights=None):
        super().__init__()
        self.layers = tuple(sorted(layers))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        mods, cin, idx, slices = {}, 3, 0, []
        for v in _VGG16_CFG + ("M",):  # the trailing "M" only closes the last slice
            if v == "M":
                slices.append(nn.Sequential(OrderedDict(mods)))
                mods = {}
                if len(slices) == 5:
                    break
                mods[str(idx)] = nn.MaxPool2d(2, stride=1)
                mods[str(idx + 1)] = BlurPool(cin)
                idx += 2
            else:
                mods[str(idx)] = _conv(cin, v)
                mods[str(idx + 1)] = nn.ReLU()
                cin, idx = v, idx + 2
        self.slices = nn.ModuleList(slices)
        # `weights`: a path, an already-read state dict, or None = the installed stlpips file
        state = weights if isinstance(weights, dict) else _load_state(weights or stlpips_weights_path(), "stlpips")
        trunk = {}
        for k, v in state.items():
            if k.startswith("net.slice"):  # net.slice<n>.<i>.weight -> slices.<n-1>.<i>.weight
                n, rest = k[len("net.slice"):].split(".", 1)
                trunk[f"slices.{int(n) - 1}.{rest}"] = v
        try:
            trunk["shift"], trunk["scale"] = state["scaling_layer.shift"], state["scaling_layer.scale"]
            self.load_state_dict(trunk, strict=True)
        except (KeyError, RuntimeError):
            raise AnimateError(f"perceptual weights do not match the VGG16 trunk; reinstall with "
                               f"`{STLPIPS_HINT}`") from None
        _freeze(self)

    def forward(self, x):
        """x: (B,3,H,W) in [-1,1], H, W >= 32 -> list of ReLU activations, one per selected slice."""
        h, out = (x - self.shift) / self.scale, []
        for i, s in enumerate(self.slices[: self.layers[-1] + 1]):
            h = s(h)
            if i in self.layers:
                out.append(h)
        return out


class PaperVGG(nn.Module):
    """Real VGG19 (ImageNet) or VGGFace from a state-dict file: the paper's exact L_CNT networks.

    Any key naming works: the 3x3 conv weights/biases are taken in file order. VGG19 expects ImageNet
    mean/std on [0,1] RGB; VGGFace (Caffe) expects BGR in [0,255] minus its mean.
    """

    def __init__(self, path: Path, kind: str = "vgg19"):
        super().__init__()
        if kind not in ("vgg19", "vggface"):
            raise AnimateError(f"unknown perceptual network {kind!r} (vgg19 | vggface)")
        self.kind = kind
        cfg, self.taps = (_VGG19_CFG, VGG19_LAYERS) if kind == "vgg19" else (_VGG16_CFG, VGGFACE_LAYERS)
        layers, cin = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [_conv(cin, v), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers[: max(self.taps) + 1])
        state = _load_state(Path(path), kind)
        keys = [k for k, v in state.items() if k.endswith("weight") and v.ndim == 4 and v.shape[-2:] == (3, 3)]
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        try:
            if len(keys) < len(convs):
                raise ValueError
            for conv, k in zip(convs, keys):
                conv.weight.data.copy_(state[k])
                conv.bias.data.copy_(state[k[: -len("weight")] + "bias"])
        except Exception:
            raise AnimateError(f"{path} is not a {kind} state dict") from None
        if kind == "vgg19":
            mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        else:  # Caffe: x*255 minus the (RGB-listed) mean, then channels flipped to BGR in forward
            mean, std = torch.tensor([129.186, 104.762, 93.594]) / 255.0, torch.full((3,), 1 / 255.0)
        self.register_buffer("mean", mean.view(1, 3, 1, 1))
        self.register_buffer("std", std.view(1, 3, 1, 1))
        _freeze(self)

    def forward(self, x):
        h = ((x + 1) / 2 - self.mean) / self.std
        if self.kind == "vggface":
            h = h.flip(1)  # RGB -> BGR
        out = []
        for i, m in enumerate(self.features):
            h = m(h)
            if i in self.taps:
                out.append(h)
        return out


def _freeze(net: nn.Module):
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)


_CACHE: dict = {}


def get_net(device="cpu", kind: str = "stlpips", path: Optional[Path] = None) -> nn.Module:
    """One frozen instance per (network, device): loading 59 MB per call would dominate a training step."""
    key = (kind, str(path), str(torch.device(device)))
    if key not in _CACHE:
        net = PerceptualNet(weights=path) if kind == "stlpips" else PaperVGG(path, kind)
        _CACHE[key] = net.to(device)
    return _CACHE[key]


def _resize(x, size: Optional[int]):
    """Area-downscale to `size` (cheaper L_CNT on CPU); never upscale."""
    if size is None or x.shape[-1] <= size:
        return x
    return F.interpolate(x, size=(size, size), mode="area")


def content_loss(x_hat, x, input_size: Optional[int] = None, vgg19: Optional[Path] = None,
                 vggface: Optional[Path] = None):
    """L_CNT: weighted sum over layers of the mean L1 between activations of x̂ and x (both in [-1,1]).

    Default: the stlpips VGG16 trunk with VGG19's weight 1.5e-1 (substitution: no VGG19 weights here).
    With `vgg19` / `vggface` paths: the paper's networks, layers and weights (1.5e-1, 2.5e-2).
    """
    nets = [(get_net(x.device, "vgg19", vgg19) if vgg19 else get_net(x.device), VGG19_WEIGHT)]
    if vggface:
        nets.append((get_net(x.device, "vggface", vggface), VGGFACE_WEIGHT))
    x_hat, x = _resize(x_hat, input_size), _resize(x, input_size)
    total = x_hat.new_zeros(())
    for net, weight in nets:
        with torch.no_grad():
            real = net(x)
        for a, b in zip(net(x_hat), real):
            total = total + weight * F.l1_loss(a.float(), b.float())
    return total


class LPIPS(nn.Module):
    """LPIPS distance with the stlpips heads: unit-normalised activations, squared difference, learned
    per-channel weights, spatial mean, summed over the 5 layers. Used as an evaluation metric."""

    def __init__(self, weights: Optional[Path] = None):
        super().__init__()
        state = _load_state(weights or stlpips_weights_path(), "stlpips")
        self.net = PerceptualNet(weights=state)
        self.lins = nn.ParameterList([nn.Parameter(state[f"lin{i}.model.1.weight"].clone())
                                      for i in range(5)])
        _freeze(self)

    def layer_maps(self, x, y):
        """x, y: (B,3,H,W) in [-1,1] -> per layer, the (B,1,h,w) distance map whose spatial mean is that layer's
        part of the distance (scripts/lpips_regions.py reads them region by region)."""
        for fx, fy, w in zip(self.net(x), self.net(y), self.lins):
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            yield ((fx - fy).pow(2) * w.view(1, -1, 1, 1)).sum(1, keepdim=True)

    def forward(self, x, y):
        """x, y: (B,3,H,W) in [-1,1] -> (B,) distances."""
        d = x.new_zeros(x.shape[0])
        for m in self.layer_maps(x, y):
            d = d + m.mean((1, 2, 3))
        return d


def _lpips_net(device) -> LPIPS:
    key = ("lpips", str(device))
    if key not in _CACHE:
        _CACHE[key] = LPIPS().to(device)
    return _CACHE[key]


def lpips(x, y):
    """LPIPS between batches x and y in [-1,1] -> (B,), with a cached network on x's device."""
    with torch.no_grad():
        return _lpips_net(x.device)(x.float(), y.float())


def lpips_loss(x_hat, x):
    """Mean LPIPS of x̂ against x, differentiable in x̂: a training term that, unlike L_CNT's raw activations,
    weighs each channel's direction (edges, texture) rather than its size, so a blur costs what it looks like."""
    return _lpips_net(x_hat.device)(x_hat.float(), x.float()).mean()
