"""Evaluate with the mouth painter's share at least `uncovered` (the part of the opening the shot cannot fill).
usage: floor_probe.py OUT.json MODEL DATA [evaluate args...]"""
import sys, torch
import animate_cli.models.generator as g
orig = g._blend
def blend(painter, seen, face, masks, trunk, source, uncovered, gate=None):
    if gate is not None:
        return orig(painter, seen, face, masks, trunk, source, uncovered, gate)
    image = g.face_only(seen, face)
    raw = painter(torch.cat([image, *masks, trunk * face], dim=1))
    tone, white, logit = raw[:, :1], raw[:, 1:2], raw[:, 2:]
    colour = g.tinted_colours(image, source, 2 * torch.sigmoid(tone), torch.sigmoid(white))
    m = torch.sigmoid(logit + g.PAINT_PRIOR * (1 - 2 * uncovered))
    share = g.paint_window(seen.shape[-1], seen.device) * face * torch.maximum(1 - m, uncovered)
    return share, share * (colour - seen)
g._blend = blend
out, model, data, *rest = sys.argv[1:]
sys.argv = ["animate-evaluate", data, "--model", model, *rest, "--no-cross", "--no-follow", "--no-fid",
            "--out", out, "--no-progress"]
from animate_cli.evaluation.cli import entry
entry()
