"""Choosing reference frames: the portrait first, then images, then varied frames of a video."""
import numpy as np

from animate_cli.shots import load_shots, spread_pose_frames
from animate_cli.references import choose_shots
from animate_cli.face.landmarks import image_landmarks, make_detector
from animate_cli.video import read_image

from conftest import EXAMPLES, moved_portrait_frames, write_test_video


def base_face():
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.stack([100 + 40 * np.cos(t), 100 + 50 * np.sin(t)], 1).astype(np.float32)


def test_spread_pose_frames_prefers_varied_poses():
    face = base_face()
    poses = []
    for k in range(4):  # four distinct expressions, 10 frames each
        p = face.copy()
        p[48:68, 1] += 8 * k  # mouth opens more and more
        poses += [p] * 10
    chosen = spread_pose_frames(np.stack(poses), 4)
    assert len(chosen) == 4 and chosen == sorted(chosen)
    assert sorted({i // 10 for i in chosen}) == [0, 1, 2, 3]  # one frame of each expression


def test_spread_pose_frames_takes_all_when_few():
    lms = np.stack([base_face()] * 3)
    assert spread_pose_frames(lms, 8) == [0, 1, 2]


def test_nearest_shot_ignores_position_and_scale():
    a = base_face()
    b = a.copy()
    b[48:68, 1] += 20  # open mouth
    target = b * 1.7 + 33  # same expression as b, elsewhere and bigger
    assert choose_shots(np.stack([a, b]), target[None], ()).tolist() == [1]


def test_load_shots_from_reference_video(tmp_path):
    portrait = read_image(EXAMPLES / "portrait.png")
    video = write_test_video(tmp_path / "ref.mp4", moved_portrait_frames(portrait, 6, size=256, shift_px=2.0))
    det = make_detector("dlib")
    lms = image_landmarks(det, portrait)
    shots = load_shots(portrait, lms, [video], 4, det, 0, 64)
    assert len(shots) == 4
    assert shots[0].source == "portrait" and all(s.source == "ref.mp4" for s in shots[1:])
    for s in shots:
        assert s.crop.shape == (64, 64, 3)
        assert (s.landmarks > 0).all() and (s.landmarks < 64).all()  # the face lies inside its crop
