"""Episodes: K shots + 1 target from one video, target never a shot; deterministic split and sampling."""
import json

import numpy as np
import torch

from animate_cli.references import shape_distance
from animate_cli.train.episodes import EpisodeDataset, reference_warp, video_split
from animate_cli.train.preprocess import save_clip, write_index


def face_points(size: int, rng: np.random.Generator, jitter: float = 0.01) -> np.ndarray:
    """A plausible 68-point face (jaw arc, brows, nose, eyes, lips) in a size x size crop."""
    c, r = size / 2, size * 0.3
    t = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)
    jaw = np.stack([c + r * np.cos(t), c + 0.1 * size + r * np.sin(t) * 0.9], 1)
    brows = np.concatenate([np.stack([np.linspace(c - 0.25 * size, c - 0.05 * size, 5), np.full(5, c - 0.18 * size)], 1),
                            np.stack([np.linspace(c + 0.05 * size, c + 0.25 * size, 5), np.full(5, c - 0.18 * size)], 1)])
    nose = np.concatenate([np.stack([np.full(4, c), np.linspace(c - 0.1 * size, c + 0.05 * size, 4)], 1),
                           np.stack([np.linspace(c - 0.06 * size, c + 0.06 * size, 5), np.full(5, c + 0.08 * size)], 1)])
    a = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    eye = lambda ex: np.stack([ex + 0.06 * size * np.cos(a), c - 0.1 * size + 0.025 * size * np.sin(a)], 1)
    b = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    outer = np.stack([c + 0.12 * size * np.cos(b), c + 0.2 * size + 0.05 * size * np.sin(b)], 1)
    d = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    inner = np.stack([c + 0.08 * size * np.cos(d), c + 0.2 * size + 0.02 * size * np.sin(d)], 1)
    pts = np.concatenate([jaw, brows, nose, eye(c - 0.15 * size), eye(c + 0.15 * size), outer, inner])
    return (pts + rng.normal(0, jitter * size, pts.shape)).astype(np.float32)


def make_cache(root, layout=None, frames: int = 4, size: int = 32, seed: int = 0):
    """A synthetic preprocessing cache: {identity: {video: n_clips}}; every frame has a unique colour
    code in its top-left pixel block (clip, frame) so tests can tell frames apart after decoding."""
    layout = layout or {"idA": {"v1": 2, "v2": 1}, "idB": {"v3": 1, "v4": 2}}
    rng = np.random.default_rng(seed)
    code = 0
    for ident, videos in layout.items():
        for video, n_clips in videos.items():
            for c in range(n_clips):
                imgs, lms = [], []
                for f in range(frames):
                    img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                    img[:8, :8] = (code * 9) % 256  # JPEG-robust id: flat 8x8 block
                    img[:8, 8:16] = (code * 9) // 256 * 40
                    imgs.append(img)
                    lms.append(face_points(size, rng))
                    code += 1
                save_clip(root / ident / video / f"{c:05d}.npz", imgs, np.stack(lms), np.arange(frames), 25.0)
    write_index(root)
    return root


def frame_code(x: torch.Tensor) -> int:
    """Inverse of make_cache's colour code, from a (3,R,R) tensor in [-1,1]."""
    v = ((x[:, :8, :8].mean() + 1) * 127.5).item()
    hi = ((x[:, :8, 8:16].mean() + 1) * 127.5).item()
    return int(round((round(hi / 40) * 256 + v) / 9))


def test_video_split_is_deterministic_and_keeps_training_videos():
    vids = [f"id{i}/v{j}" for i in range(3) for j in range(5)] + ["idX/only"]
    tr, va = video_split(vids, 2)
    assert len(va) == 6 and "idX/only" in tr and not set(tr) & set(va)
    assert video_split(list(reversed(vids)), 2)[1] == sorted(va, key=vids[::-1].index)
    # adding a video to an identity does not reshuffle the others' choice
    assert set(video_split(vids + ["id9/new"], 2)[1]) == set(va)


def test_episode_target_never_among_shots(tmp_path):
    root = make_cache(tmp_path / "cache", frames=4)
    ds = EpisodeDataset(root, k_shots=3, episodes_per_epoch=40)
    assert ds.n_videos == 4 and len(ds) == 40
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            v, pairs = ds.sample_indices(i)
            assert v == i % 4 and len(set(pairs)) == 4  # K shots + target all distinct frames
    item = ds[5]
    assert item["x_shots"].shape == (3, 3, 32, 32) and item["y_shots"].shape == (3, 3, 32, 32)
    assert item["x_t"].shape == (3, 32, 32) and item["lm_shots"].shape == (3, 68, 2) and item["lm_t"].shape == (68, 2)
    assert item["x_t"].min() >= -1 and item["x_t"].max() <= 1 and int(item["video"]) == 1
    codes = [frame_code(x) for x in item["x_shots"]] + [frame_code(item["x_t"])]
    assert len(set(codes)) == 4  # decoded pixels really are four different frames
    # frames come from the episode's own video only: video 1 = idA/v2 = codes 8..11
    assert all(8 <= c < 12 for c in codes)
    # deterministic per (seed, epoch, idx); another epoch draws differently
    ds.set_epoch(0)
    a = ds.sample_indices(7)
    assert ds.sample_indices(7) == a
    ds.set_epoch(1)
    assert any(ds.sample_indices(i) != (ds.set_epoch(0) or ds.sample_indices(i)) for i in range(8))


def test_landmark_image_matches_landmarks_and_resizing(tmp_path):
    root = make_cache(tmp_path / "cache", frames=4, size=64)
    ds = EpisodeDataset(root, k_shots=2, resolution=32)
    item = ds[0]
    assert item["x_t"].shape == (3, 32, 32)
    # landmarks scaled with the image: the landmark image is lit where the points are
    y = item["y_t"]
    lit = (y > -0.9).any(0)
    p = item["lm_t"].round().long().clamp(0, 31)
    assert lit[p[:, 1], p[:, 0]].float().mean() > 0.9
    assert 4 < float(item["lm_t"][:, 0].min()) and float(item["lm_t"][:, 0].max()) < 28


def test_splits_are_disjoint(tmp_path):
    root = make_cache(tmp_path / "cache", layout={"a": {"v1": 1, "v2": 1, "v3": 1}, "b": {"v4": 1, "v5": 1}})
    tr = EpisodeDataset(root, k_shots=2, split="train", val_per_identity=1)
    va = EpisodeDataset(root, k_shots=2, split="val", val_per_identity=1)
    assert len(tr.videos) == 3 and len(va.videos) == 2 and not set(tr.videos) & set(va.videos)
    index = json.loads((root / "index.json").read_text())
    assert len(index) == 5


def test_reference_warp_picks_nearest_shot_and_is_identity_on_same_pose():
    rng = np.random.default_rng(1)
    base = torch.from_numpy(face_points(32, rng, 0.0))
    open_mouth = base.clone()
    open_mouth[60:68, 1] += 3
    lm_shots = torch.stack([open_mouth + 2, base + 1]).unsqueeze(0)  # shot 1 = same pose, shifted
    assert shape_distance(lm_shots, base.unsqueeze(0)).argmin(dim=1).tolist() == [1]
    x = torch.rand(1, 2, 3, 32, 32) * 2 - 1
    out = reference_warp(x, lm_shots, (base + 1).unsqueeze(0))
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out[0, :, 4:-4, 4:-4], x[0, 1, :, 4:-4, 4:-4], atol=0.05)


def test_reference_warp_sometimes_takes_a_far_shot_when_asked():
    rng = np.random.default_rng(2)
    base = torch.from_numpy(face_points(32, rng, 0.0))
    far = base.clone()
    far[60:68, 1] += 4  # an open mouth: never the nearest to the closed-mouth target
    n = 64
    lm_shots = torch.stack([far, base]).unsqueeze(0).expand(n, -1, -1, -1)
    x = torch.stack([torch.full((3, 32, 32), -0.5), torch.full((3, 32, 32), 0.5)]).unsqueeze(0).expand(n, -1, -1, -1, -1)
    target = base.unsqueeze(0).expand(n, -1, -1)
    assert torch.allclose(reference_warp(x, lm_shots, target), torch.tensor(0.5))  # default: always the nearest
    torch.manual_seed(0)
    picked_far = (reference_warp(x, lm_shots, target, random_share=1.0).mean(dim=(1, 2, 3)) < 0).float().mean()
    assert 0.3 < picked_far < 0.7  # a uniform draw over the two shots


def test_mirror_swaps_sides_and_is_its_own_inverse():
    from animate_cli.train.episodes import MIRROR, mirror

    assert sorted(MIRROR.tolist()) == list(range(68))  # a permutation
    assert np.array_equal(MIRROR[MIRROR], np.arange(68))  # mirroring twice changes nothing
    rng = np.random.default_rng(0)
    lms = face_points(64, rng)[None]
    img = rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    m_img, m_lms = mirror(img, lms)
    assert np.array_equal(m_img[0, :, 0], img[0, :, 63])
    # each left/right pair (jaw ends, brows, eyes, mouth corners, nostrils) keeps its left-right order:
    # the labels swap sides with the picture
    for a, b in ((0, 16), (17, 26), (36, 45), (48, 54), (60, 64), (31, 35)):
        assert np.sign(m_lms[0, a, 0] - m_lms[0, b, 0]) == np.sign(lms[0, a, 0] - lms[0, b, 0]) != 0
    # a landmark still marks the same pixel content: the mirrored point reads what the original read
    x, y = np.round(lms[0, 45]).astype(int)
    mx, my = np.round(m_lms[0, MIRROR.tolist().index(45)]).astype(int)
    assert (mx, my) == (63 - x, y) and np.array_equal(m_img[0, my, mx], img[0, y, x])
    back_img, back_lms = mirror(m_img, m_lms)
    assert np.array_equal(back_img, img) and np.allclose(back_lms, lms)


def test_colour_jitter_changes_all_frames_alike():
    from animate_cli.train.episodes import colour_jitter

    imgs = np.repeat(np.random.default_rng(1).integers(30, 220, (1, 16, 16, 3), dtype=np.uint8), 3, axis=0)
    out = colour_jitter(imgs, np.random.default_rng(5))
    assert out.dtype == np.uint8 and out.shape == imgs.shape
    assert not np.array_equal(out, imgs)
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])  # one jitter per episode
    assert np.array_equal(colour_jitter(imgs, np.random.default_rng(5)), out)  # seeded


def test_augmented_episodes_are_deterministic_and_some_are_mirrored(tmp_path):
    root = make_cache(tmp_path / "cache", frames=6, size=32)
    plain = EpisodeDataset(root, k_shots=2, episodes_per_epoch=16)
    aug = EpisodeDataset(root, k_shots=2, episodes_per_epoch=16, augment=True)
    mirrored = 0
    for i in range(16):
        p, a, again = plain[i], aug[i], aug[i]
        assert torch.equal(a["x_t"], again["x_t"]) and torch.equal(a["lm_t"], again["lm_t"])
        assert not torch.equal(a["x_t"], p["x_t"])  # colours always jittered
        flipped = torch.allclose(a["lm_t"][:, 0], 31 - p["lm_t"][torch.as_tensor(
            __import__("animate_cli.train.episodes", fromlist=["MIRROR"]).MIRROR), 0])
        mirrored += int(flipped)
        if not flipped:
            assert torch.equal(a["lm_t"], p["lm_t"])
    assert 2 <= mirrored <= 14
