"""The perceptual trunk rebuilt from stlpips' weight file, the content loss and the LPIPS metric."""
import pytest
import torch

from animate_cli.errors import AnimateError
from animate_cli.models import perceptual
from animate_cli.models.perceptual import (CHANNELS, LPIPS, PaperVGG, PerceptualNet, content_loss, lpips,
                                           stlpips_weights_path)

needs_weights = pytest.mark.skipif(stlpips_weights_path() is None,
                                   reason="stlpips-pytorch weights not installed")


def _smooth_image(seed, size=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size // 8, size // 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


@needs_weights
def test_trunk_loads_real_weights_and_has_vgg16_channels():
    net = PerceptualNet()
    state = torch.load(stlpips_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(getattr(net.slices[2], "12").weight, state["net.slice3.12.weight"])
    assert torch.equal(getattr(net.slices[1], "5").filt, state["net.slice2.5.filt"])  # the blur we rebuild = the file's
    feats = net(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == list(CHANNELS)
    assert [f.shape[-1] for f in feats] == [64, 33, 17, 9, 5]  # max-pool(2,s1) + blur-pool(s2, pad 2)
    assert all((f >= 0).all() for f in feats)  # ReLU outputs
    assert not any(p.requires_grad for p in net.parameters()) and not net.training


@needs_weights
def test_content_loss_zero_for_same_positive_otherwise_and_differentiable():
    a, b = _smooth_image(0), _smooth_image(1)
    assert content_loss(a, a).item() == pytest.approx(0.0, abs=1e-7)
    x_hat = b.clone().requires_grad_()
    loss = content_loss(x_hat, a)
    assert loss.item() > 0
    loss.backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0
    # reduced resolution still measures the difference, and is computed on the smaller image
    big_a = torch.nn.functional.interpolate(a, size=(128, 128), mode="bilinear")
    big_b = torch.nn.functional.interpolate(b, size=(128, 128), mode="bilinear")
    assert content_loss(big_b, big_a, input_size=64).item() > 0
    assert content_loss(big_b, big_a, input_size=64).item() != pytest.approx(content_loss(big_b, big_a).item())


@needs_weights
def test_lpips_zero_symmetric_and_grows_with_noise():
    a, b = _smooth_image(0).repeat(2, 1, 1, 1), _smooth_image(1).repeat(2, 1, 1, 1)
    assert lpips(a, a).shape == (2,)
    assert torch.allclose(lpips(a, a), torch.zeros(2), atol=1e-6)
    assert torch.allclose(lpips(a, b), lpips(b, a), atol=1e-6)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(a.shape, generator=g)
    small, large = lpips(a, (a + 0.05 * noise).clamp(-1, 1)), lpips(a, (a + 0.4 * noise).clamp(-1, 1))
    assert (small > 0).all() and (large > small).all()
    assert (lpips(a, b) > small).all()  # another image is further away than a little noise


def test_missing_weights_file_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(perceptual, "stlpips_weights_path", lambda: None)
    with pytest.raises(AnimateError, match="pip install --no-deps stlpips-pytorch"):
        PerceptualNet()
    with pytest.raises(AnimateError, match="stlpips-pytorch"):
        LPIPS()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(AnimateError, match="cannot read"):
        PerceptualNet(weights=bad)


def test_paper_vgg19_from_a_state_dict_file(tmp_path):
    """The optional real-VGG19 path: any key names, conv weights taken in file order, paper taps."""
    torch.manual_seed(0)
    shapes, cin = [], 3
    for v in perceptual._VGG19_CFG:
        if v != "M":
            shapes.append((v, cin))
            cin = v
    state = {}
    for i, (o, c) in enumerate(shapes):
        state[f"features.{i}.weight"] = torch.randn(o, c, 3, 3) * 0.05
        state[f"features.{i}.bias"] = torch.zeros(o)
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    net = PaperVGG(path, "vgg19")
    feats = net(torch.zeros(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert torch.equal(net.features[0].weight, state["features.0.weight"])
    a, b = _smooth_image(0, 32), _smooth_image(1, 32)
    only = content_loss(b, a, vgg19=path)
    assert only.item() > 0
    with pytest.raises(AnimateError):
        PaperVGG(tmp_path / "missing.pth", "vgg19")
