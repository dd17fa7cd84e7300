"""How often a video's shots switch, and how much the result moves from frame to frame, with and without the
hysteresis of `Animator.start_video` (references.held_argmin). A portrait, a driver and a --ref of the same
person as the portrait (a video gives 8 shots); crop-only results, feed-forward. Usage:

  PYTHONPATH=src python scripts/shot_switches.py PORTRAIT DRIVER REF [--model default]
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np

import animate_cli.animators as animators
from animate_cli.animate import AnimateOptions, animate
from animate_cli.video import read_frames


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("portrait", type=Path)
    ap.add_argument("driver", type=Path)
    ap.add_argument("ref", type=Path)
    ap.add_argument("--model", default="default")
    a = ap.parse_args()
    seen: list[tuple[list, list]] = []
    plain = animators.reference_motion

    def spy(*args, **kw):  # every batch's face and mouth shots
        m = plain(*args, **kw)
        seen.append((m.chosen.tolist(), m.mouth_chosen.tolist()))
        return m

    animators.reference_motion = spy
    held_start = animators.Animator.start_video
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("per frame", "held"):
            animators.Animator.start_video = (lambda self: None) if mode == "per frame" else held_start
            seen.clear()
            out = Path(tmp) / "out.mp4"
            animate(a.portrait, a.driver, out, AnimateOptions(model=a.model, refs=[a.ref], shots=8, finetune_steps=0,
                                                              crop_only=True, overwrite=True, audio=False))
            face, mouth = sum((f for f, _ in seen), []), sum((m for _, m in seen), [])
            switches = lambda x: sum(p != q for p, q in zip(x, x[1:]))  # noqa: E731
            frames = np.stack([f.astype(np.float32) for f in read_frames(out)])
            h, w = frames.shape[1:3]
            step = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
            lips = frames[:, int(h * .55):int(h * .95), int(w * .25):int(w * .75)]
            lip_step = np.abs(np.diff(lips, axis=0)).mean(axis=(1, 2, 3))
            print(f"{mode:9s} {len(face)} frames: face shot switches {switches(face)}, mouth shot switches "
                  f"{switches(mouth)}; frame-to-frame change (levels) whole crop {step.mean():.2f} (p95 "
                  f"{np.percentile(step, 95):.2f}), mouth box {lip_step.mean():.2f} (p95 {np.percentile(lip_step, 95):.2f})")


if __name__ == "__main__":
    main()
