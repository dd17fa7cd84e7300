"""Training objectives of Zakharov et al. 2019 (meta-learning and fine-tuning), plus an optional pixel L1.

All functions are pure (scores, features and images in, scalar tensors out), so meta-learning and
fine-tuning decide themselves when D is run and what is detached.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .models.painter import eye_crops
from .models.perceptual import content_loss, lpips_loss

MOUTH = slice(48, 68)  # iBUG-68 indices of the outer and inner lips
MOUTH_CROP = 64  # side of the mouth term's zoomed crop
EYE_CROP = 64  # side of the eye term's crop of each eye (painter.eye_crops: 2 × the eye's width across)


@dataclass(frozen=True)
class LossWeights:
    """Multipliers of each generator term. `content` scales L_CNT, which already carries the paper's
    per-network weights (1.5e-1 VGG19 / stand-in, 2.5e-2 VGGFace). `pixel` (plain L1 on the image) is not
    in the paper; a little of it steadies the warp generator's colours early on."""
    content: float = 1.0
    adv: float = 1.0
    fm: float = 10.0
    mch: float = 10.0
    pixel: float = 0.1
    mouth: float = 1.0


def mouth_box(landmarks: torch.Tensor, h: int, w: int, margin: float = 0.6) -> torch.Tensor:
    """(B,68,2) px -> (B,2,3) affine `theta` mapping the crop's normalised coordinates to the frame's.

    The square box is centred on the lips and `1 + margin` times their larger extent (at least a tenth
    of the frame), so an opening mouth fills the crop whatever the face size."""
    pts = landmarks.float().reshape(-1, 68, 2)[:, MOUTH]
    lo, hi = pts.amin(dim=1), pts.amax(dim=1)
    centre = (lo + hi) / 2
    half = ((hi - lo).amax(dim=1) * (1 + margin) / 2).clamp_min(max(h, w) / 20)
    theta = torch.zeros(len(pts), 2, 3, device=pts.device)
    theta[:, 0, 0] = 2 * half / w
    theta[:, 1, 1] = 2 * half / h
    theta[:, 0, 2] = (2 * centre[:, 0] + 1) / w - 1
    theta[:, 1, 2] = (2 * centre[:, 1] + 1) / h - 1
    return theta


def mouth_crop(images: torch.Tensor, landmarks: torch.Tensor, size: int = MOUTH_CROP) -> torch.Tensor:
    """(B,C,H,W) -> (B,C,size,size): each image's mouth, zoomed (see `mouth_box`); differentiable."""
    b, c, h, w = images.shape
    theta = mouth_box(landmarks.to(images.device), h, w)
    grid = F.affine_grid(theta, (b, c, size, size), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def mouth_loss(x_hat, x, landmarks, vgg19=None, vggface=None, lpips_weight: float = 0.0):
    """L_CNT + L1 on a zoom of the mouth (not in the paper). The mouth is where the warp fails most
    (an opening mouth smears the closed lips; teeth and the dark inside must be painted) and, at the
    whole-image scale, a few percent of the pixels: without this term G barely learns to paint it.
    `lpips_weight` adds LPIPS on the zoom (perceptual.lpips_loss)."""
    return _crop_term(mouth_crop(x_hat, landmarks), mouth_crop(x, landmarks), lpips_weight, vgg19, vggface)


def mouth_colour_loss(x_hat, x, landmarks, cell: int = 4):
    """L1 between the mouth zooms averaged over cell × cell blocks: the colour of each part of the mouth, not its
    texture. The perceptual term leaves hue free (painted teeth came out green and blue under it alone)."""
    a, b = mouth_crop(x_hat, landmarks), mouth_crop(x, landmarks)
    return F.l1_loss(F.avg_pool2d(a, cell), F.avg_pool2d(b, cell))


def eye_loss(x_hat, x, landmarks, lpips_weight: float = 0.0):
    """L_CNT + L1 on crops of both eyes (painter.eye_crops), what the eye painter is trained on: at the whole
    image's scale an eye is a fraction of a percent of the pixels. `lpips_weight` as in mouth_loss."""
    lm = landmarks.float().reshape(-1, 68, 2)
    return _crop_term(eye_crops(x_hat, lm, EYE_CROP)[0], eye_crops(x, lm, EYE_CROP)[0], lpips_weight)


def _crop_term(a, b, lpips_weight: float = 0.0, vgg19=None, vggface=None):
    """A painted part's term on its crops a (output) and b (truth): L_CNT + L1, plus lpips_weight × LPIPS."""
    term = content_loss(a, b, vgg19=vgg19, vggface=vggface) + F.l1_loss(a, b)
    return term + lpips_weight * lpips_loss(a, b) if lpips_weight else term


def eye_colour_loss(x_hat, x, landmarks, cell: int = 4):
    """mouth_colour_loss for the eyes: L1 between the eye crops averaged over cell × cell blocks."""
    lm = landmarks.float().reshape(-1, 68, 2)
    a, b = eye_crops(x_hat, lm, EYE_CROP)[0], eye_crops(x, lm, EYE_CROP)[0]
    return F.l1_loss(F.avg_pool2d(a, cell), F.avg_pool2d(b, cell))


def d_hinge_loss(real_score, fake_score):
    """D's hinge loss: mean relu(1 - D(x)) + mean relu(1 + D(x̂)); D has no sigmoid."""
    return F.relu(1.0 - real_score).mean() + F.relu(1.0 + fake_score).mean()


def g_adv_loss(fake_score):
    """Generator's adversarial term: -D(x̂), averaged over the batch."""
    return -fake_score.mean()


def feature_matching(fake_feats: Sequence[torch.Tensor], real_feats: Sequence[torch.Tensor]):
    """L_FM: sum over D's blocks of the mean L1 between activations on x̂ and on x (x side detached,
    so the term only moves G)."""
    total = fake_feats[0].new_zeros(())
    for f, r in zip(fake_feats, real_feats):
        total = total + F.l1_loss(f.float(), r.detach().float())
    return total


def match_loss(w_i, e_hat):
    """‖W_i − ê_i‖₁ averaged over dimensions and batch (not summed: a sum over 512 dims would dwarf the
    other terms; the mean keeps the paper's weight of 10 meaningful). Both sides get gradients, as in the
    paper: it pulls E's embedding and D's identity column together."""
    return F.l1_loss(e_hat.float(), w_i.float())


def reconstruction_losses(x_hat, x, *, weights: LossWeights = LossWeights(), content_size: Optional[int] = None,
                          vgg19=None, vggface=None, landmarks=None) -> dict:
    """The terms that compare x̂ with the truth only (no D): L_CNT [+ pixel·L1] [+ mouth·L_mouth when the
    target `landmarks` are given] and their weighted "total". Fine-tuning without D trains on these alone."""
    out = {"cnt": content_loss(x_hat, x, input_size=content_size, vgg19=vgg19, vggface=vggface)}
    total = weights.content * out["cnt"]
    if weights.pixel > 0:
        out["pix"] = F.l1_loss(x_hat.float(), x.float())
        total = total + weights.pixel * out["pix"]
    if landmarks is not None and weights.mouth > 0:
        out["mouth"] = mouth_loss(x_hat, x, landmarks, vgg19=vgg19, vggface=vggface)
        total = total + weights.mouth * out["mouth"]
    out["total"] = total
    return out


def generator_losses(fake_score, fake_feats, real_feats, x_hat, x, *, e_hat=None, w_i=None,
                     weights: LossWeights = LossWeights(), content_size: Optional[int] = None,
                     vgg19=None, vggface=None, landmarks=None) -> dict:
    """All of E/G's terms by name plus "total": L_CNT + L_ADV (= -D(x̂) + fm·L_FM) [+ mch·L_MCH when
    e_hat and w_i are given, i.e. meta-learning] [+ pixel·L1 when weights.pixel > 0] [+ mouth·L_mouth
    when the target `landmarks` (B,68,2 px) are given and weights.mouth > 0]."""
    out = reconstruction_losses(x_hat, x, weights=weights, content_size=content_size, vgg19=vgg19,
                                vggface=vggface, landmarks=landmarks)
    out["adv"] = g_adv_loss(fake_score)
    out["fm"] = feature_matching(fake_feats, real_feats)
    total = out["total"] + weights.adv * out["adv"] + weights.fm * out["fm"]
    if e_hat is not None and w_i is not None:
        out["mch"] = match_loss(w_i, e_hat)
        total = total + weights.mch * out["mch"]
    out["total"] = total
    return out
