"""Learned shot selection: the geometry features, the fit, the CLI that writes it into a model, and its use."""
import json

import numpy as np
import pytest
import torch

from animate_cli.config import ModelConfig, preset
from animate_cli.errors import AnimateError
from animate_cli.models.checkpoint import load_checkpoint, save_checkpoint
from animate_cli.models.discriminator import Discriminator
from animate_cli.models.embedder import Embedder
from animate_cli.models.generator import build_generator
from animate_cli.references import (SELECTION_FEATURES, choose_shots, selection_cost, selection_features,
                                    shape_distance)
from animate_cli.train import cli, selection
from animate_cli.warp import DEFAULT_REG
from test_episodes import face_points, make_cache

F = {name: i for i, name in enumerate(SELECTION_FEATURES)}


def _face(size=64, seed=0):
    return face_points(size, np.random.default_rng(seed)).astype(np.float32)


def test_features_measure_framing_and_expression_apart():
    t = _face()
    unit = np.linalg.norm(t[36] - t[45])
    centre = t.mean(0)
    moved = t + np.float32([6, 0])  # same expression, framed 6 px to the right
    zoomed = (t - centre) * 1.25 + centre  # same expression, 25% larger
    mouth = t.copy()
    mouth[48:68, 1] += np.where(np.arange(20) % 12 > 6, 3, 0)  # a lower lip that drops 3 px
    f = selection_features(np.stack([t, moved, zoomed, mouth]), t[None])[0].numpy()
    assert np.allclose(f[0], 0, atol=1e-5)  # the target itself
    assert f[1, F["offset"]] == pytest.approx(6 / unit, rel=1e-4) and f[1, F["shift"]] == pytest.approx(6 / unit, rel=1e-4)
    assert f[2, F["scale"]] == pytest.approx(np.log(1.25), rel=1e-4)
    expression = [F[f"expression_{r}"] for r in ("jaw", "brows", "nose", "eyes", "mouth")]
    assert np.allclose(f[1:3, expression], 0, atol=1e-4) and np.allclose(f[1:3, F["shape"]], 0, atol=1e-5)
    assert f[3, F["expression_mouth"]] > 0.01 and f[3, F["expression_nose"]] < f[3, F["expression_mouth"]] / 3


def test_without_weights_the_cost_is_the_nearest_shape():
    rng = np.random.default_rng(1)
    shots = np.stack([_face(seed=i) + rng.normal(size=(68, 2)).astype(np.float32) for i in range(5)])
    targets = np.stack([_face(seed=9), _face(seed=10)])
    assert torch.equal(selection_cost(shots, targets, ()), shape_distance(shots, targets))
    with pytest.raises(AnimateError, match="weights"):
        selection_cost(shots, targets, (1.0, 2.0))


def test_learned_weights_prefer_the_shot_framed_like_the_target():
    """The nearest shape is a shot of the same expression framed elsewhere; a score that weighs framing
    picks the shot in place whose mouth differs a little."""
    t = _face()
    elsewhere = t * 0.8 + np.float32([10, 4])
    in_place = t.copy()
    in_place[60:68, 1] += 0.6
    shots = np.stack([elsewhere, in_place])
    assert choose_shots(shots, t[None], ()).item() == 0
    weights = np.zeros(len(SELECTION_FEATURES))
    weights[F["offset"]] = -1.0  # the predicted quality falls as the shot sits further from the target
    assert choose_shots(shots, t[None], tuple(weights)).item() == 1


def test_fit_recovers_what_predicts_the_score_and_picks_better_shots():
    rng = np.random.default_rng(0)
    feats = rng.random((400, 8, len(SELECTION_FEATURES))).astype(np.float32)
    truth = np.zeros(len(SELECTION_FEATURES))
    truth[F["offset"]], truth[F["expression_mouth"]] = -0.05, -0.02
    scores = np.log1p(10 * feats) @ truth + rng.normal(scale=0.002, size=(400, 8))
    w = selection.fit_selection(feats, scores)
    assert np.allclose(w, truth, atol=0.004)
    assert selection.chosen_score(feats, scores, w) > selection.chosen_score(feats, scores) + 0.01
    assert selection.chosen_score(feats, scores, w) == pytest.approx(scores.max(axis=1).mean(), abs=0.003)


def test_config_keeps_selection_weights_and_refuses_bad_ones():
    cfg = preset("tiny").replace(selection=tuple(float(i) for i in range(len(SELECTION_FEATURES))))
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(AnimateError, match="weights"):
        preset("tiny").replace(selection=(1.0, 2.0))
    with pytest.raises(AnimateError, match="finite"):
        preset("tiny").replace(selection=(float("nan"),) * len(SELECTION_FEATURES))
    assert preset("tiny").selection == ()  # older configs: the nearest shape, as before
    with pytest.raises(AnimateError, match="warp generator"):
        preset("tiny", "fsth").replace(selection=cfg.selection)


def _tiny_weights(folder, generator="warp"):
    cfg = preset("tiny", generator)
    torch.manual_seed(0)
    save_checkpoint(folder, cfg, Embedder(cfg), build_generator(cfg), Discriminator(cfg, 4))
    return folder


def test_fit_selection_command_writes_the_weights_the_animator_then_uses(tmp_path, capsys):
    from animate_cli.animators import make_animator

    cache = make_cache(tmp_path / "cache", {"idA": {"v1": 2}, "idB": {"v2": 2}}, frames=6, size=64)
    weights = _tiny_weights(tmp_path / "w")
    before = (weights / "embedder.safetensors").read_bytes()
    assert cli.fit_selection_main([str(cache), str(weights), "--shots", "3", "--targets", "2", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["rows"] == 8 and report["ssim_best_possible"] >= report["ssim_learned"] - 1e-9
    cfg = load_checkpoint(weights)[0]
    assert len(cfg.selection) == len(SELECTION_FEATURES) and any(cfg.selection)
    assert (weights / "embedder.safetensors").read_bytes() == before  # the networks are untouched
    assert report["warp_reg"] == cfg.warp_reg and cfg.warp_reg in selection.WARP_REGS
    assert cfg.warp_reg == max(selection.WARP_REGS, key=lambda r: report["ssim_by_warp_reg"][f"{r:g}"])
    animator = make_animator(str(weights), finetune_steps=0)
    assert animator.selection == cfg.selection and animator.warp_reg == cfg.warp_reg


def test_fit_selection_command_errors_are_one_line(tmp_path, capsys):
    cache = make_cache(tmp_path / "cache", {"idA": {"v1": 1}}, frames=6, size=64)
    fsth = _tiny_weights(tmp_path / "f", "fsth")
    warp = _tiny_weights(tmp_path / "w")
    config_before = (fsth / "config.json").read_text()
    broken = make_cache(tmp_path / "broken", {"idA": {"v1": 1}}, frames=6, size=64)
    next(broken.rglob("*.npz")).write_bytes(b"not a clip")
    warp_config = (warp / "config.json").read_text()
    ok = ["--no-progress", "--shots", "3", "--targets", "1"]  # valid on `cache`: each case breaks one thing
    for args in ([str(cache), str(fsth)], [str(cache), str(tmp_path / "none")], [str(tmp_path), str(warp)],
                 [str(broken), str(warp)], [str(cache), str(warp), "--shots", "1"],
                 [str(cache), str(warp), "--shots", "6"], [str(cache), str(warp), "--targets", "0"],
                 [str(cache), str(warp), "--max-clips", "0"], [str(cache), str(warp), "--threads", "-1"],
                 [str(cache), str(warp), "--warp-reg", "0.01", "--warp-reg", "0"],
                 [str(cache), str(warp), "--warp-reg", "nan"]):
        assert cli.fit_selection_main(args[:2] + ok + args[2:]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), (args, err)
    assert cli.fit_selection_main([str(cache), str(warp), "--shots", "two"]) == 2  # bad usage, as `animate`
    assert capsys.readouterr().err.startswith("error: ")
    assert (fsth / "config.json").read_text() == config_before
    assert (warp / "config.json").read_text() == warp_config and not list(warp.glob("*.tmp"))
    assert cli.fit_selection_main([str(cache), str(warp)] + ok) == 0  # the same call, nothing broken, succeeds


def test_config_keeps_the_warp_regularisation_and_refuses_bad_ones():
    cfg = preset("tiny").replace(warp_reg=0.02)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert ModelConfig.from_dict({**preset("tiny").to_dict(), "warp_reg": 1}).warp_reg == 1.0  # JSON int
    assert preset("tiny").warp_reg == DEFAULT_REG  # older configs: the `warp` model's spline
    for bad in (0.0, -0.01, float("nan"), 2.0, True):
        with pytest.raises(AnimateError, match="warp_reg"):
            preset("tiny").replace(warp_reg=bad)
    with pytest.raises(AnimateError, match="warp_reg"):
        ModelConfig.from_dict({**preset("tiny").to_dict(), "warp_reg": "0.01"})


def test_the_model_warps_with_its_own_regularisation(tmp_path):
    """An untrained warp generator returns its warped reference exactly, so the feed-forward output shows
    which spline the model used: its config's, not the `warp` model's."""
    from animate_cli.animators import make_animator
    from animate_cli.warp import warp_image

    weights = _tiny_weights(tmp_path / "w")
    path = weights / "config.json"
    data = json.loads(path.read_text())
    data["config"]["warp_reg"] = 0.05
    path.write_text(json.dumps(data))
    rng = np.random.default_rng(3)
    shot = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    src = _face()
    dst = (src - src.mean(0)) * np.float32([1.0, 1.15]) + src.mean(0)  # an opening mouth, a longer face
    model = make_animator(str(weights), finetune_steps=0)
    model.prepare([shot], [src])
    plain = make_animator("warp", resolution=64)
    plain.prepare([shot], [src])
    x = torch.from_numpy(shot).permute(2, 0, 1)[None].float() / 127.5 - 1
    mine = warp_image(x, src[None], dst[None], reg=0.05)
    out = torch.from_numpy(model.render(dst[None])).float()
    expected = ((mine.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1)
    assert (out - expected).abs().max() <= 1
    assert np.abs(plain.render(dst[None]).astype(int) - model.render(dst[None]).astype(int)).mean() > 0.5
