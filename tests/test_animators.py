"""Animators: the bundled weights inside the package, the factory, what the pipeline asks of an animator,
fine-tuning that is deterministic and does not leak from one prepared person into the next."""
import fnmatch
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from animate_cli.animators import (DEFAULT_MODEL, WEIGHTS_ENV, NeuralAnimator, WarpAnimator, default_weights_dir,
                                   make_animator, resolve_device, to_tensor)
from animate_cli.config import preset
from animate_cli.errors import AnimateError
from animate_cli.face.landmarks import image_landmarks, make_detector
from animate_cli.config import FinetuneConfig
from animate_cli.models.checkpoint import CONFIG_NAME, FILES, read_checkpoint_config, save_checkpoint
from animate_cli.models.discriminator import Discriminator
from animate_cli.models.embedder import Embedder
from animate_cli.models.generator import build_generator
from animate_cli.shots import crop_shot
from animate_cli.train.photo_episodes import close_eyes, close_mouth
from animate_cli.video import read_image

from conftest import EXAMPLES, ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    cfg = preset("tiny", generator="warp")
    folder = tmp_path_factory.mktemp("w_tiny")
    save_checkpoint(folder, cfg, Embedder(cfg), build_generator(cfg), Discriminator(cfg, 3))
    return folder


@pytest.fixture(scope="module")
def shot():
    portrait = read_image(EXAMPLES / "portrait.png")
    return crop_shot(portrait, image_landmarks(make_detector("dlib"), portrait), 64, "portrait")


def test_default_weights_ship_inside_the_package(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    folder = default_weights_dir()
    assert folder == Path(str(resources.files("animate_cli"))) / "weights" / DEFAULT_MODEL
    read_checkpoint_config(folder)  # a complete, readable checkpoint config
    for name in FILES.values():
        assert (folder / name).is_file(), name


@pytest.mark.skipif(tomllib is None, reason="reading pyproject.toml needs Python 3.11")
def test_package_data_declares_every_file_the_default_model_loads():
    """`pip install .` must carry the weights: each file load_checkpoint reads matches a package-data glob."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["animate_cli"]
    for name in [CONFIG_NAME, *FILES.values()]:
        assert any(fnmatch.fnmatch(f"weights/{DEFAULT_MODEL}/{name}", g) for g in globs), name


def test_weights_env_overrides_the_packaged_default(monkeypatch, tmp_path):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    assert default_weights_dir() == tmp_path
    with pytest.raises(AnimateError, match="default weights are missing"):
        make_animator(DEFAULT_MODEL, device="cpu")


def test_factory_knows_warp_default_and_folders_only(tmp_path):
    assert isinstance(make_animator("warp", device="cpu"), WarpAnimator)
    with pytest.raises(AnimateError):  # the evaluation-only 'static' model is gone: a missing folder now
        make_animator("static", device="cpu")


def test_device_auto_and_bad_names():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert make_animator("warp").device == resolve_device("auto")  # no lower default that differs
    with pytest.raises(AnimateError, match="unknown --device"):
        resolve_device("tpu")


def test_what_the_pipeline_asks_of_animators(tiny_weights, tmp_path):
    warp = make_animator("warp", device="cpu")
    assert warp.finetune_steps == 0 and not warp.can_save_person
    with pytest.raises(AnimateError, match="--save-person needs a neural model"):
        warp.save_person(tmp_path / "p.person")
    # the default: feed-forward on a CPU (fine-tuning tied there and cost most of a run), fine-tuned on a GPU
    assert make_animator(str(tiny_weights), device="cpu").finetune_steps == FinetuneConfig().cpu_steps == 0
    assert FinetuneConfig().steps_on("cuda") == FinetuneConfig().steps > 0
    neural = make_animator(str(tiny_weights), device="cpu", finetune_steps=3)
    assert neural.finetune_steps == 3 and neural.can_save_person


def test_fine_tuning_reports_each_step(tiny_weights, shot):
    a = make_animator(str(tiny_weights), device="cpu", finetune_steps=2)
    steps = []
    a.prepare([shot.crop], [shot.landmarks], on_step=lambda step, total, losses: steps.append((step, total)))
    assert steps == [(1, 2), (2, 2)]


def test_saved_person_renders_exactly_what_was_fine_tuned(tmp_path, tiny_weights, shot):
    torch.manual_seed(1)
    a = make_animator(str(tiny_weights), device="cpu", finetune_steps=2)
    assert isinstance(a, NeuralAnimator)
    a.prepare([shot.crop], [shot.landmarks])
    targets = np.stack([shot.landmarks, shot.landmarks + np.float32([1.5, -1.0])])
    before = a.render(targets)
    a.save_person(tmp_path / "p.person")
    b = make_animator(DEFAULT_MODEL, device="cpu", person=tmp_path / "p.person")
    assert b.finetune_steps == 0  # nothing left to fine-tune: no progress bar
    b.prepare([shot.crop], [shot.landmarks])  # a saved person ignores new shots
    assert np.array_equal(b.render(targets), before)


def test_seed_makes_fine_tuning_deterministic(tiny_weights):
    shots = [np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)]
    lms = [np.random.default_rng(1).uniform(10, 54, (68, 2)).astype(np.float32)]
    renders = []
    for _ in range(2):
        a = make_animator(str(tiny_weights), device="cpu", finetune_steps=2, seed=7)
        a.prepare(shots, lms)
        renders.append(a.render(np.stack(lms)))
    assert np.array_equal(renders[0], renders[1])


def test_preparing_again_starts_from_the_loaded_weights(tiny_weights, shot):
    """One animator for a batch: person B after person A renders what a fresh animator renders for B."""
    other = np.ascontiguousarray(shot.crop[:, ::-1])
    other_lms = shot.landmarks.copy()
    other_lms[:, 0] = 63 - other_lms[:, 0]
    targets = np.stack([other_lms, other_lms + np.float32([1.0, 0.5])])

    fresh = make_animator(str(tiny_weights), device="cpu", finetune_steps=2)
    fresh.prepare([other], [other_lms])
    alone = fresh.render(targets)

    shared = make_animator(str(tiny_weights), device="cpu", finetune_steps=2)
    loaded = {k: v.clone() for k, v in shared.generator.state_dict().items()}
    shared.prepare([shot.crop], [shot.landmarks])
    first = shared.render(targets)
    assert all(torch.equal(v, loaded[k]) for k, v in shared.generator.state_dict().items())  # G as loaded
    shared.prepare([other], [other_lms])
    assert np.array_equal(shared.render(targets), alone)
    assert not np.array_equal(first, alone)  # (the two people do differ)


def test_a_painting_model_fine_tunes_saves_and_reports_what_it_painted(tmp_path, shot):
    """A model with mouth and eye painters: fine-tuned, saved and reloaded it renders the same frames, and
    render_with_paint_usage tells how much of a mouth (eyes) opened wider than the shot's the painter gave
    (little of the shot's own, NaN for a shut one)."""
    torch.manual_seed(0)
    cfg = preset("tiny", generator="warp").replace(paint_size=32, eye_paint_size=16)
    G = build_generator(cfg)
    with torch.no_grad():
        G.painter.head.weight[:2].normal_(0, 0.05)  # a trained painter paints something (its blend: the prior)
        G.eye_painter.head.weight[:2].normal_(0, 0.05)
    folder = tmp_path / "w"
    save_checkpoint(folder, cfg, Embedder(cfg), G, Discriminator(cfg, 3))
    a = make_animator(str(folder), device="cpu", finetune_steps=2)
    assert a.paints and not getattr(make_animator("warp", device="cpu"), "paints", False)
    a.prepare([shot.crop], [shot.landmarks])
    opened = shot.landmarks.copy()
    opened[[56, 57, 58, 65, 66, 67], 1] += 0.06 * float(np.linalg.norm(opened[36] - opened[45])) * 4
    wide_eyed = shot.landmarks.copy()
    wide_eyed[[37, 38, 43, 44], 1] -= 0.1 * float(np.linalg.norm(opened[36] - opened[45]))
    targets = np.stack([shot.landmarks, opened, close_mouth(shot.landmarks), wide_eyed, close_eyes(shot.landmarks)])
    frames, usage = a.render_with_paint_usage(targets)
    assert np.array_equal(frames, a.render(targets))
    assert np.array_equal(a.render_motion(targets).crops, frames)  # what the compositor draws: the painted mouth
    share = usage["paint_share"]
    assert share[0] < 0.1 and 0.5 < share[1] <= 1 and np.isnan(share[2])  # as the shot, opened wider, shut
    assert usage["paint_size"][1] > 0
    eyes = usage["eye_paint_share"]
    assert eyes[0] < 0.1 and eyes[3] > 2 * eyes[0] and np.isnan(eyes[4])  # as the shot, opened wider, shut
    a.save_person(tmp_path / "p.person")
    b = make_animator(DEFAULT_MODEL, device="cpu", person=tmp_path / "p.person")
    assert np.array_equal(b.render(targets), frames)
    plain = preset("tiny", generator="warp")
    save_checkpoint(tmp_path / "plain", plain, Embedder(plain), build_generator(plain), Discriminator(plain, 3))
    with pytest.raises(AnimateError, match="no painter"):
        NeuralAnimator(tmp_path / "plain", device="cpu").render_with_paint_usage(targets)


@pytest.mark.parametrize("generator", ["warp", "fsth"])
def test_render_motion_is_what_render_shows(generator, tmp_path):
    """The pipeline's render_motion carries the frames render gives (the evaluation's crops): for the warp
    generator as the warped shot + a correction, with the grid and shot the compositor applies at full
    resolution; the fsth generator paints whole crops, so it has no motion to give."""
    torch.manual_seed(0)
    cfg = preset("tiny", generator=generator)
    save_checkpoint(tmp_path, cfg, Embedder(cfg), build_generator(cfg), Discriminator(cfg, 3))
    rng = np.random.default_rng(0)
    shots = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    lms = [rng.uniform(10, 54, (68, 2)).astype(np.float32) for _ in range(2)]
    a = make_animator(str(tmp_path), device="cpu", finetune_steps=0)
    a.prepare(shots, lms)
    targets = np.stack([lms[1] + 0.5, lms[0] - 1.0, lms[1]])
    motion = a.render_motion(targets)
    assert np.array_equal(motion.crops, a.render(targets))
    if generator == "fsth":
        assert motion.grids is None and motion.corrections is None
        return
    assert motion.shots.tolist() == [1, 0, 1] and motion.grids.shape == (3, 64, 64, 2)
    warped = torch.nn.functional.grid_sample(a.shots[torch.from_numpy(motion.shots)], torch.from_numpy(motion.grids),
                                             align_corners=False, padding_mode="border")
    painted = (warped + torch.from_numpy(motion.corrections)).clamp(-1, 1)
    assert np.abs((painted.permute(0, 2, 3, 1).numpy() + 1) * 127.5 - motion.crops).max() <= 0.5 + 1e-3


def test_the_warp_model_gives_its_grids_and_no_crops():
    rng = np.random.default_rng(1)
    shots = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)]
    lms = [rng.uniform(10, 54, (68, 2)).astype(np.float32)]
    a = WarpAnimator(resolution=64, device="cpu")
    a.prepare(shots, lms)
    motion = a.render_motion(np.stack([lms[0], lms[0] + 1.0]))
    assert motion.corrections is None and motion.crops is None and motion.shots.tolist() == [0, 0]
    moved = torch.nn.functional.grid_sample(a.shots.expand(2, -1, -1, -1), torch.from_numpy(motion.grids),
                                            align_corners=False, padding_mode="border")
    assert np.abs(((moved.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
                  - a.render(np.stack([lms[0], lms[0] + 1.0]))).max() == 0


def test_with_several_shots_the_mouth_comes_from_the_shot_that_shows_it(tmp_path):
    """mouth_shots: a frame framed like a shut-mouthed shot but opening its mouth gets the mouth of a shot that
    shows it open: its teeth (in the frame and in the compositor's correction), and the painter, told that
    shot's landmarks, leaves the opening to it."""
    from synthetic_faces import draw_face, face_landmarks, white_share
    from animate_cli.face.regions import mouth_box
    from animate_cli.references import SELECTION_FEATURES
    r = 64
    target = face_landmarks(r, mouth_gap=0.35)
    shut = face_landmarks(r, mouth_gap=0.02)
    moved = (target - r / 2) * 1.08 + r / 2 + np.float32([2, 1])
    framing = [0.0] * len(SELECTION_FEATURES)
    framing[SELECTION_FEATURES.index("offset")] = -1.0  # the face shot: the one framed like the target
    frames, usage = {}, {}
    for mouth_shots in (False, True):
        torch.manual_seed(0)
        cfg = preset("tiny", generator="warp").replace(paint_size=32, selection=tuple(framing),
                                                       mouth_shots=mouth_shots)
        G = build_generator(cfg)
        with torch.no_grad():
            G.painter.head.weight[:2].normal_(0, 0.05)
        save_checkpoint(tmp_path / str(mouth_shots), cfg, Embedder(cfg), G, Discriminator(cfg, 3))
        a = make_animator(str(tmp_path / str(mouth_shots)), device="cpu", finetune_steps=0)
        a.prepare([draw_face(shut, r), draw_face(moved, r)], [shut, moved])
        frames[mouth_shots], usage[mouth_shots] = a.render_with_paint_usage(target[None])
        motion = a.render_motion(target[None])
        assert motion.shots.tolist() == [0]  # the compositor still moves the face shot ...
        warped = a.reference_motion(target[None]).warped
        drawn = to_tensor(motion.crops, "cpu") - warped  # ... and its correction carries the mouth
        assert torch.allclose(torch.from_numpy(motion.corrections), drawn, atol=2 / 255)
    box = mouth_box(target)
    assert white_share(frames[True][0], box) > 3 * white_share(frames[False][0], box)
    assert usage[False]["paint_share"][0] > 0.5 and usage[True]["paint_share"][0] < 0.1


def test_a_prepared_animator_takes_frames_in_any_order_until_a_video_starts():
    """Evaluation renders targets in any order: no hysteresis there. start_video (the pipeline) holds shots from
    frame to frame; preparing the next person forgets the last one's."""
    from synthetic_faces import face
    a = make_animator("warp", device="cpu")
    img, lm = face(64)
    a.prepare([img, img], [lm, lm])
    assert a.held is None
    a.start_video()
    a.render_motion(np.stack([lm, lm]))
    assert a.held.face == 0
    a.prepare([img], [lm])
    assert a.held is None
