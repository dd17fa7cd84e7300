"""face.regions: openings normalised by the inter-ocular distance, the mouth box and the mouth LPIPS."""
import numpy as np
import pytest

from animate_cli.errors import AnimateError
from animate_cli.face.regions import (OPEN_MOUTH_GAP, crop_box, eye_boxes, eye_gaps, eye_lpips, interocular, mouth_box, mouth_crops,
                                      mouth_gap, mouth_lpips, mouth_open)
from synthetic_faces import face, face_landmarks


def test_openings_are_the_drawn_gaps_whatever_the_face_size():
    for size in (64, 256):
        lm = face_landmarks(size, mouth_gap=0.3, eye_gap=0.08)
        assert interocular(lm) == pytest.approx(0.46 * size, rel=1e-5)
        assert mouth_gap(lm) == pytest.approx(0.3, rel=1e-4)
        assert eye_gaps(lm) == pytest.approx([0.08, 0.08], rel=1e-4)


def test_open_mouth_threshold_and_batches():
    lms = np.stack([face_landmarks(128, mouth_gap=g) for g in (0.0, OPEN_MOUTH_GAP - 0.01, OPEN_MOUTH_GAP + 0.01, 0.4)])
    assert mouth_open(lms).tolist() == [False, False, True, True]
    assert mouth_gap(lms).shape == (4,) and eye_gaps(lms).shape == (4, 2)
    with pytest.raises(AnimateError, match="68 landmarks"):
        mouth_gap(np.zeros((5, 2)))


def test_mouth_box_is_a_square_centred_on_the_lips_sized_by_the_mouth_width():
    lm = face_landmarks(128)
    x0, y0, side = mouth_box(lm)
    width = lm[54, 0] - lm[48, 0]
    assert side == pytest.approx(1.6 * width)
    lips = lm[48:68]
    assert x0 + side / 2 == pytest.approx((lips[:, 0].min() + lips[:, 0].max()) / 2, abs=1e-4)
    assert y0 + side / 2 == pytest.approx((lips[:, 1].min() + lips[:, 1].max()) / 2, abs=1e-4)
    assert (lips[:, 0] > x0).all() and (lips[:, 0] < x0 + side).all()
    assert (lips[:, 1] > y0).all() and (lips[:, 1] < y0 + side).all()


def test_crop_box_maps_the_box_onto_the_crop():
    image = np.zeros((100, 100, 3), np.uint8)
    image[30:50, 40:60] = 255  # pixels 40..59: the square of side 20 from x = 39.5 to 59.5
    crop = crop_box(image, (39.5, 29.5, 20.0), 40)
    assert crop.shape == (40, 40, 3)
    assert crop[1:-1, 1:-1].min() == 255  # all of the crop is the white square
    wider = crop_box(image, (29.5, 19.5, 40.0), 40)  # the square fills the middle half
    assert wider[12:28, 12:28].min() == 255 and wider[:8].max() == 0 and wider[:, -8:].max() == 0


def test_mouth_lpips_sees_the_mouth_only():
    image, lm = face(128, mouth_gap=0.3)
    lms = lm[None]
    mean_abs = lambda a, b: np.abs(a.astype(float) - b.astype(float)).mean(axis=(1, 2, 3))  # noqa: E731
    target = image[None]
    elsewhere = target.copy()
    elsewhere[0, :40] = 0  # the forehead and eyes: outside the mouth box
    assert mouth_lpips(elsewhere, target, lms, mean_abs) == pytest.approx([0.0])
    mouth = target.copy()
    x0, y0, side = mouth_box(lm).round().astype(int)
    mouth[0, y0 + side // 3:y0 + 2 * side // 3, x0 + side // 3:x0 + 2 * side // 3] = 0
    assert mouth_lpips(mouth, target, lms, mean_abs)[0] > 10
    crops = mouth_crops(target, lms)
    assert crops.shape == (1, 96, 96, 3)
    with pytest.raises(AnimateError, match="differ in shape"):
        mouth_lpips(target[:, :64], target, lms, mean_abs)


def test_mouth_lpips_with_the_real_lpips_is_zero_for_the_same_mouth():
    from animate_cli.evaluation.metrics import lpips

    image, lm = face(128, mouth_gap=0.3)
    batch, lms = np.stack([image, image]), np.stack([lm, lm])
    changed = batch.copy()
    changed[1] = face(128, mouth_gap=0.0)[0]  # the same face with its mouth shut
    values = mouth_lpips(changed, batch, lms, lpips)
    assert values.shape == (2,) and values[0] < 1e-4 and values[1] > 0.05


def test_eye_metric_sees_the_eyes_and_nothing_else():
    """eye_lpips crops each eye of the target's landmarks: shut eyes in the prediction cost, a changed mouth
    does not; the two eyes are averaged (one eye wrong costs half of both)."""
    open_, lm = face(128, mouth_gap=0.0, eye_gap=0.12)
    shut, _ = face(128, mouth_gap=0.0, eye_gap=0.0)
    talking, _ = face(128, mouth_gap=0.3, eye_gap=0.12)
    mean_abs = lambda a, b: np.abs(a.astype(float) - b.astype(float)).mean(axis=(1, 2, 3))  # noqa: E731
    assert eye_lpips(open_[None], open_[None], lm[None], mean_abs)[0] == 0
    assert eye_lpips(talking[None], open_[None], lm[None], mean_abs)[0] == 0
    both = eye_lpips(shut[None], open_[None], lm[None], mean_abs)[0]
    assert both > 2
    one = open_.copy()
    one[:, 64:] = shut[:, 64:]  # the face's left eye (image right) shut
    assert eye_lpips(one[None], open_[None], lm[None], mean_abs)[0] == pytest.approx(both / 2, rel=0.05)
    boxes = eye_boxes(lm)
    assert boxes.shape == (2, 3) and np.allclose(boxes[:, 2], 2.0 * np.linalg.norm(lm[[36, 42]] - lm[[39, 45]], axis=1))
