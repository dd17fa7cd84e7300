"""Animators: what turns target landmarks (in crop pixels) into face crops, or into the motion behind them.

An animator owns its loaded networks, its device and precision, and the tensors going in and out;
the pipeline (animate.py) only asks it what it needs through the Animator interface: its resolution,
how many fine-tuning steps prepare() will run (for the progress bar), and whether it can save a person.
Two ways to render: render() gives the frames as crops at model resolution (the evaluation protocol's
unit); render_motion() gives what the compositor needs to draw them at the portrait's own resolution
(composite.py): which shot each frame moves, the sampling grid that moves it, and what a network paints on top.
"""
from __future__ import annotations

import difflib
import os
from contextlib import nullcontext
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from .errors import AnimateError
from .face.draw import landmark_tensor
from .config import FinetuneConfig
from .finetune import finetune
from .models.checkpoint import load_checkpoint, load_person, save_person
from .models.painter import eye_paint_usage, paint_usage
from .references import HeldChoice, ReferenceMotion, reference_motion
from .shots import portrait_fingerprint, same_portrait
from .warp import DEFAULT_REG, LocalField

DEFAULT_MODEL = "default"  # the name of the bundled weights, as --model takes it
DEFAULT_DEVICE = "auto"
DEFAULT_RESOLUTION = 256  # the crop size of model-free animators (a neural one has its own)
WEIGHTS_ENV = "ANIMATE_WEIGHTS"
MODEL_NAMES = (DEFAULT_MODEL, "warp")  # what --model takes besides a weights folder
MAX_DEFAULT_THREADS = 4

# on_step(step, total, losses) after each fine-tuning step
StepHook = Callable[[int, int, dict], None]


def default_weights_dir() -> Path:
    """The bundled default model: $ANIMATE_WEIGHTS, else the weights shipped inside the package."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env)
    return Path(str(resources.files(__package__) / "weights" / DEFAULT_MODEL))


def resolve_device(device: str | torch.device = DEFAULT_DEVICE) -> torch.device:
    """'auto' means CUDA when present, else CPU; asking for CUDA without one is a user error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AnimateError("--device cuda was asked for but no CUDA GPU is available (use --device cpu)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise AnimateError(f"unknown --device {device!r} (use auto, cpu or cuda)")
    return torch.device(device)


def default_threads() -> int:
    """CPU threads for a run: OMP_NUM_THREADS when the user set it, else the cores free right now (the
    cores this process may use less the load average), at least 1 and at most 4. Measured on a busy 2-core
    machine, a default run with 10 fine-tuning steps took 100 s with torch's default (a thread per core,
    fighting other processes) and 15 s with one thread; on an idle machine more threads do help."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, min(MAX_DEFAULT_THREADS, int(round(cores - busy))))


def set_threads(n: int | None) -> int:
    """Use n CPU threads (None: default_threads()) for torch and OpenCV; -> the count set."""
    n = default_threads() if n is None else int(n)
    if n < 1:
        raise AnimateError(f"--threads must be 1 or more (got {n})")
    torch.set_num_threads(n)
    cv2.setNumThreads(n)
    return n


def unknown_model(model: str) -> AnimateError:
    """`-m wrap`: the names --model knows, the closest first, and what a weights folder holds."""
    close = difflib.get_close_matches(model, MODEL_NAMES, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return AnimateError(f"unknown model {model!r}: {hint}--model takes {DEFAULT_MODEL} (the bundled weights), "
                        f"warp (no network) or a weights folder holding config.json, embedder.safetensors and "
                        "generator.safetensors (from animate-train)")


def to_tensor(images: np.ndarray | Sequence[np.ndarray], device) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float32 (B,3,H,W) in [-1, 1]."""
    arr = np.ascontiguousarray(np.stack(list(images)) if not isinstance(images, np.ndarray) else images)
    t = torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (B,3,H,W) in [-1, 1] -> uint8 (B,H,W,3)."""
    x = ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class Motion:
    """A batch of frames as the compositor (composite.Compositor) draws them, all arrays on the CPU."""

    shots: np.ndarray  # (B,) int: the shot each frame moves
    grids: np.ndarray | None  # (B,R,R,2) float32 grid_sample coordinates in that shot's crop (tps_grid);
    #                           None: the network paints whole crops (an fsth generator), there is no motion
    corrections: np.ndarray | None  # (B,3,R,R) float32, network output − warped shot in [-1,1]; None: warp only
    crops: np.ndarray | None  # (B,R,R,3) uint8, the frames at model resolution where a network painted them


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


class Animator:
    """Base: holds the shots (reference crops + their landmarks) and warps them to targets."""

    name = "base"
    selection: tuple = ()  # learned shot-selection weights (references.selection_cost); () = nearest shape
    warp_reg: float = DEFAULT_REG  # the spline's regularisation (warp.tps_grid); a model may set its own
    can_save_person = False  # whether save_person() has a fine-tuned person to write
    loaded_person = False  # its shots came from a saved person (--person), not from this run's pictures
    paints_eyes = False  # an eye painter paints what a shut portrait's lids hid: the pipeline then opens them

    def __init__(self, resolution: int = DEFAULT_RESOLUTION, device: str | torch.device = DEFAULT_DEVICE):
        self.resolution = resolution
        self.device = resolve_device(device)
        self.shots: torch.Tensor | None = None
        self.shot_landmarks: np.ndarray | None = None
        self.mouth_shots = False  # the mouth from its own shot (references.reference_motion)
        self.held: HeldChoice | None = None  # a video's last shots (start_video); None: frames in any order

    @property
    def finetune_steps(self) -> int:
        """How many fine-tuning steps prepare() will run (0: none)."""
        return 0

    def prepare(self, shots: Sequence[np.ndarray], shot_landmarks: Sequence[np.ndarray],
                on_step: Optional[StepHook] = None) -> None:
        """Take this person's shots; every call starts afresh (a batch prepares one animator per portrait)."""
        if not shots:
            raise AnimateError("at least one reference picture is needed")
        self.shots = to_tensor(shots, self.device)
        self.shot_landmarks = np.stack([np.asarray(l, np.float32) for l in shot_landmarks])
        self.held = None

    def start_video(self) -> None:
        """From now on targets come as a video's consecutive frames, in order: a frame keeps the shots of the
        frame before unless another fits clearly better (references.held_argmin), so that two pictures that fit
        about equally do not alternate. Evaluation, whose targets are not consecutive, never calls this."""
        self.held = HeldChoice()

    def check_portrait(self, crop: np.ndarray, landmarks: np.ndarray, name: str) -> str | None:
        """Refuse a portrait this animator cannot animate (a saved person's is fixed); -> a note or None."""
        return None

    def reference_motion(self, targets: np.ndarray, field: LocalField | None = None) -> ReferenceMotion:
        """The chosen shots (nearest, or by the model's learned selection), moved by the analytic warp into each
        target pose: which shot, its grid, and the warped crops (B,3,R,R) in [-1,1]."""
        assert self.shots is not None and self.shot_landmarks is not None, "prepare() first"
        return reference_motion(self.shots, self.shot_landmarks, np.asarray(targets, np.float32),
                                selection=self.selection, reg=self.warp_reg, field=field,
                                mouth_shots=self.mouth_shots, held=self.held)

    def render(self, target_landmarks: np.ndarray) -> np.ndarray:
        """The frames as uint8 crops (B,R,R,3) at model resolution."""
        raise NotImplementedError

    def render_motion(self, target_landmarks: np.ndarray, field: LocalField | None = None) -> Motion:
        """The frames as the compositor draws them at full resolution (Motion). By default an animator has no
        motion to give: its crops are pasted (as sharp as the crops); the warp and neural ones give their grids.
        `field`: a local motion composed with the warp (gaze.gaze_field: the irises)."""
        crops = self.render(target_landmarks)
        return Motion(np.zeros(len(crops), np.int64), None, None, crops)

    def save_person(self, path: Path, source: str = "") -> None:
        raise AnimateError(f"--save-person needs a neural model (not --model {self.name})")


class WarpAnimator(Animator):
    """The model-free baseline: the nearest reference, thin-plate-spline warped to the target."""

    name = "warp"

    @torch.no_grad()
    def render(self, target_landmarks: np.ndarray) -> np.ndarray:
        return to_uint8(self.reference_motion(target_landmarks).warped)

    @torch.no_grad()
    def render_motion(self, target_landmarks: np.ndarray, field: LocalField | None = None) -> Motion:
        m = self.reference_motion(target_landmarks, field)
        return Motion(m.chosen.cpu().numpy(), _numpy(m.grid), None, None)


class NeuralAnimator(Animator):
    """A meta-learned embedder + generator, fine-tuned on the shots (paper §3.3), or a saved person.

    The loaded networks stay as loaded: fine-tuning trains copies (finetune.finetune), so one animator
    prepares portrait after portrait, each from the same meta-learned weights."""

    name = "neural"
    can_save_person = True

    def __init__(self, weights: Optional[Path], device: str | torch.device = DEFAULT_DEVICE,
                 finetune_steps: int | None = None, half: bool = True, seed: int = 0,
                 person: Path | None = None):
        device = resolve_device(device)
        self.seed = seed
        self.steps = FinetuneConfig().steps_on(device.type) if finetune_steps is None else int(finetune_steps)
        self.person_model = None
        self.loaded_person = person is not None
        self.person_path = person
        if person is not None:
            self.person_model = load_person(person, device=device)
            self.cfg = self.person_model.cfg
        else:
            self.cfg, self.embedder, self.generator, self.discriminator = load_checkpoint(
                weights, device=device, with_discriminator=True)
        super().__init__(self.cfg.resolution, device)
        self.half = half and self.device.type == "cuda"
        self.name = f"neural ({self.cfg.generator}, {self.cfg.preset})"
        self.selection = self.cfg.selection
        self.warp_reg = self.cfg.warp_reg
        self.mouth_shots = self.cfg.mouth_shots
        if self.person_model is not None:
            self.shots = self.person_model.shots.to(self.device)
            self.shot_landmarks = self.person_model.shot_landmarks

    @property
    def finetune_steps(self) -> int:
        return 0 if self.loaded_person else self.steps

    def prepare(self, shots, shot_landmarks, on_step: Optional[StepHook] = None) -> None:
        if self.loaded_person:
            return  # a saved person already carries its shots and fine-tuned weights
        super().prepare(shots, shot_landmarks)
        torch.manual_seed(self.seed)
        y = landmark_tensor(self.shot_landmarks, self.resolution).to(self.device)
        self.person_model = finetune(self.cfg, self.embedder, self.generator, self.discriminator,
                                     self.shots, y, self.shot_landmarks, FinetuneConfig(steps=self.steps),
                                     device=self.device, progress=on_step)
        self.person_model.identity = portrait_fingerprint(np.asarray(shots[0]), self.shot_landmarks[0])

    def check_portrait(self, crop, landmarks, name):
        """A saved person renders its own portrait's face: pasted into another portrait it would show as a
        square of the wrong picture. So PORTRAIT must be the one it was made from (by fingerprint)."""
        if not self.loaded_person:
            return None
        person = self.person_path.name
        saved = self.person_model.identity
        if saved is None:
            return (f"{person} was saved before person files recorded their portrait: make sure {name} is the "
                    "portrait it was made from")
        if not same_portrait(saved, portrait_fingerprint(crop, landmarks)):
            made_from = f" ({self.person_model.source})" if self.person_model.source else ""
            raise AnimateError(f"{person} was made from another portrait{made_from}, not {name}: give that "
                               "portrait, or leave out --person to fine-tune on this one")
        return None

    @property
    def paints(self) -> bool:
        """Whether the model has a painter (render_with_paint_usage then reports what it painted)."""
        return bool(self.cfg.paint_size or self.cfg.eye_paint_size)

    @property
    def paints_eyes(self) -> bool:
        return bool(self.cfg.eye_paint_size)

    def render_with_paint_usage(self, target_landmarks: np.ndarray) -> tuple[np.ndarray, dict]:
        """render's frames and, per frame, what the painters did: the mouth painter on the target's open mouth
        (models.painter.paint_usage: paint_share, paint_size; NaN where the mouth is closed), the eye painter on
        its eye openings (eye_paint_usage: eye_paint_share, eye_paint_size; NaN where both are shut)."""
        if not self.paints:
            raise AnimateError(f"{self.name} has no painter")
        parts: dict = {}
        out, _ = self._generate(target_landmarks, parts=parts)
        usage = {**(paint_usage(parts) if self.cfg.paint_size else {}),
                 **(eye_paint_usage(parts) if self.cfg.eye_paint_size else {})}
        return to_uint8(out), {k: v.float().cpu().numpy() for k, v in usage.items()}

    @torch.no_grad()
    def _generate(self, target_landmarks: np.ndarray, field: LocalField | None = None, parts: dict | None = None
                  ) -> tuple[torch.Tensor, ReferenceMotion | None]:
        """The generator's frames (B,3,R,R) in [-1,1], and the warped references it was given (warp generator).
        Painters also get the targets' landmarks and those of the shots each one warps (the mouth's and the
        face's); `parts`: see WarpGenerator.forward."""
        assert self.person_model is not None, "prepare() first"
        targets = np.asarray(target_landmarks, np.float32)
        y = landmark_tensor(targets, self.resolution).to(self.device)
        motion = self.reference_motion(targets, field) if self.cfg.generator == "warp" else None
        paint = {}
        if motion is not None and (self.cfg.paint_size or self.cfg.eye_paint_size):
            paint = dict(landmarks=torch.from_numpy(targets), parts=parts,
                         ref_landmarks=torch.from_numpy(self.shot_landmarks[motion.mouth_chosen.cpu().numpy()]),
                         eye_ref_landmarks=torch.from_numpy(self.shot_landmarks[motion.chosen.cpu().numpy()]))
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.half else nullcontext()
        with autocast:
            out = self.person_model.render(y, warped=None if motion is None else motion.reference, **paint)
        return out, motion

    def render(self, target_landmarks: np.ndarray) -> np.ndarray:
        return to_uint8(self._generate(target_landmarks)[0])

    def render_motion(self, target_landmarks: np.ndarray, field: LocalField | None = None) -> Motion:
        if self.cfg.generator != "warp":  # the fsth generator paints the whole face: no motion to give
            return super().render_motion(target_landmarks)
        out, motion = self._generate(target_landmarks, field)
        crops = to_uint8(out)
        correction = out.float().clamp(-1, 1) - motion.warped.float()
        return Motion(motion.chosen.cpu().numpy(), _numpy(motion.grid), _numpy(correction), crops)

    def save_person(self, path: Path, source: str = "") -> None:
        assert self.person_model is not None, "prepare() first"
        save_person(path, self.person_model, source=source)


def make_animator(model: str = DEFAULT_MODEL, device: str | torch.device = DEFAULT_DEVICE,
                  finetune_steps: int | None = None, seed: int = 0, half: bool = True,
                  person: Path | None = None, resolution: int = DEFAULT_RESOLUTION) -> Animator:
    """'warp' | 'default' (the bundled weights) | a weights folder; or a saved person (then `model` is unused)."""
    dev = resolve_device(device)
    if person is not None:
        return NeuralAnimator(None, dev, finetune_steps, half, seed, person=Path(person))
    if model == "warp":
        return WarpAnimator(resolution, dev)
    weights = default_weights_dir() if model == DEFAULT_MODEL else Path(model)
    if model != DEFAULT_MODEL and not weights.exists():
        raise unknown_model(model)
    if model == DEFAULT_MODEL and not (weights / "config.json").exists():
        raise AnimateError(
            f"the default weights are missing ({weights}): reinstall animate-cli (in a checkout: `git checkout "
            "src/animate_cli/weights/`), train your own with `animate-train` (see README), or use --model warp")
    return NeuralAnimator(weights, dev, finetune_steps, half, seed)
