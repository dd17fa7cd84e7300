"""Landmark backends: dlib for real on hand-annotated photos; fan's real loading code on random weights."""
import numpy as np
import pytest
import torch

from animate_cli.errors import AnimateError
from animate_cli.face import landmarks as lm
from conftest import shared_file

cv2 = pytest.importorskip("cv2")


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _pts(path):
    """iBUG .pts (1-based) -> 0-based (68,2)."""
    lines = path.read_text().split("{")[1].split("}")[0].split()
    return np.array(lines, np.float64).reshape(68, 2) - 1


@pytest.fixture(scope="module")
def dlib_det():
    return lm.make_detector("dlib")


@pytest.mark.parametrize("name", ["einstein", "breakingbad"])
def test_dlib_matches_hand_annotation(dlib_det, name):
    image = _rgb(shared_file(f"fixtures/{name}.jpg"))
    truth = _pts(shared_file(f"fixtures/{name}.pts"))
    iod = np.linalg.norm(truth[36:42].mean(0) - truth[42:48].mean(0))
    boxes = dlib_det.detect(image)
    gt_box = np.r_[truth.min(0), truth.max(0)]
    hits = [b for b in boxes if lm._iou(b, gt_box) > 0.3]
    assert hits, f"annotated face not detected in {name}: {boxes}"
    pts = dlib_det.landmarks(image, hits[0])
    assert pts.shape == (68, 2) and pts.dtype == np.float32
    err = np.linalg.norm(pts - truth, axis=1).mean() / iod
    assert err < 0.15, err


def test_dlib_box_from_landmarks_mimics_detector(dlib_det):
    """Tracking refits in a box derived from landmarks: it must resemble the detector's own box."""
    image = _rgb(shared_file("fixtures/single_face.jpg"))
    box = dlib_det.detect(image)[0]
    derived = dlib_det.box_from_landmarks(dlib_det.landmarks(image, box))
    assert lm._iou(box, derived) > 0.75


def test_multi_face_largest_first_and_warning(dlib_det):
    image = _rgb(shared_file("fixtures/multi_face.jpg"))
    boxes = dlib_det.detect(image)
    assert len(boxes) >= 3
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    assert areas == sorted(areas, reverse=True)
    warnings = []
    pts = lm.image_landmarks(dlib_det, image, warn=warnings.append)
    assert len(warnings) == 1 and "faces found, using the largest" in warnings[0]
    assert lm._iou(np.r_[pts.min(0), pts.max(0)], boxes[0]) > 0.4
    other = lm.image_landmarks(dlib_det, image, face_index=1, warn=warnings.append)
    assert lm._iou(np.r_[other.min(0), other.max(0)], boxes[1]) > 0.4
    with pytest.raises(AnimateError, match="out of range"):
        lm.image_landmarks(dlib_det, image, face_index=len(boxes))


def test_no_face(dlib_det):
    blank = np.full((240, 320, 3), 128, np.uint8)
    assert dlib_det.detect(blank) == []
    with pytest.raises(AnimateError, match="no face found in blank.png"):
        lm.image_landmarks(dlib_det, blank, name="blank.png")


def test_single_face_portrait_no_warning(dlib_det):
    image = _rgb(shared_file("fixtures/astronaut.png"))
    warnings = []
    pts = lm.image_landmarks(dlib_det, image, warn=warnings.append)
    assert warnings == []
    # the astronaut's face is in the upper middle of the picture
    assert 150 < pts[:, 0].mean() < 260 and 80 < pts[:, 1].mean() < 200


def test_unknown_backend():
    with pytest.raises(AnimateError, match="unknown landmark backend"):
        lm.make_detector("mediapipe")


# ---------------------------------------------------------------- fan (face-alignment) backend

@pytest.fixture(scope="module")
def random_fan_home(tmp_path_factory):
    """A TORCH_HOME holding random weights under face-alignment's real file names and formats."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(s3fd().state_dict(), ckpt / lm.FAN_FILES[0])   # loaded with load_state_dict_from_url
    torch.save(FAN(4).state_dict(), ckpt / lm.FAN_FILES[1])   # loaded with torch.load(weights_only=True)
    return home


def test_fan_missing_weights_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(lm, "_online", lambda *a, **k: False)
    monkeypatch.setattr(lm, "mesh_available", lambda: False)
    assert not lm.fan_weights_cached()
    assert lm.make_detector("auto").name == "dlib"
    with pytest.raises(AnimateError, match="no internet") as e:
        lm.make_detector("fan")
    assert "\n" not in str(e.value)


def test_fan_corrupt_weights(tmp_path, monkeypatch):
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    for name in lm.FAN_FILES:
        (ckpt / name).write_bytes(b"not a checkpoint")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert lm.fan_weights_cached()
    with pytest.raises(AnimateError, match="could not load face-alignment weights") as e:
        lm.make_detector("fan")
    assert "\n" not in str(e.value)


def test_fan_random_weights_real_loader(random_fan_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(random_fan_home))
    monkeypatch.setattr(lm, "_online", lambda *a, **k: pytest.fail("must not go online"))
    monkeypatch.setattr(lm, "mesh_available", lambda: False)
    assert lm.fan_weights_cached()
    det = lm.make_detector("auto")
    assert det.name == "fan"
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    pts = det.landmarks(image, np.array([20, 10, 90, 80], np.float32))
    assert pts.shape == (68, 2) and pts.dtype == np.float32 and np.isfinite(pts).all()
    boxes = det.detect(image)   # random detector: any number of boxes, but well-formed
    assert all(b.shape == (4,) for b in boxes)
    assert lm.make_detector("fan") is not det and lm.make_detector("fan")._fa is det._fa  # loaded once
