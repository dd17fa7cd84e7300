"""Photo cache: a folder of photos -> one-frame clip files + photos.json; resumable, skips listed, one-line errors."""
import json
import shutil

import cv2
import numpy as np
import pytest

from animate_cli.errors import AnimateError
from animate_cli.face.regions import mouth_gap
from animate_cli.train.cli import preprocess_photos_main as main
from animate_cli.train.photos import PHOTO_INDEX, PhotoCacheOptions, cache_photos, choose_face, person_of
from animate_cli.train.preprocess import decode_frame, load_clip
from conftest import EXAMPLES


@pytest.fixture
def photos(tmp_path):
    """Two people in folders (one with a face, one with none and a broken file) and one loose photo."""
    src = tmp_path / "photos"
    (src / "Ann_Person").mkdir(parents=True)
    (src / "Bob_Person").mkdir()
    shutil.copy(EXAMPLES / "portrait.png", src / "Ann_Person" / "Ann_Person_0001.png")
    portrait = cv2.imread(str(EXAMPLES / "portrait.png"))
    cv2.imwrite(str(src / "loose.jpg"), portrait[:, ::-1])
    cv2.imwrite(str(src / "Bob_Person" / "blank.png"), np.full((200, 200, 3), 128, np.uint8))
    (src / "Bob_Person" / "broken.jpg").write_bytes(b"not a jpeg")
    return src


def test_people_are_folders_or_loose_files():
    assert person_of("Ann_Person/Ann_Person_0001.jpg") == "Ann_Person"
    assert person_of("loose.jpg") == "loose"


def test_choose_face_takes_the_central_face_and_refuses_ambiguity():
    centre = np.array([30, 30, 70, 70], np.float32)
    aside = np.array([0, 0, 20, 20], np.float32)
    assert choose_face([aside], 100, 100) is aside  # a lone face anywhere
    assert choose_face([aside, centre], 100, 100) is centre
    with pytest.raises(AnimateError, match="no face"):
        choose_face([], 100, 100)
    with pytest.raises(AnimateError, match="several faces"):
        choose_face([centre, centre + 2], 100, 100)
    with pytest.raises(AnimateError, match="several faces"):
        choose_face([aside, aside + 70], 100, 100)


def test_cache_photos_crops_lists_skips_and_resumes(photos, tmp_path):
    dst = tmp_path / "cache"
    summary = cache_photos(photos, dst, resolution=64, progress=False)
    assert summary["photos"] == 4 and summary["cached_photos"] == 2 and summary["people"] == 2
    assert summary["skipped_by_reason"] == {"no face": 1, "unreadable image": 1}
    skipped = dict(line.split("\t") for line in (dst / "skipped.txt").read_text().splitlines())
    assert skipped == {"Bob_Person/blank.png": "no face", "Bob_Person/broken.jpg": "unreadable image"}
    index = json.loads((dst / PHOTO_INDEX).read_text())
    assert [(e["photo"], e["person"], e["file"]) for e in index] == [
        ("Ann_Person/Ann_Person_0001.png", "Ann_Person", "Ann_Person/Ann_Person_0001.npz"),
        ("loose.jpg", "loose", "loose.npz")]
    for e in index:
        z = load_clip(dst / e["file"])
        crop, lm = decode_frame(z["jpeg"], z["offsets"], 0), z["landmarks"][0]
        assert crop.shape == (64, 64, 3) and lm.shape == (68, 2)
        assert (lm > 0).all() and (lm < 64).all()
        assert e["mouth_gap"] == pytest.approx(float(mouth_gap(lm)), abs=1e-4) and len(e["eye_gaps"]) == 2
    # the mirrored loose copy is the same face: mirrored landmarks, same openings
    assert index[0]["mouth_gap"] == pytest.approx(index[1]["mouth_gap"], abs=0.03)
    again = cache_photos(photos, dst, resolution=64, progress=False)
    assert again["already_done"] == 4 and again["processed"] == 0 and again["skipped"] == 0
    assert again["cached_photos"] == 2 and again["skipped_by_reason"] == summary["skipped_by_reason"]


def test_cli_one_line_errors(photos, tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "c")]) == 1
    assert capsys.readouterr().err.strip() == f"error: photo folder not found: {tmp_path / 'nowhere'}"
    assert main([str(photos), str(photos / "cache")]) == 1
    assert "outside the photo folder" in capsys.readouterr().err
    assert main([str(photos), str(tmp_path / "c"), "--workers", "0"]) == 1
    assert capsys.readouterr().err.strip() == "error: --workers must be 1 or more (got 0)"
    assert main([str(photos), str(tmp_path / "c"), "--bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--bogus" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c").exists()  # nothing written on a refused command
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), str(tmp_path / "c")]) == 1
    assert "no images" in capsys.readouterr().err


def test_options_refuse_bad_values():
    with pytest.raises(AnimateError, match="--resolution"):
        PhotoCacheOptions(resolution=8)
    with pytest.raises(AnimateError, match="--limit"):
        PhotoCacheOptions(limit=0)


def test_cli_caches(photos, tmp_path, capsys):
    (photos / "Ann_Person" / "Ann_Person_0001.png").unlink()
    assert main([str(photos), str(tmp_path / "c"), "--resolution", "48", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["cached_photos"] == 1 and summary["skipped"] == 2
