"""Face crops: geometry, round trips, paste-back, border handling, temporal smoothing."""
import numpy as np
import pytest

from animate_cli.face.crop import (DEFAULT_MARGIN, CropSmoother, face_crop_transform, invert_affine,
                                   paste_back, soft_mask, transform_points, warp_to_crop)

cv2 = pytest.importorskip("cv2")


def face_points(cx=200.0, cy=150.0, extent=100.0):
    """68 points spread over a square of side `extent` (brows at the top, chin at the bottom)."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.5, 0.5, (68, 2))
    pts[0], pts[8] = (-0.5, -0.2), (0.0, 0.5)   # make the extent exact on both axes
    pts[16], pts[19] = (0.5, -0.2), (-0.1, -0.5)
    return (pts * extent + (cx, cy)).astype(np.float32)


def smooth_image(h, w):
    """Low-frequency colour pattern: bilinear resampling reproduces it almost exactly."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin(x / 37.0) * np.cos(y / 29.0)
    g = 128 + 90 * np.cos(x / 23.0 + y / 41.0)
    b = 60 + 0.3 * x + 0.2 * y
    return np.clip(np.dstack([r, g, b]), 0, 255).astype(np.uint8)


def test_crop_geometry():
    pts = face_points(200, 150, 100)
    M = face_crop_transform(pts, 256)
    assert M.shape == (2, 3)
    assert M[0, 1] == 0 and M[1, 0] == 0 and M[0, 0] == pytest.approx(M[1, 1])  # square, no rotation
    q = transform_points(pts, M)
    lo, hi = q.min(0), q.max(0)
    assert (hi - lo).max() / 256 == pytest.approx(1 / (1 + DEFAULT_MARGIN), rel=1e-4)  # ~60% of the side
    assert 0.55 < (hi - lo).max() / 256 < 0.65
    assert (lo[0] + hi[0]) / 2 == pytest.approx(128, abs=0.01)          # centred horizontally
    assert 128 < (lo[1] + hi[1]) / 2 < 128 + 0.12 * 256                  # room left above the head
    assert lo[1] > 256 - hi[1]                                           # more room on top than below
    wider = face_crop_transform(pts, 256, margin=1.5)
    assert wider[0, 0] < M[0, 0]


def test_round_trip_and_point_lands_where_m_says():
    pts = face_points(230, 170, 120)
    M = face_crop_transform(pts, 128)
    back = transform_points(transform_points(pts, M), invert_affine(M))
    np.testing.assert_allclose(back, pts, atol=1e-3)
    img = np.zeros((400, 500, 3), np.uint8)
    p = np.array([241.0, 163.0])
    cv2.circle(img, tuple(int(v) for v in p), 6, (255, 255, 255), -1)
    crop = warp_to_crop(img, M, 128)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    ys, xs = np.nonzero(crop[..., 0] > 128)
    expected = transform_points(p[None], M)[0]
    assert abs(xs.mean() - expected[0]) < 1.0 and abs(ys.mean() - expected[1]) < 1.0


def test_paste_back_unchanged_crop_reproduces_frame():
    frame = smooth_image(300, 400)
    M = face_crop_transform(face_points(210, 160, 110), 192)
    crop = warp_to_crop(frame, M, 192)
    out = paste_back(frame, crop, M)
    assert out.shape == frame.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - frame.astype(int))
    assert diff.max() <= 4 and diff.mean() < 0.5


def test_paste_back_places_crop_and_feathers_edges():
    frame = np.full((300, 400, 3), 40, np.uint8)
    M = face_crop_transform(face_points(210, 160, 110), 128)
    white = np.full((128, 128, 3), 240, np.uint8)
    out = paste_back(frame, white, M)
    centre = transform_points(np.array([[64.0, 64.0]]), invert_affine(M))[0].round().astype(int)
    assert (out[centre[1], centre[0]] == 240).all()
    corner = transform_points(np.array([[0.5, 0.5]]), invert_affine(M))[0].round().astype(int)
    assert (out[corner[1], corner[0]] == 40).all()           # crop corner: invisible seam
    assert (out[:5] == 40).all() and (out[:, -5:] == 40).all()  # outside the crop: untouched
    # a profile across the crop rises smoothly, no hard step at the crop border
    row = out[centre[1], :, 0].astype(int)
    assert np.abs(np.diff(row)).max() < 60
    hard = paste_back(frame, white, M, mask=np.ones((128, 128), np.float32))
    assert np.abs(np.diff(hard[centre[1], :, 0].astype(int))).max() > 100  # a hard mask shows a step


def test_soft_mask():
    m = soft_mask(64)
    assert m.shape == (64, 64) and m.dtype == np.float32
    assert m[32, 32] == 1.0 and m[0, 0] == 0.0 and m[32, 0] < 0.1
    assert (np.diff(m[32, :32]) >= 0).all()


def test_face_at_the_border():
    frame = smooth_image(200, 240) // 2 + 100  # no dark pixels anywhere
    pts = face_points(15, 20, 60)              # face half outside the top-left corner
    M = face_crop_transform(pts, 96)
    crop = warp_to_crop(frame, M, 96)
    assert crop.min() >= 90                    # padded from the image, not black
    out = paste_back(frame, np.full((96, 96, 3), 255, np.uint8), M)
    assert out.shape == frame.shape
    assert (out[5, 5] > 240).all()


def test_strong_downscale_does_not_alias():
    stripes = np.zeros((1200, 1200, 3), np.uint8)
    stripes[:, ::2] = 255
    M = face_crop_transform(face_points(600, 600, 800), 64)   # ~21x shrink
    crop = warp_to_crop(stripes, M, 64)
    assert abs(float(crop.mean()) - 127.5) < 15 and crop.std() < 20


def test_crop_smoother_damps_jitter_and_follows_moves():
    rng = np.random.default_rng(1)
    base = face_points(200, 150, 100)
    raw, smooth = [], []
    sm = CropSmoother(128)
    for i in range(40):
        pts = base + rng.normal(0, 1.5, 2) + (60 if i >= 30 else 0)
        M = face_crop_transform(pts, 128)
        raw.append(transform_points(np.array([[200.0, 150.0]]), M)[0])
        smooth.append(transform_points(np.array([[200.0, 150.0]]), sm(M))[0])
    raw, smooth = np.array(raw), np.array(smooth)
    assert np.abs(np.diff(smooth[:30], axis=0)).mean() < 0.4 * np.abs(np.diff(raw[:30], axis=0)).mean()
    assert np.abs(smooth[34] - raw[34]).max() < 3.0   # a real move is followed within a few frames
