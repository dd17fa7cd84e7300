"""Fault injection: the `animate` command killed outright (SIGKILL, which nothing can catch) at random
points of a run and of a batch, then run again.

After every kill: each .mp4 present decodes completely with the right frame count (outputs appear
atomically), and every batch item finished before the kill is still there, untouched. The rerun
completes the rest and leaves no temporary behind (it removes those of the killed processes).
Kills are bounded (4 per test) and seeded, so the module takes a few runs' time.
"""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from animate_cli.video import probe_video, read_frames, read_image, write_image

from conftest import EXAMPLES, ROOT, moved_portrait_frames, write_test_video

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name != "posix", reason="SIGKILL and pids are POSIX")]

SEED = 19
KILLS = 4
FRAMES = 8
COMMAND = [sys.executable, "-c", "from animate_cli.cli import entry; entry()"]
WARP = ["--model", "warp", "--landmarks", "dlib", "--quiet"]


@pytest.fixture(scope="module")
def portrait():
    image = read_image(EXAMPLES / "portrait.png")
    return cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def driver(tmp_path_factory, portrait):
    """A few frames of the portrait drifting, with sound (so the second, muxing pass runs too)."""
    path = tmp_path_factory.mktemp("drv") / "driver.mp4"
    return write_test_video(path, moved_portrait_frames(portrait, FRAMES, size=256, shift_px=1.5), audio=True)


def env():
    e = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    e.pop("ANIMATE_DEBUG", None)
    return e


def start(args) -> subprocess.Popen:
    return subprocess.Popen(COMMAND + [str(a) for a in args], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def outputs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".mp4" and not p.name.startswith("."))


def writing(folder: Path, child: subprocess.Popen) -> bool:
    """Is this child writing a video (its temporaries carry its pid; killed runs may have left others)?"""
    return any(p.name.endswith(".tmp.mp4") and f".{child.pid}-" in p.name for p in folder.iterdir())


def finish(args, folder: Path) -> tuple[float, float]:
    """Run to the end; the wall time it took, and how long of that the video was being written."""
    t0 = time.monotonic()
    child = start(args)
    first_write = None
    while child.poll() is None:
        if first_write is None and writing(folder, child):
            first_write = time.monotonic()
        time.sleep(0.005)
    _, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    end = time.monotonic()
    return end - t0, end - (first_write or t0)


def kill_at_random(args, folder: Path, rng: random.Random, timing: tuple[float, float], k: int,
                   after_outputs: int | None = None) -> None:
    """Kill a run at a random moment: once `after_outputs` outputs exist (if given), then for odd kills
    a random moment while a video is being written (the encode, the muxing of the sound, the renames),
    for even ones any moment (since start: mostly start-up and landmarks; or of the next item)."""
    duration, window = timing
    child = start(args)
    while after_outputs is not None and child.poll() is None and len(outputs(folder)) < after_outputs:
        time.sleep(0.005)
    if k % 2:
        while child.poll() is None and not writing(folder, child):
            time.sleep(0.005)
        delay = rng.uniform(0.0, 1.2 * window)
    else:
        delay = rng.uniform(0.05, 1.0) * duration if after_outputs is None else rng.uniform(0.0, 2.0 * window)
    time.sleep(delay)
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)
    child.communicate(timeout=120)


def assert_complete(path: Path) -> None:
    """A whole video: the header reads and every frame decodes."""
    info = probe_video(path)
    assert info.n_frames == FRAMES, path
    assert len(list(read_frames(path))) == FRAMES, path


def fingerprint(path: Path) -> tuple:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def test_run_killed_at_random_points_then_rerun(tmp_path, driver):
    rng = random.Random(SEED)
    first = tmp_path / "first.mp4"
    timing = finish([EXAMPLES / "portrait.png", driver, "-o", first] + WARP, tmp_path)
    assert_complete(first)
    out = tmp_path / "out.mp4"
    args = [EXAMPLES / "portrait.png", driver, "-o", out, "--preview", "--overwrite"] + WARP
    for k in range(KILLS):
        kill_at_random(args, tmp_path, rng, timing, k)
        for video in outputs(tmp_path):  # out.mp4 and its preview: absent, or whole
            assert_complete(video)
    finish(args, tmp_path)
    assert [p.name for p in outputs(tmp_path)] == ["first.mp4", "out.mp4", "out.preview.mp4"]
    for video in outputs(tmp_path):
        assert_complete(video)
    assert temporaries(tmp_path) == []


def test_batch_killed_at_random_points_then_rerun(tmp_path, driver, portrait):
    rng = random.Random(SEED + 1)
    folder, results = tmp_path / "people", tmp_path / "results"
    folder.mkdir()
    results.mkdir()
    names = ["ann", "bob", "cy"]
    for i, name in enumerate(names):  # three distinct people-to-be: the portrait, shifted a little
        write_image(folder / f"{name}.png", np.roll(portrait, 4 * i, axis=1))
    args = [folder, driver, "-o", results] + WARP
    duration, window = finish([folder / "ann.png", driver, "-o", results / "single.mp4"] + WARP, results)
    (results / "single.mp4").unlink()
    timing = (duration, window)
    finished: dict[str, tuple] = {}
    for k in range(KILLS):
        done = len(outputs(results))
        kill_at_random(args, results, rng, timing, k, after_outputs=done + rng.randrange(len(names) - done or 1))
        for name, before in finished.items():  # what was done survives, untouched
            assert fingerprint(results / name) == before, name
        for video in outputs(results):
            assert_complete(video)
            finished.setdefault(video.name, fingerprint(video))
    finish(args, results)
    assert [p.name for p in outputs(results)] == [f"{n}.mp4" for n in names]
    for video in outputs(results):
        assert_complete(video)
    for name, before in finished.items():  # the rerun skipped what was done
        assert fingerprint(results / name) == before, name
    assert temporaries(results) == []
