"""The run folder: RNG states that survive a weights-only load, atomic checkpoints, sample grids, export."""
import random

import cv2
import numpy as np
import pytest
import torch

from animate_cli.config import preset
from animate_cli.errors import AnimateError
from animate_cli.models.checkpoint import load_checkpoint
from animate_cli.models.discriminator import Discriminator
from animate_cli.models.embedder import Embedder
from animate_cli.models.generator import build_generator
from animate_cli.train import rundir


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_state_restores_every_generator_through_a_weights_only_load(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    torch.save(rundir.rng_state(), tmp_path / "rng.pt")
    first = _draws()
    rundir.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == first


def _networks(seed=0):
    cfg = preset("tiny")
    torch.manual_seed(seed)
    return cfg, Embedder(cfg), build_generator(cfg), Discriminator(cfg, 3)


def test_checkpoint_replaces_the_old_one_and_export_drops_the_training_state(tmp_path):
    run = tmp_path / "run"
    assert rundir.find_checkpoint(run) is None
    cfg, E, G, D = _networks()
    rundir.save_run_checkpoint(run, cfg, E, G, D, {"step": 1})
    cfg, E, G, D = _networks(seed=1)
    rundir.save_run_checkpoint(run, cfg, E, G, D, {"step": 2})
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint"]  # no .tmp or .old left
    _, _, g, _, state = rundir.load_run_checkpoint(rundir.find_checkpoint(run))
    assert state["step"] == 2 and all(torch.equal(v, G.state_dict()[k]) for k, v in g.state_dict().items())
    (run / "checkpoint").rename(run / "checkpoint.old")  # a kill between the two renames
    assert rundir.find_checkpoint(run) == run / "checkpoint.old"
    out = rundir.export(run, tmp_path / "weights")
    assert (out / "config.json").exists() and not (out / rundir.STATE).exists()
    assert load_checkpoint(out, with_discriminator=True)[3] is not None
    with pytest.raises(AnimateError, match="no checkpoint"):
        rundir.export(tmp_path / "nothing", tmp_path / "w2")


def test_sample_grid_puts_tiles_side_by_side_and_rows_below(tmp_path):
    black, white = -torch.ones(3, 8, 8), torch.ones(3, 8, 8)
    path = tmp_path / "samples" / "step.png"
    rundir.write_sample_grid(path, [[black, white, black], [white, black, white]])
    img = cv2.imread(str(path))
    assert img.shape == (16, 24, 3) and not list(path.parent.glob("*.tmp.png"))
    assert img[0, 0].max() == 0 and img[0, 8].min() == 255 and img[8, 0].min() == 255


def test_losses_csv_has_one_header(tmp_path):
    rundir.append_losses(tmp_path, {"step": 1, "loss_g": 0.5})
    rundir.append_losses(tmp_path, {"step": 2, "loss_g": 0.25})
    assert (tmp_path / rundir.LOSSES).read_text().splitlines() == ["step,loss_g", "1,0.5", "2,0.25"]
