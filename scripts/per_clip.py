"""One metric of animate-evaluate reports, clip by clip: the `--compare` table counts the clips a model wins;
this shows by how much on each. Usage:

  python scripts/per_clip.py SETTING METRIC REPORT.json:MODEL[:LABEL] [...]

An empty MODEL (`REPORT.json::LABEL`) takes the report's only model.

e.g. `python scripts/per_clip.py "reopen K=1" eye_lpips eval/eyes/val_reopen_warp.json:warp A.json:default:new`.
"""
import json
import sys

import numpy as np


def main(setting: str, metric: str, specs: list[str]) -> None:
    rows, names = [], None
    for spec in specs:
        path, model, *label = spec.split(":")
        models = json.load(open(path))["models"]
        if not model and len(models) == 1:
            model = next(iter(models))
        frames = models[model]["self"][setting]["per_frame"]
        clips, values = np.array(frames["clip"]), np.array(frames[metric], float)
        names = names or sorted(set(clips))
        rows.append((label[0] if label else model, [np.nanmean(values[clips == c]) for c in names], np.nanmean(values)))
    width = max(len(r[0]) for r in rows) + 2
    print("".ljust(width) + "".join(n[:14].rjust(16) for n in names) + "mean (frames)".rjust(16))
    for label, per_clip, mean in rows:
        print(label.ljust(width) + "".join(f"{v:16.4f}" for v in per_clip) + f"{mean:16.4f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
