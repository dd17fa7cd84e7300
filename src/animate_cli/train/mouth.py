"""Train the warp generator's mouth refiner (models/mouth.py) alone, on mouth crops of the cache.

    animate-train-mouth --cache /work/cache/vox256 --weights weights/default --run-dir runs/mouth
    animate-train-mouth --run-dir runs/mouth --weights weights/default --export weights/new

Why a stage of its own: at full resolution the mouth is a few percent of the frame, and meta-learning
the whole generator on a CPU barely moves it. Here E and the generator's trunk are frozen and only run
forward; the refiner sees the trunk's output and learns, at 64², to turn stretched closed lips into an
open mouth (L1 + L_CNT on the crop). Episodes are the meta-learning ones: the reference warped is the
nearest shot or, with probability `--random-reference`, a random one (as with a single portrait).
The run folder holds `state.pt` (refiner, optimiser, step; our own file, read with weights_only=True),
`options.json` and `losses.csv`; re-running the same command resumes where it stopped.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..errors import AnimateError
from .episodes import EpisodeDataset, reference_warp

STATE = "state.pt"


@dataclass
class MouthOptions:
    cache: str = ""
    weights: str = "weights/default"  # E and the generator trunk (frozen)
    run: str = "runs/mouth"
    channels: int = 32  # refiner width
    batch_size: int = 16
    lr: float = 2e-4
    random_reference: float = 0.5
    max_steps: int | None = None
    max_minutes: float | None = None
    checkpoint_every: int = 50
    seed: int = 0
    threads: int | None = None
    progress: bool = True


def _sampler_order(n: int, epoch: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class MouthTrainer:
    def __init__(self, o: MouthOptions):
        from ..models.checkpoint import load_checkpoint
        from ..models.mouth import MouthRefiner

        if o.channels < 1:
            raise AnimateError(f"--channels must be 1 or more (got {o.channels})")
        if not 0.0 <= o.random_reference <= 1.0:
            raise AnimateError(f"--random-reference must be between 0 and 1 (got {o.random_reference})")
        if o.threads:
            torch.set_num_threads(o.threads)
        self.o = o
        self.run = Path(o.run)
        cfg, self.E, self.G, _ = load_checkpoint(Path(o.weights), device="cpu")
        if cfg.generator != "warp":
            raise AnimateError(f"{o.weights} is a {cfg.generator!r} model; only the warp generator has a mouth refiner")
        self.cfg = cfg
        for m in (self.E, self.G):
            m.eval().requires_grad_(False)
        torch.manual_seed(o.seed)
        self.refiner = MouthRefiner(o.channels)
        if self.G.mouth is not None and cfg.mouth_refiner == o.channels:  # go on from the weights' refiner
            self.refiner.load_state_dict(self.G.mouth.state_dict())
        self.opt = torch.optim.Adam(self.refiner.parameters(), lr=o.lr, betas=(0.5, 0.999))
        self.data = EpisodeDataset(o.cache, k_shots=8, resolution=cfg.resolution, split="train",
                                   val_per_identity=1, seed=o.seed, augment=True)
        self.step_no = 0

    # --- state ------------------------------------------------------------------------------------
    def save(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        tmp = self.run / (STATE + ".tmp")
        torch.save({"step": self.step_no, "refiner": self.refiner.state_dict(), "opt": self.opt.state_dict(),
                    "channels": self.o.channels}, tmp)
        os.replace(tmp, self.run / STATE)

    def load(self) -> bool:
        path = self.run / STATE
        if not path.exists():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["channels"] != self.o.channels:
            raise AnimateError(f"{path} holds a refiner of width {state['channels']}, not {self.o.channels}")
        self.refiner.load_state_dict(state["refiner"])
        self.opt.load_state_dict(state["opt"])
        self.step_no = int(state["step"])
        return True

    # --- one step ---------------------------------------------------------------------------------
    def losses(self, b: dict, draw: torch.Generator) -> dict:
        """L1 + L_CNT between the refined mouth crop and the true one."""
        from ..models.mouth import feather, mouth_crop
        from ..models.perceptual import content_loss

        with torch.no_grad():
            warped = reference_warp(b["x_shots"], b["lm_shots"], b["lm_t"], self.o.random_reference, draw,
                                    n_refs=self.G.cfg.n_refs, reg=self.G.cfg.warp_reg)
            bsz, k = b["x_shots"].shape[:2]
            e_hat = self.E(b["x_shots"].flatten(0, 1), b["y_shots"].flatten(0, 1)).view(bsz, k, -1).mean(1)
            image = self.G.trunk_output(b["y_t"], e_hat, warped=warped)
            lm = b["lm_t"]
            image_crop, y_crop, true_crop = (mouth_crop(t, lm) for t in (image, b["y_t"], b["x_t"]))
        out = image_crop + self.refiner.forward_crop(image_crop, y_crop) * feather(image_crop.shape[-1], image_crop.device)
        parts = {"l1": F.l1_loss(out, true_crop), "cnt": content_loss(out, true_crop),
                 "l1_before": F.l1_loss(image_crop, true_crop)}
        parts["total"] = parts["l1"] + parts["cnt"]
        return parts

    def step(self, b: dict) -> dict:
        draw = torch.Generator().manual_seed((self.o.seed * 1_000_003 + self.step_no) * 1_009)
        parts = self.losses(b, draw)
        self.opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        grads = [p.grad.norm() for p in self.refiner.parameters() if p.grad is not None]
        ok = bool(torch.isfinite(parts["total"]) and torch.isfinite(torch.stack(grads).norm()))
        if ok:  # NaN guard: a bad batch is skipped, never applied
            self.opt.step()
        self.step_no += 1
        out = {k: float(v.detach()) for k, v in parts.items()}
        out["skipped"] = int(not ok)
        return out

    def batches(self):
        """Batches in a seeded order per epoch, starting where the step count says (exact resume)."""
        n = len(self.data)
        per_epoch = n // self.o.batch_size
        if per_epoch < 1:
            raise AnimateError(f"an epoch of {n} episodes is smaller than one batch ({self.o.batch_size})")
        while True:
            epoch, offset = divmod(self.step_no, per_epoch)
            self.data.set_epoch(epoch)
            order = _sampler_order(n, epoch, self.o.seed)
            for i in range(offset, per_epoch):
                items = [self.data[j] for j in order[i * self.o.batch_size:(i + 1) * self.o.batch_size]]
                yield {k: torch.stack([it[k] for it in items]) for k in items[0]}

    def train(self) -> dict:
        o = self.o
        resumed = self.load()
        if not resumed:
            self.run.mkdir(parents=True, exist_ok=True)
            (self.run / "options.json").write_text(json.dumps(asdict(o), indent=1))
        t0, start = time.time(), self.step_no
        reason = "max steps"
        log = self.run / "losses.csv"
        for b in self.batches():
            if o.max_steps is not None and self.step_no >= o.max_steps:
                break
            row = {"step": self.step_no + 1, **{k: round(v, 5) for k, v in self.step(b).items()},
                   "episodes_per_s": round((self.step_no - start) * o.batch_size / max(time.time() - t0, 1e-9), 2)}
            new = not log.exists()
            with open(log, "a", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)
            if o.progress:
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            if o.checkpoint_every and self.step_no % o.checkpoint_every == 0:
                self.save()
            if o.max_minutes is not None and time.time() - t0 > o.max_minutes * 60:
                reason = "time limit"
                break
        self.save()
        took = time.time() - t0
        return {"step": self.step_no, "stopped_by": reason, "seconds": round(took, 1),
                "episodes_per_s": round((self.step_no - start) * o.batch_size / max(took, 1e-9), 2)}


def export(run_dir, weights, out_dir) -> Path:
    """`weights` with the run's refiner added: a complete inference checkpoint in `out_dir`."""
    import shutil

    from ..models.checkpoint import load_checkpoint, save_checkpoint
    from ..models.generator import build_generator

    path = Path(run_dir) / STATE
    if not path.exists():
        raise AnimateError(f"no {STATE} in {run_dir}: train first")
    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg, E, G, D = load_checkpoint(Path(weights), device="cpu", with_discriminator=True)
    new_cfg = cfg.replace(mouth_refiner=int(state["channels"]))
    G2 = build_generator(new_cfg)
    trunk = {k: v for k, v in G.state_dict().items() if not k.startswith("mouth.")}
    missing, unexpected = G2.load_state_dict(trunk, strict=False)
    if unexpected or any(not k.startswith("mouth.") for k in missing):
        raise AnimateError(f"{weights} does not fit the generator it describes")
    G2.mouth.load_state_dict(state["refiner"])
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, new_cfg, E, G2, D)
    for extra in Path(weights).glob("*.csv"):  # keep the training logs with the weights
        shutil.copy2(extra, tmp / extra.name)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def main(argv=None) -> int:
    d = MouthOptions()
    ap = argparse.ArgumentParser(prog="animate-train-mouth", description=__doc__.split("\n")[0])
    ap.add_argument("--cache", help="preprocessed cache folder (index.json)")
    ap.add_argument("--weights", default=d.weights, help="weights folder whose E and trunk stay frozen")
    ap.add_argument("--run-dir", default=d.run)
    ap.add_argument("--channels", type=int, default=d.channels, help="refiner width")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--random-reference", type=float, default=d.random_reference)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--export", default=None, metavar="DIR", help="write --weights plus the run's refiner to DIR and exit")
    a = ap.parse_args(argv)
    try:
        if a.export:
            print(export(a.run_dir, a.weights, a.export))
            return 0
        if not a.cache:
            ap.error("--cache is required for training")
        opts = MouthOptions(cache=a.cache, weights=a.weights, run=a.run_dir, channels=a.channels,
                            batch_size=a.batch_size, lr=a.lr, random_reference=a.random_reference,
                            max_steps=a.max_steps, max_minutes=a.max_minutes, checkpoint_every=a.checkpoint_every,
                            seed=a.seed, threads=a.threads, progress=not a.no_progress)
        summary = MouthTrainer(opts).train()
    except AnimateError as e:
        print(f"error: {e}")
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
