"""Nothing lost, nothing surprising (issue 19, phase B): what the `animate` command itself does. No output
ever replaces an input; batch names are unique and stable; a person file knows its portrait; the portrait's
and the driver's face are chosen apart; signals end a command with 128 + the signal and nothing left behind;
a driver cut short or a face lost is noted; a huge portrait is noted; typos and bad values get one line and
a documented exit code; progress bars fit 80 columns and tell the time left; threads are chosen on purpose."""
import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rich.console import Console

from animate_cli import animators
from animate_cli.animate import (AnimateOptions, Progress, Report, animate, batch_names, preview_frame,
                                 read_portrait)
from animate_cli.animators import default_threads
from animate_cli.cli import CliProgress, main, summary
from animate_cli.config import preset
from animate_cli.face.landmarks import LandmarkDetector
from animate_cli.models.checkpoint import _tmp_name, save_checkpoint
from animate_cli.models.discriminator import Discriminator
from animate_cli.models.embedder import Embedder
from animate_cli.models.generator import build_generator
from animate_cli.shots import crop_shot, portrait_fingerprint, same_portrait
from animate_cli.video import VideoWriter, probe_video, read_frames, read_image, remove_stale_temporaries

from conftest import EXAMPLES, ROOT, SLOW_CLI_CHILD, moved_portrait_frames, write_test_video

WARP = ["--model", "warp", "--landmarks", "dlib"]
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and pids")


@pytest.fixture(scope="module")
def portrait():
    return read_image(EXAMPLES / "portrait.png")


@pytest.fixture(scope="module")
def driver(tmp_path_factory, portrait):
    path = tmp_path_factory.mktemp("drv") / "driver.mp4"
    return write_test_video(path, moved_portrait_frames(portrait, 3, size=256, shift_px=1.0), fps=25)


def run(args, capsys):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


class Notes(Progress):
    def __init__(self):
        self.notes = []

    def note(self, message):
        self.notes.append(message)


# ------------------------------------------------------------------------ 1. inputs are never replaced

def test_preview_never_replaces_the_driver(tmp_path, capsys):
    driver = tmp_path / "out.preview.mp4"  # the driver happens to carry the preview's name
    driver.write_bytes((EXAMPLES / "driver.mp4").read_bytes())
    original = driver.read_bytes()
    code, err = run([EXAMPLES / "portrait.png", driver, "-o", tmp_path / "out.mp4", "--preview", "--overwrite",
                     "--quiet"] + WARP, capsys)
    assert code == 1 and "preview" in one_error_line(err) and "input" in err
    assert driver.read_bytes() == original and not (tmp_path / "out.mp4").exists()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links")
def test_save_person_never_replaces_an_input(tmp_path, capsys, driver):
    portrait = tmp_path / "me.png"
    portrait.write_bytes((EXAMPLES / "portrait.png").read_bytes())
    link = tmp_path / "me.person"
    link.symlink_to(portrait)
    for target in (portrait, link):
        code, err = run([portrait, driver, "-o", tmp_path / "o.mp4", "--save-person", target, "--overwrite",
                         "--quiet"] + WARP, capsys)
        assert code == 1 and "--save-person" in one_error_line(err) and "input" in err
    assert portrait.read_bytes() == (EXAMPLES / "portrait.png").read_bytes()
    code, err = run([portrait, driver, "-o", tmp_path / "o.mp4", "--save-person", tmp_path / "o.mp4", "--quiet"]
                    + WARP, capsys)
    assert code == 1 and "names the output" in one_error_line(err)


def test_output_never_replaces_a_reference(tmp_path, capsys, driver):
    ref = tmp_path / "ref.mp4"
    ref.write_bytes(driver.read_bytes())
    code, err = run([EXAMPLES / "portrait.png", driver, "-o", ref, "--ref", ref, "--overwrite", "--quiet"] + WARP,
                    capsys)
    assert code == 1 and "input" in one_error_line(err)
    assert ref.read_bytes() == driver.read_bytes()


def test_batch_never_replaces_a_driver_in_the_output_folder(tmp_path, capsys):
    people, results = tmp_path / "people", tmp_path / "results"
    people.mkdir()
    results.mkdir()
    (people / "ann.png").write_bytes((EXAMPLES / "portrait.png").read_bytes())
    driver = results / "ann.mp4"  # what ann's output would be called
    driver.write_bytes((EXAMPLES / "driver.mp4").read_bytes())
    code, err = run([people, driver, "-o", results, "--overwrite", "--quiet"] + WARP, capsys)
    assert code == 1 and "input" in err
    assert driver.read_bytes() == (EXAMPLES / "driver.mp4").read_bytes()


# ------------------------------------------------------------------------ 2. batch names

def test_batch_names_unique_and_stable(tmp_path):
    (tmp_path / "face").mkdir()
    (tmp_path / "face.jpg").mkdir()  # a folder named like a picture
    entries = [tmp_path / n for n in ("Face.PNG", "face", "face.jpg", "face.jpg.png", "face.png.jpg", "other.png")]
    for e in entries:
        if not e.exists():
            e.write_bytes(b"")
    names = batch_names(entries)
    # stems face, face, face.jpg, face.jpg: those keep their whole name; face.png.jpg's stem is Face.PNG's name
    assert names == ["Face.PNG", "face", "face.jpg", "face.jpg.png", "face.png-2", "other"]
    assert len({n.casefold() for n in names}) == len(names)
    assert batch_names(entries) == names  # the same folder, the same names


def test_batch_same_stems_give_three_outputs_and_a_rerun_skips_them(tmp_path, capsys, portrait):
    people, results = tmp_path / "people", tmp_path / "results"
    (people / "face").mkdir(parents=True)
    small = cv2.resize(portrait, (256, 256), interpolation=cv2.INTER_AREA)
    for path in (people / "face.jpg", people / "face.png", people / "face" / "a.png"):
        cv2.imwrite(str(path), small[..., ::-1])
    driver = write_test_video(tmp_path / "d.mp4", moved_portrait_frames(portrait, 2, size=256, shift_px=1.0))
    args = [people, driver, "-o", results] + WARP
    code, err = run(args, capsys)
    assert code == 0, err
    made = sorted(p.name for p in results.iterdir())
    assert made == ["face.jpg.mp4", "face.mp4", "face.png.mp4"]
    table = err.replace("\n", " ")
    assert all(name in table for name in made), err  # the summary table shows each output
    before = {p.name: p.stat().st_mtime_ns for p in results.iterdir()}
    code, err = run(args, capsys)
    assert code == 0 and err.count("skipped") == 3, err
    assert {p.name: p.stat().st_mtime_ns for p in results.iterdir()} == before


@posix_only
def test_batch_skip_removes_stale_temporaries(tmp_path, capsys, driver):
    people, results = tmp_path / "people", tmp_path / "results"
    people.mkdir()
    results.mkdir()
    (people / "ann.png").write_bytes((EXAMPLES / "portrait.png").read_bytes())
    (results / "ann.mp4").write_bytes(b"done earlier")
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    stale = results / f".ann.mp4.{done.pid}-0123abcd.tmp.mp4"
    stale.write_bytes(b"x")
    code, err = run([people, driver, "-o", results, "--quiet"] + WARP, capsys)
    assert code == 0 and not stale.exists()


# ------------------------------------------------------------------------ 3. person files know their portrait

@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    cfg = preset("tiny", generator="warp")
    folder = tmp_path_factory.mktemp("weights")
    save_checkpoint(folder, cfg, Embedder(cfg), build_generator(cfg), Discriminator(cfg, 3))
    return folder


@pytest.fixture(scope="module")
def saved_person(tmp_path_factory, tiny_weights, driver):
    folder = tmp_path_factory.mktemp("person")
    person = folder / "me.person"
    code = main([str(EXAMPLES / "portrait.png"), str(driver), "-o", str(folder / "o.mp4"), "--model",
                 str(tiny_weights), "--finetune-steps", "1", "--save-person", str(person), "--quiet",
                 "--landmarks", "dlib", "--device", "cpu"])
    assert code == 0
    return person


def another_face(tmp_path) -> Path:
    frame = next(iter(read_frames(EXAMPLES / "driver.mp4")))
    path = tmp_path / "someone.png"
    cv2.imwrite(str(path), frame[..., ::-1])
    return path


def test_person_with_another_portrait_is_refused(tmp_path, capsys, saved_person, driver):
    out = tmp_path / "o.mp4"
    code, err = run([another_face(tmp_path), driver, "-o", out, "--person", saved_person, "--quiet",
                     "--landmarks", "dlib", "--device", "cpu"], capsys)
    line = one_error_line(err)
    assert code == 1 and "me.person" in line and "portrait.png" in line and "someone.png" in line
    assert not out.exists()


def test_person_with_its_portrait_re_encoded_runs(tmp_path, capsys, saved_person, driver, portrait):
    jpeg = tmp_path / "me.jpg"
    cv2.imwrite(str(jpeg), portrait[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 70])
    code, err = run([jpeg, driver, "-o", tmp_path / "o.mp4", "--person", saved_person, "--landmarks", "dlib",
                     "--device", "cpu"], capsys)
    assert code == 0, err
    assert "made from" not in err and "before person files" not in err


def test_old_person_file_without_identity_gets_one_note(tmp_path, capsys, saved_person, driver):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(saved_person), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("identity.")}
    meta.pop("source")
    old = tmp_path / "old.person"
    save_file(tensors, str(old), metadata=meta)
    code, err = run([another_face(tmp_path), driver, "-o", tmp_path / "o.mp4", "--person", old, "--landmarks",
                     "dlib", "--device", "cpu"], capsys)
    assert code == 0, err
    assert len([line for line in err.splitlines() if "old.person was saved before" in line]) == 1, err


def test_fingerprint_tolerates_re_encoding_not_another_picture(portrait):
    from animate_cli.face.landmarks import image_landmarks, make_detector

    det = make_detector("dlib")

    def fingerprint(image):
        shot = crop_shot(image, image_landmarks(det, image), 64, "x")
        return portrait_fingerprint(shot.crop, shot.landmarks)

    ok, data = cv2.imencode(".jpg", portrait, [cv2.IMWRITE_JPEG_QUALITY, 50])
    base = fingerprint(portrait)
    assert same_portrait(base, fingerprint(cv2.imdecode(data, cv2.IMREAD_UNCHANGED)))
    assert same_portrait(base, fingerprint(cv2.resize(portrait, (300, 300), interpolation=cv2.INTER_AREA)))
    assert not same_portrait(base, fingerprint(np.ascontiguousarray(portrait[:, ::-1])))
    assert not same_portrait(base, fingerprint(next(iter(read_frames(EXAMPLES / "driver.mp4")))))


def test_help_says_what_portrait_means_with_person(capsys):
    assert main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "With --person: the portrait that person file was made from" in out


# ------------------------------------------------------------------------ 4. portrait and driver faces apart

@pytest.fixture(scope="module")
def two_faces(tmp_path_factory, portrait):
    canvas = np.full((512, 512 + 320, 3), 128, np.uint8)
    canvas[:, :512] = portrait
    canvas[96:416, 512:] = cv2.resize(portrait, (320, 320), interpolation=cv2.INTER_AREA)
    path = tmp_path_factory.mktemp("two") / "two.png"
    cv2.imwrite(str(path), canvas[..., ::-1])
    return path


def test_face_index_picks_the_portrait_face_only(tmp_path, capsys, two_faces, driver):
    out = tmp_path / "o.mp4"
    code, err = run([two_faces, driver, "-o", out, "--face-index", "1", "--quiet", "--crop-only"] + WARP, capsys)
    assert code == 0, err  # the driver has one face: --face-index does not apply to it
    assert probe_video(out).n_frames == 3


def test_driver_face_out_of_range_names_its_option(tmp_path, capsys, driver):
    code, err = run([EXAMPLES / "portrait.png", driver, "-o", tmp_path / "o.mp4", "--driver-face", "1",
                     "--quiet"] + WARP, capsys)
    assert code == 1 and "--driver-face 1" in one_error_line(err)


# ------------------------------------------------------------------------ 5. every exit path cleans up

def test_error_while_rendering_leaves_nothing(tmp_path, capsys, driver, monkeypatch):
    def broken(self, targets, **kw):
        raise MemoryError("out of memory")

    monkeypatch.setattr(animators.WarpAnimator, "render_motion", broken)
    out = tmp_path / "o.mp4"
    code, err = run([EXAMPLES / "portrait.png", driver, "-o", out, "--preview", "--quiet"] + WARP, capsys)
    assert code == 1 and "MemoryError" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


@posix_only
def test_person_file_temporaries_are_recognised_as_stale(tmp_path):
    person = tmp_path / "me.person"
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    stale = tmp_path / _tmp_name(person).name.replace(f".{os.getpid()}-", f".{done.pid}-")
    stale.write_bytes(b"half a person")
    assert remove_stale_temporaries(person) == [stale]


SIGNAL_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    import typer
    from animate_cli.cli_common import run_app, typer_app
    app = typer_app()

    @app.command()
    def work(signame: str):
        try:
            os.kill(os.getpid(), getattr(signal, signame))
            time.sleep(30)
        finally:
            print("cleaned up", flush=True)

    sys.exit(run_app(app, sys.argv[1:], "animate-x"))
""")


@posix_only
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_every_command_unwinds_on_termination_signals(signame):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", SIGNAL_CHILD, signame], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 128 + getattr(signal, signame), done
    assert done.stdout.strip() == "cleaned up"  # finally blocks ran: temporaries are removed
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted"), done.stderr
    assert (signame if signame != "SIGINT" else "Ctrl-C") in lines[0]


@pytest.mark.slow
@posix_only
@pytest.mark.parametrize("signame", ["SIGHUP", "SIGINT"])
def test_cli_signalled_while_writing_exits_128_plus_signal(tmp_path, driver, signame):
    out = tmp_path / "out.mp4"
    args = [EXAMPLES / "portrait.png", driver, "-o", out, "--preview", "--batch-size", "1"] + WARP
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", SLOW_CLI_CHILD, *map(str, args)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp.mp4")]:
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    child.send_signal(getattr(signal, signame))
    _, err = child.communicate(timeout=60)
    assert child.returncode == 128 + getattr(signal, signame), err
    assert err.splitlines()[-1].startswith("interrupted"), err
    assert list(tmp_path.iterdir()) == []


def test_lone_preview_of_an_unfinished_run_is_redone(tmp_path, capsys, driver):
    out = tmp_path / "o.mp4"
    (tmp_path / "o.preview.mp4").write_bytes(b"left by a run killed before its video was published")
    code, err = run([EXAMPLES / "portrait.png", driver, "-o", out, "--preview", "--quiet"] + WARP, capsys)
    assert code == 0, err
    assert probe_video(tmp_path / "o.preview.mp4").n_frames == 3 and out.exists()
    code, err = run([EXAMPLES / "portrait.png", driver, "-o", out, "--preview", "--quiet"] + WARP, capsys)
    assert code == 1 and "exists" in one_error_line(err)  # a finished run is not redone without --overwrite


# ------------------------------------------------------------------------ 6. a driver cut short, a face lost

def test_face_lost_for_seconds_and_driver_cut_short_each_noted_once(tmp_path, portrait):
    frames = moved_portrait_frames(portrait, 6, size=256, shift_px=1.0)
    blank = [np.full_like(frames[0], 90)] * 30  # 1.2 s at 25 fps
    lost = write_test_video(tmp_path / "lost.mp4", frames[:3] + blank + frames[3:], fps=25)
    progress = Notes()
    opts = AnimateOptions(model="warp", landmarks="dlib", audio=False)
    report = animate(EXAMPLES / "portrait.png", lost, tmp_path / "a.mp4", opts, progress=progress)
    assert report.frames == 36
    gaps = [n for n in progress.notes if "no face in lost.mp4" in n]
    # 1.2 s without a face; the tracker, searching every 5th frame after 10 misses, may see it again later
    assert len(gaps) == 1 and re.search(r"for 1\.[234] s", gaps[0]), gaps
    assert not [n for n in progress.notes if "ends early" in n]

    whole = tmp_path / "whole.mp4"
    noisy = [np.ascontiguousarray(np.clip(f.astype(int) + np.random.default_rng(i).integers(-40, 40, f.shape), 0,
                                          255).astype(np.uint8)) for i, f in
             enumerate(moved_portrait_frames(portrait, 30, size=256, shift_px=0.5))]
    with VideoWriter(whole, fps=25) as writer:  # faststart: a truncated copy still opens
        for f in noisy:
            writer.write(f)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    progress = Notes()
    report = animate(EXAMPLES / "portrait.png", cut, tmp_path / "b.mp4", opts, progress=progress)
    short = [n for n in progress.notes if "ends early" in n]
    assert len(short) == 1 and f"{report.frames} of the 30 frames" in short[0], progress.notes
    assert 5 < report.frames < 25


# ------------------------------------------------------------------------ 7. huge portraits

class OneFace(LandmarkDetector):
    name = "stub"

    def detect(self, image, work_size=None):
        return [np.array([0, 0, 4, 4], np.float32)]

    def landmarks(self, image, box):
        return np.zeros((68, 2), np.float32)


def test_huge_portrait_is_noted_once():
    progress = Notes()
    huge = np.broadcast_to(np.zeros(3, np.uint8), (300, 5000, 3))  # 5000 px wide, next to no memory
    read_portrait(huge, Path("wide.png"), OneFace(), AnimateOptions(), progress)
    assert len(progress.notes) == 1 and "wide.png is 5000x300" in progress.notes[0]
    progress = Notes()
    read_portrait(np.zeros((512, 512, 3), np.uint8), Path("p.png"), OneFace(), AnimateOptions(), progress)
    assert progress.notes == []


def test_preview_of_a_huge_portrait_is_kept_small():
    frame = preview_frame(np.zeros((360, 640, 3), np.uint8), np.zeros((3000, 2000, 3), np.uint8),
                          np.zeros((3000, 2000, 3), np.uint8))
    assert frame.shape[0] == 720 and frame.shape[1] == 1280 + 480 + 480


# ------------------------------------------------------------------------ 8. typos and bad values

def test_model_typo_suggests_the_known_names(tmp_path, capsys, driver):
    code, err = run([EXAMPLES / "portrait.png", driver, "-o", tmp_path / "o.mp4", "-m", "wrap", "--quiet",
                     "--landmarks", "dlib"], capsys)
    line = one_error_line(err)
    assert code == 1 and "did you mean 'warp'?" in line
    assert "default" in line and "config.json" in line and "generator.safetensors" in line


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--threads", "0"), ("--driver-face", "-1"),
                                           ("--face-index", "-2"), ("--finetune-steps", "-1")])
def test_bad_values_exit_1_in_one_line(tmp_path, capsys, driver, option, value):
    code, err = run([EXAMPLES / "portrait.png", driver, "-o", tmp_path / "o.mp4", option, value] + WARP, capsys)
    assert code == 1 and option in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--batch-size", "many"], ["--landmarks", "nose"], ["--no-such-option"]])
def test_bad_usage_exits_2(tmp_path, capsys, args):
    code, err = run([EXAMPLES / "portrait.png", EXAMPLES / "driver.mp4", "-o", tmp_path / "o.mp4"] + args, capsys)
    assert code == 2 and one_error_line(err)


def test_help_documents_the_exit_codes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Exit codes" in out and "bad usage" in out and "143 SIGTERM" in out


# ------------------------------------------------------------------------ 9. progress for humans

def captured_progress(verbose: bool):
    console = Console(file=io.StringIO(), width=80, color_system=None, force_terminal=True)
    progress = CliProgress(quiet=False, verbose=verbose, console=console)
    with progress:
        progress.start("fine-tuning", 40)
        for _ in range(3):
            time.sleep(0.05)
            progress.advance("fine-tuning", 1, cnt=0.031, adv=-0.43, total=-0.2)
        console.print(progress.bars.make_tasks_table(progress.bars.tasks))  # the bar as it shows mid-way
        progress.finish("fine-tuning")
        progress.start("rendering", 72)
        progress.advance("rendering", 72)
        progress.finish("rendering")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.file.getvalue())
    return [line.rstrip() for line in re.split(r"[\r\n]", text) if line.strip()]


def test_progress_fits_80_columns_counts_steps_and_tells_time_left():
    lines = captured_progress(verbose=False)
    assert all(len(line) <= 80 for line in lines), lines
    assert any("step 3/40" in line and " left" in line for line in lines), lines
    assert any("frame 72/72" in line and "took" in line for line in lines), lines
    assert not any("cnt" in line or "adv" in line for line in lines), lines  # loss names only with -v


def test_verbose_shows_the_loss_figures():
    lines = captured_progress(verbose=True)
    assert any("step 2/40" in line and "cnt=0.031" in line for line in lines), lines


class Stages(Progress):
    def __init__(self):
        self.seen = []

    def start(self, stage, total):
        self.seen.append(("start", stage, total))

    def advance(self, stage, n=1, **info):
        self.seen.append(("advance", stage, n))


def test_reference_video_has_its_bar(driver, portrait):
    from animate_cli.face.landmarks import image_landmarks, make_detector
    from animate_cli.shots import load_shots

    det = make_detector("dlib")
    progress = Stages()
    shots = load_shots(portrait, image_landmarks(det, portrait), [driver], 2, det, 0, 64, progress=progress)
    assert len(shots) == 2
    assert progress.seen[0] == ("start", "reference video", 3)
    assert [e for e in progress.seen if e[0] == "advance"] == [("advance", "reference video", 1)] * 3


def test_failing_run_prints_no_blank_line(capsys):
    console = Console(file=io.StringIO(), width=80, force_terminal=True)
    with CliProgress(quiet=False, console=console):
        pass
    assert console.file.getvalue() == ""


def test_closing_line_says_where_the_time_went():
    report = Report(output=Path("out.mp4"), frames=72, wall=41.2, finetune_steps=40,
                    seconds={"portrait": 1.1, "prepare": 35.3, "decode": 0.2, "landmarks": 0.1, "motion": 0.01,
                             "render": 3.0, "composite": 1.0, "encode": 0.5})
    line = summary(report)
    assert line == "wrote out.mp4: 72 frames in 41 s (setup 1.1 s, fine-tuning 35 s, rendering 4.5 s)"
    assert "fps" not in line


# ------------------------------------------------------------------------ 10. threads

def test_default_threads_follow_the_free_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (8.6, 9.0, 9.0))
    assert default_threads() == 1  # a busy 2-core machine: one thread
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.2, 0.1))
    assert default_threads() == 4  # an idle workstation: a few, not all
    monkeypatch.setattr(os, "getloadavg", lambda: (14.0, 0.2, 0.1))
    assert default_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3  # the user's own choice


def test_threads_option_sets_torch_threads(tmp_path, capsys, driver):
    before = torch.get_num_threads()
    try:
        code, err = run([EXAMPLES / "portrait.png", driver, "-o", tmp_path / "o.mp4", "--threads", "1",
                         "--quiet"] + WARP, capsys)
        assert code == 0, err
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
