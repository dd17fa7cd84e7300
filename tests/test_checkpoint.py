"""Checkpoint and person files: bit-exact round trips and one-line refusals of bad files."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from animate_cli.config import preset
from animate_cli.errors import AnimateError
from animate_cli.models import checkpoint as ckpt
from animate_cli.models.checkpoint import (PersonModel, load_checkpoint, load_person, save_checkpoint,
                                           save_person)
from animate_cli.models.discriminator import Discriminator
from animate_cli.models.embedder import Embedder
from animate_cli.models.generator import build_generator

TINY = preset("tiny")


pytestmark = pytest.mark.usefixtures("one_thread")


def _nets(cfg, n_videos=3):
    torch.manual_seed(0)
    E, G, D = Embedder(cfg), build_generator(cfg), Discriminator(cfg, n_videos)
    x = torch.rand(2, 3, cfg.resolution, cfg.resolution) * 2 - 1
    # train-mode passes move spectral norm's u/v away from their initial values: they must be saved too
    for _ in range(2):
        e = E(x, x)
        D(G(x, e_hat=e, warped=x), x, video_idx=torch.tensor([0, 1]))
    with torch.no_grad():
        for m in list(E.modules()) + list(G.modules()) + list(D.modules()):
            if hasattr(m, "gamma"):
                m.gamma.fill_(0.3)
    return E.eval(), G.eval(), D.eval(), x


def _outputs(E, G, D, x):
    with torch.no_grad():
        e = E(x, x)
        out = G(x, e_hat=e, warped=x.flip(-1))
        score, feats = D(out, x, video_idx=torch.tensor([2, 0]))
    return e, out, score, feats[-1]


@pytest.fixture
def saved(tmp_path):
    E, G, D, x = _nets(TINY)
    folder = tmp_path / "ck"
    save_checkpoint(folder, TINY, E, G, D, extra={"steps": 7})
    return folder, (E, G, D, x)


@pytest.mark.parametrize("kind", ["fsth", "warp"])
def test_round_trip_is_bit_exact(tmp_path, kind):
    cfg = TINY.replace(generator=kind)
    E, G, D, x = _nets(cfg)
    save_checkpoint(tmp_path / "ck", cfg, E, G, D, extra={"steps": 7})
    cfg2, E2, G2, D2 = load_checkpoint(tmp_path / "ck" / "config.json", with_discriminator=True)
    assert cfg2 == cfg
    assert D2.n_videos == 3
    for a, b in zip(_outputs(E, G, D, x), _outputs(E2, G2, D2, x)):
        assert torch.equal(a, b)
    for name, t in G.state_dict().items():
        assert torch.equal(t, G2.state_dict()[name]), name
    raw = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert raw["architecture"] == kind and raw["resolution"] == 64 and raw["extra"] == {"steps": 7}
    assert raw["drawing_version"] == cfg.drawing_version and raw["format_version"] == 1
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "config.json", "discriminator.safetensors", "embedder.safetensors", "generator.safetensors"]


def test_discriminator_is_optional(saved):
    folder, (E, G, D, x) = saved
    assert load_checkpoint(folder)[3] is None
    save_checkpoint(folder, TINY, E, G)  # re-save without D: the old D file must go
    assert not (folder / "discriminator.safetensors").exists()
    assert load_checkpoint(folder, with_discriminator=True)[3] is None


def test_missing_folder_and_files(tmp_path, saved):
    with pytest.raises(AnimateError, match="not found.*train"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(AnimateError, match="no config.json"):
        load_checkpoint(tmp_path)
    folder, _ = saved
    (folder / "generator.safetensors").unlink()
    with pytest.raises(AnimateError, match="missing weights file .*generator.safetensors"):
        load_checkpoint(folder)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_damaged_weights_are_refused_naming_the_file(saved, damage):
    folder, _ = saved
    path = folder / "generator.safetensors"
    data = path.read_bytes()
    rng = np.random.default_rng(0)
    path.write_bytes({"truncated": data[: len(data) - 100], "random": rng.bytes(4096), "empty": b""}[damage])
    with pytest.raises(AnimateError, match="generator.safetensors is not a valid safetensors file"):
        load_checkpoint(folder)


def test_pickle_named_safetensors_is_never_unpickled(saved, monkeypatch):
    folder, (E, G, D, x) = saved
    torch.save(G.state_dict(), folder / "generator.safetensors")

    def forbidden(*a, **k):
        raise AssertionError("a pickle was opened")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    with pytest.raises(AnimateError, match="generator.safetensors is not a valid safetensors file"):
        load_checkpoint(folder)


def _edit_config(folder, fn):
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    fn(raw)
    path.write_text(json.dumps(raw))


def test_wrong_architecture_is_refused(saved):
    folder, _ = saved

    def to_fsth(raw):
        raw["architecture"] = raw["config"]["generator"] = "fsth"

    _edit_config(folder, to_fsth)
    with pytest.raises(AnimateError, match="weights of a 'warp' model but config.json says 'fsth'"):
        load_checkpoint(folder)
    _edit_config(folder, lambda raw: raw.update(architecture="warp"))
    with pytest.raises(AnimateError, match="contradicts"):
        load_checkpoint(folder)
    _edit_config(folder, lambda raw: raw.update(architecture="vae"))
    with pytest.raises(AnimateError, match="unknown architecture"):
        load_checkpoint(folder)


def test_unsupported_format_and_bad_config_are_refused(saved):
    folder, _ = saved
    _edit_config(folder, lambda raw: raw.update(format_version=2))
    with pytest.raises(AnimateError, match="format version 2 is not supported"):
        load_checkpoint(folder)
    _edit_config(folder, lambda raw: raw.update(format_version=1))
    _edit_config(folder, lambda raw: raw["config"].update(colour="blue"))
    with pytest.raises(AnimateError, match="unknown model config key"):
        load_checkpoint(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(AnimateError, match="config.json is not a readable JSON"):
        load_checkpoint(folder)


def test_shape_mismatch_names_the_tensor_and_both_shapes(saved):
    folder, _ = saved
    small = preset("small")
    _edit_config(folder, lambda raw: raw.update(config=small.to_dict(), resolution=small.resolution))
    with pytest.raises(AnimateError) as info:
        load_checkpoint(folder)
    msg = str(info.value)
    assert "embedder.safetensors: tensor 'trunk." in msg and "in the file but" in msg
    assert msg.count("(") >= 2 and "\n" not in msg


def test_save_is_atomic(saved, monkeypatch):
    folder, (E, G, D, x) = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken_save)
    G2 = build_generator(TINY)
    with pytest.raises(OSError):
        save_checkpoint(folder, TINY, E, G2, D)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing half-written
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]
    load_checkpoint(folder, with_discriminator=True)  # still a valid checkpoint


@pytest.mark.parametrize("kind", ["fsth", "warp"])
def test_person_round_trip_reproduces_the_output(tmp_path, kind):
    cfg = TINY.replace(generator=kind)
    E, G, D, x = _nets(cfg)
    with torch.no_grad():
        for p in G.parameters():  # stands in for fine-tuning: weights differ from the checkpoint's
            p.add_(0.01 * torch.randn_like(p))
        e_hat = E(x, x).mean(0, keepdim=True)
        psi = G.project(e_hat) + 0.1
    lms = np.random.default_rng(0).uniform(0, 64, (2, 68, 2)).astype(np.float32)
    person = PersonModel(cfg, G, psi, e_hat, shots=x, shots_y=x.flip(1), shot_landmarks=lms, steps=5)
    save_person(tmp_path / "p.safetensors", person, extra={"source": "portrait.png"})
    back = load_person(tmp_path / "p.safetensors")
    assert back.cfg == cfg and back.steps == 5
    assert torch.equal(back.shots, x) and torch.equal(back.shots_y, x.flip(1))
    assert np.array_equal(back.shot_landmarks, lms) and torch.equal(back.psi, psi)
    warped = x.flip(-1) if kind == "warp" else None
    assert torch.equal(back.render(x, warped=warped), person.render(x, warped=warped))
    if kind == "warp":
        with pytest.raises(AnimateError, match="warped reference"):
            back.render(x)


def test_person_file_refusals(tmp_path, saved):
    with pytest.raises(AnimateError, match="not found"):
        load_person(tmp_path / "nobody.safetensors")
    folder, _ = saved
    with pytest.raises(AnimateError, match="not an animate-cli person file"):
        load_person(folder / "generator.safetensors")
    bad = tmp_path / "p.safetensors"
    bad.write_bytes(pickle.dumps({"psi": [1, 2, 3]}))
    with pytest.raises(AnimateError, match="not a valid safetensors file"):
        load_person(bad)


LEGACY_NEUTRAL = {"n_refs": 1, "skip_width": 0, "mouth_refiner": 0}  # what configs of removed experiments held


def test_old_checkpoint_with_neutral_experiment_keys_loads(saved):
    folder, (E, G, D, x) = saved
    _edit_config(folder, lambda raw: raw["config"].update(LEGACY_NEUTRAL))
    cfg, E2, G2, _ = load_checkpoint(folder)
    assert cfg == TINY
    for a, b in zip(_outputs(E, G, D, x)[:2], _outputs(E2, G2, D, x)[:2]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("key,value,tag", [("mouth_refiner", 32, "exp/mouth-refiner"),
                                           ("skip_width", 8, "exp/skip-path"),
                                           ("n_refs", 3, "exp/multi-reference")])
def test_checkpoint_of_a_removed_experiment_is_refused_naming_its_tag(saved, key, value, tag):
    folder, _ = saved
    _edit_config(folder, lambda raw: raw["config"].update({**LEGACY_NEUTRAL, key: value}))
    with pytest.raises(AnimateError) as info:
        load_checkpoint(folder)
    msg = str(info.value)
    assert "config.json" in msg and f"{key}={value}" in msg and tag in msg and "\n" not in msg


def test_old_person_file_with_neutral_experiment_keys_loads(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    E, G, D, x = _nets(TINY)
    with torch.no_grad():
        e_hat = E(x, x).mean(0, keepdim=True)
    person = PersonModel(TINY, G, G.project(e_hat), e_hat, shots=x, shots_y=x.flip(1), steps=0)
    path = save_person(tmp_path / "p.safetensors", person)

    def rewrite(changes):  # as an earlier animate-cli wrote it: the legacy keys in the config metadata
        with safe_open(str(path), framework="pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        meta["config"] = json.dumps({**json.loads(meta["config"]), **changes})
        save_file(tensors, str(path), metadata=meta)

    rewrite(LEGACY_NEUTRAL)
    back = load_person(path)
    assert back.cfg == TINY
    assert torch.equal(back.render(x, warped=x.flip(-1)), person.render(x, warped=x.flip(-1)))
    rewrite({"mouth_refiner": 16})
    with pytest.raises(AnimateError, match="p.safetensors: .*mouth refiner.*exp/mouth-refiner"):
        load_person(path)


def test_bundled_default_weights_load():
    folder = Path(__file__).resolve().parents[1] / "weights" / "default"
    if not (folder / "config.json").is_file():
        pytest.skip("weights/default not in this checkout")
    raw = json.loads((folder / "config.json").read_text())
    assert not set(LEGACY_NEUTRAL) & set(raw["config"])  # written by the code that has the mouth painter
    cfg, E, G, _ = load_checkpoint(folder)
    assert cfg.generator == "warp" and cfg.preset == "small" and cfg.warp_reg == 0.05 and len(cfg.selection) == 14
    assert cfg.paint_size == 64 and G.painter is not None
    assert cfg.mouth_shots  # with several shots the mouth comes from its own shot (val K=8 mouth LPIPS -10%)
