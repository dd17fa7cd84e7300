"""`animate-bench`: measured speed of the pipeline and of the networks, and the sharpness of faces, for README.md.

pipeline:  end to end (decode -> landmarks -> model -> composite -> encode) with the per-stage split.
models:    parameters, GFLOPs per frame, generator frames/s at batch 1 and 8, fine-tuning seconds per step.
sharpness: how much of the portrait's detail the face keeps, at several portrait sizes, old path and new.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from .animate import AnimateOptions, animate, composite_frame, motion_targets, shot_sources
from .animators import make_animator, resolve_device
from .composite import Compositor
from .errors import AnimateError
from .face.crop import PasteBack, invert_affine, transform_points
from .face.landmarks import image_landmarks, make_detector
from .face.track import fill_missing, track_landmarks
from .sharpness import face_box, laplacian_variance, sharpness_ratio
from .shots import crop_shot
from .video import VideoWriter, read_frames, read_image
from .cli_common import Generator, Preset, run_app, typer_app
from .config import FinetuneConfig, preset as make_preset
from .finetune import finetune
from .models.discriminator import Discriminator
from .models.embedder import Embedder
from .models.generator import build_generator
from .models.stats import count_params_and_gflops


@dataclass(frozen=True)
class PipelineBench:
    """`animate-bench pipeline` settings and defaults (the pipeline's own come from AnimateOptions)."""
    model: str = "warp"
    finetune_steps: int | None = None
    device: str = AnimateOptions.device
    landmarks: str = "dlib"  # not 'auto': the figure should not depend on which weights are cached
    repeat: int = 2  # runs; the fastest is reported (the first warms caches)


@dataclass(frozen=True)
class ModelsBench:
    """`animate-bench models` settings and defaults."""
    presets: tuple = ("small", "paper")
    generator: str = "warp"
    device: str = AnimateOptions.device
    repeat: int = 3  # timed runs per figure (median)
    finetune_steps: int = 2  # fine-tuning steps timed per figure


@dataclass(frozen=True)
class SharpnessBench:
    """`animate-bench sharpness` settings and defaults."""
    sizes: tuple = (256, 512, 1024, 2048)
    frames: int = 30  # driver frames per portrait
    model: str = "warp"
    finetune_steps: int = 0  # for neural models: the figure is about resampling, not the fine-tuned likeness
    device: str = "cpu"
    shared: Path = Path(os.environ.get("ANIMATE_SHARED", "../shared"))  # the data folder (fixtures, val clips)


console = Console()
app = typer_app()
PB, MB, SB = PipelineBench(), ModelsBench(), SharpnessBench()


def wide(out: Console) -> Console:
    """A console wide enough for a many-column table when the output is a file or pipe (rich assumes 80)."""
    return out if out.is_terminal else Console(width=160)


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {gpu}, torch {torch.__version__}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@app.callback()
def commands() -> None:
    """Measure the speed of animate-cli on this machine."""


@app.command()
def pipeline(portrait: Path = typer.Argument(..., help="Portrait image."),
             driver: Path = typer.Argument(..., help="Driving video."),
             model: str = typer.Option(PB.model, help="Model to time (warp, default, or a weights folder)."),
             finetune_steps: Optional[int] = typer.Option(PB.finetune_steps, help="Fine-tuning steps for neural models."),
             device: str = typer.Option(PB.device, help="auto, cpu or cuda."),
             landmarks: str = typer.Option(PB.landmarks, help="Landmark backend: dlib, mesh, fan or auto."),
             repeat: int = typer.Option(PB.repeat, min=1, help="Runs; the fastest is reported (the first warms caches)."),
             json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the figures here.")):
    """End-to-end frames per second and where the time goes."""
    best = None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            opts = AnimateOptions(model=model, landmarks=landmarks, device=device, overwrite=True,
                                  finetune_steps=finetune_steps)
            t0 = time.perf_counter()
            report = animate(portrait, driver, Path(tmp) / "bench.mp4", opts)
            wall = time.perf_counter() - t0
            if best is None or wall < best[0]:
                best = (wall, report)
    wall, report = best
    per_frame = {k: 1000 * v / report.frames for k, v in report.seconds.items()}
    frame_stages = {k: v for k, v in per_frame.items() if k not in ("portrait", "prepare")}
    table = Table(title=f"pipeline, model {report.model}, {report.frames} frames, {machine()}")
    table.add_column("stage")
    table.add_column("ms / frame", justify="right")
    for k, v in per_frame.items():
        table.add_row(k, f"{v:.2f}")
    streaming_fps = 1000.0 / max(sum(frame_stages.values()), 1e-9)
    table.add_row("[bold]per-frame stages[/bold]", f"{sum(frame_stages.values()):.2f}  ({streaming_fps:.1f} fps)")
    table.add_row("[bold]wall, whole run[/bold]", f"{wall:.2f} s  ({report.frames / wall:.1f} fps)")
    console.print(table)
    result = dict(model=report.model, frames=report.frames, wall_s=wall, fps_end_to_end=report.frames / wall,
                  fps_per_frame_stages=streaming_fps, ms_per_frame=per_frame, setup_s={
                      k: report.seconds.get(k, 0.0) for k in ("portrait", "prepare")},
                  detector=report.detector, machine=machine(), peak_rss_mb=peak_rss_mb())
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))


def sharpness_portraits(shared: Path, sizes, detector) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, picture, landmarks): two square pictures at each size, then einstein.jpg as it is.

    fixtures/astronaut.png (512²) and frame 0 of data/val/retalking_2.mp4 (844²) are resized to size²
    (INTER_AREA to shrink, INTER_CUBIC to enlarge, so the larger ones carry no detail the source lacks);
    landmarks are found once on the source (dlib) and scaled with it. fixtures/einstein.jpg (1024x817, a real
    photo with film grain) keeps its size and its hand-placed points."""
    found = []
    for name, path in (("astronaut", shared / "fixtures" / "astronaut.png"),
                       ("retalking_2", shared / "data" / "val" / "retalking_2.mp4")):
        if not path.exists():
            raise AnimateError(f"{path} not found (point --shared at the shared data folder)")
        image = read_image(path) if path.suffix == ".png" else next(read_frames(path, max_frames=1))
        lms = image_landmarks(detector, image, name=name)
        for size in sizes:
            s = size / image.shape[0]
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
            found.append((f"{name} {size}²", cv2.resize(image, (size, size), interpolation=interp),
                          ((lms + 0.5) * s - 0.5).astype(np.float32)))
    pts = shared / "fixtures" / "einstein.pts"
    if pts.exists():
        lms = (np.loadtxt(pts, skiprows=3, comments="}") - 1).astype(np.float32)
        image = read_image(shared / "fixtures" / "einstein.jpg")
        found.append((f"einstein {image.shape[1]}x{image.shape[0]} (as is)", image, lms))
    return found


def face_sharpness(frames, portrait: np.ndarray, targets: np.ndarray, portrait_lms: np.ndarray) -> tuple[float, float]:
    """The face-box ratio output ÷ portrait at frame 0 and its mean over the frames."""
    ratios = [sharpness_ratio(f, portrait, t, portrait_lms) for f, t in zip(frames, targets)]
    return ratios[0], float(np.mean(ratios))


def encoded(frames: list[np.ndarray], folder: Path) -> list[np.ndarray]:
    """The frames through the output's encoder (VideoWriter) and back."""
    path = folder / "sharpness.mp4"
    with VideoWriter(path, 25.0, overwrite=True) as writer:
        for f in frames:
            writer.write(f)
    return [f[:frames[0].shape[0], :frames[0].shape[1]] for f in read_frames(path)]


@app.command()
def sharpness(sizes: List[int] = typer.Option(list(SB.sizes), "--sizes", help="Portrait sides in px (repeatable)."),
              frames: int = typer.Option(SB.frames, min=1, help="Driver frames per portrait."),
              model: str = typer.Option(SB.model, help="warp, default, or a weights folder."),
              finetune_steps: int = typer.Option(SB.finetune_steps, min=0, help="Fine-tuning steps for neural models."),
              device: str = typer.Option(SB.device, help="auto, cpu or cuda."),
              shared: Path = typer.Option(SB.shared, help="The shared data folder ($ANIMATE_SHARED or ../shared)."),
              json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the figures here.")):
    """How sharp the animated face is: variance of the Laplacian over the face's landmark box, output ÷ portrait
    (sharpness.py; a portrait simply encoded as a still video keeps ~0.98).

    Portraits: fixtures/astronaut.png (512²) and frame 0 of data/val/retalking_2.mp4 (844²), resized to each
    --sizes (INTER_AREA down, INTER_CUBIC up; landmarks found once on the source and scaled), and
    fixtures/einstein.jpg as it is (a real 1024x817 photo, hand-placed landmarks). Motion: the first --frames
    frames of fixtures/single_face.mp4 (dlib, tracked), transferred as `animate` does. "old": the model's 256²
    crop pasted back (face/crop.py PasteBack, the pipeline before issue 17); "new": the pipeline's composite at
    the portrait's resolution (composite.py), before encoding and, "enc", after VideoWriter and decoding.
    "face var": the portrait's own face-box variance; near 1-2 it is only uint8 rounding noise (an enlarged
    picture has no pixel-scale detail), and any resampling, with its fresh rounding, reads as a ratio above 1.
    Milliseconds are per frame, CPU time of this process (on a shared machine wall time measures the
    neighbours), for the paste and the composite alone."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    detector = make_detector("dlib")
    drv_path = shared / "fixtures" / "single_face.mp4"
    if not drv_path.exists():
        raise AnimateError(f"{drv_path} not found (point --shared at the shared data folder)")
    driver = fill_missing(list(track_landmarks(read_frames(drv_path, max_frames=frames), detector)), drv_path.name)
    animator = make_animator(model, device, finetune_steps)
    R = animator.resolution
    cols = ("old f0", "old mean", "new f0", "new mean", "enc f0", "enc mean", "paste ms", "composite ms")
    table = Table(title=f"face sharpness, output ÷ portrait, model {animator.name}, {len(driver)} frames, {machine()}")
    for col in ("portrait", "crop px", "face var") + cols:
        table.add_column(col, justify="left" if col == "portrait" else "right")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, portrait, plms in sharpness_portraits(shared, sizes, detector):
            shot = crop_shot(portrait, plms, R, "portrait")
            animator.prepare([shot.crop], [shot.landmarks])
            targets, M = motion_targets(plms, driver, AnimateOptions(), R)
            full = transform_points(targets.reshape(-1, 2), invert_affine(M)).reshape(targets.shape)
            crops = np.concatenate([animator.render(targets[i:i + 8]) for i in range(0, len(targets), 8)])
            paste = PasteBack(portrait, M, R)
            t = time.process_time()
            old = [paste(c) for c in crops]
            paste_ms = (time.process_time() - t) / len(old) * 1000
            comp = Compositor(portrait, M, R, shot_sources(animator, [shot]))
            motions = [animator.render_motion(targets[i:i + 8]) for i in range(0, len(targets), 8)]
            t = time.process_time()
            new = [composite_frame(comp, m, i) for m in motions for i in range(len(m.shots))]
            comp_ms = (time.process_time() - t) / len(new) * 1000
            row = {"portrait": name, "crop_px": comp.region_size[0],
                   "portrait_var": laplacian_variance(portrait, face_box(plms, portrait.shape))}
            for label, result in (("old", old), ("new", new), ("enc", encoded(new, Path(tmp)))):
                row[f"{label}_f0"], row[f"{label}_mean"] = face_sharpness(result, portrait, full, plms)
            row.update(paste_ms=paste_ms, composite_ms=comp_ms)
            rows.append(row)
            table.add_row(name, str(row["crop_px"]), f"{row['portrait_var']:.1f}",
                          *[f"{v:.3f}" if "ms" not in k else f"{v:.1f}" for k, v in list(row.items())[3:]])
    wide(console).print(table)
    if json_out:
        json_out.write_text(json.dumps(dict(model=animator.name, frames=len(driver), machine=machine(), rows=rows),
                                       indent=2))


def time_call(fn, repeat: int) -> float:
    """Median seconds of fn() over `repeat` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


@app.command()
def models(presets: List[Preset] = typer.Option(list(MB.presets), "--preset", help="Presets to measure (repeatable)."),
           generator: Generator = typer.Option(MB.generator, help="fsth or warp."),
           device: str = typer.Option(MB.device, help="auto, cpu or cuda."),
           repeat: int = typer.Option(MB.repeat, min=1, help="Timed runs per figure (median)."),
           finetune_steps: int = typer.Option(MB.finetune_steps, min=1, help="Fine-tuning steps timed per figure."),
           json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the figures here.")):
    """Size, GFLOPs, generator frames/s (batch 1 and 8) and fine-tuning seconds per step, random weights."""
    generator = generator.value
    dev = resolve_device(device)
    rows = []
    for name in (p.value for p in presets):
        cfg = make_preset(name, generator=generator)
        stats = count_params_and_gflops(cfg)
        E, G, D = Embedder(cfg).to(dev).eval(), build_generator(cfg).to(dev).eval(), Discriminator(cfg, 1).to(dev)
        R = cfg.resolution
        row = dict(preset=name, generator=generator, resolution=R, **stats)
        with torch.no_grad():
            for b in (1, 8):
                y = torch.randn(b, 3, R, R, device=dev)
                warped = torch.randn(b, 3, R, R, device=dev) if generator == "warp" else None
                psi = G.project(torch.randn(1, cfg.embed_dim, device=dev))
                lm = torch.rand(b, 68, 2, device=dev) * R  # a painter costs the same wherever the mouth is
                paint = dict(landmarks=lm, ref_landmarks=lm) if cfg.paint_size or cfg.eye_paint_size else {}
                sec = time_call(lambda: G(y, psi=psi, warped=warped, **paint), repeat)
                row[f"generator_fps_batch{b}"] = b / sec
        for shots in (1, 8):
            x = torch.rand(shots, 3, R, R, device=dev) * 2 - 1
            y = torch.rand(shots, 3, R, R, device=dev) * 2 - 1
            warped = x if generator == "warp" else None
            timed = FinetuneConfig(steps=finetune_steps)
            # a mouth painter needs the shots' landmarks (random ones cost the same)
            lms = np.random.default_rng(0).random((shots, 68, 2), np.float32) * R if cfg.paint_size else None
            sec = time_call(lambda: finetune(cfg, E, G, D, x, y, lms, timed, device=dev, warped=warped),
                            max(1, repeat - 1))
            ff = time_call(lambda: finetune(cfg, E, G, D, x, y, lms, timed.replace(steps=0), device=dev,
                                            warped=warped), 1)
            per_step = max(sec - ff, 0.0) / finetune_steps
            row[f"finetune_s_per_step_{shots}shot"] = per_step
            row[f"finetune_default_s_{shots}shot"] = ff + per_step * FinetuneConfig().steps
        row["peak_rss_mb"] = peak_rss_mb()
        if dev.type == "cuda":
            row["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        rows.append(row)
    table = Table(title=f"networks ({generator} generator), {machine()}")
    table.add_column("figure")
    for r in rows:
        table.add_column(r["preset"], justify="right")
    for key in rows[0]:
        if key in ("preset",):
            continue
        vals = [r.get(key) for r in rows]
        fmt = (lambda v: f"{v:,.0f}" if isinstance(v, int) else f"{v:.3g}" if isinstance(v, float) else str(v))
        table.add_row(key, *[fmt(v) for v in vals])
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(dict(machine=machine(), rows=rows), indent=2))


def main(argv: Optional[List[str]] = None) -> int:
    return run_app(app, argv, "animate-bench")


def entry() -> None:
    raise SystemExit(main())


if __name__ == "__main__":  # `python -m animate_cli.benchmark`, as on a machine without the entry points
    entry()
