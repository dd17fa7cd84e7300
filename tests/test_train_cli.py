"""The training commands: options reach the stage they run, bad usage exits 2, bad values exit 1, each
with one `error:` line on stderr and nothing written."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from animate_cli.cli_common import EXIT_USAGE
from animate_cli.train import cli
from animate_cli.train.preprocess import PreprocessOptions
from animate_cli.train.trainer import Trainer, TrainOptions
from test_episodes import make_cache

SRC = Path(__file__).resolve().parents[1] / "src"


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache"), frames=4, size=32)


def test_train_options_reach_the_trainer(cache, tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_train(opts):
        seen["opts"] = opts
        return {"step": 0, "rank": 0}

    monkeypatch.setattr(cli, "train", fake_train)
    assert cli.train_main(["--cache", str(cache), "--run-dir", str(tmp_path / "r"), "--preset", "paper",
                           "--generator", "fsth", "--perceptual-size", "0", "--no-amp", "--no-augment",
                           "--random-reference", "0.25", "--max-minutes", "1.5", "--init", "w",
                           "--photos", "lfw", "--photo-share", "0.3", "--paint-size", "32", "--lr-paint", "1e-3"]) == 0
    o = seen["opts"]
    assert (o.photos, o.photo_share, o.paint_size, o.lr_paint) == ("lfw", 0.3, 32, 1e-3)
    assert (o.preset, o.generator, o.perceptual_size, o.amp, o.augment) == ("paper", "fsth", None, False, False)
    assert (o.random_reference, o.max_minutes, o.init, o.run) == (0.25, 1.5, "w", str(tmp_path / "r"))
    # everything not given is the dataclass default
    given = {"cache", "run", "preset", "generator", "perceptual_size", "amp", "augment", "random_reference",
             "max_minutes", "init", "photos", "photo_share", "paint_size", "lr_paint"}
    d = TrainOptions()
    assert all(getattr(o, k) == getattr(d, k) for k in vars(d) if k not in given)
    assert json.loads(capsys.readouterr().out) == {"step": 0, "rank": 0}


def test_train_bad_usage_exits_2_and_bad_values_exit_1(cache, tmp_path, capsys):
    run = tmp_path / "run"
    for argv in (["--cache", str(cache), "--preset", "tiny"],  # for tests only, not a choice
                 ["--cache", str(cache), "--generator", "nope"], ["--cache", str(cache), "--lr-g", "fast"],
                 ["--cache", str(cache), "--refine"], ["--cache", str(cache), "--n-refs", "3"],  # removed
                 ["--run-dir", str(run)]):  # no --cache
        assert cli.train_main(argv + ["--run-dir", str(run)]) == EXIT_USAGE, argv
        assert "animate-train --help" in one_error_line(capsys)
    for flag, value in (("--random-reference", "1.5"), ("--mouth-weight", "-1"), ("--batch-size", "0")):
        assert cli.train_main(["--cache", str(cache), "--run-dir", str(run), flag, value, "--no-progress"]) == 1
        assert flag in one_error_line(capsys)
    assert cli.train_main(["--cache", str(tmp_path / "none"), "--run-dir", str(run), "--no-progress"]) == 1
    assert "index.json" in one_error_line(capsys)
    assert not run.exists()


@pytest.fixture(scope="module")
def run_dir(cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    Trainer(TrainOptions(cache=str(cache), run=str(run), preset="tiny", resolution=32, k_shots=2,
                         val_per_identity=0, progress=False)).save()
    return run


def test_export_writes_the_weights_or_one_error_line(run_dir, tmp_path, capsys):
    assert cli.train_main(["--run-dir", str(run_dir), "--export", str(tmp_path / "w")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "w") and (tmp_path / "w" / "config.json").exists()
    assert cli.train_main(["--run-dir", str(tmp_path / "empty"), "--export", str(tmp_path / "w2")]) == 1
    assert "no checkpoint" in one_error_line(capsys) and not (tmp_path / "w2").exists()


@pytest.mark.slow
def test_the_module_torchrun_starts_runs_the_train_command(run_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.run([sys.executable, "-m", "animate_cli.train.cli", "--run-dir", str(run_dir),
                        "--export", str(tmp_path / "w3")], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "w3" / "config.json").exists()


def test_preprocess_options_reach_the_stage(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake(src, dst, opts):
        seen.update(src=src, dst=dst, opts=opts)
        return {"processed": 0}

    monkeypatch.setattr(cli, "preprocess_dataset", fake)
    assert cli.preprocess_main([str(tmp_path / "a"), str(tmp_path / "b"), "--resolution", "64", "--detector", "fan",
                                "--limit", "3", "--no-progress"]) == 0
    assert seen["opts"] == PreprocessOptions(resolution=64, detector="fan", limit=3, progress=False)
    assert (seen["src"], seen["dst"]) == (tmp_path / "a", tmp_path / "b")
    assert json.loads(capsys.readouterr().out) == {"processed": 0}


def test_preprocess_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [([str(tmp_path / "missing"), str(tmp_path / "c")], 1), ([str(tmp_path / "empty"), str(tmp_path / "c")], 1),
             ([str(tmp_path / "empty"), str(tmp_path / "c"), "--workers", "0"], 1),
             ([str(tmp_path / "empty"), str(tmp_path / "c"), "--detector", "opencv"], EXIT_USAGE),
             ([str(tmp_path / "empty")], EXIT_USAGE)]
    for argv, code in cases:
        assert cli.preprocess_main(argv + ["--no-progress"]) == code, argv
        one_error_line(capsys)
    assert not (tmp_path / "c").exists()
