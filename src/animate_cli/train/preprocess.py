"""Turn a VoxCeleb-layout folder of clips into a compact training cache.

Decoding video and finding landmarks costs far more than a training step, so it is done once:
per clip, `frames_per_clip` face crops (JPEG) spread evenly over the clip plus their landmarks,
one `.npz` per clip (loadable with allow_pickle=False), mirrored as `<identity>/<video>/<clip>.npz`.
Resumable (finished clips are skipped, files appear atomically) and never fatal per clip.
`animate-preprocess SRC DST` (train/cli.py) runs it with PreprocessOptions.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import AnimateError
from ..face.crop import CropSmoother, face_crop_transform, transform_points, warp_to_crop
from ..face.landmarks import make_detector
from ..face.track import fill_missing, track_landmarks
from ..video import probe_video, read_frames

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
JPEG_QUALITY = 90
MIN_FACE_FRACTION = 0.5  # a clip whose face is found in fewer frames is too unreliable to train on
SKIPPED = "skipped.txt"
INDEX = "index.json"


@dataclass
class PreprocessOptions:
    """How the cache is made (the defaults `animate-preprocess` takes)."""
    resolution: int = 256  # face crop size in pixels
    frames_per_clip: int = 32  # crops kept per clip, spread evenly over it
    workers: int = 2  # processes (each with its own detector)
    detector: str = "dlib"  # landmark backend: dlib or fan (face/landmarks.py)
    max_frames: int | None = None  # read at most this many frames per clip
    limit: int | None = None  # only the first N clips (trial runs)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.resolution < 16:
            raise AnimateError(f"--resolution must be 16 or more (got {self.resolution})")
        for flag, value in (("--frames-per-clip", self.frames_per_clip), ("--workers", self.workers),
                            ("--max-frames", self.max_frames), ("--limit", self.limit)):
            if value is not None and value < 1:
                raise AnimateError(f"{flag} must be 1 or more (got {value})")


# ----------------------------------------------------------------------------------------------
# The per-clip file format.


def encode_frames(frames: list[np.ndarray], quality: int = JPEG_QUALITY) -> tuple[np.ndarray, np.ndarray]:
    """RGB crops -> (concatenated JPEG bytes, offsets (F+1,)): no object arrays, so no pickle."""
    chunks = []
    for f in frames:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise AnimateError("JPEG encoding failed")
        chunks.append(buf.reshape(-1))
    offsets = np.zeros(len(chunks) + 1, np.int64)
    offsets[1:] = np.cumsum([len(c) for c in chunks])
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    return data.astype(np.uint8), offsets


def decode_frame(jpeg: np.ndarray, offsets: np.ndarray, i: int) -> np.ndarray:
    """Frame i of a clip file as RGB uint8."""
    img = cv2.imdecode(jpeg[offsets[i]:offsets[i + 1]], cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def save_clip(path: Path, frames: list[np.ndarray], landmarks: np.ndarray, frame_index: np.ndarray,
              fps: float) -> None:
    """Write one clip file atomically (temp + os.replace), so a kill never leaves half a file."""
    jpeg, offsets = encode_frames(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, jpeg=jpeg, offsets=offsets, landmarks=np.asarray(landmarks, np.float32),
                 frame_index=np.asarray(frame_index, np.int32), resolution=np.int32(frames[0].shape[0]),
                 fps=np.float32(fps))
    os.replace(tmp, path)


def load_clip(path: Path) -> dict:
    """All arrays of a clip file (small: ~0.5 MB) as plain numpy."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ----------------------------------------------------------------------------------------------
# One clip.


def pick_frames(valid: np.ndarray, n: int) -> np.ndarray:
    """n indices spread evenly over the frames where a face was really found (no filled-in frames)."""
    idx = np.flatnonzero(valid)
    if len(idx) <= n:
        return idx
    return idx[np.round(np.linspace(0, len(idx) - 1, n)).astype(int)]


def process_clip(src: Path, dst: Path, resolution: int, frames_per_clip: int, detector,
                 max_frames: int | None = None) -> int:
    """Crop one clip into `dst`; returns the number of frames stored. AnimateError = skip this clip."""
    info = probe_video(src)
    frames = list(read_frames(src, max_frames=max_frames))
    if not frames:
        raise AnimateError("no frames")
    # Landmarks cost most: track on every `stride`-th frame only (2x the frames kept, so a few
    # misses still leave enough). Raw per-frame fits: a stored landmark must match its own frame
    # (no smoothing lag); the crop window is what gets smoothed, as at inference time.
    stride = max(1, len(frames) // (2 * frames_per_clip))
    tracked = np.arange(0, len(frames), stride)
    seq = list(track_landmarks([frames[i] for i in tracked], detector, smooth=False))
    valid = np.array([s is not None for s in seq])
    if valid.mean() < MIN_FACE_FRACTION:
        raise AnimateError(f"face found in only {int(valid.sum())}/{len(seq)} frames")
    lms = fill_missing(seq, src.name)
    smoother = CropSmoother(resolution)
    transforms = [smoother(face_crop_transform(l, resolution)) for l in lms]
    chosen = pick_frames(valid, frames_per_clip)
    crops = [warp_to_crop(frames[tracked[j]], transforms[j], resolution) for j in chosen]
    crop_lms = np.stack([transform_points(lms[j], transforms[j]) for j in chosen]).astype(np.float32)
    save_clip(dst, crops, crop_lms, tracked[chosen], info.fps)
    return len(chosen)


# ----------------------------------------------------------------------------------------------
# The folder.


def find_clips(src: Path) -> list[Path]:
    """Clips at <identity>/<video>/<clip>.<ext>, sorted so runs and indices are reproducible."""
    return sorted(p for p in src.glob("*/*/*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())


_WORKER: dict = {}


def _init_worker(detector_name: str, single_thread: bool = True) -> None:
    """One detector per worker process; one thread each so two workers share two cores fairly."""
    if single_thread:
        cv2.setNumThreads(1)
        torch.set_num_threads(1)
    _WORKER["detector"] = make_detector(detector_name)


def _work(job) -> tuple[str, int | None, str]:
    """(relative clip path, n frames or None, skip reason) — never raises: one bad clip is not fatal."""
    rel, src, dst, resolution, fpc, max_frames = job
    try:
        return rel, process_clip(Path(src), Path(dst), resolution, fpc, _WORKER["detector"], max_frames), ""
    except AnimateError as e:
        return rel, None, str(e)
    except Exception as e:  # a broken file must not stop a 2-hour run
        return rel, None, f"{type(e).__name__}: {e}"


def read_skipped(dst: Path) -> dict[str, str]:
    path = dst / SKIPPED
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        rel, _, reason = line.partition("\t")
        if rel:
            out[rel] = reason
    return out


def write_index(dst: Path) -> list[dict]:
    """index.json: every clip file in the cache with its identity, video and frame count."""
    entries = []
    for p in sorted(dst.glob("*/*/*.npz")):
        try:
            with np.load(p, allow_pickle=False) as z:
                n = int(len(z["offsets"]) - 1)
        except Exception:  # a corrupt file (e.g. disk full) is left out rather than crash training
            continue
        rel = p.relative_to(dst)
        entries.append({"identity": rel.parts[0], "video": rel.parts[1], "clip": rel.as_posix(), "frames": n})
    tmp = dst / (INDEX + ".tmp")
    tmp.write_text(json.dumps(entries, indent=0))
    os.replace(tmp, dst / INDEX)
    return entries


def preprocess_dataset(src, dst, opts: PreprocessOptions | None = None, **kwargs) -> dict:
    """Fill the cache `dst` from the clips in `src` (options: `opts`, changed by `kwargs`); returns a
    summary dict (counts, seconds, clips/s)."""
    o = dataclasses.replace(opts or PreprocessOptions(), **kwargs)
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise AnimateError(f"dataset folder not found: {src}")
    clips = find_clips(src)[:o.limit]
    if not clips:
        raise AnimateError(f"no clips at {src}/<identity>/<video>/<clip>.mp4")
    dst.mkdir(parents=True, exist_ok=True)
    skipped = read_skipped(dst)
    jobs, done = [], 0
    for c in clips:
        rel = c.relative_to(src).as_posix()
        out = dst / Path(rel).with_suffix(".npz")
        if out.exists() or rel in skipped:
            done += 1
            continue
        jobs.append((rel, str(c), str(out), o.resolution, o.frames_per_clip, o.max_frames))

    t0 = time.time()
    n_ok = n_skip = 0
    with open(dst / SKIPPED, "a") as skip_log, progress_bar(o.progress, len(jobs)) as advance:
        def handle(result):
            nonlocal n_ok, n_skip
            rel, n, reason = result
            if n is None:
                n_skip += 1
                skip_log.write(f"{rel}\t{reason}\n")
                skip_log.flush()
            else:
                n_ok += 1
            advance(rel)

        if o.workers <= 1 or len(jobs) <= 1:
            _init_worker(o.detector, single_thread=False)
            for job in jobs:
                handle(_work(job))
        else:
            with get_context("spawn").Pool(o.workers, _init_worker, (o.detector,)) as pool:
                for result in pool.imap_unordered(_work, jobs, chunksize=1):
                    handle(result)
    seconds = time.time() - t0
    index = write_index(dst)
    return {"clips": len(clips), "already_done": done, "processed": n_ok, "skipped": n_skip,
            "cached_clips": len(index), "cached_frames": sum(e["frames"] for e in index),
            "seconds": round(seconds, 1), "clips_per_s": round((n_ok + n_skip) / max(seconds, 1e-9), 3)}


class progress_bar:
    """A rich progress bar when wanted, a no-op otherwise (tests, logs)."""

    def __init__(self, enabled: bool, total: int, label: str = "preprocess"):
        self.enabled, self.total, self.label = enabled, total, label

    def __enter__(self):
        if not self.enabled:
            return lambda rel: None
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), TextColumn("{task.description}"))
        self.bar.__enter__()
        task = self.bar.add_task("", total=self.total)
        self.count, self.t0 = 0, time.time()

        def advance(rel):
            self.bar.update(task, advance=1, description=rel)
            self.count += 1
            if not self.bar.console.is_terminal and (self.count % 25 == 0 or self.count == self.total):
                rate = self.count / max(time.time() - self.t0, 1e-9)
                print(f"{self.count}/{self.total} clips, {rate:.2f} clips/s, last {rel}", flush=True)
        return advance

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False
