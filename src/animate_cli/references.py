"""Which reference pictures guide each generated frame, and moving them there.

For every target pose the warp generator sees the `n` shots nearest to it, each thin-plate-spline warped
into that pose, nearest first. "Nearest" is the distance of the landmarks with position and scale removed
(what the model-free `warp` animator uses), or, for a model that carries `selection` weights, a learned
score: which shot's warp will look most like the frame, predicted from how far its landmarks are from
the target's, region by region, in expression and in framing (train/selection.py fits it). Slot 0 alone is what the
model-free `warp` animator shows; the other slots let the generator take, pixel by pixel, what another
shot shows better (a mouth that is already open, an eye that is already closed, the side of the face
the nearest shot turns away). With fewer shots than slots the nearest shot fills the rest, so the
extra slots carry no information rather than a wrong one.
"""
from __future__ import annotations

import torch

from .errors import AnimateError
from .warp import DEFAULT_REG, LocalField, warp_image


def _normalised(points: torch.Tensor) -> torch.Tensor:
    """(..., 68, 2) -> the same with the centroid at 0 and unit RMS radius."""
    c = points - points.mean(dim=-2, keepdim=True)
    return c / (c.pow(2).sum(dim=(-2, -1), keepdim=True).div(points.shape[-2]).sqrt() + 1e-8)


def shape_distance(shot_landmarks, targets) -> torch.Tensor:
    """(K,68,2) or (B,K,68,2) shots, (B,68,2) targets -> (B,K) squared distances of the normalised shapes."""
    s = torch.as_tensor(shot_landmarks).float()
    t = torch.as_tensor(targets, device=s.device).float().reshape(-1, 68, 2)
    if s.dim() == 3:
        s = s.unsqueeze(0)
    return (_normalised(s) - _normalised(t).unsqueeze(1)).pow(2).sum(dim=(-2, -1))


# iBUG-68 regions, for the selection features
REGIONS = {"jaw": (0, 17), "brows": (17, 27), "nose": (27, 36), "eyes": (36, 48), "mouth": (48, 68)}
SELECTION_FEATURES = (("shape", "offset", "scale", "shift") + tuple(f"expression_{r}" for r in REGIONS)
                      + tuple(f"offset_{r}" for r in REGIONS))


def selection_features(shot_landmarks, targets) -> torch.Tensor:
    """(K,68,2) or (B,K,68,2) shots, (B,68,2) targets, crop px -> (B,K,F) distances, F = SELECTION_FEATURES:
    shape (as shape_distance), offset (mean point distance), scale (|log| of the size ratio), shift (of the
    centroids), then per region the distance after a similarity fit of the shot onto the target
    (expression) and without it (offset: framing and pose). Lengths are in the target's inter-ocular units."""
    s = torch.as_tensor(shot_landmarks).float()
    t = torch.as_tensor(targets, device=s.device).float().reshape(-1, 68, 2)
    if s.dim() == 3:
        s = s.unsqueeze(0)
    s = s.expand(t.shape[0], -1, -1, -1)
    t = t.unsqueeze(1)
    unit = (t[..., 36, :] - t[..., 45, :]).norm(dim=-1).clamp_min(1e-3)  # (B,1)
    a, b = s - s.mean(-2, keepdim=True), t - t.mean(-2, keepdim=True)
    rms = lambda c: c.pow(2).sum(dim=(-2, -1)).div(68).sqrt().clamp_min(1e-6)
    # similarity fit of a onto b in closed form (2-D Procrustes: one complex factor z = re + i·im)
    den = a.pow(2).sum(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    re = (a * b).sum(dim=(-2, -1), keepdim=True) / den
    im = (a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]).sum(-1, keepdim=True).unsqueeze(-1) / den
    fitted = torch.stack([a[..., 0] * re[..., 0] - a[..., 1] * im[..., 0],
                          a[..., 0] * im[..., 0] + a[..., 1] * re[..., 0]], -1)
    apart = (s - t).norm(dim=-1) / unit.unsqueeze(-1)  # (B,K,68)
    expr = (fitted - b).norm(dim=-1) / unit.unsqueeze(-1)
    feats = [shape_distance(s, t.squeeze(1)), apart.mean(-1), (rms(a) / rms(b)).log().abs(),
             (s.mean(-2) - t.mean(-2)).norm(dim=-1) / unit]
    feats += [expr[..., i:j].mean(-1) for i, j in REGIONS.values()]
    feats += [apart[..., i:j].mean(-1) for i, j in REGIONS.values()]
    return torch.stack(feats, -1)


def selection_cost(shot_landmarks, targets, weights=()) -> torch.Tensor:
    """(B,K): lower = a better reference. Without weights the normalised-shape distance (the `warp` model's
    rule); with them minus the predicted warp quality, log1p(10·features) · weights."""
    if not len(weights):
        return shape_distance(shot_landmarks, targets)
    if len(weights) != len(SELECTION_FEATURES):
        raise AnimateError(f"selection weights must number {len(SELECTION_FEATURES)}, got {len(weights)}")
    return learned_cost(selection_features(shot_landmarks, targets), weights)


def learned_cost(features: torch.Tensor, weights) -> torch.Tensor:
    """(..., F) selection features -> (...): minus the predicted warp quality, log1p(10·features) · weights."""
    return -(torch.log1p(10 * features) @ features.new_tensor([float(w) for w in weights]))


def reference_slots(shot_landmarks, targets, n_refs: int = 1, random_share: float = 0.0,
                    generator: torch.Generator | None = None, exclude: torch.Tensor | None = None,
                    selection=()) -> torch.Tensor:
    """(B, n_refs) shot indices, nearest first; slots beyond the number of usable shots repeat slot 0.

    `random_share`: per target, the chance that slot 0 is a random shot instead of the nearest (training:
    as with a single far portrait). `exclude` (B,) marks a shot a row may not use (fine-tuning: the
    target itself), unless it is the only one. `selection`: learned weights (selection_cost), else the
    nearest normalised shape.
    """
    d = selection_cost(shot_landmarks, targets, selection)
    b, k = d.shape
    if exclude is not None and k > 1:
        d = d.scatter(1, exclude.reshape(-1, 1).to(d.device).long(), float("inf"))
    order = d.argsort(dim=1)
    if random_share > 0:
        far = torch.rand(b, generator=generator) < random_share
        pick = torch.randint(0, k, (b,), generator=generator)
        if exclude is not None and k > 1:  # never the excluded shot: shift past it
            ex = exclude.reshape(-1).cpu().long()
            pick = torch.where(pick == ex, (pick + 1) % k, pick)
        first = torch.where(far.to(order.device), pick.to(order.device), order[:, 0])
        rest = order[order != first.unsqueeze(1)].reshape(b, k - 1)
        order = torch.cat([first.unsqueeze(1), rest], dim=1)
    usable = k - (1 if exclude is not None and k > 1 else 0)
    slots = order[:, :min(n_refs, usable)]
    if slots.shape[1] < n_refs:
        slots = torch.cat([slots, slots[:, :1].expand(b, n_refs - slots.shape[1])], dim=1)
    return slots


def warp_references(shots: torch.Tensor, shot_landmarks, targets, slots: torch.Tensor,
                    reg: float = DEFAULT_REG, field: LocalField | None = None) -> torch.Tensor:
    """Warp the chosen shots into the target poses: (B, 3·n_refs, R, R), slot after slot.

    shots (K,3,R,R) shared by all targets or (B,K,3,R,R) per row; landmarks alike, in pixels. `reg`: the
    spline's regularisation (warp.tps_grid). `field`: a local motion in the target frame composed
    with every warp (gaze.gaze_field: the irises).
    """
    lms = torch.as_tensor(shot_landmarks, device=shots.device).to(shots.dtype)
    dst = torch.as_tensor(targets, device=shots.device).to(shots.dtype).reshape(-1, 68, 2)
    slots = slots.to(shots.device)
    b, n = slots.shape
    out = []
    for m in range(n):
        idx = slots[:, m]
        if shots.dim() == 4:
            src_img, src_lm = shots[idx], lms[idx]
        else:
            ar = torch.arange(b, device=shots.device)
            src_img, src_lm = shots[ar, idx], lms[ar, idx]
        out.append(warp_image(src_img, src_lm, dst, reg=reg, field=field))
    return torch.cat(out, dim=1)


def references_for(shots: torch.Tensor, shot_landmarks, targets, n_refs: int = 1, reg: float = DEFAULT_REG,
                   field: LocalField | None = None, **kwargs) -> torch.Tensor:
    """The n best shots (reference_slots: the nearest shape, or `selection=` learned weights) warped into each
    target pose: (B, 3·n_refs, R, R); slot 0 without weights and at the default `reg` = what the `warp`
    model shows. `field`: see warp_references."""
    with torch.no_grad():
        slots = reference_slots(shot_landmarks, targets, n_refs, **kwargs)
        return warp_references(shots, shot_landmarks, targets, slots, reg=reg, field=field)
