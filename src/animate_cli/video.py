"""Reading drivers and portraits, writing results, and keeping the user's files safe.

Everything goes through the ffmpeg that imageio-ffmpeg bundles, so any format it reads works the same on
every machine, frames are streamed (memory stays flat with video length) and results appear atomically:
they are written to a hidden temporary beside the target (named after our pid, see temp_path) and renamed
into place only when complete. No output may be one of the run's inputs (check_not_an_input).
"""
from __future__ import annotations

import glob
import logging
import os
import re
import secrets
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import imageio_ffmpeg
import numpy as np

from animate_cli.errors import AnimateError, interrupt_on_signals

# OpenCV logs its own warnings to stderr (e.g. "PNG input buffer is incomplete" before read_image's
# one-line error); every problem it reports reaches the user through our messages instead.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v", ".gif",
                            ".wmv", ".flv", ".3gp", ".ts", ".mts"})


class _QuietRotation(logging.Filter):
    """imageio-ffmpeg warns whenever ffmpeg rotates frames for us; that is expected, not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_QuietRotation())


def is_image(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_video(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class VideoInfo:
    path: Path
    width: int  # after rotation: the size of the frames read_frames yields
    height: int
    fps: float  # the constant rate read_frames delivers frames at (variable-rate files are resampled)
    n_frames: int | None  # packet count, exact for plain constant-rate files; else an estimate (±2)
    has_audio: bool
    rotation: int  # clockwise degrees (0/90/180/270) the stored frames are turned to show them upright
    duration: float | None = None


# ----------------------------------------------------------------------------------------------- probing

def _check_readable(path, what: str) -> Path:
    """Catch the plain file-system problems before ffmpeg turns them into cryptic messages."""
    path = Path(path)
    if not path.exists():
        raise AnimateError(f"{what} not found: {path}")
    if path.is_dir():
        raise AnimateError(f"{what} is a folder, not a file: {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise AnimateError(f"cannot read {what} {path}: {e.strerror or e}") from None
    return path


def _ffmpeg(args: list[str]) -> tuple[int, str]:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", *args]
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return done.returncode, done.stderr.decode("utf-8", "replace")


def _ffmpeg_reason(text: str, path: Path) -> str:
    """The last line of ffmpeg's complaint, without its '[demuxer @ 0x..]' prefix and the path."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if "output file" not in ln and not ln.startswith("frame=")]
    if not lines:
        return "ffmpeg cannot read it"
    reason = re.sub(r"^\[[^\]]*\]\s*", "", lines[-1]).replace(str(path), "").strip(" :")
    reason = re.sub(r"^Error opening input files?: ", "", reason)
    return reason or "ffmpeg cannot read it"


def _input_section(text: str) -> str:
    """Only what ffmpeg says about the input: output stream lines also mention 'Video:' and sizes."""
    start = text.find("Input #0")
    if start < 0:
        return ""
    ends = [i for i in (text.find("Stream mapping:", start), text.find("Output #0", start)) if i >= 0]
    return text[start:min(ends)] if ends else text[start:]


def _rate(token: str) -> float:
    """ffmpeg prints rates like '30', '29.97' or '1k'; NTSC rates are snapped back to n*1000/1001."""
    value = float(token[:-1]) * 1000 if token.endswith("k") else float(token)
    for base in (24, 30, 48, 60, 120):
        if abs(value - base * 1000 / 1001) < 0.01:
            return base * 1000 / 1001
    return value


def _fps_of(line: str) -> float:
    found = re.search(r"([\d.]+k?) fps", line)
    return _rate(found.group(1)) if found else 0.0


def _size_of(line: str) -> tuple[int, int] | None:
    found = re.search(r"(?<![0-9x])(\d{1,5})x(\d{1,5})(?![0-9x])", line)
    return (int(found.group(1)), int(found.group(2))) if found else None


# Non-square pixels (old SD video) are resampled so faces keep their shape; a no-op for square pixels.
_SQUARE_PIXELS = ["-vf", "scale=w='round(iw*sar)':h=ih,setsar=1"]


def _probe(path: Path) -> dict:
    """Decode one frame to nowhere: ffmpeg then reports the input streams and the size and rate of the
    frames it delivers (upright: it autorotates), and whether a frame could be decoded at all."""
    rc, text = _ffmpeg(["-i", str(path), "-map", "0:v:0", *_SQUARE_PIXELS, "-frames:v", "1", "-f", "null", "-"])
    section = _input_section(text)
    if not section:
        raise AnimateError(f"{path} is not a video ffmpeg can read ({_ffmpeg_reason(text, path)})")
    video = re.search(r"Stream #0:\d+[^\n]*?: Video: [^\n]*", section)
    if video is None:
        raise AnimateError(f"{path} has no video stream")
    # Rotation lives in the side data printed after the stream line (until the next stream).
    stream_text = section[video.end():]
    stream_text = stream_text.split("Stream #", 1)[0]
    rotation = 0
    matrix = re.search(r"display ?matrix: rotation of (-?[\d.]+) degrees", stream_text, re.IGNORECASE)
    tag = re.search(r"^\s*rotate\s*:\s*(-?\d+)", stream_text, re.MULTILINE)
    if matrix:  # counter-clockwise degrees
        rotation = int(round(-float(matrix.group(1)) / 90.0)) * 90 % 360
    elif tag:  # clockwise degrees (older files)
        rotation = int(round(int(tag.group(1)) / 90.0)) * 90 % 360
    output = re.search(r"Output #0.*?Stream #0:0[^\n]*?: Video: ([^\n]*)", text, re.DOTALL)
    decoded = re.findall(r"frame=\s*(\d+)", text)
    if rc != 0 or output is None or not decoded or int(decoded[-1]) == 0:
        raise AnimateError(f"video {path} has no frame that can be decoded (empty or corrupt)")
    size = _size_of(output.group(1))
    if size is None:
        raise AnimateError(f"cannot read {path}: ffmpeg reports no frame size")
    # The rate ffmpeg would deliver frames at; an absurd one (millisecond timestamps) falls back to the
    # stream's average rate.
    fps = _fps_of(output.group(1))
    if not 1.0 <= fps <= 240.0:
        fps = _fps_of(video.group(0)) or 25.0
    duration = None
    dur = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", section)
    if dur:
        duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3))
    return dict(width=size[0], height=size[1], fps=fps, avg_fps=_fps_of(video.group(0)), rotation=rotation,
                duration=duration, has_audio=" Audio: " in section)


def probe_video(path) -> VideoInfo:
    """Size, rate, rotation, audio and frame count of a video; fails early (one line) on files that
    would fail later, including ones whose first frame cannot be decoded."""
    path = _check_readable(path, "video")
    head = _probe(path)
    # Copying packets to nowhere is fast (no decoding) and counts them.
    _, text = _ffmpeg(["-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"])
    counts = re.findall(r"frame=\s*(\d+)", text)
    n_frames = int(counts[-1]) if counts and int(counts[-1]) > 0 else None
    variable = head["avg_fps"] > 0 and abs(head["avg_fps"] - head["fps"]) > 0.01 * head["fps"]
    if variable or n_frames is None:  # frames get duplicated/dropped to a constant rate when decoding
        n_frames = round(head["duration"] * head["fps"]) if head["duration"] else None
    return VideoInfo(path=path, width=head["width"], height=head["height"], fps=head["fps"],
                     n_frames=n_frames, has_audio=head["has_audio"], rotation=head["rotation"],
                     duration=head["duration"])


# ----------------------------------------------------------------------------------------------- reading

def _decode(path: Path, fps: float, max_frames: int | None) -> Iterator[np.ndarray]:
    """ffmpeg turns the frames upright itself (autorotation) and resamples to a constant `fps`, so the
    frame count matches the rate the writer uses and the audio stays in sync. The fps filter places
    frames by timestamp only (`-fps_mode cfr` also trusts packet durations and mangles some VFR files)."""
    rate = str(Fraction(fps).limit_denominator(1001))
    output = ["-map", "0:v:0", "-vf", f"{_SQUARE_PIXELS[1]},fps={rate}"]
    gen = imageio_ffmpeg.read_frames(str(path), output_params=output)
    try:
        try:
            meta = next(gen)
        except (OSError, RuntimeError, StopIteration, IndexError, AttributeError) as e:
            raise AnimateError(f"cannot decode video {path}: {_ffmpeg_reason(str(e), path)}") from None
        width, height = meta["size"]
        count = 0
        while max_frames is None or count < max_frames:
            try:
                raw = next(gen)
            except StopIteration:
                return
            except RuntimeError as e:
                raise AnimateError(f"video {path} is corrupt after frame {count}") from e
            count += 1
            yield np.frombuffer(raw, np.uint8).reshape(height, width, 3).copy()
    finally:
        gen.close()


def read_frames(path, max_frames: int | None = None,
                note: Callable[[str], None] | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames, upright, one at a time (a driver may be longer than memory allows).

    A file cut short (a copy or download that stopped) often still decodes, only with fewer frames
    than its header promises; given `note`, reading it to the end calls note() with one line saying so."""
    path = _check_readable(path, "video")
    head = _probe(path)
    count = 0
    for frame in _decode(path, head["fps"], max_frames):
        count += 1
        yield frame
    if count == 0 and max_frames != 0:
        raise AnimateError(f"video {path} has no frame that can be decoded (empty or corrupt)")
    if note is not None and (max_frames is None or count < max_frames):
        message = shortfall_note(path, count, promised_frames(path, head["fps"]))
        if message:
            note(message)


def promised_frames(path, fps: float) -> int | None:
    """How many frames at `fps` the container header says the video stream holds, from the stream's own
    duration (the file's duration also covers a longer sound track); None when the header does not say."""
    _, text = _ffmpeg(["-v", "trace", "-i", str(path)])  # no output named: ffmpeg stops after the header
    video = re.search(r"Stream #0:(\d+)[^\n]*?: Video:", _input_section(text))
    if video is None:
        return None
    stream = re.search(rf"\bstream {video.group(1)}: start_time: \S+ duration: ([\d.]+)", text)
    if stream is None and len(re.findall(r"Stream #0:\d+", _input_section(text))) == 1:
        stream = re.search(r"\bformat: start_time: \S+ duration: ([\d.]+)", text)  # mkv: only the file's
    return round(float(stream.group(1)) * fps) if stream else None


def shortfall_note(path, decoded: int, promised: int | None) -> str | None:
    """One line when clearly fewer frames decoded than promised; resampling to a constant rate may
    shift the count by a frame or two, so small differences pass."""
    if promised is None or promised - decoded <= max(2, round(0.02 * promised)):
        return None
    return (f"{Path(path).name} ends early: {decoded} of the {promised} frames its header promises could be "
            "decoded (the file is cut short or damaged)")


@contextmanager
def stderr_silenced() -> Iterator[None]:
    """Native libraries that print to the process's stderr past any log level: libpng reporting damage
    ("libpng error: PNG input buffer is incomplete"; read_image says it in one line), mediapipe and TF Lite
    starting up. Whatever another thread writes to stderr in these milliseconds is lost too (a progress
    refresh)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to protect
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def read_image(path) -> np.ndarray:
    """RGB uint8 HWC. np.fromfile + imdecode reads unicode paths (cv2.imread does not on Windows);
    IMREAD_COLOR applies EXIF orientation and turns gray/RGBA into 3 channels."""
    path = _check_readable(path, "image")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise AnimateError(f"cannot read image {path}: {e.strerror or e}") from None
    with stderr_silenced():
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    del data
    if bgr is None:
        raise AnimateError(f"{path} is not an image that can be read (png, jpg, bmp, webp, tiff)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)  # in place: a huge portrait is held once


# ----------------------------------------------------------------------------------------------- writing

def check_writable(path, overwrite: bool) -> Path:
    """Refuse an output file before any work is done rather than after minutes of rendering.
    Also removes what killed runs left of this output (remove_stale_temporaries)."""
    path = Path(path)
    if path.is_dir():
        raise AnimateError(f"output {path} is a folder")
    folder = path.parent
    if folder.is_dir():
        remove_stale_temporaries(path)
    if path.exists() and not overwrite:
        raise AnimateError(f"output {path} already exists (use --overwrite to replace it)")
    if not folder.is_dir():
        raise AnimateError(f"output folder {folder} does not exist")
    try:  # os.access lies for root and on some network drives: really create a file
        probe = temp_path(path, ".tmp")
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as e:
        raise AnimateError(f"cannot write to output folder {folder}: {e.strerror or e}") from None
    return path


def check_not_an_input(output, inputs: Iterable, what: str = "output") -> None:
    """No option, --overwrite included, lets a run replace one of its own inputs. Paths are compared
    after resolving symbolic links, and as files on disk when both exist (hard links, case-insensitive
    disks). `inputs` may hold None for inputs not given."""
    output = Path(output)
    real = os.path.realpath(output)
    for source in inputs:
        if source is None:
            continue
        source = Path(source)
        same = os.path.realpath(source) == real
        if not same and output.exists() and source.exists():
            try:
                same = os.path.samefile(output, source)
            except OSError:
                same = False
        if same:
            shown = source if str(source) == str(output) else f"{source}, the same file as {output}"
            raise AnimateError(f"{what} {output} would replace an input of this run ({shown}): choose another name")


def temp_path(path, suffix: str) -> Path:
    """Hidden, unique and beside the target, so os.replace is an atomic rename on the same disk.
    The pid in the name tells later runs whether the file's writer is still alive."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def _process_alive(pid: int) -> bool:
    if os.name != "posix" or pid <= 0:
        return True  # no harmless probe here (os.kill on Windows terminates): keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def remove_stale_temporaries(path) -> list[Path]:
    """Delete the temporaries of `path` (temp_path names) whose writing process is gone: a run killed
    outright (SIGKILL, power loss) cannot clean up after itself. Those of live processes, such as another
    run writing the same name right now, are kept. Returns what was removed."""
    path = Path(path)
    own = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[0-9a-f]{{8}}\.tmp(\.[A-Za-z0-9]+)?")
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"):
        found = own.fullmatch(candidate.name)
        if found is None or int(found.group(1)) == os.getpid() or _process_alive(int(found.group(1))):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:  # gone already (another run cleaned it) or not ours to delete
            pass
    return removed


def write_image(path, image: np.ndarray) -> None:
    """Atomic: a crash never leaves a half-written image behind."""
    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
    if path.parent and not path.parent.is_dir():
        raise AnimateError(f"output folder {path.parent} does not exist")
    remove_stale_temporaries(path)
    suffix = path.suffix.lower() or ".png"
    try:
        ok, data = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    except cv2.error:
        ok = False
    if not ok:
        raise AnimateError(f"cannot write image {path}: unknown image type {suffix!r}")
    tmp = temp_path(path, ".tmp" + suffix)
    try:
        data.tofile(str(tmp))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise AnimateError(f"cannot write image {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _Abort(BaseException):
    """Thrown into imageio's writer so it kills ffmpeg at once instead of finishing the encode."""


class VideoWriter:
    """H.264 yuv420p MP4, streamed to ffmpeg as frames arrive, renamed into place only on success.

    Use as a context manager: a clean exit publishes the video, an exception (KeyboardInterrupt too)
    deletes the partial file and leaves any existing output untouched. While inside, SIGTERM and SIGHUP
    raise errors.Interrupted so they clean up the same way (errors.interrupt_on_signals).
    """

    def __init__(self, path, fps: float, audio_from: Path | None = None, overwrite: bool = False,
                 quality: float = 7.0):
        self.path = check_writable(path, overwrite)
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = float(fps)
        self.overwrite = overwrite
        self.quality = quality  # imageio-ffmpeg scale 0..10; 7 is libx264 crf 15 (visually lossless)
        self.audio = None
        if audio_from is not None:
            audio_from = _check_readable(audio_from, "audio source")
            _, text = _ffmpeg(["-i", str(audio_from)])
            if " Audio: " in _input_section(text):
                self.audio = audio_from
        self._tmp = temp_path(self.path, ".tmp.mp4")
        self._muxed = temp_path(self.path, ".tmp.mp4")  # the second pass when there is sound
        self._signals = ExitStack()
        self._gen = None
        self._size: tuple[int, int] | None = None  # (h, w) of the frames given
        self._pad = (0, 0)
        self.frames_written = 0
        self._done = False

    def __enter__(self) -> "VideoWriter":
        self._signals.enter_context(interrupt_on_signals())
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        with self._signals:  # the handlers stay until the partial files are gone
            if exc_type is None:
                self.close()
            else:
                self.abort()
        return False

    def _start(self, height: int, width: int) -> None:
        self._size = (height, width)
        self._pad = (height % 2, width % 2)  # yuv420p needs even sizes
        size = (width + self._pad[1], height + self._pad[0])
        # veryfast + grain keeps pixel-scale detail of a moving face (issue 17: 0.96 of the face-box Laplacian
        # variance at crf 15, against 0.83 with "faster" alone) and encodes faster; files ~30% larger
        output = (["-f", "mp4", "-preset", "veryfast", "-tune", "grain"]
                  + ([] if self.audio else ["-movflags", "+faststart"]))
        self._gen = imageio_ffmpeg.write_frames(
            str(self._tmp), size, fps=self.fps, quality=self.quality, codec="libx264",
            pix_fmt_out="yuv420p", macro_block_size=1, ffmpeg_log_level="error", output_params=output)
        self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        if self._done:
            raise RuntimeError("VideoWriter is closed")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 HxWx3 frame, got {frame.dtype} {frame.shape}")
        if self._gen is None:
            self._start(*frame.shape[:2])
        elif frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the first frame's {self._size}")
        if any(self._pad):
            frame = np.pad(frame, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        try:
            self._gen.send(np.ascontiguousarray(frame))
        except OSError:
            raise AnimateError(f"ffmpeg stopped while writing {self.path}") from None
        self.frames_written += 1

    def close(self) -> None:
        """Finish the encode and publish the file; on any failure nothing is published."""
        if self._done:
            return
        try:
            if self._gen is None:
                raise AnimateError(f"no frames to write to {self.path}")
            self._gen.close()  # waits for ffmpeg to finish
            self._gen = None
            if not self._tmp.exists() or self._tmp.stat().st_size == 0:
                raise AnimateError(f"ffmpeg failed to write {self.path}")
            result = self._tmp if self.audio is None else self._add_audio()
            if self.path.exists() and not self.overwrite:
                raise AnimateError(f"output {self.path} already exists (use --overwrite to replace it)")
            if result != self._tmp:  # before publishing: once the output exists, nothing may be left over
                self._tmp.unlink(missing_ok=True)
            os.replace(result, self.path)
        except BaseException:
            self.abort()
            raise
        finally:
            self._done = True
            self._tmp.unlink(missing_ok=True)

    def _add_audio(self) -> Path:
        """Mux the sound in a second, fast pass (video copied, audio encoded): only now is the video's
        length known, so the sound is cut or padded to it exactly. Muxing while encoding relied on
        -shortest, which races with frames arriving through the pipe and sometimes let the sound run on."""
        seconds = f"{self.frames_written / self.fps:.6f}"
        rc, text = _ffmpeg(["-y", "-i", str(self._tmp), "-i", str(self.audio), "-map", "0:v:0", "-map", "1:a:0",
                            "-c:v", "copy", "-c:a", "aac", "-af", f"apad=whole_dur={seconds},atrim=end={seconds}",
                            "-movflags", "+faststart", "-f", "mp4", str(self._muxed)])
        if rc != 0 or not self._muxed.exists():
            raise AnimateError(f"could not add the sound of {self.audio} to {self.path}: "
                               f"{_ffmpeg_reason(text, self._muxed)}")
        return self._muxed

    def abort(self) -> None:
        """Stop ffmpeg and delete the partial files."""
        if self._gen is not None:
            gen, self._gen = self._gen, None
            try:
                gen.throw(_Abort())
            except (_Abort, StopIteration, Exception):
                pass
        self._tmp.unlink(missing_ok=True)
        self._muxed.unlink(missing_ok=True)
        self._done = True

    def __del__(self):
        if not getattr(self, "_done", True):
            try:
                self.abort()
            except Exception:
                pass
