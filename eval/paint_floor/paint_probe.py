"""The default evaluated with more paint where the shot cannot fill the opening (stop 33, not adopted): the mouth
painter's blend changed at inference, the eyes' left alone. Modes:

  bias B [P]  the blend logit shifted by -B × uncovered^P (P = 1 unless given)
  floor       the painter's share at least `uncovered`: max(1 − m, uncovered)

usage: python eval/paint_floor/paint_probe.py MODE [B [P]] OUT.json MODEL DATA [animate-evaluate options...]
"""
import sys

import torch

import animate_cli.models.generator as g

mode = sys.argv[1]
args = sys.argv[2:]
if mode == "bias":
    B, P = float(args[0]), 1.0
    args = args[1:]
    try:
        P = float(args[0])
        args = args[1:]
    except ValueError:
        pass
elif mode != "floor":
    raise SystemExit("MODE is bias or floor")
plain = g._blend


def blend(painter, seen, face, masks, trunk, source, uncovered, gate=None):
    if gate is not None:  # an eye painter
        return plain(painter, seen, face, masks, trunk, source, uncovered, gate)
    image = g.face_only(seen, face)
    raw = painter(torch.cat([image, *masks, trunk * face], dim=1))
    tone, white, logit = raw[:, :1], raw[:, 1:2], raw[:, 2:]
    colour = g.tinted_colours(image, source, 2 * torch.sigmoid(tone), torch.sigmoid(white))
    shift = -B * uncovered.pow(P) if mode == "bias" else 0.0
    m = torch.sigmoid(logit + g.PAINT_PRIOR * (1 - 2 * uncovered) + shift)
    painted = torch.maximum(1 - m, uncovered) if mode == "floor" else 1 - m
    share = g.paint_window(seen.shape[-1], seen.device) * face * painted
    return share, share * (colour - seen)


g._blend = blend
out, model, data, *rest = args
sys.argv = ["animate-evaluate", data, "--model", model, *rest, "--no-cross", "--no-follow", "--no-fid",
            "--out", out, "--no-progress"]
from animate_cli.evaluation.cli import entry  # noqa: E402

entry()
