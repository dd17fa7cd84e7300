"""`animate-bench`: measured speed of the pipeline and of the networks, for README.md.

pipeline: end to end (decode -> landmarks -> model -> paste-back -> encode) with the per-stage split.
models:   parameters, GFLOPs per frame, generator frames/s at batch 1 and 8, fine-tuning seconds per step.
"""
from __future__ import annotations

import json
import platform
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from .animate import AnimateOptions, animate
from .animators import resolve_device
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


console = Console()
app = typer_app()
PB, MB = PipelineBench(), ModelsBench()


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
             landmarks: str = typer.Option(PB.landmarks, help="Landmark backend: dlib, fan or auto."),
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
                lm = torch.rand(b, 68, 2, device=dev) * R  # a mouth painter costs the same wherever the mouth is
                paint = dict(landmarks=lm, ref_landmarks=lm) if cfg.paint_size else {}
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
