"""The paper's evaluation protocol on a folder of clips, for any animator (`warp`, `default`, trained weights).

Self-reenactment: K shots from the start of each clip (K = 1 and 8), `targets` later frames as
targets, each driven by its own landmarks; metrics against the real frame: SSIM, PSNR, LPIPS, CSIM
(identity), landmark error (re-detected on the output vs the driving landmarks), FID, and the mouth
metric: LPIPS on a crop of the mouth, over the target frames whose mouth is open (face.regions.mouth_open:
inner-lip gap > 0.12 of the outer-eye-corner distance), where a warp of a closed mouth cannot show what
the frame shows. A metric defined on some frames only is NaN on the others: its mean skips them and the
report counts the frames it covers (`<metric>_frames`). With `mouth_targets` N, the setting "open K=k" measures
the mouth metric on up to N open-mouth frames per clip, later than every shot: a talking clip opens its mouth
on about one frame in eight, so 32 spread targets give 21 open mouths on the five val clips, too few to tell
a 4% change from noise. With `eye_targets` N, the setting "reopen K=1" gives each clip's most shut-eyed frame (a
blink) as the one shot and measures the eye metric (LPIPS on a crop of each eye) on up to N frames whose eyes are
open: what a portrait with shut eyes shows when the driver opens them (the lids' skin stretched, or painted eyes).
Cross-identity: clip i's first frame driven by clip i+1 (relative motion transfer); metrics: CSIM to
the portrait (does the person stay the same?) and landmark error to the transferred landmarks.
Follow (follow.py): the cross-identity pairs and every still image in the folder driven by every clip, through
the real pipeline, measured by another detector: eye, gaze and mouth correlations, jitter and head shake.
The report keeps every frame's values, labelled by clip, so two reports can be paired (compare.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from ..animators import make_animator
from ..errors import AnimateError
from ..face.crop import CropSmoother, face_crop_transform, transform_points, warp_to_crop
from ..animate import AnimateOptions
from ..face.landmarks import make_detector, mesh_available
from ..face.regions import eye_gaps, eye_lpips, mouth_lpips, mouth_open
from ..face.track import fill_missing, track_landmarks
from ..motion import transfer_relative
from ..video import is_video, read_frames
from .follow import FOLLOW_FRAMES, find_stills, follow_pairs, run_follow
from .metrics import FaceIdentity, Inception, frechet_distance, landmark_error, lpips, psnr, ssim

FID_MIN_FRAMES = 64  # below this many frames per side the FID estimate is noise: reported as null
# defined on some frames only (open-mouth targets): the report always counts them. paint_share / paint_size:
# what a mouth painter did there (models.painter.paint_usage), for models that have one; likewise the eye painter
PARTIAL_METRICS = ("mouth_lpips", "paint_share", "paint_size", "eye_paint_share", "eye_paint_size", "eyes",
                   "eyes_seen", "gaze_h", "gaze_v")
# "reopen K=1": a clip's shot is its most shut-eyed frame when its eyes are open less than SHUT_EYES × the clip's
# median (a blink); the targets have both eyes at least as open as the median, BLINK_APART frames from the shot
SHUT_EYES = 0.5
BLINK_APART = 10


@dataclass
class EvaluateOptions:
    """What `animate-evaluate` measures, with its defaults."""
    models: tuple = ("warp", "default")  # 'warp', 'default' (the bundled weights) or weights folders
    shots: tuple = (1, 8)  # K of the self-reenactment settings
    targets: int = 32  # target frames per clip
    mouth_targets: int = 0  # open-mouth targets per clip for the "open K=k" settings (0: none)
    eye_targets: int = 0  # open-eyed targets per clip for the "reopen K=1" setting, a blink as the shot (0: none)
    finetune_steps: int | None = None  # None: each model's own default
    out: str | None = "eval.json"  # the JSON report (None: not written)
    device: str = "cpu"
    self_reenactment: bool = True  # the K-shot settings (off: only cross-identity and follow)
    cross: bool = True  # also the cross-identity setting (needs 2 clips or more)
    max_clips: int | None = None
    max_frames: int | None = None  # read at most this many frames per clip
    detector: str = "dlib"  # landmark backend for cropping and re-detection, and the one that drives
    follow: bool | None = None  # the follow setting; None: when the measurer is installed
    follow_frames: int = FOLLOW_FRAMES  # driver frames per follow pair
    measure_with: str = "mesh"  # the follow setting's measurer: another detector than `detector`
    fid: bool = True
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.models:
            raise AnimateError("no model to evaluate")
        if not self.shots or min(self.shots) < 1:
            raise AnimateError(f"--shots must be 1 or more (got {', '.join(map(str, self.shots))})")
        if self.mouth_targets < 0:
            raise AnimateError(f"--mouth-targets must be 0 or more (got {self.mouth_targets})")
        if self.eye_targets < 0:
            raise AnimateError(f"--eye-targets must be 0 or more (got {self.eye_targets})")
        for flag, value in (("--targets", self.targets), ("--max-clips", self.max_clips),
                            ("--max-frames", self.max_frames), ("--follow-frames", self.follow_frames)):
            if value is not None and value < 1:
                raise AnimateError(f"{flag} must be 1 or more (got {value})")
        if self.finetune_steps is not None and self.finetune_steps < 0:
            raise AnimateError(f"--finetune-steps must be 0 or more (got {self.finetune_steps})")
        if self.follow_frames < 3:
            raise AnimateError(f"--follow-frames must be 3 or more (got {self.follow_frames})")
        if self.follow is not False and self.measure_with == self.detector:
            raise AnimateError(f"--measure-with {self.measure_with} is the detector that drives: measuring with "
                               "it flatters the follow scores (choose another, or --no-follow)")

    def measurer(self):
        """The follow setting's detector, or None when the setting is off (not asked, or its measurer is not
        installed and it was not asked for explicitly: then a one-line error)."""
        if self.follow is False or (self.follow is None and self.measure_with == "mesh" and not mesh_available()):
            return None
        return make_detector(self.measure_with, device=self.device)


# ----------------------------------------------------------------------------------------------
# Clips: stable face crops at the model resolution, as the animate pipeline would make them.


@dataclass
class EvalClip:
    name: str
    shots: np.ndarray  # (S,R,R,3) uint8, from the start of the clip, first = frame 0
    shot_landmarks: np.ndarray  # (S,68,2) crop px
    targets: np.ndarray  # (T,R,R,3)
    target_landmarks: np.ndarray  # (T,68,2)
    open_targets: np.ndarray | None = None  # (M,R,R,3): open-mouth frames later than every shot (mouth_targets)
    open_target_landmarks: np.ndarray | None = None  # (M,68,2)
    shut_shot: np.ndarray | None = None  # (1,R,R,3): the clip's most shut-eyed frame (eye_targets), if a blink
    shut_shot_landmarks: np.ndarray | None = None  # (1,68,2)
    open_eye_targets: np.ndarray | None = None  # (E,R,R,3): frames with open eyes, away from that blink
    open_eye_target_landmarks: np.ndarray | None = None  # (E,68,2)


def frame_plan(n_frames: int, n_shots: int, n_targets: int) -> tuple[np.ndarray, np.ndarray]:
    """Shots spread over the first quarter of the clip (at least n_shots frames), targets spread over
    the rest: the targets are always later than every shot."""
    span = min(max(n_shots, n_frames // 4), n_frames - 1)
    shots = np.unique(np.round(np.linspace(0, span - 1, n_shots)).astype(int))
    rest = n_frames - span
    targets = span + np.unique(np.round(np.linspace(0, rest - 1, min(n_targets, rest))).astype(int))
    return shots, targets


def open_mouth_plan(open_mouth: np.ndarray, after: int, n: int) -> np.ndarray:
    """Up to n frames later than `after` whose mouth is open (open_mouth: one bool per frame), spread evenly
    over them."""
    candidates = np.flatnonzero(open_mouth[after + 1:]) + after + 1
    if n <= 0 or len(candidates) == 0:
        return np.zeros(0, int)
    return candidates[np.unique(np.round(np.linspace(0, len(candidates) - 1, min(n, len(candidates)))).astype(int))]


def eye_reopen_plan(gaps: np.ndarray, n: int) -> tuple[int | None, np.ndarray]:
    """(the shot, the targets) of the reopen setting from each frame's eye gaps (N,2): the most shut-eyed frame
    if its eyes are open less than SHUT_EYES × the clip's median (else None: no blink, no setting), and up to n
    frames with both eyes at least as open as the median, BLINK_APART frames or more from it, spread evenly."""
    openness = np.asarray(gaps, np.float64).mean(-1)
    median = float(np.median(openness))
    shot = int(np.argmin(openness))
    if n <= 0 or not openness[shot] < SHUT_EYES * median:
        return None, np.zeros(0, int)
    frames = np.arange(len(openness))
    candidates = frames[(np.asarray(gaps).min(-1) >= median) & (np.abs(frames - shot) >= BLINK_APART)]
    if len(candidates) == 0:
        return None, np.zeros(0, int)
    return shot, candidates[np.unique(np.round(np.linspace(0, len(candidates) - 1, min(n, len(candidates)))).astype(int))]


def load_eval_clip(path: Path, resolution: int, detector, n_shots: int, n_targets: int,
                   max_frames: int | None = None, n_open: int = 0, n_eyes: int = 0) -> EvalClip:
    """Track landmarks over the clip (pass 1), then crop only the frames the protocol uses (pass 2); with n_open,
    also up to that many open-mouth frames later than every shot (open_mouth_plan); with n_eyes, a blink and up
    to that many open-eyed frames (eye_reopen_plan)."""
    seq = list(track_landmarks(read_frames(path, max_frames=max_frames), detector, smooth=False))
    if len(seq) < n_shots + 1:
        raise AnimateError(f"only {len(seq)} frames")
    lms = fill_missing(seq, path.name)
    smoother = CropSmoother(resolution)
    transforms = [smoother(face_crop_transform(l, resolution)) for l in lms]
    shot_idx, target_idx = frame_plan(len(lms), n_shots, n_targets)
    open_idx = open_mouth_plan(mouth_open(lms), int(shot_idx.max()), n_open)
    shut, eye_idx = eye_reopen_plan(eye_gaps(np.asarray(lms)), n_eyes)
    shut_idx = np.array([] if shut is None else [shut], int)
    wanted = {int(i) for i in np.concatenate([shot_idx, target_idx, open_idx, shut_idx, eye_idx])}
    crops = {}
    for i, frame in enumerate(read_frames(path, max_frames=max_frames)):
        if i in wanted:
            crops[i] = warp_to_crop(frame, transforms[i], resolution)
    def pts(idx):
        return np.array([transform_points(lms[i], transforms[i]) for i in idx], np.float32).reshape(-1, 68, 2)

    def images(idx):
        return np.array([crops[i] for i in idx], np.uint8).reshape(-1, resolution, resolution, 3)

    blink = (images(shut_idx), pts(shut_idx), images(eye_idx), pts(eye_idx)) if shut is not None else (None,) * 4
    return EvalClip(path.name, images(shot_idx), pts(shot_idx), images(target_idx), pts(target_idx),
                    images(open_idx), pts(open_idx), *blink)


def find_clips(folder: Path) -> list[Path]:
    """The video files under `folder`, at any depth, in a stable order."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_video(p))


# ----------------------------------------------------------------------------------------------
# The protocol.


@dataclass
class _Scores:
    """Per-frame values of one (model, setting) and the clip of each frame; real/fake frames kept for FID."""
    values: dict = field(default_factory=dict)
    clips: list = field(default_factory=list)
    real: list = field(default_factory=list)
    fake: list = field(default_factory=list)

    def add(self, clip: str, **kw):
        per_frame = {k: np.atleast_1d(np.asarray(v, np.float64)).tolist() for k, v in kw.items()}
        (n,) = {len(v) for v in per_frame.values()}  # every metric: one value per frame
        for k, v in per_frame.items():
            self.values.setdefault(k, []).extend(v)
        self.clips.extend([clip] * n)


def _redetect(detector, images: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of the faces in the outputs: detected (the box nearest the wanted face), else fitted in
    the box the wanted landmarks imply. Returns (landmarks (B,68,2), detected (B,) bool)."""
    out, found = [], []
    for img, w in zip(images, wanted):
        boxes = detector.detect(img, work_size=max(img.shape[:2]) + 64)
        centre = w.mean(0)
        if boxes:
            box = min(boxes, key=lambda b: np.linalg.norm((b[:2] + b[2:]) / 2 - centre))
            found.append(True)
        else:
            box = detector.box_from_landmarks(w)
            found.append(False)
        out.append(detector.landmarks(img, box))
    return np.stack(out), np.array(found)


def _render(animator, landmarks: np.ndarray, batch: int = 8) -> np.ndarray:
    return np.concatenate([animator.render(landmarks[i:i + batch]) for i in range(0, len(landmarks), batch)])


def _render_painting(animator, landmarks: np.ndarray, batch: int = 8) -> tuple[np.ndarray, dict]:
    """_render, and for an animator with a mouth painter what it painted on each open-mouth target
    (paint_share, paint_size; NaN on the other frames); {} for the others."""
    if not getattr(animator, "paints", False):
        return _render(animator, landmarks, batch), {}
    frames, usage = [], {}
    for i in range(0, len(landmarks), batch):
        out, used = animator.render_with_paint_usage(landmarks[i:i + batch])
        frames.append(out)
        for key, values in used.items():
            usage.setdefault(key, []).append(values)
    is_open = mouth_open(landmarks)  # the eye painter's usage is NaN by itself where the eyes are shut
    return np.concatenate(frames), {k: np.concatenate(v) if k.startswith("eye_") else
                                    np.where(is_open, np.concatenate(v), np.nan) for k, v in usage.items()}


class _Lazy:
    """Build the (large) Inception only when some setting has enough frames for FID."""

    def __init__(self, make):
        self.make, self.obj = make, None

    def features(self, images):
        self.obj = self.obj or self.make()
        return self.obj.features(images)


def open_mouth_lpips(pred: np.ndarray, targets: np.ndarray, target_landmarks: np.ndarray, device="cpu") -> np.ndarray:
    """The mouth metric per frame: LPIPS on the mouth crop (face.regions.mouth_lpips) where the target's mouth
    is open, NaN where it is not (those frames do not count)."""
    values = np.full(len(targets), np.nan)
    is_open = mouth_open(target_landmarks)
    if is_open.any():
        values[is_open] = mouth_lpips(pred[is_open], targets[is_open], target_landmarks[is_open],
                                      lambda a, b: lpips(a, b, device))
    return values


def _summary(s: _Scores, inception) -> dict:
    """Means over the frames, to 6 decimals: models that differ in the fourth (fine-tuned vs feed-forward) stay
    comparable in the JSON; the table shows fewer. A metric that is NaN on some frames (not defined there, as
    the mouth metric on closed mouths) is averaged over the others, counted in `<metric>_frames`, and null in
    the per-frame lists (JSON has no NaN); with no frame at all its mean is null."""
    out = {}
    for k, v in s.values.items():
        v = np.asarray(v, np.float64)
        defined = np.isfinite(v)
        out[k] = round(float(v[defined].mean()), 6) if defined.any() else None
        if k in PARTIAL_METRICS or not defined.all():
            out[f"{k}_frames"] = int(defined.sum())
    out["frames"] = len(s.clips)
    # Per-frame values (same clips and targets -> same order in every report): what `--compare` pairs up.
    out["per_frame"] = {"clip": list(s.clips), **{k: [round(x, 6) if np.isfinite(x) else None for x in v]
                                                  for k, v in s.values.items()}}
    if s.real and inception is not None:
        real, fake = np.concatenate(s.real), np.concatenate(s.fake)
        enough = min(len(real), len(fake)) >= FID_MIN_FRAMES
        out["fid"] = round(frechet_distance(inception.features(real), inception.features(fake)), 2) if enough else None
    return out


def _means(summary: dict) -> dict:
    """A setting's summary without its per-frame lists: for the progress lines."""
    return {k: v for k, v in summary.items() if k != "per_frame"}


def evaluate(clips_dir, opts: EvaluateOptions | None = None, **kwargs) -> dict:
    """Run the protocol for each model (options: `opts`, changed by `kwargs`); returns (and writes to
    `opts.out`) the metrics as a dict:
    {"models": {model: {"self": {"K=1": {...}, "K=8": {...}}, "cross": {...}}}, "clips": [...], ...}."""
    opts = dataclasses.replace(opts or EvaluateOptions(), **kwargs)
    n_targets, finetune_steps, device, seed = opts.targets, opts.finetune_steps, opts.device, opts.seed
    max_frames = opts.max_frames
    if not Path(clips_dir).is_dir():
        raise AnimateError(f"clip folder not found: {clips_dir}")
    paths = find_clips(Path(clips_dir))[:opts.max_clips]
    if not paths:
        raise AnimateError(f"no video clips in {clips_dir}")
    shots = sorted(set(int(k) for k in opts.shots))
    det = make_detector(opts.detector)
    ident = FaceIdentity()
    inception = _Lazy(lambda: Inception(device)) if opts.fid else None
    say = _printer(opts.progress)
    clip_cache: dict[int, tuple[list[EvalClip], dict]] = {}
    measurer = opts.measurer()
    if measurer is None and opts.follow is None:
        say("follow setting skipped: its measurer (mediapipe's mesh) is not installed")
    # the follow pairs' cut drivers, first frames and (one at a time) results
    work = tempfile.TemporaryDirectory(prefix="animate-follow-")
    driver_measured: dict = {}  # each driver's measured landmarks, once for every model

    def clips_at(resolution: int):
        if resolution not in clip_cache:
            ok, skipped = [], {}
            for p in paths:
                try:
                    ok.append(load_eval_clip(p, resolution, det, max(shots), n_targets, max_frames, opts.mouth_targets,
                                             opts.eye_targets))
                except AnimateError as e:
                    skipped[p.name] = str(e)
            clip_cache[resolution] = (ok, skipped)
            say(f"{len(ok)} clips cropped at {resolution}px" + (f", skipped: {skipped}" if skipped else ""))
        return clip_cache[resolution]

    def prepared(model, shots_, landmarks_):
        """A fresh animator per person: a neural one keeps its first person's fine-tuned model."""
        a = make_animator(model, device=device, finetune_steps=finetune_steps, seed=seed)
        a.prepare(list(shots_), list(landmarks_))
        return a

    try:
        follow_at = follow_pairs(paths, find_stills(Path(clips_dir)), Path(work.name), opts.follow_frames) \
            if measurer is not None else []
        results = {}
        for model in opts.models:
            first = make_animator(model, device=device, finetune_steps=finetune_steps, seed=seed)
            resolution = first.resolution
            clips, skipped = clips_at(resolution)
            per = {}
            for k in shots if opts.self_reenactment else ():
                s, s_open = _Scores(), _Scores()
                for c in clips:
                    animator = prepared(model, c.shots[:k], c.shot_landmarks[:k])
                    out, paint = _render_painting(animator, c.target_landmarks)
                    got, found = _redetect(det, out, c.target_landmarks)
                    ids = np.array([ident.compare(o, g, t, tl) for o, g, t, tl in
                                    zip(out, got, c.targets, c.target_landmarks)])
                    s.add(c.name, ssim=ssim(out, c.targets), psnr=psnr(out, c.targets),
                          lpips=lpips(out, c.targets, device),
                          mouth_lpips=open_mouth_lpips(out, c.targets, c.target_landmarks, device),
                          csim=ids[:, 0], id_dist=ids[:, 1], landmark_error=landmark_error(got, c.target_landmarks),
                          face_detected=found, **paint)
                    s.real.append(c.targets)
                    s.fake.append(out)
                    if opts.mouth_targets and c.open_targets is not None and len(c.open_targets):  # prepared once
                        out, paint = _render_painting(animator, c.open_target_landmarks)
                        s_open.add(c.name, mouth_lpips=open_mouth_lpips(out, c.open_targets, c.open_target_landmarks,
                                                                        device), **paint)
                per[f"K={k}"] = _summary(s, inception)
                say(f"{model} self-reenactment K={k}: {_means(per[f'K={k}'])}")
                if opts.mouth_targets:
                    per[f"open K={k}"] = _summary(s_open, None)
                    say(f"{model} open mouths K={k}: {_means(per[f'open K={k}'])}")
            if opts.eye_targets and opts.self_reenactment:
                s = _Scores()
                for c in clips:
                    if c.shut_shot is None:
                        continue
                    animator = prepared(model, c.shut_shot, c.shut_shot_landmarks)
                    out, paint = _render_painting(animator, c.open_eye_target_landmarks)
                    s.add(c.name, eye_lpips=eye_lpips(out, c.open_eye_targets, c.open_eye_target_landmarks,
                                                      lambda a, b: lpips(a, b, device)),
                          **{k: v for k, v in paint.items() if k.startswith("eye_")})
                per["reopen K=1"] = _summary(s, None)
                say(f"{model} eyes reopened K=1: {_means(per['reopen K=1'])}")
            # the steps it fine-tuned (the report's `finetune_steps` is what was asked: None = each device's default)
            entry = {"self": per, "resolution": resolution, "skipped_clips": skipped,
                     "finetune_steps": first.finetune_steps}
            if opts.cross and len(clips) >= 2:
                s = _Scores()
                for i, c in enumerate(clips):
                    d = clips[(i + 1) % len(clips)]
                    drive = np.concatenate([d.shot_landmarks[:1], d.target_landmarks])
                    wanted = transfer_relative(c.shot_landmarks[0], drive, ref_index=0)[1:].astype(np.float32)
                    out = _render(prepared(model, c.shots[:1], c.shot_landmarks[:1]), wanted)
                    got, found = _redetect(det, out, wanted)
                    ids = np.array([ident.compare(o, g, c.shots[0], c.shot_landmarks[0]) for o, g in zip(out, got)])
                    s.add(c.name, csim=ids[:, 0], id_dist=ids[:, 1], landmark_error=landmark_error(got, wanted),
                          face_detected=found)
                entry["cross"] = _summary(s, None)
                say(f"{model} cross-identity: {_means(entry['cross'])}")
            if measurer is not None:
                entry["follow"] = follow_setting(model, follow_at, opts, measurer, say, driver_measured,
                                                 Path(work.name))
            results[model] = entry
    finally:
        work.cleanup()
    report = {"clips_dir": str(clips_dir), "clips": [p.name for p in paths], "shots": shots, "n_targets": n_targets,
              "finetune_steps": finetune_steps, "device": str(device), "models": results}
    if opts.out is not None:
        out_json = Path(opts.out)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_json.with_name(out_json.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, out_json)
    return report


def follow_setting(model: str, pairs, opts: EvaluateOptions, measurer, say, driver_measured: dict,
                   work: Path) -> dict:
    """The follow setting's summary: means over the pairs (the eye correlation over the pairs whose driver
    closes an eye, counted in eyes_frames), the worst ratios, and per-pair values in per_frame (one "frame" per
    pair, labelled by pair) so --compare pairs them like frames."""
    run = AnimateOptions(model=model, landmarks=opts.detector, audio=False, overwrite=True, device=opts.device,
                         finetune_steps=opts.finetune_steps, seed=opts.seed)
    names, values, skipped = run_follow(model, pairs, run, measurer, work, say, driver_measured)
    s = _Scores()
    for i, name in enumerate(names):
        s.add(name, **{k: v[i] for k, v in values.items()})
    out = _summary(s, None) if names else {"frames": 0}
    for k in ("jitter_ratio", "shake_ratio"):
        out[f"{k}_max"] = round(float(np.nanmax(values[k])), 6) if names else None
    out.update(pairs=len(names), skipped_pairs=skipped, measured_with=measurer.name, driven_by=opts.detector,
               follow_frames=opts.follow_frames)
    say(f"{model} follow: {_means(out)}")
    return out


def _printer(enabled: bool):
    """Progress lines on stderr, or nothing."""
    if not enabled:
        return lambda msg: None
    console = Console(stderr=True)
    return lambda msg: console.print(msg, highlight=False)
