"""Paired comparison of two evaluation reports: the sign test, refusals, and the command's one-line errors."""
import json

import numpy as np
import pytest

from animate_cli.errors import AnimateError
from animate_cli.evaluation import cli
from animate_cli.evaluation.compare import compare, gain_interval, sign_test


def test_sign_test_matches_the_binomial():
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 5) == 1.0
    assert sign_test(6, 0) == pytest.approx(2 / 64) == sign_test(0, 6)
    assert sign_test(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert sign_test(150, 10) < 1e-20


def _report(clips, ssim_values, per_frame=True):
    setting = {"ssim": float(np.mean(ssim_values)), "frames": len(clips)}
    if per_frame:
        setting["per_frame"] = {"clip": clips, "ssim": ssim_values}
    return {"models": {"m": {"self": {"K=1": setting}}}}


def test_compare_counts_frames_and_clips_where_b_is_better():
    a = _report(["x", "x", "y", "y"], [0.5, 0.5, 0.5, 0.5])
    b = _report(["x", "x", "y", "y"], [0.6, 0.7, 0.4, 0.5])
    (r,) = compare(a, b)
    assert (r["better"], r["worse"], r["ties"], r["clips_better"], r["clips"]) == (2, 1, 1, 1, 2)
    assert r["gain"] == pytest.approx(0.05) and r["p"] == pytest.approx(1.0)
    assert r["low"] < r["gain"] < r["high"]
    # Equal frames tie: nothing better, nothing worse, p = 1.
    (r,) = compare(a, a)
    assert (r["better"], r["worse"], r["ties"], r["p"]) == (0, 0, 4, 1.0)
    assert r["low"] == r["high"] == 0


def test_gain_interval_holds_the_mean_and_narrows_with_more_frames():
    rng = np.random.default_rng(1)
    few, many = rng.normal(0.01, 0.02, 20), rng.normal(0.01, 0.02, 500)
    for gain in (few, many):
        low, high = gain_interval(gain)
        assert low < gain.mean() < high
    width = lambda g: np.subtract(*gain_interval(g)[::-1])  # noqa: E731
    assert width(many) < 0.4 * width(few)
    assert width(few) == pytest.approx(2 * 1.96 * few.std() / np.sqrt(20), rel=0.25)  # the normal approximation
    assert gain_interval(np.full(7, 0.3)) == pytest.approx((0.3, 0.3))
    assert gain_interval(few) == gain_interval(few)  # seeded: a report compares the same way twice


def test_compare_pairs_a_partial_metric_on_the_frames_both_reports_cover():
    """The mouth metric is null on closed-mouth frames: only frames defined in both reports are paired, and a
    clip without one does not count."""
    def report(values):
        clips = ["x", "x", "y", "y", "z"]
        return {"models": {"m": {"self": {"K=1": {"frames": 5, "per_frame": {"clip": clips, "mouth_lpips": values}}}}}}

    a = report([0.5, None, 0.5, 0.5, None])
    b = report([0.4, 0.1, 0.6, None, 0.1])
    (r,) = compare(a, b)
    assert r["metric"] == "mouth_lpips"
    assert (r["better"], r["worse"], r["ties"], r["clips_better"], r["clips"]) == (1, 1, 0, 1, 2)
    assert r["a"] == pytest.approx(0.5) and r["b"] == pytest.approx(0.5) and r["gain"] == pytest.approx(0.0)
    assert compare(report([None] * 5), b) == []  # nothing to pair


def test_compare_refuses_reports_that_do_not_pair(tmp_path, capsys):
    with pytest.raises(AnimateError, match="different clips"):
        compare(_report(["a", "a"], [0.5, 0.6]), _report(["a", "b"], [0.5, 0.6]))
    with pytest.raises(AnimateError, match="per-frame"):
        compare(_report(["a"], [0.5], per_frame=False), _report(["a"], [0.6]))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_report(["a", "b"], [0.5, 0.6])))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    not_a_report = tmp_path / "list.json"
    not_a_report.write_text("[1, 2]")
    ragged = tmp_path / "ragged.json"  # two ssim values for one labelled frame
    ragged.write_text(json.dumps(_report(["a"], [0.5, 0.6])))
    cross_only = tmp_path / "cross.json"
    cross_only.write_text(json.dumps({"models": {"m": {"self": {}, "cross": {}}}}))
    for argv in (["--compare", str(good), str(bad)], ["--compare", str(good), str(tmp_path / "missing.json")], [],
                 ["--compare", str(good), str(not_a_report)], ["--compare", str(ragged), str(ragged)],
                 ["--compare", str(good), str(cross_only)]):
        assert cli.main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err, err
    assert cli.main(["--compare", str(good), str(good)]) == 0
    capsys.readouterr()


def test_bad_usage_exits_2_with_one_line(tmp_path, capsys):
    for argv in (["--compare", "only-one.json"], ["--targets", "many"], ["--static"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "animate-evaluate --help" in err and "\n" not in err, err


def test_the_table_shows_the_columns_the_report_has(capsys):
    """print_table: a column no setting has a value in (the eye metric without --eye-targets, a painter's usage
    for the warp) is left out, so the others keep their width; the ones measured are shown."""
    from animate_cli.evaluation.compare import print_table
    report = {"clips_dir": "val", "clips": ["a.mp4"], "models": {"warp": {"self": {
        "K=1": {"ssim": 0.7, "lpips": 0.2, "mouth_lpips": None, "frames": 3},
        "reopen K=1": {"eye_lpips": 0.25, "frames": 2}}}}}
    print_table(report)
    out = capsys.readouterr().out
    assert "eyes" in out and "ssim" in out and "lpips" in out
    assert "painted" not in out and "mouth" not in out and "csim" not in out
