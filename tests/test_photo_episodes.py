"""Photo episodes: made shots (another view, mouth shut, eyes shut) with the photo as target, the video
episodes' batch format, determinism, and the video/photo mix."""
import numpy as np
import pytest
import torch

from animate_cli.errors import AnimateError
from animate_cli.face.regions import OPEN_MOUTH_GAP, eye_gaps, interocular, mouth_box, mouth_gap
from animate_cli.train.episodes import EpisodeDataset
from animate_cli.train.photo_episodes import (MixedEpisodeDataset, PhotoEpisodeDataset, PhotoEpisodeSettings,
                                              close_eyes, close_mouth, make_shot, perturb_view, smooth_contour,
                                              warp_photo)
from animate_cli.train.photos import write_photo_index
from animate_cli.train.preprocess import save_clip, write_index
from synthetic_faces import face, face_landmarks, white_share

SHUT_ONLY = PhotoEpisodeSettings(closing_pose=0.0, sharpen=0.0)


def _box_mask(shape, box):
    x0, y0, side = (int(round(v)) for v in box)
    m = np.zeros(shape[:2], bool)
    m[max(y0, 0):y0 + side, max(x0, 0):x0 + side] = True
    return m


def test_close_mouth_brings_the_inner_lips_together_and_raises_the_chin():
    lm = face_landmarks(128, mouth_gap=0.3)
    shut = close_mouth(lm, upper_share=0.3)
    assert mouth_gap(lm) == pytest.approx(0.3, rel=1e-4) and mouth_gap(shut) < 1e-6
    gap_px = lm[66, 1] - lm[62, 1]
    assert shut[62, 1] - lm[62, 1] == pytest.approx(0.3 * gap_px, rel=1e-4)  # the upper lip moves down a little
    assert lm[66, 1] - shut[66, 1] == pytest.approx(0.7 * gap_px, rel=1e-4)  # the lower lip up the rest
    assert lm[8, 1] - shut[8, 1] == pytest.approx(0.7 * gap_px, rel=1e-4)  # the chin with it
    unmoved = [0, 16, 27, 30, 36, 45, 48, 54, 60, 64]
    np.testing.assert_array_equal(shut[unmoved], lm[unmoved])


def test_close_eyes_shuts_both_eyelids():
    lm = face_landmarks(128, eye_gap=0.1)
    shut = close_eyes(lm)
    assert eye_gaps(shut).max() < 1e-6 and eye_gaps(lm).min() > 0.09
    assert shut[37, 1] > lm[37, 1] and shut[41, 1] < lm[41, 1]


def test_mouth_shut_by_the_warp_hides_the_teeth_and_changes_only_the_mouth():
    image, lm = face(128, mouth_gap=0.3)
    rng = np.random.default_rng(0)
    shot, shot_lm = make_shot(image, lm, "mouth", rng, SHUT_ONLY)
    assert mouth_gap(shot_lm) < 1e-6
    box = mouth_box(lm)
    assert white_share(image, box) > 0.03  # the target shows teeth ...
    assert white_share(shot, box) < 0.002  # ... the shot none: not smeared into the closed line
    diff = np.abs(shot.astype(int) - image.astype(int)).sum(-1)
    inside = diff[_box_mask(diff.shape, box)].sum() / diff.sum()
    assert inside > 0.8
    eyes = (slice(int(lm[37:48, 1].min()) - 4, int(lm[37:48, 1].max()) + 4), slice(None))
    assert (diff[eyes] > 6).mean() < 0.01  # far from the mouth the photo is untouched (but for sub-pixel shifts)


def test_eyes_shut_by_the_warp_hide_the_sclera():
    image, lm = face(128, eye_gap=0.1)
    shot, shot_lm = make_shot(image, lm, "eyes", np.random.default_rng(0), SHUT_ONLY)
    assert eye_gaps(shot_lm).max() < 1e-6
    w = lm[39, 0] - lm[36, 0]
    box = (lm[36, 0] - 0.1 * w, lm[36:42, 1].mean() - 0.6 * w, 1.2 * w)
    assert white_share(image, box) > 0.05 and white_share(shot, box) < 0.01
    diff = np.abs(shot.astype(int) - image.astype(int)).sum(-1)
    assert (diff[int(lm[48:68, 1].min()):] > 6).mean() < 0.01  # the mouth is untouched (but for sub-pixel shifts)


def test_other_view_moves_the_landmarks_a_little_and_the_photo_with_them():
    image, lm = face(128)
    a = perturb_view(lm, np.random.default_rng(3), 128)
    b = perturb_view(lm, np.random.default_rng(3), 128)
    np.testing.assert_array_equal(a, b)
    move = np.linalg.norm(a - lm, axis=1) / interocular(lm)
    assert 0.005 < move.mean() < 0.35
    strong = PhotoEpisodeSettings(rotation_deg=0, scale=0, shift=0, expression=0, yaw=0.2)
    left, right = lm[27, 0] - lm[0, 0], lm[16, 0] - lm[27, 0]
    squeezed = []
    for seed in range(10):
        turned = perturb_view(lm, np.random.default_rng(seed), 128, strong)
        t_left, t_right = turned[27, 0] - turned[0, 0], turned[16, 0] - turned[27, 0]
        squeezed.append(min(t_left / left, t_right / right))
    assert min(squeezed) < 0.9 and max(squeezed) <= 1.0  # one side squeezed: a turn
    # a dark dot on a landmark goes where that landmark goes
    dotted = image.copy()
    x, y = np.round(lm[30]).astype(int)
    dotted[y - 1:y + 2, x - 1:x + 2] = 0
    moved = warp_photo(dotted, lm, a)
    tx, ty = np.round(a[30]).astype(int)
    assert moved[ty - 1:ty + 2, tx - 1:tx + 2].mean() < 80


def test_smooth_contour_passes_through_its_points_and_bulges_between_them():
    pts = np.array([[0.0, 0.0], [10.0, -5.0], [20.0, -5.0], [30.0, 0.0]])
    curve = smooth_contour(pts, 3)
    assert len(curve) == 10
    np.testing.assert_allclose(curve[::3], pts)
    assert curve[4, 1] < -5.0  # between the two middle points the arc rises above the chord


def _photo_cache(root, size=64, people=3, per_person=3):
    """A photo cache of drawn faces; every other photo with its mouth open."""
    k = 0
    for p in range(people):
        for i in range(per_person):
            gap = 0.3 if k % 2 == 0 else 0.02
            image, lm = face(size, mouth_gap=gap, eye_gap=0.09)
            image = np.clip(image.astype(int) + 7 * k, 0, 255).astype(np.uint8)  # tell photos apart
            save_clip(root / f"person{p}" / f"person{p}_{i:04d}.npz", [image], lm[None], np.zeros(1), 0.0)
            k += 1
    write_photo_index(root)
    return root


def _video_cache(root, size=64):
    for v in range(2):
        lms = np.stack([face_landmarks(size, mouth_gap=0.05 * f) for f in range(4)])
        images = [face(size, mouth_gap=0.05 * f)[0] for f in range(4)]
        save_clip(root / "idA" / f"vid{v}" / "00001.npz", images, lms, np.arange(4), 25.0)
    write_index(root)
    return root


def test_photo_items_match_video_items(tmp_path):
    videos = EpisodeDataset(_video_cache(tmp_path / "vox"), k_shots=2)
    photos = PhotoEpisodeDataset(_photo_cache(tmp_path / "lfw"), k_shots=2, augment=True)
    v, p = videos[0], photos[0]
    assert v.keys() == p.keys()
    for key in v:
        assert p[key].shape == v[key].shape and p[key].dtype == v[key].dtype, key
    assert photos.n_videos == 3 and 0 <= int(p["video"]) < 3
    assert -1 <= float(p["x_t"].min()) and float(p["x_t"].max()) <= 1


def test_photo_episodes_are_deterministic_and_mouth_episodes_use_open_mouths(tmp_path):
    root = _photo_cache(tmp_path / "lfw")
    make = lambda seed: PhotoEpisodeDataset(root, k_shots=1, seed=seed, augment=True)  # noqa: E731
    a, b, c = make(0), make(0), make(1)
    for idx in (0, 5):
        x, y = a[idx], b[idx]
        for key in x:
            assert torch.equal(x[key], y[key]), key
    assert any(not torch.equal(a[i]["x_shots"], c[i]["x_shots"]) for i in range(4))
    kinds = [a.sample(i) for i in range(300)]
    counts = {k: sum(kind == k for kind, _ in kinds) for k in ("view", "mouth", "eyes")}
    assert counts["mouth"] > 100 and counts["eyes"] > 30 and counts["view"] > 50
    assert all(a.entries[e]["mouth_gap"] > OPEN_MOUTH_GAP for kind, e in kinds if kind == "mouth")
    mouth_idx = next(i for i, (kind, _) in enumerate(kinds) if kind == "mouth")
    item = PhotoEpisodeDataset(root, k_shots=1, augment=False)[mouth_idx]
    assert mouth_gap(item["lm_shots"][0].numpy()) < 0.05 and mouth_gap(item["lm_t"].numpy()) > OPEN_MOUTH_GAP


def test_photo_dataset_refuses_a_folder_without_an_index(tmp_path):
    with pytest.raises(AnimateError, match="animate-preprocess-photos"):
        PhotoEpisodeDataset(tmp_path)


def test_mix_holds_its_ratio_is_deterministic_and_offsets_photo_people(tmp_path):
    videos = EpisodeDataset(_video_cache(tmp_path / "vox"), k_shots=2, episodes_per_epoch=4000)
    photos = PhotoEpisodeDataset(_photo_cache(tmp_path / "lfw"), k_shots=2)
    mix = MixedEpisodeDataset(videos, photos, photo_share=0.3, seed=5)
    assert len(mix) == 4000 and mix.n_videos == videos.n_videos + photos.n_videos == 5
    share = np.mean([mix.is_photo(i) for i in range(4000)])
    assert abs(share - 0.3) < 0.03
    again = MixedEpisodeDataset(videos, photos, photo_share=0.3, seed=5)
    assert [mix.is_photo(i) for i in range(200)] == [again.is_photo(i) for i in range(200)]
    mix.set_epoch(1)
    assert [mix.is_photo(i) for i in range(200)] != [again.is_photo(i) for i in range(200)]
    photo_idx = next(i for i in range(50) if mix.is_photo(i))
    video_idx = next(i for i in range(50) if not mix.is_photo(i))
    assert int(mix[photo_idx]["video"]) >= videos.n_videos
    assert int(mix[video_idx]["video"]) < videos.n_videos
    assert all(MixedEpisodeDataset(videos, photos, photo_share=s).is_photo(i) == bool(s)
               for s in (0.0, 1.0) for i in range(50))
    with pytest.raises(AnimateError, match="must agree"):
        MixedEpisodeDataset(videos, PhotoEpisodeDataset(tmp_path / "lfw", k_shots=3))
    with pytest.raises(AnimateError, match="photo_share"):
        MixedEpisodeDataset(videos, photos, photo_share=1.5)
