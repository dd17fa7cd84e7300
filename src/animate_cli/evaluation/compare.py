"""Reading evaluation reports: the summary table, and the paired comparison of two reports of the same
clips (is B better than A on the same frames, or only on average?)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ..errors import AnimateError

HIGHER_IS_BETTER = {"ssim": True, "psnr": True, "lpips": False, "mouth_lpips": False, "eye_lpips": False, "csim": True,
                    "id_dist": False, "landmark_error": False,
                    # the follow setting (follow.py), one value per pair
                    "eyes": True, "eyes_seen": True, "gaze_h": True, "gaze_v": True, "mouth": True,
                    "jitter_ratio": False, "shake_ratio": False}


def sign_test(better: int, worse: int) -> float:
    """Two-sided exact sign test (ties dropped): how likely so lopsided a split is if B and A are alike."""
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(better, worse) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


BOOTSTRAP_DRAWS = 2000


def gain_interval(gain: np.ndarray, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean per-frame gain (the paired frames resampled with replacement). A mean gain whose
    interval holds 0 is within frame-to-frame noise (21 open mouths: about ±0.007 on a mouth LPIPS of 0.10)."""
    rng = np.random.default_rng(seed)
    means = gain[rng.integers(0, len(gain), (draws, len(gain)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _shared_settings(a: dict, b: dict):
    for setting, sa in a.get("self", {}).items():
        if setting in b.get("self", {}):
            yield setting, sa, b["self"][setting]
    if "cross" in a and "cross" in b:
        yield "cross-id", a["cross"], b["cross"]
    if a.get("follow", {}).get("pairs") and b.get("follow", {}).get("pairs"):
        yield "follow", a["follow"], b["follow"]


def _per_frame(setting: str, summary) -> dict:
    """A setting's per-frame lists, checked: a clip label and a value of each metric for every frame."""
    frames = summary.get("per_frame") if isinstance(summary, dict) else None
    if not isinstance(frames, dict) or not isinstance(frames.get("clip"), list):
        raise AnimateError(f"{setting}: a report has no per-frame values (re-run animate-evaluate)")
    if any(not isinstance(v, list) or len(v) != len(frames["clip"]) for v in frames.values()):
        raise AnimateError(f"{setting}: a report's per-frame values do not line up with its frames")
    return frames


def _values(per_frame: list) -> np.ndarray:
    """A per-frame list as floats, null (a frame the metric does not cover) as NaN."""
    return np.array([np.nan if v is None else v for v in per_frame], np.float64)


def compare(a: dict, b: dict) -> list[dict]:
    """B against A frame by frame, for each pair of models and each setting both reports hold. Means differ
    in the fifth decimal between close models; a frame-by-frame count says whether that is one clip or all.
    Rows: model_a, model_b, setting, metric, a, b, gain (B's improvement, in the metric's better direction),
    better/worse/ties (frames), clips_better/clips (per-clip mean gain > 0), p (sign test over frames), low/high
    (gain_interval: the 95% interval of the mean gain).
    A metric defined on some frames only (null elsewhere, as the mouth metric on closed mouths) is paired on
    the frames where both reports have it; clips without such a frame do not count."""
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
                    x, y = _values(fa[metric]), _values(fb[metric])
                    both = np.isfinite(x) & np.isfinite(y)
                    if not both.any():
                        continue
                    gain = (y - x if higher else x - y)[both]
                    x, y, where = x[both], y[both], clips[both]
                    per_clip = [gain[where == c].mean() for c in dict.fromkeys(where.tolist())]
                    better, worse = int((gain > 0).sum()), int((gain < 0).sum())
                    low, high = gain_interval(gain)
                    rows.append(dict(model_a=model_a, model_b=model_b, setting=setting, metric=metric,
                                     a=float(x.mean()), b=float(y.mean()), gain=float(gain.mean()), low=low, high=high,
                                     better=better, worse=worse, ties=len(gain) - better - worse,
                                     clips_better=int(sum(g > 0 for g in per_clip)), clips=len(per_clip),
                                     p=sign_test(better, worse)))
    return rows


def read_report(path) -> dict:
    """A report written by animate-evaluate, or a one-line error."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise AnimateError(f"{path}: cannot read a report ({type(e).__name__}: {e})") from None
    models = report.get("models") if isinstance(report, dict) else None
    if not isinstance(models, dict) or not all(isinstance(e, dict) for e in models.values()):
        raise AnimateError(f"{path}: not an animate-evaluate report (no \"models\")")
    return report


def print_comparison(rows: list[dict], name_a: str, name_b: str) -> None:
    t = Table(title=f"B = {name_b} against A = {name_a}, frame by frame (gain, +: B better)")
    for c in ("model", "setting", "metric", "A", "B", "gain", "95% interval", "frames +/−/=", "clips +", "p (sign)"):
        t.add_column(c, justify="left" if c in ("model", "setting", "metric") else "right", no_wrap=True)
    for r in rows:
        model = r["model_a"] if r["model_a"] == r["model_b"] else f"{r['model_a']} → {r['model_b']}"
        t.add_row(model, r["setting"], r["metric"], f"{r['a']:.6f}", f"{r['b']:.6f}", f"{r['gain']:+.6f}",
                  f"{r['low']:+.6f} .. {r['high']:+.6f}",
                  f"{r['better']} / {r['worse']} / {r['ties']}", f"{r['clips_better']} of {r['clips']}",
                  f"{r['p']:.3g}")
    Console(width=max(150, Console().width)).print(t)


def print_table(report: dict) -> None:
    """One row per model and setting: the paper's columns plus ours, those the report has a value in."""
    rows = [(model, setting, m) for model, entry in report["models"].items()
            for setting, m in list(entry["self"].items()) + ([("cross-id", entry["cross"])] if "cross" in entry else [])]
    cols = [c for c in ("ssim", "psnr", "lpips", "mouth_lpips", "mouth_lpips_frames", "paint_share", "paint_size",
                        "eye_lpips", "eye_paint_share", "eye_paint_size", "csim", "id_dist", "landmark_error", "fid",
                        "face_detected", "frames")
            if any(m.get(c) is not None for _, _, m in rows)]
    t = Table(title=f"evaluation on {report['clips_dir']} ({len(report['clips'])} clips)")
    t.add_column("model")
    t.add_column("setting")
    for c in cols:
        t.add_column({"landmark_error": "lmk", "face_detected": "det", "frames": "n", "mouth_lpips": "mouth",
                      "mouth_lpips_frames": "n open", "paint_share": "painted", "paint_size": "|Δp|", "eye_lpips": "eyes",
                      "eye_paint_share": "eyes painted", "eye_paint_size": "eyes |Δp|"}.get(c, c),
                     justify="right")
    for model, setting, m in rows:
        t.add_row(model, setting, *["-" if m.get(c) is None else f"{m[c]:.3g}" for c in cols])
    Console(width=max(120, Console().width)).print(t)
    follow = {model: e["follow"] for model, e in report["models"].items() if e.get("follow", {}).get("pairs")}
    if follow:
        print_follow(follow)


def print_follow(follow: dict) -> None:
    """The follow setting: correlations with the driver (1 = does what it does) and ratios to the driver's
    jitter and head shake (1 = as steady as the driver; lower is steadier)."""
    cols = ("eyes", "eyes_frames", "eyes_seen", "eyes_seen_frames", "gaze_h", "gaze_h_frames", "gaze_v",
            "gaze_v_frames", "mouth", "jitter_ratio", "jitter_ratio_max", "shake_ratio", "shake_ratio_max", "pairs")
    names = {"eyes_frames": "n blinking", "eyes_seen": "eyes seen", "eyes_seen_frames": "n seen",
             "gaze_h_frames": "n looking", "gaze_v_frames": "n looking",
             "jitter_ratio": "jitter ×", "jitter_ratio_max": "max", "shake_ratio": "shake ×",
             "shake_ratio_max": "max", "pairs": "n"}
    any_entry = next(iter(follow.values()))
    t = Table(title=f"following another person's clip (measured with {any_entry['measured_with']}, "
                    f"driven by {any_entry['driven_by']}, {any_entry['follow_frames']} frames)")
    t.add_column("model")
    for c in cols:
        t.add_column(names.get(c, c), justify="right")
    for model, m in follow.items():
        t.add_row(model, *["-" if m.get(c) is None else f"{m[c]:.3g}" for c in cols])
    Console(width=max(120, Console().width)).print(t)
