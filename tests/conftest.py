"""Shared test helpers: where ../shared lives, and skipping cleanly without it."""
import os
import textwrap
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANIMATE_SHARED", ROOT.parent / "shared"))  # (a worktree elsewhere: set it)
EXAMPLES = ROOT / "examples"


def pytest_collection_modifyitems(config, items):
    """Markers that skip: `needs_shared` without ../shared beside the checkout, `gpu` without CUDA."""
    for item in items:
        if "needs_shared" in item.keywords and not SHARED.is_dir():
            item.add_marker(pytest.mark.skip(reason="../shared not available"))
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


def shared_file(rel: str) -> Path:
    """A file from ../shared, or skip the test when the folder is not beside the checkout."""
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"../shared/{rel} not available")
    return path


@pytest.fixture
def one_thread():
    """Tiny networks run faster on one thread than on two contended ones (a shared 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def portrait_path() -> Path:
    return EXAMPLES / "portrait.png"


@pytest.fixture
def driver_path() -> Path:
    return EXAMPLES / "driver.mp4"


def write_test_video(path: Path, frames, fps: float = 25.0, audio: bool = False) -> Path:
    """Encode RGB frames with the bundled ffmpeg directly (independent of our own writer)."""
    import subprocess

    import imageio_ffmpeg
    import numpy as np

    frames = [np.ascontiguousarray(f) for f in frames]
    h, w = frames[0].shape[:2]
    silent = path.with_suffix(".silent.mp4") if audio else path
    writer = imageio_ffmpeg.write_frames(str(silent), (w, h), fps=fps, codec="libx264",
                                         pix_fmt_out="yuv420p", macro_block_size=1, quality=8,
                                         output_params=["-loglevel", "error"])
    writer.send(None)
    for f in frames:
        writer.send(f)
    writer.close()
    if audio:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
        dur = len(frames) / fps
        subprocess.run([exe, "-y", "-loglevel", "error", "-i", str(silent), "-f", "lavfi", "-i",
                        f"sine=frequency=440:duration={dur}", "-c:v", "copy", "-c:a", "aac", "-shortest",
                        str(path)], check=True)
        silent.unlink()
    return path


def moved_portrait_frames(image, n: int, size: int = 256, shift_px: float = 4.0, angle_deg: float = 0.0):
    """A synthetic driver: the portrait scaled to `size` and moved by a known translation per frame."""
    import cv2
    import numpy as np

    h, w = image.shape[:2]
    s = size / max(h, w)
    frames = []
    for i in range(n):
        M = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg * i, 1.0)
        M = np.vstack([M, [0, 0, 1]])
        S = np.array([[s, 0, shift_px * i], [0, s, 0], [0, 0, 1]])
        A = (S @ M)[:2]
        frames.append(cv2.warpAffine(image, A, (size, size), borderMode=cv2.BORDER_REFLECT))
    return frames


# The `animate` command with rendering slowed down, run as `python -c SLOW_CLI_CHILD ARGS...`: a signal sent
# while its video is being written surely arrives mid-write.
SLOW_CLI_CHILD = textwrap.dedent("""
    import sys, time
    from animate_cli.animators import WarpAnimator
    from animate_cli.cli import main
    render = WarpAnimator.render_motion
    def slow_render(self, targets, **kw):
        time.sleep(0.5)
        return render(self, targets, **kw)
    WarpAnimator.render_motion = slow_render
    sys.exit(main(sys.argv[1:]))
""")
