"""Motion transfer: head motion as a similarity, expression as deltas scaled to the portrait."""
import numpy as np
import pytest

from animate_cli.errors import AnimateError
from animate_cli.motion import (
    STABLE_POINTS,
    apply_similarity,
    find_best_frame,
    procrustes,
    transfer_absolute,
    transfer_relative,
)


def face(cx=128.0, cy=128.0, size=1.0) -> np.ndarray:
    """A plausible iBUG-68 face (jaw, brows, nose, eyes, lips) for geometry tests."""
    def ellipse(x, y, rx, ry, angles):
        a = np.radians(angles)
        return np.stack([x + rx * np.cos(a), y + ry * np.sin(a)], 1)

    jaw = ellipse(0, -8, 70, 80, np.linspace(180, 0, 17))
    brow_l = np.stack([np.linspace(-55, -15, 5), [-30, -36, -38, -36, -32]], 1)
    brow_r = brow_l[::-1] * [-1, 1]
    bridge = np.stack([np.zeros(4), np.linspace(-22, 15, 4)], 1)
    nostrils = np.stack([np.linspace(-15, 15, 5), [22, 24, 25, 24, 22]], 1)
    eye_l = ellipse(-28, -18, 12, 4, [180, 240, 300, 0, 60, 120])
    eye_r = ellipse(28, -18, 12, 4, [180, 240, 300, 0, 60, 120])
    outer = ellipse(0, 52, 25, 10, [180, 210, 240, 270, 300, 330, 0, 30, 60, 90, 120, 150])
    inner = ellipse(0, 52, 18, 3, [180, 240, 270, 300, 0, 60, 90, 120])
    pts = np.concatenate([jaw, brow_l, brow_r, bridge, nostrils, eye_l, eye_r, outer, inner])
    assert pts.shape == (68, 2)
    return (pts * size + [cx, cy]).astype(np.float32)


def rot(deg):
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def angle(R):
    return np.degrees(np.arctan2(R[1, 0], R[0, 0]))


def open_mouth(pts, amount):
    """Lower lip and inner lower lip move down by `amount` (jaw top and eyes stay)."""
    out = pts.copy()
    out[[55, 56, 57, 58, 59, 65, 66, 67], 1] += amount
    return out


def test_procrustes_recovers_known_similarity_without_reflection():
    src = face()
    dst = apply_similarity(src, 1.7, rot(23), np.array([-40.0, 15.0]))
    s, R, t = procrustes(src, dst)
    assert s == pytest.approx(1.7, abs=1e-6)
    assert angle(R) == pytest.approx(23, abs=1e-5)
    np.testing.assert_allclose(t, [-40, 15], atol=1e-4)
    mirrored = src * [-1, 1]
    _, R, _ = procrustes(src, mirrored, points=None)
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_procrustes_ignores_expression():
    """Stable points only: an open mouth must not look like head motion."""
    src = face()
    s, R, t = procrustes(src, open_mouth(src, 15))
    assert s == pytest.approx(1.0, abs=1e-9) and angle(R) == pytest.approx(0, abs=1e-9)
    np.testing.assert_allclose(t, 0, atol=1e-9)


def test_identity_motion_returns_portrait():
    P = face(300, 200, 1.6)
    L = np.repeat(face(100, 90, 0.7)[None] + np.random.default_rng(0).normal(0, 1, (1, 68, 2)), 5, 0)
    out = transfer_relative(P, L.astype(np.float32), ref_index=2)
    assert out.shape == (5, 68, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.broadcast_to(P, out.shape), atol=1e-4)


def test_pure_similarity_becomes_same_angle_and_scale():
    P = apply_similarity(face(0, 0, 1.4), 1.0, rot(-12), [260, 240]).astype(np.float32)
    ref = face(90, 80, 0.6) + np.random.default_rng(1).normal(0, 1, (68, 2))
    motions = [(1.0, 0.0, [0, 0]), (1.2, 15.0, [5, -3]), (0.8, -30.0, [-10, 20])]
    L = np.stack([apply_similarity(ref, s, rot(a), t) for s, a, t in motions]).astype(np.float32)
    out = transfer_relative(P, L)
    for (s, a, _), Pt in zip(motions, out):
        s_fit, R_fit, _ = procrustes(P, Pt, points=None)
        assert s_fit == pytest.approx(s, abs=1e-4)
        assert angle(R_fit) == pytest.approx(a, abs=1e-4)
        residual = apply_similarity(P, s_fit, R_fit, procrustes(P, Pt, points=None)[2]) - Pt
        assert np.abs(residual).max() < 1e-3  # shape unchanged, only moved


def test_translation_is_scaled_and_rotated_into_portrait_frame():
    ref = face(90, 80, 0.5)
    P = apply_similarity(face(0, 0, 1.0), 1.0, rot(90), [200, 200]).astype(np.float32)
    L = np.stack([ref, ref + [10.0, 0.0]]).astype(np.float32)
    out = transfer_relative(P, L)
    # A maps the driver to the portrait with scale 2 and a 90° turn: +x becomes +y, doubled.
    np.testing.assert_allclose(out[1] - out[0], np.broadcast_to([0.0, 20.0], (68, 2)), atol=1e-3)


def test_expression_delta_scales_with_face_size():
    ref = face(100, 100, 0.5)
    P = apply_similarity(ref, 3.0, np.eye(2), [-50, 10]).astype(np.float32)
    L = np.stack([ref, open_mouth(ref, 4.0)]).astype(np.float32)
    out = transfer_relative(P, L)
    moved = out[1] - P
    np.testing.assert_allclose(moved[[57, 66], 1], 12.0, atol=1e-3)  # 4 px · 3
    still = [i for i in range(68) if i not in (55, 56, 57, 58, 59, 65, 66, 67)]
    np.testing.assert_allclose(moved[still], 0, atol=1e-3)


def test_expression_follows_head_rotation():
    """Mouth opening on a turned head opens along the turned face's own 'down'."""
    ref = face(100, 100, 0.5)
    P = face(128, 128, 1.0)
    frame = apply_similarity(open_mouth(ref, 5.0), 1.0, rot(30), [0, 0])
    out = transfer_relative(P, np.stack([ref, frame]).astype(np.float32))
    s, R, t = procrustes(P, out[1])
    undone = apply_similarity(out[1], 1 / s, R.T, -(R.T @ t) / s)
    np.testing.assert_allclose(angle(R), 30, atol=1e-4)
    np.testing.assert_allclose(undone[57] - P[57], [0, 10.0], atol=1e-3)  # 5 px · 2


def test_absolute_mode_reproduces_driver_shape_in_portrait_place():
    rng = np.random.default_rng(2)
    P = face(300, 260, 1.5)
    L = np.stack([face(80, 70, 0.6) + rng.normal(0, 2, (68, 2)) for _ in range(4)]).astype(np.float32)
    out = transfer_absolute(P, L, ref_index=1)
    maps = [procrustes(Lt, Pt, points=None) for Lt, Pt in zip(L, out)]
    for Lt, Pt, (s, R, t) in zip(L, out, maps):
        np.testing.assert_allclose(apply_similarity(Lt, s, R, t), Pt, atol=1e-3)
        # One fixed map for every frame, about the faces' size ratio.
        assert s == pytest.approx(maps[0][0], rel=1e-5) and s == pytest.approx(2.5, rel=0.05)
        np.testing.assert_allclose(t, maps[0][2], atol=1e-2)
    # The reference frame sits on the portrait's face (its rigid points' centroid, exactly).
    stable = list(STABLE_POINTS)
    np.testing.assert_allclose(out[1][stable].mean(0), P[stable].mean(0), atol=1e-3)


def test_find_best_frame_picks_planted_frame():
    rng = np.random.default_rng(3)
    P = face(128, 128, 1.0)
    frames = [apply_similarity(open_mouth(face(), rng.uniform(5, 15)) + rng.normal(0, 1.5, (68, 2)),
                               rng.uniform(0.5, 2), rot(rng.uniform(-20, 20)), rng.uniform(0, 300, 2))
              for _ in range(9)]
    frames[6] = apply_similarity(P + rng.normal(0, 0.2, (68, 2)), 0.4, rot(25), [30, 40])
    assert find_best_frame(P, np.stack(frames).astype(np.float32)) == 6


def test_bad_inputs_raise_animate_error():
    P = face()
    with pytest.raises(AnimateError):
        transfer_relative(P, P)  # not a sequence
    with pytest.raises(AnimateError):
        transfer_relative(P, P[None], ref_index=3)
    with pytest.raises(AnimateError):
        procrustes(np.zeros((68, 2)), P)
    bad = P[None].copy()
    bad[0, 5, 0] = np.nan
    with pytest.raises(AnimateError):
        transfer_absolute(P, bad)
