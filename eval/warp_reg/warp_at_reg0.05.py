"""Ablation: the plain `warp` model with the default model's spline regularisation (0.05), on val."""
import torch
from animate_cli import animate
from animate_cli.evaluate import evaluate
torch.set_num_threads(1)
animate.WarpAnimator.warp_reg = 0.05
evaluate("../shared/data/val", ["warp"], shots=[1, 8], out_json="eval/warp_reg/warp_at_reg0.05.json", cross=False, fid=False, progress=False)
