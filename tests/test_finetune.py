"""Few-shot fine-tuning (paper §3.3) on the tiny preset, CPU."""
import copy

import numpy as np
import pytest
import torch

from animate_cli.config import FinetuneConfig, preset
from animate_cli.errors import AnimateError
from animate_cli.finetune import PersonModel, finetune, person_init, round_trip_reference
from animate_cli.references import choose_shots, warp_references
from animate_cli.models.discriminator import Discriminator
from animate_cli.models.embedder import Embedder
from animate_cli.models.generator import build_generator
from animate_cli.models.perceptual import content_loss, stlpips_weights_path

pytestmark = pytest.mark.skipif(stlpips_weights_path() is None, reason="stlpips weights not installed")


def steps(n: int) -> FinetuneConfig:
    return FinetuneConfig(steps=n)


def _other_shot_warped(cfg, x, lms):
    """Each shot's nearest *other* shot warped into its pose (a real second view, as with several shots)."""
    chosen = choose_shots(lms, lms, cfg.selection, exclude=torch.arange(len(lms)))
    with torch.no_grad():
        return warp_references(x, lms, lms, chosen, reg=cfg.warp_reg)


def _nets(generator="warp"):
    torch.manual_seed(0)
    cfg = preset("tiny", generator=generator)
    return cfg, Embedder(cfg), build_generator(cfg), Discriminator(cfg, n_videos=3)


def _shots(cfg, t=1, seed=1):
    """Smooth synthetic faces-ish images, a landmark-like image and landmarks inside the crop."""
    g = torch.Generator().manual_seed(seed)
    r = cfg.resolution
    x = torch.rand(t, 3, r // 8, r // 8, generator=g) * 2 - 1
    x = torch.nn.functional.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
    y = -torch.ones(t, 3, r, r)
    y[:, :, r // 4:3 * r // 4, r // 2] = 1.0
    lms = (np.random.default_rng(seed).random((t, 68, 2)) * r * 0.5 + r * 0.25).astype(np.float32)
    return x, y, lms


def test_feed_forward_starts_at_paper_initialisation():
    cfg, E, G, D = _nets()
    x, y, lms = _shots(cfg, t=2)
    E.train(), G.train()
    e_hat, psi, w = person_init(E, G, D, x, y)
    assert E.training and G.training  # modes restored
    E.eval(), G.eval()
    with torch.no_grad():
        e_ref = E(x, y).mean(0, keepdim=True)
        assert torch.allclose(e_hat, e_ref)
        assert torch.allclose(psi, G.project(e_ref))  # ψ' = P·ê_new
        assert torch.allclose(w, D.w0 + e_ref[0])  # w' = w0 + ê_new
    person = finetune(cfg, E, G, D, x, y, lms, steps(0))
    assert isinstance(person, PersonModel) and person.generator is not G
    assert torch.allclose(person.psi, psi) and not person.generator.training
    warped = x.flip(-1)
    with torch.no_grad():
        assert torch.allclose(person.render(y, warped=warped), G(y, e_hat=e_ref, warped=warped), atol=1e-6)
    with pytest.raises(AnimateError):
        person.render(y)  # the warp generator cannot render without its reference


def test_finetuning_fits_the_shots_better_than_feed_forward():
    cfg, E, G, D = _nets()
    x, y, lms = _shots(cfg, t=2)
    ref = _other_shot_warped(cfg, x, lms)  # fixed training input: the other shot warped to each one's pose
    ff = finetune(cfg, E, G, D, x, y, lms, steps(0))
    ft = finetune(cfg, E, G, D, x, y, lms, steps(8), warped=ref)
    with torch.no_grad():
        out_ff, out_ft = ff.render(y, warped=ref), ft.render(y, warped=ref)
        assert torch.equal(out_ff, ref)  # untrained: the feed-forward output is the warped reference
        assert content_loss(out_ft, x) < 0.98 * content_loss(out_ff, x)
    assert ft.losses[-1]["cnt"] < ft.losses[0]["cnt"]


def test_networks_untouched_and_seeded_runs_identical():
    cfg, E, G, D = _nets()
    E.train()  # even in train mode E must not move (no spectral-norm power iteration either)
    x, y, lms = _shots(cfg, t=2)
    before = [copy.deepcopy(m.state_dict()) for m in (E, G, D)]
    calls = []
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(finetune(cfg, E, G, D, x, y, lms, steps(2),
                             progress=lambda s, n, losses: calls.append((s, n, sorted(losses)))))
    for m, state in zip((E, G, D), before):
        for k, v in m.state_dict().items():
            assert torch.equal(v, state[k]), k
    assert calls[:2] == [(1, 2, ["adv", "cnt", "d", "fm", "mouth", "pix", "total"]), (2, 2, calls[0][2])]
    assert torch.equal(runs[0].psi, runs[1].psi)
    warped = x.flip(-1)
    assert torch.equal(runs[0].render(y, warped), runs[1].render(y, warped))
    assert not torch.equal(runs[0].psi, person_init(E, G, D, x, y)[1])  # ψ' did train


def test_every_step_fits_the_shots_from_fresh_round_trips_unless_references_are_fixed(monkeypatch):
    import animate_cli.finetune as ft_mod

    cfg, E, G, D = _nets()
    cfg = cfg.replace(warp_reg=0.05)
    x, y, lms = _shots(cfg, t=2)
    calls = []
    real = ft_mod.round_trip_reference
    monkeypatch.setattr(ft_mod, "round_trip_reference", lambda *a, **k: calls.append(k) or real(*a, **k))
    person = finetune(cfg, E, G, D, x, y, lms, FinetuneConfig(steps=3, jitter=0.02))
    assert calls == [{"strength": 0.02, "reg": 0.05}] * 3  # two shots, yet each step warps them synthetically
    assert any(not torch.equal(p, G.state_dict()[n]) for n, p in person.generator.named_parameters()
               if not n.startswith("P."))  # the trunk trains, not only ψ'
    calls.clear()
    finetune(cfg, E, G, D, x, y, lms, steps(2), warped=_other_shot_warped(cfg, x, lms))
    assert not calls


def test_fsth_without_discriminator_and_bad_input():
    cfg, E, G, _ = _nets("fsth")
    x, y, _ = _shots(cfg, t=1)
    person = finetune(cfg, E, G, None, x, y, None, steps(1))
    assert set(person.losses[0]) == {"cnt", "pix", "total"}  # no landmarks: no mouth term
    assert person.render(y).shape == x.shape
    with pytest.raises(AnimateError, match="0 or more"):
        steps(-1)
    with pytest.raises(AnimateError, match="shots"):
        finetune(cfg, E, G, None, x, y[:, :, :8], None, steps(0))
    wcfg, E, G, D = _nets("warp")
    with pytest.raises(AnimateError, match="landmarks"):
        finetune(wcfg, E, G, D, x, y, None, steps(1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_mixed_precision():
    cfg, E, G, D = _nets()
    x, y, lms = _shots(cfg, t=2)
    E, G, D = E.cuda(), G.cuda(), D.cuda()
    person = finetune(cfg, E, G, D, x, y, lms, steps(3), device="cuda")
    assert all(np.isfinite(v) for v in person.losses[-1].values())
    out = person.render(y.cuda(), x.cuda().flip(-1))
    assert out.is_cuda and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_round_trip_reference_is_a_degraded_copy_of_the_shot():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    shot = torch.stack([torch.sin(6 * xx), torch.cos(5 * yy), xx * yy])[None]
    lms = np.random.default_rng(0).uniform(16, 48, (1, 68, 2)).astype(np.float32)
    torch.manual_seed(3)
    a = round_trip_reference(shot, lms, strength=0.04, reg=1e-3)
    torch.manual_seed(3)
    b = round_trip_reference(shot, lms, strength=0.04, reg=1e-3)
    c = round_trip_reference(shot, lms, strength=0.04, reg=1e-3)
    assert torch.equal(a, b)  # deterministic under the seed
    assert not torch.equal(a, c)  # a fresh perturbation each call
    err = (a - shot).abs().mean().item()
    assert 1e-3 < err < 0.3  # changed, but still the same picture


def test_round_trip_reference_resamples_the_shot_once():
    """The way there and back is one composed grid: the same motion as two warps, without the second blur
    (which fine-tuning would learn to undo, and then sharpen real, once-resampled warps)."""
    from animate_cli.finetune import _perturbed
    from animate_cli.warp import warp_image

    shot = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # all detail, no smooth areas
    lms = np.random.default_rng(0).uniform(16, 48, (1, 68, 2)).astype(np.float32)
    torch.manual_seed(5)
    once = round_trip_reference(shot, lms, strength=0.04, reg=0.05)
    torch.manual_seed(5)
    moved = _perturbed(torch.from_numpy(lms), 0.04)
    twice = warp_image(warp_image(shot, lms, moved, reg=0.05), moved, lms, reg=0.05)
    err_once, err_twice = (once - shot).abs().mean().item(), (twice - shot).abs().mean().item()
    assert err_once > 1e-3  # still moved
    assert err_once < 0.8 * err_twice
    assert once.std().item() > 1.1 * twice.std().item()  # the noise's contrast survives better


def test_the_mouth_painter_stays_as_meta_learned_unless_asked():
    """A shot fitted from a warp of itself opens no mouth wider than its own: fine-tuning would only teach the
    painter to paint less, so it is frozen by default while the rest of G trains."""
    torch.manual_seed(0)
    cfg = preset("tiny", generator="warp").replace(paint_size=32)
    E, G, D = Embedder(cfg), build_generator(cfg), Discriminator(cfg, n_videos=3)
    x, y, lms = _shots(cfg, t=2)
    changed = {}
    for train_painter in (False, True):
        torch.manual_seed(5)
        person = finetune(cfg, E, G, D, x, y, lms, FinetuneConfig(steps=3, train_painter=train_painter))
        new = person.generator.state_dict()
        changed[train_painter] = {part: any(not torch.equal(v, new[k]) for k, v in G.state_dict().items()
                                            if k.startswith("painter.") == (part == "painter"))
                                  for part in ("painter", "rest")}
    assert changed[False] == {"painter": False, "rest": True}
    assert changed[True] == {"painter": True, "rest": True}
    with pytest.raises(AnimateError, match="train_painter"):
        FinetuneConfig(train_painter="yes")
