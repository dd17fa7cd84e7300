"""Face measures: eye openness, mouth opening, gaze and jitter are ratios on one face (size, place and
roll do not change them) and move the way the face does."""
import math

import numpy as np
import pytest

from animate_cli.errors import AnimateError
from animate_cli.face.measures import (
    blinks,
    correlation,
    eye_openness,
    follow_scores,
    gaze,
    interocular,
    jitter,
    mouth_opening,
)
from animate_cli.motion import apply_similarity
from test_motion import face, rot


def shut_eye(pts, eye: int, share: float = 0.0):
    """Eye 0 (36-41) or 1 (42-47) with its lids brought to `share` of their gap around the eye's line."""
    out = pts.copy()
    upper, lower = ((37, 41), (38, 40)) if eye == 0 else ((43, 47), (44, 46))
    for u, l in (upper, lower):
        mid = (out[u] + out[l]) / 2
        out[u] = mid + (out[u] - mid) * share
        out[l] = mid + (out[l] - mid) * share
    return out


def irises_at(pts, h: float, v: float):
    """Iris centres offset by (h, v) eye widths from each eye's centre (an upright face)."""
    out = []
    for a, b in ((36, 39), (42, 45)):
        w = pts[b, 0] - pts[a, 0]
        out.append((pts[a] + pts[b]) / 2 + np.array([h * w, v * w]))
    return np.array(out, np.float32)


def test_eye_openness_is_a_ratio_that_reads_shut_and_winks():
    f = face()
    open_ = eye_openness(f)[0]
    assert 0.25 < open_[0] < 0.35 and open_[0] == pytest.approx(open_[1])
    moved = apply_similarity(f, 2.5, rot(20), np.array([40.0, -10.0]))
    np.testing.assert_allclose(eye_openness(moved)[0], open_, rtol=1e-6)
    wink = eye_openness(shut_eye(f, 1))[0]
    assert wink[0] == pytest.approx(open_[0]) and wink[1] < 1e-6


def test_mouth_opening_is_zero_when_closed_and_grows_with_the_gap():
    f = face()
    closed = f.copy()
    closed[[65, 66, 67]] = closed[[63, 62, 61]]
    assert mouth_opening(closed)[0] == pytest.approx(0, abs=1e-6)
    opened = f.copy()
    opened[[65, 66, 67], 1] += 10
    assert mouth_opening(opened)[0] == pytest.approx(mouth_opening(f)[0] + 10 / interocular(f)[0], rel=1e-6)
    assert mouth_opening(apply_similarity(opened, 0.5, rot(-30), np.zeros(2)))[0] == pytest.approx(
        mouth_opening(opened)[0], rel=1e-6)


def test_gaze_reads_iris_offsets_in_eye_widths_whatever_the_roll():
    f = face()
    g = gaze(f, irises_at(f, 0.15, -0.05))[0]
    np.testing.assert_allclose(g, [[0.15, -0.05], [0.15, -0.05]], atol=1e-6)
    s, R, t = 1.7, rot(35), np.array([12.0, 30.0])
    g_rolled = gaze(apply_similarity(f, s, R, t), apply_similarity(irises_at(f, 0.15, -0.05), s, R, t))[0]
    np.testing.assert_allclose(g_rolled, g, atol=1e-6)


def test_jitter_ignores_smooth_motion_counts_tremble_and_ignores_size():
    n = 80
    t = np.arange(n)
    path = np.stack([3 * t + 20 * np.sin(t / 12), 10 * np.cos(t / 15)], 1)  # a steady turn and a slow nod
    smooth = np.stack([face() + p for p in path]).astype(np.float64)
    rng = np.random.default_rng(0)
    shaky = smooth + rng.normal(0, 0.5, smooth.shape)
    assert jitter(smooth) < 0.1 * jitter(shaky)
    big = shaky * 3.0  # the same video at three times the size
    assert jitter(big) == pytest.approx(jitter(shaky), rel=1e-6)
    with pytest.raises(AnimateError):
        jitter(smooth[:2])


def test_correlation_and_blinks():
    x = np.sin(np.arange(50) / 4)
    assert correlation(x, 3 * x + 1) == pytest.approx(1.0)
    assert correlation(x, -x) == pytest.approx(-1.0)
    assert math.isnan(correlation(x, np.ones(50)))
    with pytest.raises(AnimateError):
        correlation(x, x[:10])
    openness = np.full(40, 0.3)
    assert not blinks(openness)
    openness[20:23] = 0.05
    assert blinks(openness)


def test_follow_scores_of_a_faithful_copy_and_of_a_frozen_face():
    rng = np.random.default_rng(1)
    frames, irises = [], []
    for i in range(60):
        f = face() + rng.normal(0, 0.2, (68, 2))
        if 20 <= i < 23:
            f = shut_eye(f, 0, 0.1)
        f[[65, 66, 67], 1] += 6 * (1 + np.sin(i / 3))
        frames.append(f)
        irises.append(irises_at(f, 0.2 * np.sin(i / 7), 0.05 * np.cos(i / 5)))
    driver, d_iris = np.array(frames), np.array(irises)
    s, R, t = 2.0, rot(10), np.array([100.0, 50.0])
    copy, c_iris = apply_similarity(driver, s, R, t), apply_similarity(d_iris, s, R, t)
    scores = follow_scores(copy, driver, c_iris, d_iris)
    for name in ("eye_right", "mouth", "gaze_h", "gaze_v"):
        assert getattr(scores, name) == pytest.approx(1.0, abs=1e-6), name
    assert scores.jitter_ratio == pytest.approx(1.0, rel=1e-6) and scores.driver_blinks
    frozen = np.repeat(driver[:1], 60, 0)
    frozen_scores = follow_scores(frozen, driver, np.repeat(d_iris[:1], 60, 0), d_iris)
    assert math.isnan(frozen_scores.eye_right) and frozen_scores.jitter_ratio < 1e-3
    # eyes held on the camera (gaze within detector noise): no gaze correlation, it would be one of noise
    fixed = irises_at(driver[0], 0.0, 0.0)[None] + rng.normal(0, 0.01 * 40, (60, 2, 2))
    held = follow_scores(copy, driver, apply_similarity(fixed, s, R, t), fixed)
    assert math.isnan(held.gaze_h) and math.isnan(held.gaze_v) and not held.driver_looks_h
    assert scores.driver_looks_h and scores.driver_looks_v
    with pytest.raises(AnimateError, match="frames"):
        follow_scores(copy[:10], driver)
