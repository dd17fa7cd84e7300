"""Choosing the shot each frame warps and warping it there (references.py)."""
import numpy as np
import pytest
import torch

from animate_cli.references import (SELECTION_FEATURES, HeldChoice, choose_mouth_shots, choose_shots, held_argmin,
                                    mouth_inset_mask, reference_motion, references_for, selection_features,
                                    warp_references)
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


def _mouth_shot_case(size=128):
    """Two drawn shots of a face whose mouth opens: the first framed exactly as the target but shut, the second
    with the target's open mouth and teeth but framed a little off (moved and enlarged). A choice that weighs
    framing only takes the first; the mouth's shape says the second."""
    from synthetic_faces import draw_face, face_landmarks
    target = face_landmarks(size, mouth_gap=0.35)
    shut = face_landmarks(size, mouth_gap=0.02)
    moved = (target - size / 2) * 1.08 + size / 2 + np.float32([5, 3])
    shots = np.stack([draw_face(shut, size), draw_face(moved, size)])
    framing = [0.0] * len(SELECTION_FEATURES)
    framing[SELECTION_FEATURES.index("offset")] = -1.0
    return shots, np.stack([shut, moved]), target, tuple(framing)


def test_the_mouth_comes_from_the_shot_whose_lips_are_shaped_like_the_target_s():
    from synthetic_faces import white_share
    from animate_cli.face.regions import mouth_box
    shots, lms, target, framing = _mouth_shot_case()
    pictures = torch.from_numpy(shots).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert choose_shots(lms, target[None], framing).tolist() == [0]
    assert choose_mouth_shots(lms, target[None]).tolist() == [1]
    plain = reference_motion(pictures, lms, target[None], selection=framing, reg=DEFAULT_REG)
    inset = reference_motion(pictures, lms, target[None], selection=framing, reg=DEFAULT_REG, mouth_shots=True)
    assert plain.mouth is None and plain.reference is plain.warped
    assert inset.mouth.rows.tolist() == [0] and inset.mouth.chosen.tolist() == [1]
    assert inset.mouth_chosen.tolist() == [1] and plain.mouth_chosen.tolist() == [0]
    assert torch.equal(inset.warped, plain.warped)  # the face (what the compositor moves) is the same shot's
    as_image = lambda t: ((t[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).byte().numpy()  # noqa: E731
    box = mouth_box(target)
    direct = warp_references(pictures, lms, target[None], torch.tensor([1]), reg=DEFAULT_REG)
    teeth = white_share(as_image(inset.reference), box)
    assert teeth > 0.8 * white_share(as_image(direct), box) > 0.03  # the open shot's teeth
    assert white_share(as_image(plain.reference), box) < 0.3 * teeth  # the shut mouth stretched: a sliver
    # away from the mouth (the eyes and above) the reference is the face shot's warp, unchanged
    upper = slice(0, int(target[29, 1]))
    assert torch.equal(inset.reference[..., upper, :], plain.warped[..., upper, :])
    # one shot, or the face shot already the mouth's: nothing to inset
    assert reference_motion(pictures[:1], lms[:1], target[None], selection=framing, reg=DEFAULT_REG,
                            mouth_shots=True).mouth is None
    assert reference_motion(pictures, lms, lms[1][None], selection=(), reg=DEFAULT_REG, mouth_shots=True).mouth is None


def test_the_mouth_inset_fades_out_and_matches_the_face_s_colour():
    """The inset's mask covers the lips and fades to zero on the skin; a shot lit differently is shifted to the
    face's colour at the seam, so no edge shows."""
    shots, lms, target, framing = _mouth_shot_case()
    pictures = torch.from_numpy(shots).permute(0, 3, 1, 2).float() / 127.5 - 1
    brighter = pictures.clone()
    brighter[1] = (brighter[1] + 0.3).clamp(-1, 1)
    mask = mouth_inset_mask(torch.from_numpy(target[None]), 128)[0, 0]
    lips = np.round(target[48:68]).astype(int)
    assert (mask[lips[:, 1], lips[:, 0]] > 0.9).all()
    assert mask[int(target[27, 1]), int(target[27, 0])] < 0.01 and mask[5, 5] == 0  # between the eyes, corner
    m = reference_motion(pictures, lms, target[None], selection=framing, reg=DEFAULT_REG, mouth_shots=True)
    b = reference_motion(brighter, lms, target[None], selection=framing, reg=DEFAULT_REG, mouth_shots=True)
    edge = (mask > 0.2) & (mask < 0.5)
    seam = lambda r: (r.reference[0] - r.warped[0])[:, edge].abs().mean()  # noqa: E731
    assert seam(b) < seam(m) + 0.02  # the brighter shot meets the face no worse than the same-lit one


def test_the_mouth_shot_is_the_one_that_shows_most_of_the_opening_then_the_nearest_shape():
    """What a warp stretches is smeared: the shot that needs the least stretching wins, whatever the face's
    choice; among shots that all show the opening (a target opening less), the nearest shape."""
    from synthetic_faces import face_landmarks
    r = 128
    shout, half_open = face_landmarks(r, mouth_gap=0.45), face_landmarks(r, mouth_gap=0.25)
    grin = face_landmarks(r, mouth_gap=0.25)
    grin[48:68, 0] = (grin[48:68, 0] - r / 2) * 2.2 + r / 2  # a wide smile: its lips' shape is far from a shout's
    shut, wide = face_landmarks(r, mouth_gap=0.0), face_landmarks(r, mouth_gap=0.4)
    # shut's lips are nearer a half-open mouth in shape than the wide grin's, but show none of the opening
    shape = lambda shots, t: selection_features(np.stack(shots), t[None])[0, :, SELECTION_FEATURES.index(  # noqa: E731
        "expression_mouth")]
    assert shape([shut, grin], half_open).argmin() == 0
    assert choose_mouth_shots(np.stack([shut, grin]), half_open[None]).tolist() == [1]
    assert choose_mouth_shots(np.stack([shut, grin, wide]), shout[None]).tolist() == [2]
    assert choose_mouth_shots(np.stack([grin, shut]), shout[None]).tolist() == [0]  # stretched less than shut
    assert choose_mouth_shots(np.stack([wide, half_open, grin]), shut[None]).tolist() == [1]  # all show it: shape


def test_a_video_keeps_its_shot_unless_another_fits_clearly_better():
    """held_argmin: consecutive frames keep the frame before's shot while it costs at most the margin more than
    the best, so two shots that fit about equally do not alternate; a clearly better one takes over."""
    cost = torch.tensor([[0.10, 0.11], [0.11, 0.10], [0.10, 0.11], [0.13, 0.10], [0.10, 0.105]])
    assert held_argmin(cost, None, 0.0).tolist() == [0, 1, 0, 1, 0]  # no margin: flickers with the noise
    assert held_argmin(cost, None, 0.02).tolist() == [0, 0, 0, 1, 1]  # held; the fourth frame's gap is 0.03
    assert held_argmin(cost, 1, 0.02).tolist() == [1, 1, 1, 1, 1]  # starts from the frame before the batch


def test_reference_motion_holds_shots_across_batches_only_when_asked():
    """With `held` the choice carries from one batch of a video to the next; without it (evaluation: targets in
    any order) every frame takes its best shot, as before."""
    from synthetic_faces import face_landmarks
    r = 64
    a, b = face_landmarks(r, mouth_gap=0.10), face_landmarks(r, mouth_gap=0.16)
    between = np.stack([face_landmarks(r, mouth_gap=g) for g in (0.125, 0.135, 0.128, 0.134)])
    pictures = torch.zeros(2, 3, r, r)
    free = reference_motion(pictures, np.stack([a, b]), between, selection=(), reg=DEFAULT_REG, mouth_shots=True)
    assert len(set(free.chosen.tolist())) == 2  # the nearest shape alternates between the two shots
    framing = [0.0] * len(SELECTION_FEATURES)
    framing[SELECTION_FEATURES.index("expression_mouth")] = -0.1  # a learned-like cost: tiny gaps between them
    held = HeldChoice()
    first = reference_motion(pictures, np.stack([a, b]), between[:2], selection=tuple(framing), reg=DEFAULT_REG,
                             mouth_shots=True, held=held)
    second = reference_motion(pictures, np.stack([a, b]), between[2:], selection=tuple(framing), reg=DEFAULT_REG,
                              mouth_shots=True, held=held)
    faces = first.chosen.tolist() + second.chosen.tolist()
    assert len(set(faces)) == 1 and held.face == faces[-1] and held.mouth is not None
    unheld = reference_motion(pictures, np.stack([a, b]), between, selection=tuple(framing), reg=DEFAULT_REG)
    assert torch.equal(unheld.chosen, choose_shots(np.stack([a, b]), between, tuple(framing)))
    assert len(set(unheld.chosen.tolist())) == 2  # the same frames unheld do alternate
