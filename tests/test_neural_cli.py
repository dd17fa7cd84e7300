"""The neural model through the pipeline and the CLI: weights folders, fine-tuning, saved persons."""
import numpy as np
import pytest
import torch

from animate_cli.animators import NeuralAnimator, make_animator
from animate_cli.cli import main
from animate_cli.config import preset
from animate_cli.models.checkpoint import save_checkpoint
from animate_cli.models.discriminator import Discriminator
from animate_cli.models.embedder import Embedder
from animate_cli.models.generator import build_generator
from animate_cli.video import probe_video, read_frames, read_image

from conftest import EXAMPLES, moved_portrait_frames, write_test_video


@pytest.fixture(scope="module", params=["warp", "fsth"])
def tiny_weights(request, tmp_path_factory):
    torch.manual_seed(0)
    cfg = preset("tiny", generator=request.param)
    folder = tmp_path_factory.mktemp(f"w_{request.param}")
    save_checkpoint(folder, cfg, Embedder(cfg), build_generator(cfg), Discriminator(cfg, 3))
    return folder


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    portrait = read_image(EXAMPLES / "portrait.png")
    path = tmp_path_factory.mktemp("drv") / "driver.mp4"
    return write_test_video(path, moved_portrait_frames(portrait, 4, size=256, shift_px=1.0), fps=25)


def test_weights_folder_end_to_end_and_saved_person(tmp_path, capsys, tiny_weights, driver):
    out, person = tmp_path / "out.mp4", tmp_path / "me.person"
    args = [str(EXAMPLES / "portrait.png"), str(driver), "--landmarks", "dlib", "--quiet", "--device", "cpu"]
    code = main(args + ["-o", str(out), "--model", str(tiny_weights), "--finetune-steps", "2",
                        "--save-person", str(person)])
    assert code == 0, capsys.readouterr().err
    assert person.exists()
    info = probe_video(out)
    assert (info.width, info.height) == (512, 512)
    first = list(read_frames(out))
    out2 = tmp_path / "again.mp4"
    code = main(args + ["-o", str(out2), "--person", str(person)])
    assert code == 0, capsys.readouterr().err
    again = list(read_frames(out2))
    assert len(again) == len(first) == 4
    # same person, same driver: the same video (up to the encoder's rounding)
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(first, again)) < 1.0


def test_saved_person_renders_exactly_what_was_fine_tuned(tmp_path, tiny_weights):
    portrait = read_image(EXAMPLES / "portrait.png")
    from animate_cli.shots import crop_shot
    from animate_cli.face.landmarks import image_landmarks, make_detector

    det = make_detector("dlib")
    cfg_res = 64
    shot = crop_shot(portrait, image_landmarks(det, portrait), cfg_res, "portrait")
    torch.manual_seed(1)
    a = make_animator(str(tiny_weights), device="cpu", finetune_steps=2)
    assert isinstance(a, NeuralAnimator)
    a.prepare([shot.crop], [shot.landmarks])
    targets = np.stack([shot.landmarks, shot.landmarks + np.float32([1.5, -1.0])])
    before = a.render(targets)
    a.save_person(tmp_path / "p.person")
    b = make_animator("default", device="cpu", person=tmp_path / "p.person")
    b.prepare([shot.crop], [shot.landmarks])  # a saved person ignores new shots
    assert np.array_equal(b.render(targets), before)


def test_render_motion_is_what_render_shows(tiny_weights):
    """The pipeline's render_motion carries the same frames as render (the evaluation's crops): for the warp
    generator as warped shot + correction, with the grid and shot that the compositor applies at full
    resolution; the fsth generator paints whole crops, so there is no motion to give."""
    rng = np.random.default_rng(0)
    shots = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    lms = [rng.uniform(10, 54, (68, 2)).astype(np.float32) for _ in range(2)]
    a = make_animator(str(tiny_weights), device="cpu", finetune_steps=0)
    a.prepare(shots, lms)
    targets = np.stack([lms[1] + 0.5, lms[0] - 1.0, lms[1]])
    motion = a.render_motion(targets)
    assert np.array_equal(motion.crops, a.render(targets))
    if a.cfg.generator == "fsth":
        assert motion.grids is None and motion.corrections is None
        return
    assert motion.shots.tolist() == [1, 0, 1] and motion.grids.shape == (3, 64, 64, 2)
    warped = torch.nn.functional.grid_sample(a.shots[torch.from_numpy(motion.shots)], torch.from_numpy(motion.grids),
                                             align_corners=False, padding_mode="border")
    painted = (warped + torch.from_numpy(motion.corrections)).clamp(-1, 1)
    assert np.abs((painted.permute(0, 2, 3, 1).numpy() + 1) * 127.5 - motion.crops).max() <= 0.5 + 1e-3

def test_seed_makes_fine_tuning_deterministic(tiny_weights):
    shots = [np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)]
    lms = [np.random.default_rng(1).uniform(10, 54, (68, 2)).astype(np.float32)]
    renders = []
    for _ in range(2):
        a = make_animator(str(tiny_weights), device="cpu", finetune_steps=2, seed=7)
        a.prepare(shots, lms)
        renders.append(a.render(np.stack(lms)))
    assert np.array_equal(renders[0], renders[1])


def test_missing_default_weights_says_how_to_get_them(tmp_path, capsys, driver, monkeypatch):
    monkeypatch.setenv("ANIMATE_WEIGHTS", str(tmp_path / "nowhere"))
    code = main([str(EXAMPLES / "portrait.png"), str(driver), "-o", str(tmp_path / "o.mp4"), "--quiet",
                 "--landmarks", "dlib"])
    err = capsys.readouterr().err
    assert code == 1
    assert "animate-train" in err and "--model warp" in err
    assert not (tmp_path / "o.mp4").exists()


def test_cuda_request_without_gpu_is_refused(tmp_path, capsys, driver):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = main([str(EXAMPLES / "portrait.png"), str(driver), "-o", str(tmp_path / "o.mp4"), "--quiet",
                 "--model", "warp", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 1 and "cuda" in err.lower()


def test_save_person_with_warp_model_is_refused(tmp_path, capsys, driver):
    code = main([str(EXAMPLES / "portrait.png"), str(driver), "-o", str(tmp_path / "o.mp4"), "--quiet",
                 "--model", "warp", "--landmarks", "dlib", "--save-person", str(tmp_path / "p.person")])
    err = capsys.readouterr().err
    assert code == 1 and "--save-person" in err
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "p.person").exists()


def test_save_person_refuses_to_overwrite_before_any_work(tmp_path, capsys, tiny_weights, driver):
    person = tmp_path / "me.person"
    person.write_bytes(b"keep me")
    code = main([str(EXAMPLES / "portrait.png"), str(driver), "-o", str(tmp_path / "o.mp4"), "--quiet",
                 "--model", str(tiny_weights), "--landmarks", "dlib", "--save-person", str(person)])
    err = capsys.readouterr().err
    assert code == 1 and "exists" in err
    assert person.read_bytes() == b"keep me" and not (tmp_path / "o.mp4").exists()
