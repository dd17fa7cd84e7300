"""Meta-learning trainer: DDP under torchrun, exact resume, NaN guard, time limit, export."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from animate_cli import losses
from animate_cli.models.checkpoint import load_checkpoint
from animate_cli.train import meta
from animate_cli.train.meta import Trainer, TrainOptions, export, train
from test_episodes import make_cache

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache"), frames=4, size=32)


def opts(cache, run, **kw):
    base = dict(cache=str(cache), run=str(run), preset="tiny", generator="warp", resolution=32, k_shots=2,
                batch_size=2, perceptual_size=None, val_per_identity=0, log_every=1, sample_every=0,
                checkpoint_every=2, progress=False, threads=1)
    base.update(kw)
    return TrainOptions(**base)


def state_of(tr: Trainer) -> dict:
    out = {}
    for name, m in (("E", tr.E), ("G", tr.G), ("D", tr.D)):
        out.update({f"{name}.{k}": v.detach().clone() for k, v in m.state_dict().items()})
    return out


def same(a, b) -> bool:
    """Deep equality of nested state dicts with tensors."""
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_two_processes_under_torchrun(cache, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "animate_cli.train.meta", "--cache", str(cache), "--run-dir", str(run), "--preset", "tiny",
           "--resolution", "32", "--k-shots", "2", "--batch-size", "1", "--perceptual-size", "0",
           "--val-per-identity", "0", "--max-steps", "2", "--sample-every", "2", "--log-every", "1",
           "--no-progress"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, p.stderr[-3000:]
    summaries = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    assert len(summaries) == 1  # only rank 0 reports
    s = summaries[0]
    assert s["world_size"] == 2 and s["step"] == 2 and s["episodes_per_s"] > 0
    state = torch.load(run / "checkpoint" / "train_state.pt", weights_only=True)
    assert state["step"] == 2 and state["opt_g"]["state"]  # Adam has moments: real updates happened
    assert (run / "samples" / "step_0000002.png").exists()
    rows = (run / "losses.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("step,")


def test_resume_continues_exactly(cache, tmp_path):
    """2 steps, 'kill' (a new Trainer), resume to 4 == 4 steps straight: same weights, same Adam state."""
    straight = Trainer(opts(cache, tmp_path / "a", max_steps=4))
    straight.train()

    first = Trainer(opts(cache, tmp_path / "b", max_steps=2))
    first.train()
    saved = torch.load(tmp_path / "b" / "checkpoint" / "train_state.pt", weights_only=True)
    del first
    resumed = Trainer(opts(cache, tmp_path / "b", max_steps=4))
    assert resumed.load() and resumed.step_no == 2
    assert same(resumed.opt_g.state_dict(), saved["opt_g"]) and same(resumed.opt_d.state_dict(), saved["opt_d"])
    resumed = Trainer(opts(cache, tmp_path / "b", max_steps=4))
    summary = resumed.train()
    assert summary["step"] == 4 and summary["steps_this_run"] == 2
    a, b = state_of(straight), state_of(resumed)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert same(straight.opt_g.state_dict()["param_groups"], resumed.opt_g.state_dict()["param_groups"])
    sa, sb = straight.opt_g.state_dict()["state"], resumed.opt_g.state_dict()["state"]
    assert all(torch.allclose(sa[i]["exp_avg"], sb[i]["exp_avg"], atol=1e-6) for i in sa)


def test_resume_after_kill_between_renames(cache, tmp_path):
    tr = Trainer(opts(cache, tmp_path / "r", max_steps=2))
    tr.train()
    (tmp_path / "r" / "checkpoint").rename(tmp_path / "r" / "checkpoint.old")
    again = Trainer(opts(cache, tmp_path / "r", max_steps=2))
    assert again.load() and again.step_no == 2


def test_nan_guard_skips_update_and_restores(cache, tmp_path, monkeypatch):
    tr = Trainer(opts(cache, tmp_path / "n", max_steps=1, nan_patience=2))
    tr.train()  # step 1, checkpoint written
    before = state_of(tr)
    real = losses.generator_losses

    def poisoned(*a, **k):
        out = real(*a, **k)
        out["total"] = out["total"] * float("nan")
        return out

    monkeypatch.setattr(losses, "generator_losses", poisoned)
    batch = next(iter(tr.loader(0, 0)))
    r = tr.step(batch)
    assert r["skipped"] and tr.skipped == 1
    after = state_of(tr)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    # no weight moved (the spectral-norm power-iteration buffers may)
    assert all(torch.equal(before[k], after[k]) for k in before if not k.endswith(("_u", "_v")))
    r = tr.step(batch)  # second in a row: back to the checkpoint, learning rates halved
    assert r["skipped"] and tr.lr_scale == 0.5
    assert tr.opt_g.param_groups[0]["lr"] == pytest.approx(2.5e-5)
    assert tr.step_no == 3
    monkeypatch.setattr(losses, "generator_losses", real)
    assert not tr.step(batch)["skipped"]


def test_time_limit_stops_cleanly_and_export(cache, tmp_path):
    s = train(opts(cache, tmp_path / "t", max_minutes=1e-6, generator="fsth"))
    assert s["stopped_by"] == "time limit" and s["step"] == 1
    state = torch.load(tmp_path / "t" / "checkpoint" / "train_state.pt", weights_only=True)
    assert state["step"] == 1
    out = export(tmp_path / "t", tmp_path / "weights")
    assert not (out / "train_state.pt").exists() and (out / "config.json").exists()
    cfg, E, G, D = load_checkpoint(out, with_discriminator=True)
    assert cfg.generator == "fsth" and cfg.resolution == 32 and D is not None
    assert meta.main(["--run-dir", str(tmp_path / "t"), "--export", str(tmp_path / "w2")]) == 0


def test_out_of_range_new_options_give_one_line_and_write_nothing(cache, tmp_path, capsys):
    for flag, value in (("--random-reference", "1.5"), ("--random-reference", "-0.1"), ("--mouth-weight", "-1"),
                        ("--skip-width", "-1"), ("--n-refs", "0")):
        run = tmp_path / f"bad{flag}{value}"
        assert meta.main(["--cache", str(cache), "--run-dir", str(run), "--preset", "tiny", flag, value,
                          "--max-steps", "1", "--no-progress"]) == 1
        out = capsys.readouterr().out.strip().splitlines()
        named = (flag, flag[2:].replace("-", "_"))  # the flag, or the config field it sets
        assert len(out) == 1 and out[0].startswith("error: ") and any(n in out[0] for n in named), out
        assert not run.exists()


def test_init_widens_to_more_references_and_refuses_to_shrink(cache, tmp_path):
    from animate_cli.errors import AnimateError

    one = Trainer(opts(cache, tmp_path / "one", seed=3))
    one.save()
    three = Trainer(opts(cache, tmp_path / "three", n_refs=3, skip_width=4, init=str(tmp_path / "one" / "checkpoint")))
    a, b = one.G.state_dict(), three.G.state_dict()
    assert torch.equal(b["head.weight"][:a["head.weight"].shape[0], :a["head.weight"].shape[1]], a["head.weight"])
    assert three.G.head.weight[:, a["head.weight"].shape[1]:].abs().sum() == 0  # the skip path starts silent
    assert all(torch.equal(v, one.E.state_dict()[k]) for k, v in three.E.state_dict().items())  # E as it was
    three.save()
    with pytest.raises(AnimateError):  # fewer references than the weights have: refused, not truncated
        Trainer(opts(cache, tmp_path / "back", init=str(tmp_path / "three" / "checkpoint")))


def test_init_keeps_the_learned_shot_selection(cache, tmp_path):
    """--init from weights with a fitted selection (weights/default has one): the run accepts them, keeps the
    selection in its checkpoints and export, and resumes."""
    from animate_cli.references import SELECTION_FEATURES
    from animate_cli.train.selection import write_selection

    base = Trainer(opts(cache, tmp_path / "base", seed=3))
    base.save()
    weights = export(tmp_path / "base", tmp_path / "w")
    chosen = tuple(float(i + 1) / 100 for i in range(len(SELECTION_FEATURES)))
    write_selection(weights, chosen, 0.02)
    tr = Trainer(opts(cache, tmp_path / "more", init=str(weights)))
    assert tr.cfg.selection == chosen and tr.cfg.warp_reg == 0.02
    tr.save()
    exported = load_checkpoint(export(tmp_path / "more", tmp_path / "w2"))[0]
    assert exported.selection == chosen and exported.warp_reg == 0.02
    again = Trainer(opts(cache, tmp_path / "more", init=str(weights)))
    assert again.load() and again.cfg.selection == chosen  # resuming that run: the same config


def test_refine_trains_only_the_output_layers(cache, tmp_path):
    """--refine: from --init with a new skip path, a few steps change G's skip path and head and nothing
    else (E, D and the trunk bit-identical: eval mode, so spectral norm does not drift either); the loss
    has no adversarial terms; resume and export work as in full meta-learning."""
    base = Trainer(opts(cache, tmp_path / "base", seed=5))
    base.save()
    init = str(tmp_path / "base" / "checkpoint")
    tr = Trainer(opts(cache, tmp_path / "ref", skip_width=4, init=init, refine=True, lr_g=1e-2, max_steps=3))
    before = state_of(tr)
    s = tr.train()
    assert s["step"] == 3 and s["skipped_steps"] == 0
    after = state_of(tr)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("G.skip.", "G.head.")) for k in changed), changed
    assert "G.skip.0.weight" in changed and "G.head.weight" in changed
    rows = (tmp_path / "ref" / "losses.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    row = dict(zip(header, last))
    assert row["cnt"] and row["pix"] and not row["adv"] and not row["loss_d"]
    # resuming the finished run is a no-op; export gives a model with the skip path
    again = Trainer(opts(cache, tmp_path / "ref", skip_width=4, init=init, refine=True, lr_g=1e-2, max_steps=3))
    assert again.load() and same(state_of(again), after)
    cfg, _, G, _ = load_checkpoint(export(tmp_path / "ref", tmp_path / "w"))
    assert cfg.skip_width == 4 and G.skip is not None


def test_refine_needs_the_warp_generator(cache, tmp_path, capsys):
    run = tmp_path / "fsth"
    assert meta.main(["--cache", str(cache), "--run-dir", str(run), "--preset", "tiny", "--generator", "fsth",
                      "--refine", "--max-steps", "1", "--no-progress"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "--refine" in out[0] and not run.exists()


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
    assert meta.setup_distributed("cuda") == torch.device("cuda", 0)
    assert meta.setup_distributed("cuda:1") == torch.device("cuda", 1)
    assert chosen == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert meta.setup_distributed("cpu") == torch.device("cpu") and len(chosen) == 2
