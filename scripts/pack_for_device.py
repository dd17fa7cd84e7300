"""Pack what scripts/gpu_check.sh needs into one small folder for a machine that gets files, not packages.

A lent GPU machine takes 64 MiB with the working tree (about 18 MB of it tracked files) and lacks the
stlpips package. This writes DIR/site/stlpips_pytorch/ (the perceptual VGG weights alone, in fp16: 29 MB,
half the size; they are widened back to fp32 on load), DIR/cache/ (whole clips of a preprocessed video
cache, one per video in a seeded random order, up to --mb MB, with their own index.json) and, with
--photos, DIR/photos/ (photos of a photo cache, one per person, open and closed mouths alternating so that
mouth-closing episodes have photos to draw from, up to --photo-mb MB, in one flat folder with their own
photos.json). A 256² photo takes about 14 KB, a 32-frame clip about 0.4 MB. With the defaults (6 + 11 MB) and
about 18 MB of tracked files the tree is about 64 MB of files, under the 64 MiB (67.1 MB) a device call takes.
Run gpu_check.sh with CACHE=DIR/cache, PHOTOS=DIR/photos and EXTRA_PYTHONPATH=DIR/site.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import torch

from animate_cli.face.regions import OPEN_MOUTH_GAP
from animate_cli.models.perceptual import stlpips_weights_path
from animate_cli.train.photos import PHOTO_INDEX


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


def choose_photos(entries: list[dict], seed: int = 0) -> list[dict]:
    """One photo per person, people in a seeded random order, open-mouthed and other photos alternating
    (LFW has 29% open mouths; the mouth-closing episodes, half the photo episodes, can only use those)."""
    rng = random.Random(seed)
    shuffled = list(entries)
    rng.shuffle(shuffled)
    opened, other, people = [], [], set()
    for e in shuffled:
        if e["person"] not in people:
            people.add(e["person"])
            (opened if e["mouth_gap"] > OPEN_MOUTH_GAP else other).append(e)
    order = []
    for i in range(max(len(opened), len(other))):
        order += [e[i] for e in (opened, other) if i < len(e)]
    return order


def pack_photos(photos: Path, dst: Path, max_bytes: int, seed: int = 0) -> list[dict]:
    chosen, total = [], 0
    for entry in choose_photos(json.loads((photos / PHOTO_INDEX).read_text()), seed):
        size = (photos / entry["file"]).stat().st_size
        if total + size > max_bytes:
            break
        chosen.append(entry)
        total += size
    # one flat folder: a folder per person would add hundreds of directory entries to the carry
    (dst / "photos").mkdir(parents=True, exist_ok=True)
    packed = []
    for entry in chosen:
        flat = entry["file"].replace("/", "__")
        shutil.copy(photos / entry["file"], dst / "photos" / flat)
        packed.append({**entry, "file": flat})
    (dst / "photos" / PHOTO_INDEX).write_text(json.dumps(packed, indent=0))
    return packed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cache", type=Path, help="a preprocessed video cache (animate-preprocess)")
    ap.add_argument("dst", type=Path)
    ap.add_argument("--mb", type=float, default=6.0, help="size of the video cache subset")
    ap.add_argument("--photos", type=Path, help="a photo cache (animate-preprocess-photos)")
    ap.add_argument("--photo-mb", type=float, default=11.0, help="size of the photo cache subset")
    a = ap.parse_args()
    if not (a.cache / "index.json").is_file():  # before writing anything
        raise SystemExit(f"error: no index.json in {a.cache} (make one with animate-preprocess)")
    if a.photos is not None and not (a.photos / PHOTO_INDEX).is_file():
        raise SystemExit(f"error: no {PHOTO_INDEX} in {a.photos} (make one with animate-preprocess-photos)")
    print(pack_weights(a.dst))
    clips = pack_cache(a.cache, a.dst, int(a.mb * 1e6))
    print(f"{len(clips)} clips of {len({(c['identity'], c['video']) for c in clips})} videos")
    if a.photos is not None:
        chosen = pack_photos(a.photos, a.dst, int(a.photo_mb * 1e6))
        n_open = sum(e["mouth_gap"] > OPEN_MOUTH_GAP for e in chosen)
        print(f"{len(chosen)} photos of {len({e['person'] for e in chosen})} people, {n_open} open-mouthed")


if __name__ == "__main__":
    main()
