"""The landmark image: fixed colours per part, black background, thickness scaling, batch tensor."""
import numpy as np
import torch

from animate_cli.face.draw import (DRAWING_VERSION, PART_COLORS, PART_SLICES, draw_landmarks,
                                   landmark_tensor)


def synthetic_face(size=256):
    """A plausible iBUG-68 layout with parts apart from each other (drawn colours do not overlap)."""
    u = lambda a, b, n: np.linspace(a, b, n)  # noqa: E731
    t = u(np.pi * 0.95, np.pi * 0.05, 17)
    jaw = np.c_[0.5 + 0.42 * np.cos(t), 0.45 + 0.45 * np.sin(t)]
    rbrow = np.c_[u(0.2, 0.42, 5), 0.28 - 0.03 * np.sin(u(0, np.pi, 5))]
    lbrow = np.c_[u(0.58, 0.8, 5), 0.28 - 0.03 * np.sin(u(0, np.pi, 5))]
    bridge = np.c_[np.full(4, 0.5), u(0.36, 0.55, 4)]
    nostrils = np.c_[u(0.42, 0.58, 5), 0.62 + 0.02 * np.sin(u(0, np.pi, 5))]

    def ring(cx, cy, rx, ry, n):
        a = np.linspace(np.pi, -np.pi, n, endpoint=False)
        return np.c_[cx + rx * np.cos(a), cy + ry * np.sin(a)]

    reye, leye = ring(0.32, 0.4, 0.07, 0.03, 6), ring(0.68, 0.4, 0.07, 0.03, 6)
    outer, inner = ring(0.5, 0.76, 0.16, 0.06, 12), ring(0.5, 0.76, 0.09, 0.025, 8)
    pts = np.concatenate([jaw, rbrow, lbrow, bridge, nostrils, reye, leye, outer, inner])
    assert pts.shape == (68, 2)
    return (pts * size).astype(np.float32)


def test_layout_constants():
    assert DRAWING_VERSION == 1
    covered = sorted(i for _, s, _ in PART_SLICES for i in range(68)[s])
    assert covered == list(range(68))
    assert len(PART_COLORS) == len(PART_SLICES) == len(set(PART_COLORS)) == 9
    closed = {name for name, _, c in PART_SLICES if c}
    assert closed == {"right_eye", "left_eye", "outer_lips", "inner_lips"}


def test_shape_background_and_colours():
    img = draw_landmarks(synthetic_face(), 256)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    lit = img.any(-1)
    assert 0.02 < lit.mean() < 0.2  # mostly black, but lines are drawn
    assert not img[:5, :5].any() and not img[-5:, -5:].any()
    flat = img.reshape(-1, 3)
    for (name, _, _), colour in zip(PART_SLICES, PART_COLORS):
        assert (flat == colour).all(-1).sum() >= 10, name


def test_eyes_and_lips_are_closed():
    pts = synthetic_face()
    img = draw_landmarks(pts, 256)
    for first, last in [(36, 41), (42, 47), (48, 59), (60, 67)]:
        mid = np.round((pts[first] + pts[last]) / 2).astype(int)
        assert img[mid[1], mid[0]].any(), (first, last)


def test_points_outside_do_not_crash():
    pts = synthetic_face() * 40 - 3000
    pts[5] = np.nan
    img = draw_landmarks(pts, 64)
    assert img.shape == (64, 64, 3)
    half_out = synthetic_face() + 128
    assert draw_landmarks(half_out, 256).any()


def test_deterministic_and_pure():
    pts = synthetic_face()
    copy = pts.copy()
    a, b = draw_landmarks(pts, 256), draw_landmarks(pts, 256)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pts, copy)


def test_thickness_scales_with_size():
    ink = lambda img: img.max(-1).astype(np.float64).sum()  # noqa: E731  (antialiased coverage)
    small = ink(draw_landmarks(synthetic_face(256), 256))
    big = ink(draw_landmarks(synthetic_face(512), 512))
    assert 2.8 < big / small < 4.8  # ~4x: twice as long and twice as thick (a fixed width gives ~2x)


def test_landmark_tensor_batch():
    pts = np.stack([synthetic_face(128) * 0.5, synthetic_face(128)])
    t = landmark_tensor(pts, 128)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (2, 3, 128, 128)
    assert t.min() >= -1 and t.max() <= 1 and t[0, :, 0, 0].eq(-1).all()
    expected = torch.from_numpy(draw_landmarks(pts[1], 128)).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(t[1], expected)
    assert not torch.equal(t[0], t[1])
