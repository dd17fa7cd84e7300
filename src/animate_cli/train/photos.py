"""Cache a folder of still photos (LFW layout <person>/<file>.jpg, or any folder of images) for training.

Four video identities teach a model their faces; thousands of people in photos teach it faces. Each
photo becomes a one-frame clip file in the video cache's format (`preprocess.save_clip`: JPEG crop at the
model resolution with the video crops' framing, `face_crop_transform`, and its 68 landmarks), mirrored
as `<person>/<file>.npz`. `photos.json` lists every cached photo with its person and how open its mouth
and eyes are (`face.regions`), so episodes can pick open-mouthed photos without opening files.
Resumable: cached photos and those listed in `skipped.txt` (with the reason) are not redone.

    animate-preprocess-photos path/to/lfw cache/lfw256 --resolution 256 --workers 1   (train/cli.py)
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from ..errors import AnimateError
from ..face.crop import face_crop_transform, transform_points, warp_to_crop
from ..face.landmarks import make_detector
from ..face.regions import OPEN_MOUTH_GAP, eye_gaps, mouth_gap
from .preprocess import SKIPPED, progress_bar, read_skipped, save_clip


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PHOTO_INDEX = "photos.json"
DETECT_UPSAMPLE = 1.5  # detection size / photo size: LFW's 250-px photos need no more (~0.13 s a photo)
MAX_UPSCALE = 4.0  # a face whose crop would be enlarged more than this is too blurry to teach anything


@dataclass
class PhotoCacheOptions:
    """How the photo cache is made (the defaults `animate-preprocess-photos` takes)."""
    resolution: int = 256  # face crop size in pixels (the model's)
    workers: int = 1  # processes (each with its own detector, one thread each)
    detector: str = "dlib"  # landmark backend: dlib or fan (face/landmarks.py)
    limit: int | None = None  # only the first N photos (trial runs)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.resolution < 16:
            raise AnimateError(f"--resolution must be 16 or more (got {self.resolution})")
        for flag, value in (("--workers", self.workers), ("--limit", self.limit)):
            if value is not None and value < 1:
                raise AnimateError(f"{flag} must be 1 or more (got {value})")


def find_photos(src: Path) -> list[Path]:
    """Every image below `src`, sorted so runs are reproducible."""
    return sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def person_of(rel: str) -> str:
    """The person a photo shows: its top folder (LFW layout), or the file's own name when it lies loose."""
    parts = Path(rel).parts
    return parts[0] if len(parts) > 1 else Path(rel).stem


def choose_face(boxes: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """The face to cache: the only one found, or the only one covering the photo's centre (LFW centres
    its subject; bystanders are smaller and off-centre). AnimateError = skip the photo, with the reason."""
    if not boxes:
        raise AnimateError("no face")
    if len(boxes) == 1:
        return boxes[0]
    cx, cy = width / 2, height / 2
    central = [b for b in boxes if b[0] <= cx <= b[2] and b[1] <= cy <= b[3]]
    if len(central) != 1:
        raise AnimateError(f"several faces ({len(boxes)}, {len(central)} at the centre)")
    return central[0]


def process_photo(src: Path, dst: Path, resolution: int, detector) -> None:
    """Crop one photo into `dst` (a one-frame clip file). AnimateError = skip it, with the reason."""
    bgr = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if bgr is None:
        raise AnimateError("unreadable image")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    work_size = int(min(getattr(detector, "WORK_SIZE", 960), round(DETECT_UPSAMPLE * max(h, w))))
    box = choose_face(detector.detect(image, work_size=work_size), h, w)
    lms = detector.landmarks(image, box)
    transform = face_crop_transform(lms, resolution)
    side = resolution / transform[0, 0]
    if resolution / side > MAX_UPSCALE:
        raise AnimateError(f"face too small ({side:.0f} px crop for {resolution} px)")
    crop = warp_to_crop(image, transform, resolution)
    crop_lms = transform_points(lms, transform)[None]
    save_clip(dst, [crop], crop_lms, np.zeros(1, np.int32), fps=0.0)


_DETECTOR: dict = {}


def _start_worker(detector_name: str) -> None:
    """One landmark detector per process, on one thread: the machine is shared."""
    cv2.setNumThreads(1)
    _DETECTOR["detector"] = make_detector(detector_name)


def _cache_one(job) -> tuple[str, str]:
    """(relative photo path, skip reason or "") — never raises: one bad photo must not stop the run."""
    rel, src, dst, resolution = job
    try:
        process_photo(Path(src), Path(dst), resolution, _DETECTOR["detector"])
        return rel, ""
    except AnimateError as e:
        return rel, str(e)
    except Exception as e:
        return rel, f"{type(e).__name__}: {e}"


def photo_record(rel: str, landmarks: np.ndarray) -> dict:
    """photos.json's entry for one cached photo: file, person and openings (face.regions)."""
    eyes = eye_gaps(landmarks)
    return {"photo": rel, "person": person_of(rel), "mouth_gap": round(float(mouth_gap(landmarks)), 4),
            "eye_gaps": [round(float(g), 4) for g in eyes]}


def write_photo_index(dst: Path, names: dict[str, str] | None = None) -> list[dict]:
    """photos.json from the photo files in the cache (rebuilt whole: the files are the truth).
    `names`: cache file -> source photo path, to record the source's own name where known."""
    entries = []
    for p in sorted(dst.rglob("*.npz")):
        rel = p.relative_to(dst).as_posix()
        try:
            with np.load(p, allow_pickle=False) as z:
                lms = z["landmarks"][0]
        except Exception:  # a corrupt file (e.g. disk full) is left out rather than crash training
            continue
        entries.append(photo_record((names or {}).get(rel, rel), lms) | {"file": rel})
    tmp = dst / (PHOTO_INDEX + ".tmp")
    tmp.write_text("[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")  # one photo a line
    os.replace(tmp, dst / PHOTO_INDEX)
    return entries


def cache_photos(src, dst, opts: PhotoCacheOptions | None = None, **kwargs) -> dict:
    """Fill the photo cache `dst` from the images in `src` (options: `opts`, changed by `kwargs`); returns a
    summary (counts, skips by reason, share of open mouths, seconds)."""
    o = dataclasses.replace(opts or PhotoCacheOptions(), **kwargs)
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise AnimateError(f"photo folder not found: {src}")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise AnimateError("the cache must lie outside the photo folder")
    photos = find_photos(src)[:o.limit]
    if not photos:
        raise AnimateError(f"no images ({', '.join(IMAGE_EXTS)}) in {src}")
    dst.mkdir(parents=True, exist_ok=True)
    skipped = read_skipped(dst)
    jobs, names, done = [], {}, 0
    for p in photos:
        rel = p.relative_to(src).as_posix()
        out = dst / Path(rel).with_suffix(".npz")
        names[out.relative_to(dst).as_posix()] = rel
        if out.exists() or rel in skipped:
            done += 1
            continue
        jobs.append((rel, str(p), str(out), o.resolution))

    t0 = time.time()
    reasons: Counter = Counter()
    with open(dst / SKIPPED, "a") as skip_log, progress_bar(o.progress, len(jobs), "photos") as advance:
        def handle(result):
            rel, reason = result
            if reason:
                reasons[reason.split(" (")[0]] += 1
                skip_log.write(f"{rel}\t{reason}\n")
                skip_log.flush()
            advance(rel)

        if o.workers <= 1 or len(jobs) <= 1:
            _start_worker(o.detector)
            for job in jobs:
                handle(_cache_one(job))
        else:
            with get_context("spawn").Pool(o.workers, _start_worker, (o.detector,)) as pool:
                for result in pool.imap_unordered(_cache_one, jobs, chunksize=4):
                    handle(result)
    seconds = time.time() - t0
    index = write_photo_index(dst, names)
    all_reasons = Counter(r.split(" (")[0] for r in read_skipped(dst).values())
    open_mouth = sum(e["mouth_gap"] > OPEN_MOUTH_GAP for e in index)
    return {"photos": len(photos), "already_done": done, "processed": len(jobs) - sum(reasons.values()),
            "skipped": sum(reasons.values()), "skipped_by_reason": dict(all_reasons),
            "cached_photos": len(index), "people": len({e["person"] for e in index}),
            "open_mouth_share": round(open_mouth / max(len(index), 1), 4),
            "seconds": round(seconds, 1), "photos_per_s": round(len(jobs) / max(seconds, 1e-9), 3)}
