"""Driver smoothing: a still head stays still, a 3-frame blink survives, a step is followed without lag."""
import numpy as np
import pytest

from animate_cli.errors import AnimateError
from animate_cli.face.measures import eye_openness, gaze, interocular, jitter
from animate_cli.face.smooth import Euro, noise_level, smooth_driver
from animate_cli.motion import apply_similarity, eyelid_scale
from test_face_measures import irises_at, shut_eye
from test_motion import face, rot

NOISE = 0.6  # px of detector noise on a face ~56 px between the eyes (about 1%)


def noisy(frames, seed=0, sigma=NOISE):
    return np.asarray(frames, np.float64) + np.random.default_rng(seed).normal(0, sigma, np.shape(frames))


def crossing(series, level):
    """First frame where the series reaches `level` (rising)."""
    return int(np.argmax(np.asarray(series) >= level))


def test_still_driver_comes_out_steadier_than_it_went_in():
    raw = noisy(np.repeat(face()[None], 80, 0))
    out, _ = smooth_driver(raw)
    assert out.shape == raw.shape and out.dtype == np.float32
    assert jitter(out) < 0.5 * jitter(raw), (jitter(out), jitter(raw))
    assert np.abs(out.mean(0) - face()).max() < 1.0  # and sits where the face is


def test_three_frame_blink_survives_and_maps_to_shut():
    frames = [face() for _ in range(60)]
    for i in (30, 31, 32):
        frames[i] = shut_eye(frames[i], 0, 0.1)  # eye 0 closes for 3 frames (a wink)
    raw = noisy(frames)
    out, _ = smooth_driver(raw)
    op_raw, op = eye_openness(raw), eye_openness(out)
    rest = np.median(op, 0)
    assert op[29:34, 0].min() < 0.3 * rest[0], op[25:36, 0] / rest[0]
    assert eyelid_scale(op[29:34, 0].min(), rest[0]) < 0.15  # the portrait's eye shuts
    assert op[29:34, 1].min() > 0.85 * rest[1]  # the other eye stays open
    assert op[:25, 0].std() < op_raw[:25, 0].std()  # and open eyelids are steadier than raw


@pytest.mark.parametrize("part", ["head", "mouth"])
def test_step_is_followed_with_at_most_one_frame_of_lag(part):
    """A sudden move at frame 40: the smoothed series is half-way there by frame 40±1 and 90% there
    within 3 frames (the zero-phase passes trade lag for a short lead-in)."""
    base = face()
    io = float(interocular(base)[0])
    frames = []
    for i in range(80):
        f = base.copy()
        if i >= 40:
            if part == "head":
                f = apply_similarity(f, 1.0, np.eye(2), np.array([0.3 * io, 0.0]))
            else:
                f[[56, 57, 58, 65, 66, 67], 1] += 0.3 * io
        frames.append(f)
    out, _ = smooth_driver(noisy(frames))
    pos = out[:, 30:36, 0].mean(1) if part == "head" else out[:, 66, 1]
    pos = (pos - pos[:30].mean()) / (pos[50:].mean() - pos[:30].mean())
    half, most = crossing(pos, 0.5), crossing(pos, 0.9)
    assert abs(half - 40) <= 1, pos[34:48]
    assert most - 40 <= 3, pos[34:48]


def test_fast_head_turn_has_little_lag():
    """A head sweeping 0.1 inter-ocular distances a frame is followed within a small fraction of that."""
    base = face()
    io = float(interocular(base)[0])
    x = 0.1 * io * np.concatenate([np.zeros(20), np.arange(30), np.full(30, 29.0)])
    frames = [apply_similarity(base, 1.0, rot(0), np.array([dx, 0.0])) for dx in x]
    out, _ = smooth_driver(noisy(frames))
    err = np.abs(out[:, 30, 0] - np.asarray(frames)[:, 30, 0]) / io
    assert err[25:45].max() < 0.05, err[20:50]


def test_gaze_is_smoothed_in_the_eye_and_follows_a_saccade():
    frames, irises = [], []
    for i in range(60):
        f = apply_similarity(face(), 1.0, rot(0), np.array([0.5 * i, 0.0]))  # the head drifts right
        frames.append(f)
        irises.append(irises_at(f, -0.2 if i < 30 else 0.2, 0.0))  # the eyes jump at frame 30
    raw, raw_iris = noisy(frames), noisy(irises, seed=1, sigma=0.3)
    out, out_iris = smooth_driver(raw, raw_iris)
    g = gaze(out, out_iris).mean(1)[:, 0]
    assert np.abs(g[:25] + 0.2).max() < 0.04 and np.abs(g[35:] - 0.2).max() < 0.04
    assert abs(crossing((g + 0.2) / 0.4, 0.5) - 30) <= 1
    assert np.abs(gaze(raw, raw_iris).mean(1)[:25, 0] + 0.2).std() > np.abs(g[:25] + 0.2).std()


def test_noise_level_reads_white_noise_not_motion_or_blinks():
    t = np.arange(200, dtype=float)
    rng = np.random.default_rng(3)
    x = np.stack([5 * np.sin(t / 20) + t / 10, np.cos(t / 30)], 1) + rng.normal(0, 0.05, (200, 2))
    x[100:103, 0] -= 4  # a blink-like dip
    np.testing.assert_allclose(noise_level(x), [0.05, 0.05], rtol=0.2)


def test_noisier_driver_is_smoothed_harder():
    """Speeds count in noise units: at 4x the noise, what is left of it stays about as small a share."""
    still = np.repeat(face()[None], 80, 0)
    shares = [jitter(smooth_driver(noisy(still, sigma=s))[0]) / jitter(noisy(still, sigma=s)) for s in (0.3, 1.2)]
    assert max(shares) < 0.35 and shares[1] < 1.5 * shares[0], shares


def test_euro_zero_phase_and_bad_input():
    x = np.concatenate([np.zeros(20), np.ones(20)])
    y = Euro(0.05, 0.0).run(x)
    assert y[19] == pytest.approx(1 - y[20], abs=1e-9)  # symmetric around the step: no lag
    with pytest.raises(AnimateError):
        smooth_driver(np.zeros((5, 60, 2)))
    with pytest.raises(AnimateError):
        smooth_driver(np.repeat(face()[None], 5, 0), np.zeros((5, 3, 2)))
