"""Gaze: the dark disc of a synthetic eye slides the way the gaze says, stays inside the eye, and the lids
and skin around it do not move; the dark-blob estimator finds the disc; the driver's gaze is relative."""
import cv2
import numpy as np
import pytest
import torch

from animate_cli.face.iris import iris_centres
from animate_cli.face.measures import gaze
from animate_cli.gaze import MAX_ECCENTRIC, gaze_field, iris_shifts, relative_gaze
from animate_cli.warp import DEFAULT_REG, warp_image
from test_face_measures import irises_at, shut_eye
from test_motion import face

SIZE = 160


def eye_image(pts, iris_offset=(0.0, 0.0), radius=6):
    """Skin, two almond eyes through the landmarks (white), a dark disc per eye at `iris_offset` eye widths."""
    img = np.full((SIZE, SIZE), 140, np.uint8)
    for eye, (a, b) in zip(((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)), ((36, 39), (42, 45))):
        poly = np.round(pts[list(eye)] * 16).astype(np.int32)
        opening = np.zeros_like(img)
        cv2.fillPoly(opening, [poly], 1, shift=4)
        disc = np.zeros_like(img)
        w = pts[b, 0] - pts[a, 0]
        c = (pts[a] + pts[b]) / 2 + np.array(iris_offset) * w
        cv2.circle(disc, tuple(int(v) for v in np.round(c * 16)), radius * 16, 1, -1, shift=4)
        img[opening > 0] = 235
        img[(opening > 0) & (disc > 0)] = 25
    return np.repeat(img[..., None], 3, -1)


def dark_centroid(img, x_lo, x_hi):
    ys, xs = np.nonzero(img[:, x_lo:x_hi, 0] < 90)
    return np.array([xs.mean() + x_lo, ys.mean()])


def shifted(img, pts, shifts):
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    field = gaze_field(pts[None], shifts[None], SIZE)
    out = warp_image(t, pts[None], pts[None], reg=DEFAULT_REG, field=field)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


@pytest.fixture
def pts():
    return face(80, 90, 2.0)  # eyes 48 px wide, 16 px tall, centred at (24, 54) and (136, 54)


def inside_eye(pts, eye, xy, margin=0.0):
    """Is each point (..., 2) inside the ellipse through the eye's corners and lids?"""
    c = pts[[36, 39]].mean(0) if eye == 0 else pts[[42, 45]].mean(0)
    return ((xy[..., 0] - c[0]) / 24) ** 2 + ((xy[..., 1] - c[1]) / (8 - margin)) ** 2 <= 1.0


def test_dark_disc_moves_left_when_gaze_says_left_and_stays_inside(pts):
    img = eye_image(pts)
    before = dark_centroid(img, 0, SIZE // 2)
    shifts = iris_shifts(pts[None], np.array([[-0.15, 0.0]]))[0]
    assert shifts[0, 0] == pytest.approx(-0.15 * 48, abs=1e-3) and shifts[0, 1] == pytest.approx(0, abs=1e-6)
    out = shifted(img, pts, shifts)
    after = dark_centroid(out, 0, SIZE // 2)
    assert after[0] - before[0] == pytest.approx(-0.15 * 48, abs=1.5)
    assert abs(after[1] - before[1]) < 0.5
    ys, xs = np.nonzero(out[..., 0] < 90)
    side = xs >= SIZE // 2
    for eye in (0, 1):
        assert inside_eye(pts, eye, np.stack([xs[side == eye], ys[side == eye]], -1).astype(float)).all()
    # skin and lids are left alone: everything outside the eyes is unchanged
    outside = ~(inside_eye(pts, 0, np.stack(np.meshgrid(np.arange(SIZE), np.arange(SIZE)), -1).astype(float))
                | inside_eye(pts, 1, np.stack(np.meshgrid(np.arange(SIZE), np.arange(SIZE)), -1).astype(float)))
    assert np.abs(out[outside].astype(int) - img[outside]).max() <= 1
    # and right means right
    right = dark_centroid(shifted(img, pts, iris_shifts(pts[None], np.array([[0.15, 0.0]]))[0]), 0, SIZE // 2)
    assert right[0] > before[0] + 5


def test_a_huge_gaze_is_clamped_so_the_iris_stays_in_the_eye(pts):
    own = gaze(pts[None], irises_at(pts, 0.1, 0.0)[None])[0]
    shifts = iris_shifts(pts[None], np.array([[3.0, 3.0]]), portrait_gaze=own)[0]
    total = own[:, 0] + shifts[:, 0] / 48
    assert (total <= MAX_ECCENTRIC + 1e-9).all()
    assert (np.abs(shifts[:, 1]) <= 0.3 * 16 + 1e-6).all()  # vertical: within the lid gap's share
    img = eye_image(pts, iris_offset=(0.1, 0.0))
    out = shifted(img, pts, shifts)
    ys, xs = np.nonzero(out[..., 0] < 90)
    left = xs < SIZE // 2
    assert inside_eye(pts, 0, np.stack([xs[left], ys[left]], -1).astype(float)).all()


def test_shut_eye_gets_no_vertical_shift(pts):
    shut = shut_eye(pts, 0, 0.0)
    shifts = iris_shifts(shut[None], np.array([[0.0, 0.2]]))[0]
    assert abs(shifts[0, 1]) < 1e-6 and abs(shifts[1, 1]) > 1


def test_dark_blob_finds_the_iris_and_follows_it(pts):
    for offset in ((0.0, 0.0), (-0.15, 0.0), (0.15, 0.05)):
        img = eye_image(pts, iris_offset=offset)
        found = iris_centres(img, pts)
        want = irises_at(pts, *offset)
        assert np.abs(found - want).max() < 1.0, (offset, found, want)
    small = cv2.resize(eye_image(pts, (-0.15, 0.0)), (SIZE // 4, SIZE // 4), interpolation=cv2.INTER_AREA)
    found = iris_centres(small, pts / 4 - 0.375)  # a 40 px face: eyes 12 px wide
    assert gaze((pts / 4 - 0.375)[None], found[None])[0, :, 0] == pytest.approx([-0.15, -0.15], abs=0.04)


def test_relative_gaze_is_relative_to_the_median_and_clamped(pts):
    series = np.repeat(pts[None], 9, 0)
    irises = np.array([irises_at(pts, h, 0.0) for h in (0.1,) * 6 + (0.25, 0.1, 2.0)])
    rel = relative_gaze(series, irises)
    assert rel[:6, 0] == pytest.approx(0, abs=1e-6)
    assert rel[6, 0] == pytest.approx(0.15, abs=1e-6) and rel[8, 0] == pytest.approx(0.2)
