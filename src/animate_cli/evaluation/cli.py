"""`animate-evaluate`: the protocol over a folder of clips (protocol.py), or `--compare A.json B.json`.
Every default comes from EvaluateOptions."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from ..cli_common import run_app, typer_app
from ..errors import AnimateError
from .compare import compare, print_comparison, print_table, read_report
from .protocol import EvaluateOptions, evaluate

D = EvaluateOptions()

app = typer_app()


@app.command()
def evaluate_command(
    clips: Optional[Path] = typer.Argument(None, help="Folder of video clips (searched recursively)."),
    model: List[str] = typer.Option(list(D.models), "--model", "-m",
                                    help="warp, default or a weights folder (repeatable)."),
    shots: List[int] = typer.Option(list(D.shots), "--shots", help="Shots K of a self-reenactment setting (repeatable)."),
    targets: int = typer.Option(D.targets, "--targets", help="Target frames per clip."),
    mouth_targets: int = typer.Option(D.mouth_targets, "--mouth-targets",
                                      help="Also the mouth metric on up to this many open-mouth frames per clip "
                                           "(settings \"open K=k\"; 0: none)."),
    eye_targets: int = typer.Option(D.eye_targets, "--eye-targets",
                                    help="Also the eye metric on up to this many open-eyed frames per clip, its "
                                         "most shut-eyed frame as the one shot (setting \"reopen K=1\"; 0: none)."),
    finetune_steps: Optional[int] = typer.Option(D.finetune_steps, "--finetune-steps",
                                                 help="Fine-tuning steps (default: as animate does, 0 on a CPU and 40 on a GPU)."),
    out: Path = typer.Option(D.out, "--out", help="The JSON report."),
    device: str = typer.Option(D.device, "--device", help="cpu, cuda or auto."),
    max_clips: Optional[int] = typer.Option(D.max_clips, "--max-clips"),
    max_frames: Optional[int] = typer.Option(D.max_frames, "--max-frames", help="Read at most this many frames per clip."),
    self_reenactment: bool = typer.Option(D.self_reenactment, "--self/--no-self",
                                          help="The self-reenactment settings (one per --shots)."),
    cross: bool = typer.Option(D.cross, "--cross/--no-cross", help="Also the cross-identity setting."),
    follow: Optional[bool] = typer.Option(
        D.follow, "--follow/--no-follow",
        help="The follow setting: portraits driven by other people's clips through the whole pipeline, eyes, gaze, "
             "mouth and head shake measured (default: when mediapipe's mesh is installed)."),
    follow_frames: int = typer.Option(D.follow_frames, "--follow-frames", help="Driver frames per follow pair."),
    detector: str = typer.Option(D.detector, "--detector",
                                 help="Landmarks for the crops and re-detection, and the follow pairs' driving ones."),
    measure_with: str = typer.Option(D.measure_with, "--measure-with",
                                     help="The follow setting's measurer: another detector than the driving one."),
    fid: bool = typer.Option(D.fid, "--fid/--no-fid", help="FID (from 64 frames per setting)."),
    seed: int = typer.Option(D.seed, "--seed", help="Seed of fine-tuning."),
    progress: bool = typer.Option(D.progress, "--progress/--no-progress", help="Progress lines and the table."),
    compare_reports: Optional[Tuple[Path, Path]] = typer.Option(
        None, "--compare", metavar="A.json B.json",
        help="Instead of evaluating: pair two reports' frames and say where B beats A."),
):
    """Measure animators on a folder of clips (self-reenactment at each --shots, cross-identity, follow): writes the
    report to --out and prints its table. With --compare A.json B.json: pair the two reports' frames instead."""
    if compare_reports is not None:
        rows = compare(*(read_report(p) for p in compare_reports))
        if not rows:
            raise AnimateError("the two reports share no setting (shots, cross-identity) to compare")
        print_comparison(rows, *(str(p) for p in compare_reports))
        return
    if clips is None:
        raise AnimateError("give a folder of clips to evaluate (or --compare A.json B.json)")
    opts = EvaluateOptions(models=tuple(model), shots=tuple(shots), targets=targets, mouth_targets=mouth_targets,
                           eye_targets=eye_targets, finetune_steps=finetune_steps,
                           out=str(out), device=device, self_reenactment=self_reenactment, cross=cross,
                           max_clips=max_clips, max_frames=max_frames,
                           fid=fid, seed=seed, progress=progress, follow=follow, follow_frames=follow_frames,
                           measure_with=measure_with, detector=detector)
    report = evaluate(clips, opts)
    if progress:
        print_table(report)


def main(argv: Optional[List[str]] = None) -> int:
    return run_app(app, argv, "animate-evaluate")


def entry() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
