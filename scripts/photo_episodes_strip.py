"""Look at photo episodes: rows of original | other view | mouth shut | eyes shut, from a photo cache.

    python scripts/photo_episodes_strip.py CACHE out.png --rows 6 --seed 0

Rows are open-mouthed, open-eyed photos drawn at random; shots are made as training makes them.
"""
import argparse

import cv2
import numpy as np

from animate_cli.face.regions import OPEN_MOUTH_GAP
from animate_cli.train.photo_episodes import PhotoEpisodeDataset, make_shot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cache")
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    data = PhotoEpisodeDataset(a.cache, k_shots=1)
    rng = np.random.default_rng(a.seed)
    both = [i for i, e in enumerate(data.entries)
            if e["mouth_gap"] > OPEN_MOUTH_GAP and min(e["eye_gaps"]) > data.settings.open_eye_gap]
    rows = []
    for entry in rng.choice(both, size=min(a.rows, len(both)), replace=False):
        image, lms = data.photo(int(entry))
        shots = [make_shot(image, lms, kind, rng, data.settings)[0] for kind in ("view", "mouth", "eyes")]
        rows.append(np.concatenate([image, *shots], 1))
    cv2.imwrite(a.out, cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
