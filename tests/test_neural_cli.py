"""The neural model through the CLI: weights folders, fine-tuning, saved persons, batches."""
import cv2
import numpy as np
import pytest
import torch

import animate_cli.animate as pipeline
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


def test_batch_loads_the_model_once_and_each_portrait_as_if_alone(tmp_path, capsys, tiny_weights, driver,
                                                                    monkeypatch):
    """Fine-tuning one portrait of a batch must not leak into the next: each result equals its run alone."""
    folder = tmp_path / "in"
    folder.mkdir()
    portrait = read_image(EXAMPLES / "portrait.png")
    (folder / "a.png").write_bytes((EXAMPLES / "portrait.png").read_bytes())
    cv2.imwrite(str(folder / "b.png"), cv2.cvtColor(np.ascontiguousarray(portrait[40:, ::-1]), cv2.COLOR_RGB2BGR))
    loads = []
    real_make = pipeline.make_animator
    monkeypatch.setattr(pipeline, "make_animator", lambda *a, **k: loads.append(a) or real_make(*a, **k))
    opts = ["--model", str(tiny_weights), "--finetune-steps", "2", "--landmarks", "dlib", "--quiet",
            "--device", "cpu", "--no-audio"]
    assert main([str(folder), str(driver), "-o", str(tmp_path / "batch")] + opts) == 0, capsys.readouterr().err
    assert len(loads) == 1
    for name in ("a", "b"):
        alone = tmp_path / f"{name}_alone.mp4"
        assert main([str(folder / f"{name}.png"), str(driver), "-o", str(alone)] + opts) == 0
        batch = list(read_frames(tmp_path / "batch" / f"{name}.mp4"))
        assert len(batch) == 4 and all(np.array_equal(x, y) for x, y in zip(batch, read_frames(alone)))
