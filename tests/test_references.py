"""Choosing the shot each frame warps and warping it there (references.py)."""
import numpy as np
import pytest
import torch

from animate_cli.references import SELECTION_FEATURES, choose_shots, references_for, warp_references
from animate_cli.warp import DEFAULT_REG, warp_image


def _face(rng, r=32):
    return (rng.random((68, 2)) * r * 0.5 + r * 0.25).astype(np.float32)


def _shots_with_distances():
    """Four shots whose normalised distance to the target grows with the index (position/scale free)."""
    rng = np.random.default_rng(0)
    target = _face(rng)
    noise = rng.normal(size=(68, 2)).astype(np.float32)
    shots = np.stack([(target + noise * s) * (1 + 0.1 * i) + 3 * i for i, s in enumerate([0.1, 0.5, 1.0, 2.0])])
    return shots[[2, 0, 3, 1]], target  # shuffled: nearest is index 1, then 3, 0, 2


def test_the_nearest_shot_is_chosen_unless_excluded():
    shots, target = _shots_with_distances()
    assert choose_shots(shots, target[None], ()).tolist() == [1]
    assert choose_shots(shots[:1], target[None], ()).tolist() == [0]
    # a shot may be excluded per row (e.g. the target itself), unless it is the only one
    assert choose_shots(shots, np.stack([target, target]), (), exclude=torch.tensor([1, 3])).tolist() == [3, 1]
    assert choose_shots(shots[:1], target[None], (), exclude=torch.tensor([0])).tolist() == [0]


def test_learned_selection_weights_change_the_choice():
    shots, target = _shots_with_distances()
    scale_only = [0.0] * len(SELECTION_FEATURES)
    scale_only[SELECTION_FEATURES.index("scale")] = -1.0  # cost = how different the size is
    # sizes relative to the target: shots 0..3 are 1.2, 1.0, 1.3 (and the most noise), 1.1 times as large:
    # penalising the size ratio picks shot 1, rewarding it shot 2
    assert choose_shots(shots, target[None], tuple(scale_only)).tolist() == [1]
    scale_only[SELECTION_FEATURES.index("scale")] = 1.0
    assert choose_shots(shots, target[None], tuple(scale_only)).tolist() == [2]


def test_random_share_draws_every_shot_but_never_an_excluded_one():
    shots, target = _shots_with_distances()
    n = 200
    g = torch.Generator().manual_seed(0)
    drawn = choose_shots(shots, np.repeat(target[None], n, 0), (), random_share=1.0, generator=g)
    assert np.bincount(drawn.numpy(), minlength=4).min() > 25
    g = torch.Generator().manual_seed(0)
    again = choose_shots(shots, np.repeat(target[None], n, 0), (), random_share=1.0, generator=g)
    assert torch.equal(drawn, again)  # the draws come from the generator only
    g = torch.Generator().manual_seed(0)
    half = choose_shots(shots, np.repeat(target[None], n, 0), (), random_share=0.5, generator=g)
    assert 0.2 < (half != 1).float().mean() < 0.6  # about half random (a quarter of those hit shot 1 anyway)
    excluded = torch.full((n,), 2)
    picks = choose_shots(shots, np.repeat(target[None], n, 0), (), random_share=1.0, exclude=excluded,
                         generator=torch.Generator().manual_seed(1))
    assert (picks != 2).all() and len(set(picks.tolist())) == 3


def test_the_chosen_shot_is_moved_to_the_target_with_the_given_regularisation():
    shots, target = _shots_with_distances()
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    out = references_for(images, shots, target[None], selection=(), reg=DEFAULT_REG)
    assert out.shape == (1, 3, 32, 32)
    want = warp_image(images[1:2], torch.from_numpy(shots[1:2]), torch.from_numpy(target[None]), reg=DEFAULT_REG)
    assert torch.allclose(out, want, atol=1e-6)
    smoother = references_for(images, shots, target[None], selection=(), reg=0.1)
    assert not torch.allclose(smoother, out, atol=1e-3)
    # per-row shots (training batches) give the same as shared ones
    per_row = warp_references(images[None].expand(2, -1, -1, -1, -1),
                              torch.from_numpy(shots)[None].expand(2, -1, -1, -1),
                              np.stack([target, target]), torch.tensor([1, 1]), reg=DEFAULT_REG)
    assert torch.allclose(per_row[:1], out, atol=1e-6) and torch.allclose(per_row[1:], out, atol=1e-6)


def test_selection_and_regularisation_are_required():
    shots, target = _shots_with_distances()
    images = torch.rand(4, 3, 32, 32)
    with pytest.raises(TypeError):
        references_for(images, shots, target[None], reg=DEFAULT_REG)
    with pytest.raises(TypeError):
        references_for(images, shots, target[None], selection=())
    with pytest.raises(TypeError):
        choose_shots(shots, target[None])
