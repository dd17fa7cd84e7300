"""Evaluation: metric functions behave (identity best, ranges valid) and the protocol lines targets up
with their landmarks (an oracle animator scores perfectly, a shuffled one does not)."""
import json
import shutil

import cv2
import numpy as np
import pytest

from animate_cli import evaluate as ev
from conftest import EXAMPLES, shared_file


@pytest.fixture(scope="module")
def frames():
    """Eight 64x64 'frames': shifted crops of the bundled portrait (similar, but not identical)."""
    img = cv2.cvtColor(cv2.imread(str(EXAMPLES / "portrait.png")), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA)
    return np.stack([img[8 + 4 * i:72 + 4 * i, 20 + 3 * i:84 + 3 * i] for i in range(8)])


def test_identical_frames_score_best(frames):
    shuffled = np.roll(frames, 3, axis=0)
    s_same, s_shuf = ev.ssim(frames, frames), ev.ssim(frames, shuffled)
    assert np.allclose(s_same, 1, atol=1e-4) and (s_shuf < 0.9).all() and (s_shuf > -1).all()
    p_same, p_shuf = ev.psnr(frames, frames), ev.psnr(frames, shuffled)
    assert (p_same == ev.PSNR_MAX).all() and (p_shuf < 30).all() and (p_shuf > 5).all()
    l_same, l_shuf = ev.lpips(frames, frames), ev.lpips(frames, shuffled)
    assert np.allclose(l_same, 0, atol=1e-5) and (l_shuf > 0.05).all() and (l_shuf < 1.5).all()
    # a mild degradation sits in between
    noisy = np.clip(frames.astype(int) + np.random.default_rng(0).normal(0, 8, frames.shape), 0, 255).astype(np.uint8)
    assert (s_shuf < ev.ssim(frames, noisy)).all() and (ev.ssim(frames, noisy) < s_same).all()
    assert (ev.lpips(frames, noisy) < l_shuf).all()


def test_ssim_matches_textbook_on_a_flat_pair():
    """Flat images: SSIM reduces to the luminance term (2ab+C1)/(a²+b²+C1)."""
    a = np.full((1, 32, 32, 3), 100, np.uint8)
    b = np.full((1, 32, 32, 3), 140, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ev.ssim(a, b)[0] == pytest.approx((2 * 100 * 140 + c1) / (100**2 + 140**2 + c1), rel=1e-4)
    assert ev.psnr(a, b)[0] == pytest.approx(10 * np.log10(255**2 / 40**2), rel=1e-6)


def test_landmark_error_is_normalised_by_interocular_distance():
    lm = np.zeros((68, 2), np.float32)
    lm[36], lm[45] = (10, 50), (60, 50)  # inter-ocular 50 px
    assert ev.landmark_error(lm + [5, 0], lm)[0] == pytest.approx(0.1)
    assert ev.landmark_error(lm, lm)[0] == 0


def test_frechet_distance():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(400, 8))
    assert ev.frechet_distance(f, f) == pytest.approx(0, abs=1e-6)
    assert ev.frechet_distance(f, f + 2.0) == pytest.approx(8 * 4.0, rel=1e-3)


def test_inception_features(frames):
    feats = ev.Inception().features(frames[:2])
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    assert np.abs(feats[0] - feats[1]).sum() > 0


def _pts(path):
    lines = path.read_text().split("{")[1].split("}")[0].split()
    return np.array(lines, np.float32).reshape(68, 2) - 1  # .pts is 1-based


def test_csim_same_person_above_other_person():
    ein = cv2.cvtColor(cv2.imread(str(shared_file("fixtures/einstein.jpg"))), cv2.COLOR_BGR2RGB)
    bb = cv2.cvtColor(cv2.imread(str(shared_file("fixtures/breakingbad.jpg"))), cv2.COLOR_BGR2RGB)
    le, lb = _pts(shared_file("fixtures/einstein.pts")), _pts(shared_file("fixtures/breakingbad.pts"))
    ident = ev.FaceIdentity()
    same = ident.compare(ein, le, ein, le)
    # the same photo, slightly degraded, is still the same person
    blurred = cv2.GaussianBlur(ein, (5, 5), 1.5)
    near = ident.compare(ein, le, blurred, le)
    other = ident.compare(ein, le, bb, lb)
    assert same[0] == pytest.approx(1, abs=1e-6) and same[1] == pytest.approx(0, abs=1e-6)
    assert near[1] < 0.4 < 0.6 < other[1] and near[0] > other[0]


class FakeAnimator:
    """Returns the true target crop for given landmarks (oracle) or another target's (shuffled)."""

    resolution = 64
    registry: list = []

    def __init__(self, shuffled: bool):
        self.shuffled = shuffled

    def prepare(self, shots, shot_landmarks):
        assert 1 <= len(shots) == len(shot_landmarks) and shots[0].shape == (64, 64, 3)

    def render(self, target_landmarks):
        out = []
        for lm in target_landmarks:
            for clip in self.registry:
                hit = [i for i, t in enumerate(clip.target_landmarks) if np.array_equal(t, lm)]
                if hit:
                    i = (hit[0] + 1) % len(clip.targets) if self.shuffled else hit[0]
                    out.append(clip.targets[i])
                    break
            else:  # cross-identity landmarks: not a real frame; give the clip's first shot
                out.append(self.registry[0].shots[0])
        return np.stack(out)


def test_protocol_ranks_oracle_above_shuffled(tmp_path, monkeypatch, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(shared_file("fixtures/single_face.mp4"), clips / "a.mp4")
    shutil.copy(shared_file("fixtures/carphone.mp4"), clips / "b.mp4")
    real_load = ev.load_eval_clip
    FakeAnimator.registry = []

    def recording_load(*a, **k):
        clip = real_load(*a, **k)
        FakeAnimator.registry.append(clip)
        return clip

    import animate_cli.animators as animators

    monkeypatch.setattr(ev, "load_eval_clip", recording_load)
    monkeypatch.setattr(animators, "make_animator", lambda model, **k: FakeAnimator(model == "shuffled"))
    out = tmp_path / "eval.json"
    report = ev.evaluate(clips, ["oracle", "shuffled"], shots=(1, 2), n_targets=3, out_json=out, max_frames=10)
    assert json.loads(out.read_text()) == report
    progress = capsys.readouterr().err
    assert "oracle self-reenactment K=1" in progress and "per_frame" not in progress  # means only
    assert report["clips"] == ["a.mp4", "b.mp4"]
    o, s = report["models"]["oracle"]["self"]["K=1"], report["models"]["shuffled"]["self"]["K=1"]
    assert o["frames"] == 6 and o["fid"] is None  # too few frames for FID
    assert o["ssim"] == pytest.approx(1, abs=1e-4) and o["psnr"] == ev.PSNR_MAX and o["lpips"] < 1e-4
    assert o["csim"] > 0.99  # not exactly 1: the output's face is aligned by re-detected landmarks
    assert s["ssim"] < o["ssim"] and s["psnr"] < o["psnr"] and s["lpips"] > o["lpips"]
    for m in (o, s):
        assert -1 <= m["ssim"] <= 1 and 0 <= m["face_detected"] <= 1 and 0 <= m["landmark_error"] < 1
    assert s["landmark_error"] > o["landmark_error"]
    cross = report["models"]["oracle"]["cross"]
    assert -1 <= cross["csim"] <= 1 and cross["frames"] == 6
    # Per-frame values, labelled by clip, in the protocol's order: what --compare pairs up.
    assert o["per_frame"]["clip"] == ["a.mp4"] * 3 + ["b.mp4"] * 3
    assert np.mean(s["per_frame"]["ssim"]) == pytest.approx(s["ssim"], abs=1e-6)
    # The oracle beats the shuffled animator on every frame; ranked the other way round, on none.
    shuffled = {**report, "models": {"shuffled": report["models"]["shuffled"]}}
    oracle = {**report, "models": {"oracle": report["models"]["oracle"]}}
    rows = {(r["setting"], r["metric"]): r for r in ev.compare(shuffled, oracle)}
    for metric in ("ssim", "lpips", "psnr"):
        r = rows[("K=1", metric)]
        assert (r["better"], r["worse"], r["clips_better"], r["clips"]) == (6, 0, 2, 2), metric
        assert r["gain"] > 0 and r["p"] == pytest.approx(2 / 2 ** 6)
    assert ("cross-id", "csim") in rows and ("cross-id", "ssim") not in rows
    back = {(r["setting"], r["metric"]): r for r in ev.compare(oracle, shuffled)}
    assert back[("K=1", "lpips")]["worse"] == 6 and back[("K=1", "lpips")]["gain"] < 0
    # The same comparison from the command line, from the written files.
    a, b = tmp_path / "shuffled.json", tmp_path / "oracle.json"
    a.write_text(json.dumps(shuffled))
    b.write_text(json.dumps(oracle))
    assert ev.main(["--compare", str(a), str(b)]) == 0


def test_sign_test_matches_the_binomial():
    assert ev.sign_test(0, 0) == 1.0
    assert ev.sign_test(5, 5) == 1.0
    assert ev.sign_test(6, 0) == pytest.approx(2 / 64) == ev.sign_test(0, 6)
    assert ev.sign_test(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert ev.sign_test(150, 10) < 1e-20


def _report(clips, ssim_values, per_frame=True):
    setting = {"ssim": float(np.mean(ssim_values)), "frames": len(clips)}
    if per_frame:
        setting["per_frame"] = {"clip": clips, "ssim": ssim_values}
    return {"models": {"m": {"self": {"K=1": setting}}}}


def test_compare_refuses_reports_that_do_not_pair(tmp_path, capsys):
    with pytest.raises(ev.AnimateError, match="different clips"):
        ev.compare(_report(["a", "a"], [0.5, 0.6]), _report(["a", "b"], [0.5, 0.6]))
    with pytest.raises(ev.AnimateError, match="per-frame"):
        ev.compare(_report(["a"], [0.5], per_frame=False), _report(["a"], [0.6]))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_report(["a", "b"], [0.5, 0.6])))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    not_a_report = tmp_path / "list.json"
    not_a_report.write_text("[1, 2]")
    ragged = tmp_path / "ragged.json"  # two ssim values for one labelled frame
    ragged.write_text(json.dumps(_report(["a"], [0.5, 0.6])))
    for argv in (["--compare", str(good), str(bad)], ["--compare", str(good), str(tmp_path / "missing.json")], [],
                 ["--compare", str(good), str(not_a_report)], ["--compare", str(ragged), str(ragged)]):
        assert ev.main(argv) == 1
        err = capsys.readouterr().out.strip()
        assert err.startswith("error:") and "\n" not in err, err
    # Equal frames tie: nothing better, nothing worse, p = 1.
    (r,) = ev.compare(_report(["a", "b"], [0.5, 0.6]), _report(["a", "b"], [0.5, 0.6]))
    assert (r["better"], r["worse"], r["ties"], r["p"]) == (0, 0, 2, 1.0)
