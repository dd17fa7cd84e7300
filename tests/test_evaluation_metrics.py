"""Evaluation metrics: identity scores best, ranges are valid, textbook values on simple cases."""
import cv2
import numpy as np
import pytest

from animate_cli.evaluation import metrics as m
from conftest import EXAMPLES, shared_file


@pytest.fixture(scope="module")
def frames():
    """Eight 64x64 'frames': shifted crops of the bundled portrait (similar, but not identical)."""
    img = cv2.cvtColor(cv2.imread(str(EXAMPLES / "portrait.png")), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA)
    return np.stack([img[8 + 4 * i:72 + 4 * i, 20 + 3 * i:84 + 3 * i] for i in range(8)])


@pytest.mark.slow
def test_identical_frames_score_best(frames):
    shuffled = np.roll(frames, 3, axis=0)
    s_same, s_shuf = m.ssim(frames, frames), m.ssim(frames, shuffled)
    assert np.allclose(s_same, 1, atol=1e-4) and (s_shuf < 0.9).all() and (s_shuf > -1).all()
    p_same, p_shuf = m.psnr(frames, frames), m.psnr(frames, shuffled)
    assert (p_same == m.PSNR_MAX).all() and (p_shuf < 30).all() and (p_shuf > 5).all()
    l_same, l_shuf = m.lpips(frames, frames), m.lpips(frames, shuffled)
    assert np.allclose(l_same, 0, atol=1e-5) and (l_shuf > 0.05).all() and (l_shuf < 1.5).all()
    # a mild degradation sits in between
    noisy = np.clip(frames.astype(int) + np.random.default_rng(0).normal(0, 8, frames.shape), 0, 255).astype(np.uint8)
    assert (s_shuf < m.ssim(frames, noisy)).all() and (m.ssim(frames, noisy) < s_same).all()
    assert (m.lpips(frames, noisy) < l_shuf).all()


def test_ssim_matches_textbook_on_a_flat_pair():
    """Flat images: SSIM reduces to the luminance term (2ab+C1)/(a²+b²+C1)."""
    a = np.full((1, 32, 32, 3), 100, np.uint8)
    b = np.full((1, 32, 32, 3), 140, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert m.ssim(a, b)[0] == pytest.approx((2 * 100 * 140 + c1) / (100**2 + 140**2 + c1), rel=1e-4)
    assert m.psnr(a, b)[0] == pytest.approx(10 * np.log10(255**2 / 40**2), rel=1e-6)


def test_landmark_error_is_normalised_by_interocular_distance():
    lm = np.zeros((68, 2), np.float32)
    lm[36], lm[45] = (10, 50), (60, 50)  # inter-ocular 50 px
    assert m.landmark_error(lm + [5, 0], lm)[0] == pytest.approx(0.1)
    assert m.landmark_error(lm, lm)[0] == 0


def test_frechet_distance():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(400, 8))
    assert m.frechet_distance(f, f) == pytest.approx(0, abs=1e-6)
    assert m.frechet_distance(f, f + 2.0) == pytest.approx(8 * 4.0, rel=1e-3)


@pytest.mark.slow
def test_inception_features(frames):
    feats = m.Inception().features(frames[:2])
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    assert np.abs(feats[0] - feats[1]).sum() > 0


def _pts(path):
    lines = path.read_text().split("{")[1].split("}")[0].split()
    return np.array(lines, np.float32).reshape(68, 2) - 1  # .pts is 1-based


@pytest.mark.needs_shared
def test_csim_same_person_above_other_person():
    ein = cv2.cvtColor(cv2.imread(str(shared_file("fixtures/einstein.jpg"))), cv2.COLOR_BGR2RGB)
    bb = cv2.cvtColor(cv2.imread(str(shared_file("fixtures/breakingbad.jpg"))), cv2.COLOR_BGR2RGB)
    le, lb = _pts(shared_file("fixtures/einstein.pts")), _pts(shared_file("fixtures/breakingbad.pts"))
    ident = m.FaceIdentity()
    same = ident.compare(ein, le, ein, le)
    # the same photo, slightly degraded, is still the same person
    blurred = cv2.GaussianBlur(ein, (5, 5), 1.5)
    near = ident.compare(ein, le, blurred, le)
    other = ident.compare(ein, le, bb, lb)
    assert same[0] == pytest.approx(1, abs=1e-6) and same[1] == pytest.approx(0, abs=1e-6)
    assert near[1] < 0.4 < 0.6 < other[1] and near[0] > other[0]
