"""Losses on hand-made values: hinge, adversarial, feature matching, embedding match, the combined dict."""
import pytest
import torch

from animate_cli.losses import (LossWeights, d_hinge_loss, feature_matching, g_adv_loss, generator_losses,
                                match_loss)
from animate_cli.models.perceptual import stlpips_weights_path


def test_hinge_loss_on_hand_made_scores():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - r) = 0, 0.5, 2   -> mean 2.5/3
    fake = torch.tensor([-3.0, 0.0])  # relu(1 + f) = 0, 1          -> mean 0.5
    assert d_hinge_loss(real, fake).item() == pytest.approx(2.5 / 3 + 0.5)
    # confident and right on both sides: no loss (the hinge saturates)
    assert d_hinge_loss(torch.tensor([1.5, 3.0]), torch.tensor([-1.0, -7.0])).item() == 0.0


def test_generator_adversarial_term_is_minus_mean_score():
    assert g_adv_loss(torch.tensor([1.0, -3.0])).item() == pytest.approx(1.0)


def test_feature_matching_zero_for_same_and_only_moves_the_fake_side():
    real = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 8, 4, 4, requires_grad=True)]
    assert feature_matching([r.detach().clone() for r in real], real).item() == 0.0
    fake = [r.detach() + 0.5 for r in real]
    fake = [f.requires_grad_() for f in fake]
    loss = feature_matching(fake, real)
    assert loss.item() == pytest.approx(1.0)  # 0.5 mean L1 in each of the two blocks
    loss.backward()
    assert fake[0].grad is not None and real[0].grad is None


def test_match_loss_is_mean_l1():
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    e = torch.tensor([[1.0, 0.0, 3.0, 8.0]])
    assert match_loss(w, e).item() == pytest.approx((0 + 2 + 0 + 4) / 4)


@pytest.mark.skipif(stlpips_weights_path() is None, reason="stlpips weights not installed")
def test_generator_losses_dict_and_total():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_hat = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1).requires_grad_()
    score = torch.tensor([0.5, -0.5])
    real = [torch.randn(2, 4, 8, 8)]
    fake = [real[0] + 0.1]
    w = LossWeights(content=1.0, adv=1.0, fm=10.0, mch=10.0, pixel=0.5)
    out = generator_losses(score, fake, real, x_hat, x, e_hat=torch.zeros(2, 4), w_i=torch.ones(2, 4),
                           weights=w)
    assert set(out) == {"cnt", "adv", "fm", "mch", "pix", "total"}
    assert out["fm"].item() == pytest.approx(0.1, rel=1e-4)
    assert out["mch"].item() == pytest.approx(1.0)
    assert out["adv"].item() == pytest.approx(0.0)
    expected = out["cnt"] + out["adv"] + 10 * out["fm"] + 10 * out["mch"] + 0.5 * out["pix"]
    assert out["total"].item() == pytest.approx(expected.item(), rel=1e-5)
    out["total"].backward()
    assert x_hat.grad.abs().sum() > 0
    # fine-tuning: no e_hat/w_i -> no L_MCH; pixel weight 0 -> no pixel term
    out = generator_losses(score, fake, real, x_hat, x, weights=LossWeights(pixel=0.0))
    assert set(out) == {"cnt", "adv", "fm", "total"}


def _lips(size=64, cx=32.0, cy=44.0, w=10.0, h=4.0):
    """68 points with the mouth (48-67) on an ellipse at (cx, cy), the rest far away at the top."""
    pts = torch.zeros(68, 2)
    pts[:48] = torch.tensor([size / 2, 4.0])
    a = torch.linspace(0, 2 * 3.14159, 21)[:20]
    pts[48:] = torch.stack([cx + w * torch.cos(a), cy + h * torch.sin(a)], 1)
    return pts[None]


def test_mouth_crop_zooms_on_the_lips():
    from animate_cli.losses import mouth_crop

    img = -torch.ones(1, 3, 64, 64)
    img[:, :, 40:49, 22:43] = 1.0  # a white mouth box around (32, 44)
    crop = mouth_crop(img, _lips())
    assert crop.shape == (1, 3, 64, 64)
    assert crop[:, :, 24:40, 16:48].mean() > 0.9  # the middle of the crop is the mouth
    assert crop.mean() > img.mean() + 0.2  # far more mouth than in the whole frame
    moved = mouth_crop(torch.roll(img, shifts=(-20, 5), dims=(2, 3)), _lips(cx=37.0, cy=24.0))
    assert torch.allclose(moved, crop, atol=1e-5)  # the box follows the landmarks


@pytest.mark.skipif(stlpips_weights_path() is None, reason="stlpips weights not installed")
def test_mouth_term_sees_only_the_mouth_and_appears_with_landmarks():
    from animate_cli.losses import mouth_loss

    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    lips = _lips()
    other = x.clone()
    other[:, :, :16] = -x[:, :, :16]  # change the forehead only
    assert mouth_loss(other, x, lips).item() == pytest.approx(0.0, abs=1e-6)
    teeth = x.clone()
    teeth[:, :, 42:47, 26:38] = 1.0  # paint the mouth
    assert mouth_loss(teeth, x, lips).item() > 0.01
    score, feats = torch.zeros(1), [torch.zeros(1, 2, 4, 4)]
    with_lm = generator_losses(score, feats, feats, teeth, x, landmarks=lips)
    without = generator_losses(score, feats, feats, teeth, x)
    assert "mouth" in with_lm and "mouth" not in without
    assert with_lm["total"].item() == pytest.approx(without["total"].item() + with_lm["mouth"].item(), rel=1e-5)
    off = generator_losses(score, feats, feats, teeth, x, landmarks=lips, weights=LossWeights(mouth=0.0))
    assert "mouth" not in off



def test_mouth_colour_term_sees_hue_not_fine_texture(monkeypatch):
    """A colour cast on the mouth costs its full size; a fine pattern whose 4x4 blocks keep their mean costs
    nothing (the perceptual term judges texture; this one the colour it leaves free)."""
    import animate_cli.losses as losses

    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64) * 0.2
    lips = _lips()
    green = x.clone()
    green[:, 1] += 0.3  # a green cast everywhere
    assert losses.mouth_colour_loss(green, x, lips).item() == pytest.approx(0.1, rel=0.05)  # 0.3 in 1 of 3
    checker = 1 - 2 * ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).float()
    monkeypatch.setattr(losses, "mouth_crop", lambda img, lm: img)  # compare the images as crops
    patterned = x + 0.3 * checker
    assert losses.mouth_colour_loss(patterned, x, lips).item() < 1e-6
    assert torch.nn.functional.l1_loss(patterned, x).item() > 0.25


@pytest.mark.skipif(stlpips_weights_path() is None, reason="stlpips weights not installed")
def test_lpips_weight_adds_the_metric_on_the_crop_and_its_gradient():
    """--lpips-weight: the painted part's term gains exactly w × LPIPS of the crops (the evaluation's distance),
    and the gradient reaches the output; 0 leaves the term as it was."""
    from animate_cli.losses import eye_loss, mouth_crop, mouth_loss
    from animate_cli.models.perceptual import lpips, lpips_loss

    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    lips = _lips().expand(2, -1, -1)
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    plain, weighted = mouth_loss(blurred, x, lips), mouth_loss(blurred, x, lips, lpips_weight=2.0)
    lp = lpips(mouth_crop(blurred, lips), mouth_crop(x, lips)).mean()
    assert lp > 0.05 and weighted.item() == pytest.approx(plain.item() + 2.0 * lp.item(), rel=1e-4)
    assert mouth_loss(blurred, x, lips, lpips_weight=0.0).item() == plain.item()
    out = blurred.clone().requires_grad_(True)
    lpips_loss(out, x).backward()
    assert out.grad.abs().sum() > 0  # differentiable, unlike the metric's no_grad call
    face = _lips().expand(2, -1, -1).clone()  # any 68 points will do for the eyes' crops: shift the lips up
    face[:, 36:48] = face[:, 48:60] - torch.tensor([0.0, 20.0])
    assert eye_loss(blurred, x, face, lpips_weight=1.0) > eye_loss(blurred, x, face)
