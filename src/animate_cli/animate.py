"""The pipeline: portrait(s) and a driver in, an animated MP4 out.

Stages, in the order a frame meets them:
  portrait -> landmarks -> square crop (the "shots") -> animator.prepare (fine-tuning for neural models)
  driver   -> decode (stream) -> landmarks (tracked + smoothed) -> motion transfer onto the portrait
           -> animator.render (batched) -> paste back into the portrait -> encode (stream) + audio.
The driver is decoded twice (landmarks first, frames again only for --preview) so memory stays flat:
only its landmarks (544 bytes a frame) are kept.
"""
from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch

from .errors import AnimateError
from .face.crop import PasteBack, face_crop_transform, transform_points, warp_to_crop
from .face.landmarks import image_landmarks, make_detector
from .face.track import fill_missing, track_landmarks
from .motion import find_best_frame, transfer_absolute, transfer_relative
from .video import VideoWriter, check_writable, is_image, is_video, probe_video, read_frames, read_image
from .references import references_for
from .warp import DEFAULT_REG

DEFAULT_RESOLUTION = 256
WEIGHTS_ENV = "ANIMATE_WEIGHTS"


def default_weights_dir() -> Path:
    """The bundled default model: $ANIMATE_WEIGHTS, else weights/default beside the source tree."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "weights" / "default"


def resolve_device(device: str) -> torch.device:
    """'auto' means CUDA when present, else CPU; asking for CUDA without one is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AnimateError("--device cuda was asked for but no CUDA GPU is available (use --device cpu)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise AnimateError(f"unknown --device {device!r} (use auto, cpu or cuda)")
    return torch.device(device)


# ----------------------------------------------------------------------------------------------
# Animators: what turns target landmarks (in crop pixels) into face crops.


def to_tensor(images: np.ndarray | Sequence[np.ndarray], device) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float32 (B,3,H,W) in [-1, 1]."""
    arr = np.ascontiguousarray(np.stack(list(images)) if not isinstance(images, np.ndarray) else images)
    t = torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (B,3,H,W) in [-1, 1] -> uint8 (B,H,W,3)."""
    x = ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def normalised_shape(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks with position and scale removed, for comparing poses/expressions of shots."""
    pts = landmarks.reshape(-1, 68, 2)
    centred = pts - pts.mean(axis=1, keepdims=True)
    scale = np.sqrt((centred**2).sum(axis=(1, 2), keepdims=True) / 68.0) + 1e-8
    return (centred / scale).reshape(landmarks.shape)


class Animator:
    """Base: holds the shots (reference crops + their landmarks) and warps them to targets."""

    name = "base"
    selection: tuple = ()  # learned shot-selection weights (references.selection_cost); () = nearest shape
    warp_reg: float = DEFAULT_REG  # the spline's regularisation (warp.tps_grid); a model may set its own

    def __init__(self, resolution: int = DEFAULT_RESOLUTION, device: str | torch.device = "cpu"):
        self.resolution = resolution
        self.device = torch.device(device)
        self.shots: torch.Tensor | None = None
        self.shot_landmarks: np.ndarray | None = None

    def prepare(self, shots: Sequence[np.ndarray], shot_landmarks: Sequence[np.ndarray]) -> None:
        if not shots:
            raise AnimateError("at least one reference picture is needed")
        self.shots = to_tensor(shots, self.device)
        self.shot_landmarks = np.stack([np.asarray(l, np.float32) for l in shot_landmarks])

    def warped_references(self, targets: np.ndarray) -> torch.Tensor:
        """The chosen shots (nearest, or by the model's learned selection), moved by the analytic warp into each
        target pose: (B,3,R,R) in [-1,1]."""
        assert self.shots is not None and self.shot_landmarks is not None, "prepare() first"
        return references_for(self.shots, self.shot_landmarks, np.asarray(targets, np.float32),
                              selection=self.selection, reg=self.warp_reg)

    def render(self, target_landmarks: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class WarpAnimator(Animator):
    """The model-free baseline: the nearest reference, thin-plate-spline warped to the target."""

    name = "warp"

    @torch.no_grad()
    def render(self, target_landmarks: np.ndarray) -> np.ndarray:
        return to_uint8(self.warped_references(target_landmarks))


class StaticAnimator(Animator):
    """Evaluation floor: the first reference, unmoved (what a still photo scores)."""

    name = "static"

    def render(self, target_landmarks: np.ndarray) -> np.ndarray:
        assert self.shots is not None, "prepare() first"
        return to_uint8(self.shots[:1].expand(len(target_landmarks), -1, -1, -1))


class NeuralAnimator(Animator):
    """A meta-learned embedder + generator, fine-tuned on the shots (paper §3.3)."""

    name = "neural"

    def __init__(self, weights: Path, device="cpu", finetune_steps: int | None = None, half: bool = True,
                 seed: int = 0, progress: Callable | None = None, person: Path | None = None):
        from .models.checkpoint import load_checkpoint, load_person

        self.device = torch.device(device)
        self.seed = seed
        self.progress = progress
        self.finetune_steps = finetune_steps
        self.person_model = None
        self.loaded_person = person is not None
        if person is not None:
            self.person_model = load_person(person, device=self.device)
            self.cfg = self.person_model.cfg
        else:
            self.cfg, self.embedder, self.generator, self.discriminator = load_checkpoint(
                weights, device=self.device, with_discriminator=True)
        super().__init__(self.cfg.resolution, self.device)
        self.half = half and self.device.type == "cuda"
        self.name = f"neural ({self.cfg.generator}, {self.cfg.preset})"
        self.selection = self.cfg.selection
        self.warp_reg = self.cfg.warp_reg
        if self.person_model is not None:
            self.shots = self.person_model.shots.to(self.device)
            self.shot_landmarks = self.person_model.shot_landmarks

    def prepare(self, shots, shot_landmarks) -> None:
        if self.loaded_person:
            return  # a saved person already carries its shots and fine-tuned weights
        from .face.draw import landmark_tensor
        from .config import FinetuneConfig
        from .finetune import finetune

        super().prepare(shots, shot_landmarks)
        torch.manual_seed(self.seed)
        y = landmark_tensor(self.shot_landmarks, self.resolution).to(self.device)
        self.person_model = finetune(self.cfg, self.embedder, self.generator, self.discriminator,
                                     self.shots, y, self.shot_landmarks,
                                     FinetuneConfig() if self.finetune_steps is None
                                     else FinetuneConfig(steps=self.finetune_steps),
                                     device=self.device, progress=self.progress)

    @torch.no_grad()
    def render(self, target_landmarks: np.ndarray) -> np.ndarray:
        from .face.draw import landmark_tensor

        assert self.person_model is not None, "prepare() first"
        y = landmark_tensor(np.asarray(target_landmarks, np.float32), self.resolution).to(self.device)
        warped = self.warped_references(target_landmarks) if self.cfg.generator == "warp" else None
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.half else nullcontext()
        with autocast:
            out = self.person_model.render(y, warped=warped)
        return to_uint8(out)

    def save_person(self, path: Path) -> None:
        from .models.checkpoint import save_person

        assert self.person_model is not None, "prepare() first"
        save_person(path, self.person_model)


def make_animator(model: str = "default", device: str = "cpu", finetune_steps: int | None = None,
                  seed: int = 0, progress: Callable | None = None, half: bool = True,
                  person: Path | None = None, resolution: int = DEFAULT_RESOLUTION) -> Animator:
    """'warp' | 'static' | 'default' (the bundled weights) | a weights folder."""
    dev = resolve_device(device) if isinstance(device, str) else device
    if person is not None:
        return NeuralAnimator(Path(), dev, finetune_steps, half, seed, progress, person=Path(person))
    if model == "warp":
        return WarpAnimator(resolution, dev)
    if model == "static":
        return StaticAnimator(resolution, dev)
    weights = default_weights_dir() if model == "default" else Path(model)
    if model == "default" and not (weights / "config.json").exists():
        raise AnimateError(
            f"the default weights are missing ({weights}): restore them with `git checkout weights/`, "
            "train your own with `animate-train` (see README), or use --model warp")
    return NeuralAnimator(weights, dev, finetune_steps, half, seed, progress)


# ----------------------------------------------------------------------------------------------
# References (shots): the portrait plus any --ref images or videos of the same person.


@dataclass
class Shot:
    """One reference picture of the person: its square face crop and landmarks in crop pixels."""

    crop: np.ndarray
    landmarks: np.ndarray
    source: str


def crop_shot(image: np.ndarray, landmarks: np.ndarray, resolution: int, source: str) -> tuple[Shot, np.ndarray]:
    M = face_crop_transform(landmarks, resolution)
    return Shot(warp_to_crop(image, M, resolution), transform_points(landmarks, M).astype(np.float32), source), M


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


def video_reference_frames(path: Path, detector, n: int, face_index: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, landmarks) pairs from a reference video: n frames spread across it, varied poses."""
    lms = fill_missing(list(track_landmarks(read_frames(path), detector, face_index=face_index)), path.name)
    wanted = set(spread_pose_frames(lms, n))
    return [(f, lms[i]) for i, f in enumerate(read_frames(path)) if i in wanted]


def load_shots(portrait: np.ndarray, portrait_landmarks: np.ndarray, refs: Sequence[Path], shots: int | None,
               detector, face_index: int, resolution: int, warn=None) -> list[Shot]:
    """The portrait first, then reference images, then frames from reference videos, up to `shots`."""
    result = [crop_shot(portrait, portrait_landmarks, resolution, "portrait")[0]]
    images = [r for r in refs if not is_video(r)]
    videos = [r for r in refs if is_video(r)]
    for ref in images:
        img = read_image(ref)
        result.append(crop_shot(img, image_landmarks(detector, img, face_index, warn=warn, name=ref.name),
                                resolution, ref.name)[0])
    if shots is not None and shots < 1:
        raise AnimateError(f"--shots must be at least 1 (got {shots})")
    if videos:
        room = (shots if shots is not None else 8) - len(result)
        per_video = max(0, room) // len(videos) if room > 0 else 0
        extra = max(0, room) - per_video * len(videos)
        for k, ref in enumerate(videos):
            want = per_video + (1 if k < extra else 0)
            if want:
                for frame, lm in video_reference_frames(ref, detector, want, face_index):
                    result.append(crop_shot(frame, lm, resolution, ref.name)[0])
    if shots is not None:
        if shots > len(result):
            raise AnimateError(f"--shots {shots} is more than the {len(result)} reference picture(s) available "
                               "(add --ref images or a --ref video)")
        result = result[:shots]
    return result


# ----------------------------------------------------------------------------------------------
# The job.


@dataclass
class AnimateOptions:
    model: str = "default"
    landmarks: str = "auto"
    face_index: int = 0
    refs: list[Path] = field(default_factory=list)
    shots: int | None = None
    absolute: bool = False
    find_best_frame: bool = False
    crop_only: bool = False
    preview: bool = False
    audio: bool = True
    overwrite: bool = False
    device: str = "auto"
    half: bool = True
    finetune_steps: int | None = None
    batch_size: int = 8
    seed: int = 0
    person: Path | None = None
    save_person: Path | None = None
    resolution: int = DEFAULT_RESOLUTION


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


def preview_frame(driver: np.ndarray, portrait: np.ndarray, result: np.ndarray) -> np.ndarray:
    """driver | portrait | result side by side, all at the result's height."""
    h = result.shape[0]

    def fit(img):
        w = max(2, int(round(img.shape[1] * h / img.shape[0])))
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)

    return np.concatenate([fit(driver), fit(portrait), result], axis=1)


class Progress:
    """Thin hooks the CLI fills with rich progress bars; silent by default."""

    def start(self, stage: str, total: int | None) -> None: ...
    def advance(self, stage: str, n: int = 1, **info) -> None: ...
    def finish(self, stage: str) -> None: ...
    def note(self, message: str) -> None: ...


def animate(portrait_path: Path, driver_path: Path, output: Path, opts: AnimateOptions,
            progress: Progress | None = None, detector=None, animator: Animator | None = None) -> Report:
    """Animate one portrait (and its references) with one driver into `output`."""
    progress = progress or Progress()
    watch = Stopwatch()
    t = time.perf_counter()
    portrait_path, driver_path, output = Path(portrait_path), Path(driver_path), Path(output)
    if not is_video(driver_path) and driver_path.exists() and is_image(driver_path):
        raise AnimateError(f"{driver_path.name} is an image, the driver must be a video")
    info = probe_video(driver_path)
    portrait = read_image(portrait_path)
    # Refuse a doomed output before any slow work.
    outputs = [output] + ([preview_path(output)] if opts.preview else [])
    for out in outputs:
        check_output(out, opts.overwrite)
    if opts.save_person is not None:
        check_writable(Path(opts.save_person), opts.overwrite)
    detector = detector or make_detector(opts.landmarks, device=str(resolve_device(opts.device)))
    progress.note(f"landmarks: {detector.name}")
    portrait_lms = image_landmarks(detector, portrait, opts.face_index, warn=progress.note, name=portrait_path.name)
    if animator is None:
        animator = make_animator(opts.model, opts.device, opts.finetune_steps, opts.seed,
                                 progress=lambda step, total, losses: progress.advance("fine-tuning", 1, **losses),
                                 half=opts.half, person=opts.person, resolution=opts.resolution)
    if opts.save_person is not None and not isinstance(animator, NeuralAnimator):
        raise AnimateError("--save-person needs a neural model (not --model warp)")
    shots = load_shots(portrait, portrait_lms, opts.refs, opts.shots, detector, opts.face_index,
                       animator.resolution, warn=progress.note)
    t = watch.add("portrait", t)
    progress.note(f"model: {animator.name}, {len(shots)} shot(s)")
    if isinstance(animator, NeuralAnimator) and opts.person is None:
        from .config import FinetuneConfig

        steps = FinetuneConfig().steps if opts.finetune_steps is None else opts.finetune_steps
        if steps:
            progress.start("fine-tuning", steps)
    animator.prepare([s.crop for s in shots], [s.landmarks for s in shots])
    progress.finish("fine-tuning")
    if opts.save_person is not None:
        animator.save_person(opts.save_person)
    t = watch.add("prepare", t)

    # Pass 1: driver landmarks (tracked, smoothed, gaps held).
    progress.start("driver landmarks", info.n_frames)
    raw = []
    for lm in track_landmarks(timed(read_frames(driver_path), watch, "decode"), detector, face_index=opts.face_index):
        raw.append(lm)
        progress.advance("driver landmarks")
    progress.finish("driver landmarks")
    driver_lms = fill_missing(raw, driver_path.name)
    # everything in pass 1 that was not decoding was landmark detection, tracking and smoothing
    t = watch.add("landmarks", t)
    watch.seconds["landmarks"] -= watch.seconds.get("decode", 0.0)

    # Motion transfer onto the portrait, then into the crop the shots came from.
    ref = find_best_frame(portrait_lms, driver_lms) if opts.find_best_frame else 0
    transfer = transfer_absolute if opts.absolute else transfer_relative
    targets_full = transfer(portrait_lms, driver_lms, ref_index=ref)
    M = face_crop_transform(portrait_lms, animator.resolution)
    targets = transform_points(targets_full.reshape(-1, 2), M).reshape(-1, 68, 2).astype(np.float32)
    t = watch.add("motion", t)

    # Pass 2: render in batches, paste back, encode (the driver is re-read only for --preview).
    audio = driver_path if (opts.audio and info.has_audio) else None
    n = len(targets)
    progress.start("rendering", n)
    drivers = read_frames(driver_path) if opts.preview else None
    paste = PasteBack(portrait, M, animator.resolution)
    writer_ctx = VideoWriter(output, info.fps, audio_from=audio, overwrite=opts.overwrite)
    preview_ctx = (VideoWriter(preview_path(output), info.fps, audio_from=audio, overwrite=opts.overwrite)
                   if opts.preview else nullcontext())
    with writer_ctx as writer, preview_ctx as pwriter:
        for start in range(0, n, opts.batch_size):
            batch = targets[start:start + opts.batch_size]
            t = time.perf_counter()
            crops = animator.render(batch)
            t = watch.add("render", t)
            for crop in crops:
                frame = crop if opts.crop_only else paste(crop)
                t = watch.add("paste", t)
                writer.write(frame)
                if pwriter is not None:
                    drv = next(drivers, None)
                    pwriter.write(preview_frame(drv if drv is not None else np.zeros_like(frame), portrait, frame))
                t = watch.add("encode", t)
            progress.advance("rendering", len(crops))
        t = time.perf_counter()
    watch.add("encode", t)
    progress.finish("rendering")
    total = sum(watch.seconds.values())
    return Report(output=output, frames=n, fps=n / max(total, 1e-9), seconds=watch.seconds,
                  detector=detector.name, model=animator.name, shots=len(shots))


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

    name: str
    portrait: Path
    refs: list[Path]


def batch_items(folder: Path) -> list[BatchItem]:
    items = []
    for entry in sorted(Path(folder).iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            pics = sorted(p for p in entry.iterdir() if is_image(p))
            if pics:
                items.append(BatchItem(entry.name, pics[0], pics[1:]))
        elif is_image(entry):
            items.append(BatchItem(entry.stem, entry, []))
    if not items:
        raise AnimateError(f"no portraits (images or folders of images) found in {folder}")
    return items
