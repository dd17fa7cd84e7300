"""Choosing and warping the references the warp generator blends (references.py), and the blend itself."""
import numpy as np
import pytest
import torch

from animate_cli.config import preset
from animate_cli.errors import AnimateError
from animate_cli.models.generator import build_generator
from animate_cli.references import reference_slots, references_for, warp_references
from animate_cli.train.episodes import reference_warp
from animate_cli.warp import warp_image


def _face(rng, r=32):
    return (rng.random((68, 2)) * r * 0.5 + r * 0.25).astype(np.float32)


def _shots_with_distances():
    """Four shots whose normalised distance to the target grows with the index (position/scale free)."""
    rng = np.random.default_rng(0)
    target = _face(rng)
    noise = rng.normal(size=(68, 2)).astype(np.float32)
    shots = np.stack([(target + noise * s) * (1 + 0.1 * i) + 3 * i for i, s in enumerate([0.1, 0.5, 1.0, 2.0])])
    return shots[[2, 0, 3, 1]], target  # shuffled: nearest is index 1, then 3, 0, 2


def test_slots_are_nearest_first_and_repeat_the_nearest_when_shots_run_out():
    shots, target = _shots_with_distances()
    assert reference_slots(shots, target[None], 3).tolist() == [[1, 3, 0]]
    assert reference_slots(shots[:2], target[None], 3).tolist() == [[1, 0, 1]]  # two shots, three slots
    assert reference_slots(shots[:1], target[None], 3).tolist() == [[0, 0, 0]]
    # a shot may be excluded (fine-tuning: the target itself), per row
    assert reference_slots(shots, np.stack([target, target]), 2, exclude=torch.tensor([1, 3])).tolist() == \
        [[3, 0], [1, 0]]


def test_random_first_slot_keeps_the_others_nearest_and_distinct():
    shots, target = _shots_with_distances()
    g = torch.Generator().manual_seed(0)
    slots = reference_slots(shots, np.repeat(target[None], 200, 0), 3, random_share=1.0, generator=g)
    firsts = np.bincount(slots[:, 0].numpy(), minlength=4)
    assert firsts.min() > 25  # every shot drawn as slot 0
    for row in slots.tolist():
        assert len(set(row)) == 3
        rest = [i for i in [1, 3, 0, 2] if i != row[0]]
        assert row[1:] == rest[:2]  # the remaining shots, nearest first


def test_warped_slots_are_the_chosen_shots_moved_to_the_target():
    shots, target = _shots_with_distances()
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    out = references_for(images, shots, target[None], 2)
    assert out.shape == (1, 6, 32, 32)
    for m, i in enumerate([1, 3]):
        want = warp_image(images[i:i + 1], torch.from_numpy(shots[i:i + 1]), torch.from_numpy(target[None]))
        assert torch.allclose(out[:, 3 * m:3 * m + 3], want, atol=1e-6)
    # per-row shots (training batches) give the same as shared ones
    per_row = warp_references(images[None].expand(2, -1, -1, -1, -1), torch.from_numpy(shots)[None].expand(2, -1, -1, -1),
                              np.stack([target, target]), torch.tensor([[1, 3], [1, 3]]))
    assert torch.allclose(per_row[:1], out, atol=1e-6) and torch.allclose(per_row[1:], out, atol=1e-6)


def test_training_episodes_alone_or_with_nearer_shots():
    shots, target = _shots_with_distances()
    n = 200
    x = torch.arange(4, dtype=torch.float32).view(1, 4, 1, 1, 1).expand(n, 4, 3, 32, 32) / 4
    lm = torch.from_numpy(shots)[None].expand(n, -1, -1, -1)
    t = torch.from_numpy(target)[None].expand(n, -1, -1)
    near = reference_warp(x, lm, t, n_refs=3)
    assert near.shape == (n, 9, 32, 32)
    assert torch.allclose(near[:, ::3].mean(dim=(2, 3)), torch.tensor([1, 3, 0.0]) / 4, atol=1e-5)
    g = torch.Generator().manual_seed(1)
    mixed = reference_warp(x, lm, t, random_share=1.0, generator=g, n_refs=3).mean(dim=(2, 3))[:, ::3]
    far = mixed[:, 0] != 0.25  # slot 0 drawn at random and not the nearest
    alone = far & (mixed[:, 1] == mixed[:, 0]) & (mixed[:, 2] == mixed[:, 0])
    assert 0.25 < alone.float().sum() / far.float().sum() < 0.75  # about half of the far episodes are alone
    assert ((mixed[~alone & far][:, 1:] != mixed[~alone & far][:, :1]).all())  # the rest get nearer shots


def _multi(seed=0):
    torch.manual_seed(seed)
    cfg = preset("tiny", "warp").replace(n_refs=3)
    return cfg, build_generator(cfg)


def test_untrained_multi_reference_generator_returns_the_nearest_and_widening_changes_nothing():
    cfg, G = _multi()
    r = cfg.resolution
    y = torch.rand(2, 3, r, r) * 2 - 1
    warped = torch.rand(2, 9, r, r) * 2 - 1
    e = torch.randn(2, cfg.embed_dim)
    with torch.no_grad():
        assert torch.equal(G(y, e, warped=warped), warped[:, :3])
    one = build_generator(cfg.replace(n_refs=1))
    with torch.no_grad():
        one.head.weight.normal_(0, 0.05)  # a "trained" single-reference model
    wide = build_generator(cfg)
    wide.load_state_dict_widened(one.state_dict())
    one.eval(), wide.eval()
    with torch.no_grad():
        assert torch.allclose(wide(y, e, warped=warped), one(y, e, warped=warped[:, :3]), atol=1e-6)


def test_the_blend_learns_to_take_a_better_aligned_reference():
    cfg, G = _multi(1)
    r = cfg.resolution
    torch.manual_seed(2)
    truth = torch.rand(4, 3, r, r) * 2 - 1
    wrong = torch.roll(truth, 5, dims=3)
    warped = torch.cat([wrong, truth, wrong], dim=1)  # the second slot is the right one
    y = torch.zeros(4, 3, r, r)
    e = torch.zeros(4, cfg.embed_dim)
    opt = torch.optim.Adam(G.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = (G(y, e, warped=warped) - truth).abs().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    with torch.no_grad():
        out = G._trunk(torch.cat([y, warped], 1), e, None)
    assert out[:, 3].mean() > 0.5  # the weight of slot 1 grew towards 1


def test_skip_path_widening_changes_nothing_and_then_trains():
    cfg, G = _multi(3)
    r = cfg.resolution
    with torch.no_grad():
        G.head.weight.normal_(0, 0.05)  # a "trained" model without the skip path
    wide = build_generator(cfg.replace(skip_width=8))
    assert wide.skip is not None and G.skip is None
    wide.load_state_dict_widened(G.state_dict())
    G.eval(), wide.eval()
    y, warped, e = torch.rand(2, 3, r, r) * 2 - 1, torch.rand(2, 9, r, r) * 2 - 1, torch.randn(2, cfg.embed_dim)
    with torch.no_grad():
        assert torch.allclose(wide(y, e, warped=warped), G(y, e, warped=warped), atol=1e-6)
    wide.train()
    (wide(y, e, warped=warped) - warped[:, 3:6]).abs().mean().backward()
    assert wide.head.weight.grad[:, -8:].abs().sum() > 0  # the head already learns from the skip features
    for bad in ({"n_refs": 0}, {"skip_width": -1}):
        with pytest.raises(AnimateError):
            cfg.replace(**bad)
    with pytest.raises(AnimateError):
        preset("tiny", "fsth").replace(skip_width=4)


def test_widening_refuses_weights_that_do_not_fit():
    cfg, G = _multi(4)
    small = build_generator(cfg.replace(n_refs=1))
    state = dict(small.state_dict())
    state["not_a_layer.weight"] = torch.zeros(1)
    with pytest.raises(ValueError):
        G.load_state_dict_widened(state)
    narrow = build_generator(cfg)
    with pytest.raises(ValueError):  # more references cannot be squeezed into fewer
        small.load_state_dict_widened(narrow.state_dict())
