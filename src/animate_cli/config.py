"""Typed configurations shared by the CLI, training and checkpoints: the model (ModelConfig) and
fine-tuning on a new person (FinetuneConfig).

A checkpoint stores the full ModelConfig, so the networks can be rebuilt exactly; presets are only
named starting points.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import AnimateError
from .face.draw import DRAWING_VERSION
from .warp import DEFAULT_REG

FORMAT_VERSION = 1
GENERATORS = ("fsth", "warp")
N_SELECTION_FEATURES = 14  # len(references.SELECTION_FEATURES)

# Experiments measured worse than the default model and removed (README, "Training your own weights"):
# key in old configs -> (its neutral value, what it was, the git tag that keeps the code). An old config
# that holds the neutral value loads as if the key were absent; any other value is refused.
REMOVED_EXPERIMENTS = {
    "n_refs": (1, "several blended references", "exp/multi-reference"),
    "skip_width": (0, "the warp generator's skip path", "exp/skip-path"),
    "mouth_refiner": (0, "the mouth refiner", "exp/mouth-refiner"),
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of E, G and D. Channel width at level i is min(base * 2**i, max)."""

    generator: str = "warp"  # "fsth" (paper: G(y, ê)) | "warp" (warped reference + G(y ⊕ warped reference, ê))
    preset: str = "custom"
    resolution: int = 256
    base_channels: int = 64
    max_channels: int = 512
    embed_dim: int = 512  # ê size = E's and D's last channel count
    g_down: int = 4  # generator down blocks (= up blocks): bottleneck at resolution / 2**g_down
    g_res_blocks: int = 5  # AdaIN residual blocks at the bottleneck
    shuffle_stem: bool = False  # space-to-depth by 2 at the input (and depth-to-space at G's output):
    # the networks then run at resolution/2 -- a fast CPU preset; the paper works at full resolution
    attention: bool = True
    attn_embed_res: int = 32  # self-attention resolution in E and D
    attn_down_res: int = 32  # in G's down path
    attn_up_res: int = 64  # in G's up path
    # learned shot-selection weights (references.selection_cost; fitted by train/selection.py); () = the
    # nearest normalised shape, as the `warp` model chooses
    selection: tuple = ()
    # thin-plate-spline regularisation of the model's warps (warp.py, normalised units): larger = smoother,
    # less swayed by landmark noise; fitted with the selection. The default is the `warp` model's
    warp_reg: float = DEFAULT_REG
    # the warp generator's mouth painter (models/painter.py, MouthPainter): the side of the mouth crop it
    # paints; 0 = none (every model before it; their outputs stay exactly as they were)
    paint_size: int = 0
    # the eye painter (models/painter.py): the side of each eye's crop it paints where a shut eye is driven open;
    # 0 = none (every model before it)
    eye_paint_size: int = 0
    # with several shots, each frame's mouth from the shot that shows most of its opening, then the nearest lip
    # shape (references.choose_mouth_shots): the person's own teeth where a shot shows them. An inference rule,
    # not a weight: off for every model before it, on in the bundled weights
    mouth_shots: bool = False
    drawing_version: int = DRAWING_VERSION  # the landmark drawing the networks were trained on
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise AnimateError(f"unknown generator {self.generator!r} (choose from {', '.join(GENERATORS)})")
        r = self.resolution
        if r < 16 or r & (r - 1):
            raise AnimateError(f"model resolution must be a power of two >= 16, got {r}")
        if min(self.base_channels, self.max_channels, self.embed_dim) < 1:
            raise AnimateError("channel counts must be positive")
        if not 1 <= self.g_down <= int(math.log2(self.trunk_resolution)) - 2:
            raise AnimateError(f"g_down={self.g_down} does not fit resolution {r}")
        if self.g_res_blocks < 0:
            raise AnimateError("g_res_blocks must be >= 0")
        if not isinstance(self.selection, tuple) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in self.selection):
            raise AnimateError("selection must be a tuple of finite numbers")
        if self.selection and len(self.selection) != N_SELECTION_FEATURES:
            raise AnimateError(f"selection needs {N_SELECTION_FEATURES} weights, got {len(self.selection)}")
        if self.selection and self.generator != "warp":
            raise AnimateError("only the warp generator chooses shots to warp (selection)")
        if not isinstance(self.warp_reg, (int, float)) or isinstance(self.warp_reg, bool) or not (
                math.isfinite(self.warp_reg) and 0 < self.warp_reg <= 1):
            raise AnimateError(f"warp_reg must be a number in (0, 1], got {self.warp_reg!r}")
        if type(self.mouth_shots) is not bool:
            raise AnimateError(f"mouth_shots must be true or false, got {self.mouth_shots!r}")
        if self.mouth_shots and self.generator != "warp":
            raise AnimateError("only the warp generator takes mouths from shots (mouth_shots)")
        for name in ("paint_size", "eye_paint_size"):
            size = getattr(self, name)
            if size and self.generator != "warp":
                raise AnimateError(f"only the warp generator has painters ({name})")
            if size and (not 16 <= size <= self.resolution or size % 4):
                raise AnimateError(f"{name} must be 0 or a multiple of 4 from 16 to the resolution, got {size}")
        if self.format_version != FORMAT_VERSION:
            raise AnimateError(
                f"model format version {self.format_version} is not supported by this animate-cli "
                f"(supports {FORMAT_VERSION}); upgrade animate-cli or use a matching checkpoint")

    # --- derived sizes ---------------------------------------------------------------------------
    @property
    def trunk_resolution(self) -> int:
        """Resolution the first block sees (after the optional space-to-depth stem)."""
        return self.resolution // 2 if self.shuffle_stem else self.resolution

    @property
    def n_embed_down(self) -> int:
        """Down blocks of E/D: from trunk_resolution to 4x4."""
        return int(math.log2(self.trunk_resolution)) - 2

    def channels(self, level: int) -> int:
        return min(self.base_channels * 2 ** level, self.max_channels)

    def embed_channels(self) -> list[int]:
        """Output channels of E's (and D's) down blocks; the last one is embed_dim."""
        n = self.n_embed_down
        return [self.channels(i) for i in range(n - 1)] + [self.embed_dim]

    # --- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """Rebuild from to_dict() output; unknown keys or wrong types are errors, missing keys take defaults.
        Keys of removed experiments (REMOVED_EXPERIMENTS) are dropped when they hold their neutral value."""
        if not isinstance(data, dict):
            raise AnimateError("model config must be a JSON object")
        data = dict(data)
        for key, (neutral, what, tag) in REMOVED_EXPERIMENTS.items():
            if key in data:
                value = data.pop(key)
                if type(value) is not int or value != neutral:
                    raise AnimateError(f"this model uses {what} ({key}={value!r}), an experiment removed from "
                                       f"animate-cli; it lives on at git tag {tag}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise AnimateError(f"unknown model config key(s): {', '.join(unknown)}")
        for name, value in data.items():
            want = {"str": str, "int": int, "bool": bool, "tuple": tuple, "float": float}[str(fields[name].type)]
            if want is tuple and type(value) is list:  # JSON has no tuples
                value = data[name] = tuple(value)
            if want is float and type(value) is int:  # JSON writes 1.0 as 1 in some tools
                value = data[name] = float(value)
            if type(value) is not want:
                raise AnimateError(f"model config key {name!r} must be {want.__name__}, got {value!r}")
        return cls(**data)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    # The paper's sizes: E ~15M, G ~38M, D ~20M parameters at 256².
    "paper": ModelConfig(preset="paper", resolution=256, base_channels=64, max_channels=512, embed_dim=512,
                         g_down=4, g_res_blocks=5, attention=True,
                         attn_embed_res=32, attn_down_res=32, attn_up_res=64, paint_size=96, eye_paint_size=64),
    # Narrow and shallow so that meta-learning and fine-tuning run on a 2-core CPU: space-to-depth stem
    # (trunk at 128²), bottleneck at 8², attention at 32² only (64² attention alone cost ~25 ms); the mouth
    # painted at 64² (a 256² face's mouth box is about 100 px), each eye at 48² (its box about 46 px).
    "small": ModelConfig(preset="small", resolution=256, base_channels=16, max_channels=128, embed_dim=128,
                         g_down=4, g_res_blocks=3, shuffle_stem=True, attention=True,
                         attn_embed_res=32, attn_down_res=32, attn_up_res=32, paint_size=64, eye_paint_size=48),
    # For tests only.
    "tiny": ModelConfig(preset="tiny", resolution=64, base_channels=8, max_channels=32, embed_dim=32,
                        g_down=3, g_res_blocks=1, attention=True,
                        attn_embed_res=8, attn_down_res=8, attn_up_res=16),
}


def preset(name: str, generator: str = "warp") -> ModelConfig:
    """A named preset with the chosen generator kind (the paper's generator paints everything: no painter)."""
    if name not in PRESETS:
        raise AnimateError(f"unknown model preset {name!r} (choose from {', '.join(PRESETS)})")
    cfg = PRESETS[name]
    warp = generator == "warp"
    return cfg.replace(generator=generator, paint_size=cfg.paint_size if warp else 0,
                       eye_paint_size=cfg.eye_paint_size if warp else 0)


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning on a new person's shots (finetune.py, paper §3.3). The learning rates, L_CNT's input
    size and the mouth term's weight are also meta-learning's defaults (train/), so both read them here."""

    steps: int = 40  # on a GPU; one step = one pass over all T shots, so ≈ the paper's "about 40 epochs"
    # on a CPU: feed-forward. There the 40 steps cost 48 of the bundled example's 57 s and tie with feed-forward
    # on every val measure (eval/card/compare_ff_ft_k1.txt, _k8.txt); --finetune-steps 40 still asks for them
    cpu_steps: int = 0
    lr_g: float = 5e-5  # Adam lr of G's weights and ψ'
    lr_d: float = 2e-4  # Adam lr of D's weights and w'
    # L_CNT's input size (None = full resolution): on CPU, 8 shots at 256² step ~4x faster at 128² (the VGG
    # trunk dominates a step)
    content_size: int | None = 128
    mouth_weight: float = 1.0  # the mouth term (losses.mouth_loss); 0 = the paper's losses only
    # strength of the landmark jitter that makes each shot's synthetic reference (finetune.round_trip_reference)
    jitter: float = 0.04
    # the painters stay as meta-learned: a shot fitted from a warp of itself shows no opening wider than its own,
    # so fine-tuning can only teach them to paint less (val, K=1 mouth LPIPS: 0.0888 frozen, 0.0918 not)
    train_painter: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "cpu_steps"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise AnimateError(f"fine-tuning {name} must be 0 or more (got {value!r})")
        for name in ("lr_g", "lr_d"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise AnimateError(f"fine-tuning {name} must be a positive number (got {value!r})")
        if self.content_size is not None and (type(self.content_size) is not int or self.content_size < 16):
            raise AnimateError(f"fine-tuning content_size must be None or at least 16 (got {self.content_size!r})")
        if type(self.train_painter) is not bool:
            raise AnimateError(f"fine-tuning train_painter must be true or false (got {self.train_painter!r})")
        for name in ("mouth_weight", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
                raise AnimateError(f"fine-tuning {name} must be a number >= 0 (got {value!r})")

    def replace(self, **changes) -> "FinetuneConfig":
        return dataclasses.replace(self, **changes)

    def steps_on(self, device_type: str) -> int:
        """The default number of steps on a device of this type ("cuda", "cpu")."""
        return self.steps if device_type == "cuda" else self.cpu_steps
