"""Preprocessing: VoxCeleb layout -> per-clip npz cache (crops + landmarks), resumable, never fatal."""
import json
import shutil

import numpy as np
import pytest

from animate_cli.train.preprocess import (decode_frame, encode_frames, load_clip, pick_frames,
                                          preprocess_dataset)
from conftest import shared_file


@pytest.fixture
def vox(tmp_path):
    """<identity>/<video>/<clip>.mp4 with one talking-face clip and one clip without a face."""
    src = tmp_path / "vox"
    (src / "id001" / "vidA").mkdir(parents=True)
    (src / "id002" / "vidB").mkdir(parents=True)
    shutil.copy(shared_file("fixtures/single_face.mp4"), src / "id001" / "vidA" / "00001.mp4")
    shutil.copy(shared_file("fixtures/no_face.mp4"), src / "id002" / "vidB" / "00001.mp4")
    return src


def test_jpeg_roundtrip_without_pickle():
    rng = np.random.default_rng(0)
    frames = [np.full((32, 32, 3), c, np.uint8) for c in (10, 128, 250)]
    frames[1][:, :16] = rng.integers(0, 255, (32, 16, 3), dtype=np.uint8)
    data, offsets = encode_frames(frames)
    assert data.dtype == np.uint8 and offsets.tolist()[0] == 0 and len(offsets) == 4
    for i, f in enumerate(frames):
        out = decode_frame(data, offsets, i)
        assert out.shape == f.shape
        if i != 1:
            assert np.abs(out.astype(int) - f).max() <= 3


def test_pick_frames_spreads_over_valid_frames_only():
    valid = np.array([False, True, True, False, True, True, True, False, True, True])
    idx = pick_frames(valid, 4)
    assert len(idx) == 4 and valid[idx].all()
    assert idx[0] == 1 and idx[-1] == 9
    assert pick_frames(valid, 100).tolist() == np.flatnonzero(valid).tolist()


@pytest.mark.needs_shared
def test_preprocess_crops_faces_skips_no_face_and_resumes(vox, tmp_path):
    dst = tmp_path / "cache"
    s = preprocess_dataset(vox, dst, resolution=64, frames_per_clip=6, workers=1, progress=False, max_frames=24)
    assert s["processed"] == 1 and s["skipped"] == 1
    clip = dst / "id001" / "vidA" / "00001.npz"
    z = load_clip(clip)  # allow_pickle=False inside
    with np.load(clip, allow_pickle=False) as raw:
        assert all(raw[k].dtype != object for k in raw.files)
    assert len(z["offsets"]) == 7 and z["landmarks"].shape == (6, 68, 2) and z["landmarks"].dtype == np.float32
    assert int(z["resolution"]) == 64
    # frames spread over the 24 read frames, in order
    assert z["frame_index"][0] == 0 and z["frame_index"][-1] >= 20 and np.all(np.diff(z["frame_index"]) > 0)
    # landmarks land inside the crop, and the face fills a good part of it
    lm = z["landmarks"]
    assert lm.min() > -2 and lm.max() < 66
    assert np.ptp(lm[0, :, 0]) > 20
    img = decode_frame(z["jpeg"], z["offsets"], 0)
    assert img.shape == (64, 64, 3) and img.std() > 10
    skipped = (dst / "skipped.txt").read_text()
    assert "id002/vidB/00001.mp4" in skipped and "id001" not in skipped
    index = json.loads((dst / "index.json").read_text())
    assert index == [{"identity": "id001", "video": "vidA", "clip": "id001/vidA/00001.npz", "frames": 6}]
    assert not list(dst.rglob("*.tmp"))

    # resume: nothing is redone (neither the finished clip nor the known-bad one)
    mtime = clip.stat().st_mtime_ns
    s2 = preprocess_dataset(vox, dst, resolution=64, frames_per_clip=6, workers=1, progress=False, max_frames=24)
    assert s2["processed"] == 0 and s2["skipped"] == 0 and s2["already_done"] == 2
    assert clip.stat().st_mtime_ns == mtime
    assert (dst / "skipped.txt").read_text() == skipped


@pytest.mark.needs_shared
@pytest.mark.slow
def test_preprocess_in_worker_pool_matches(vox, tmp_path):
    """The two-worker path writes the same files as the in-process path."""
    (vox / "id002" / "vidB" / "00001.mp4").unlink()
    shutil.copy(vox / "id001" / "vidA" / "00001.mp4", vox / "id001" / "vidA" / "00002.mp4")
    dst = tmp_path / "cache2"
    s = preprocess_dataset(vox, dst, resolution=64, frames_per_clip=4, workers=2, progress=False, max_frames=12)
    assert s["processed"] == 2 and s["cached_frames"] == 8
    a = load_clip(dst / "id001" / "vidA" / "00001.npz")
    b = load_clip(dst / "id001" / "vidA" / "00002.npz")
    assert np.allclose(a["landmarks"], b["landmarks"])
