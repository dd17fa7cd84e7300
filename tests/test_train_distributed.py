"""Distributed helpers: two processes under torchrun train together; device choice; resumable sampling."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from animate_cli.train import distributed
from test_episodes import make_cache

SRC = Path(__file__).resolve().parents[1] / "src"

SCRIPT = """
import json, sys
from animate_cli.train.trainer import TrainOptions, train
s = train(TrainOptions(cache=sys.argv[1], run=sys.argv[2], preset="tiny", resolution=32, k_shots=2, batch_size=1,
                       perceptual_size=None, val_per_identity=0, max_steps=2, sample_every=2, log_every=1,
                       progress=False))
if s["rank"] == 0:
    print(json.dumps(s))
"""


CRITIC_SCRIPT = """
import json, sys
from animate_cli.train.trainer import TrainOptions, train
s = train(TrainOptions(cache=sys.argv[1], photos=sys.argv[2], init=sys.argv[3], run=sys.argv[4], preset="tiny",
                       resolution=32, paint_size=16, k_shots=2, batch_size=1, photo_share=1.0, painter_only=True,
                       mouth_adv=0.5, perceptual_size=None, val_per_identity=0, max_steps=8, sample_every=100,
                       log_every=1, progress=False))
if s["rank"] == 0:
    print(json.dumps(s))
"""


def _torchrun(script_text: str, tmp_path, *args: str, timeout: int = 150) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(script_text)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_mouth_critic_trains_under_torchrun_when_a_process_has_no_open_mouth(tmp_path):
    """--painter-only --mouth-adv on two processes, one photo episode each per step, half the photos with a shut
    mouth: steps where one process has an open mouth to judge and the other none must not wait on each other."""
    from animate_cli.train.trainer import Trainer, TrainOptions
    from test_photo_episodes import _photo_cache
    cache, photos = make_cache(tmp_path / "cache", frames=4, size=32), _photo_cache(tmp_path / "photos", size=32)
    Trainer(TrainOptions(cache=str(cache), run=str(tmp_path / "base"), preset="tiny", resolution=32, k_shots=2,
                         perceptual_size=None, val_per_identity=0, progress=False)).save()
    p = _torchrun(CRITIC_SCRIPT, tmp_path, str(cache), str(photos), str(tmp_path / "base" / "checkpoint"),
                  str(tmp_path / "run"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][0])["step"] == 8
    rows = (tmp_path / "run" / "losses.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert any(r.split(",")[header.index("loss_d")] != "" for r in rows[1:])  # the critic did learn


@pytest.mark.slow
def test_two_processes_under_torchrun(tmp_path):
    cache = make_cache(tmp_path / "cache", frames=4, size=32)
    run = tmp_path / "run"
    p = _torchrun(SCRIPT, tmp_path, str(cache), str(run))
    assert p.returncode == 0, p.stderr[-3000:]
    summaries = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    assert len(summaries) == 1  # only rank 0 reports
    s = summaries[0]
    assert s["world_size"] == 2 and s["step"] == 2 and s["episodes_per_s"] > 0
    state = torch.load(run / "checkpoint" / "train_state.pt", weights_only=True)
    assert state["step"] == 2 and state["opt_g"]["state"]  # Adam has moments: real updates happened
    assert (run / "samples" / "step_0000002.png").exists()
    rows = (run / "losses.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("step,")  # rank 0 alone writes


def test_bare_cuda_device_gets_an_index_before_set_device(monkeypatch):
    """`--device cuda` crashed on the GPU: torch.cuda.set_device refuses a device without an index."""
    chosen = []

    def set_device(dev):
        if isinstance(dev, torch.device) and dev.index is None:
            raise ValueError("Expected a torch.device with a specified index or an integer")
        chosen.append(dev)

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.setup_distributed("cuda") == torch.device("cuda", 0)
    assert distributed.setup_distributed("cuda:1") == torch.device("cuda", 1)
    assert chosen == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert distributed.setup_distributed("cpu") == torch.device("cpu") and len(chosen) == 2


def test_single_process_helpers_need_no_process_group():
    assert not distributed.is_distributed() and distributed.rank() == 0 and distributed.world() == 1
    assert distributed.any_rank(True, "cpu") and not distributed.any_rank(False, "cpu")
    m = torch.nn.Linear(2, 2)
    assert distributed.wrap(m, torch.device("cpu")) is m and distributed.unwrap(m) is m
    distributed.barrier()  # a no-op, not an error


def test_resumable_sampler_starts_part_way_into_the_same_order():
    data = list(range(10))
    full = distributed.ResumableSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3)
    full.set_epoch(2)
    late = distributed.ResumableSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3)
    late.set_epoch(2)
    late.start = 4
    assert list(late) == list(full)[4:] and len(late) == 6
