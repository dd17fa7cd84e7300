"""Pack what scripts/gpu_check.sh needs into one small folder for a machine that gets files, not packages.

A lent GPU machine may take only tens of MB with the working tree and may lack the stlpips package. This
writes DIR/site/stlpips_pytorch/ (the perceptual VGG weights alone, in fp16: half the size; they are
widened back to fp32 on load) and DIR/cache/ (whole clips of a preprocessed cache, one per video in a
seeded random order, up to --mb MB, with their own index.json). Run gpu_check.sh with
CACHE=DIR/cache and EXTRA_PYTHONPATH=DIR/site.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import torch

from animate_cli.models.perceptual import stlpips_weights_path


def pack_weights(dst: Path) -> Path:
    src = stlpips_weights_path()
    if src is None:
        raise SystemExit("error: stlpips weights not installed (pip install --no-deps stlpips-pytorch)")
    out = dst / "site" / "stlpips_pytorch" / src.relative_to(src.parents[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    (dst / "site" / "stlpips_pytorch" / "__init__.py").touch()
    state = torch.load(src, map_location="cpu", weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, out)
    return out


def pack_cache(cache: Path, dst: Path, max_bytes: int, seed: int = 0) -> list[dict]:
    index = json.loads((cache / "index.json").read_text())
    by_video: dict = {}
    for entry in index:
        by_video.setdefault((entry["identity"], entry["video"]), []).append(entry)
    videos = sorted(by_video)
    random.Random(seed).shuffle(videos)
    chosen, total = [], 0
    for v in videos:
        entry = by_video[v][0]
        size = (cache / entry["clip"]).stat().st_size
        if total + size <= max_bytes:
            chosen.append(entry)
            total += size
    for entry in chosen:
        (dst / "cache" / entry["clip"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cache / entry["clip"], dst / "cache" / entry["clip"])
    (dst / "cache" / "index.json").write_text(json.dumps(chosen, indent=0))
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cache", type=Path, help="a preprocessed cache (animate-preprocess)")
    ap.add_argument("dst", type=Path)
    ap.add_argument("--mb", type=float, default=19.0, help="size of the cache subset")
    a = ap.parse_args()
    if not (a.cache / "index.json").is_file():  # before writing anything
        raise SystemExit(f"error: no index.json in {a.cache} (make one with animate-preprocess)")
    print(pack_weights(a.dst))
    clips = pack_cache(a.cache, a.dst, int(a.mb * 1e6))
    print(f"{len(clips)} clips of {len({(c['identity'], c['video']) for c in clips})} videos")


if __name__ == "__main__":
    main()
