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
from .losses import LossWeights, d_hinge_loss, generator_losses, reconstruction_losses
from .models.checkpoint import PersonModel  # one class for fine-tuned and loaded persons
from .references import reference_slots, warp_references
from .warp import DEFAULT_REG, resample, tps_grid

DEFAULT_STEPS = 40  # one step = one pass over all T shots, so ≈ the paper's "about 40 epochs"
LR_G = 5e-5
LR_D = 2e-4
# L_CNT input size: as meta-learning (train/meta.py) uses; on CPU, 8 shots at 256² step ~4x faster than at
# full resolution (the VGG trunk dominates a step). None = full resolution.
CONTENT_SIZE = 128
SYNTHETIC_SHARE = 1.0  # share of shot references that are round trips of the shot itself (see finetune)


def warped_references(shots_x: torch.Tensor, shot_landmarks: np.ndarray, n_refs: int = 1,
                      selection=(), reg: float = DEFAULT_REG) -> torch.Tensor:
    """Each shot's training input: the *other* shots nearest to it, warped into its pose, nearest first
    (so G learns to correct and blend real warps, as at inference): (T,3·n_refs,R,R). One shot: itself."""
    t = len(shots_x)
    if t == 1:
        return shots_x.repeat(1, n_refs, 1, 1)
    lms = np.asarray(shot_landmarks, np.float32)
    with torch.no_grad():
        slots = reference_slots(lms, lms, n_refs, exclude=torch.arange(t), selection=selection)
        return warp_references(shots_x, lms, lms, slots, reg=reg)


def round_trip_reference(shot: torch.Tensor, landmarks: np.ndarray, strength: float = 0.04,
                         reg: float = DEFAULT_REG) -> torch.Tensor:
    """A single shot's stand-in for "another picture warped to this pose": the shot warped to randomly
    perturbed landmarks (head turn, scale, expression jitter) and back. It carries the smear and stretch
    of a real warp, so fine-tuning on one picture still teaches G to correct warps instead of copying its
    input. The two splines are composed into one sampling grid, so the picture is resampled once, as at
    inference: two bilinear resamples blur it twice, and G, fine-tuned to undo that, over-sharpens the real
    warps. Uses torch's global RNG: deterministic under torch.manual_seed."""
    lms = torch.as_tensor(np.asarray(landmarks, np.float32), device=shot.device).reshape(-1, 68, 2)
    moved = _perturbed(lms, strength)
    with torch.no_grad():
        away = tps_grid(lms, moved, shot.shape[-2:], reg=reg)  # a pixel of the moved pose -> where in the shot
        back = tps_grid(moved, lms, shot.shape[-2:], reg=reg)  # a pixel of the shot's pose -> where in the moved
        return resample(shot, resample(away.permute(0, 3, 1, 2), back).permute(0, 2, 3, 1))


def _perturbed(lms: torch.Tensor, strength: float) -> torch.Tensor:
    """(T,68,2) landmarks moved as by another picture of the person: a head turn of up to ~7 degrees
    (at 0.04), a scale and a shift of up to `strength`, and per-point expression jitter."""
    centre = lms.mean(dim=1, keepdim=True)
    size = (lms.amax(dim=1) - lms.amin(dim=1)).amax(dim=-1).reshape(-1, 1, 1)
    angle = (torch.rand(len(lms), device=lms.device) * 2 - 1) * 3 * strength
    scale = 1 + (torch.rand(len(lms), 1, 1, device=lms.device) * 2 - 1) * strength
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    moved = (lms - centre) @ rot.transpose(-1, -2) * scale + centre
    moved = moved + (torch.rand(len(lms), 1, 2, device=lms.device) * 2 - 1) * strength * size
    return moved + torch.randn_like(lms) * 0.25 * strength * size


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
             synthetic_share: float = SYNTHETIC_SHARE) -> PersonModel:
    """Fine-tune copies of G and D on the T shots; returns the person model (deterministic given
    torch.manual_seed). `warped` (T,3,R,R) overrides the references computed from `shot_landmarks`.
    `progress(step, total, losses)` is called after each step. Without D only L_CNT (+ pixel) trains.
    Mixed precision only on CUDA (`amp`); fp32 on CPU. `train_trunk=False` trains only ψ' and the mouth
    refiner (the trunk's convolutions stay as meta-learned). Each step, each shot's nearest reference is,
    with probability `synthetic_share`, a fresh round-trip warp of the shot itself (as a single shot always
    gets) instead of the nearest other shot warped to it; the other slots always hold the other shots."""
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
            warped = warped_references(x, shot_landmarks, cfg.n_refs, cfg.selection, cfg.warp_reg)
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

    share = 1.0 if len(x) == 1 else float(synthetic_share)
    synthetic = warped is not None and share > 0 and lms is not None
    real = warped
    lms_t = None if lms is None else torch.as_tensor(lms, device=device).reshape(-1, 68, 2)
    for step in range(steps):
        if synthetic:  # a fresh synthetic warp of each chosen shot as its nearest reference
            fake = round_trip_reference(x, lms, reg=cfg.warp_reg)
            if len(x) == 1:
                warped = fake.repeat(1, cfg.n_refs, 1, 1)
            else:
                if share < 1:  # (no draw at 1: runs stay identical to those before the share existed)
                    fake = torch.where((torch.rand(len(x)) < share).to(device).view(-1, 1, 1, 1), fake, real[:, :3])
                warped = torch.cat([fake, real[:, 3:]], dim=1)
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
            losses = reconstruction_losses(x_hat, xb, weights=weights, content_size=content_size, landmarks=lb)
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
