"""Meta-learning trainer: exact resume, NaN guard, time limit, --init, option checks."""
import json

import pytest
import torch

from animate_cli import losses
from animate_cli.errors import AnimateError
from animate_cli.models.checkpoint import load_checkpoint
from animate_cli.models.painter import mouth_view
from animate_cli.models.painter import mouth_theta, paste_crop
from animate_cli.references import SELECTION_FEATURES
from animate_cli.train.rundir import export
from animate_cli.train.selection import write_selection
from animate_cli.train.trainer import Trainer, TrainOptions, train
from test_episodes import make_cache
from test_photo_episodes import _photo_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache"), frames=4, size=32)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Drawn faces of 3 people, 3 photos each, every other one open-mouthed (test_photo_episodes)."""
    return _photo_cache(tmp_path_factory.mktemp("photos"), size=32)


def opts(cache, run, **kw):
    """Tiny networks at 32 px, two shots, a checkpoint every 2 steps, silent."""
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


@pytest.mark.slow
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
    rows = (tmp_path / "b" / "losses.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 5  # one header, then steps 1-4 across both runs
    assert json.loads((tmp_path / "b" / "options.json").read_text())["max_steps"] == 2  # the first start's


def test_resume_after_kill_between_renames(cache, tmp_path):
    tr = Trainer(opts(cache, tmp_path / "r", max_steps=2))
    tr.train()
    (tmp_path / "r" / "checkpoint").rename(tmp_path / "r" / "checkpoint.old")
    again = Trainer(opts(cache, tmp_path / "r", max_steps=2))
    assert again.load() and again.step_no == 2


def test_resume_refuses_another_config_or_cache(cache, tmp_path):
    Trainer(opts(cache, tmp_path / "r")).save()
    with pytest.raises(AnimateError, match="another model config"):
        Trainer(opts(cache, tmp_path / "r", generator="fsth")).load()
    fewer = make_cache(tmp_path / "fewer", {"idA": {"v1": 1}}, frames=4, size=32)
    with pytest.raises(AnimateError, match="4 videos"):
        Trainer(opts(fewer, tmp_path / "r")).load()


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


def test_time_limit_stops_cleanly_with_samples_and_export(cache, tmp_path):
    s = train(opts(cache, tmp_path / "t", max_minutes=1e-6, generator="fsth", sample_every=1))
    assert s["stopped_by"] == "time limit" and s["step"] == 1
    state = torch.load(tmp_path / "t" / "checkpoint" / "train_state.pt", weights_only=True)
    assert state["step"] == 1
    assert (tmp_path / "t" / "samples" / "step_0000001.png").exists()
    out = export(tmp_path / "t", tmp_path / "weights")
    assert not (out / "train_state.pt").exists() and (out / "config.json").exists()
    cfg, E, G, D = load_checkpoint(out, with_discriminator=True)
    assert cfg.generator == "fsth" and cfg.resolution == 32 and D is not None


def test_init_starts_from_the_weights_and_refuses_another_architecture(cache, tmp_path):
    one = Trainer(opts(cache, tmp_path / "one", seed=3))
    one.save()
    other = Trainer(opts(cache, tmp_path / "two", seed=4, init=str(tmp_path / "one" / "checkpoint")))
    assert same(state_of(other), state_of(one))  # E, G and D (same videos: its columns too) as saved
    with pytest.raises(AnimateError, match="different model config"):
        Trainer(opts(cache, tmp_path / "fsth", generator="fsth", init=str(tmp_path / "one" / "checkpoint")))


def test_init_keeps_the_learned_shot_selection(cache, tmp_path):
    """--init from weights with a fitted selection and mouth shots on (weights/default has both): the run
    accepts them, keeps both in its checkpoints and export, and resumes."""
    base = Trainer(opts(cache, tmp_path / "base", seed=3))
    base.save()
    weights = export(tmp_path / "base", tmp_path / "w")
    chosen = tuple(float(i + 1) / 100 for i in range(len(SELECTION_FEATURES)))
    write_selection(weights, chosen, 0.02)
    config = json.loads((weights / "config.json").read_text())
    config["config"]["mouth_shots"] = True
    (weights / "config.json").write_text(json.dumps(config))
    tr = Trainer(opts(cache, tmp_path / "more", init=str(weights)))
    assert tr.cfg.selection == chosen and tr.cfg.warp_reg == 0.02 and tr.cfg.mouth_shots
    tr.save()
    exported = load_checkpoint(export(tmp_path / "more", tmp_path / "w2"))[0]
    assert exported.selection == chosen and exported.warp_reg == 0.02 and exported.mouth_shots
    again = Trainer(opts(cache, tmp_path / "more", init=str(weights)))
    assert again.load() and again.cfg.selection == chosen  # resuming that run: the same config


def test_training_mixes_photo_episodes_with_their_own_discriminator_columns(cache, photos, tmp_path):
    """--photos: D gets one column per photo person after the videos' columns, a batch holds both sources,
    the run trains and resumes, and a run without the photos refuses its checkpoint."""
    o = dict(photos=str(photos), photo_share=0.5, episodes_per_epoch=16)
    tr = Trainer(opts(cache, tmp_path / "m", max_steps=2, **o))
    assert tr.n_video_columns == 4 and tr.D.W.shape[0] == 4 + 3
    columns = torch.cat([b["video"] for b in tr.loader(0, 0)])
    assert (columns >= 4).any() and (columns < 4).any() and int(columns.max()) < 7
    assert tr.train()["step"] == 2
    assert Trainer(opts(cache, tmp_path / "m", max_steps=3, **o)).train()["steps_this_run"] == 1
    with pytest.raises(AnimateError, match="videos and photo people"):
        Trainer(opts(cache, tmp_path / "m")).load()


def test_init_from_video_only_weights_keeps_the_video_columns(cache, photos, tmp_path):
    one = Trainer(opts(cache, tmp_path / "one", seed=3))
    one.save()
    mixed = Trainer(opts(cache, tmp_path / "mixed", seed=4, photos=str(photos),
                         init=str(tmp_path / "one" / "checkpoint")))
    assert torch.equal(mixed.D.W[:4], one.D.W) and mixed.D.W.shape[0] == 7
    assert not torch.equal(mixed.D.W[4:], torch.zeros_like(mixed.D.W[4:]))  # fresh columns, as for a new run
    assert torch.equal(mixed.D.w0, one.D.w0)


def test_init_adds_a_mouth_painter_that_keeps_the_weights_output_outside_the_mouth(cache, photos, tmp_path):
    """--init weights without a painter into a run with one (--paint-size): E, D and G's trunk as saved, the
    output exactly the old model's outside the painter's mouth box; the run trains on photo episodes and logs what the painter paints.
    A run without a painter refuses weights that have one."""
    base = Trainer(opts(cache, tmp_path / "base", seed=3))
    with torch.no_grad():
        base.G.head.weight.normal_(0, 0.05)  # a trained correction is not zero
    base.save()
    init = str(tmp_path / "base" / "checkpoint")
    tr = Trainer(opts(cache, tmp_path / "paint", seed=4, init=init, paint_size=16, photos=str(photos),
                      photo_share=1.0, max_steps=2))
    assert tr.cfg.paint_size == 16 and tr.G.painter is not None
    assert [g["lr"] for g in tr.opt_g.param_groups] == [tr.opts.lr_g, tr.opts.lr_paint]
    assert len(tr.opt_g.param_groups[1]["params"]) == len(list(tr.G.painter.parameters()))
    old, new = state_of(base), state_of(tr)
    assert all(torch.equal(old[k], new[k]) for k in old if not k.startswith("D.W"))
    b = next(iter(tr.loader(0, 0)))
    warped, ref_lm = tr._episode_warp(b)
    e = torch.rand(2, tr.cfg.embed_dim)
    base.G.eval(), tr.G.eval()  # (train mode moves spectral norm's power iteration on every call)
    with torch.no_grad():
        after = tr.G(b["y_t"], e, warped=warped, landmarks=b["lm_t"], ref_landmarks=ref_lm)
        before = base.G(b["y_t"], e, warped=warped)
    r = after.shape[-1]
    box = paste_crop(torch.ones(len(after), 1, 16, 16), mouth_theta(torch.as_tensor(b["lm_t"]).float(), r), r) > 0
    assert box.float().mean() < 0.3
    assert torch.equal(after[(~box).expand_as(after)], before[(~box).expand_as(before)])  # outside the mouth box
    tr.G.train()
    assert tr.train()["step"] == 2
    rows = (tmp_path / "paint" / "losses.csv").read_text().splitlines()
    column = rows[0].split(",").index("paint")
    assert any(r.split(",")[column] != "" for r in rows[1:])  # open mouths among the targets: measured
    with pytest.raises(AnimateError, match="different model config"):
        Trainer(opts(cache, tmp_path / "none", init=str(tmp_path / "paint" / "checkpoint"), paint_size=0))


def test_painter_only_trains_the_painter_and_nothing_else(cache, photos, tmp_path):
    """--painter-only: the painter's weights move, every other weight of E, G and D stays as --init gave it;
    the resumed run refuses to go on without the flag."""
    base = Trainer(opts(cache, tmp_path / "base", seed=3))
    base.save()
    tr = Trainer(opts(cache, tmp_path / "p", seed=5, init=str(tmp_path / "base" / "checkpoint"), paint_size=16,
                      photos=str(photos), photo_share=1.0, max_steps=3, painter_only=True,
                      colour_weight=1.0, lpips_weight=1.0))
    before = state_of(tr)
    assert tr.train()["step"] == 3
    after = state_of(tr)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("G.painter.") for k in moved), sorted(moved)[:5]
    assert any(k.startswith("G.painter.head") for k in moved)
    rows = (tmp_path / "p" / "losses.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert all(r.split(",")[header.index("mouth")] != "" for r in rows[1:])
    assert all(r.split(",")[header.index("loss_d")] == "" for r in rows[1:])  # D never ran
    with pytest.raises(AnimateError, match="painter-only"):
        Trainer(opts(cache, tmp_path / "p", init=str(tmp_path / "base" / "checkpoint"), paint_size=16,
                     photos=str(photos), photo_share=1.0)).load()
    with pytest.raises(AnimateError, match="painter-only"):
        TrainOptions(painter_only=True, paint_size=0)
    with pytest.raises(AnimateError, match="--colour-weight"):
        TrainOptions(colour_weight=1.0)  # the colour term belongs to the painter's own training
    with pytest.raises(AnimateError, match="--lpips-weight"):
        TrainOptions(lpips_weight=1.0)  # so does the LPIPS term
    with pytest.raises(AnimateError, match="--lpips-weight"):
        TrainOptions(painter_only=True, lpips_weight=-1.0)


def test_painter_only_eyes_trains_the_eye_painter_and_nothing_else(cache, photos, tmp_path):
    """--paint-part eyes: --init weights with a mouth painter gain an eye painter; only its weights move (the
    mouth painter, E, G's trunk and D stay as --init gave them), on the eye term; the photo episodes are the
    kinds --photo-kinds asks for (here only shut eyes)."""
    base = Trainer(opts(cache, tmp_path / "base", seed=3, paint_size=16))
    base.save()
    tr = Trainer(opts(cache, tmp_path / "e", seed=5, init=str(tmp_path / "base" / "checkpoint"), paint_size=16,
                      eye_paint_size=16, photos=str(photos), photo_share=1.0, max_steps=3, painter_only=True,
                      paint_part="eyes", photo_kinds=(0.0, 0.0, 1.0), colour_weight=1.0))
    assert tr.G.eye_painter is not None and tr.G.painter is not None
    assert tr.data.photos.kind_p.tolist() == [0.0, 0.0, 1.0]
    before = state_of(tr)
    assert tr.train()["step"] == 3
    after = state_of(tr)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("G.eye_painter.") for k in moved), sorted(moved)[:5]
    rows = (tmp_path / "e" / "losses.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert all(r.split(",")[header.index("paint")] != "" for r in rows[1:])  # the eye painter's correction
    with pytest.raises(AnimateError, match="eye painter"):
        TrainOptions(painter_only=True, paint_part="eyes", eye_paint_size=0)
    with pytest.raises(AnimateError, match="--paint-part"):
        TrainOptions(painter_only=True, paint_part="nose")
    with pytest.raises(AnimateError, match="--photo-kinds"):
        TrainOptions(photo_kinds=(0.0, 0.0, 0.0))
    with pytest.raises(AnimateError, match="--mouth-adv"):
        TrainOptions(painter_only=True, paint_part="eyes", mouth_adv=0.2)


def test_options_out_of_range_are_refused_by_name():
    for field, value, flag in (("photo_share", 1.5, "--photo-share"), ("photo_share", -0.5, "--photo-share"),("random_reference", 1.5, "--random-reference"),
                               ("random_reference", -0.1, "--random-reference"),
                               ("mouth_weight", -1.0, "--mouth-weight"), ("batch_size", 0, "--batch-size"),
                               ("k_shots", 0, "--k-shots"), ("log_every", 0, "--log-every")):
        with pytest.raises(AnimateError, match=flag):
            TrainOptions(**{field: value})


def test_the_mouth_critic_trains_beside_the_painter_and_resumes(cache, photos, tmp_path):
    """--mouth-adv: a mouth critic learns beside the painter (its adversarial term reaches the painter; E, G's
    trunk and D stay frozen); the checkpoint keeps it, so a resumed run goes on with the same critic."""
    base = Trainer(opts(cache, tmp_path / "base", seed=3))
    base.save()
    run = dict(seed=5, init=str(tmp_path / "base" / "checkpoint"), paint_size=16, photos=str(photos),
               photo_share=1.0, painter_only=True, mouth_adv=0.5)
    tr = Trainer(opts(cache, tmp_path / "p", max_steps=2, **run))
    critic_before = {k: v.clone() for k, v in tr.critic.state_dict().items()}
    before = state_of(tr)
    assert tr.train()["step"] == 2
    moved = {k for k in before if not torch.equal(before[k], state_of(tr)[k])}
    assert moved and all(k.startswith("G.painter.") for k in moved)
    assert any(not torch.equal(v, tr.critic.state_dict()[k]) for k, v in critic_before.items())
    rows = (tmp_path / "p" / "losses.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert all(r.split(",")[header.index(c)] != "" for r in rows[1:] for c in ("adv", "loss_d", "d_real"))
    again = Trainer(opts(cache, tmp_path / "p", max_steps=2, **run))
    assert again.load()
    assert same(again.critic.state_dict(), tr.critic.state_dict())
    assert same(again.opt_critic.state_dict()["state"], tr.opt_critic.state_dict()["state"])
    # the critic's term alone reaches the painter through the painted crop
    b = next(iter(tr.loader(0, 0)))
    warped, ref_lm = tr._episode_warp(b)
    e = torch.rand(2, tr.cfg.embed_dim)
    x_hat = tr.G(b["y_t"], e, warped=warped, landmarks=b["lm_t"], ref_landmarks=ref_lm)
    losses.g_adv_loss(tr.critic(mouth_view(x_hat, b["lm_t"], 16))).backward()
    assert tr.G.painter.head.weight.grad.abs().sum() > 0
    with pytest.raises(AnimateError, match="--mouth-adv"):
        TrainOptions(mouth_adv=0.1)  # the critic belongs to the painter's own training
