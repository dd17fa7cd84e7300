"""The training commands: `animate-preprocess`, `animate-preprocess-photos`, `animate-train` (also
`python -m animate_cli.train.cli`, the module torchrun starts) and `animate-fit-selection`. Every default
comes from the options dataclass of the stage it runs (PreprocessOptions, PhotoCacheOptions, TrainOptions, FitSelectionOptions).

    animate-preprocess SRC DST --resolution 256 --frames-per-clip 32
    animate-preprocess-photos PHOTOS DST_PHOTOS --resolution 256
    animate-train --cache DST --run-dir runs/small --preset small
    animate-train --cache DST --photos DST_PHOTOS --photo-share 0.5 --run-dir runs/mixed --init weights/default
    torchrun --nproc_per_node 2 -m animate_cli.train.cli --cache DST --run-dir runs/small
    animate-train --run-dir runs/small --export weights/mine
    animate-fit-selection DST weights/mine
"""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from ..cli_common import Generator, Preset, run_app, typer_app
from .photos import PhotoCacheOptions, cache_photos
from .preprocess import PreprocessOptions, preprocess_dataset
from .rundir import export
from .selection import FitSelectionOptions, fit_selection_into
from .trainer import TrainOptions, train

T, P, S, PH = TrainOptions(), PreprocessOptions(), FitSelectionOptions(), PhotoCacheOptions()


class Detector(str, Enum):
    dlib = "dlib"
    fan = "fan"


# ----------------------------------------------------------------------------------------------
# animate-train

train_app = typer_app()


@train_app.command()
def train_command(
    cache: Optional[Path] = typer.Option(None, "--cache", help="Preprocessed cache folder (animate-preprocess)."),
    photos: Optional[Path] = typer.Option(T.photos, "--photos",
                                          help="Photo cache (animate-preprocess-photos) to mix into the video episodes."),
    photo_share: float = typer.Option(T.photo_share, "--photo-share",
                                      help="Share of episodes made from one photo (with --photos)."),
    # not "--run": under torchrun that would abbreviate torchrun's own --run-path
    run_dir: Path = typer.Option(T.run, "--run-dir", help="Run folder: checkpoint, losses.csv, samples."),
    preset: Preset = typer.Option(T.preset, "--preset", help="Network sizes."),
    generator: Generator = typer.Option(T.generator, "--generator", help="fsth (the paper's) or warp."),
    resolution: Optional[int] = typer.Option(T.resolution, "--resolution", help="Image size (default: the preset's)."),
    paint_size: Optional[int] = typer.Option(T.paint_size, "--paint-size",
                                             help="Side of the warp generator's mouth painter crop (default: the "
                                                  "preset's; 0 = no painter)."),
    eye_paint_size: Optional[int] = typer.Option(T.eye_paint_size, "--eye-paint-size",
                                                 help="Side of the warp generator's eye painter crop (default: the "
                                                      "preset's; 0 = no eye painter)."),
    photo_kinds: str = typer.Option(",".join(f"{w:g}" for w in T.photo_kinds), "--photo-kinds",
                                    help="Shares of the photo episodes' kinds: another view, the mouth shut, the "
                                         "eyes shut (three numbers, e.g. 0.2,0,0.8)."),
    k_shots: int = typer.Option(T.k_shots, "--k-shots", help="Shots per episode."),
    batch_size: int = typer.Option(T.batch_size, "--batch-size", help="Episodes per process per step."),
    lr_g: float = typer.Option(T.lr_g, "--lr-g", help="Learning rate of E and G."),
    lr_d: float = typer.Option(T.lr_d, "--lr-d", help="Learning rate of D."),
    lr_paint: float = typer.Option(T.lr_paint, "--lr-paint", help="Learning rate of the painters."),
    d_steps: int = typer.Option(T.d_steps, "--d-steps", help="D updates per E/G update."),
    perceptual_size: int = typer.Option(T.perceptual_size or 0, "--perceptual-size",
                                        help="Input size of L_CNT's networks (0 = full resolution)."),
    max_steps: Optional[int] = typer.Option(T.max_steps, "--max-steps", help="Stop at this step."),
    max_minutes: Optional[float] = typer.Option(T.max_minutes, "--max-minutes", help="Stop cleanly after this long."),
    checkpoint_every: int = typer.Option(T.checkpoint_every, "--checkpoint-every", help="Steps between checkpoints."),
    log_every: int = typer.Option(T.log_every, "--log-every", help="Steps between rows of losses.csv."),
    sample_every: int = typer.Option(T.sample_every, "--sample-every", help="Steps between sample grids (0 = none)."),
    val_per_identity: int = typer.Option(T.val_per_identity, "--val-per-identity",
                                         help="Videos per identity held out of training."),
    episodes_per_epoch: Optional[int] = typer.Option(T.episodes_per_epoch, "--episodes-per-epoch",
                                                     help="Default: one per training video."),
    workers: int = typer.Option(T.workers, "--workers", help="Data loader processes."),
    seed: int = typer.Option(T.seed, "--seed"),
    device: str = typer.Option(T.device, "--device", help="auto, cpu, cuda or cuda:N."),
    amp: bool = typer.Option(T.amp, "--amp/--no-amp", help="bf16 autocast on CUDA."),
    augment: bool = typer.Option(T.augment, "--augment/--no-augment", help="Mirror and colour-jitter episodes."),
    mouth_weight: float = typer.Option(T.mouth_weight, "--mouth-weight", help="Weight of the mouth term (0 = off)."),
    random_reference: float = typer.Option(T.random_reference, "--random-reference",
                                           help="Share of episodes warping a random shot instead of the nearest."),
    painter_only: bool = typer.Option(T.painter_only, "--painter-only",
                                      help="Train one painter alone on its part's term (E, G's trunk, the other "
                                           "painter and D frozen; from --init weights)."),
    paint_part: str = typer.Option(T.paint_part, "--paint-part",
                                   help="With --painter-only: the mouth painter (mouth) or the eye painter (eyes)."),
    colour_weight: float = typer.Option(T.colour_weight, "--colour-weight",
                                        help="With --painter-only: weight of the painted part's colour term."),
    mouth_adv: float = typer.Option(T.mouth_adv, "--mouth-adv",
                                    help="With --painter-only: weight of a mouth critic's adversarial term (0 = off)."),
    lpips_weight: float = typer.Option(T.lpips_weight, "--lpips-weight",
                                       help="With --painter-only: weight of LPIPS on the painted part's crop."),
    threads: Optional[int] = typer.Option(T.threads, "--threads", help="CPU threads per process."),
    init: Optional[Path] = typer.Option(T.init, "--init", help="Start from this weights folder."),
    progress: bool = typer.Option(T.progress, "--progress/--no-progress", help="Loss table on stderr."),
    export_to: Optional[Path] = typer.Option(None, "--export", metavar="DIR",
                                             help="Write the run's inference weights to DIR and exit."),
):
    """Meta-learn E, G and D on a preprocessed cache, or resume the run in --run-dir; prints a JSON summary.
    With --export DIR: write the run's inference weights instead."""
    if export_to is not None:
        print(export(run_dir, export_to))
        return
    if cache is None:
        raise typer.BadParameter("needed for training (or give --export DIR)", param_hint="'--cache'")
    try:
        kinds = tuple(float(w) for w in photo_kinds.split(","))
    except ValueError:
        raise typer.BadParameter(f"three numbers separated by commas, got {photo_kinds!r}",
                                 param_hint="'--photo-kinds'") from None
    opts = TrainOptions(cache=str(cache), photos=None if photos is None else str(photos), photo_share=photo_share,
                        run=str(run_dir), preset=preset.value, generator=generator.value,
                        resolution=resolution, paint_size=paint_size, eye_paint_size=eye_paint_size,
                        photo_kinds=kinds, paint_part=paint_part, k_shots=k_shots, batch_size=batch_size,
                        lr_g=lr_g, lr_d=lr_d, lr_paint=lr_paint,
                        d_steps=d_steps, perceptual_size=perceptual_size or None, max_steps=max_steps,
                        max_minutes=max_minutes, checkpoint_every=checkpoint_every, log_every=log_every,
                        sample_every=sample_every, val_per_identity=val_per_identity,
                        episodes_per_epoch=episodes_per_epoch, workers=workers, seed=seed, device=device, amp=amp,
                        init=None if init is None else str(init), threads=threads, augment=augment,
                        mouth_weight=mouth_weight, random_reference=random_reference, progress=progress,
                        painter_only=painter_only, colour_weight=colour_weight,
                        mouth_adv=mouth_adv, lpips_weight=lpips_weight)
    summary = train(opts)
    if summary["rank"] == 0:
        print(json.dumps(summary))


# ----------------------------------------------------------------------------------------------
# animate-preprocess

preprocess_app = typer_app()


@preprocess_app.command()
def preprocess_command(
    src: Path = typer.Argument(..., help="Folder with <identity>/<video>/<clip>.mp4."),
    dst: Path = typer.Argument(..., help="Cache folder to create or complete."),
    resolution: int = typer.Option(P.resolution, "--resolution", help="Face crop size in pixels."),
    frames_per_clip: int = typer.Option(P.frames_per_clip, "--frames-per-clip", help="Crops kept per clip."),
    workers: int = typer.Option(P.workers, "--workers", help="Processes."),
    detector: Detector = typer.Option(P.detector, "--detector", help="Landmark backend."),
    max_frames: Optional[int] = typer.Option(P.max_frames, "--max-frames", help="Read at most this many frames per clip."),
    limit: Optional[int] = typer.Option(P.limit, "--limit", help="Only the first N clips (trial runs)."),
    progress: bool = typer.Option(P.progress, "--progress/--no-progress", help="Progress bar."),
):
    """Turn a VoxCeleb-layout folder of clips into a training cache: face crops + landmarks per clip
    (resumable); prints a JSON summary."""
    opts = PreprocessOptions(resolution=resolution, frames_per_clip=frames_per_clip, workers=workers,
                             detector=detector.value, max_frames=max_frames, limit=limit, progress=progress)
    print(json.dumps(preprocess_dataset(src, dst, opts)))


# ----------------------------------------------------------------------------------------------
# animate-preprocess-photos

photos_app = typer_app()


@photos_app.command()
def preprocess_photos_command(
    src: Path = typer.Argument(..., help="Folder of photos: <person>/<file>.jpg (LFW), or images side by side."),
    dst: Path = typer.Argument(..., help="Cache folder to create or complete (outside SRC)."),
    resolution: int = typer.Option(PH.resolution, "--resolution", help="Face crop size in pixels."),
    workers: int = typer.Option(PH.workers, "--workers", help="Processes."),
    detector: Detector = typer.Option(PH.detector, "--detector", help="Landmark backend."),
    limit: Optional[int] = typer.Option(PH.limit, "--limit", help="Only the first N photos (trial runs)."),
    progress: bool = typer.Option(PH.progress, "--progress/--no-progress", help="Progress bar."),
):
    """Cache face crops + landmarks of a folder of photos for training, with each photo's person and how open
    its mouth and eyes are (resumable; skipped photos listed with the reason); prints a JSON summary."""
    opts = PhotoCacheOptions(resolution=resolution, workers=workers, detector=detector.value, limit=limit,
                             progress=progress)
    print(json.dumps(cache_photos(src, dst, opts)))


# ----------------------------------------------------------------------------------------------
# animate-fit-selection

selection_app = typer_app()


@selection_app.command()
def fit_selection_command(
    cache: Path = typer.Argument(..., help="Preprocessed training cache (animate-preprocess)."),
    weights: Path = typer.Argument(..., help="Weights folder whose config.json gets the selection weights."),
    shots: int = typer.Option(S.shots, "--shots", help="Random frames of each clip warped to each target."),
    targets: int = typer.Option(S.targets, "--targets", help="Target frames per clip."),
    max_clips: Optional[int] = typer.Option(S.max_clips, "--max-clips"),
    warp_reg: List[float] = typer.Option(list(S.warp_regs), "--warp-reg", metavar="REG",
                                         help="A spline regularisation to try (repeatable); the best mean SSIM is kept."),
    seed: int = typer.Option(S.seed, "--seed"),
    threads: Optional[int] = typer.Option(S.threads, "--threads", help="CPU threads."),
    progress: bool = typer.Option(S.progress, "--progress/--no-progress", help="Progress bars."),
):
    """Learn which shot the warp model warps (a score of landmark distances) and how smoothly (the spline's
    regularisation), from warps of the cache's frames, into the weights' config.json; prints a JSON report."""
    opts = FitSelectionOptions(shots=shots, targets=targets, max_clips=max_clips, warp_regs=tuple(warp_reg),
                               seed=seed, threads=threads, progress=progress)
    print(json.dumps(fit_selection_into(cache, weights, opts)))


def train_main(argv: Optional[List[str]] = None) -> int:
    return run_app(train_app, argv, "animate-train")


def preprocess_main(argv: Optional[List[str]] = None) -> int:
    return run_app(preprocess_app, argv, "animate-preprocess")


def preprocess_photos_main(argv: Optional[List[str]] = None) -> int:
    return run_app(photos_app, argv, "animate-preprocess-photos")


def fit_selection_main(argv: Optional[List[str]] = None) -> int:
    return run_app(selection_app, argv, "animate-fit-selection")


def train_entry() -> None:
    raise SystemExit(train_main())


def preprocess_entry() -> None:
    raise SystemExit(preprocess_main())


def preprocess_photos_entry() -> None:
    raise SystemExit(preprocess_photos_main())


def fit_selection_entry() -> None:
    raise SystemExit(fit_selection_main())


if __name__ == "__main__":  # python -m animate_cli.train.cli: what torchrun starts in each process
    train_entry()
