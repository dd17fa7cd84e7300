"""Evaluation protocol: it lines targets up with their landmarks (an oracle animator scores perfectly, a
shuffled one does not), keeps per-frame values for pairing, and refuses bad options in one line."""
import json
import shutil

import numpy as np
import pytest

from animate_cli.errors import AnimateError
from animate_cli.evaluation import cli, protocol
from animate_cli.evaluation.compare import compare
from animate_cli.evaluation.metrics import PSNR_MAX
from animate_cli.face.regions import eye_gaps, mouth_open
from conftest import shared_file
from synthetic_faces import face


class FakeAnimator:
    """Returns the true target crop for given landmarks (oracle) or another target's (shuffled)."""

    resolution = 64
    finetune_steps = 0
    registry: list = []

    def __init__(self, shuffled: bool):
        self.shuffled = shuffled

    def prepare(self, shots, shot_landmarks):
        assert 1 <= len(shots) == len(shot_landmarks) and shots[0].shape == (64, 64, 3)

    def render(self, target_landmarks):
        out = []
        for lm in target_landmarks:
            for clip in self.registry:
                for targets, landmarks in ((clip.targets, clip.target_landmarks),
                                           (clip.open_targets, clip.open_target_landmarks),
                                           (clip.open_eye_targets, clip.open_eye_target_landmarks)):
                    hit = [i for i, t in enumerate([] if landmarks is None else landmarks) if np.array_equal(t, lm)]
                    if hit:
                        i = (hit[0] + 1) % len(targets) if self.shuffled else hit[0]
                        out.append(targets[i])
                        break
                if hit:
                    break
            else:  # cross-identity landmarks: not a real frame; give the clip's first shot
                out.append(self.registry[0].shots[0])
        return np.stack(out)


@pytest.mark.needs_shared
@pytest.mark.slow
def test_protocol_ranks_oracle_above_shuffled(tmp_path, monkeypatch, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(shared_file("fixtures/single_face.mp4"), clips / "a.mp4")
    shutil.copy(shared_file("fixtures/carphone.mp4"), clips / "b.mp4")
    real_load = protocol.load_eval_clip
    FakeAnimator.registry = []

    def recording_load(*a, **k):
        clip = real_load(*a, **k)
        FakeAnimator.registry.append(clip)
        return clip

    monkeypatch.setattr(protocol, "load_eval_clip", recording_load)
    monkeypatch.setattr(protocol, "make_animator", lambda model, **k: FakeAnimator(model == "shuffled"))
    out = tmp_path / "eval.json"
    report = protocol.evaluate(clips, models=("oracle", "shuffled"), shots=(1, 2), targets=3, out=str(out),
                               max_frames=40, mouth_targets=4, eye_targets=3, follow=False)  # follow: its own tests
    assert json.loads(out.read_text()) == report
    progress = capsys.readouterr().err
    assert "oracle self-reenactment K=1" in progress and "per_frame" not in progress  # means only
    assert report["clips"] == ["a.mp4", "b.mp4"]
    assert report["finetune_steps"] is None and report["models"]["oracle"]["finetune_steps"] == 0  # asked / done
    o, s = report["models"]["oracle"]["self"]["K=1"], report["models"]["shuffled"]["self"]["K=1"]
    assert o["frames"] == 6 and o["fid"] is None  # too few frames for FID
    assert o["ssim"] == pytest.approx(1, abs=1e-4) and o["psnr"] == PSNR_MAX and o["lpips"] < 1e-4
    assert o["csim"] > 0.99  # not exactly 1: the output's face is aligned by re-detected landmarks
    assert s["ssim"] < o["ssim"] and s["psnr"] < o["psnr"] and s["lpips"] > o["lpips"]
    for m in (o, s):
        assert -1 <= m["ssim"] <= 1 and 0 <= m["face_detected"] <= 1 and 0 <= m["landmark_error"] < 1
    assert s["landmark_error"] > o["landmark_error"]
    # The mouth metric: counted on open-mouth targets only, perfect for the oracle wherever it is defined.
    assert 0 <= o["mouth_lpips_frames"] <= 6 and len(o["per_frame"]["mouth_lpips"]) == 6
    if o["mouth_lpips_frames"]:
        assert o["mouth_lpips"] < 1e-4
    # The open-mouth settings: up to 4 open mouths a clip, all later than every shot; the oracle is perfect there.
    o_open, s_open = report["models"]["oracle"]["self"]["open K=1"], report["models"]["shuffled"]["self"]["open K=2"]
    assert 1 <= o_open["mouth_lpips_frames"] == o_open["frames"] <= 8 and o_open["mouth_lpips"] < 1e-4
    assert s_open["mouth_lpips"] > 0.01
    for clip in FakeAnimator.registry:
        assert len(clip.open_targets) == len(clip.open_target_landmarks) <= 4
        assert mouth_open(clip.open_target_landmarks).all()
    # The reopen setting: a clip's blink as the one shot, open-eyed frames away from it; the oracle is perfect.
    o_eyes, s_eyes = report["models"]["oracle"]["self"]["reopen K=1"], report["models"]["shuffled"]["self"]["reopen K=1"]
    blinking = [c for c in FakeAnimator.registry if c.shut_shot is not None]
    assert o_eyes["frames"] == sum(len(c.open_eye_targets) for c in blinking[:2])
    if o_eyes["frames"]:
        assert o_eyes["eye_lpips"] < 1e-4 and s_eyes["eye_lpips"] > o_eyes["eye_lpips"]
    for clip in blinking:
        assert len(clip.shut_shot) == 1 and 1 <= len(clip.open_eye_targets) <= 3
        assert eye_gaps(clip.shut_shot_landmarks).mean() < eye_gaps(clip.open_eye_target_landmarks).min()
    cross = report["models"]["oracle"]["cross"]
    assert -1 <= cross["csim"] <= 1 and cross["frames"] == 6
    # Per-frame values, labelled by clip, in the protocol's order: what --compare pairs up.
    assert o["per_frame"]["clip"] == ["a.mp4"] * 3 + ["b.mp4"] * 3
    assert np.mean(s["per_frame"]["ssim"]) == pytest.approx(s["ssim"], abs=1e-6)
    # The oracle beats the shuffled animator on every frame; ranked the other way round, on none.
    shuffled = {**report, "models": {"shuffled": report["models"]["shuffled"]}}
    oracle = {**report, "models": {"oracle": report["models"]["oracle"]}}
    rows = {(r["setting"], r["metric"]): r for r in compare(shuffled, oracle)}
    for metric in ("ssim", "lpips", "psnr"):
        r = rows[("K=1", metric)]
        assert (r["better"], r["worse"], r["clips_better"], r["clips"]) == (6, 0, 2, 2), metric
        assert r["gain"] > 0 and r["p"] == pytest.approx(2 / 2 ** 6)
    assert ("cross-id", "csim") in rows and ("cross-id", "ssim") not in rows
    back = {(r["setting"], r["metric"]): r for r in compare(oracle, shuffled)}
    assert back[("K=1", "lpips")]["worse"] == 6 and back[("K=1", "lpips")]["gain"] < 0
    # The same comparison from the command line, from the written files.
    a, b = tmp_path / "shuffled.json", tmp_path / "oracle.json"
    a.write_text(json.dumps(shuffled))
    b.write_text(json.dumps(oracle))
    assert cli.main(["--compare", str(a), str(b)]) == 0
    assert "frame by frame" in capsys.readouterr().out


def test_frame_plan_puts_every_target_after_every_shot():
    for n_frames, n_shots, n_targets in ((40, 8, 32), (10, 1, 3), (9, 8, 32), (200, 8, 32)):
        shots, targets = protocol.frame_plan(n_frames, n_shots, n_targets)
        assert len(shots) == min(n_shots, n_frames - 1) and len(set(targets)) == len(targets) >= 1
        assert targets.min() > shots.max() and targets.max() < n_frames and len(targets) <= n_targets


def test_open_mouth_plan_spreads_over_later_open_frames_only():
    is_open = np.zeros(60, bool)
    is_open[[3, 20, 21, 22, 30, 40, 41, 59]] = True
    chosen = protocol.open_mouth_plan(is_open, after=10, n=4)
    assert len(chosen) == 4 and is_open[chosen].all() and chosen.min() > 10
    assert chosen[0] == 20 and chosen[-1] == 59  # the first and the last candidate: spread, not the first four
    assert list(protocol.open_mouth_plan(is_open, after=10, n=50)) == [20, 21, 22, 30, 40, 41, 59]
    assert len(protocol.open_mouth_plan(is_open, after=59, n=4)) == 0 and len(protocol.open_mouth_plan(is_open, 10, 0)) == 0


def test_eye_reopen_plan_takes_a_blink_and_open_eyes_away_from_it():
    gaps = np.full((60, 2), 0.3)
    gaps[[5, 40, 41]] = 0.25  # a little less open: not targets (below the median of 0.3)
    gaps[30] = [0.05, 0.08]  # the blink
    gaps[31] = [0.2, 0.2]
    shot, targets = protocol.eye_reopen_plan(gaps, 4)
    assert shot == 30 and len(targets) == 4
    assert all(abs(t - 30) >= protocol.BLINK_APART and t not in (5, 40, 41) for t in targets)
    assert targets[0] == 0 and targets[-1] == 59  # spread over the candidates
    assert protocol.eye_reopen_plan(np.full((60, 2), 0.3), 4)[0] is None  # no blink: no setting
    assert protocol.eye_reopen_plan(gaps, 0)[0] is None


def test_command_options_reach_the_protocol(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake(clips, opts):
        seen.update(clips=clips, opts=opts)
        return {}

    monkeypatch.setattr(cli, "evaluate", fake)
    assert cli.main([str(tmp_path), "--model", "warp", "--model", "w", "--shots", "1", "--targets", "4",
                     "--finetune-steps", "0", "--no-cross", "--no-progress", "--out", str(tmp_path / "r.json"), "--mouth-targets", "5", "--eye-targets", "6",
                     "--no-self", "--follow", "--follow-frames", "50", "--measure-with", "dlib", "--detector", "mesh"]) == 0
    o = seen["opts"]
    assert (o.models, o.shots, o.targets, o.finetune_steps, o.cross) == (("warp", "w"), (1,), 4, 0, False)
    assert o.mouth_targets == 5 and o.eye_targets == 6
    assert (o.self_reenactment, o.follow, o.follow_frames, o.measure_with, o.detector) == (False, True, 50, "dlib", "mesh")
    assert (o.fid, o.device, o.out, seen["clips"]) == (True, "cpu", str(tmp_path / "r.json"), tmp_path)


def test_bad_options_are_one_line_and_write_nothing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "eval.json"
    for argv in (["--targets", "0"], ["--shots", "0"], ["--finetune-steps", "-1"], ["--max-clips", "0"],
                 ["--mouth-targets", "-1"], ["--eye-targets", "-1"]):
        assert cli.main([str(tmp_path / "empty"), "--out", str(out)] + argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and argv[0] in err and "\n" not in err, err
    for folder in ("empty", "missing"):
        assert cli.main([str(tmp_path / folder), "--out", str(out)]) == 1
        assert capsys.readouterr().err.startswith("error: ")
    assert not out.exists()
    with pytest.raises(AnimateError, match="no model"):
        protocol.EvaluateOptions(models=())


def test_mouth_metric_counts_open_mouths_only_and_sees_missing_teeth():
    """Targets 0 and 2 open their mouths, target 1 keeps it shut: the metric is NaN there. A prediction with
    the mouth closed scores worse than the target itself on the open ones."""
    opened, lm_open = face(128, mouth_gap=0.3)
    shut, lm_shut = face(128, mouth_gap=0.0)
    targets = np.stack([opened, shut, opened])
    lms = np.stack([lm_open, lm_shut, lm_open])
    same = protocol.open_mouth_lpips(targets, targets, lms)
    assert np.isnan(same[1]) and np.all(np.abs(same[[0, 2]]) < 1e-5)
    closed_pred = np.stack([shut, shut, shut])
    worse = protocol.open_mouth_lpips(closed_pred, targets, lms)
    assert np.isnan(worse[1]) and np.all(worse[[0, 2]] > 0.05)
    none_open = protocol.open_mouth_lpips(targets[[1]], targets[[1]], lms[[1]])
    assert np.isnan(none_open).all()


def test_summary_averages_a_partial_metric_over_its_frames_and_writes_valid_json():
    s = protocol._Scores()
    s.add("a", lpips=[0.1, 0.2], mouth_lpips=[np.nan, 0.4])
    s.add("b", lpips=[0.3], mouth_lpips=[0.2])
    summary = protocol._summary(s, None)
    assert summary["mouth_lpips"] == pytest.approx(0.3) and summary["mouth_lpips_frames"] == 2
    assert summary["lpips"] == pytest.approx(0.2) and "lpips_frames" not in summary and summary["frames"] == 3
    assert summary["per_frame"]["mouth_lpips"] == [None, 0.4, 0.2]
    json.dumps(summary, allow_nan=False)  # strict JSON: no NaN
    empty = protocol._Scores()
    empty.add("a", mouth_lpips=[np.nan])
    assert protocol._summary(empty, None)["mouth_lpips"] is None
    assert protocol._summary(empty, None)["mouth_lpips_frames"] == 0


def test_painting_models_report_what_they_painted_on_open_mouths_only():
    """An animator with a mouth painter gives paint_share / paint_size per frame; the protocol keeps them on
    open-mouth targets only (as the mouth metric) and renders everyone else as before."""
    class Painting:
        paints = True

        def render_with_paint_usage(self, lms):
            n = len(lms)
            return np.zeros((n, 8, 8, 3), np.uint8), {"paint_share": np.full(n, 0.9), "paint_size": np.full(n, 0.2)}

    class Plain:
        def render(self, lms):
            return np.ones((len(lms), 8, 8, 3), np.uint8)

    lms = np.stack([face(128, mouth_gap=g)[1] for g in (0.3, 0.0, 0.3)] * 4)  # 12 frames: batches of 8 and 4
    frames, usage = protocol._render_painting(Painting(), lms)
    assert frames.shape == (12, 8, 8, 3)
    assert np.isnan(usage["paint_share"][1::3]).all() and (usage["paint_share"][0::3] == 0.9).all()
    assert (usage["paint_size"][2::3] == 0.2).all()
    frames, usage = protocol._render_painting(Plain(), lms)
    assert usage == {} and frames.min() == 1
