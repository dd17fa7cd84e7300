"""References ("shots"): the portrait plus any --ref images or videos of the same person, as square face
crops with their landmarks in crop pixels -- what an animator prepares on -- and the full-resolution
pictures they were cut from, which the compositor samples the output from (composite.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .errors import AnimateError
from .face.crop import face_crop_transform, transform_points, warp_to_crop
from .face.landmarks import image_landmarks
from .face.track import fill_missing, track_landmarks
from .video import is_video, probe_video, read_frames, read_image

VIDEO_SHOTS = 8  # shots in total (portrait included) when a --ref video is given without --shots
FINGERPRINT_SIZE = 16  # side of the thumbnail a person file keeps of its portrait's crop
# Measured on the bundled portrait: the same picture as JPEG q30-70, resized to 60 % or 200 %, padded or
# shifted is 2-5.2 levels and 0.5-1 % of the crop apart; another face, the picture mirrored, turned by
# 8 degrees or 25 levels brighter is 24+ levels or 3+ % apart.
SAME_THUMBNAIL = 10.0  # mean absolute difference, 0-255 levels
SAME_LANDMARKS = 0.02  # mean point distance, in crop sides


@dataclass
class Shot:
    """One reference picture of the person: its square face crop and landmarks in crop pixels, the picture
    itself and the 2x3 transform from its pixels to the crop's."""

    crop: np.ndarray
    landmarks: np.ndarray
    source: str
    image: np.ndarray
    M: np.ndarray


def crop_shot(image: np.ndarray, landmarks: np.ndarray, resolution: int, source: str) -> Shot:
    """The shot cut from `image` (which it keeps, not a copy)."""
    M = face_crop_transform(landmarks, resolution)
    return Shot(warp_to_crop(image, M, resolution), transform_points(landmarks, M).astype(np.float32), source,
                image, M)


def normalised_shape(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks with position and scale removed, for comparing poses/expressions of shots."""
    pts = landmarks.reshape(-1, 68, 2)
    centred = pts - pts.mean(axis=1, keepdims=True)
    scale = np.sqrt((centred**2).sum(axis=(1, 2), keepdims=True) / 68.0) + 1e-8
    return (centred / scale).reshape(landmarks.shape)


def spread_pose_frames(landmarks: np.ndarray, n: int) -> list[int]:
    """n frame indices of a reference video, spread in time and greedily preferring varied poses."""
    total = len(landmarks)
    if n >= total:
        return list(range(total))
    norm = normalised_shape(landmarks).reshape(total, -1)
    chosen = [0]
    dist = ((norm - norm[0]) ** 2).sum(-1)
    # time spreading: a candidate must be at least total/(2n) frames from every chosen one
    gap = max(1, total // (2 * n))
    while len(chosen) < n:
        score = dist.copy()
        for c in chosen:
            score[max(0, c - gap + 1):c + gap] = -1
        best = int(score.argmax())
        if score[best] < 0:  # no spread candidate left: fall back to farthest pose anywhere
            best = int(np.where(np.isin(np.arange(total), chosen), -1, dist).argmax())
        chosen.append(best)
        dist = np.minimum(dist, ((norm - norm[best]) ** 2).sum(-1))
    return sorted(chosen)


def video_reference_frames(path: Path, detector, n: int, face_index: int,
                           progress=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, landmarks) pairs from a reference video: n frames spread across it, varied poses.
    `progress` (animate.Progress) gets a "reference video" bar over the landmark pass."""
    stage = "reference video"
    if progress is not None:
        progress.start(stage, probe_video(path).n_frames)
    raw = []
    for lm in track_landmarks(read_frames(path), detector, face_index=face_index):
        raw.append(lm)
        if progress is not None:
            progress.advance(stage)
    if progress is not None:
        progress.finish(stage)
    lms = fill_missing(raw, path.name)
    wanted = set(spread_pose_frames(lms, n))
    return [(f, lms[i]) for i, f in enumerate(read_frames(path)) if i in wanted]


def load_shots(portrait: np.ndarray, portrait_landmarks: np.ndarray, refs: Sequence[Path], shots: int | None,
               detector, face_index: int, resolution: int, warn=None, progress=None) -> list[Shot]:
    """The portrait first, then reference images, then frames from reference videos, up to `shots`."""
    result = [crop_shot(portrait, portrait_landmarks, resolution, "portrait")]
    images = [r for r in refs if not is_video(r)]
    videos = [r for r in refs if is_video(r)]
    for ref in images:
        img = read_image(ref)
        result.append(crop_shot(img, image_landmarks(detector, img, face_index, warn=warn, name=ref.name),
                                resolution, ref.name))
    if shots is not None and shots < 1:
        raise AnimateError(f"--shots must be at least 1 (got {shots})")
    if videos:
        room = (shots if shots is not None else VIDEO_SHOTS) - len(result)
        per_video = max(0, room) // len(videos) if room > 0 else 0
        extra = max(0, room) - per_video * len(videos)
        for k, ref in enumerate(videos):
            want = per_video + (1 if k < extra else 0)
            if want:
                for frame, lm in video_reference_frames(ref, detector, want, face_index, progress):
                    result.append(crop_shot(frame, lm, resolution, ref.name))
    if shots is not None:
        if shots > len(result):
            raise AnimateError(f"--shots {shots} is more than the {len(result)} reference picture(s) available "
                               "(add --ref images or a --ref video)")
        result = result[:shots]
    return result


def portrait_fingerprint(crop: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """What says whose a saved person is: its portrait's face crop shrunk to a 16x16 thumbnail, and the
    landmarks in crop sides. Tolerant by design: the same picture re-encoded or resized still matches."""
    thumb = cv2.resize(np.ascontiguousarray(crop), (FINGERPRINT_SIZE, FINGERPRINT_SIZE), interpolation=cv2.INTER_AREA)
    return {"thumbnail": thumb.astype(np.float32),
            "landmarks": np.asarray(landmarks, np.float32).reshape(68, 2) / crop.shape[0]}


def fingerprint_distance(a: dict, b: dict) -> tuple[float, float]:
    """(thumbnail difference in 0-255 levels, landmark distance in crop sides) of two fingerprints."""
    pixels = float(np.abs(np.asarray(a["thumbnail"], np.float32) - np.asarray(b["thumbnail"], np.float32)).mean())
    points = float(np.linalg.norm(np.asarray(a["landmarks"]) - np.asarray(b["landmarks"]), axis=-1).mean())
    return pixels, points


def same_portrait(a: dict, b: dict) -> bool:
    pixels, points = fingerprint_distance(a, b)
    return pixels <= SAME_THUMBNAIL and points <= SAME_LANDMARKS
