"""Few-shot fine-tuning on a new person (paper §3.3), for both generators.

E stays frozen and only supplies ê_new = mean_t E(x_t, y_t). G starts its person-specific AdaIN
parameters at ψ' = P·ê_new and D its person column at w' = w0 + ê_new; then G (weights + ψ'; its mouth
painter stays as loaded unless settings.train_painter) and D (weights + w') train on the T shots with L_CNT
+ L_ADV (hinge for D) + the mouth term, no L_MCH.
steps=0 is the paper's feed-forward ("FF") model. The loaded G and D are never touched: we train deep
copies, so a batch over several portraits starts every person from the same meta-learned weights.
Settings: config.FinetuneConfig.
"""
from __future__ import annotations

import copy
from contextlib import nullcontext
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from .config import FinetuneConfig, ModelConfig
from .errors import AnimateError
from .losses import LossWeights, d_hinge_loss, generator_losses, reconstruction_losses
from .models.checkpoint import PersonModel  # one class for fine-tuned and loaded persons
from .warp import resample, tps_grid


def round_trip_reference(shot: torch.Tensor, landmarks: np.ndarray, *, strength: float,
                         reg: float) -> torch.Tensor:
    """A shot's stand-in for "another picture warped to this pose": the shot warped to randomly
    perturbed landmarks (head turn, scale, expression jitter; `strength`: see _perturbed) and back. It
    carries the smear and stretch of a real warp, so fine-tuning teaches G to correct warps instead of
    copying its input. The two splines (regularisation `reg`) are composed into one sampling grid, so the
    picture is resampled once, as at inference: two bilinear resamples blur it twice, and G, fine-tuned to
    undo that, over-sharpens the real warps. Uses torch's global RNG: deterministic under torch.manual_seed."""
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
             shots_x: torch.Tensor, shots_y: torch.Tensor, shot_landmarks: Optional[np.ndarray],
             settings: FinetuneConfig, device="cpu", progress: Optional[Callable] = None,
             warped: Optional[torch.Tensor] = None, amp: bool = True) -> PersonModel:
    """Fine-tune copies of G and D on the T shots; returns the person model (deterministic given
    torch.manual_seed). The warp generator fits each shot, every step, from a fresh round-trip warp of
    the shot itself (round_trip_reference, with the model's spline regularisation), which needs the
    shots' landmarks; `warped` (T,3,R,R) instead fixes its references for all steps (benchmarks). The
    target landmarks also enable the mouth term. `progress(step, total, losses)` is called after each
    step. Without D only L_CNT (+ pixel, mouth) trains. Mixed precision only on CUDA (`amp`); fp32 on CPU."""
    steps = settings.steps
    device = torch.device(device)
    x = shots_x.to(device).float()
    y = shots_y.to(device).float()
    if x.dim() != 4 or x.shape != y.shape or x.shape[0] < 1:
        raise AnimateError(f"shots must be (T,3,R,R) images with matching landmark images, got "
                           f"{tuple(x.shape)} and {tuple(y.shape)}")
    lms = None if shot_landmarks is None else np.asarray(shot_landmarks, np.float32)
    if cfg.generator == "warp" and steps > 0 and warped is None and lms is None:
        raise AnimateError("the warp generator needs the shots' landmarks to fine-tune")
    if (cfg.paint_size or cfg.eye_paint_size) and steps > 0 and lms is None:
        raise AnimateError("the painters need the shots' landmarks to fine-tune")
    fixed_warp = None if cfg.generator != "warp" or warped is None else warped.to(device).float()

    e_hat, psi0, w0 = person_init(E, G, D, x, y)
    e_hat, psi0 = e_hat.to(device), psi0.to(device)
    g = copy.deepcopy(G).to(device).eval()
    model = PersonModel(cfg=cfg, generator=g, psi=psi0, e_hat=e_hat, shots=x, shots_y=y,
                        shot_landmarks=lms, steps=steps)
    if steps == 0:
        return model

    psi = nn.Parameter(psi0.clone())
    g.train()
    frozen = ("P.",) if settings.train_painter else ("P.", "painter.", "eye_painter.")  # P unused: ψ' replaces P·ê
    _set_grad([p for n, p in g.named_parameters() if n.startswith(frozen)], False)
    for painter in (getattr(g, "painter", None), getattr(g, "eye_painter", None)):
        if painter is not None and not settings.train_painter:
            painter.eval()  # nor may spectral norm's power iteration move its weights
    g_params = [p for n, p in g.named_parameters() if not n.startswith(frozen)] + [psi]
    opt_g = torch.optim.Adam(g_params, lr=settings.lr_g, betas=(0.0, 0.999))
    d = w = opt_d = None
    if D is not None:
        d = copy.deepcopy(D).to(device).train()
        w = nn.Parameter(w0.to(device))
        d_params = [p for n, p in d.named_parameters() if n != "W"] + [w]
        opt_d = torch.optim.Adam(d_params, lr=settings.lr_d, betas=(0.0, 0.999))
    use_amp = amp and device.type == "cuda"
    dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if use_amp else nullcontext
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and dtype == torch.float16)

    weights = LossWeights(mouth=settings.mouth_weight)
    lms_t = None if lms is None else torch.as_tensor(lms, device=device).reshape(-1, 68, 2)
    for step in range(steps):
        ref = None
        if cfg.generator == "warp":
            ref = fixed_warp if fixed_warp is not None else \
                round_trip_reference(x, lms, strength=settings.jitter, reg=cfg.warp_reg)
        # Generator step: L_CNT + L_ADV (-D(x̂) + 10·L_FM) [+ mouth]; D's weights frozen for this backward.
        with autocast():
            # each shot is fitted from a warp of itself: its landmarks are the target's and the reference's
            x_hat = g(y, psi=psi, warped=ref, landmarks=lms_t, ref_landmarks=lms_t)
        if d is not None:
            _set_grad(d_params, False)
            with autocast():
                scores, feats = d(torch.cat([x_hat, x]), torch.cat([y, y]), w=w)
            n = len(x)
            losses = generator_losses(scores[:n].float(), [f[:n] for f in feats], [f[n:] for f in feats],
                                      x_hat, x, weights=weights, content_size=settings.content_size,
                                      landmarks=lms_t)
            _set_grad(d_params, True)
        else:
            losses = reconstruction_losses(x_hat, x, weights=weights, content_size=settings.content_size,
                                           landmarks=lms_t)
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        scaler.step(opt_g)
        # Discriminator step: hinge loss on the shots vs the (detached) reconstructions.
        if d is not None:
            with autocast():
                scores, _ = d(torch.cat([x, x_hat.detach()]), torch.cat([y, y]), w=w)
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
