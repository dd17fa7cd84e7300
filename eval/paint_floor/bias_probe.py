"""Evaluate with the mouth painter's blend logit shifted by -B × uncovered (more paint where the shot cannot fill
the opening). usage: bias_probe.py B OUT.json DATA [evaluate args...]"""
import sys, torch
import animate_cli.models.generator as g
orig = g._blend
B = float(sys.argv[1])
def blend(painter, seen, face, masks, trunk, source, uncovered, gate=None):
    if gate is not None:
        return orig(painter, seen, face, masks, trunk, source, uncovered, gate)
    image = g.face_only(seen, face)
    raw = painter(torch.cat([image, *masks, trunk * face], dim=1))
    tone, white, logit = raw[:, :1], raw[:, 1:2], raw[:, 2:]
    colour = g.tinted_colours(image, source, 2 * torch.sigmoid(tone), torch.sigmoid(white))
    P = float(__import__("os").environ.get("PROBE_POWER", "1"))
    m = torch.sigmoid(logit + g.PAINT_PRIOR * (1 - 2 * uncovered) - B * uncovered.pow(P))
    share = g.paint_window(seen.shape[-1], seen.device) * face * (1 - m)
    return share, share * (colour - seen)
g._blend = blend
out, data, *rest = sys.argv[2:]
sys.argv = ["animate-evaluate", data, "--model", "default", *rest, "--no-cross", "--no-follow", "--no-fid",
            "--out", out, "--no-progress"]
from animate_cli.evaluation.cli import entry
entry()
