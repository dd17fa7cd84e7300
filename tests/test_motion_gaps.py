"""Relative motion moves eyelids and inner lips as gaps: shut maps to shut on any portrait, a closed
mouth stays closed, and lids or lips never pass through each other."""
import numpy as np
import pytest

from animate_cli.face.measures import eye_openness, mouth_opening
from animate_cli.motion import REOPENED, SHUT_PORTRAIT, eyelid_scale, lip_gap, transfer_relative
from test_face_measures import shut_eye
from test_motion import face


def eyes_of(pts, height: float):
    """The face with both eyes reshaped to half-height `height` (wide or narrow eyes)."""
    out = pts.copy()
    for c0, u1, u2, c1, l2, l1 in ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)):
        cy = (out[c0, 1] + out[c1, 1]) / 2
        for u, l in ((u1, l1), (u2, l2)):
            out[u, 1], out[l, 1] = cy - height * 0.866, cy + height * 0.866
    return out


def closed_mouth(pts):
    out = pts.copy()
    out[[65, 66, 67]] = out[[63, 62, 61]]
    return out


def driver_with(n=12, blink=(), wink=(), widen=()):
    frames = []
    for i in range(n):
        f = face(200, 150, 0.8)
        if i in blink:
            f = shut_eye(shut_eye(f, 0, 0.05), 1, 0.05)
        if i in wink:
            f = shut_eye(f, 1, 0.05)
        if i in widen:
            f = eyes_of(f, 6.0 * 0.8)
        frames.append(f)
    return np.array(frames, np.float32)


@pytest.mark.parametrize("height", [2.5, 4.0, 7.0])
def test_shut_maps_to_shut_and_rest_to_the_portraits_own_eyes(height):
    portrait = eyes_of(face(), height)
    out = transfer_relative(portrait, driver_with(blink=(5, 6), wink=(9,)), ref_index=0)
    op, own = eye_openness(out), eye_openness(portrait)[0]
    np.testing.assert_allclose(op[0], own, rtol=1e-3)  # rest: the portrait's own eyes
    assert op[5:7].max() < 0.01  # a driver's blink shuts both eyes on any portrait
    assert op[9, 1] < 0.01 and op[9, 0] == pytest.approx(own[0], rel=1e-3)  # a wink shuts one
    for k, (u, l) in enumerate(((37, 41), (38, 40), (43, 47), (44, 46))):
        assert (out[:, l, 1] - out[:, u, 1] >= -1e-3).all()  # lids never cross


def test_a_shut_portrait_reopens_only_when_asked_and_blinks_with_the_driver():
    """A portrait with shut eyes stays shut whatever the driver does; with reopen_eyes (a model that paints eyes)
    it opens to REOPENED at the driver's rest, shuts on its blinks, and lids never cross. An open portrait's
    eyes are the same either way, and so is one that is only narrow (not shut)."""
    shut = shut_eye(shut_eye(face(), 0, 0.0), 1, 0.0)
    driver = driver_with(blink=(5, 6))
    kept = eye_openness(transfer_relative(shut, driver))
    assert kept.max() < 0.01
    out = transfer_relative(shut, driver, reopen_eyes=True)
    op = eye_openness(out)
    np.testing.assert_allclose(op[[0, 1, 2, 9]], REOPENED, rtol=0.02)
    assert op[5:7].max() < 0.01
    for u, l in ((37, 41), (38, 40), (43, 47), (44, 46)):
        assert (out[:, l, 1] - out[:, u, 1] >= -1e-3).all()
    for portrait in (face(), eyes_of(face(), 2.5)):
        assert eye_openness(portrait)[0].min() > SHUT_PORTRAIT
        np.testing.assert_array_equal(transfer_relative(portrait, driver, reopen_eyes=True),
                                      transfer_relative(portrait, driver))


def test_blink_in_the_reference_frame_still_reads_as_a_blink():
    portrait = face()
    out = transfer_relative(portrait, driver_with(blink=(0,)), ref_index=0)
    op = eye_openness(out)
    assert op[0].max() < 0.01 and op[3:].min() > 0.9 * eye_openness(portrait)[0].min()


def test_wider_than_rest_opens_somewhat_but_is_clamped():
    portrait = face()
    out = transfer_relative(portrait, driver_with(widen=(4,)), ref_index=0)
    ratio = eye_openness(out)[4] / eye_openness(portrait)[0]
    assert (ratio > 1.05).all() and (ratio <= 1.3 + 1e-6).all()


def test_closed_mouth_stays_closed_and_opening_adds_the_drivers_extra():
    portrait = closed_mouth(face())
    frames = []
    for i in range(8):
        f = face(200, 150, 0.8)  # the driver's reference has slightly parted lips (gap 6·0.8 px)
        if i == 3:
            f = closed_mouth(f)
        if i == 5:
            f[[65, 66, 67], 1] += 8
        frames.append(f)
    driver = np.array(frames, np.float32)
    out = transfer_relative(portrait, driver, ref_index=0)
    m = mouth_opening(out)
    assert m[0] == pytest.approx(0, abs=1e-4) and m[3] == pytest.approx(0, abs=1e-4)
    extra = mouth_opening(driver)[5] - mouth_opening(driver)[0]
    assert m[5] == pytest.approx(extra, rel=0.05)
    assert (out[:, [65, 66, 67], 1] - out[:, [63, 62, 61], 1] >= -1e-3).all()  # lips never cross


def test_mapping_functions():
    assert eyelid_scale(0.05, 0.3) == 0.0 and eyelid_scale(0.3, 0.3) == pytest.approx(1.0)
    assert 0 < eyelid_scale(0.2, 0.3) < 1 and eyelid_scale(10.0, 0.3) <= 1.3
    assert lip_gap(0.0, 0.1, 0.3) == 0.0 and lip_gap(0.1, 0.1, 0.3) == pytest.approx(0.3)
    assert lip_gap(0.25, 0.1, 0.0) == pytest.approx(0.15) and lip_gap(0.05, 0.1, 0.3) == pytest.approx(0.15)
