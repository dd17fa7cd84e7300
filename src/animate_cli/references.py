"""Which reference picture guides each generated frame, and moving it there.

For every target pose the warp generator sees one shot, thin-plate-spline warped into that pose: the
nearest one. "Nearest" is the distance of the landmarks with position and scale removed (what the
model-free `warp` animator uses), or, for a model that carries `selection` weights, a learned score:
which shot's warp will look most like the frame, predicted from how far its landmarks are from the
target's, region by region, in expression and in framing (train/selection.py fits it). The selection
weights and the spline's regularisation are the caller's (ModelConfig, or the `warp` animator's).

With several shots a model may also take each frame's mouth from another shot than the face's
(`mouth_shots`): the one that shows most of its opening, then shaped most like the target's. A whole-face
choice trades the mouth against pose and framing, and a warp cannot open a closed mouth: with a shot that
shows the opening, the frame gets the person's own teeth instead of stretched lips or a painted guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from .errors import AnimateError
from .models.painter import mouth_stretch, polygon_mask
from .warp import LocalField, displace_grid, resample, tps_grid, warp_image

# In a video, a frame keeps the previous frame's shot while that costs at most this much more than the best
# (about the median gap between the best and the next shot on val at K=8): shots that fit about equally would
# otherwise alternate from frame to frame, and the face or the teeth flicker between two pictures
FACE_HOLD = 0.01  # selection_cost units (minus the predicted SSIM of the warp, with learned weights)
MOUTH_HOLD = 0.01  # choose_mouth_shots' units (stretch + lip-shape distance)
MOUTH_INSET_MARGIN = 0.2  # the mouth shot covers the outer lip line and this × the mouth width around it ...
MOUTH_INSET_FEATHER = 0.08  # ... then fades out over a Gaussian of this × the mouth width (σ)


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


def selection_cost(shot_landmarks, targets, weights) -> torch.Tensor:
    """(B,K): lower = a better reference. Without weights (`()`) the normalised-shape distance (the `warp`
    model's rule); with them minus the predicted warp quality, log1p(10·features) · weights."""
    if not len(weights):
        return shape_distance(shot_landmarks, targets)
    if len(weights) != len(SELECTION_FEATURES):
        raise AnimateError(f"selection weights must number {len(SELECTION_FEATURES)}, got {len(weights)}")
    return learned_cost(selection_features(shot_landmarks, targets), weights)


def learned_cost(features: torch.Tensor, weights) -> torch.Tensor:
    """(..., F) selection features -> (...): minus the predicted warp quality, log1p(10·features) · weights."""
    return -(torch.log1p(10 * features) @ features.new_tensor([float(w) for w in weights]))


def choose_shots(shot_landmarks, targets, selection, *, random_share: float = 0.0,
                 generator: torch.Generator | None = None, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) index of the shot each target warps: the best by selection_cost (`selection`: learned weights,
    or `()` for the nearest normalised shape).

    `random_share`: per target, the chance of a random shot instead (training: as with a single far
    portrait); draws come from `generator`, else torch's global RNG. `exclude` (B,) marks a shot a row may
    not use (e.g. the target itself), unless it is the only one.
    """
    d = selection_cost(shot_landmarks, targets, selection)
    b, k = d.shape
    if exclude is not None and k > 1:
        d = d.scatter(1, exclude.reshape(-1, 1).to(d.device).long(), float("inf"))
    best = d.argmin(dim=1)
    if random_share > 0:
        far = torch.rand(b, generator=generator) < random_share
        pick = torch.randint(0, k, (b,), generator=generator)
        if exclude is not None and k > 1:  # never the excluded shot: shift past it
            ex = exclude.reshape(-1).cpu().long()
            pick = torch.where(pick == ex, (pick + 1) % k, pick)
        best = torch.where(far.to(best.device), pick.to(best.device), best)
    return best


@dataclass
class HeldChoice:
    """The shots of a video's last frame so far, for choosing the next frames' with hysteresis
    (reference_motion's `held`; None: no frame yet)."""

    face: int | None = None
    mouth: int | None = None


def held_argmin(cost: torch.Tensor, previous: int | None, margin: float) -> torch.Tensor:
    """(B,K) costs of consecutive frames -> (B,) choices: each frame's cheapest shot, unless the frame before's
    costs at most `margin` more; then that one stays."""
    best = cost.argmin(dim=1)
    if margin <= 0:
        return best
    out = best.clone()
    for b in range(len(cost)):
        if previous is not None and cost[b, previous] <= cost[b, best[b]] + margin:
            out[b] = previous
        previous = int(out[b])
    return out


def _chosen(shots: torch.Tensor, shot_landmarks, targets, chosen: torch.Tensor):
    """The chosen shots' pictures (B,3,R,R) and landmarks (B,68,2), and the targets (B,68,2), on the shots'
    device and dtype."""
    lms = torch.as_tensor(shot_landmarks, device=shots.device).to(shots.dtype)
    dst = torch.as_tensor(targets, device=shots.device).to(shots.dtype).reshape(-1, 68, 2)
    idx = chosen.reshape(-1).to(shots.device)
    if shots.dim() == 4:
        return shots[idx], lms[idx], dst
    rows = torch.arange(len(idx), device=shots.device)
    return shots[rows, idx], lms[rows, idx], dst


def warp_references(shots: torch.Tensor, shot_landmarks, targets, chosen: torch.Tensor, *,
                    reg: float, field: LocalField | None = None) -> torch.Tensor:
    """The chosen shots (B,) warped into the target poses: (B,3,R,R).

    shots (K,3,R,R) shared by all targets or (B,K,3,R,R) per row; landmarks alike, in pixels. `reg`: the
    spline's regularisation (warp.tps_grid). `field`: a local motion in the target frame composed
    with every warp (gaze.gaze_field: the irises).
    """
    src_img, src_lm, dst = _chosen(shots, shot_landmarks, targets, chosen)
    return warp_image(src_img, src_lm, dst, reg=reg, field=field)


MOUTH_FEATURE = SELECTION_FEATURES.index("expression_mouth")


def choose_mouth_shots(shot_landmarks, targets) -> torch.Tensor:
    """(B,) index of the shot each target takes its mouth from: the one that fills most of the target's opening
    (the least models.painter.mouth_stretch: what is stretched is smeared), then the one whose lips are shaped
    most like the target's (their distance after a similarity fit of the whole face, selection_features'
    expression_mouth, in inter-ocular units: a few hundredths, so the opening decides unless shots open
    alike). A half-open mouth stretched wide still beats a closed one: val, docs/experiments.md."""
    return mouth_shot_cost(shot_landmarks, targets).argmin(dim=1)


def mouth_shot_cost(shot_landmarks, targets) -> torch.Tensor:
    """(B,K) what choose_mouth_shots minimises: mouth_stretch + the lips' shape distance."""
    s = torch.as_tensor(shot_landmarks).float()
    t = torch.as_tensor(targets, device=s.device).float().reshape(-1, 68, 2)
    shape = selection_features(s, t)[..., MOUTH_FEATURE]  # (B,K)
    stretch = torch.stack([mouth_stretch(t, shot.expand_as(t)) for shot in s], dim=1)
    return stretch + shape


def mouth_inset_mask(targets: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B,68,2) px -> (B,1,R,R) in [0,1]: where a frame's mouth comes from its mouth shot: 1 over the lips and a
    margin around them (MOUTH_INSET_MARGIN), fading out on the skin (MOUTH_INSET_FEATHER) so that no seam shows."""
    masks = (polygon_mask(targets[:, 48:60], resolution) > 0.5).to(targets.dtype)
    widths = (targets[:, 54] - targets[:, 48]).norm(dim=-1).clamp_min(1.0)
    out = []
    for m, w in zip(masks, widths):
        grow = max(1, int(round(float(MOUTH_INSET_MARGIN * w))))
        grown = F.max_pool2d(m[None], (1, 2 * grow + 1), stride=1, padding=(0, grow))  # a square dilation,
        grown = F.max_pool2d(grown, (2 * grow + 1, 1), stride=1, padding=(grow, 0))  # one axis at a time
        out.append(_blurred(grown, float(MOUTH_INSET_FEATHER * w)))
    return torch.cat(out).clamp(0, 1)


def _blurred(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """(1,C,H,W) Gaussian-blurred (separable, edges replicated)."""
    half = max(1, int(3 * sigma))
    u = torch.arange(-half, half + 1, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (u / max(sigma, 1e-3)) ** 2)
    kernel = (kernel / kernel.sum()).repeat(image.shape[1], 1).unsqueeze(1)  # (C,1,n): one per channel
    c = image.shape[1]
    image = F.conv2d(F.pad(image, (half, half, 0, 0), mode="replicate"), kernel.unsqueeze(2), groups=c)
    return F.conv2d(F.pad(image, (0, 0, half, half), mode="replicate"), kernel.unsqueeze(3), groups=c)


@dataclass
class MouthInset:
    """The frames whose mouth comes from another shot than their face (choose_mouth_shots)."""

    rows: torch.Tensor  # (N,) which frames of the batch
    chosen: torch.Tensor  # (N,) their mouth shots
    warped: torch.Tensor  # (N,3,R,R) those shots warped into the frames' poses, colours matched to the face's
    mask: torch.Tensor  # (N,1,R,R) where the mouth shot shows (mouth_inset_mask)


@dataclass
class ReferenceMotion:
    """The reference each target pose gets, and the motion that takes it there."""

    chosen: torch.Tensor  # (B,) index of the shot
    grid: torch.Tensor  # (B,R,R,2) where each pixel reads in that shot's crop (grid_sample, align_corners=False)
    pictures: torch.Tensor  # (B,3,R,R) the chosen shots
    mouth: MouthInset | None = None  # frames whose mouth another shot gives (reference_motion's mouth_shots)

    @cached_property
    def warped(self) -> torch.Tensor:
        """(B,3,R,R) the shots resampled through the grids (computed when first asked: the compositor needs
        only the grids)."""
        with torch.no_grad():
            return resample(self.pictures, self.grid)

    @property
    def mouth_chosen(self) -> torch.Tensor:
        """(B,) the shot whose mouth each frame's reference shows: the face's, or its mouth inset's."""
        if self.mouth is None:
            return self.chosen
        out = self.chosen.clone()
        out[self.mouth.rows] = self.mouth.chosen
        return out

    @cached_property
    def reference(self) -> torch.Tensor:
        """(B,3,R,R) what the generator is given: `warped`, with each mouth inset blended in. The compositor
        moves the face shot's full-resolution picture by `grid`; the inset reaches it as part of the
        generator's correction (its output minus `warped`)."""
        if self.mouth is None:
            return self.warped
        out = self.warped.clone()
        m = self.mouth.mask.to(out.dtype)
        out[self.mouth.rows] = out[self.mouth.rows] * (1 - m) + self.mouth.warped.to(out.dtype) * m
        return out


def reference_motion(shots: torch.Tensor, shot_landmarks, targets, *, selection, reg: float,
                     field: LocalField | None = None, mouth_shots: bool = False,
                     held: HeldChoice | None = None) -> ReferenceMotion:
    """The best shot (choose_shots) warped into each target pose, with its grid: the same motion can then be
    applied to the shot's full-resolution picture (composite.py). shots (K,3,R,R); with `selection=()` and
    `reg=warp.DEFAULT_REG` `warped` is what the `warp` model shows. `mouth_shots`: a frame whose mouth
    choose_mouth_shots gives to another shot than its face gets it from that one (ReferenceMotion.mouth).
    `held`: the targets are a video's next frames, in order: shots are kept with hysteresis (FACE_HOLD,
    MOUTH_HOLD) from `held`, which is updated to the last frame's."""
    video = held is not None
    held = held if video else HeldChoice()  # outside a video each frame takes its best shots, nothing is kept
    with torch.no_grad():
        hold = FACE_HOLD if video and len(selection) else 0.0  # (learned costs' units; the warp model's rule as it was)
        chosen = held_argmin(selection_cost(shot_landmarks, targets, selection), held.face, hold)
        held.face = int(chosen[-1])
        src_img, src_lm, dst = _chosen(shots, shot_landmarks, targets, chosen)
        grid = tps_grid(src_lm, dst, src_img.shape[-2:], reg=reg)  # as warp_image computes it
        if field is not None:  # a local motion in the target frame (gaze.gaze_field: the irises)
            grid = displace_grid(grid, field)
        motion = ReferenceMotion(chosen, grid, src_img)
        if mouth_shots and shots.dim() == 4 and len(shots) > 1:
            mouth = held_argmin(mouth_shot_cost(shot_landmarks, dst), held.mouth, MOUTH_HOLD if video else 0.0)
            held.mouth = int(mouth[-1])
            motion.mouth = _mouth_inset(motion, mouth, shots, shot_landmarks, dst, reg=reg)
        return motion


def _mouth_inset(motion: ReferenceMotion, mouth: torch.Tensor, shots: torch.Tensor, shot_landmarks,
                 targets: torch.Tensor, *, reg: float) -> MouthInset | None:
    """The mouth shots (B,) of the frames whose face shot is another one, warped to them (no field: the irises
    are outside the inset), their colours shifted so that the inset's feathered edge matches the face's."""
    mouth = mouth.to(motion.chosen.device)
    rows = (mouth != motion.chosen).nonzero().reshape(-1)
    if not len(rows):
        return None
    src_img, src_lm, dst = _chosen(shots, shot_landmarks, targets[rows], mouth[rows])
    warped = warp_image(src_img, src_lm, dst, reg=reg)
    mask = mouth_inset_mask(dst.float(), shots.shape[-1]).to(warped.dtype)
    edge = 4 * mask * (1 - mask)  # the feathered band, where the two shots meet
    face = motion.warped[rows]
    shift = ((face - warped) * edge).sum(dim=(2, 3), keepdim=True) / edge.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return MouthInset(rows, mouth[rows], warped + shift, mask)


def references_for(shots: torch.Tensor, shot_landmarks, targets, *, selection, reg: float,
                   field: LocalField | None = None) -> torch.Tensor:
    """The best shot (choose_shots) warped into each target pose: (B,3,R,R); with `selection=()` and
    `reg=warp.DEFAULT_REG` what the `warp` model shows."""
    return reference_motion(shots, shot_landmarks, targets, selection=selection, reg=reg, field=field).warped
