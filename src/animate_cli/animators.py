"""Animators: what turns target landmarks (in crop pixels) into face crops.

An animator owns its loaded networks, its device and precision, and the tensors going in and out;
the pipeline (animate.py) only asks it what it needs through the Animator interface: its resolution,
how many fine-tuning steps prepare() will run (for the progress bar), and whether it can save a person.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .errors import AnimateError
from .face.draw import landmark_tensor
from .config import FinetuneConfig
from .finetune import finetune
from .models.checkpoint import load_checkpoint, load_person, save_person
from .models.generator import paint_usage
from .references import references_with_landmarks
from .warp import DEFAULT_REG

DEFAULT_MODEL = "default"  # the name of the bundled weights, as --model takes it
DEFAULT_DEVICE = "auto"
DEFAULT_RESOLUTION = 256  # the crop size of model-free animators (a neural one has its own)
WEIGHTS_ENV = "ANIMATE_WEIGHTS"

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


def to_tensor(images: np.ndarray | Sequence[np.ndarray], device) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float32 (B,3,H,W) in [-1, 1]."""
    arr = np.ascontiguousarray(np.stack(list(images)) if not isinstance(images, np.ndarray) else images)
    t = torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (B,3,H,W) in [-1, 1] -> uint8 (B,H,W,3)."""
    x = ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


class Animator:
    """Base: holds the shots (reference crops + their landmarks) and warps them to targets."""

    name = "base"
    selection: tuple = ()  # learned shot-selection weights (references.selection_cost); () = nearest shape
    warp_reg: float = DEFAULT_REG  # the spline's regularisation (warp.tps_grid); a model may set its own
    can_save_person = False  # whether save_person() has a fine-tuned person to write

    def __init__(self, resolution: int = DEFAULT_RESOLUTION, device: str | torch.device = DEFAULT_DEVICE):
        self.resolution = resolution
        self.device = resolve_device(device)
        self.shots: torch.Tensor | None = None
        self.shot_landmarks: np.ndarray | None = None

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

    def warped_references(self, targets: np.ndarray) -> torch.Tensor:
        """The chosen shots (nearest, or by the model's learned selection), moved by the analytic warp into each
        target pose: (B,3,R,R) in [-1,1]."""
        return self.references(targets)[0]

    def references(self, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """warped_references and the landmarks (B,68,2) of the shot each target warps."""
        assert self.shots is not None and self.shot_landmarks is not None, "prepare() first"
        return references_with_landmarks(self.shots, self.shot_landmarks, np.asarray(targets, np.float32),
                                         selection=self.selection, reg=self.warp_reg)

    def render(self, target_landmarks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def save_person(self, path: Path) -> None:
        raise AnimateError(f"--save-person needs a neural model (not --model {self.name})")


class WarpAnimator(Animator):
    """The model-free baseline: the nearest reference, thin-plate-spline warped to the target."""

    name = "warp"

    @torch.no_grad()
    def render(self, target_landmarks: np.ndarray) -> np.ndarray:
        return to_uint8(self.warped_references(target_landmarks))


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
        self.steps = FinetuneConfig().steps if finetune_steps is None else int(finetune_steps)
        self.person_model = None
        self.loaded_person = person is not None
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

    @property
    def paints(self) -> bool:
        """Whether the model has a mouth painter (render_with_paint_usage then reports what it painted)."""
        return bool(self.cfg.paint_size)

    @torch.no_grad()
    def render(self, target_landmarks: np.ndarray) -> np.ndarray:
        return self._render(target_landmarks, None)

    def render_with_paint_usage(self, target_landmarks: np.ndarray) -> tuple[np.ndarray, dict]:
        """render's frames and, per frame, what the mouth painter did on the target's open mouth
        (models.generator.paint_usage: paint_share, paint_size; NaN where the mouth is closed)."""
        if not self.paints:
            raise AnimateError(f"{self.name} has no mouth painter")
        parts: dict = {}
        with torch.no_grad():
            frames = self._render(target_landmarks, parts)
        return frames, {k: v.float().cpu().numpy() for k, v in paint_usage(parts).items()}

    @torch.no_grad()
    def _render(self, target_landmarks: np.ndarray, parts: Optional[dict]) -> np.ndarray:
        assert self.person_model is not None, "prepare() first"
        targets = np.asarray(target_landmarks, np.float32)
        y = landmark_tensor(targets, self.resolution).to(self.device)
        warped = ref_landmarks = None
        if self.cfg.generator == "warp":
            warped, ref_landmarks = self.references(targets)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.half else nullcontext()
        with autocast:
            out = self.person_model.render(y, warped=warped, landmarks=torch.from_numpy(targets),
                                           ref_landmarks=ref_landmarks, parts=parts)
        return to_uint8(out)

    def save_person(self, path: Path) -> None:
        assert self.person_model is not None, "prepare() first"
        save_person(path, self.person_model)


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
    if model == DEFAULT_MODEL and not (weights / "config.json").exists():
        raise AnimateError(
            f"the default weights are missing ({weights}): reinstall animate-cli (in a checkout: `git checkout "
            "src/animate_cli/weights/`), train your own with `animate-train` (see README), or use --model warp")
    return NeuralAnimator(weights, dev, finetune_steps, half, seed)
