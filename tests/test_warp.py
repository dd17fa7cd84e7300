"""Thin-plate spline warp: direction, exactness on affine motion, still borders, gradients, devices."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from animate_cli import warp
from animate_cli.warp import DEFAULT_REG, border_anchors, tps_flow, tps_grid, warp_image
from synthetic_faces import SKIN
from synthetic_faces import face as synthetic_face
from test_motion import face, open_mouth

H = W = 128


def smooth_image(b=1, c=3, h=H, w=W, seed=0):
    """Low-frequency content, so bilinear sampling differences stay small."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(b, c, 16, 16, generator=g), size=(h, w), mode="bicubic",
                         align_corners=False)


def landmarks(b=1):
    return torch.tensor(face(64, 64, 0.7)).expand(b, 68, 2).clone()


def similarity_px(deg=6.0, scale=1.05, shift=(3.0, -2.0)):
    """2x3 pixel affine about the image centre (cv2 convention)."""
    a = np.radians(deg)
    m = np.array([[scale * np.cos(a), -scale * np.sin(a), 0], [scale * np.sin(a), scale * np.cos(a), 0]])
    centre = np.array([(W - 1) / 2, (H - 1) / 2])
    m[:, 2] = centre - m[:, :2] @ centre + shift
    return m


def apply(m, pts):
    return pts @ torch.tensor(m[:, :2].T, dtype=pts.dtype) + torch.tensor(m[:, 2], dtype=pts.dtype)


def test_identical_landmarks_return_the_image():
    img = smooth_image()
    out = warp_image(img, landmarks(), landmarks(), reg=DEFAULT_REG)
    assert (out - img).abs().max() < 1e-5


def test_affine_motion_gives_exact_affine_grid_without_anchors():
    m = similarity_px()
    src = landmarks()
    grid = tps_grid(src, apply(m, src), (H, W), anchors=False, reg=DEFAULT_REG)
    # Backward map: output x reads input at M⁻¹x; in normalised coords (square image) the
    # pixel<->normalised map is the same on both axes, so theta = N·M⁻¹·N⁻¹.
    minv = cv2.invertAffineTransform(m)
    n = np.array([[2 / W, 0, 1 / W - 1], [0, 2 / H, 1 / H - 1], [0, 0, 1]])
    theta = (n @ np.vstack([minv, [0, 0, 1]]) @ np.linalg.inv(n))[:2]
    ref = F.affine_grid(torch.tensor(theta, dtype=torch.float32)[None], (1, 3, H, W), align_corners=False)
    assert (grid - ref).abs().max() < 1e-4


def test_affine_motion_matches_cv2_warp_affine():
    m = similarity_px()
    img = smooth_image()
    src = landmarks()
    ref = cv2.warpAffine(img[0].permute(1, 2, 0).numpy(), m, (W, H), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    out = warp_image(img, src, apply(m, src), anchors=False, reg=DEFAULT_REG)[0].permute(1, 2, 0).numpy()
    assert np.abs(out - ref).max() < 1e-4
    # With the border pinned the face region still follows the affine motion closely.
    out = warp_image(img, src, apply(m, src), reg=DEFAULT_REG)[0].permute(1, 2, 0).numpy()
    face_box = np.abs(out - ref)[40:90, 40:90]
    assert face_box.mean() < 0.01 and face_box.max() < 0.08
    assert np.abs(out - ref).max() > 0.1  # ... while the border did not follow


def test_direction_output_at_dst_shows_input_at_src():
    """A dot at a source landmark must end up at the destination landmark."""
    src = landmarks()
    dst = src + torch.tensor([9.0, 5.0])
    img = torch.zeros(1, 1, H, W)
    x, y = src[0, 30].round().long().tolist()
    img[0, 0, y - 1:y + 2, x - 1:x + 2] = 1.0
    out = warp_image(img, src, dst, reg=DEFAULT_REG)[0, 0]
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    centre = torch.stack([(out * xs).sum(), (out * ys).sum()]) / out.sum()
    assert (centre - torch.tensor([x + 9.0, y + 5.0])).norm() < 0.3
    flow = tps_flow(src, dst, (H, W), anchors=False, reg=DEFAULT_REG)
    assert torch.allclose(flow, torch.tensor([-9.0, -5.0]).expand_as(flow), atol=1e-3)


def test_border_stays_put():
    src = torch.tensor(face(64, 64, 0.5))[None]  # face well inside the frame
    dst = apply(similarity_px(5, 1.05, (6, -4)), torch.tensor(open_mouth(src[0].numpy(), 6))[None])
    flow = tps_flow(src, dst, (H, W), reg=DEFAULT_REG).norm(dim=-1)[0]
    edges = torch.cat([flow[0], flow[-1], flow[:, 0], flow[:, -1]])
    assert edges.max() < 0.5
    assert flow[60:70, 60:70].max() > 4  # the face itself did move
    anchors = border_anchors((H, W))
    assert ((anchors[:, 0] == 0) | (anchors[:, 0] == W - 1) | (anchors[:, 1] == 0)
            | (anchors[:, 1] == H - 1)).all()


def test_landmarks_land_on_targets_even_with_closed_lips():
    src = torch.tensor(open_mouth(face(64, 64, 0.7), 4))[None]
    dst = apply(similarity_px(4, 1.0, (2, 1)), torch.tensor(face(64, 64, 0.7))[None])
    dst[0, [61, 62, 63]] = dst[0, [67, 66, 65]]  # coincident points must not break the solve
    flow = tps_flow(src, dst, (H, W), step=1, reg=DEFAULT_REG)
    assert torch.isfinite(flow).all()
    at = F.grid_sample(flow.permute(0, 3, 1, 2), ((dst + 0.5) / (W / 2) - 1)[:, None],
                       align_corners=False)[0, :, 0].T
    err = (dst[0] + at - src[0]).norm(dim=-1)
    fit = [i for i in range(68) if i not in (61, 62, 63, 65, 66, 67)]
    assert err[fit].max() < 1.0
    assert flow.norm(dim=-1).max() < 10  # no blow-up around the doubled points


def test_coarse_grid_is_close_to_full_resolution():
    src = landmarks()
    dst = torch.tensor(open_mouth(src[0].numpy(), 5))[None] + torch.tensor([3.0, -2.0])
    fine = tps_grid(src, dst, (H, W), step=1, reg=DEFAULT_REG)
    err = (fine - tps_grid(src, dst, (H, W), reg=DEFAULT_REG)).abs() * W / 2  # px
    assert err.max() < 1.5 and err.flatten().quantile(0.99) < 0.3  # only right at steep lips
    assert ((fine - tps_grid(src, dst, (H, W), step=2, reg=DEFAULT_REG)).abs() * W / 2).max() < 0.6


def test_gradients_reach_image_and_landmarks():
    img = smooth_image().requires_grad_()
    src = landmarks().requires_grad_()
    dst = (landmarks() + torch.tensor([2.0, 1.0])).requires_grad_()
    weight = smooth_image(seed=1)
    (warp_image(img, src, dst, reg=DEFAULT_REG) * weight).sum().backward()
    for t in (img, src, dst):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_gradcheck_float64():
    """The landmark gradients are the true derivative (solve, kernel and sampling chained)."""
    img = torch.rand(1, 1, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    src = torch.tensor([[[3.2, 3.1], [6.3, 3.4], [4.6, 6.2]]], dtype=torch.float64, requires_grad=True)
    dst = (src.detach() + torch.tensor([0.37, -0.21], dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda s, d: warp_image(img, s, d, step=1, reg=DEFAULT_REG), (src, dst),
                                    fast_mode=True)


def test_batch_equals_singles():
    img = smooth_image(3)
    src = landmarks(3)
    dst = src + torch.randn(3, 68, 2, generator=torch.Generator().manual_seed(0))
    both = warp_image(img, src, dst, reg=DEFAULT_REG)
    singles = torch.cat([warp_image(img[i:i + 1], src[i:i + 1], dst[i:i + 1], reg=DEFAULT_REG) for i in range(3)])
    assert torch.allclose(both, singles, atol=1e-5)
    assert not torch.allclose(both[0], both[1], atol=1e-3)


def test_float64_and_non_contiguous_inputs():
    src = landmarks()
    dst = src + torch.tensor([4.0, -3.0])
    img = smooth_image()
    ref = warp_image(img, src, dst, reg=DEFAULT_REG)
    out64 = warp_image(img.double(), src.double(), dst.double(), reg=DEFAULT_REG)
    assert out64.dtype == torch.float64 and (out64 - ref.double()).abs().max() < 1e-4
    nc_img = img.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # same values, odd strides
    nc_src = src.transpose(1, 2).contiguous().transpose(1, 2)
    assert not nc_img.is_contiguous() and not nc_src.is_contiguous()
    assert torch.allclose(warp_image(nc_img, nc_src, dst, reg=DEFAULT_REG), ref, atol=1e-6)
    assert torch.allclose(warp_image(img, src.numpy(), dst.numpy(), reg=DEFAULT_REG), ref, atol=1e-6)


def test_one_image_many_landmark_sets_and_rectangular_frames():
    img = smooth_image(1, 3, 96, 160)
    src = torch.tensor(face(80, 48, 0.3))[None]
    dst = torch.stack([src[0], src[0] + torch.tensor([5.0, 0.0])])
    out = warp_image(img, src, dst, reg=DEFAULT_REG)
    assert out.shape == (2, 3, 96, 160)
    assert (out[0] - img[0]).abs().max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    img = smooth_image(2)
    src = landmarks(2)
    dst = src + torch.randn(2, 68, 2, generator=torch.Generator().manual_seed(1))
    ref = warp_image(img, src, dst, reg=DEFAULT_REG)
    out = warp_image(img.cuda(), src.cuda(), dst.cuda(), reg=DEFAULT_REG)
    assert out.device.type == "cuda"
    assert (out.cpu() - ref).abs().max() < 1e-3


def spline_fit_error(src, dst, reg, points) -> float:
    """The exact spline's worst miss (px) at `points`: how far from src[i] the pixel at dst[i] reads."""
    flow = tps_flow(src, dst, (H, W), step=1, reg=reg)
    at = F.grid_sample(flow.permute(0, 3, 1, 2), ((dst + 0.5) / (W / 2) - 1)[:, None],
                       align_corners=False)[0, :, 0].T
    return (dst[0] + at - src[0]).norm(dim=-1)[points].max().item()


def test_a_smooth_spline_still_closes_the_eyelids(monkeypatch):
    """A model's smoother spline (reg 0.05) fits eyelids as closely as the warp's own: lid motion is local
    between still eye corners, which the smoothing would average away (as it does without the rule). The
    spline alone here: a closing lid goes to the remap (test below), an opening one stays the spline's."""
    monkeypatch.setattr(warp, "LIDS_MIN_OPEN", 0.0)
    src = torch.tensor(face(64, 64, 0.9))[None]
    dst = src.clone()
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        dst[0, upper] += 0.7 * (dst[0, lower] - dst[0, upper])  # upper lids most of the way down
    lids = [37, 38, 40, 41, 43, 44, 46, 47]
    motion = (dst - src)[0, lids].norm(dim=-1).max().item()
    fit_error = lambda reg: spline_fit_error(src, dst, reg, lids)  # noqa: E731

    assert fit_error(0.05) < 0.15 * motion
    assert fit_error(0.05) == pytest.approx(fit_error(DEFAULT_REG), abs=0.1)
    monkeypatch.setattr(warp, "EYELIDS", ())
    assert fit_error(0.05) > 0.4 * motion  # the lids would move less than 60% of the way


def test_a_smooth_spline_follows_the_lips_as_the_warps_own(monkeypatch):
    """A model's smoother spline (reg 0.05) still puts the lips where the driver has them: the mouth's shape is
    local motion (a lower lip dropping under a still upper lip) that the smoothing would round off."""
    src = torch.tensor(face(64, 64, 0.7))[None]
    dst = torch.tensor(open_mouth(face(64, 64, 0.7), 6.0))[None]
    fit_error = lambda reg: spline_fit_error(src, dst, reg, list(range(48, 68)))  # noqa: E731

    assert fit_error(0.05) < 0.1 * 6.0
    monkeypatch.setattr(warp, "LIPS", ())
    assert fit_error(0.05) > 0.25 * 6.0  # the lower lip would drop a quarter less than the driver's


@pytest.mark.parametrize("reg", [DEFAULT_REG, 0.05])
def test_a_blink_leaves_the_skin_below_the_brow_still(monkeypatch, reg):
    """Lids closing between still eye corners leave the skin under the brow (and the brow) where it was: the
    spline alone dragged it along further than the lids themselves moved, which crumpled the brows on a blink
    and read as the upper face shaking."""
    src = torch.tensor(face(64, 64, 0.9))[None]
    dst = src.clone()
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        dst[0, upper] += 0.8 * (dst[0, lower] - dst[0, upper])
    motion = (dst - src)[0, [37, 38, 43, 44]].norm(dim=-1).max().item()

    def skin_motion():
        flow = tps_flow(src, dst, (H, W), step=1, reg=reg)
        moved = []
        for a, b in warp.EYE_CORNERS:
            centre, width = (src[0, a] + src[0, b]) / 2, (src[0, b] - src[0, a]).norm()
            x, y = (centre + torch.tensor([0.0, -0.6]) * width).round().long().tolist()  # between lid and brow
            moved.append(flow[0, y, x].norm().item())
        return max(moved)

    assert skin_motion() < 0.25 * motion
    monkeypatch.setattr(warp, "LIDS_MIN_OPEN", 0.0)  # the spline alone
    assert skin_motion() > 0.5 * motion


def _shut_eyes(size: int, closing: float):
    """A drawn face (wide-open eyes) and its landmarks with each upper lid `closing` of the way down to the
    lower one, which rises a little to meet it."""
    image, lm = synthetic_face(size, eye_gap=0.3)
    src = torch.tensor(lm)[None]
    dst = src.clone()
    for up, lo in (pair for eye in warp.LID_PAIRS for pair in eye):
        dst[0, up] += 0.8 * closing * (src[0, lo] - src[0, up])
        dst[0, lo] += 0.2 * closing * (src[0, up] - src[0, lo])
    return torch.tensor(image).permute(2, 0, 1)[None].float() / 255, src, dst


def _eye_colours(out: torch.Tensor, src: torch.Tensor) -> float:
    """Share of the eyes' boxes (corner to corner, half an eye width high) that is eye white or iris."""
    image = (out[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    shares = []
    for a, b in warp.EYE_CORNERS:
        (x0, y0), (x1, _) = src[0, a].tolist(), src[0, b].tolist()
        box = image[int(y0 - (x1 - x0) / 4):int(y0 + (x1 - x0) / 4), int(x0):int(x1)].astype(int)
        skin = np.abs(box - np.array(SKIN)).sum(-1) < 60
        shares.append(1 - skin.mean())
    return max(shares)


def test_a_shut_eye_shows_its_lids_not_the_eye(monkeypatch):
    """Lids driven shut close over the eye: the spline alone cannot (its upper and lower lid points meet
    while reading from lids apart), and the closed line showed the eye's white and iris."""
    image, src, dst = _shut_eyes(256, 1.0)
    open_share = _eye_colours(image, src)
    shut = _eye_colours(warp_image(image, src, dst, reg=DEFAULT_REG), src)
    assert open_share > 0.4 and shut < 0.1 * open_share
    monkeypatch.setattr(warp, "LIDS_MIN_OPEN", 0.0)  # the spline alone
    assert _eye_colours(warp_image(image, src, dst, reg=DEFAULT_REG), src) > 0.3 * open_share


def test_the_lid_remap_only_acts_on_lids_closed_past_the_splines_share():
    image, src, dst = _shut_eyes(128, 0.05)
    assert torch.equal(warp.open_lids(src, dst), dst)
    assert warp.lid_field(dst, dst, (128, 128)) == []
    _, _, shut = _shut_eyes(128, 0.9)
    opened = warp.open_lids(src, shut)
    gap = lambda lm: (lm[0, 41, 1] - lm[0, 37, 1]).item()  # noqa: E731
    assert gap(opened) == pytest.approx(warp.LIDS_MIN_OPEN * gap(src), rel=1e-3) and gap(shut) < gap(opened)
    # the lids move smoothly into the remap: a step of closing across the spline's share (at 0.1 here) changes
    # the image no more than the same step elsewhere
    def change(c0, c1):
        a, b = (warp_image(image, src, _shut_eyes(128, c)[2], reg=DEFAULT_REG) for c in (c0, c1))
        return (a - b).abs().mean().item()
    assert change(0.09, 0.11) < 2 * change(0.50, 0.52)


def test_a_blink_holds_the_lid_that_did_not_move():
    """The spline's lids are widened back on the side that closed: the upper lid falling leaves the lower lid
    (and the cheek under it) where the driver has it. Widened about the midpoint, the lower lid's spline point
    went down by half the missing gap and the skin under the eye bobbed on every blink."""
    _, src, _ = _shut_eyes(128, 1.0)
    lower = [40, 41, 46, 47]
    upper = [37, 38, 43, 44]
    dst = src.clone()
    dst[0, upper, 1] = dst[0, lower, 1] - 0.05 * (src[0, lower, 1] - src[0, upper, 1])  # the upper lids fall
    opened = warp.open_lids(src, dst)
    assert torch.allclose(opened[0, lower], dst[0, lower], atol=1e-4)
    gap = opened[0, lower, 1] - opened[0, upper, 1]
    assert torch.allclose(gap, warp.LIDS_MIN_OPEN * (src[0, lower, 1] - src[0, upper, 1]), rtol=1e-3)
    rise = src.clone()  # a squint the other way: the lower lids rise, the upper ones stay
    rise[0, lower, 1] = src[0, upper, 1] + 0.05 * (src[0, lower, 1] - src[0, upper, 1])
    assert torch.allclose(warp.open_lids(src, rise)[0, upper], src[0, upper], atol=1e-4)
