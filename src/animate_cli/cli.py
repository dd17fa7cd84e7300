"""The `animate` command: argument parsing, progress bars, batch mode and one-line errors."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress as RichProgress, ProgressColumn, Task, TextColumn
from rich.table import Table
from rich.markup import escape
from rich.text import Text

from . import __version__
from .animate import AnimateOptions, Report, animate, batch_items, load_animator, load_detector
from .animators import DEFAULT_MODEL, set_threads
from .cli_common import EXIT_CODES_HELP, err, run_app
from .errors import AnimateError
from .config import FinetuneConfig
from .shots import VIDEO_SHOTS
from .video import remove_stale_temporaries

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
  animate me.jpg driver.mp4 -o out.mp4 --save-person me.person keep the prepared person...
  animate me.jpg other.mp4 -o out2.mp4 --person me.person      ...and reuse it without fine-tuning

\b
Speed (on a CPU the default is feed-forward; on a GPU it fine-tunes 40 steps):
  --finetune-steps 40   fine-tune on a CPU too (about 50 s more for the example)
  --model warp          no network at all: the reference warped
  --person me.person    a person saved with --save-person: no preparation again
"""


class Landmarks(str, Enum):
    auto = "auto"
    fan = "fan"
    dlib = "dlib"
    mesh = "mesh"


class CountColumn(ProgressColumn):
    """'step 3/40' or 'frame 12/72' ('frame 12' while the total is unknown)."""

    def render(self, task: Task) -> Text:
        total = f"/{int(task.total)}" if task.total is not None else ""
        return Text(f"{task.fields.get('unit', '')} {int(task.completed)}{total}".strip(), style="progress.download")


class TimeLeftColumn(ProgressColumn):
    """'1 min 5 s left' while running, 'took 12 s' when done, nothing until the rate is known."""

    max_refresh = 0.5  # steadier than every refresh

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text(f"took {duration(task.finished_time or task.elapsed or 0.0)}", style="progress.elapsed")
        left = task.time_remaining
        return Text("" if left is None else f"{duration(left)} left", style="progress.remaining")


def duration(seconds: float) -> str:
    """4.2 s, 41 s, 2 min 5 s, 1 h 3 min: what a person reads at a glance."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    return f"{minutes // 60} h {minutes % 60} min"


UNITS = {"fine-tuning": "step"}  # every other stage counts frames


class CliProgress:
    """rich progress bars on stderr for the pipeline's long stages: a count, a bar and the time left, in 80
    columns. The display starts with the first bar, so a run that fails before prints only its error.
    `verbose` adds a line of loss figures per fine-tuning step."""

    def __init__(self, quiet: bool, verbose: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self.bars = RichProgress(TextColumn("{task.description:<16}"), BarColumn(bar_width=24), CountColumn(),
                                 TimeLeftColumn(), console=console or err, transient=False, disable=quiet)
        self.tasks: dict[str, int] = {}
        self.started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.started:
            self.bars.stop()

    def start(self, stage, total):
        if not self.started:
            self.bars.start()
            self.started = True
        self.tasks[stage] = self.bars.add_task(stage, total=total, unit=UNITS.get(stage, "frame"))

    def advance(self, stage, n=1, **info):
        if stage not in self.tasks:
            return
        self.bars.update(self.tasks[stage], advance=n)
        if self.verbose and info:
            task = next(t for t in self.bars.tasks if t.id == self.tasks[stage])
            figures = " ".join(f"{k}={v:.3f}" for k, v in info.items() if isinstance(v, (int, float)))
            self.bars.console.print(f"[dim]{UNITS.get(stage, 'frame')} {int(task.completed)}/{int(task.total or 0)}"
                                    f" {figures}[/dim]", highlight=False, soft_wrap=True)

    def finish(self, stage):
        tid = self.tasks.pop(stage, None)
        if tid is not None:
            done = next(t.completed for t in self.bars.tasks if t.id == tid)
            self.bars.update(tid, total=done, completed=done)

    def note(self, message):
        if not self.quiet:
            self.bars.console.print(f"[dim]{escape(message)}[/dim]", highlight=False, soft_wrap=True)


def summary(report: Report) -> str:
    """The closing line: 'wrote out.mp4: 72 frames in 41 s (fine-tuning 35 s, rendering 5 s)'."""
    spent = ", ".join(f"{what} {duration(sec)}" for what, sec in report.spent())
    return (f"wrote {report.output}: {report.frames} frames in {duration(report.wall)}"
            + (f" ({spent})" if spent else ""))


def show_version(value: bool) -> None:
    if value:
        print(f"animate-cli {__version__}")
        raise typer.Exit()


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.command(help="Bring a portrait to life with the head motion and expressions of a driving video.",
             epilog=EXAMPLES + "\n" + EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
def animate_command(
    portrait: Path = typer.Argument(..., help="Portrait image (photo or painting), or a folder of them for batch mode. "
                                    "With --person: the portrait that person file was made from (checked)."),
    driver: Path = typer.Argument(..., help="Driving video of someone talking (mp4, mov, avi, mpg, webm, gif)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output .mp4 (a folder in batch mode)."),
    model: str = typer.Option(DEFAULTS.model, "--model", "-m",
                              help=f"'{DEFAULT_MODEL}' (bundled neural weights), 'warp' (model-free baseline), or a weights folder."),
    ref: List[Path] = typer.Option(list(DEFAULTS.refs), "--ref", metavar="PATH", help="Extra reference picture(s) of the same person: images, or a video. Repeatable. One with the mouth open lends its teeth to open-mouthed frames."),
    shots: Optional[int] = typer.Option(DEFAULTS.shots, "--shots", "-n", help=f"How many reference frames to use in total (default: all given; {VIDEO_SHOTS} from a video)."),
    finetune_steps: Optional[int] = typer.Option(DEFAULTS.finetune_steps, "--finetune-steps", help=f"Fine-tuning steps on the shots (0 = feed-forward; default {FinetuneConfig().steps} on a GPU, {FinetuneConfig().cpu_steps} on a CPU, where fine-tuning measured no gain)."),
    person: Optional[Path] = typer.Option(DEFAULTS.person, "--person", help="Use a person saved with --save-person instead of preparing it again (no fine-tuning); PORTRAIT must be the portrait it was made from."),
    save_person: Optional[Path] = typer.Option(DEFAULTS.save_person, "--save-person", help="Save the prepared person (shots, embedding, fine-tuned weights) to this file."),
    absolute: bool = typer.Option(DEFAULTS.absolute, "--absolute", help="Use the driver's face shape (self-reenactment) instead of relative motion."),
    find_best_frame: bool = typer.Option(DEFAULTS.find_best_frame, "--find-best-frame", help="Take as motion reference the driver frame most like the portrait."),
    landmarks: Landmarks = typer.Option(Landmarks(DEFAULTS.landmarks), "--landmarks", help="Landmark backend: fan (face-alignment, if its weights are cached), dlib (offline), mesh (mediapipe's face mesh with irises, if installed: see README), auto (fan when cached, else dlib)."),
    face_index: int = typer.Option(DEFAULTS.face_index, "--face-index", help="Which face of the portrait (and of --ref pictures) to animate when there are several: 0 = the largest."),
    driver_face: int = typer.Option(DEFAULTS.driver_face, "--driver-face", help="Which face of the driver to follow when there are several: 0 = the largest (in its first frame with a face)."),
    crop_only: bool = typer.Option(DEFAULTS.crop_only, "--crop-only", help="Write only the square face crop, not the whole portrait."),
    size: Optional[int] = typer.Option(DEFAULTS.size, "--size", metavar="N", help="With --crop-only: the crop's side in pixels, even (default: the face's own size in the portrait)."),
    preview: bool = typer.Option(DEFAULTS.preview, "--preview", help="Also write OUT.preview.mp4: driver | portrait | result side by side (at most 720 px tall)."),
    no_audio: bool = typer.Option(not DEFAULTS.audio, "--no-audio", help="Do not copy the driver's audio."),
    overwrite: bool = typer.Option(DEFAULTS.overwrite, "--overwrite", help="Replace existing outputs."),
    device: str = typer.Option(DEFAULTS.device, "--device", help="auto (CUDA when present), cpu or cuda."),
    no_half: bool = typer.Option(not DEFAULTS.half, "--no-half", help="Keep full precision on CUDA."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, "--batch-size", help="Frames generated at once."),
    threads: Optional[int] = typer.Option(DEFAULTS.threads, "--threads", help="CPU threads (default: OMP_NUM_THREADS if set, else the cores free now, at most 4)."),
    seed: int = typer.Option(DEFAULTS.seed, "--seed", help="Random seed (fine-tuning is deterministic for a given seed)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notes."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also the loss figures of every fine-tuning step."),
    version: bool = typer.Option(False, "--version", is_eager=True, help="Show the version and exit.",
                                 callback=lambda v: show_version(v)),
):
    opts = AnimateOptions(model=model, landmarks=landmarks.value, face_index=face_index, driver_face=driver_face,
                          refs=list(ref), shots=shots, absolute=absolute, find_best_frame=find_best_frame,
                          crop_only=crop_only, size=size, preview=preview, audio=not no_audio, overwrite=overwrite,
                          device=device, half=not no_half, finetune_steps=finetune_steps, batch_size=batch_size,
                          seed=seed, person=person, save_person=save_person, threads=threads)
    opts.check()
    if size is not None and not crop_only:
        raise AnimateError("--size sets the side of the --crop-only video: add --crop-only")
    if size is not None and not (2 <= size <= MAX_SIZE and size % 2 == 0):
        raise AnimateError(f"--size must be even, from 2 to {MAX_SIZE} (got {size})")
    for path, what in [(portrait, "portrait"), (driver, "driver")] + [(r, "reference") for r in ref]:
        if not path.exists():
            raise AnimateError(f"{what} not found: {path}")
    set_threads(opts.threads)
    if portrait.is_dir():
        run_batch(portrait, driver, output, opts, quiet, verbose)
        return
    with CliProgress(quiet, verbose) as progress:
        report = animate(portrait, driver, output, opts, progress=progress)
    if not quiet:
        err.print(summary(report), highlight=False, soft_wrap=True)


def run_batch(folder: Path, driver: Path, out_dir: Path, opts: AnimateOptions, quiet: bool,
              verbose: bool = False) -> None:
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
        target = item.output(out_dir)
        shown = item.portrait.parent.name + "/" if item.refs or item.portrait.parent != folder else item.portrait.name
        if target.exists() and not opts.overwrite:
            remove_stale_temporaries(target)
            rows.append((shown, target.name, "skipped", "done before (--overwrite to redo)"))
            continue
        item_opts = type(opts)(**{**opts.__dict__, "refs": list(item.refs) + list(opts.refs)})
        if animator is None:
            animator = load_animator(opts)
        try:
            with CliProgress(quiet, verbose) as progress:
                if not quiet:
                    err.print(f"[bold]{escape(shown)}[/bold] -> {escape(target.name)}", highlight=False)
                report = animate(item.portrait, driver, target, item_opts, progress=progress, detector=detector,
                                 animator=animator)
            rows.append((shown, target.name, "done", f"{report.frames} frames, {report.shots} shot(s) in "
                                                     f"{duration(report.wall)}"))
        except AnimateError as e:
            rows.append((shown, target.name, "failed", str(e)))
            err.print(f"[red]error[/red] {escape(shown)}: {escape(str(e))}", highlight=False, soft_wrap=True)
    table = Table(title=f"batch: {len(items)} portrait(s) -> {out_dir}")
    for col in ("portrait", "output", "status", "detail"):
        table.add_column(col)
    for shown, name, status, detail in rows:
        colour = {"done": "green", "failed": "red"}.get(status, "yellow")
        table.add_row(escape(shown), escape(name), f"[{colour}]{status}[/{colour}]", escape(detail))
    err.print(table)
    failed = sum(1 for row in rows if row[2] == "failed")
    if failed:
        raise AnimateError(f"{failed} of {len(items)} portrait(s) failed")


def main(argv: Optional[list] = None) -> int:
    """Entry point: every failure becomes one line on stderr and an exit code (cli_common.EXIT_CODES_HELP)."""
    return run_app(app, argv, "animate", interrupted="interrupted: no output was written for the unfinished video")


def entry() -> None:
    sys.exit(main())
