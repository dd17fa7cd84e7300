"""Tracking: few detector calls, still face stays still, motion is followed, gaps are held."""
import numpy as np
import pytest

from animate_cli.errors import AnimateError
from animate_cli.face.landmarks import make_detector
from animate_cli.face.track import OneEuroFilter, fill_missing, track_landmarks
from conftest import shared_file

cv2 = pytest.importorskip("cv2")


class Counting:
    """Wraps a detector and counts full/region detections."""

    def __init__(self, det):
        self.det, self.name, self.calls = det, det.name, 0

    def detect(self, image, work_size=None):
        self.calls += 1
        return self.det.detect(image, work_size=work_size)

    def landmarks(self, image, box):
        return self.det.landmarks(image, box)

    def fit(self, image, box):
        return self.det.fit(image, box)

    def box_from_landmarks(self, pts):
        return self.det.box_from_landmarks(pts)


@pytest.fixture(scope="module")
def face():
    """A 300x300 RGB portrait with one face, small enough for fast tests."""
    img = cv2.cvtColor(cv2.imread(str(shared_file("fixtures/single_face.jpg"))), cv2.COLOR_BGR2RGB)
    return cv2.resize(img, (300, 300), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def det():
    return make_detector("dlib")


def _noisy(img, n, sigma=4.0, seed=0):
    rng = np.random.default_rng(seed)
    return [np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8) for _ in range(n)]


def _jitter(seq):
    seq = np.stack(seq)
    return float(np.abs(np.diff(seq, axis=0)).mean())


def test_still_face_is_still_and_detector_rarely_called(face, det):
    frames = _noisy(face, 12)
    raw = [det.landmarks(f, det.detect(f)[0]) for f in frames]
    counting = Counting(det)
    tracked = list(track_landmarks(frames, counting, redetect_every=15))
    assert all(t is not None and t.shape == (68, 2) and t.dtype == np.float32 for t in tracked)
    assert counting.calls <= 2, counting.calls
    assert _jitter(raw) > 0.05  # the noise really does shake the raw detector
    assert _jitter(tracked) < 0.35 * _jitter(raw), (_jitter(tracked), _jitter(raw))
    assert np.abs(np.mean(tracked, 0) - np.mean(raw, 0)).mean() < 2.0  # and sits where the face is


def test_moving_face_is_followed(face, det):
    canvas = np.zeros((300, 420, 3), np.uint8)
    frames, shifts = [], []
    for i in range(14):
        dx = 6 * i
        f = canvas.copy()
        f[:, dx:dx + 300] = face
        frames.append(f)
        shifts.append(dx)
    counting = Counting(det)
    for smooth in (False, True):
        tracked = list(track_landmarks(frames, counting, smooth=smooth))
        centre = np.array([t[:, 0].mean() for t in tracked])
        err = np.abs((centre - centre[0]) - np.array(shifts))
        assert err.max() < (2.0 if not smooth else 4.0), err
    assert counting.calls <= 4


def test_blank_frames_give_none_then_hold(face, det):
    blank = np.zeros_like(face)
    frames = _noisy(face, 4) + [blank] * 3 + _noisy(face, 3, seed=1)
    seq = list(track_landmarks(frames, det))
    assert [s is None for s in seq] == [False] * 4 + [True] * 3 + [False] * 3
    filled = fill_missing(seq, "driver.mp4")
    assert filled.shape == (10, 68, 2) and filled.dtype == np.float32
    np.testing.assert_array_equal(filled[4], seq[3])
    np.testing.assert_array_equal(filled[6], seq[3])
    np.testing.assert_array_equal(filled[7], seq[7])


def test_no_face_video(det):
    seq = list(track_landmarks(_video("no_face.mp4", 6), det))
    assert seq == [None] * 6
    with pytest.raises(AnimateError, match="no face found in any frame of no_face.mp4"):
        fill_missing(seq, "no_face.mp4")


def test_fill_missing_leading_gap_and_all_none():
    a = np.ones((68, 2), np.float32)
    b = 2 * a
    filled = fill_missing([None, None, a, None, b], "d.mp4")
    np.testing.assert_array_equal(filled[:4], np.stack([a, a, a, a]))
    np.testing.assert_array_equal(filled[4], b)
    with pytest.raises(AnimateError, match="no face found in any frame of d.mp4"):
        fill_missing([None, None], "d.mp4")


def test_no_face_video_yields_none(det):
    frames = [np.full((120, 160, 3), 90, np.uint8)] * 3
    assert list(track_landmarks(frames, det)) == [None, None, None]


def test_face_index_out_of_range(face, det):
    with pytest.raises(AnimateError, match="out of range"):
        list(track_landmarks([face], det, face_index=3))


def test_one_euro_still_vs_fast():
    """Jitter is strongly damped, yet a fast jump (mouth opening) is followed within a few frames."""
    rng = np.random.default_rng(0)
    f = OneEuroFilter()
    noise = 0.005 * rng.standard_normal(60)
    out = np.array([f(np.array([n]))[0] for n in noise])
    assert np.abs(np.diff(out[10:])).mean() < 0.25 * np.abs(np.diff(noise[10:])).mean()
    f = OneEuroFilter()
    signal = np.r_[np.zeros(20), np.linspace(0, 0.2, 4)[1:], np.full(10, 0.2)]
    out = np.array([f(np.array([s]))[0] for s in signal])
    assert out[25] > 0.8 * 0.2, out[20:27]
    slow = OneEuroFilter(beta=0.0)
    lagging = np.array([slow(np.array([s]))[0] for s in signal])
    assert lagging[25] < out[25]


def _video(name, n):
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(shared_file(f"fixtures/{name}")))
    w, h = next(reader)["size"]
    frames = []
    for raw in reader:
        frames.append(np.frombuffer(raw, np.uint8).reshape(h, w, 3))
        if len(frames) == n:
            break
    reader.close()
    return frames


def test_faceless_stretch_is_searched_sparsely(det):
    frames = [np.full((96, 128, 3), 90, np.uint8)] * 30
    counting = Counting(det)
    assert list(track_landmarks(frames, counting)) == [None] * 30
    assert counting.calls == 10 + 4  # every frame at first, then every 5th


def test_real_video_every_frame(det):
    frames = _video("single_face.mp4", 20)
    w, h = frames[0].shape[1], frames[0].shape[0]
    counting = Counting(det)
    seq = list(track_landmarks(frames, counting))
    assert all(s is not None for s in seq)
    assert counting.calls <= 3
    seq = np.stack(seq)
    assert (seq[..., 0] > 0).all() and (seq[..., 0] < w).all() and (seq[..., 1] < h).all()
