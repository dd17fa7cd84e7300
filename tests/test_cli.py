"""The `animate` command end to end with the model-free warp animator, and its handling of bad input."""

import numpy as np
import pytest

from animate_cli.animators import WarpAnimator
from animate_cli.cli import main
from animate_cli.face.landmarks import make_detector
from animate_cli.video import probe_video, read_frames, read_image

from conftest import EXAMPLES, moved_portrait_frames, shared_file, write_test_video

WARP = ["--model", "warp", "--landmarks", "dlib", "--quiet"]


@pytest.fixture(scope="module")
def portrait():
    return read_image(EXAMPLES / "portrait.png")


@pytest.fixture(scope="module")
def moving_driver(tmp_path_factory, portrait):
    """8 frames of the portrait itself drifting right by 1.5 px a frame (at 256 px), with audio."""
    path = tmp_path_factory.mktemp("drv") / "driver.mp4"
    return write_test_video(path, moved_portrait_frames(portrait, 8, size=256, shift_px=1.5), fps=25, audio=True)


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def assert_one_line_error(code, err, *words):
    assert code != 0
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w.lower() in err.lower(), err


def test_warp_end_to_end_follows_the_driver(tmp_path, capsys, portrait, moving_driver):
    out = tmp_path / "out.mp4"
    code, err = run([EXAMPLES / "portrait.png", moving_driver, "-o", out] + WARP, capsys)
    assert code == 0, err
    info = probe_video(out)
    assert (info.width, info.height) == portrait.shape[1::-1]  # the portrait's own size
    assert info.has_audio  # the driver's audio is muxed in
    frames = list(read_frames(out))
    assert len(frames) == 8
    assert abs(info.fps - 25) < 0.5
    det = make_detector("dlib")
    first = det.landmarks(frames[0], det.detect(frames[0])[0])
    centre = first.mean(axis=0)
    box = min(det.detect(frames[-1]), key=lambda b: np.hypot(*((b[:2] + b[2:]) / 2 - centre)))
    last = det.landmarks(frames[-1], box)
    # the driver face moved 10.5 px right at 256 px, i.e. 21 px at the portrait's 512 px
    shift = np.median(last - first, axis=0)
    assert 14 < shift[0] < 28, shift
    assert abs(shift[1]) < 5, shift
    # background far from the face stays put (border anchors)
    assert np.abs(frames[-1][-20:, :40].astype(int) - frames[0][-20:, :40].astype(int)).mean() < 6


def test_crop_only_no_audio_and_preview(tmp_path, capsys, moving_driver):
    out = tmp_path / "crop.mp4"
    code, err = run([EXAMPLES / "portrait.png", moving_driver, "-o", out, "--crop-only", "--size", "120",
                     "--no-audio", "--preview"] + WARP, capsys)
    assert code == 0, err
    info = probe_video(out)
    assert (info.width, info.height) == (120, 120)
    assert not info.has_audio
    prev = probe_video(tmp_path / "crop.preview.mp4")
    assert prev.height == 120 and prev.width == 120 * 3  # driver | portrait | result, all square here


def test_size_needs_crop_only_and_an_even_side(tmp_path, capsys, moving_driver):
    for extra, words in ((["--size", "64"], "add --crop-only"), (["--crop-only", "--size", "63"], "even"),
                         (["--crop-only", "--size", "0"], "even")):
        code, err = run([EXAMPLES / "portrait.png", moving_driver, "-o", tmp_path / "o.mp4"] + extra + WARP, capsys)
        assert_one_line_error(code, err, words)
    assert not (tmp_path / "o.mp4").exists()


def test_identity_driver_keeps_the_portrait_still(tmp_path, capsys, portrait):
    drv = write_test_video(tmp_path / "still.mp4", moved_portrait_frames(portrait, 5, shift_px=0.0))
    out = tmp_path / "out.mp4"
    code, err = run([EXAMPLES / "portrait.png", drv, "-o", out] + WARP, capsys)
    assert code == 0, err
    frames = list(read_frames(out))
    # relative motion of a still driver is no motion: every frame is the portrait (up to codec loss)
    assert np.abs(frames[-1].astype(int) - portrait.astype(int)).mean() < 4


def test_batch_reports_failures_and_keeps_successes(tmp_path, capsys, moving_driver):
    folder = tmp_path / "portraits"
    folder.mkdir()
    (folder / "a.png").write_bytes((EXAMPLES / "portrait.png").read_bytes())
    (folder / "bad.jpg").write_text("not an image")
    person = folder / "person"
    person.mkdir()
    (person / "1.png").write_bytes((EXAMPLES / "portrait.png").read_bytes())
    (person / "2.png").write_bytes((EXAMPLES / "portrait.png").read_bytes())
    outdir = tmp_path / "results"
    code = main([str(folder), str(moving_driver), "-o", str(outdir)] + WARP)
    err = capsys.readouterr().err
    assert code == 1
    assert (outdir / "a.mp4").exists() and (outdir / "person.mp4").exists()
    assert not (outdir / "bad.mp4").exists()
    assert "bad" in err and "failed" in err
    assert sorted(p.name for p in outdir.iterdir()) == ["a.mp4", "person.mp4"]  # no temp leftovers
    # a second run skips what exists
    before = (outdir / "a.mp4").stat().st_mtime_ns
    (folder / "bad.jpg").unlink()
    code = main([str(folder), str(moving_driver), "-o", str(outdir)] + WARP)
    err = capsys.readouterr().err
    assert code == 0
    assert "skipped" in err
    assert (outdir / "a.mp4").stat().st_mtime_ns == before


def test_refs_and_shots(tmp_path, capsys, moving_driver):
    out = tmp_path / "out.mp4"
    ref = EXAMPLES / "portrait.png"
    code, err = run([EXAMPLES / "portrait.png", moving_driver, "-o", out, "--ref", ref, "--shots", "2"] + WARP, capsys)
    assert code == 0, err
    code, err = run([EXAMPLES / "portrait.png", moving_driver, "-o", tmp_path / "o2.mp4", "--ref", ref,
                     "--shots", "3"] + WARP, capsys)
    assert_one_line_error(code, err, "--shots 3")
    assert not (tmp_path / "o2.mp4").exists()


# ---------------------------------------------------------------- bad input: one line, non-zero, nothing written


@pytest.fixture
def bad_files(tmp_path, portrait):
    import cv2

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    fake_img = tmp_path / "fake.jpg"
    fake_img.write_text("not a jpeg")
    fake_vid = tmp_path / "fake.mp4"
    fake_vid.write_text("not a video")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((256, 256, 3), 127, np.uint8))
    faceless = write_test_video(tmp_path / "faceless.mp4", [np.full((128, 128, 3), 90 + i, np.uint8) for i in range(6)])
    return dict(text=text, fake_img=fake_img, fake_vid=fake_vid, corrupt=corrupt, blank=blank, faceless=faceless)


@pytest.mark.parametrize("case, words", [
    ("missing_portrait", ["not found"]),
    ("missing_driver", ["not found"]),
    ("portrait_not_image", ["fake.jpg"]),
    ("driver_not_video", ["fake.mp4"]),
    ("driver_corrupt", ["corrupt.mp4"]),
    ("driver_is_image", ["image"]),
    ("no_face_in_portrait", ["no face"]),
    ("no_face_in_driver", ["no face"]),
    ("face_index_out_of_range", ["face"]),
    ("shots_zero", ["--shots"]),
    ("shots_too_many", ["--shots"]),
    ("output_folder_missing", ["does not exist"]),
    ("output_exists", ["exists"]),
])
def test_bad_input_one_line_no_output(case, words, tmp_path, capsys, bad_files, moving_driver):
    portrait, driver = EXAMPLES / "portrait.png", moving_driver
    out = tmp_path / "out.mp4"
    extra = []
    if case == "missing_portrait":
        portrait = tmp_path / "nope.jpg"
    elif case == "missing_driver":
        driver = tmp_path / "nope.mp4"
    elif case == "portrait_not_image":
        portrait = bad_files["fake_img"]
    elif case == "driver_not_video":
        driver = bad_files["fake_vid"]
    elif case == "driver_corrupt":
        driver = bad_files["corrupt"]
    elif case == "driver_is_image":
        driver = EXAMPLES / "portrait.png"
    elif case == "no_face_in_portrait":
        portrait = bad_files["blank"]
    elif case == "no_face_in_driver":
        driver = bad_files["faceless"]
    elif case == "face_index_out_of_range":
        extra = ["--face-index", "3"]
    elif case == "shots_zero":
        extra = ["--shots", "0"]
    elif case == "shots_too_many":
        extra = ["--shots", "4"]
    elif case == "output_folder_missing":
        out = tmp_path / "no" / "such" / "out.mp4"
    elif case == "output_exists":
        out.write_bytes(b"precious")
    code, err = run([portrait, driver, "-o", out] + WARP + extra, capsys)
    assert_one_line_error(code, err, *words)
    if case == "output_exists":
        assert out.read_bytes() == b"precious"
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_failure_while_rendering_leaves_no_output(tmp_path, capsys, moving_driver, monkeypatch):
    calls = {"n": 0}
    original = WarpAnimator.render_motion

    def flaky(self, targets, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, targets, **kw)

    monkeypatch.setattr(WarpAnimator, "render_motion", flaky)
    out = tmp_path / "out.mp4"
    code, err = run([EXAMPLES / "portrait.png", moving_driver, "-o", out, "--batch-size", "2"] + WARP, capsys)
    assert code == 130
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_option_is_a_usage_error(capsys):
    code, err = run(["a.png", "b.mp4", "-o", "c.mp4", "--no-such-flag"], capsys)
    assert code == 2
    assert "no-such-flag" in err


def test_help_shows_examples(capsys):
    code = main(["--help"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Examples" in out and "--shots" in out and "--model" in out


def test_real_fixture_driver(tmp_path, capsys):
    driver = shared_file("fixtures/single_face.mp4")
    out = tmp_path / "real.mp4"
    code, err = run([EXAMPLES / "portrait.png", driver, "-o", out, "--find-best-frame"] + WARP, capsys)
    assert code == 0, err
    info = probe_video(out)
    assert info.has_audio and abs(info.fps - 30) < 0.5
    assert sum(1 for _ in read_frames(out)) == 72
