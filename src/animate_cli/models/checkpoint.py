"""Checkpoints (E, G, D) and fine-tuned person files: safetensors + JSON, never pickle.

A checkpoint is a folder:
  config.json                {format_version, architecture, preset, resolution, drawing_version,
                              config (full ModelConfig), n_videos, has_discriminator, extra}
  embedder.safetensors       generator.safetensors       [discriminator.safetensors]
Every file is written to a temporary name and renamed into place, so an interrupted save never
leaves a half-written file under the real name. Loading checks everything a user can get wrong
and explains it in one line (AnimateError).

A person file is one .safetensors: the fine-tuned generator's full state ("generator.*"), psi, ê,
the shots and their landmark images/landmarks (the warp generator moves the shots), its identity
("identity.*": a fingerprint of the portrait it was made from, shots.portrait_fingerprint; absent in
files written before it existed), with the model config and the portrait's file name in the metadata:
loading it reproduces the fine-tuned person's output bit-exactly.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..config import GENERATORS, ModelConfig
from ..errors import AnimateError
from ..face.draw import DRAWING_VERSION
from ..video import temp_path
from .discriminator import Discriminator
from .embedder import Embedder
from .generator import build_generator

CHECKPOINT_FORMAT = 1
PERSON_FORMAT = 1
PERSON_KIND = "animate-cli-person"
CONFIG_NAME = "config.json"
FILES = {"embedder": "embedder.safetensors", "generator": "generator.safetensors",
         "discriminator": "discriminator.safetensors"}
HOW_TO_GET = ("train one with `animate-train` (see README) or point to a folder holding config.json, "
              "embedder.safetensors and generator.safetensors")


# --- low level ---------------------------------------------------------------------------------
def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def _tmp_name(path: Path) -> Path:
    """video.temp_path's name (pid inside), so a later run removes what a killed one left."""
    return temp_path(path, ".tmp")


def _atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tmp = _tmp_name(path)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = _tmp_name(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors + metadata of a safetensors file; never unpickles (safetensors cannot)."""
    if not path.is_file():
        raise AnimateError(f"missing weights file {path}: {HOW_TO_GET}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # header parse errors, truncation, foreign formats (pickle, zip, ...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AnimateError(f"{path} is not a valid safetensors file (truncated or a different format: "
                           f"{reason})") from None
    return tensors, meta


def _load_state(module: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Strict load with a one-line explanation of the first name/shape mismatch."""
    want = module.state_dict()
    for name, ref in want.items():
        if name not in tensors:
            raise AnimateError(f"{path}: tensor {name!r} is missing; the file does not match its config.json")
        if tuple(tensors[name].shape) != tuple(ref.shape):
            raise AnimateError(f"{path}: tensor {name!r} has shape {tuple(tensors[name].shape)} in the file "
                               f"but {tuple(ref.shape)} in the model built from the config")
    unexpected = [k for k in tensors if k not in want]
    if unexpected:
        raise AnimateError(f"{path}: unexpected tensor {unexpected[0]!r}; the file does not match its config")
    module.load_state_dict(tensors, strict=True)


def _parse_config(data, where: str) -> ModelConfig:
    try:
        return ModelConfig.from_dict(data)
    except AnimateError as exc:
        raise AnimateError(f"{where}: {exc}") from None


def _check_drawing(cfg: ModelConfig, where: str) -> None:
    if cfg.drawing_version != DRAWING_VERSION:
        raise AnimateError(f"{where} was trained on landmark drawing version {cfg.drawing_version}, "
                           f"this animate-cli draws version {DRAWING_VERSION}; retrain or use a matching version")


# --- checkpoints ---------------------------------------------------------------------------------
def save_checkpoint(folder, cfg: ModelConfig, embedder: nn.Module, generator: nn.Module,
                    discriminator: Optional[Discriminator] = None, extra: Optional[dict] = None) -> Path:
    """Write the checkpoint folder (created if needed); config.json is written last."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnimateError(f"cannot create checkpoint folder {folder}: {exc.strerror}") from None
    meta = {"format_version": str(CHECKPOINT_FORMAT), "architecture": cfg.generator}
    nets = {"embedder": embedder, "generator": generator, "discriminator": discriminator}
    for name, net in nets.items():
        if net is not None:
            _atomic_save_tensors(folder / FILES[name], _tensors(net), {**meta, "network": name})
    if discriminator is None:
        (folder / FILES["discriminator"]).unlink(missing_ok=True)  # no stale D beside new E/G
    config = {
        "format_version": CHECKPOINT_FORMAT,
        "architecture": cfg.generator,
        "preset": cfg.preset,
        "resolution": cfg.resolution,
        "drawing_version": cfg.drawing_version,
        "config": cfg.to_dict(),
        "n_videos": int(discriminator.n_videos) if discriminator is not None else 0,
        "has_discriminator": discriminator is not None,
        "extra": extra or {},
    }
    _atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def read_checkpoint_config(path) -> tuple[Path, dict, ModelConfig]:
    """(folder, raw config.json dict, ModelConfig) after format/architecture/drawing checks."""
    path = Path(path)
    folder = path.parent if path.suffix == ".json" else path
    if not folder.exists():
        raise AnimateError(f"model checkpoint {folder} not found: {HOW_TO_GET}")
    if not folder.is_dir():
        raise AnimateError(f"model checkpoint {folder} is not a folder: {HOW_TO_GET}")
    cfg_path = folder / CONFIG_NAME if path.suffix != ".json" else path
    if not cfg_path.is_file():
        raise AnimateError(f"no {cfg_path.name} in {folder}: {HOW_TO_GET}")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnimateError(f"{cfg_path} is not a readable JSON config ({exc})") from None
    if not isinstance(raw, dict) or "config" not in raw:
        raise AnimateError(f"{cfg_path} is not an animate-cli checkpoint config")
    version = raw.get("format_version")
    if version != CHECKPOINT_FORMAT:
        raise AnimateError(f"{cfg_path}: checkpoint format version {version!r} is not supported "
                           f"(this animate-cli reads version {CHECKPOINT_FORMAT})")
    cfg = _parse_config(raw["config"], str(cfg_path))
    arch = raw.get("architecture")
    if arch not in GENERATORS:
        raise AnimateError(f"{cfg_path}: unknown architecture {arch!r} (expected one of {', '.join(GENERATORS)})")
    if arch != cfg.generator:
        raise AnimateError(f"{cfg_path}: architecture {arch!r} contradicts its config's generator "
                           f"{cfg.generator!r}")
    _check_drawing(cfg, str(cfg_path))
    return folder, raw, cfg


def load_checkpoint(path, device="cpu", with_discriminator: bool = False):
    """-> (cfg, E, G, D | None), all on `device` in eval mode.

    D is None unless with_discriminator; it is also None for a checkpoint saved without one
    (config.json says so) -- but a checkpoint that lists D and lacks the file is an error.
    """
    folder, raw, cfg = read_checkpoint_config(path)
    n_videos = raw.get("n_videos", 0)
    if type(n_videos) is not int or n_videos < 0:
        raise AnimateError(f"{folder / CONFIG_NAME}: n_videos must be a non-negative integer")
    nets = {"embedder": Embedder(cfg), "generator": build_generator(cfg)}
    if with_discriminator and raw.get("has_discriminator", True):
        nets["discriminator"] = Discriminator(cfg, n_videos)
    for name, net in nets.items():
        file = folder / FILES[name]
        tensors, meta = _read_tensors(file)
        arch = meta.get("architecture")
        if arch is not None and arch != cfg.generator:
            raise AnimateError(f"{file} holds weights of a {arch!r} model but {CONFIG_NAME} says "
                               f"{cfg.generator!r}")
        _load_state(net, tensors, file)
        net.to(device).eval()
    return cfg, nets["embedder"], nets["generator"], nets.get("discriminator")


# --- fine-tuned persons -------------------------------------------------------------------------
@dataclass
class PersonModel:
    """A fine-tuned talking-head model of one person: everything needed to render new poses."""
    cfg: ModelConfig
    generator: nn.Module  # fine-tuned generator (eval mode)
    psi: torch.Tensor  # (1, n_adain) person-specific AdaIN parameters ψ'
    e_hat: torch.Tensor  # (1, embed_dim) ê_new
    shots: torch.Tensor  # (T,3,R,R) in [-1,1]: the references the warp generator moves
    shots_y: torch.Tensor  # (T,3,R,R) landmark images of the shots
    shot_landmarks: Optional[np.ndarray] = None  # (T,68,2) crop pixels
    steps: int = 0
    losses: list = field(default_factory=list)
    identity: Optional[dict] = None  # the portrait's fingerprint (shots.portrait_fingerprint); None: not known
    source: str = ""  # the portrait's file name, for messages

    @torch.no_grad()
    def render(self, y: torch.Tensor, warped: Optional[torch.Tensor] = None, landmarks=None,
               ref_landmarks=None, parts: Optional[dict] = None, eye_ref_landmarks=None) -> torch.Tensor:
        """Landmark images y (B,3,R,R) [+ the warped references (B,3,R,R)] -> frames (B,3,R,R) in [-1,1].
        Painters also need the targets' `landmarks` and the warped shots' `ref_landmarks` (B,68,2; the eyes'
        shots `eye_ref_landmarks` where they differ); `parts`: see WarpGenerator.forward."""
        dev = self.psi.device
        if self.cfg.generator == "warp" and warped is None:
            raise AnimateError("the warp generator needs the warped reference to render")
        painters = self.cfg.paint_size or self.cfg.eye_paint_size
        if painters and (landmarks is None or ref_landmarks is None):
            raise AnimateError("the painters need the target and reference landmarks to render")
        if self.cfg.generator != "warp":
            return self.generator(y.to(dev), psi=self.psi).float()
        extra = {} if not painters else dict(landmarks=landmarks, ref_landmarks=ref_landmarks, parts=parts,
                                             eye_ref_landmarks=eye_ref_landmarks)
        return self.generator(y.to(dev), psi=self.psi, warped=warped.to(dev), **extra).float()


def save_person(path, person, extra: Optional[dict] = None, source: str = "") -> Path:
    """Write a fine-tuned person (a PersonModel or any object with the same attributes) atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise AnimateError(f"cannot save person: folder {path.parent} does not exist")
    tensors = {f"generator.{k}": v for k, v in _tensors(person.generator).items()}
    tensors["psi"] = person.psi.detach().float().cpu().reshape(1, -1).contiguous()
    tensors["e_hat"] = person.e_hat.detach().float().cpu().reshape(1, -1).contiguous()
    tensors["shots"] = person.shots.detach().float().cpu().contiguous()
    tensors["shots_y"] = person.shots_y.detach().float().cpu().contiguous()
    if person.shot_landmarks is not None:
        tensors["shot_landmarks"] = torch.from_numpy(np.ascontiguousarray(person.shot_landmarks, np.float32))
    for key, value in (getattr(person, "identity", None) or {}).items():
        tensors[f"identity.{key}"] = torch.from_numpy(np.ascontiguousarray(value, np.float32))
    meta = {"kind": PERSON_KIND, "format_version": str(PERSON_FORMAT), "architecture": person.cfg.generator,
            "config": json.dumps(person.cfg.to_dict()), "steps": str(int(person.steps)),
            "extra": json.dumps(extra or {}), "source": source or getattr(person, "source", "")}
    try:
        _atomic_save_tensors(path, tensors, meta)
    except OSError as exc:
        raise AnimateError(f"cannot write person file {path}: {exc.strerror}") from None
    return path


def load_person(path, device="cpu") -> PersonModel:
    """Read a person file written by save_person; the generator comes back in eval mode on `device`."""
    path = Path(path)
    if not path.is_file():
        raise AnimateError(f"person file {path} not found (save one with --save-person)")
    tensors, meta = _read_tensors(path)
    if meta.get("kind") != PERSON_KIND:
        raise AnimateError(f"{path} is a safetensors file but not an animate-cli person file")
    if meta.get("format_version") != str(PERSON_FORMAT):
        raise AnimateError(f"{path}: person format version {meta.get('format_version')!r} is not supported "
                           f"(this animate-cli reads version {PERSON_FORMAT})")
    try:
        cfg_dict = json.loads(meta.get("config", ""))
    except json.JSONDecodeError:
        raise AnimateError(f"{path}: its model config is not valid JSON") from None
    cfg = _parse_config(cfg_dict, str(path))
    _check_drawing(cfg, str(path))
    for key in ("psi", "e_hat", "shots", "shots_y"):
        if key not in tensors:
            raise AnimateError(f"{path}: tensor {key!r} is missing")
    g = build_generator(cfg)
    _load_state(g, {k[len("generator."):]: v for k, v in tensors.items() if k.startswith("generator.")}, path)
    if tensors["psi"].shape[-1] != g.n_adain:
        raise AnimateError(f"{path}: psi has {tensors['psi'].shape[-1]} entries, the generator expects {g.n_adain}")
    lms = tensors.get("shot_landmarks")
    identity = {k[len("identity."):]: v.numpy() for k, v in tensors.items() if k.startswith("identity.")}
    return PersonModel(cfg=cfg, generator=g.to(device).eval(), psi=tensors["psi"].to(device),
                       e_hat=tensors["e_hat"].to(device), shots=tensors["shots"].to(device),
                       shots_y=tensors["shots_y"].to(device),
                       shot_landmarks=None if lms is None else lms.numpy(),
                       steps=int(meta.get("steps", "0")), identity=identity or None,
                       source=meta.get("source", ""))
