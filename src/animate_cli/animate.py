"""The pipeline: portrait(s) and a driver in, an animated MP4 out, as named stages.

  check_job        refuse a doomed run (bad values, driver an image, an output not writable or one of the
                   inputs) before any slow work
  read_portrait    the portrait's landmarks (a note for a huge one)
  load_shots       portrait + --ref pictures -> square face crops (shots.py)
  prepare          the animator takes the shots (fine-tuning for neural models; animators.py)
  driver_landmarks decode the driver (stream) -> landmarks, tracked + smoothed, gaps held
  motion_targets   motion transfer onto the portrait, then into the crop the shots came from
  render_video     animator.render_motion (batched) -> composite at the portrait's resolution -> encode
                   (stream) + audio
The driver is decoded twice (landmarks first, frames again only for --preview) so memory stays flat:
only its landmarks (544 bytes a frame) are kept.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .animators import (DEFAULT_DEVICE, DEFAULT_MODEL, DEFAULT_RESOLUTION, Animator, Motion, make_animator,
                        resolve_device, to_uint8)
from .composite import Compositor, ShotSource
from .errors import AnimateError
from .face.crop import face_crop_transform, transform_points
from .face.landmarks import LandmarkDetector, image_landmarks, make_detector
from .face.iris import iris_centres
from .face.smooth import smooth_driver
from .face.track import fill_missing, gap_note, track_faces
from .gaze import gaze_field, iris_shifts, portrait_gaze, relative_gaze
from .motion import find_best_frame, transfer_absolute, transfer_relative
from .shots import Shot, load_shots
from .video import (VideoInfo, VideoWriter, check_not_an_input, check_writable, is_image, is_video, probe_video,
                    read_frames, read_image)

HUGE_SIDE = 4096  # a portrait longer than this (px) or larger than HUGE_PIXELS gets a note: slow, big video
HUGE_PIXELS = 16_000_000
PREVIEW_HEIGHT = 720  # the side-by-side preview is for looking: a huge portrait is shown smaller there


@dataclass
class AnimateOptions:
    """Everything a run can be asked for, with its default: the one typed source of the CLI's defaults."""

    model: str = DEFAULT_MODEL
    landmarks: str = "auto"
    face_index: int = 0  # the portrait's (and --ref pictures') face, 0 = the largest
    driver_face: int = 0  # the driver's face to follow, 0 = the largest in its first frame with a face
    refs: list[Path] = field(default_factory=list)
    shots: int | None = None
    absolute: bool = False
    find_best_frame: bool = False
    crop_only: bool = False
    size: int | None = None  # side of the --crop-only video; None: the face's own size in the portrait
    preview: bool = False
    audio: bool = True
    overwrite: bool = False
    device: str = DEFAULT_DEVICE
    half: bool = True
    finetune_steps: int | None = None  # None: FinetuneConfig().steps_on(the device's type)
    batch_size: int = 8
    seed: int = 0
    person: Path | None = None
    save_person: Path | None = None
    resolution: int = DEFAULT_RESOLUTION
    threads: int | None = None  # CPU threads; None: animators.default_threads()

    def check(self) -> None:
        """Values out of range, each in one line (exit 1 like every bad value; the CLI parses only types)."""
        for option, value, least in [("--face-index", self.face_index, 0), ("--driver-face", self.driver_face, 0),
                                     ("--finetune-steps", self.finetune_steps, 0), ("--batch-size", self.batch_size, 1),
                                     ("--shots", self.shots, 1), ("--threads", self.threads, 1)]:
            if value is not None and value < least:
                raise AnimateError(f"{option} must be {least} or more (got {value})")


@dataclass
class Report:
    """What a run did, for the summary line/table and the benchmark."""

    output: Path
    frames: int = 0
    fps: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    detector: str = ""
    model: str = ""
    shots: int = 0
    wall: float = 0.0  # seconds from start to the published video
    finetune_steps: int = 0

    def spent(self) -> list[tuple[str, float]]:
        """Where the wall time went, in words and in pipeline order: (what, seconds)."""
        s = self.seconds.get
        parts = [("setup", s("portrait", 0.0)),
                 ("fine-tuning" if self.finetune_steps else "preparing", s("prepare", 0.0)),
                 ("driver landmarks", s("decode", 0.0) + s("landmarks", 0.0)),
                 ("rendering", sum(s(k, 0.0) for k in ("motion", "render", "composite", "paste", "encode")))]
        return [(what, sec) for what, sec in parts if sec >= 0.5]


class Stopwatch:
    """Adds up wall time per pipeline stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


def timed(iterator: Iterator, watch: Stopwatch, stage: str) -> Iterator:
    """Charge the time spent producing each item of a generator to `stage`."""
    it = iter(iterator)
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            watch.add(stage, t)
            return
        watch.add(stage, t)
        yield item


class Progress:
    """Thin hooks the CLI fills with rich progress bars; silent by default."""

    def start(self, stage: str, total: int | None) -> None: ...
    def advance(self, stage: str, n: int = 1, **info) -> None: ...
    def finish(self, stage: str) -> None: ...
    def note(self, message: str) -> None: ...


def load_detector(opts: AnimateOptions) -> LandmarkDetector:
    """The landmark backend, on the run's device."""
    return make_detector(opts.landmarks, device=str(resolve_device(opts.device)))


def load_animator(opts: AnimateOptions) -> Animator:
    """The model (loaded once; a batch prepares it for portrait after portrait)."""
    return make_animator(opts.model, opts.device, opts.finetune_steps, opts.seed, half=opts.half,
                         person=opts.person, resolution=opts.resolution)


def animate(portrait_path: Path, driver_path: Path, output: Path, opts: AnimateOptions,
            progress: Progress | None = None, detector: LandmarkDetector | None = None,
            animator: Animator | None = None) -> Report:
    """Animate one portrait (and its references) with one driver into `output`."""
    progress = progress or Progress()
    watch = Stopwatch()
    t = started = time.perf_counter()
    portrait_path, driver_path, output = Path(portrait_path), Path(driver_path), Path(output)
    info, portrait = check_job(portrait_path, driver_path, output, opts)
    detector = detector or load_detector(opts)
    progress.note(f"landmarks: {detector.name}")
    portrait_lms = read_portrait(portrait, portrait_path, detector, opts, progress)
    animator = animator or load_animator(opts)
    if opts.save_person is not None and not animator.can_save_person:
        raise AnimateError(f"--save-person needs a neural model (not --model {animator.name})")
    shots = load_shots(portrait, portrait_lms, opts.refs, opts.shots, detector, opts.face_index,
                       animator.resolution, warn=progress.note, progress=progress)
    identity = animator.check_portrait(shots[0].crop, shots[0].landmarks, portrait_path.name)
    if identity:
        progress.note(identity)
    t = watch.add("portrait", t)

    progress.note(f"model: {animator.name}, {len(shots)} shot(s)")
    prepare(animator, shots, progress)
    if opts.save_person is not None:
        animator.save_person(opts.save_person, source=portrait_path.name)
    t = watch.add("prepare", t)

    driver_lms, driver_irises = driver_landmarks(driver_path, detector, opts.driver_face, info, watch, progress)
    t = time.perf_counter()
    targets, M = motion_targets(portrait_lms, driver_lms, opts, animator.resolution, animator.paints_eyes)
    shifts = gaze_shifts(portrait, portrait_lms, driver_lms, driver_irises, targets, M)
    watch.add("motion", t)

    n = render_video(animator, targets, M, portrait, shots, driver_path, info, output, opts, watch, progress,
                     shifts)
    total = sum(watch.seconds.values())
    return Report(output=output, frames=n, fps=n / max(total, 1e-9), seconds=watch.seconds,
                  detector=detector.name, model=animator.name, shots=len(shots),
                  wall=time.perf_counter() - started, finetune_steps=animator.finetune_steps)


def check_job(portrait_path: Path, driver_path: Path, output: Path, opts: AnimateOptions
              ) -> tuple[VideoInfo, np.ndarray]:
    """The driver's stream info and the portrait, once every output is known to be writable and none of
    them is an input of the run (not even through a link: video.check_not_an_input)."""
    opts.check()
    inputs = [portrait_path, driver_path, *opts.refs, opts.person]
    check_not_an_input(output, inputs)
    if opts.preview:
        check_not_an_input(preview_path(output), inputs, what="preview")
    if opts.save_person is not None:
        check_not_an_input(opts.save_person, inputs, what="--save-person")
        if Path(opts.save_person).resolve() in {output.resolve(), preview_path(output).resolve()}:
            raise AnimateError(f"--save-person {opts.save_person} names the output video: choose another name")
    if not is_video(driver_path) and driver_path.exists() and is_image(driver_path):
        raise AnimateError(f"{driver_path.name} is an image, the driver must be a video")
    info = probe_video(driver_path)
    portrait = read_image(portrait_path)
    check_output(output, opts.overwrite)
    if opts.preview:  # a preview without its video was left by an unfinished run: redo it
        check_output(preview_path(output), opts.overwrite or not output.exists())
    if opts.save_person is not None:
        check_writable(Path(opts.save_person), opts.overwrite)
    return info, portrait


def read_portrait(portrait: np.ndarray, portrait_path: Path, detector: LandmarkDetector, opts: AnimateOptions,
                  progress: Progress) -> np.ndarray:
    """The portrait's face landmarks; a huge portrait gets a note (the video keeps its size)."""
    h, w = portrait.shape[:2]
    if max(h, w) > HUGE_SIDE or h * w > HUGE_PIXELS:
        progress.note(f"{portrait_path.name} is {w}x{h} ({h * w / 1e6:.0f} MP): the video keeps that size and is "
                      f"slow to make; a copy {HUGE_SIDE // 2} px on its long side runs several times faster")
    return image_landmarks(detector, portrait, opts.face_index, warn=progress.note, name=portrait_path.name)


def prepare(animator: Animator, shots: list[Shot], progress: Progress) -> None:
    """The animator takes this person's shots, with a progress bar while it fine-tunes."""
    if animator.finetune_steps:
        progress.start("fine-tuning", animator.finetune_steps)
    animator.prepare([s.crop for s in shots], [s.landmarks for s in shots],
                     on_step=lambda step, total, losses: progress.advance("fine-tuning", 1, **losses))
    progress.finish("fine-tuning")


def driver_landmarks(driver_path: Path, detector: LandmarkDetector, face_index: int, info: VideoInfo,
                     watch: Stopwatch, progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1 over the driver: its landmarks (N,68,2) and iris centres (N,2,2), tracked, gaps held, then
    smoothed over the whole clip (face.smooth: head pose strongly, eyelids and lips lightly, so blinks
    survive). A driver cut short and a face lost for seconds (it holds still there) are noted."""
    t = time.perf_counter()
    progress.start("driver landmarks", info.n_frames)
    raw = []
    frames = timed(read_frames(driver_path, note=progress.note), watch, "decode")
    for fit in track_faces(frames, detector, face_index=face_index, smooth=False, face_option="--driver-face"):
        raw.append(fit)
        progress.advance("driver landmarks")
    progress.finish("driver landmarks")
    points = [None if f is None else f.points for f in raw]
    gap = gap_note(points, info.fps, driver_path.name)
    if gap:
        progress.note(gap)
    lms = fill_missing(points, driver_path.name)
    irises = fill_missing([None if f is None or f.irises is None else f.irises for f in raw], driver_path.name,
                          shape=(2, 2))
    lms, irises = smooth_driver(lms, irises)
    # everything in pass 1 that was not decoding was landmark detection, tracking and smoothing
    watch.add("landmarks", t)
    watch.seconds["landmarks"] -= watch.seconds.get("decode", 0.0)
    return lms, irises


def motion_targets(portrait_lms: np.ndarray, driver_lms: np.ndarray, opts: AnimateOptions, resolution: int,
                   reopen_eyes: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The driver's motion on the portrait, in the crop's pixels (N,68,2), and the portrait->crop transform.
    reopen_eyes (an animator with an eye painter): a shut portrait's eyes open with the driver's."""
    ref = find_best_frame(portrait_lms, driver_lms) if opts.find_best_frame else 0
    if opts.absolute:
        targets_full = transfer_absolute(portrait_lms, driver_lms, ref_index=ref)
    else:
        targets_full = transfer_relative(portrait_lms, driver_lms, ref_index=ref, reopen_eyes=reopen_eyes)
    M = face_crop_transform(portrait_lms, resolution)
    targets = transform_points(targets_full.reshape(-1, 2), M).reshape(-1, 68, 2).astype(np.float32)
    return targets, M


def gaze_shifts(portrait: np.ndarray, portrait_lms: np.ndarray, driver_lms: np.ndarray, driver_irises: np.ndarray,
                targets: np.ndarray, M: np.ndarray) -> np.ndarray:
    """(N,2,2) how far each portrait iris slides in crop pixels: the driver's gaze relative to its median,
    kept inside the portrait's eyes (gaze.py)."""
    own = portrait_gaze(transform_points(portrait_lms, M), transform_points(iris_centres(portrait, portrait_lms), M))
    return iris_shifts(targets, relative_gaze(driver_lms, driver_irises), own).astype(np.float32)


def render_video(animator: Animator, targets: np.ndarray, M: np.ndarray, portrait: np.ndarray, shots: list[Shot],
                 driver_path: Path, info: VideoInfo, output: Path, opts: AnimateOptions, watch: Stopwatch,
                 progress: Progress, shifts: np.ndarray | None = None) -> int:
    """Pass 2: render in batches, composite at full resolution, encode (the driver is re-read only for
    --preview); -> frames."""
    audio = driver_path if (opts.audio and info.has_audio) else None
    n = len(targets)
    t = time.perf_counter()
    compositor = Compositor(portrait, M, animator.resolution, shot_sources(animator, shots),
                            crop_only=opts.crop_only, size=opts.size)
    watch.add("prepare", t)  # once per run (the shots' oversampled copies), not per frame
    progress.start("rendering", n)
    drivers = read_frames(driver_path) if opts.preview else None
    writer_ctx = VideoWriter(output, info.fps, audio_from=audio, overwrite=opts.overwrite)
    preview_ctx = (VideoWriter(preview_path(output), info.fps, audio_from=audio,
                               overwrite=opts.overwrite or not output.exists()) if opts.preview else nullcontext())
    shown = None  # the portrait at the preview's height, fitted once
    animator.start_video()  # consecutive frames: shots held with hysteresis
    # the video is published last (the innermost writer closes first): a kill between the two leaves a lone
    # preview, which a rerun redoes (check_job), never a video without its preview
    with preview_ctx as pwriter, writer_ctx as writer:
        for start in range(0, n, opts.batch_size):
            batch = targets[start:start + opts.batch_size]
            t = time.perf_counter()
            field = (None if shifts is None
                     else gaze_field(batch, shifts[start:start + opts.batch_size], animator.resolution))
            motion = animator.render_motion(batch, field=field)
            t = watch.add("render", t)
            for i in range(len(batch)):
                frame = composite_frame(compositor, motion, i)
                t = watch.add("composite", t)
                writer.write(frame)
                if pwriter is not None:
                    drv = next(drivers, None)
                    if shown is None:
                        shown = fit_height(portrait, min(frame.shape[0], PREVIEW_HEIGHT))
                    pwriter.write(preview_frame(drv if drv is not None else np.zeros_like(frame), shown, frame))
                t = watch.add("encode", t)
            progress.advance("rendering", len(batch))
        t = time.perf_counter()
    watch.add("encode", t)
    progress.finish("rendering")
    return n


def shot_sources(animator: Animator, shots: list[Shot]) -> list[ShotSource]:
    """The full-resolution pictures behind the animator's shots, in its order. A saved person (--person)
    brings its own shots as crops: then the crops are all there is to sample (identity transform)."""
    if animator.loaded_person:
        return [ShotSource(crop, np.eye(2, 3)) for crop in to_uint8(animator.shots)]
    return [ShotSource(s.image, s.M) for s in shots]


def composite_frame(compositor: Compositor, motion: Motion, i: int) -> np.ndarray:
    """Frame i of a rendered batch at the output's resolution: its shot moved at full resolution (plus what
    the network painted), or a crop the network painted whole, pasted."""
    if motion.grids is None:
        return compositor.paste(motion.crops[i])
    correction = None if motion.corrections is None else motion.corrections[i]
    return compositor(motion.grids[i], shot=int(motion.shots[i]), correction=correction)


def preview_frame(driver: np.ndarray, portrait: np.ndarray, result: np.ndarray) -> np.ndarray:
    """driver | portrait | result side by side, at the result's height but at most PREVIEW_HEIGHT."""
    h = min(result.shape[0], PREVIEW_HEIGHT)
    return np.concatenate([fit_height(driver, h), fit_height(portrait, h), fit_height(result, h)], axis=1)


def fit_height(image: np.ndarray, h: int) -> np.ndarray:
    """`image` scaled to height h (as is when it has it)."""
    if image.shape[0] == h:
        return image
    w = max(2, int(round(image.shape[1] * h / image.shape[0])))
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def check_output(path: Path, overwrite: bool) -> None:
    """An output video: writable (video.check_writable) and an .mp4."""
    check_writable(path, overwrite)
    if path.suffix.lower() != ".mp4":
        raise AnimateError(f"output {path.name} must end in .mp4")


def preview_path(output: Path) -> Path:
    return output.with_name(output.stem + ".preview" + output.suffix)


# ----------------------------------------------------------------------------------------------
# Batch mode.


@dataclass
class BatchItem:
    """One person in a batch: a portrait file, or a sub-folder of pictures of the same person."""

    name: str  # unique in the batch: the output is NAME.mp4
    portrait: Path
    refs: list[Path]

    def output(self, out_dir: Path) -> Path:
        return Path(out_dir) / f"{self.name}.mp4"


def batch_items(folder: Path) -> list[BatchItem]:
    """The folder's portraits and sub-folders, named after themselves (see batch_names)."""
    entries = []
    for entry in sorted(Path(folder).iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            pics = sorted(p for p in entry.iterdir() if is_image(p))
            if pics:
                entries.append((entry, pics[0], pics[1:]))
        elif is_image(entry):
            entries.append((entry, entry, []))
    if not entries:
        raise AnimateError(f"no portraits (images or folders of images) found in {folder}")
    names = batch_names([entry for entry, _, _ in entries])
    return [BatchItem(name, portrait, refs) for name, (_, portrait, refs) in zip(names, entries)]


def batch_names(entries: list[Path]) -> list[str]:
    """Output names, unique and stable (they depend only on the folder's names, so a rerun finds what is
    done): a sub-folder gives its name, a picture its stem, or its whole name when another entry has the
    same stem (face/ -> face, face.jpg -> face.jpg, face.png -> face.png). Compared without case, as
    some disks do; a clash left after that (face.jpg beside a folder face.jpg) takes a -2, -3 ..."""
    stem = [e.name if e.is_dir() else e.stem for e in entries]
    clashing = {k for k in (s.casefold() for s in stem) if [x.casefold() for x in stem].count(k) > 1}
    names = [s if e.is_dir() or s.casefold() not in clashing else e.name for e, s in zip(entries, stem)]
    taken: set[str] = set()
    unique = []
    for name in names:
        candidate, k = name, 1
        while candidate.casefold() in taken:
            k += 1
            candidate = f"{name}-{k}"
        taken.add(candidate.casefold())
        unique.append(candidate)
    return unique
