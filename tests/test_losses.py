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
