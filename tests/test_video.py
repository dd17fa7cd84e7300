"""video.py: probing, streamed reading, atomic writing, and one-line errors for bad input.

Videos are tiny and made here with the bundled ffmpeg, so the tests run anywhere in a few seconds.
"""
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from conftest import shared_file

from animate_cli.errors import AnimateError
from animate_cli.video import (VideoWriter, is_image, is_video, probe_video, read_frames, read_image,
                               write_image)

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args):
    subprocess.run([FFMPEG, "-v", "error", "-y", "-nostdin", *map(str, args)], check=True)


def frame(i, h=48, w=64):
    """Flat colour blocks that H.264 keeps almost exactly; a red marker top-left shows orientation."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :] = (40, 10 * i % 250, 200)
    img[: h // 3, : w // 3] = (250, 20, 20)
    return img


def write_video(path, n=10, fps=10, h=48, w=64, **kw):
    with VideoWriter(path, fps=fps, **kw) as out:
        for i in range(n):
            out.write(frame(i, h, w))
    return path


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def assert_one_line(err):
    text = str(err.value)
    assert text and "\n" not in text


def red_centre(img):
    ys, xs = np.nonzero((img[..., 0] > 180) & (img[..., 1] < 100))
    return ys.mean() / img.shape[0], xs.mean() / img.shape[1]


# --------------------------------------------------------------------------------------- round trips

def test_round_trip_frames_size_count_and_pixels(tmp_path):
    path = write_video(tmp_path / "résultat 視頻.mp4", n=12, fps=15)
    info = probe_video(path)
    assert (info.width, info.height, info.n_frames, info.rotation) == (64, 48, 12, 0)
    assert info.fps == pytest.approx(15)
    assert not info.has_audio
    frames = list(read_frames(path))
    assert len(frames) == 12
    for i, got in enumerate(frames):
        assert got.shape == (48, 64, 3) and got.dtype == np.uint8
        assert np.abs(got.astype(int) - frame(i)).mean() < 4
    assert listing(tmp_path) == [path.name]  # no temp file left behind


def test_read_frames_is_lazy_and_max_frames(tmp_path):
    path = write_video(tmp_path / "out.mp4", n=10)
    gen = read_frames(path, max_frames=3)
    assert not isinstance(gen, (list, tuple))
    assert len(list(gen)) == 3


def test_ntsc_rate_preserved(tmp_path):
    path = write_video(tmp_path / "ntsc.mp4", n=6, fps=30000 / 1001)
    info = probe_video(path)
    assert Fraction(info.fps).limit_denominator(1001) == Fraction(30000, 1001)


def test_odd_size_padded_to_even(tmp_path):
    path = write_video(tmp_path / "odd.mp4", n=3, h=25, w=33)
    info = probe_video(path)
    assert (info.width, info.height) == (34, 26)
    got = next(read_frames(path))
    assert np.abs(got[:25, :33].astype(int) - frame(0, 25, 33)).mean() < 6


def test_writer_rejects_mismatched_frames(tmp_path):
    with pytest.raises(ValueError):
        with VideoWriter(tmp_path / "out.mp4", fps=10) as out:
            out.write(frame(0))
            out.write(frame(1, h=50))
    with pytest.raises(ValueError):
        with VideoWriter(tmp_path / "out.mp4", fps=10) as out:
            out.write(np.zeros((8, 8, 3), np.float32))
    assert listing(tmp_path) == []


def test_writer_without_frames_leaves_nothing(tmp_path):
    with pytest.raises(AnimateError):
        with VideoWriter(tmp_path / "out.mp4", fps=10):
            pass
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------------------------- audio

@pytest.fixture
def driver_with_audio(tmp_path):
    path = tmp_path / "driver.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=1", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", path)
    return path


def test_audio_muxed_from_driver(tmp_path, driver_with_audio):
    assert probe_video(driver_with_audio).has_audio
    out = write_video(tmp_path / "out.mp4", n=10, audio_from=driver_with_audio)
    info = probe_video(out)
    assert info.has_audio
    assert sum(1 for _ in read_frames(out)) == 10


def test_short_audio_does_not_cut_video(tmp_path, driver_with_audio):
    out = write_video(tmp_path / "out.mp4", n=25, audio_from=driver_with_audio)  # 2.5 s of video, 1 s of sound
    info = probe_video(out)
    assert info.has_audio and info.duration == pytest.approx(2.5, abs=0.05)
    assert sum(1 for _ in read_frames(out)) == 25


def test_long_audio_is_cut_to_video(tmp_path, driver_with_audio):
    out = write_video(tmp_path / "out.mp4", n=4, audio_from=driver_with_audio)
    info = probe_video(out)
    assert info.has_audio and info.duration == pytest.approx(0.4, abs=0.05)  # sound stops with the video


def test_audio_dropped_when_not_asked_or_absent(tmp_path, driver_with_audio):
    assert not probe_video(write_video(tmp_path / "a.mp4", n=3, audio_from=None)).has_audio
    silent = write_video(tmp_path / "silent.mp4", n=3)
    assert not probe_video(write_video(tmp_path / "b.mp4", n=3, audio_from=silent)).has_audio


# ---------------------------------------------------------------------------------- inputs of all kinds

@pytest.mark.parametrize("degrees, rotation", [(90, 270), (-90, 90), (180, 180)])
def test_rotation_metadata_gives_upright_frames(tmp_path, degrees, rotation):
    plain = write_video(tmp_path / "plain.mp4", n=3)
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", degrees, "-i", plain, "-c", "copy", rotated)  # counter-clockwise degrees
    info = probe_video(rotated)
    assert info.rotation == rotation
    expected = np.rot90(frame(0), k=degrees // 90)  # rot90 also turns counter-clockwise
    assert (info.height, info.width) == expected.shape[:2]
    frames = list(read_frames(rotated))
    assert len(frames) == 3 and frames[0].shape == expected.shape
    assert red_centre(frames[0]) == pytest.approx(red_centre(expected), abs=0.05)


@pytest.mark.parametrize("name, fps, codec", [("t.mov", 10, ["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
                                              ("t.avi", 10, ["-c:v", "mjpeg"]), ("t.gif", 10, []),
                                              ("t.webm", 10, ["-c:v", "libvpx-vp9"]),
                                              ("t.mpg", 25, ["-c:v", "mpeg1video"]),
                                              ("t.mkv", 10, ["-c:v", "libx264"])])
def test_other_containers(tmp_path, name, fps, codec):
    path = tmp_path / name
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size=32x24:rate={fps}:duration={10 / fps}", *codec, path)
    assert is_video(path)
    info = probe_video(path)
    assert (info.width, info.height) == (32, 24)
    assert info.fps == pytest.approx(fps, abs=0.1)
    frames = list(read_frames(path))
    assert len(frames) == pytest.approx(10, abs=1) and frames[0].shape == (24, 32, 3)
    assert info.n_frames == pytest.approx(len(frames), abs=1)


def test_variable_frame_rate_is_resampled_to_constant(tmp_path):
    path = tmp_path / "vfr.mp4"  # 30 fps with a 2/3 s gap of missing frames
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=30:duration=2", "-vf",
           r"select='not(between(n,10,29))',setpts=N/30/TB+if(gte(N\,10)\,20/30/TB\,0)",
           "-fps_mode", "vfr", "-c:v", "libx264", path)
    info = probe_video(path)
    assert info.fps == pytest.approx(30)
    n = sum(1 for _ in read_frames(path))
    assert n == pytest.approx(60, abs=1)  # the gap is filled: video time stays real time
    assert info.n_frames == pytest.approx(n, abs=2)


def test_non_square_pixels_are_resampled(tmp_path):
    path = tmp_path / "anamorphic.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=10:duration=0.3", "-vf", "setsar=2", "-c:v",
           "libx264", path)
    info = probe_video(path)
    assert (info.width, info.height) == (64, 24)
    assert next(read_frames(path)).shape == (24, 64, 3)


def test_real_fixture_driver():
    path = shared_file("fixtures/single_face.mp4")
    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.n_frames, info.has_audio) == (640, 360, 30, 72, True)
    count = 0
    for img in read_frames(path):
        count += 1
        assert img.shape == (360, 640, 3)
    assert count == 72


def test_real_fixture_no_face():
    info = probe_video(shared_file("fixtures/no_face.mp4"))
    assert info.width > 0 and info.fps > 0 and info.n_frames > 10


# ------------------------------------------------------------------------------------------ bad input

def test_missing_file(tmp_path):
    for call in (probe_video, lambda p: list(read_frames(p)), read_image):
        with pytest.raises(AnimateError, match="not found") as err:
            call(tmp_path / "nope.mp4")
        assert_one_line(err)


def test_not_a_video(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is a text file\n" * 20)
    with pytest.raises(AnimateError) as err:
        probe_video(fake)
    assert_one_line(err)
    with pytest.raises(AnimateError):
        list(read_frames(fake))


def test_folder_instead_of_video(tmp_path):
    with pytest.raises(AnimateError, match="folder"):
        probe_video(tmp_path)


def test_audio_only_file_has_no_video(tmp_path):
    wav = tmp_path / "sound.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac", wav)
    with pytest.raises(AnimateError, match="no video stream"):
        probe_video(wav)


@pytest.mark.parametrize("damage", ["no_frames", "noise"])
def test_zero_frame_or_corrupt_video(tmp_path, damage):
    good = tmp_path / "good.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=10:duration=1", "-c:v", "libx264",
           "-movflags", "+faststart", good)
    data = good.read_bytes()
    body = data.index(b"mdat") + 4  # the header says there are frames, the data is gone or garbage
    rest = np.random.default_rng(0).integers(0, 256, len(data) - body, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(data[:body] + (b"" if damage == "no_frames" else rest))
    with pytest.raises(AnimateError, match="no frame that can be decoded") as err:
        probe_video(bad)
    assert_one_line(err)
    with pytest.raises(AnimateError):
        list(read_frames(bad))


# --------------------------------------------------------------------------------- atomic, refusing

def test_failure_mid_write_keeps_existing_output(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc):
            with VideoWriter(out, fps=10, overwrite=True) as writer:
                for i in range(5):
                    writer.write(frame(i))
                raise exc("boom")
        assert out.read_bytes() == b"previous result"
        assert listing(tmp_path) == ["out.mp4"]


def test_failure_mid_write_leaves_no_output(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(out, fps=10) as writer:
            for i in range(5):
                writer.write(frame(i))
            for _ in range(100):  # ffmpeg creates its file a moment after the first frames
                if any(name.endswith(".tmp.mp4") for name in listing(tmp_path)):
                    break
                time.sleep(0.02)
            assert [name for name in listing(tmp_path) if name.endswith(".tmp.mp4")]  # streamed to a temp file
            raise RuntimeError("boom")
    assert listing(tmp_path) == []


def test_refuse_existing_output_unless_overwrite(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(AnimateError, match="exists") as err:
        VideoWriter(out, fps=10)
    assert_one_line(err)
    assert out.read_bytes() == b"keep me"
    write_video(out, n=3, overwrite=True)
    assert probe_video(out).n_frames == 3


def test_refuse_missing_or_unwritable_folder(tmp_path):
    with pytest.raises(AnimateError, match="does not exist"):
        VideoWriter(tmp_path / "no" / "out.mp4", fps=10)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AnimateError):
        VideoWriter(blocker / "out.mp4", fps=10)
    with pytest.raises(AnimateError, match="folder"):
        VideoWriter(tmp_path, fps=10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_refuse_read_only_folder():
    with pytest.raises(AnimateError, match="cannot write") as err:
        VideoWriter(Path("/proc/animate_cli_test.mp4"), fps=10)  # not writable, even for root
    assert_one_line(err)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_refuse_folder_without_permission(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(AnimateError, match="cannot write"):
            VideoWriter(folder / "out.mp4", fps=10)
    finally:
        folder.chmod(0o700)


# -------------------------------------------------------------------------------------------- images

def test_image_round_trip_unicode_path(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    path = tmp_path / "portrét 写真.png"
    write_image(path, img)
    assert np.array_equal(read_image(path), img)
    assert listing(tmp_path) == [path.name]


def test_read_image_channels(tmp_path):
    rgb = frame(0, 20, 30)
    cv2.imwrite(str(tmp_path / "gray.png"), rgb[..., 0])
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([rgb[..., ::-1], np.full((20, 30), 255, np.uint8)]))
    gray = read_image(tmp_path / "gray.png")
    assert gray.shape == (20, 30, 3) and np.array_equal(gray[..., 1], rgb[..., 0])
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)  # channels in RGB order


def test_read_image_applies_exif_orientation(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display turned 90 degrees clockwise
    Image.fromarray(frame(0, 20, 40)).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    img = read_image(tmp_path / "phone.jpg")
    assert img.shape == (40, 20, 3)
    assert red_centre(img) == pytest.approx(red_centre(np.rot90(frame(0, 20, 40), k=-1)), abs=0.05)


def test_read_image_rejects_non_images(tmp_path):
    fake = tmp_path / "face.png"
    fake.write_text("not really a png")
    with pytest.raises(AnimateError, match="not an image") as err:
        read_image(fake)
    assert_one_line(err)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(AnimateError):
        read_image(empty)


def test_write_image_failure_leaves_nothing(tmp_path):
    with pytest.raises(AnimateError):
        write_image(tmp_path / "out.xyz", frame(0))
    with pytest.raises(AnimateError):
        write_image(tmp_path / "missing" / "out.png", frame(0))
    assert listing(tmp_path) == []


def test_suffixes():
    assert is_image("a/B.JPG") and is_image("x.png") and not is_image("x.mp4")
    assert is_video("clip.MOV") and is_video("a.gif") and not is_video("a.png")
