"""The contract of `animate`, checked on generated odd input (Hypothesis): portraits from 1 px to large,
grey/RGB/RGBA, 8/16-bit PNG, JPEG with every EXIF orientation, drivers of 0-3 frames and odd sizes, and
truncated files of both kinds. Whatever the input, a run either

  exits 0 with a valid MP4 holding one frame per decodable driver frame, or
  exits 1 with exactly one `error:` line on stderr and nothing written (no output, no temporary).

Runs in-process (the landmark models load once) with --model warp; derandomized, so CI sees the same
examples every time.
"""
import re
import struct
import subprocess
import tempfile
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, example, given, settings, strategies as st  # noqa: E402

from animate_cli.cli import main  # noqa: E402
from animate_cli.video import VideoWriter, probe_video, read_frames, read_image  # noqa: E402

from conftest import EXAMPLES, moved_portrait_frames  # noqa: E402

FACE = read_image(EXAMPLES / "portrait.png")
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

# How to store an upright picture so that a viewer applying EXIF orientation 1-8 shows it upright.
STORED_FOR = {1: lambda a: a, 2: lambda a: cv2.flip(a, 1), 3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
              4: lambda a: cv2.flip(a, 0), 5: cv2.transpose, 6: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
              7: lambda a: cv2.flip(cv2.transpose(a), -1), 8: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE)}


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """A JPEG with a minimal EXIF block (APP1) holding only the orientation tag (0x0112)."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def make_portrait(face: bool, w: int, h: int, kind: str, channels: int, orientation: int = 1,
                  keep: float | None = None, grey_level: int = 128):
    """(file name, bytes, upright (w, h)) of the portrait, or of a flat picture; `keep`: the share of
    the file's bytes left after truncation. JPEGs are stored turned so that `orientation` shows them upright."""
    image = (cv2.resize(FACE, (w, h), interpolation=cv2.INTER_AREA) if face
             else np.full((h, w, 3), grey_level, np.uint8))
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    pixels = {1: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), 3: bgr, 4: cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)}[channels]
    if kind == "png16":
        pixels = pixels.astype(np.uint16) * 257
    if kind == "jpg":
        ok, data = cv2.imencode(".jpg", STORED_FOR[orientation](pixels))
        data = with_exif_orientation(data.tobytes(), orientation)
    else:
        ok, data = cv2.imencode(".bmp" if kind == "bmp" else ".png", pixels)
        data = data.tobytes()
    assert ok
    if keep is not None:
        data = data[: int(len(data) * keep)]
    return f"portrait.{'png' if kind == 'png16' else kind}", data, (w, h)


def make_driver(n: int, face: bool, w: int, h: int, keep: float | None = None):
    """(file name, writer) of a driver of n frames (0: a container without a single frame), the
    portrait drifting or flat grey, maybe truncated to `keep` of its bytes."""
    def write(path: Path) -> None:
        if n == 0:
            subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
                            "-frames:v", "0", "-c:v", "libx264", str(path)], check=True)
        else:
            if face:
                frames = moved_portrait_frames(FACE, n, size=max(w, h), shift_px=2.0)
                frames = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
            else:
                frames = [np.full((h, w, 3), 40 * i, np.uint8) for i in range(n)]
            with VideoWriter(path, fps=25) as writer:
                for f in frames:
                    writer.write(f)
        if keep is not None:
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * keep)])

    write.__name__ = f"driver(n={n}, face={face}, {w}x{h}, keep={keep})"  # for Hypothesis' report
    return "driver.mp4", write


tiny = st.integers(1, 63)          # too small for a face: 1 px and up
usual = st.integers(64, 1400)      # up to large-ish; the landmark detector works on at most 960 px

@st.composite
def cut(draw):
    """Most files whole, one in six cut short (to 0-95 % of its bytes)."""
    return draw(st.floats(0.0, 0.95)) if draw(st.integers(0, 5)) == 0 else None



@st.composite
def portraits(draw):
    face = draw(st.sampled_from([True, True, True, False]))
    w = draw(st.one_of(usual, usual, usual, tiny))
    # a face keeps roughly its shape (squeezed flat it is no face any more); flat pictures take any shape
    h = max(1, round(w * draw(st.floats(0.6, 1.6)))) if face else draw(st.one_of(usual, tiny))
    kind = draw(st.sampled_from(["png", "png16", "jpg", "bmp"]))
    channels = draw(st.sampled_from([1, 3] if kind == "jpg" else [1, 3, 4]))
    return make_portrait(face, w, h, kind, channels, draw(st.integers(1, 8)), draw(cut()), draw(st.integers(0, 255)))


@st.composite
def drivers(draw):
    face = draw(st.sampled_from([True, True, True, False]))
    w = draw(st.one_of(st.integers(64, 400), st.integers(64, 400), tiny))
    h = max(1, round(w * draw(st.floats(0.6, 1.6)))) if face else draw(st.integers(1, 400))
    return make_driver(draw(st.sampled_from([1, 2, 3, 3, 2, 1, 0])), face, w, h, draw(cut()))


def decodable_frames(path: Path) -> int | None:
    try:
        return len(list(read_frames(path)))
    except Exception:
        return None


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(portrait=portraits(), driver=drivers())
@example(portrait=make_portrait(True, 301, 333, "jpg", 3, orientation=6), driver=make_driver(3, True, 200, 180))
@example(portrait=make_portrait(True, 255, 255, "png16", 4), driver=make_driver(1, True, 97, 131))
@example(portrait=make_portrait(True, 200, 240, "png", 1), driver=make_driver(2, True, 160, 160, keep=0.8))
def test_exit_0_with_a_whole_video_or_exit_1_with_one_error_line(capfd, portrait, driver):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "in").mkdir()
        (folder / "out").mkdir()
        portrait_path = folder / "in" / portrait[0]
        portrait_path.write_bytes(portrait[1])
        driver_path = folder / "in" / driver[0]
        driver[1](driver_path)
        out = folder / "out" / "result.mp4"
        capfd.readouterr()
        code = main([str(portrait_path), str(driver_path), "-o", str(out), "--model", "warp",
                     "--landmarks", "dlib", "--quiet"])
        err = capfd.readouterr().err
        left = sorted(p.name for p in (folder / "out").iterdir())
        event(f"exit {code}" + (": " + re.sub(r"\S*/", "", err.strip())[7:50] if code else ""))
        if code == 0:
            assert left == ["result.mp4"], left
            info = probe_video(out)
            w, h = portrait[2]  # the portrait's upright size, made even for the encoder
            assert (info.width, info.height) == (w + w % 2, h + h % 2)
            assert len(list(read_frames(out))) == decodable_frames(driver_path)
        else:
            assert code == 1, (code, err)
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("error:"), repr(err)
            assert left == [], left
        assert sorted(p.name for p in (folder / "in").iterdir()) == sorted([portrait[0], driver[0]])
