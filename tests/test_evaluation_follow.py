"""The follow setting: head shake read by optical flow sees the image tremble and not a trembling detector;
pairs are the cross-identity ones plus every still; the summary counts blinking drivers, keeps the worst
ratios and skipped pairs, and --compare pairs follow reports pair by pair."""
import json

import cv2
import numpy as np
import pytest

from animate_cli.errors import AnimateError
from animate_cli.evaluation import cli, follow, protocol
from animate_cli.evaluation.compare import compare
from animate_cli.face.measures import RIGID_POINTS, interocular, jitter
from conftest import write_test_video
from synthetic_faces import face_landmarks

SIZE = 160


def textured(size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Skin-like blotches with corners to track (a face's pores and lashes stand for them in real frames)."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2.0)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return np.repeat((60 + 150 * noise)[..., None], 3, -1).astype(np.uint8)


def moving(path_xy: np.ndarray, seed: int = 0):
    """Frames of the texture translated along path_xy (N,2) and the face landmarks that ride on it."""
    big = textured(2 * SIZE, seed)
    lms = face_landmarks(SIZE) + SIZE / 2
    frames, points = [], []
    for x, y in path_xy:
        A = np.float32([[1, 0, x - SIZE / 2], [0, 1, y - SIZE / 2]])
        frames.append(cv2.warpAffine(big, A, (SIZE, SIZE), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
        points.append(lms + [x - SIZE / 2, y - SIZE / 2])
    return frames, np.array(points)


def test_head_shake_reads_a_trembling_image_not_a_trembling_detector():
    n = 30
    smooth = np.stack([np.linspace(0, 6, n), np.linspace(0, 3, n)], 1)
    tremble = smooth + np.where(np.arange(n) % 2, 0.8, -0.8)[:, None] * [1, 0]
    frames, points = moving(smooth)
    still_shake = follow.head_shake(frames, points)
    # a detector that trembles by a pixel on frames that move smoothly: landmark jitter reads it, flow does not
    rng = np.random.default_rng(1)
    noisy = points + rng.normal(0, 1.0, points.shape)
    assert jitter(noisy) > 10 * still_shake
    assert follow.head_shake(frames, noisy) < 2 * still_shake + 1e-3
    # the image itself trembles: flow reads about the true tremble of the rigid points
    frames_t, points_t = moving(tremble)
    true = jitter(points_t[:, list(RIGID_POINTS)], face_size=float(np.median(interocular(points_t))))
    assert follow.head_shake(frames_t, points_t) == pytest.approx(true, rel=0.2)
    assert follow.head_shake(frames_t, points_t) > 10 * still_shake


def test_head_path_carries_the_rigid_points_along_the_motion():
    path = np.stack([np.linspace(0, 8, 12), np.zeros(12)], 1)
    frames, points = moving(path)
    carried = follow.head_path(frames, points)
    np.testing.assert_allclose(carried, points[:, list(RIGID_POINTS)], atol=0.3)


def test_head_shake_leaves_the_eyes_moving_inside_their_openings_out(monkeypatch):
    """A still face whose eyes alone move (a blink, a glance) does not shake: the eye openings' strong corners
    would otherwise outnumber the skin's and carry the head along with them."""
    skin = textured(seed=2) // 8 + 100  # faint skin texture
    eyes = textured(seed=3)  # strong lash-like texture
    points = face_landmarks(SIZE, eye_gap=0.35)
    inside = np.zeros((SIZE, SIZE), np.uint8)
    for eye in follow.EYE_OPENINGS:
        outline = points[list(eye)]
        outline = outline.mean(0) + 1.1 * (outline - outline.mean(0))
        cv2.fillConvexPoly(inside, np.round(outline).astype(np.int32), 1)
    frames = []
    for i in range(12):
        moved = np.roll(eyes, 2 * (i % 2), axis=0)  # the eyes' content jumps by 2 px every other frame
        frames.append(np.where(inside[..., None] == 1, moved, skin).astype(np.uint8))
    points = np.repeat(points[None], len(frames), 0)
    jump = 2 / float(interocular(points)[0])  # what the eyes move, in the shake's units
    left_out = follow.head_shake(frames, points)
    monkeypatch.setattr(follow, "EYE_OPENINGS", ())
    carried = follow.head_shake(frames, points)
    assert carried > 0.5 * jump  # the eyes' corners took the head along
    assert left_out < 0.3 * carried


def test_pairs_are_the_cross_identity_ones_then_every_still_with_every_clip(tmp_path):
    clips = []
    for name, seed in (("a.mp4", 0), ("b.mp4", 1)):
        frames, _ = moving(np.zeros((12, 2)), seed)
        clips.append(write_test_video(tmp_path / name, frames))
    broken = tmp_path / "c.mp4"
    broken.write_bytes(b"not a video")
    still = tmp_path / "s.png"
    cv2.imwrite(str(still), textured())
    work = tmp_path / "work"
    work.mkdir()
    pairs = follow.follow_pairs(clips + [broken], follow.find_stills(tmp_path), work, frames=5)
    assert [p.name for p in pairs] == ["a.mp4 <- b.mp4", "b.mp4 <- a.mp4", "s.png <- a.mp4", "s.png <- b.mp4"]
    assert sum(1 for _ in follow.read_frames(pairs[0].driver)) == 5  # drivers cut to the pair's frames
    assert pairs[0].portrait.suffix == ".png" and pairs[2].portrait == still


def fake_follow(monkeypatch, rows: dict):
    """The pipeline and the measurer replaced: each pair's result is its driver, its columns come from `rows`
    by pair name; a pair named in rows with None fails like a portrait without a face."""
    monkeypatch.setattr(follow, "load_detector", lambda opts: None)
    monkeypatch.setattr(follow, "load_animator", lambda opts: None)
    current = {}

    def fake_animate(portrait, driver, out, opts, detector=None, animator=None):
        current["name"] = next(n for n in rows if n.startswith(portrait.name) and n.endswith(driver.name))
        if rows[current["name"]] is None:
            raise AnimateError("no face found in the portrait")
        out.write_bytes(b"video")

    monkeypatch.setattr(follow, "animate", fake_animate)
    monkeypatch.setattr(follow, "measure_pair",
                        lambda result, driver, measurer, cache, driven_by=None: dict(rows[current["name"]]))


def row(eyes=float("nan"), gaze=0.5, mouth=0.8, jit=1.0, shake=0.5):
    return dict(eyes=eyes, eyes_seen=eyes, gaze_h=gaze, gaze_v=gaze, mouth=mouth, jitter_ratio=jit,
                shake_ratio=shake)


class _Reader:
    """A stand-in detector: video_landmarks of any frames gives its `points` series."""

    def __init__(self, name, points):
        self.name, self.points = name, points


def test_eyes_seen_keeps_only_drivers_whose_blinks_both_detectors_read(tmp_path, monkeypatch):
    n = 40
    base = np.repeat(face_landmarks(SIZE)[None], n, 0).astype(np.float64)
    blink = np.ones(n)
    blink[[10, 11, 25]] = 0.1  # the driver's eyes shut on three frames

    def with_eyes(openness):
        out = base.copy()
        for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
            mid = (base[:, up] + base[:, lo]) / 2
            half = (base[:, lo] - base[:, up]) / 2
            out[:, up], out[:, lo] = mid - half * openness[:, None], mid + half * openness[:, None]
        return out

    noise = np.random.default_rng(0).uniform(0.5, 1.0, n)  # a detector that misses the blinks
    measurer = _Reader("measurer", with_eyes(blink))
    monkeypatch.setattr(follow, "read_frames", lambda path: [np.zeros((8, 8, 3), np.uint8)] * n)
    monkeypatch.setattr(follow, "head_shake", lambda frames, points: 1.0)
    monkeypatch.setattr(follow, "video_landmarks", lambda frames, det: (det.points, None))
    result, driver = tmp_path / "result.mp4", tmp_path / "driver.mp4"
    seen = follow.measure_pair(result, driver, measurer, {}, driven_by=_Reader("driving", with_eyes(blink ** 0.5)))
    assert seen["driver_eyes_agree"] > 0.95 and seen["eyes"] == pytest.approx(1.0)
    assert seen["eyes_seen"] == seen["eyes"]
    missed = follow.measure_pair(result, driver, measurer, {}, driven_by=_Reader("driving", with_eyes(noise)))
    assert missed["driver_eyes_agree"] < follow.EYES_SEEN and np.isnan(missed["eyes_seen"])
    assert missed["eyes"] == pytest.approx(1.0)  # the plain column keeps every blinking driver
    assert np.isnan(follow.measure_pair(result, driver, measurer, {})["eyes_seen"])  # no driving detector


def test_follow_summary_counts_blinking_drivers_keeps_the_worst_and_the_skipped(tmp_path, monkeypatch):
    pairs = [follow.FollowPair(f"p{i}.png <- d{i}.mp4", tmp_path / f"p{i}.png", tmp_path / f"d{i}.mp4")
             for i in range(3)]
    fake_follow(monkeypatch, {pairs[0].name: row(eyes=0.9, jit=1.5, shake=0.4), pairs[1].name: row(jit=0.5, shake=1.3),
                              pairs[2].name: None})
    opts = protocol.EvaluateOptions(models=("warp",), follow=True)
    out = protocol.follow_setting("warp", pairs, opts, type("M", (), {"name": "mesh"})(), lambda m: None, {}, tmp_path)
    assert out["pairs"] == 2 and list(out["skipped_pairs"]) == [pairs[2].name]
    assert out["eyes"] == pytest.approx(0.9) and out["eyes_frames"] == 1  # the non-blinking driver does not count
    assert out["jitter_ratio"] == pytest.approx(1.0) and out["jitter_ratio_max"] == pytest.approx(1.5)
    assert out["shake_ratio_max"] == pytest.approx(1.3)
    assert out["per_frame"]["clip"] == [pairs[0].name, pairs[1].name]
    assert (out["measured_with"], out["driven_by"]) == ("mesh", "dlib")
    json.dumps(out)  # NaN-free: a valid report


def test_compare_pairs_follow_reports_pair_by_pair(tmp_path, monkeypatch):
    pairs = [follow.FollowPair(f"p{i}.png <- d{i}.mp4", tmp_path / f"p{i}.png", tmp_path / f"d{i}.mp4")
             for i in range(4)]
    measurer = type("M", (), {"name": "mesh"})()
    opts = protocol.EvaluateOptions(models=("warp",), follow=True)
    reports = []
    for shake in (1.5, 0.8):  # B shakes less on every pair and blinks as well
        fake_follow(monkeypatch, {p.name: row(eyes=0.7, shake=shake + i / 10) for i, p in enumerate(pairs)})
        reports.append({"models": {"warp": {"self": {}, "follow": protocol.follow_setting(
            "warp", pairs, opts, measurer, lambda m: None, {}, tmp_path)}}})
    rows = {r["metric"]: r for r in compare(*reports) if r["setting"] == "follow"}
    assert (rows["shake_ratio"]["better"], rows["shake_ratio"]["clips_better"]) == (4, 4)
    assert rows["shake_ratio"]["gain"] == pytest.approx(0.7)
    assert rows["eyes"]["ties"] == 4


def test_follow_options(tmp_path, monkeypatch, capsys):
    with pytest.raises(AnimateError, match="flatters"):
        protocol.EvaluateOptions(detector="mesh", measure_with="mesh")
    protocol.EvaluateOptions(detector="mesh", measure_with="mesh", follow=False)  # off: no conflict
    monkeypatch.setattr(protocol, "mesh_available", lambda: False)
    assert protocol.EvaluateOptions().measurer() is None  # not installed, not asked: skipped
    assert protocol.EvaluateOptions(follow=False).measurer() is None
    assert cli.main([str(tmp_path), "--follow-frames", "2", "--out", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--follow-frames" in err and "\n" not in err


@pytest.mark.slow
def test_follow_runs_the_real_pipeline_and_measures_with_another_detector(tmp_path):
    from animate_cli.face.landmarks import mesh_available
    if not mesh_available():
        pytest.skip("the follow setting's measurer (mediapipe's mesh) is not installed")
    from conftest import EXAMPLES
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("driver.mp4", "portrait.png"):
        (folder / name).write_bytes((EXAMPLES / name).read_bytes())
    report = protocol.evaluate(folder, models=("warp",), self_reenactment=False, cross=False, follow_frames=12,
                               out=None, progress=False)
    f = report["models"]["warp"]["follow"]
    assert f["pairs"] == 1 and f["per_frame"]["clip"] == ["portrait.png <- driver.mp4"]
    assert (f["measured_with"], f["driven_by"], f["follow_frames"]) == ("mesh", "dlib", 12)
    assert -1 <= f["mouth"] <= 1 and 0 < f["shake_ratio"] < 10 and 0 < f["jitter_ratio"] < 10
    assert "self" in report["models"]["warp"] and not report["models"]["warp"]["self"]
