"""The pipeline's stages, driven through the Animator interface only (any animator will do), and batch items."""
import numpy as np
import pytest

from animate_cli.animate import AnimateOptions, Progress, animate, batch_items, motion_targets
from animate_cli.animators import Animator
from animate_cli.errors import AnimateError
from animate_cli.face.crop import face_crop_transform, transform_points
from animate_cli.face.landmarks import image_landmarks, make_detector
from animate_cli.references import HeldChoice
from animate_cli.video import probe_video, read_image

from conftest import EXAMPLES, moved_portrait_frames, write_test_video


class GreyAnimator(Animator):
    """Not a warp nor a neural model: grey crops, and a pretend fine-tuning of `steps` steps."""

    name = "grey"

    def __init__(self, steps: int):
        super().__init__(resolution=64, device="cpu")
        self.steps = steps
        self.prepared = 0

    @property
    def finetune_steps(self) -> int:
        return self.steps

    def prepare(self, shots, shot_landmarks, on_step=None):
        super().prepare(shots, shot_landmarks)
        self.prepared += 1
        for step in range(self.steps):
            on_step(step + 1, self.steps, {"total": 0.5})

    def render(self, target_landmarks):
        return np.full((len(target_landmarks), 64, 64, 3), 128, np.uint8)


class Recorder(Progress):
    def __init__(self):
        self.calls = []

    def start(self, stage, total):
        self.calls.append(("start", stage, total))

    def advance(self, stage, n=1, **info):
        self.calls.append(("advance", stage, n))


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    portrait = read_image(EXAMPLES / "portrait.png")
    path = tmp_path_factory.mktemp("drv") / "driver.mp4"
    return write_test_video(path, moved_portrait_frames(portrait, 3, size=256, shift_px=1.0))


@pytest.fixture(scope="module")
def detector():
    return make_detector("dlib")


def test_any_animator_drives_the_pipeline_and_its_progress(tmp_path, driver, detector):
    animator, progress = GreyAnimator(steps=3), Recorder()
    opts = AnimateOptions(crop_only=True, size=64, device="cpu")
    report = animate(EXAMPLES / "portrait.png", driver, tmp_path / "o.mp4", opts, progress=progress,
                     detector=detector, animator=animator)
    assert report.frames == 3 and report.model == "grey" and animator.prepared == 1
    assert isinstance(animator.held, HeldChoice)  # a video's frames come in order: shots are held (start_video)
    assert (probe_video(tmp_path / "o.mp4").width, probe_video(tmp_path / "o.mp4").height) == (64, 64)
    assert ("start", "fine-tuning", 3) in progress.calls
    assert progress.calls.count(("advance", "fine-tuning", 1)) == 3
    quiet = Recorder()
    animate(EXAMPLES / "portrait.png", driver, tmp_path / "o2.mp4", opts, progress=quiet, detector=detector,
            animator=GreyAnimator(steps=0))
    assert not [c for c in quiet.calls if c[1] == "fine-tuning"]  # no bar when nothing fine-tunes


def test_save_person_is_refused_before_any_work_when_the_animator_cannot(tmp_path, driver, detector):
    animator = GreyAnimator(steps=0)
    opts = AnimateOptions(save_person=tmp_path / "p.person", device="cpu")
    with pytest.raises(AnimateError, match="--save-person needs a neural model"):
        animate(EXAMPLES / "portrait.png", driver, tmp_path / "o.mp4", opts, detector=detector, animator=animator)
    assert animator.prepared == 0 and list(tmp_path.iterdir()) == []


def test_motion_targets_of_a_still_driver_are_the_portraits_own_landmarks(detector):
    portrait = read_image(EXAMPLES / "portrait.png")
    lms = image_landmarks(detector, portrait)
    targets, M = motion_targets(lms, np.stack([lms] * 4), AnimateOptions(), 64)
    assert targets.shape == (4, 68, 2) and targets.dtype == np.float32
    assert np.allclose(M, face_crop_transform(lms, 64))
    assert np.allclose(targets, transform_points(lms, M)[None], atol=1e-3)


def test_batch_items_files_and_folders(tmp_path):
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a portrait")
    (tmp_path / ".hidden.png").write_bytes(b"")
    person = tmp_path / "a_person"
    person.mkdir()
    for name in ("2.jpg", "1.jpg"):
        (person / name).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    items = batch_items(tmp_path)
    assert [i.name for i in items] == ["a_person", "b"]
    assert items[0].portrait.name == "1.jpg" and [r.name for r in items[0].refs] == ["2.jpg"]
    assert items[1].portrait.name == "b.png" and items[1].refs == []
    with pytest.raises(AnimateError, match="no portraits"):
        batch_items(tmp_path / "empty")


def test_the_drivers_gaze_reaches_the_warp(tmp_path, driver, detector):
    """Each rendered batch gets a gaze field over the portrait's eyes: the irises slide where the driver's do."""
    from animate_cli.animate import gaze_shifts
    from animate_cli.animators import WarpAnimator

    seen = []

    class Watching(WarpAnimator):
        def render_motion(self, target_landmarks, field=None):
            seen.append(field)
            return super().render_motion(target_landmarks, field=field)

    animate(EXAMPLES / "portrait.png", driver, tmp_path / "g.mp4", AnimateOptions(device="cpu"),
            detector=detector, animator=Watching(resolution=256, device="cpu"))
    assert seen and all(f is not None for f in seen)
    # the shifts themselves: a driver looking right of its median moves both portrait irises right
    portrait = read_image(EXAMPLES / "portrait.png")
    lms = image_landmarks(detector, portrait)
    drv = np.repeat(lms[None], 5, 0)
    eyes = np.stack([lms[36:42].mean(0), lms[42:48].mean(0)])
    irises = np.repeat(eyes[None], 5, 0)
    width = np.linalg.norm(lms[39] - lms[36])
    irises[4, :, 0] += 0.15 * width  # the last frame looks right
    targets, M = motion_targets(lms, drv, AnimateOptions(), 256)
    shifts = gaze_shifts(portrait, lms, drv, irises, targets, M)
    assert np.abs(shifts[:4]).max() < 1e-3
    assert (shifts[4, :, 0] > 1.0).all()
