"""The `animate` command: argument parsing, progress bars, batch mode and one-line errors."""
from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .animate import AnimateOptions, animate, batch_items, load_animator, load_detector
from .animators import DEFAULT_MODEL
from .errors import AnimateError
from .config import FinetuneConfig
from .shots import VIDEO_SHOTS

try:  # typer >= 0.20 vendors click; older releases use click itself
    from typer.exceptions import TyperException as UsageProblem
except ImportError:  # pragma: no cover
    from click import ClickException as UsageProblem

err = Console(stderr=True)
DEFAULTS = AnimateOptions()  # every option's default comes from here
MAX_SIZE = 8192  # --size: larger than any face crop a portrait holds, and within H.264's limits

EXAMPLES = """\b
Examples:
  animate portrait.jpg driver.mp4 -o out.mp4                   one portrait
  animate me.jpg driver.mp4 -o out.mp4 --ref me2.jpg --ref me3.jpg
                                                               more shots, better likeness
  animate me.jpg driver.mp4 -o out.mp4 --ref clip_of_me.mp4 --shots 8
  animate portraits/ driver.mp4 -o results/                    batch (a sub-folder = one person)
  animate portrait.jpg driver.mp4 -o out.mp4 --model warp --preview
                                                               model-free baseline, side by side
  animate me.jpg driver.mp4 -o out.mp4 --save-person me.person keep the fine-tuned person...
  animate me.jpg other.mp4 -o out2.mp4 --person me.person      ...and reuse it without fine-tuning
"""


class Landmarks(str, Enum):
    auto = "auto"
    fan = "fan"
    dlib = "dlib"


class CliProgress:
    """rich progress bars on stderr for the pipeline's long stages."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bars = RichProgress(TextColumn("{task.description:<17}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                 console=err, transient=False, disable=quiet)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.bars.start()
        return self

    def __exit__(self, *exc):
        self.bars.stop()

    def start(self, stage, total):
        self.tasks[stage] = self.bars.add_task(stage, total=total, info="")

    def advance(self, stage, n=1, **info):
        if stage in self.tasks:
            text = "  ".join(f"{k} {v:.3f}" for k, v in info.items() if isinstance(v, (int, float)))
            self.bars.update(self.tasks[stage], advance=n, info=text)

    def finish(self, stage):
        tid = self.tasks.pop(stage, None)
        if tid is not None:
            done = next(t.completed for t in self.bars.tasks if t.id == tid)
            self.bars.update(tid, total=done, completed=done)

    def note(self, message):
        if not self.quiet:
            self.bars.console.print(f"[dim]{message}[/dim]")


def show_version(value: bool) -> None:
    if value:
        print(f"animate-cli {__version__}")
        raise typer.Exit()


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.command(help="Bring a portrait to life with the head motion and expressions of a driving video.",
             epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
def animate_command(
    portrait: Path = typer.Argument(..., help="Portrait image (photo or painting), or a folder of them for batch mode."),
    driver: Path = typer.Argument(..., help="Driving video of someone talking (mp4, mov, avi, mpg, webm, gif)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output .mp4 (a folder in batch mode)."),
    model: str = typer.Option(DEFAULTS.model, "--model", "-m",
                              help=f"'{DEFAULT_MODEL}' (bundled neural weights), 'warp' (model-free baseline), or a weights folder."),
    ref: List[Path] = typer.Option(list(DEFAULTS.refs), "--ref", metavar="PATH", help="Extra reference picture(s) of the same person: images, or a video. Repeatable."),
    shots: Optional[int] = typer.Option(DEFAULTS.shots, "--shots", "-n", help=f"How many reference frames to use in total (default: all given; {VIDEO_SHOTS} from a video)."),
    finetune_steps: Optional[int] = typer.Option(DEFAULTS.finetune_steps, "--finetune-steps", help=f"Fine-tuning steps on the shots (0 = feed-forward; default {FinetuneConfig().steps})."),
    person: Optional[Path] = typer.Option(DEFAULTS.person, "--person", help="Use a saved fine-tuned person instead of fine-tuning again."),
    save_person: Optional[Path] = typer.Option(DEFAULTS.save_person, "--save-person", help="Save the fine-tuned person to this file."),
    absolute: bool = typer.Option(DEFAULTS.absolute, "--absolute", help="Use the driver's face shape (self-reenactment) instead of relative motion."),
    find_best_frame: bool = typer.Option(DEFAULTS.find_best_frame, "--find-best-frame", help="Take as motion reference the driver frame most like the portrait."),
    landmarks: Landmarks = typer.Option(Landmarks(DEFAULTS.landmarks), "--landmarks", help="Landmark backend: fan (face-alignment, if its weights are cached), dlib (offline), auto."),
    face_index: int = typer.Option(DEFAULTS.face_index, "--face-index", help="Which face when there are several (0 = largest)."),
    crop_only: bool = typer.Option(DEFAULTS.crop_only, "--crop-only", help="Write only the square face crop, not the whole portrait."),
    size: Optional[int] = typer.Option(DEFAULTS.size, "--size", metavar="N", help="With --crop-only: the crop's side in pixels, even (default: the face's own size in the portrait)."),
    preview: bool = typer.Option(DEFAULTS.preview, "--preview", help="Also write OUT.preview.mp4: driver | portrait | result side by side."),
    no_audio: bool = typer.Option(not DEFAULTS.audio, "--no-audio", help="Do not copy the driver's audio."),
    overwrite: bool = typer.Option(DEFAULTS.overwrite, "--overwrite", help="Replace existing outputs."),
    device: str = typer.Option(DEFAULTS.device, "--device", help="auto (CUDA when present), cpu or cuda."),
    no_half: bool = typer.Option(not DEFAULTS.half, "--no-half", help="Keep full precision on CUDA."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, "--batch-size", min=1, help="Frames generated at once."),
    seed: int = typer.Option(DEFAULTS.seed, "--seed", help="Random seed (fine-tuning is deterministic for a given seed)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notes."),
    version: bool = typer.Option(False, "--version", is_eager=True, help="Show the version and exit.",
                                 callback=lambda v: show_version(v)),
):
    opts = AnimateOptions(model=model, landmarks=landmarks.value, face_index=face_index, refs=list(ref), shots=shots,
                          absolute=absolute, find_best_frame=find_best_frame, crop_only=crop_only, size=size,
                          preview=preview, audio=not no_audio, overwrite=overwrite, device=device, half=not no_half,
                          finetune_steps=finetune_steps, batch_size=batch_size, seed=seed, person=person,
                          save_person=save_person)
    if face_index < 0:
        raise AnimateError(f"--face-index must be 0 or more (got {face_index})")
    if finetune_steps is not None and finetune_steps < 0:
        raise AnimateError(f"--finetune-steps must be 0 or more (got {finetune_steps})")
    if size is not None and not crop_only:
        raise AnimateError("--size sets the side of the --crop-only video: add --crop-only")
    if size is not None and not (2 <= size <= MAX_SIZE and size % 2 == 0):
        raise AnimateError(f"--size must be even, from 2 to {MAX_SIZE} (got {size})")
    for path, what in [(portrait, "portrait"), (driver, "driver")] + [(r, "reference") for r in ref]:
        if not path.exists():
            raise AnimateError(f"{what} not found: {path}")
    if portrait.is_dir():
        run_batch(portrait, driver, output, opts, quiet)
        return
    with CliProgress(quiet) as progress:
        report = animate(portrait, driver, output, opts, progress=progress)
    if not quiet:
        err.print(f"wrote {report.output} ({report.frames} frames, {report.fps:.1f} fps end to end)")


def run_batch(folder: Path, driver: Path, out_dir: Path, opts: AnimateOptions, quiet: bool) -> None:
    """One MP4 per portrait; a failure is reported and skipped; exit 1 if any failed.
    The detector and the model load once; each portrait prepares the model afresh (no leak between them)."""
    if opts.save_person is not None:
        raise AnimateError("--save-person takes a single portrait, not a folder")
    if out_dir.suffix.lower() == ".mp4" or (out_dir.exists() and not out_dir.is_dir()):
        raise AnimateError(f"in batch mode -o must be a folder, not {out_dir}")
    items = batch_items(folder)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AnimateError(f"cannot create output folder {out_dir}: {e.strerror}")
    detector = load_detector(opts)
    animator = None  # loaded for the first portrait that needs it
    rows = []
    for item in items:
        target = out_dir / f"{item.name}.mp4"
        if target.exists() and not opts.overwrite:
            rows.append((item.name, "skipped", "output exists (--overwrite to redo)"))
            continue
        item_opts = type(opts)(**{**opts.__dict__, "refs": list(item.refs) + list(opts.refs)})
        if animator is None:
            animator = load_animator(opts)
        try:
            with CliProgress(quiet) as progress:
                if not quiet:
                    err.print(f"[bold]{item.name}[/bold]")
                report = animate(item.portrait, driver, target, item_opts, progress=progress, detector=detector,
                                 animator=animator)
            rows.append((item.name, "done", f"{target} ({report.frames} frames, {report.shots} shot(s))"))
        except AnimateError as e:
            rows.append((item.name, "failed", str(e)))
            err.print(f"[red]error[/red] {item.name}: {e}")
    table = Table(title=f"batch: {len(items)} portrait(s)")
    for col in ("portrait", "status", "detail"):
        table.add_column(col)
    for name, status, detail in rows:
        colour = {"done": "green", "failed": "red"}.get(status, "yellow")
        table.add_row(name, f"[{colour}]{status}[/{colour}]", detail)
    err.print(table)
    failed = sum(1 for r in rows if r[1] == "failed")
    if failed:
        raise AnimateError(f"{failed} of {len(items)} portrait(s) failed")


def main(argv: Optional[list] = None) -> int:
    """Entry point: every failure becomes one line on stderr and a non-zero exit code."""
    try:
        code = app(args=argv, standalone_mode=False, prog_name="animate")
        if code == 130:  # typer turns Ctrl-C into Exit(130)
            err.print("interrupted: no output was written for the unfinished video")
        return code if isinstance(code, int) else 0
    except AnimateError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return 1
    except typer.Exit as e:
        return e.exit_code
    except UsageProblem as e:
        err.print(f"error: {e.format_message()} (see animate --help)", highlight=False, soft_wrap=True)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted: no output was written for the unfinished video")
        return 130
    except Exception as e:  # a bug, not bad input: still one line, the traceback on request
        if os.environ.get("ANIMATE_DEBUG"):
            raise
        err.print(f"error: unexpected {type(e).__name__}: {e} (set ANIMATE_DEBUG=1 for details)",
                  highlight=False, soft_wrap=True)
        return 1


def entry() -> None:
    sys.exit(main())
