"""The follow setting: does a portrait do what another person's clip does? Eyes, gaze, mouth and head shake.

Each pair (a still portrait, a driver clip cut to `frames` frames) goes through the real pipeline
(animate.animate: tracking, smoothing, motion, gaze, the native-resolution compositor, the encoder), then
the result and the driver are both measured by a detector other than the one that drove (`measurer`):
a detector's own quirks, copied into the result, would otherwise count as success. Columns per pair
(face.measures): eye-openness correlation (only where the driver closes an eye: elsewhere a correlation
of noise), gaze h/v correlations (only where the driver looks that way: face.measures.looks_around), the
mouth-opening correlation, landmark jitter ratio result / driver, and head shake
ratio. Pairs: each clip's first frame driven by the next clip (the cross-identity pairs), and every still
image in the folder driven by every clip.

Head shake is measured with optical flow, not landmarks: a landmark detector trembles by itself, more on a
sharp portrait than on a soft video frame (a portrait moved perfectly smoothly measures 0.9-1.8x a real
driver's landmark jitter with mediapipe's mesh), so landmark jitter often measures the measurer. Hundreds of
tracked corners in the upper face, a similarity fitted to them frame to frame (RANSAC: blinks and brows
are outliers), move the face's rigid points; their high-passed step is the shake a viewer sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..animate import AnimateOptions, animate, load_animator, load_detector
from ..errors import AnimateError
from ..face.measures import (RIGID_POINTS, correlation, eye_openness, follow_scores, interocular, jitter,
                             video_landmarks)
from ..video import VideoWriter, is_image, probe_video, read_frames, write_image

FOLLOW_FRAMES = 100  # driver frames per pair: 3-4 s, room for a blink or two and a glance
UPPER_FACE = tuple(range(17, 48))  # brows, nose and the skin round the eyes: what moves with the head
# The eye openings (lids, lashes, irises) are left out of the head's corners, as the mouth is: they move by
# design (a blink, a glance), and their strong corners outnumbered the skin's, so RANSAC took a blink for the
# head moving. The skin beside the eyes stays in: a warp that drags it along on a blink is still caught.
EYE_OPENINGS = (tuple(range(36, 42)), tuple(range(42, 48)))
EYE_OPENING_MARGIN = 1.3  # each eye's outline scaled about its centre by this much
# per pair, in the report: higher is better for the correlations, lower for the ratios (compare.py)
FOLLOW_COLUMNS = ("eyes", "eyes_seen", "gaze_h", "gaze_v", "mouth", "jitter_ratio", "shake_ratio")
# A blink can only be scored where the measurer sees the driver's blinks as the driving detector did: neither
# dlib on a 176x144 clip nor any detector on a tiny face does (their eye series correlate 0.5 there, 0.9+ on a
# clear face). eyes_seen keeps the pairs whose driver both read alike, the correlation of their eye openness
# at least this; the choice looks at the driver only, never at the result.
EYES_SEEN = 0.8


@dataclass
class FollowPair:
    name: str  # "<portrait> <- <driver>"
    portrait: Path  # a still image
    driver: Path  # a clip, cut to the pair's frames


def find_stills(folder: Path) -> list[Path]:
    """The still images under `folder`, at any depth, in a stable order: portraits for every clip."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image(p))


def cut_driver(src: Path, dst: Path, frames: int) -> Path:
    """The first `frames` frames of a clip at its own frame rate (no sound): the driver a pair measures."""
    with VideoWriter(dst, probe_video(src).fps, overwrite=True) as writer:
        for frame in read_frames(src, max_frames=frames):
            writer.write(frame)
    return dst


def first_frame(src: Path, dst: Path) -> Path:
    """A clip's first frame as a PNG: the portrait of its cross-identity pair."""
    frame = next(read_frames(src, max_frames=1), None)
    if frame is None:
        raise AnimateError(f"{src.name} has no frame")
    write_image(dst, frame)
    return dst


def follow_pairs(clips: list[Path], stills: list[Path], work: Path, frames: int) -> list[FollowPair]:
    """Clip i's first frame driven by clip i+1 (two clips or more), then every still by every clip. A clip
    that cannot be read takes no part (the other settings report it)."""
    drivers = {}
    for i, c in enumerate(clips):
        try:
            drivers[c] = cut_driver(c, work / f"driver_{i}.mp4", frames)
        except AnimateError:
            continue
    clips = list(drivers)
    pairs = []
    if len(clips) >= 2:
        for i, c in enumerate(clips):
            d = clips[(i + 1) % len(clips)]
            pairs.append(FollowPair(f"{c.name} <- {d.name}", first_frame(c, work / f"first_{i}.png"), drivers[d]))
    for s in stills:
        pairs += [FollowPair(f"{s.name} <- {c.name}", s, drivers[c]) for c in clips]
    return pairs


def head_path(frames: list[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
    """(N,P,2) the first frame's rigid points (face.measures.RIGID_POINTS) carried from frame to frame by the
    similarity that moves the upper face's tracked corners (pyramidal Lucas-Kanade, checked backwards, RANSAC).
    Where too few corners survive, the step of the landmarks' own rigid points stands in."""
    rigid = list(RIGID_POINTS)
    points = [landmarks[0][rigid].astype(np.float64)]
    size = float(np.median(interocular(landmarks)))
    lk = dict(winSize=(21, 21), maxLevel=3)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    for i in range(len(frames) - 1):
        mask = np.zeros_like(grey[i])
        cv2.fillConvexPoly(mask, cv2.convexHull(landmarks[i][list(UPPER_FACE)].astype(np.int32)), 255)
        for eye in EYE_OPENINGS:
            outline = landmarks[i][list(eye)]
            outline = outline.mean(0) + EYE_OPENING_MARGIN * (outline - outline.mean(0))
            cv2.fillConvexPoly(mask, cv2.convexHull(np.round(outline).astype(np.int32)), 0)
        start = cv2.goodFeaturesToTrack(grey[i], 300, 0.01, max(3, int(size / 20)), mask=mask)
        A = None
        if start is not None and len(start) >= 8:
            end, ok, _ = cv2.calcOpticalFlowPyrLK(grey[i], grey[i + 1], start, None, **lk)
            back, ok_back, _ = cv2.calcOpticalFlowPyrLK(grey[i + 1], grey[i], end, None, **lk)
            good = (ok[:, 0] == 1) & (ok_back[:, 0] == 1) & (np.linalg.norm(back - start, axis=-1)[:, 0] < 0.5)
            if good.sum() >= 8:
                A, _ = cv2.estimateAffinePartial2D(start[good], end[good], method=cv2.RANSAC,
                                                   ransacReprojThreshold=1.0)
        if A is None:  # no texture to track: the landmarks' step
            points.append(points[-1] + landmarks[i + 1][rigid] - landmarks[i][rigid])
        else:
            points.append(points[-1] @ A[:, :2].T + A[:, 2])
    return np.stack(points)


def head_shake(frames: list[np.ndarray], landmarks: np.ndarray) -> float:
    """How much the head shakes (face.measures.jitter of head_path), in inter-ocular units per frame."""
    return jitter(head_path(frames, landmarks), face_size=float(np.median(interocular(landmarks))))


def measure_pair(result: Path, driver: Path, measurer, driver_measured: dict | None = None,
                 driven_by=None) -> dict:
    """The pair's columns (FOLLOW_COLUMNS, and the parts behind them): result vs driver, both measured by
    `measurer`. `driver_measured` caches each driver's landmarks and shake across pairs. `driven_by`, the
    detector that drove, reads the driver's eyes too: `eyes_seen` is the eye correlation only where the two
    detectors agree on what the driver's eyes did (EYES_SEEN), elsewhere NaN (without it, always NaN)."""
    cache = driver_measured if driver_measured is not None else {}
    if driver not in cache:
        frames = list(read_frames(driver))
        points, irises = video_landmarks(frames, measurer)
        cache[driver] = (points, irises, head_shake(frames, points))
    d_points, d_irises, d_shake = cache[driver]
    agree = float("nan")
    if driven_by is not None:
        key = (driver, driven_by.name)
        if key not in cache:
            cache[key] = video_landmarks(read_frames(driver), driven_by)[0]
        agree = float(np.nanmean([correlation(a, b) for a, b in zip(eye_openness(d_points).T,
                                                                    eye_openness(cache[key]).T)]))
    frames = list(read_frames(result))
    r_points, r_irises = video_landmarks(frames, measurer)
    s = follow_scores(r_points, d_points, r_irises, d_irises)
    shake = head_shake(frames, r_points)
    eyes = (s.eye_right + s.eye_left) / 2 if s.driver_blinks else float("nan")
    return {"eyes": eyes, "eyes_seen": eyes if agree >= EYES_SEEN else float("nan"), "driver_eyes_agree": agree,
            "gaze_h": s.gaze_h, "gaze_v": s.gaze_v, "mouth": s.mouth,
            "jitter_ratio": s.jitter_ratio, "shake_ratio": shake / max(d_shake, 1e-12),
            "head_jitter_ratio": s.head_jitter_ratio, "driver_blinks": float(s.driver_blinks),
            "shake_result": shake, "shake_driver": d_shake}


def run_follow(model: str, pairs: list[FollowPair], opts: AnimateOptions, measurer, work: Path,
               say: Callable[[str], None] = lambda m: None, driver_measured: dict | None = None
               ) -> tuple[list[str], dict[str, list[float]], dict[str, str]]:
    """Every pair through the real pipeline with `model`, measured. Returns (pair names, per-pair columns,
    skipped pairs with why: a portrait without a face, say)."""
    detector, animator = load_detector(opts), load_animator(opts)
    names, values, skipped = [], {}, {}
    for i, pair in enumerate(pairs):
        out = work / f"result_{i}.mp4"
        try:
            animate(pair.portrait, pair.driver, out, opts, detector=detector, animator=animator)
            row = measure_pair(out, pair.driver, measurer, driver_measured, driven_by=detector)
        except AnimateError as e:
            skipped[pair.name] = str(e)
            continue
        finally:
            out.unlink(missing_ok=True)
        names.append(pair.name)
        for k, v in row.items():
            values.setdefault(k, []).append(v)
        say(f"{model} follow {pair.name}: " + " ".join(f"{k} {row[k]:.2f}" for k in FOLLOW_COLUMNS))
    return names, values, skipped

