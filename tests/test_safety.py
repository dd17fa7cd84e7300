"""Nothing lost, nothing surprising (issue 19): temporaries vanish on every exit path, stale ones of killed
runs are cleaned up, no output may be an input, a cut-short driver and a lost face are noted, and no
stray library output reaches stderr."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from animate_cli.cli import main
from animate_cli.errors import AnimateError, Interrupted, interrupt_on_signals
from animate_cli.face.track import gap_note, longest_gap
from animate_cli.video import (VideoWriter, check_not_an_input, check_writable, promised_frames, read_frames,
                               remove_stale_temporaries, shortfall_note, temp_path, write_image)

from conftest import EXAMPLES, ROOT, SLOW_CLI_CHILD

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and pids")


def ffmpeg(*args):
    subprocess.run([FFMPEG, "-v", "error", "-y", "-nostdin", *map(str, args)], check=True)


def temporaries(folder):
    return sorted(p.name for p in Path(folder).rglob("*") if ".tmp" in p.name)


def child_env():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    env.pop("ANIMATE_DEBUG", None)
    return env


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


# --------------------------------------------------------------------------------- signals -> cleanup

WRITER_CHILD = textwrap.dedent("""
    import signal, sys, time
    import numpy as np
    from animate_cli.errors import Interrupted
    from animate_cli.video import VideoWriter
    if sys.argv[2] == "nohup":
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with VideoWriter(sys.argv[1], fps=10) as out:
            print("writing", flush=True)
            while True:
                out.write(np.full((128, 128, 3), int(time.time() * 100) % 255, np.uint8))
                time.sleep(0.01)
    except Interrupted as e:
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        sys.exit(130)
""")


def start_writer(tmp_path, mode="plain"):
    out = tmp_path / "out.mp4"
    child = subprocess.Popen([sys.executable, "-c", WRITER_CHILD, str(out), mode], stdout=subprocess.PIPE,
                             text=True, env=child_env())
    assert child.stdout.readline().strip() == "writing"
    wait_for_temporary(tmp_path, child)
    return child, out


def wait_for_temporary(folder, child, seconds=120):
    """ffmpeg creates its output once it has read enough input to know the stream."""
    deadline = time.monotonic() + seconds
    while not [t for t in temporaries(folder) if t.endswith(".tmp.mp4")]:
        assert child.poll() is None, "the child ended before writing"
        assert time.monotonic() < deadline, "no temporary appeared"
        time.sleep(0.02)


@posix_only
@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_signal_while_writing_leaves_no_temporary(tmp_path, signame, code):
    child, out = start_writer(tmp_path)
    child.send_signal(getattr(signal, signame))
    assert child.wait(timeout=60) == code
    assert list(tmp_path.iterdir()) == []  # neither the temporary nor a half-written output


@posix_only
def test_ignored_hangup_stays_ignored(tmp_path):
    """Under nohup SIGHUP is ignored on purpose: the writer must not turn it into an interruption."""
    child, out = start_writer(tmp_path, "nohup")
    child.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert child.poll() is None
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 143
    assert list(tmp_path.iterdir()) == []


@posix_only
def test_interrupt_on_signals_raises_and_restores():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(Interrupted) as caught:
        with interrupt_on_signals():
            with interrupt_on_signals():  # nested blocks restore the outer handler, not the default
                pass
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode; never reached
    assert caught.value.signum == signal.SIGTERM
    assert isinstance(caught.value, KeyboardInterrupt)  # cleaned up like Ctrl-C everywhere
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.slow
@posix_only
def test_cli_terminated_while_writing_leaves_nothing(tmp_path):
    """The real command, rendering slowed down so SIGTERM surely arrives while the video is being written."""
    out = tmp_path / "out.mp4"
    args = [EXAMPLES / "portrait.png", EXAMPLES / "driver.mp4", "-o", out, "--model", "warp",
            "--landmarks", "dlib", "--quiet", "--batch-size", "2"]
    child = subprocess.Popen([sys.executable, "-c", SLOW_CLI_CHILD, *map(str, args)], env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_temporary(tmp_path, child)
    child.send_signal(signal.SIGTERM)
    code = child.wait(timeout=60)
    assert code != 0
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------- stale temporaries

@posix_only
def test_stale_temporaries_of_dead_runs_are_removed_live_ones_kept(tmp_path):
    out = tmp_path / "out.mp4"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [tmp_path / f".out.mp4.{dead_pid()}-0123abcd.tmp.mp4",
                 tmp_path / f".out.mp4.{dead_pid()}-89abcdef.tmp"]
        kept = [tmp_path / f".out.mp4.{live.pid}-0123abcd.tmp.mp4",        # another run writing it now
                tmp_path / f".out.mp4.{os.getpid()}-0123abcd.tmp.mp4",     # this very process (--preview)
                tmp_path / f".other.mp4.{dead_pid()}-0123abcd.tmp.mp4",    # another output's business
                tmp_path / f".out.mp4.{dead_pid()}-notours.tmp.mp4",       # not a name we make
                tmp_path / ".out.mp4.notes"]
        for p in stale + kept:
            p.write_bytes(b"x")
        with VideoWriter(out, fps=10) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))
        assert out.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name] + [p.name for p in kept])
        assert remove_stale_temporaries(out) == []
    finally:
        live.kill()
        live.wait()


@posix_only
def test_stale_temporaries_removed_when_checking_and_writing_images(tmp_path):
    video, image = tmp_path / "a.mp4", tmp_path / "b.png"
    stale_video = tmp_path / f".a.mp4.{dead_pid()}-0123abcd.tmp.mp4"
    stale_image = tmp_path / f".b.png.{dead_pid()}-0123abcd.tmp.png"
    for p in (stale_video, stale_image):
        p.write_bytes(b"x")
    video.write_bytes(b"done earlier")
    with pytest.raises(AnimateError, match="exists"):  # refused, yet the leftovers of killed runs go
        check_writable(video, overwrite=False)
    write_image(image, np.zeros((4, 4, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.png"]


def test_temp_path_is_hidden_beside_and_names_the_process(tmp_path):
    t = temp_path(tmp_path / "x.mp4", ".tmp.mp4")
    assert t.parent == tmp_path and t.name.startswith(".x.mp4.") and t.name.endswith(".tmp.mp4")
    assert f".{os.getpid()}-" in t.name
    assert temp_path(tmp_path / "x.mp4", ".tmp") != temp_path(tmp_path / "x.mp4", ".tmp")


@posix_only
def test_finished_video_with_sound_leaves_no_temporary(tmp_path):
    """The sound is muxed in a second file: the first is gone before the result is published."""
    from conftest import write_test_video

    driver = write_test_video(tmp_path / "drv.mp4", [np.zeros((16, 16, 3), np.uint8)] * 3, audio=True)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, fps=25, audio_from=driver) as writer:
        for _ in range(3):
            writer.write(np.zeros((16, 16, 3), np.uint8))
    assert temporaries(tmp_path) == []


# --------------------------------------------------------------------------------- inputs are never replaced

@pytest.fixture
def inputs(tmp_path):
    driver = tmp_path / "driver.mp4"
    portrait = tmp_path / "me.png"
    driver.write_bytes(b"driver")
    portrait.write_bytes(b"portrait")
    return driver, portrait


def refused(output, inputs):
    with pytest.raises(AnimateError) as caught:
        check_not_an_input(output, inputs)
    assert "\n" not in str(caught.value) and "input" in str(caught.value)
    return str(caught.value)


def test_output_equal_to_an_input_is_refused(tmp_path, inputs, monkeypatch):
    driver, portrait = inputs
    refused(driver, [portrait, driver])
    monkeypatch.chdir(tmp_path)
    refused(Path("driver.mp4"), [None, driver])                # relative vs absolute
    refused(tmp_path / "sub" / ".." / "driver.mp4", [driver])  # not normalised
    assert (driver.read_bytes(), portrait.read_bytes()) == (b"driver", b"portrait")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links")
def test_output_through_a_symlink_is_refused(tmp_path, inputs):
    driver, portrait = inputs
    link = tmp_path / "link.mp4"
    link.symlink_to(driver)
    message = refused(link, [portrait, driver])
    assert "driver.mp4" in message
    refused(driver, [link])                      # the input given through a link
    folder_link = tmp_path / "elsewhere"
    folder_link.symlink_to(tmp_path, target_is_directory=True)
    refused(folder_link / "driver.mp4", [driver])
    dangling = tmp_path / "later.mp4"            # a link to a file that does not exist yet is no input
    dangling.symlink_to(tmp_path / "nothing.mp4")
    check_not_an_input(dangling, [driver, portrait])


@pytest.mark.skipif(not hasattr(os, "link"), reason="no hard links")
def test_output_hard_linked_to_an_input_is_refused(tmp_path, inputs):
    driver, portrait = inputs
    twin = tmp_path / "twin.mp4"
    os.link(driver, twin)
    refused(twin, [portrait, driver])


def test_distinct_outputs_pass(tmp_path, inputs):
    driver, portrait = inputs
    copy = tmp_path / "copy.mp4"
    shutil.copy(driver, copy)                    # same content, another file: fine to replace
    check_not_an_input(copy, [driver, portrait])
    check_not_an_input(tmp_path / "new.mp4", [driver, portrait, None])


@pytest.mark.parametrize("how", ["same", "symlink"])
def test_cli_never_replaces_its_driver(tmp_path, capsys, how):
    driver = tmp_path / "driver.mp4"
    shutil.copy(EXAMPLES / "driver.mp4", driver)
    original = driver.read_bytes()
    out = driver
    if how == "symlink":
        out = tmp_path / "out.mp4"
        out.symlink_to(driver)
    code = main([str(EXAMPLES / "portrait.png"), str(driver), "-o", str(out), "--overwrite",
                 "--model", "warp", "--landmarks", "dlib", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert driver.read_bytes() == original
    assert code == 1 and len(err.splitlines()) == 1 and "input" in err, err


# --------------------------------------------------------------------------------- a driver cut short

def noisy_video(path, n, fps=10, seconds_of_sound=None):
    """Noise frames (incompressible, so every frame takes room in the file), the index at the front
    (faststart) so a truncated copy still opens."""
    raw = path.with_suffix(".raw.mp4")
    frames = np.random.default_rng(0).integers(0, 255, (n, 48, 64, 3), dtype=np.uint8)
    with VideoWriter(raw, fps=fps) as writer:
        for f in frames:
            writer.write(f)
    sound = ["-f", "lavfi", "-i", f"sine=duration={seconds_of_sound}", "-c:a", "aac"] if seconds_of_sound else []
    ffmpeg("-i", raw, *sound, "-c:v", "copy", "-movflags", "+faststart", path)
    raw.unlink()
    return path


def test_driver_cut_short_is_noted(tmp_path):
    whole = noisy_video(tmp_path / "whole.mp4", 30)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    notes = []
    frames = list(read_frames(cut, note=notes.append))
    assert 5 < len(frames) < 25
    assert len(notes) == 1 and "\n" not in notes[0]
    assert "cut.mp4" in notes[0] and f"{len(frames)} of the 30 frames" in notes[0]
    notes.clear()
    assert len(list(read_frames(whole, note=notes.append))) == 30 and notes == []
    assert len(list(read_frames(cut, max_frames=3, note=notes.append))) == 3 and notes == []  # stopped early


def test_longer_sound_is_no_shortfall(tmp_path):
    video = noisy_video(tmp_path / "v.mp4", 20, seconds_of_sound=4)  # 2 s of picture, 4 s of sound
    assert promised_frames(video, 10) == 20
    notes = []
    assert len(list(read_frames(video, note=notes.append))) == 20 and notes == []


@pytest.mark.parametrize("name, source, codec", [
    ("t.mov", "testsrc=size=32x24:rate=10:duration=1", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
    ("t.avi", "testsrc=size=32x24:rate=10:duration=1", ["-c:v", "mjpeg"]),
    ("t.gif", "testsrc=size=32x24:rate=10:duration=1", []),
    ("t.webm", "testsrc=size=32x24:rate=10:duration=1", ["-c:v", "libvpx-vp9"]),
    ("t.mpg", "testsrc=size=32x24:rate=25:duration=1", ["-c:v", "mpeg1video"]),
    ("t.mkv", "testsrc=size=32x24:rate=10:duration=1", ["-c:v", "libx264"]),
    ("vfr.mp4", "testsrc=size=32x24:rate=30:duration=2", [  # 2/3 s without frames, filled when read
        "-vf", r"select='not(between(n,10,29))',setpts=N/30/TB+if(gte(N\,10)\,20/30/TB\,0)", "-fps_mode", "vfr"]),
])
def test_whole_files_are_not_noted(tmp_path, name, source, codec):
    path = tmp_path / name
    ffmpeg("-f", "lavfi", "-i", source, "-f", "lavfi", "-i", "sine=duration=3", *codec, path)
    notes = []
    assert len(list(read_frames(path, note=notes.append))) > 5
    assert notes == []


def test_shortfall_tolerance():
    assert shortfall_note("a.mp4", 70, 72) is None        # resampling may lose a frame or two
    assert shortfall_note("a.mp4", 5, None) is None       # the header does not say
    assert shortfall_note("a.mp4", 972, 990) is None      # within 2 %
    assert "a.mp4 ends early: 29 of the 72" in shortfall_note("a.mp4", 29, 72)


# --------------------------------------------------------------------------------- a face lost for seconds

def test_longest_gap_and_note():
    face = np.zeros((68, 2), np.float32)
    seq = [face] * 3 + [None] * 4 + [face] + [None] * 30 + [face] * 2 + [None] * 10
    assert longest_gap(seq) == (8, 30)
    note = gap_note(seq, 25.0, "drv.mp4")
    assert note is not None and "1.2 s" in note and "frames 8-37" in note and "drv.mp4" in note
    assert gap_note(seq, 50.0, "drv.mp4") is None            # 0.6 s: a blink of the detector
    assert longest_gap([None] * 5 + [face]) == (0, 5)       # leading
    assert longest_gap([face] + [None] * 7) == (1, 7)       # trailing
    assert longest_gap([face, face]) == (0, 0) and gap_note([face], 25.0, "x") is None


# --------------------------------------------------------------------------------- no stray output

@pytest.fixture
def truncated_png(tmp_path):
    path = tmp_path / "trunc.png"
    path.write_bytes((EXAMPLES / "portrait.png").read_bytes()[:3000])
    return path


def run_truncated(truncated_png, tmp_path, capfd):
    out = tmp_path / "x.mp4"
    code = main([str(truncated_png), str(EXAMPLES / "driver.mp4"), "-o", str(out), "--model", "warp"])
    err = capfd.readouterr().err
    assert code == 1 and not out.exists()
    return err


def test_truncated_png_no_opencv_warning(truncated_png, tmp_path, capfd):
    err = run_truncated(truncated_png, tmp_path, capfd)
    assert "WARN" not in err and "incomplete" not in err, err
    assert "error:" in err


def test_truncated_png_stderr_is_one_error_line(truncated_png, tmp_path, capfd):
    err = run_truncated(truncated_png, tmp_path, capfd)
    assert len(err.splitlines()) == 1 and err.startswith("error:"), repr(err)


# --------------------------------------------------------------------------------- batch names

def test_batch_items_with_the_same_stem_all_survive(tmp_path, capsys):
    import cv2

    people, results = tmp_path / "people", tmp_path / "results"
    (people / "face").mkdir(parents=True)
    portrait = cv2.resize(cv2.imread(str(EXAMPLES / "portrait.png")), (256, 256))
    for path in (people / "face.jpg", people / "face.png", people / "face" / "a.png"):
        cv2.imwrite(str(path), portrait)
    driver = tmp_path / "driver.mp4"
    with VideoWriter(driver, fps=25) as writer:
        for i in range(2):
            writer.write(np.ascontiguousarray(np.roll(portrait[..., ::-1], i, axis=1)))
    args = [str(people), str(driver), "-o", str(results), "--model", "warp", "--landmarks", "dlib", "--quiet"]
    assert main(args) == 0
    assert len([p for p in results.iterdir() if p.suffix == ".mp4"]) == 3
    capsys.readouterr()
