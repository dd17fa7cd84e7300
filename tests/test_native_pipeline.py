"""The pipeline renders at the portrait's resolution: detail kept through a whole run, the rest of the picture
untouched, --crop-only at the face's own size or at --size, several shots."""
import cv2
import numpy as np
import pytest

from animate_cli.animate import AnimateOptions, Progress, Stopwatch, animate, render_video
from animate_cli.animators import WarpAnimator
from animate_cli.composite import Compositor
from animate_cli.face.crop import face_crop_transform, transform_points
from animate_cli.face.landmarks import image_landmarks, make_detector
from animate_cli.sharpness import sharpness_ratio
from animate_cli.shots import crop_shot
from animate_cli.video import VideoWriter, probe_video, read_frames, read_image

from conftest import EXAMPLES, moved_portrait_frames, write_test_video
from test_composite import textured
from test_motion import open_mouth

WARP = dict(model="warp", landmarks="dlib", audio=False)


@pytest.fixture(scope="module")
def detector():
    return make_detector("dlib")


@pytest.fixture(scope="module")
def scene(tmp_path_factory, detector):
    """The example portrait (512²) with a fine noise texture laid over the face (pores, paint crackle: detail
    at the scale of a pixel), and a driver of it moving a few px and degrees a frame."""
    folder = tmp_path_factory.mktemp("native")
    plain = read_image(EXAMPLES / "portrait.png")
    mask = np.zeros(plain.shape[:2], np.float32)
    cv2.fillConvexPoly(mask, cv2.convexHull(image_landmarks(detector, plain).astype(np.int32)), 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), 3)[..., None]
    texture = textured(*plain.shape[:2], seed=3).astype(np.float32) - 128
    portrait = np.clip(plain + 0.8 * texture * mask, 0, 255).astype(np.uint8)
    path = folder / "textured.png"
    cv2.imwrite(str(path), cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR))
    driver = write_test_video(folder / "driver.mp4",
                              moved_portrait_frames(portrait, 5, size=256, shift_px=1.5, angle_deg=1.0))
    return folder, path, portrait, image_landmarks(detector, portrait), driver


def test_a_run_keeps_the_detail_of_the_face_and_every_pixel_outside_it(scene, detector, monkeypatch, one_thread):
    """--model warp end to end: the face keeps ≥ 0.9 of its face-box Laplacian variance in the decoded MP4 (the
    256² paste-back kept about half), and before encoding every pixel outside the animated region is the
    portrait's own."""
    folder, path, portrait, lms, driver = scene
    written = []
    original = VideoWriter.write
    monkeypatch.setattr(VideoWriter, "write", lambda self, frame: (written.append(frame.copy()),
                                                                   original(self, frame))[1])
    out = folder / "out.mp4"
    animate(path, driver, out, AnimateOptions(**WARP), detector=detector)
    frames = list(read_frames(out))
    assert len(frames) == len(written) == 5 and frames[0].shape == portrait.shape
    assert sharpness_ratio(frames[0], portrait, lms) >= 0.9
    assert min(sharpness_ratio(f, portrait, lms) for f in frames) >= 0.85  # the face moves by a few px only
    region = Compositor(portrait, face_crop_transform(lms, WarpAnimator().resolution), 256).region
    outside = np.ones(portrait.shape[:2], bool)
    outside[region] = False
    assert outside.sum() > portrait.shape[0] * portrait.shape[1] // 3
    for frame in written:
        assert np.array_equal(frame[outside], portrait[outside])
    assert np.abs(written[-1][region].astype(int) - portrait[region]).mean() > 3  # the face did move


def test_crop_only_at_the_faces_own_size_or_at_size(scene, detector, one_thread):
    folder, path, portrait, lms, driver = scene
    native = folder / "native.mp4"
    animate(path, driver, native, AnimateOptions(**WARP, crop_only=True), detector=detector)
    side = 256 / face_crop_transform(lms, 256)[0, 0]  # the crop square in portrait px
    info = probe_video(native)
    assert info.width == info.height and info.width % 2 == 0 and abs(info.width - side) <= 1
    sized = folder / "sized.mp4"
    animate(path, driver, sized, AnimateOptions(**WARP, crop_only=True, size=300), detector=detector)
    assert (probe_video(sized).width, probe_video(sized).height) == (300, 300)
    assert next(read_frames(sized)).std() > 20  # a picture, not a blank


def test_several_shots_each_frame_moves_the_nearest_one(tmp_path, scene, monkeypatch, one_thread):
    """K=2 through the render stage: targets shaped like the second shot (an open mouth) take their face region
    from its own picture (here tinted red), the rest of the frame stays the portrait's."""
    folder, path, portrait, lms, driver = scene
    opened = open_mouth(lms, 12)
    tinted = portrait.copy()
    tinted[..., 0] = 255
    shots = [crop_shot(portrait, lms, 256, "portrait"), crop_shot(tinted, opened, 256, "tinted.png")]
    animator = WarpAnimator()
    animator.prepare([s.crop for s in shots], [s.landmarks for s in shots])
    M = shots[0].M
    targets = np.stack([transform_points(t, M) for t in (lms, opened, lms)])
    written = []
    monkeypatch.setattr(VideoWriter, "write", lambda self, frame: written.append(frame.copy()))
    monkeypatch.setattr(VideoWriter, "close", lambda self: None)
    info = probe_video(driver)
    n = render_video(animator, targets, M, portrait, shots, driver, info, tmp_path / "k2.mp4",
                     AnimateOptions(**WARP, batch_size=2), Stopwatch(), Progress())
    assert n == len(written) == 3
    region = Compositor(portrait, M, 256).region
    centre = tuple(slice(s.start + (s.stop - s.start) // 3, s.stop - (s.stop - s.start) // 3) for s in region)
    assert np.array_equal(written[0], portrait) and np.array_equal(written[2], portrait)  # shot 0, still
    assert written[1][centre][..., 0].mean() > 250  # the second shot's own (red) picture, at its centre
    outside = np.ones(portrait.shape[:2], bool)
    outside[region] = False
    assert np.array_equal(written[1][outside], portrait[outside])

