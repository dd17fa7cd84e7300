"""Few-shot fine-tuning on a new person (paper §3.3), for both generators.

E stays frozen and only supplies ê_new = mean_t E(x_t, y_t). G starts its person-specific AdaIN
parameters at ψ' = P·ê_new and D its person column at w' = w0 + ê_new; then G (weights + ψ') and
D (weights + w') train on the T shots with L_CNT + L_ADV (hinge for D), no L_MCH. steps=0 is the
paper's feed-forward ("FF") model. The loaded G and D are never touched: we train deep copies, so a
batch over several portraits starts every person from the same meta-learned weights.
"""
from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .errors import AnimateError
from .losses import LossWeights, d_hinge_loss, generator_losses, mouth_loss
from .models.checkpoint import PersonModel  # one class for fine-tuned and loaded persons
from .models.perceptual import content_loss
from .warp import warp_image

DEFAULT_STEPS = 40  # one step = one pass over all T shots, so ≈ the paper's "about 40 epochs"
LR_G = 5e-5
LR_D = 2e-4
# L_CNT input size: as meta-learning (train/meta.py) uses; on CPU, 8 shots at 256² step ~4x faster than at
# full resolution (the VGG trunk dominates a step). None = full resolution.
CONTENT_SIZE = 128


def _normalised(lms: np.ndarray) -> np.ndarray:
    """(T,68,2) with position and scale removed, to compare poses/expressions of shots."""
    c = lms - lms.mean(axis=1, keepdims=True)
    return c / (np.sqrt((c ** 2).sum(axis=(1, 2), keepdims=True) / lms.shape[1]) + 1e-8)


def reference_for(target_index: int, shot_landmarks: Optional[np.ndarray], n_shots: int) -> int:
    """Which shot is warped to serve as the warp generator's reference when shot `target_index` is the
    target: the closest *other* shot in landmark space (so G learns to correct a real warp, as at
    inference), or the shot itself when T = 1 (identity warp). Ties / no landmarks: the next shot."""
    if n_shots == 1:
        return 0
    if shot_landmarks is None:
        return (target_index + 1) % n_shots
    s = _normalised(np.asarray(shot_landmarks, np.float32)).reshape(n_shots, -1)
    d = ((s - s[target_index]) ** 2).sum(1)
    d[target_index] = np.inf
    return int(d.argmin())


def warped_references(shots_x: torch.Tensor, shot_landmarks: np.ndarray) -> torch.Tensor:
    """Each shot's reference (see `reference_for`) warped into that shot's pose: (T,3,R,R)."""
    t = len(shots_x)
    lms = torch.as_tensor(np.asarray(shot_landmarks, np.float32), device=shots_x.device)
    ref = torch.tensor([reference_for(i, shot_landmarks, t) for i in range(t)], device=shots_x.device)
    if t == 1:
        return shots_x.clone()
    with torch.no_grad():
        return warp_image(shots_x[ref], lms[ref], lms)


def round_trip_reference(shot: torch.Tensor, landmarks: np.ndarray, strength: float = 0.04) -> torch.Tensor:
    """A single shot's stand-in for "another picture warped to this pose": the shot warped to randomly
    perturbed landmarks (head turn, scale, expression jitter) and back. It carries the blur, smear and
    stretch of a real warp, so fine-tuning on one picture still teaches G to correct warps instead of
    copying its input. Uses torch's global RNG: deterministic under torch.manual_seed."""
    lms = torch.as_tensor(np.asarray(landmarks, np.float32), device=shot.device).reshape(-1, 68, 2)
    centre = lms.mean(dim=1, keepdim=True)
    size = (lms.amax(dim=1) - lms.amin(dim=1)).amax(dim=-1).reshape(-1, 1, 1)
    angle = (torch.rand(len(lms), device=shot.device) * 2 - 1) * 3 * strength  # ~7 degrees at 0.04
    scale = 1 + (torch.rand(len(lms), 1, 1, device=shot.device) * 2 - 1) * strength
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    moved = (lms - centre) @ rot.transpose(-1, -2) * scale + centre
    moved = moved + (torch.rand(len(lms), 1, 2, device=shot.device) * 2 - 1) * strength * size
    moved = moved + torch.randn_like(lms) * 0.25 * strength * size
    with torch.no_grad():
        away = warp_image(shot, lms, moved)
        return warp_image(away, moved, lms)


def _set_grad(params, flag: bool):
    for p in params:
        p.requires_grad_(flag)


def _shift(tensors, max_shift: int):
    """The same random translation (≤ max_shift px, edge-replicated) for all tensors: keeps x, y and
    the warped reference consistent. Returns (shifted tensors, (dx, dy)): content moves by (−dx, −dy)."""
    if max_shift <= 0:
        return tensors, (0, 0)
    dx, dy = (torch.randint(-max_shift, max_shift + 1, (2,))).tolist()
    out = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        h, w = t.shape[-2:]
        p = F.pad(t, (max_shift,) * 4, mode="replicate")
        out.append(p[..., max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w])
    return out, (dx, dy)


@torch.no_grad()
def person_init(E: nn.Module, G: nn.Module, D: Optional[nn.Module], x: torch.Tensor, y: torch.Tensor):
    """The paper's person-specific starting point: ê_new = mean_t E(x_t, y_t), ψ' = P·ê_new and
    w' = w0 + ê_new (None without D). Modules run in eval mode, so spectral norm does not advance
    their power iteration, and are restored to their mode: the loaded networks are left as they were."""
    modes = [(m, m.training) for m in (E, G) if m is not None]
    try:
        for m, _ in modes:
            m.eval()
        e_hat = E(x, y).mean(0, keepdim=True)
        psi = G.project(e_hat.to(next(G.parameters()).device))
    finally:
        for m, mode in modes:
            m.train(mode)
    w = None if D is None else (D.w0.detach().reshape(-1) + e_hat.reshape(-1).to(D.w0.device)).clone()
    return e_hat, psi, w


def finetune(cfg: ModelConfig, E: nn.Module, G: nn.Module, D: Optional[nn.Module],
             shots_x: torch.Tensor, shots_y: torch.Tensor, shot_landmarks: Optional[np.ndarray] = None,
             steps: Optional[int] = None, device="cpu", progress: Optional[Callable] = None,
             warped: Optional[torch.Tensor] = None, lr_g: float = LR_G, lr_d: float = LR_D,
             weights: LossWeights = LossWeights(), content_size: Optional[int] = CONTENT_SIZE,
             max_shift: int = 0, amp: bool = True, train_trunk: bool = True,
             synthetic_references: bool = True) -> PersonModel:
    """Fine-tune copies of G and D on the T shots; returns the person model (deterministic given
    torch.manual_seed). `warped` (T,3,R,R) overrides the references computed from `shot_landmarks`.
    `progress(step, total, losses)` is called after each step. Without D only L_CNT (+ pixel) trains.
    Mixed precision only on CUDA (`amp`); fp32 on CPU. `train_trunk=False` trains only ψ' and the mouth
    refiner (the trunk's convolutions stay as meta-learned); `synthetic_references` gives every shot a
    fresh round-trip warp of itself each step, as a single shot always gets."""
    steps = DEFAULT_STEPS if steps is None else int(steps)
    if steps < 0:
        raise AnimateError(f"fine-tuning steps must be 0 or more (got {steps})")
    device = torch.device(device)
    x = shots_x.to(device).float()
    y = shots_y.to(device).float()
    if x.dim() != 4 or x.shape != y.shape or x.shape[0] < 1:
        raise AnimateError(f"shots must be (T,3,R,R) images with matching landmark images, got "
                           f"{tuple(x.shape)} and {tuple(y.shape)}")
    if cfg.generator == "warp" and steps > 0:  # the feed-forward model needs no references yet
        if warped is None:
            if shot_landmarks is None:
                raise AnimateError("the warp generator needs the shots' landmarks to fine-tune")
            warped = warped_references(x, shot_landmarks)
        warped = warped.to(device).float()
    else:
        warped = None

    e_hat, psi0, w0 = person_init(E, G, D, x, y)
    e_hat, psi0 = e_hat.to(device), psi0.to(device)
    g = copy.deepcopy(G).to(device).eval()
    lms = None if shot_landmarks is None else np.asarray(shot_landmarks, np.float32)
    model = PersonModel(cfg=cfg, generator=g, psi=psi0, e_hat=e_hat, shots=x, shots_y=y,
                        shot_landmarks=lms, steps=steps)
    if steps == 0:
        return model

    psi = nn.Parameter(psi0.clone())
    g.train()
    g_params = [p for n, p in g.named_parameters()  # P is unused now: ψ' replaces P·ê
                if not n.startswith("P.") and (train_trunk or n.startswith("mouth."))] + [psi]
    opt_g = torch.optim.Adam(g_params, lr=lr_g, betas=(0.0, 0.999))
    d = w = opt_d = None
    if D is not None:
        d = copy.deepcopy(D).to(device).train()
        w = nn.Parameter(w0.to(device))
        d_params = [p for n, p in d.named_parameters() if n != "W"] + [w]
        opt_d = torch.optim.Adam(d_params, lr=lr_d, betas=(0.0, 0.999))
    use_amp = amp and device.type == "cuda"
    dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if use_amp else nullcontext
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and dtype == torch.float16)

    synthetic = warped is not None and (len(x) == 1 or synthetic_references) and lms is not None
    lms_t = None if lms is None else torch.as_tensor(lms, device=device).reshape(-1, 68, 2)
    for step in range(steps):
        if synthetic:  # one picture (or asked for): a fresh synthetic warp of each shot every step
            warped = round_trip_reference(x, lms)
        (xb, yb, wb), (dx, dy) = _shift([x, y, warped], max_shift)
        lb = None if lms_t is None else lms_t - lms_t.new_tensor([dx, dy])
        # Generator step: L_CNT + L_ADV (-D(x̂) + 10·L_FM); D's weights frozen for this backward.
        with autocast():
            x_hat = g(yb, psi=psi, warped=wb, landmarks=lb)
        if d is not None:
            _set_grad(d_params, False)
            with autocast():
                scores, feats = d(torch.cat([x_hat, xb]), torch.cat([yb, yb]), w=w)
            n = len(xb)
            losses = generator_losses(scores[:n].float(), [f[:n] for f in feats], [f[n:] for f in feats],
                                      x_hat, xb, weights=weights, content_size=content_size, landmarks=lb)
            _set_grad(d_params, True)
        else:
            losses = {"cnt": content_loss(x_hat, xb, input_size=content_size)}
            losses["pix"] = F.l1_loss(x_hat.float(), xb)
            losses["total"] = weights.content * losses["cnt"] + weights.pixel * losses["pix"]
            if lb is not None and weights.mouth > 0:
                losses["mouth"] = mouth_loss(x_hat, xb, lb)
                losses["total"] = losses["total"] + weights.mouth * losses["mouth"]
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        scaler.step(opt_g)
        # Discriminator step: hinge loss on the shots vs the (detached) reconstructions.
        if d is not None:
            with autocast():
                scores, _ = d(torch.cat([xb, x_hat.detach()]), torch.cat([yb, yb]), w=w)
            losses["d"] = d_hinge_loss(scores[:n].float(), scores[n:].float())
            opt_d.zero_grad(set_to_none=True)
            scaler.scale(losses["d"]).backward()
            scaler.step(opt_d)
        scaler.update()
        logged = {k: float(v.detach()) for k, v in losses.items()}
        model.losses.append(logged)
        if progress is not None:
            progress(step + 1, steps, logged)

    g.eval()
    model.psi = psi.detach().clone()
    return model
