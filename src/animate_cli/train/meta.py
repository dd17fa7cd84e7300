"""Meta-learning of E, G and D on episodes (paper §3.2), single process or under torchrun (DDP).

    python -m animate_cli.train.meta --cache /work/cache/vox256 --run-dir runs/small --preset small
    torchrun --nproc_per_node 2 -m animate_cli.train.meta --cache ... --run-dir ...
    python -m animate_cli.train.meta --run-dir runs/small --export weights/mymodel

A run folder holds `checkpoint/` (E, G, D as safetensors via models.checkpoint + `train_state.pt`:
optimiser state, step and RNG states — our own file, loaded with weights_only=True), `losses.csv`,
`samples/*.png` and `options.json`. Re-running the same command resumes exactly where it stopped.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from ..errors import AnimateError
from .episodes import EpisodeDataset, reference_warp

CKPT = "checkpoint"
STATE = "train_state.pt"


@dataclass
class TrainOptions:
    cache: str = ""
    run: str = "runs/meta"
    preset: str = "small"
    generator: str = "warp"
    resolution: int | None = None  # default: the preset's
    k_shots: int = 8
    batch_size: int = 2  # per process
    lr_g: float = 5e-5
    lr_d: float = 2e-4
    d_steps: int = 1  # D updates per E/G update
    perceptual_size: int | None = 128  # L_CNT input size (None = full); 128 keeps CPU steps affordable
    max_steps: int | None = None
    max_minutes: float | None = None
    checkpoint_every: int = 500
    log_every: int = 10
    sample_every: int = 200
    val_per_identity: int = 1
    episodes_per_epoch: int | None = None
    workers: int = 0
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # CUDA only (bf16 autocast)
    init: str | None = None  # start from a weights folder (e.g. an earlier export)
    threads: int | None = None  # CPU threads per process (None: torch's default; torchrun sets 1)
    augment: bool = True  # mirror + colour jitter of episodes (see episodes.py)
    mouth_weight: float = 1.0  # weight of the mouth term (losses.mouth_loss); 0 = the paper's losses only
    n_refs: int = 1  # warped references the warp generator blends (references.py)
    skip_width: int = 0  # the warp generator's stem-resolution skip path (models/generator.py); 0 = none
    random_reference: float = 0.5  # share of episodes whose warp reference is a random shot, not the nearest
    refine: bool = False  # train only the warp generator's output layers (skip path + head); see Trainer
    nan_patience: int = 3  # consecutive bad steps before restoring the last checkpoint and halving lr
    progress: bool = True


# ----------------------------------------------------------------------------------------------
# Distributed helpers: every call also works without torch.distributed initialised.


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _dist() else 0


def world() -> int:
    return dist.get_world_size() if _dist() else 1


def setup_distributed(device: str) -> torch.device:
    """Initialise the process group only when torchrun says there are several processes."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _dist():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dev.type == "cuda":
        if dev.index is None:  # set_device needs an index; a bare "cuda" means the current one
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    return dev


def any_rank(flag: bool, device) -> bool:
    """True when the flag is set on any process, so all processes take the same branch."""
    if not _dist():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if _dist():
        dist.barrier()


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start part-way into an epoch (exact resume without re-decoding)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self):
        return self.num_samples - self.start


# ----------------------------------------------------------------------------------------------
# The trainer.


def _unwrap(m):
    return m.module if isinstance(m, DDP) else m


def _rng_state() -> dict:
    """All RNG states as tensors and plain numbers, so torch.load(weights_only=True) can read them."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else torch.zeros(0, dtype=torch.uint8),
            "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_rest": [int(pos), int(has_gauss), float(gauss)],
            "python": list(random.getstate()[1])}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if torch.cuda.is_available() and s["cuda"].numel():
        torch.cuda.set_rng_state(s["cuda"])
    pos, has_gauss, gauss = s["numpy_rest"]
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss), gauss))
    random.setstate((3, tuple(s["python"]), None))


class Trainer:
    """Holds models, optimisers and data; `step(batch)` is one meta-learning episode batch."""

    def __init__(self, opts: TrainOptions):
        from ..config import preset
        from ..models.discriminator import Discriminator
        from ..models.embedder import Embedder
        from ..models.generator import build_generator

        if not 0.0 <= opts.random_reference <= 1.0:
            raise AnimateError(f"--random-reference must be between 0 and 1 (got {opts.random_reference})")
        if opts.mouth_weight < 0:
            raise AnimateError(f"--mouth-weight must be 0 or more (got {opts.mouth_weight})")
        if opts.refine and opts.generator != "warp":
            raise AnimateError("--refine trains the warp generator's output layers; it needs --generator warp")
        self.opts = opts
        self.device = setup_distributed(opts.device)
        self.rank, self.world = rank(), world()
        self.run = Path(opts.run)
        if opts.threads:
            torch.set_num_threads(opts.threads)
        torch.manual_seed(opts.seed)
        np.random.seed(opts.seed)
        random.seed(opts.seed)

        cfg = preset(opts.preset, opts.generator)
        if opts.resolution:
            cfg = cfg.replace(resolution=opts.resolution)
        if opts.n_refs != 1 or opts.skip_width:
            cfg = cfg.replace(n_refs=opts.n_refs, skip_width=opts.skip_width)
        self.data = EpisodeDataset(opts.cache, k_shots=opts.k_shots, resolution=cfg.resolution, split="train",
                                   val_per_identity=opts.val_per_identity,
                                   episodes_per_epoch=opts.episodes_per_epoch, seed=opts.seed,
                                   augment=opts.augment)
        if self.data.n_videos < 1:
            raise AnimateError("no training videos")
        self.cfg = cfg
        E, G, D = Embedder(cfg), build_generator(cfg), Discriminator(cfg, self.data.n_videos)
        if opts.init:
            self._load_init(opts.init, E, G, D)
        E, G, D = (m.to(self.device) for m in (E, G, D))
        if opts.refine:
            self._freeze_all_but_output(E, G, D)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrap = lambda m: DDP(m, device_ids=ids) if any(p.requires_grad for p in m.parameters()) else m
            E, G, D = (wrap(m) for m in (E, G, D))
        self.E, self.G, self.D = E, G, D
        betas = (0.0, 0.999)
        trainable = [p for m in (E, G) for p in m.parameters() if p.requires_grad]
        self.opt_g = torch.optim.Adam(trainable, lr=opts.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(D.parameters(), lr=opts.lr_d, betas=betas)
        self.amp = opts.amp and self.device.type == "cuda"
        self.step_no = 0
        self.bad_in_a_row = 0
        self.skipped = 0
        self.lr_scale = 1.0

    @staticmethod
    def _freeze_all_but_output(E, G, D) -> None:
        """The refinement stage (--refine): E, D and G's trunk stay exactly as loaded (eval mode, so spectral
        norm runs no power iteration); only G's skip path and head, the layers that see the input at full
        detail, learn. Each step then costs a forward of E and the trunk and a backward through two
        convolutions, so many more episodes fit in an hour than in full meta-learning."""
        for m in (E, D, G):
            m.requires_grad_(False)
            m.eval()
        for name, p in G.named_parameters():
            p.requires_grad_(name.startswith(("skip.", "head.")))

    # --- init / checkpoints --------------------------------------------------------------------
    def _load_init(self, folder, E, G, D) -> None:
        """Start from existing weights; D's per-video columns only when the video count matches."""
        from ..models.checkpoint import load_checkpoint

        cfg, e, g, d = load_checkpoint(Path(folder), device="cpu", with_discriminator=True)
        # the same model (up to the selection and warp setting, kept below): anything else is refused
        same = cfg.replace(selection=self.cfg.selection, warp_reg=self.cfg.warp_reg)
        if same != self.cfg:
            raise AnimateError(f"--init {folder} has a different model config ({cfg.preset}, {cfg.generator}, "
                               f"{cfg.resolution}px)")
        # the learned shot selection and warp setting are no network weights: the run keeps them, so its
        # export still has them
        self.cfg = self.cfg.replace(selection=cfg.selection, warp_reg=cfg.warp_reg)
        E.load_state_dict(e.state_dict())
        G.load_state_dict(g.state_dict())
        if d is not None:
            state = d.state_dict()
            if state["W"].shape != D.W.shape:
                state["W"] = D.W.detach().clone()
            D.load_state_dict(state)

    def save(self) -> None:
        """Atomic: write checkpoint.tmp, move the old one aside, rename, delete the old."""
        from ..models.checkpoint import save_checkpoint

        if self.rank == 0:
            final, tmp, old = self.run / CKPT, self.run / (CKPT + ".tmp"), self.run / (CKPT + ".old")
            shutil.rmtree(tmp, ignore_errors=True)
            E, G, D = (_unwrap(m) for m in (self.E, self.G, self.D))
            save_checkpoint(tmp, self.cfg, E, G, D, extra={"step": self.step_no})
            torch.save({"step": self.step_no, "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                        "rng": _rng_state(), "skipped": self.skipped, "lr_scale": self.lr_scale,
                        "n_videos": self.data.n_videos}, tmp / STATE)
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        barrier()

    def checkpoint_dir(self) -> Path | None:
        for name in (CKPT, CKPT + ".old"):  # .old survives a kill between the two renames
            if (self.run / name / STATE).exists():
                return self.run / name
        return None

    def load(self, restore_rng: bool = True) -> bool:
        """Resume from the run folder's checkpoint; False when there is none."""
        from ..models.checkpoint import load_checkpoint

        folder = self.checkpoint_dir()
        if folder is None:
            return False
        cfg, e, g, d = load_checkpoint(folder, device="cpu", with_discriminator=True)
        if cfg.to_dict() != self.cfg.to_dict():
            raise AnimateError(f"{folder} was trained with another model config; use another --run-dir folder")
        state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
        if state["n_videos"] != self.data.n_videos:
            raise AnimateError(f"{folder} was trained on {state['n_videos']} videos, the cache now has "
                               f"{self.data.n_videos}; use another --run-dir folder")
        _unwrap(self.E).load_state_dict(e.state_dict())
        _unwrap(self.G).load_state_dict(g.state_dict())
        _unwrap(self.D).load_state_dict(d.state_dict())
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step_no, self.skipped, self.lr_scale = state["step"], state["skipped"], state["lr_scale"]
        if restore_rng:
            _set_rng_state(state["rng"])
        return True

    # --- one step -------------------------------------------------------------------------------
    def step(self, batch: dict) -> dict:
        """E/G update (L_CNT + L_ADV + L_MCH) then `d_steps` D updates (hinge). Returns float losses;
        'skipped': True when a non-finite loss/gradient made it skip the update (NaN guard)."""
        from .. import losses

        o = self.opts
        b = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if o.refine:
            return self._refine_step(b)
        B, K = b["x_shots"].shape[:2]
        D_raw = _unwrap(self.D)
        out = {}

        # E and G
        warped = self._episode_warp(b)
        D_raw.requires_grad_(False)
        with self._autocast():
            e = self.E(b["x_shots"].flatten(0, 1), b["y_shots"].flatten(0, 1)).view(B, K, -1)
            e_hat = e.mean(dim=1)
            x_hat = self.G(b["y_t"], e_hat, warped=warped)
            score, feats = D_raw(torch.cat([x_hat, b["x_t"]]), torch.cat([b["y_t"], b["y_t"]]),
                                 torch.cat([b["video"], b["video"]]))
            fake_feats = [f[:B] for f in feats]
            real_feats = [f[B:].detach() for f in feats]
            w_i = D_raw.W[b["video"]]
            parts = losses.generator_losses(score[:B].float(), fake_feats, real_feats, x_hat.float(), b["x_t"],
                                            e_hat=e_hat.float(), w_i=w_i.detach(),
                                            content_size=o.perceptual_size, landmarks=b["lm_t"],
                                            weights=losses.LossWeights(mouth=o.mouth_weight))
            loss_g = parts["total"]
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        D_raw.requires_grad_(True)
        params_g = [p for g in self.opt_g.param_groups for p in g["params"]]
        ok = self._finite(loss_g, params_g)
        if ok:
            self.opt_g.step()
        out.update({("loss_g" if k == "total" else k): v.item() for k, v in parts.items()})

        # D (hinge), on the same x̂ (detached): one forward of real ⊕ fake so DDP sees one pass
        x_fake = x_hat.detach()
        for _ in range(o.d_steps if ok else 0):
            with self._autocast():
                s, _ = self.D(torch.cat([b["x_t"], x_fake]), torch.cat([b["y_t"], b["y_t"]]),
                              torch.cat([b["video"], b["video"]]))
                # W_i's side of L_MCH (the paper trains both sides): taken with D's optimiser
                loss_d = losses.d_hinge_loss(s[:B].float(), s[B:].float()) + losses.LossWeights().mch * \
                    losses.match_loss(D_raw.W[b["video"]], e_hat.detach().float())
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            if not self._finite(loss_d, list(self.D.parameters())):
                ok = False
                break
            self.opt_d.step()
            out.update(loss_d=loss_d.item(), d_real=s[:B].float().mean().item(), d_fake=s[B:].float().mean().item())
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        return self._end_step(out, ok, b, x_hat, warped)

    def _episode_warp(self, b: dict):
        """The warp generator's references for this step's episodes (None for fsth). In float32, outside
        autocast: the spline solve needs it. Drawn from a generator of its own per (seed, step, rank), so
        the draws do not depend on what else used the global RNG (an exact resume redraws them)."""
        if self.cfg.generator != "warp":
            return None
        o = self.opts
        with torch.no_grad():
            draw = torch.Generator().manual_seed((o.seed * 1_000_003 + self.step_no) * 1_009 + self.rank)
            return reference_warp(b["x_shots"], b["lm_shots"], b["lm_t"], o.random_reference, draw,
                                  reg=self.cfg.warp_reg)

    def _end_step(self, out: dict, ok: bool, b: dict, x_hat, warped) -> dict:
        """Count the step, run the NaN guard when the update was skipped, keep the batch for samples."""
        self.step_no += 1
        out["skipped"] = not ok
        if ok:
            self.bad_in_a_row = 0
        else:
            self._bad_step()
        self._last = {"x_shots": b["x_shots"], "y_t": b["y_t"], "x_t": b["x_t"], "x_hat": x_hat.detach(),
                      "warped": warped}
        return out

    def _autocast(self):
        """bf16 autocast for the forward passes on CUDA (TrainOptions.amp); a no-op context on the CPU."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()

    def _refine_step(self, b: dict) -> dict:
        """One step of the refinement stage: the nearest (or, for a share of episodes, a random) shot warped
        to the target, corrected by G with only its output layers learning, on L_CNT + L1 + mouth (no D:
        the adversarial terms need D to keep learning, and this stage is about fidelity to the frame)."""
        from .. import losses

        o = self.opts
        B, K = b["x_shots"].shape[:2]
        warped = self._episode_warp(b)
        with self._autocast():
            with torch.no_grad():
                e_hat = self.E(b["x_shots"].flatten(0, 1), b["y_shots"].flatten(0, 1)).view(B, K, -1).mean(dim=1)
            x_hat = self.G(b["y_t"], e_hat, warped=warped)
            parts = losses.reconstruction_losses(x_hat.float(), b["x_t"], content_size=o.perceptual_size,
                                                 landmarks=b["lm_t"], weights=losses.LossWeights(mouth=o.mouth_weight))
        self.opt_g.zero_grad(set_to_none=True)
        parts["total"].backward()
        params = [p for g in self.opt_g.param_groups for p in g["params"]]
        ok = self._finite(parts["total"], params)
        if ok:
            self.opt_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        out = {("loss_g" if k == "total" else k): v.item() for k, v in parts.items()}
        return self._end_step(out, ok, b, x_hat, warped)

    def _finite(self, loss, params) -> bool:
        """Loss and (all-reduced) gradients finite on every process."""
        grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
        norm = torch.stack(grads).norm() if grads else loss.new_zeros(())
        bad = not (torch.isfinite(loss).item() and torch.isfinite(norm).item())
        return not any_rank(bad, self.device)

    def _bad_step(self) -> None:
        """NaN guard: the update was skipped; after `nan_patience` in a row, go back to the last
        checkpoint and halve the learning rates (keeping the step count, so data moves on)."""
        self.skipped += 1
        self.bad_in_a_row += 1
        self.log(f"[yellow]NaN guard: non-finite loss or gradient at step {self.step_no}, update skipped")
        if self.bad_in_a_row >= self.opts.nan_patience:
            step = self.step_no
            if self.load(restore_rng=False):
                self.step_no = step
            self.lr_scale *= 0.5
            self.bad_in_a_row = 0
            self.log(f"[yellow]NaN guard: restored the last checkpoint, learning rates x{self.lr_scale:g}")
        for opt, lr in ((self.opt_g, self.opts.lr_g), (self.opt_d, self.opts.lr_d)):
            for g in opt.param_groups:
                g["lr"] = lr * self.lr_scale

    def log(self, msg: str) -> None:
        if self.rank == 0 and self.opts.progress:
            from rich.console import Console

            Console(stderr=True).print(msg)

    # --- samples --------------------------------------------------------------------------------
    def write_samples(self, path: Path, n: int = 4) -> None:
        """One row per episode: target landmarks | shots (up to 3) | warped reference | output | truth."""
        last = self._last
        rows = []
        for i in range(min(n, last["x_t"].shape[0])):
            tiles = [last["y_t"][i]] + list(last["x_shots"][i][:3])
            if last["warped"] is not None:
                tiles.append(last["warped"][i][:3])
            tiles += [last["x_hat"][i], last["x_t"][i]]
            rows.append(torch.cat([t.float().cpu() for t in tiles], dim=2))
        grid = torch.cat(rows, dim=1)
        img = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.png")
        cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        os.replace(tmp, path)

    # --- the loop -------------------------------------------------------------------------------
    def loader(self, epoch: int, start: int) -> DataLoader:
        self.data.set_epoch(epoch)
        sampler = ResumableSampler(self.data, num_replicas=self.world, rank=self.rank, shuffle=True,
                                   seed=self.opts.seed, drop_last=True)
        sampler.set_epoch(epoch)
        sampler.start = start
        return DataLoader(self.data, batch_size=self.opts.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.opts.workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def steps_per_epoch(self) -> int:
        n = len(self.data) // self.world // self.opts.batch_size  # DistributedSampler and loader drop_last
        if n < 1:
            raise AnimateError(f"an epoch of {len(self.data)} episodes is smaller than one batch on each of "
                               f"{self.world} processes (--batch-size {self.opts.batch_size})")
        return n

    def train(self) -> dict:
        o = self.opts
        resumed = self.load()
        barrier()  # every process has looked for a checkpoint before rank 0 may write the first one
        if not resumed and self.rank == 0:
            self.run.mkdir(parents=True, exist_ok=True)
            (self.run / "options.json").write_text(json.dumps(dataclasses.asdict(o), indent=1))
        if not resumed:
            self.save()  # step 0: the NaN guard always has something to go back to
        self.log(f"{'resumed at' if resumed else 'starting at'} step {self.step_no}: {self.cfg.preset} "
                 f"{self.cfg.generator} generator, {self.cfg.resolution}px, {self.data.n_videos} videos, "
                 f"{self.world} process(es) on {self.device}, batch {o.batch_size}x{self.world}, K={o.k_shots}")
        stop = {"signal": False}

        def on_signal(*_):
            stop["signal"] = True

        old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        t_start = time.time()
        start_step = self.step_no
        spe = self.steps_per_epoch()
        acc: dict[str, list[float]] = {}
        t_log, steps_log = time.time(), 0
        episodes_per_s = 0.0
        reason = "max steps"
        finished = False
        try:
            while not finished and (o.max_steps is None or self.step_no < o.max_steps):
                epoch, offset = divmod(self.step_no, spe)
                for batch in self.loader(epoch, offset * o.batch_size):
                    res = self.step(batch)
                    steps_log += 1
                    for k, v in res.items():
                        acc.setdefault(k, []).append(float(v))
                    s = self.step_no
                    if s % o.log_every == 0 or (o.max_steps is not None and s >= o.max_steps):
                        dt = time.time() - t_log
                        episodes_per_s = steps_log * o.batch_size * self.world / max(dt, 1e-9)
                        self._log_row(acc, episodes_per_s, epoch)
                        acc, t_log, steps_log = {}, time.time(), 0
                    if self.rank == 0 and o.sample_every and s % o.sample_every == 0:
                        self.write_samples(self.run / "samples" / f"step_{s:07d}.png")
                    if o.checkpoint_every and s % o.checkpoint_every == 0:
                        self.save()
                    late = o.max_minutes is not None and time.time() - t_start > o.max_minutes * 60
                    if any_rank(late or stop["signal"], self.device):
                        reason, finished = ("time limit" if late else "signal"), True
                    if finished or (o.max_steps is not None and s >= o.max_steps):
                        break
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
        self.save()
        took = time.time() - t_start
        done = self.step_no - start_step
        summary = {"step": self.step_no, "steps_this_run": done, "stopped_by": reason, "seconds": round(took, 1),
                   "episodes_per_s": round(done * o.batch_size * self.world / max(took, 1e-9), 3),
                   "skipped_steps": self.skipped, "world_size": self.world, "rank": self.rank}
        self.log(f"stopped ({reason}) at step {self.step_no}; {summary['episodes_per_s']} episodes/s; "
                 f"checkpoint in {self.run / CKPT}")
        return summary

    def _log_row(self, acc: dict, eps: float, epoch: int) -> None:
        if self.rank != 0:
            return
        row = {"step": self.step_no, "epoch": epoch, "time": round(time.time(), 1), "episodes_per_s": round(eps, 3),
               "lr_g": self.opts.lr_g * self.lr_scale}
        for k in ("loss_g", "cnt", "adv", "fm", "mch", "pix", "mouth", "loss_d", "d_real", "d_fake"):
            vals = [v for v in acc.get(k, []) if math.isfinite(v)]
            row[k] = round(sum(vals) / len(vals), 5) if vals else ""
        row["skipped"] = int(sum(acc.get("skipped", [])))
        path = self.run / "losses.csv"
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        if self.opts.progress:
            from rich.console import Console
            from rich.table import Table

            t = Table(show_header=self.step_no // self.opts.log_every % 20 == 1, box=None, pad_edge=False)
            for k in row:
                if k not in ("time", "lr_g"):
                    t.add_column(k, justify="right", min_width=8)
            t.add_row(*[str(v) for k, v in row.items() if k not in ("time", "lr_g")])
            Console(stderr=True, width=160).print(t)


def train(opts: TrainOptions | None = None, **kwargs) -> dict:
    """Meta-learn (or resume) in `opts.run`; returns a summary (steps, episodes/s, stop reason)."""
    opts = dataclasses.replace(opts or TrainOptions(), **kwargs)
    trainer = Trainer(opts)
    try:
        return trainer.train()
    finally:
        if _dist():
            dist.destroy_process_group()


def export(run_or_checkpoint, out_dir) -> Path:
    """The inference checkpoint (E, G, D safetensors + config.json), without optimiser state."""
    from ..models.checkpoint import load_checkpoint, save_checkpoint

    src = Path(run_or_checkpoint)
    for cand in (src / CKPT, src / (CKPT + ".old"), src):
        if (cand / "config.json").exists():
            src = cand
            break
    else:
        raise AnimateError(f"no checkpoint in {run_or_checkpoint}")
    cfg, E, G, D = load_checkpoint(src, device="cpu", with_discriminator=True)
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, cfg, E, G, D)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def main(argv=None) -> int:
    d = TrainOptions()
    ap = argparse.ArgumentParser(prog="python -m animate_cli.train.meta", description=__doc__.split("\n")[0])
    ap.add_argument("--cache", help="preprocessed cache folder (index.json)")
    # not "--run": under torchrun that would abbreviate torchrun's own --run-path
    ap.add_argument("--run-dir", default=d.run, help="run folder: checkpoint, losses.csv, samples")
    ap.add_argument("--preset", default=d.preset, choices=["paper", "small", "tiny"])
    ap.add_argument("--generator", default=d.generator, choices=["fsth", "warp"])
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--k-shots", type=int, default=d.k_shots)
    ap.add_argument("--batch-size", type=int, default=d.batch_size, help="episodes per process per step")
    ap.add_argument("--lr-g", type=float, default=d.lr_g)
    ap.add_argument("--lr-d", type=float, default=d.lr_d)
    ap.add_argument("--d-steps", type=int, default=d.d_steps)
    ap.add_argument("--perceptual-size", type=int, default=d.perceptual_size, help="0 = full resolution")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    ap.add_argument("--log-every", type=int, default=d.log_every)
    ap.add_argument("--sample-every", type=int, default=d.sample_every)
    ap.add_argument("--val-per-identity", type=int, default=d.val_per_identity)
    ap.add_argument("--episodes-per-epoch", type=int, default=None)
    ap.add_argument("--workers", type=int, default=d.workers, help="data loader processes")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--device", default=d.device)
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--no-augment", action="store_true", help="no mirroring / colour jitter of episodes")
    ap.add_argument("--mouth-weight", type=float, default=d.mouth_weight, help="weight of the mouth term (0 = off)")
    ap.add_argument("--n-refs", type=int, default=d.n_refs,
                    help="warped references the warp generator blends (1 = the nearest only)")
    ap.add_argument("--skip-width", type=int, default=d.skip_width,
                    help="channels of the warp generator's full-detail skip path to its output (0 = none)")
    ap.add_argument("--random-reference", type=float, default=d.random_reference,
                    help="share of episodes warping a random shot instead of the nearest (as with one shot)")
    ap.add_argument("--refine", action="store_true",
                    help="train only the warp generator's output layers (skip path + head) on L_CNT + L1 + mouth, "
                         "E, the trunk and D frozen: a cheap last stage, usually from --init with a --skip-width")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    ap.add_argument("--init", default=None, help="start from this weights folder")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--export", default=None, metavar="DIR", help="write the run's inference weights to DIR and exit")
    a = ap.parse_args(argv)
    try:
        if a.export:
            print(export(a.run_dir, a.export))
            return 0
        if not a.cache:
            ap.error("--cache is required for training")
        opts = TrainOptions(cache=a.cache, run=a.run_dir, preset=a.preset, generator=a.generator,
                            resolution=a.resolution, k_shots=a.k_shots, batch_size=a.batch_size, lr_g=a.lr_g,
                            lr_d=a.lr_d, d_steps=a.d_steps, perceptual_size=a.perceptual_size or None,
                            max_steps=a.max_steps, max_minutes=a.max_minutes, checkpoint_every=a.checkpoint_every,
                            log_every=a.log_every, sample_every=a.sample_every,
                            val_per_identity=a.val_per_identity, episodes_per_epoch=a.episodes_per_epoch,
                            workers=a.workers, seed=a.seed, device=a.device, amp=not a.no_amp,
                            augment=not a.no_augment, random_reference=a.random_reference, n_refs=a.n_refs,
                            skip_width=a.skip_width, refine=a.refine,
                            mouth_weight=a.mouth_weight, init=a.init, threads=a.threads,
                            progress=not a.no_progress)
        summary = train(opts)
    except AnimateError as e:
        print(f"error: {e}")
        return 1
    if summary.get("rank", 0) == 0:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
