"""The native-resolution composite: exact where nothing moves, sharp where it moves, no seam at its edge."""
import cv2
import numpy as np
import pytest
import torch

from animate_cli import composite
from animate_cli.composite import Compositor, ShotSource, border_window, oversample2
from animate_cli.errors import AnimateError
from animate_cli.face.crop import PasteBack, face_crop_transform, transform_points, warp_to_crop
from animate_cli.sharpness import sharpness_ratio
from animate_cli.warp import DEFAULT_REG, resample, tps_grid
from conftest import shared_file
from test_face_crop import smooth_image as smooth  # slow colour waves: a jump between neighbours is the composite's
from test_motion import face, open_mouth, rot

R = 96  # model resolution for these tests: small and fast, still well below the portraits' crop sides


def textured(h, w, seed=0, sigma=0.6):
    """Fine detail everywhere: noise blurred just enough to be band-limited (a photo's pores and grain)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(128, 45, (h, w, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), sigma), 0, 255).astype(np.uint8)


def moved(pts, deg=0.0, shift=(0.0, 0.0), mouth=0.0):
    """The face rolled by `deg` about its centre, shifted, the mouth opened by `mouth` px."""
    c = pts.mean(0)
    out = (open_mouth(pts, mouth) - c) @ rot(deg).T + c + shift
    return out.astype(np.float32)


def grid_for(pts, target, M):
    """The warp model's grid at R² for one frame (as references.warp_references computes it)."""
    return tps_grid(transform_points(pts, M), transform_points(target, M), (R, R), reg=DEFAULT_REG)


def outside(comp, shape):
    mask = np.ones(shape[:2], bool)
    mask[comp.region] = False
    return mask


@pytest.fixture
def scene():
    portrait = textured(300, 280)
    pts = face(140, 150, 0.8)
    return portrait, pts, face_crop_transform(pts, R)


def test_identity_motion_gives_back_the_portrait_bit_for_bit(scene):
    portrait, pts, M = scene
    comp = Compositor(portrait, M, R)
    assert np.array_equal(comp(grid_for(pts, pts, M)), portrait)
    assert np.array_equal(comp(grid_for(pts, pts, M)[0].numpy()), portrait)  # numpy (R,R,2) as well


def test_identity_is_exact_with_the_face_half_outside_the_picture():
    portrait = textured(200, 220, seed=1)
    pts = face(20, 30, 0.7)  # the crop square reaches past the top-left corner
    M = face_crop_transform(pts, R)
    comp = Compositor(portrait, M, R)
    assert comp.origin == (0, 0)
    assert np.array_equal(comp(grid_for(pts, pts, M)), portrait)


def test_outside_the_region_the_portrait_is_untouched_under_real_motion(scene):
    portrait, pts, M = scene
    comp = Compositor(portrait, M, R)
    out = comp(grid_for(pts, moved(pts, 8, (6, -4), 10), M))
    keep = outside(comp, portrait.shape)
    assert keep.any() and np.array_equal(out[keep], portrait[keep])
    assert np.abs(out[comp.region].astype(int) - portrait[comp.region]).mean() > 10  # it did move


def test_fine_detail_survives_a_small_motion_and_not_the_old_paste_back(scene):
    """A portrait made of pixel-scale texture keeps ≥ 0.9 of its face-box Laplacian variance through the
    composite; the 96² crop pasted back (the path this replaces) keeps far less."""
    portrait, pts, M = scene
    target = moved(pts, 2.0, (1.3, 0.7), 2.0)
    grid = grid_for(pts, target, M)
    native = Compositor(portrait, M, R)(grid)
    assert sharpness_ratio(native, portrait, target, pts) >= 0.9

    crop = torch.from_numpy(warp_to_crop(portrait, M, R)).permute(2, 0, 1)[None].float() / 127.5 - 1
    warped = ((resample(crop, grid).clamp(-1, 1) + 1) * 127.5).round().byte()[0].permute(1, 2, 0).numpy()
    old = PasteBack(portrait, M, R)(warped)
    assert sharpness_ratio(old, portrait, target, pts) < 0.5


def test_moved_face_lands_where_the_landmarks_say():
    """A shift of the whole face by (5, 3) px moves a feature (a dark dot between the eyes) by (5, 3) px."""
    portrait = smooth(300, 280)
    pts = face(140, 150, 0.8)
    dot = np.round(pts[27]).astype(int)
    portrait[dot[1] - 2:dot[1] + 3, dot[0] - 2:dot[0] + 3] = 0
    M = face_crop_transform(pts, R)
    out = Compositor(portrait, M, R)(grid_for(pts, moved(pts, 0, (5, 3)), M))
    def centre_of_dark(img):
        ys, xs = np.nonzero(img.astype(int).sum(2) < 60)
        return xs.mean(), ys.mean()

    before, after = centre_of_dark(portrait), centre_of_dark(out)
    assert (after[0] - before[0], after[1] - before[1]) == pytest.approx((5, 3), abs=0.3)


def test_no_seam_at_the_region_border_under_strong_motion():
    """Across the region's edge the picture changes no more than between neighbours just inside it, and
    near the edge it is the portrait itself: the moved face meets the still frame continuously."""
    portrait = smooth(320, 300)
    pts = face(150, 160, 0.8)
    M = face_crop_transform(pts, R)
    comp = Compositor(portrait, M, R)
    out = comp(grid_for(pts, moved(pts, 12, (10, -8), 12), M)).astype(np.float32)
    ys, xs = comp.region
    assert 0 < xs.start and xs.stop < 300 and 0 < ys.start and ys.stop < 320  # all four edges inside
    rows, cols = slice(ys.start + 5, ys.stop - 5), slice(xs.start + 5, xs.stop - 5)
    edges = {  # (across the edge, the next steps inwards) as |differences| between neighbours
        "left": (out[rows, xs.start] - out[rows, xs.start - 1], np.diff(out[rows, xs.start:xs.start + 6], axis=1)),
        "right": (out[rows, xs.stop] - out[rows, xs.stop - 1], np.diff(out[rows, xs.stop - 6:xs.stop], axis=1)),
        "top": (out[ys.start, cols] - out[ys.start - 1, cols], np.diff(out[ys.start:ys.start + 6, cols], axis=0)),
        "bottom": (out[ys.stop, cols] - out[ys.stop - 1, cols], np.diff(out[ys.stop - 6:ys.stop, cols], axis=0)),
    }
    for name, (across, inside) in edges.items():
        assert np.abs(across).mean() <= 1.5 * np.abs(inside).mean() + 0.5, name
        assert np.abs(across).max() <= 1.5 * np.abs(inside).max() + 1.0, name
    ring = np.zeros(portrait.shape[:2], bool)
    ring[comp.region] = True
    ring[ys.start + 3:ys.stop - 3, xs.start + 3:xs.stop - 3] = False
    assert np.abs(out[ring] - portrait[ring]).max() <= 1  # the edge band is (almost) still


def test_the_motion_window_is_zero_on_the_border_and_one_inside():
    w = border_window(64, 0.1)
    assert w[0].max() == 0 and w[-1].max() == 0 and w[:, 0].max() == 0 and w[:, -1].max() == 0
    assert w[10:54, 10:54].min() == 1.0
    assert np.all(np.diff(w[32, :32]) >= 0)


def test_strips_give_the_same_frame_as_one_pass(scene, monkeypatch):
    portrait, pts, M = scene
    grid = grid_for(pts, moved(pts, 5, (3, 2), 6), M)
    whole = Compositor(portrait, M, R)(grid)
    monkeypatch.setattr(composite, "STRIP_PIXELS", 1000)  # a few rows per strip
    strips = Compositor(portrait, M, R)(grid).astype(int)
    # OpenCV's fixed-point warp may round a strip's first row 1/1024 px differently: a level at most, rarely
    assert np.abs(strips - whole).max() <= 1 and (strips != whole).mean() < 0.01


def test_a_reference_picture_is_blended_in_and_the_frame_edge_stays_the_portrait():
    """K>1: a frame reading a --ref shot (another picture, another background) shows that picture's face
    inside, fades through the feathered mask, and leaves the portrait exact at and beyond the edge."""
    portrait = smooth(300, 280)
    pts = face(140, 150, 0.8)
    M = face_crop_transform(pts, R)
    # the reference: the same face at 1.5x, elsewhere, on a tinted background
    A = np.array([[1.5, 0, -60.0], [0, 1.5, -40.0]])
    ref = cv2.warpAffine(portrait, A, (400, 380), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    ref = np.clip(ref.astype(int) + [60, -40, 30], 0, 255).astype(np.uint8)
    ref_pts = transform_points(pts, A)
    Mk = face_crop_transform(ref_pts, R)
    comp = Compositor(portrait, M, R, shots=[ShotSource(portrait, M), ShotSource(ref, Mk)])
    out = comp(grid_for(pts, pts, M), shot=1)
    keep = outside(comp, portrait.shape)
    assert np.array_equal(out[keep], portrait[keep])
    ys, xs = comp.region
    assert np.abs(out[ys.start, xs].astype(int) - portrait[ys.start, xs]).max() <= 1  # alpha 0 on the edge
    cy, cx = np.round(pts.mean(0)).astype(int)[::-1]
    centre = (slice(cy - 10, cy + 10), slice(cx - 10, cx + 10))
    tint = out[centre].astype(int) - portrait[centre]
    np.testing.assert_allclose(tint.mean(axis=(0, 1)), [60, -40, 30], atol=4)  # the ref's pixels inside
    assert np.array_equal(comp(grid_for(pts, pts, M), shot=0), portrait)  # shot 0 (the portrait) is not blended


def test_the_correction_is_added_where_it_is_large_and_ignored_where_it_is_noise(scene):
    portrait, pts, M = scene
    comp = Compositor(portrait, M, R)
    grid = grid_for(pts, moved(pts, 3, (2, 1), 4), M)
    plain = comp(grid)
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.5 / 127.5, (3, R, R)).astype(np.float32)  # half a level: the network's blur
    assert np.array_equal(comp(grid, correction=noise), plain)
    paint = noise.copy()
    paint[:, 60:76, 36:60] += 0.4  # ~51 levels brighter on the mouth
    out = comp(grid, correction=torch.from_numpy(paint)[None])
    mouth = transform_points(np.array([[36 + 12, 60 + 8]], np.float32), cv2.invertAffineTransform(M))[0]
    mx, my = np.round(mouth).astype(int)
    lift = out[my - 2:my + 3, mx - 2:mx + 3].astype(int) - plain[my - 2:my + 3, mx - 2:mx + 3]
    assert lift.mean() == pytest.approx(51, abs=6)
    far = np.ones(portrait.shape[:2], bool)
    box = transform_points(np.array([[30, 54], [82, 82]], np.float32), cv2.invertAffineTransform(M))
    box = np.round(box).astype(int)
    far[box[0, 1]:box[1, 1], box[0, 0]:box[1, 0]] = False
    assert np.array_equal(out[far], plain[far])  # skin away from the paint keeps its own pixels
    where = np.zeros((R, R), np.float32)
    assert np.array_equal(comp(grid, correction=paint, where=where), plain)  # an explicit "nowhere"


def test_crop_only_at_native_size_and_at_a_requested_size():
    portrait = smooth(300, 280)
    pts = face(140, 150, 0.8)
    M = face_crop_transform(pts, R)
    native = Compositor(portrait, M, R, crop_only=True)
    side = R / M[0, 0]  # the crop square's side in portrait px
    assert native.shape == (2 * round(side / 2),) * 2  # even: H.264's 4:2:0 needs it
    still = native(grid_for(pts, pts, M))
    n = native.shape[0]
    k = n / R  # crop px -> output px, pixel centres kept: q = k·c + (k − 1)/2
    to_out = np.array([[k, 0, (k - 1) / 2], [0, k, (k - 1) / 2]]) @ np.vstack([M, [0, 0, 1]])
    expected = warp_to_crop(portrait, to_out, n)
    assert np.abs(still.astype(int) - expected).mean() < 1.0  # the same square, resampled once
    small = Compositor(portrait, M, R, crop_only=True, size=64)(grid_for(pts, moved(pts, 4, (2, 2), 5), M))
    assert small.shape == (64, 64, 3)


def test_crop_only_blends_a_reference_into_the_still_crop():
    portrait = smooth(300, 280)
    pts = face(140, 150, 0.8)
    M = face_crop_transform(pts, R)
    ref = np.clip(portrait.astype(int) + 50, 0, 255).astype(np.uint8)
    comp = Compositor(portrait, M, R, shots=[ShotSource(portrait, M), ShotSource(ref, M)], crop_only=True)
    still = comp(grid_for(pts, pts, M), shot=0)
    blended = comp(grid_for(pts, pts, M), shot=1).astype(int) - still
    n = still.shape[0]
    assert np.abs(blended[0]).max() <= 1 and np.abs(blended[:, -1]).max() <= 1  # the crop's edge: the portrait
    assert blended[n // 2 - 5:n // 2 + 5, n // 2 - 5:n // 2 + 5].mean() == pytest.approx(50, abs=2)
    small = Compositor(portrait, M, R, crop_only=True, size=64)(grid_for(pts, moved(pts, 4, (2, 2), 5), M))
    assert small.shape == (64, 64, 3)


def test_oversample2_keeps_the_pixels_and_interpolates_between():
    img = textured(20, 24, seed=5)
    up = oversample2(img)
    assert up.shape == (39, 47, 3) and up.dtype == np.float32
    np.testing.assert_array_equal(up[::2, ::2], img)
    ramp = np.tile(np.arange(0, 200, 10, dtype=np.uint8)[None, :, None], (5, 1, 3))
    np.testing.assert_allclose(oversample2(ramp)[2, 15:25:2, 0], [75, 85, 95, 105, 115], atol=0.01)  # half-way


def test_bad_inputs_give_one_line_errors(scene):
    portrait, pts, M = scene
    comp = Compositor(portrait, M, R)
    with pytest.raises(AnimateError, match="grid"):
        comp(np.zeros((R, R + 1, 2), np.float32))
    with pytest.raises(AnimateError, match="shot index"):
        comp(grid_for(pts, pts, M), shot=1)
    with pytest.raises(AnimateError, match="correction"):
        comp(grid_for(pts, pts, M), correction=np.zeros((3, 8, 8), np.float32))
    with pytest.raises(AnimateError, match="uint8"):
        Compositor(portrait.astype(np.float32), M, R)
    with pytest.raises(AnimateError, match="size"):
        Compositor(portrait, M, R, crop_only=True, size=1)


def test_a_real_photo_with_hand_placed_landmarks():
    """einstein.jpg with its 68 hand-placed points: exact when still, sharp and untouched outside when moved."""
    image = cv2.cvtColor(cv2.imread(str(shared_file("fixtures/einstein.jpg"))), cv2.COLOR_BGR2RGB)
    pts = (np.loadtxt(shared_file("fixtures/einstein.pts"), skiprows=3, comments="}") - 1).astype(np.float32)
    M = face_crop_transform(pts, R)
    comp = Compositor(image, M, R)
    assert np.array_equal(comp(grid_for(pts, pts, M)), image)
    target = moved(pts, 3.0, (1.5, -0.8), 3.0)
    out = comp(grid_for(pts, target, M))
    assert sharpness_ratio(out, image, target, pts) >= 0.9
    keep = outside(comp, image.shape)
    assert np.array_equal(out[keep], image[keep])
