"""Meta-learning of E, G and D on episodes (paper §3.2), one process or several under torchrun (DDP).

TrainOptions holds every setting and its default (the `animate-train` command reads them from here);
Trainer owns the networks, optimisers and data and runs the loop. What the run leaves on disk, and how it
resumes, is rundir.py; the process-group plumbing is distributed.py.
"""
from __future__ import annotations

import dataclasses
import math
import random
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from .. import losses
from ..config import FinetuneConfig, preset
from ..errors import AnimateError
from ..models.checkpoint import load_checkpoint
from ..models.discriminator import Discriminator, MouthCritic
from ..models.embedder import Embedder
from ..models.generator import PAINTERS, build_generator, extend_with_painter
from ..models.painter import eye_paint_usage, mouth_view, paint_usage
from . import distributed, rundir
from .episodes import EpisodeDataset, reference_warp_and_landmarks
from .photo_episodes import MixedEpisodeDataset, PhotoEpisodeDataset, PhotoEpisodeSettings

SHARED = FinetuneConfig()  # meta-learning and fine-tuning share learning rates, L_CNT size and the mouth term
# paint: the trained painter's mean |correction| on the open mouths (or eyes) of the step's targets (paint_usage).
# With --painter-only the adv and D columns are the mouth critic's (--mouth-adv)
# --paint-part: the generator's painter each trains (with --painter-only)
PAINT_PARTS = {"mouth": "painter", "eyes": "eye_painter"}
LOSS_COLUMNS = ("loss_g", "cnt", "adv", "fm", "mch", "pix", "mouth", "paint", "loss_d", "d_real", "d_fake")


@dataclass
class TrainOptions:
    """Every meta-learning setting, with its default (the one place `animate-train` takes them from)."""
    cache: str = ""  # preprocessed cache folder (animate-preprocess)
    photos: str | None = None  # photo cache (animate-preprocess-photos) mixed into the video episodes
    # share of episodes made from one photo (with `photos`). Half: the video keeps real motion and real second
    # views in every other episode; the photos bring thousands of people, and with PhotoEpisodeSettings'
    # kinds a quarter of all episodes close an open mouth that G must paint open again
    photo_share: float = 0.5
    run: str = "runs/meta"  # run folder: checkpoint, losses.csv, samples
    preset: str = "small"  # config.PRESETS
    generator: str = "warp"  # config.GENERATORS
    paint_size: int | None = None  # the mouth painter's crop side (None: the preset's; 0: no painter)
    eye_paint_size: int | None = None  # the eye painter's crop side (None: the preset's; 0: no painter)
    # shares of the photo episodes' kinds (PhotoEpisodeSettings): another view, a mouth shut, the eyes shut
    photo_kinds: tuple = (PhotoEpisodeSettings.view_weight, PhotoEpisodeSettings.mouth_weight,
                          PhotoEpisodeSettings.eyes_weight)
    resolution: int | None = None  # default: the preset's
    k_shots: int = 8
    batch_size: int = 2  # episodes per process per step
    lr_g: float = SHARED.lr_g
    lr_d: float = SHARED.lr_d
    # the mouth painter's (4 × lr_g): it starts from zero next to trained weights, and at lr_g its zero output
    # layer would need thousands of steps to paint a visible mouth
    lr_paint: float = 4 * SHARED.lr_g
    d_steps: int = 1  # D updates per E/G update
    perceptual_size: int | None = SHARED.content_size  # L_CNT input size (None = full); 128 keeps CPU steps affordable
    max_steps: int | None = None
    max_minutes: float | None = None
    checkpoint_every: int = 500
    log_every: int = 10
    sample_every: int = 200
    val_per_identity: int = 1  # videos per identity held out of training
    episodes_per_epoch: int | None = None  # default: one per training video
    workers: int = 0  # data loader processes
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # CUDA only (bf16 autocast)
    init: str | None = None  # start from a weights folder (e.g. an earlier export)
    threads: int | None = None  # CPU threads per process (None: torch's default; torchrun sets 1)
    augment: bool = True  # mirror + colour jitter of episodes (see episodes.py)
    mouth_weight: float = SHARED.mouth_weight  # weight of the mouth term (losses.mouth_loss); 0 = the paper's losses only
    random_reference: float = 0.5  # share of episodes whose warp reference is a random shot, not the nearest
    # train the mouth painter alone (from --init weights): E, G's trunk and D frozen, the loss the mouth term
    # alone. No D update and no backward through E and the trunk: several times the episodes per CPU second
    painter_only: bool = False
    # with painter_only: which painter: "mouth" (on the mouth term) or "eyes" (on the eye term, losses.eye_loss)
    paint_part: str = "mouth"
    # with painter_only: weight of the mouth's colour term (losses.mouth_colour_loss) next to the mouth term
    colour_weight: float = 0.0
    # with painter_only: weight of the adversarial term of a mouth critic that judges open mouths (MouthCritic,
    # trained beside the painter at lr_d, d_steps updates per step); 0 = none. The mouth term alone is met best
    # by a blur: the mean of the teeth and cavities an opening might hold
    mouth_adv: float = 0.0
    # with painter_only: weight of LPIPS on the painted part's crop, added to its term (losses.mouth_loss, eye_loss)
    lpips_weight: float = 0.0
    nan_patience: int = 3  # consecutive bad steps before restoring the last checkpoint and halving lr
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.photo_share <= 1.0:
            raise AnimateError(f"--photo-share must be between 0 and 1 (got {self.photo_share})")
        if not 0.0 <= self.random_reference <= 1.0:
            raise AnimateError(f"--random-reference must be between 0 and 1 (got {self.random_reference})")
        if self.mouth_weight < 0:
            raise AnimateError(f"--mouth-weight must be 0 or more (got {self.mouth_weight})")
        if self.colour_weight < 0 or (self.colour_weight and not self.painter_only):
            raise AnimateError(f"--colour-weight must be 0 or more, and is used with --painter-only "
                               f"(got {self.colour_weight})")
        if self.mouth_adv < 0 or (self.mouth_adv and not self.painter_only):
            raise AnimateError(f"--mouth-adv must be 0 or more, and is used with --painter-only (got {self.mouth_adv})")
        if self.lpips_weight < 0 or (self.lpips_weight and not self.painter_only):
            raise AnimateError(f"--lpips-weight must be 0 or more, and is used with --painter-only "
                               f"(got {self.lpips_weight})")
        if self.paint_part not in PAINT_PARTS:
            raise AnimateError(f"--paint-part must be one of {', '.join(PAINT_PARTS)} (got {self.paint_part!r})")
        if self.paint_part == "eyes" and (self.mouth_adv or not self.painter_only):
            raise AnimateError("--paint-part eyes trains the eye painter with --painter-only, without --mouth-adv")
        if self.painter_only and self.paint_part == "mouth" and (
                self.mouth_weight <= 0 or self.generator != "warp" or self.paint_size == 0):
            raise AnimateError("--painter-only trains the warp generator's mouth painter on the mouth term: it needs "
                               "--generator warp, a painter (--paint-size > 0) and --mouth-weight > 0")
        if self.painter_only and self.paint_part == "eyes" and (self.generator != "warp" or self.eye_paint_size == 0):
            raise AnimateError("--paint-part eyes trains the warp generator's eye painter: it needs --generator warp "
                               "and an eye painter (--eye-paint-size > 0)")
        kinds = self.photo_kinds
        if len(kinds) != 3 or any(not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0 for w in kinds) \
                or sum(kinds) <= 0:
            raise AnimateError(f"--photo-kinds needs three shares of 0 or more, not all 0 (got {kinds})")
        for flag, value in (("--k-shots", self.k_shots), ("--batch-size", self.batch_size),
                            ("--d-steps", self.d_steps), ("--log-every", self.log_every),
                            ("--threads", self.threads)):
            if value is not None and value < 1:
                raise AnimateError(f"{flag} must be 1 or more (got {value})")


class Trainer:
    """Holds models, optimisers and data; `step(batch)` is one meta-learning episode batch."""

    def __init__(self, opts: TrainOptions):
        self.opts = opts
        self.device = distributed.setup_distributed(opts.device)
        self.rank, self.world = distributed.rank(), distributed.world()
        self.run = Path(opts.run)
        if opts.threads:
            torch.set_num_threads(opts.threads)
        torch.manual_seed(opts.seed)
        np.random.seed(opts.seed)
        random.seed(opts.seed)

        cfg = preset(opts.preset, opts.generator)
        if opts.resolution:
            cfg = cfg.replace(resolution=opts.resolution)
        if opts.paint_size is not None:
            cfg = cfg.replace(paint_size=opts.paint_size)
        if opts.eye_paint_size is not None:
            cfg = cfg.replace(eye_paint_size=opts.eye_paint_size)
        videos = EpisodeDataset(opts.cache, k_shots=opts.k_shots, resolution=cfg.resolution, split="train",
                                val_per_identity=opts.val_per_identity,
                                episodes_per_epoch=opts.episodes_per_epoch, seed=opts.seed, augment=opts.augment)
        if videos.n_videos < 1:
            raise AnimateError("no training videos")
        self.n_video_columns = videos.n_videos  # D's first columns; photo people's follow (MixedEpisodeDataset)
        self.data = videos
        if opts.photos:
            view, mouth, eyes = opts.photo_kinds
            photos = PhotoEpisodeDataset(opts.photos, k_shots=opts.k_shots, resolution=cfg.resolution,
                                         seed=opts.seed, augment=opts.augment,
                                         settings=PhotoEpisodeSettings(view_weight=view, mouth_weight=mouth,
                                                                       eyes_weight=eyes))
            self.data = MixedEpisodeDataset(videos, photos, photo_share=opts.photo_share, seed=opts.seed,
                                            episodes_per_epoch=opts.episodes_per_epoch)
        self.cfg = cfg
        E, G, D = Embedder(cfg), build_generator(cfg), Discriminator(cfg, self.data.n_videos)
        if opts.init:
            self._load_init(opts.init, E, G, D)
        betas = (0.0, 0.999)
        # the painters have a learning rate of their own: they start fresh where the rest may be trained weights.
        # With --painter-only, only the one --paint-part names learns
        painters = [m for m in (getattr(G, n, None) for n in PAINTERS) if m is not None]
        if opts.painter_only:
            painters = [getattr(G, PAINT_PARTS[opts.paint_part], None)]
            if painters[0] is None:
                raise AnimateError(f"--painter-only: this model has no {opts.paint_part} painter")
        painting = {id(p) for m in painters for p in m.parameters()}
        rest = [*E.parameters(), *(p for p in G.parameters() if id(p) not in painting)]
        groups = [] if opts.painter_only else [{"params": rest, "lr": opts.lr_g, "base_lr": opts.lr_g}]
        if opts.painter_only:  # frozen: no gradient, and eval mode (spectral norm's power iteration stands still)
            for p in rest:
                p.requires_grad_(False)
            E.eval()
            G.eval()
            painters[0].train()
        # wrapped once frozen: DDP waits for a gradient of every parameter that wants one when it is built
        self.E, self.G, self.D = (distributed.wrap(m.to(self.device), self.device) for m in (E, G, D))
        if painters:
            groups.append({"params": [p for m in painters for p in m.parameters()], "lr": opts.lr_paint,
                           "base_lr": opts.lr_paint})
        self.opt_g = torch.optim.Adam(groups, betas=betas)
        self.opt_d = torch.optim.Adam([{"params": list(self.D.parameters()), "lr": opts.lr_d, "base_lr": opts.lr_d}],
                                      betas=betas)
        self.critic, self.opt_critic = None, None
        if opts.mouth_adv:
            self.critic = distributed.wrap(MouthCritic().to(self.device), self.device)
            self.opt_critic = torch.optim.Adam([{"params": list(self.critic.parameters()), "lr": opts.lr_d,
                                                 "base_lr": opts.lr_d}], betas=betas)
        self.amp = opts.amp and self.device.type == "cuda"
        self.step_no = 0
        self.bad_in_a_row = 0
        self.skipped = 0
        self.lr_scale = 1.0

    # --- init / checkpoints --------------------------------------------------------------------
    def _load_init(self, folder, E, G, D) -> None:
        """Start from existing weights of the same architecture. D's per-video columns: all of them when the
        count matches; when the weights' columns are this run's videos alone (a video-only run continued
        with photos), those, and the photo people's columns start fresh; otherwise all start fresh."""
        cfg, e, g, d = load_checkpoint(Path(folder), device="cpu", with_discriminator=True)
        # the learned shot selection, the warp setting and mouth shots are no network weights: the run keeps
        # them, so its export still has them. Weights without a painter extend to a run with one
        # (extend_with_painter)
        adds_painter = cfg.paint_size == 0 and self.cfg.paint_size > 0
        adds_eye_painter = cfg.eye_paint_size == 0 and self.cfg.eye_paint_size > 0
        same = dict(selection=self.cfg.selection, warp_reg=self.cfg.warp_reg, mouth_shots=self.cfg.mouth_shots,
                    paint_size=self.cfg.paint_size if adds_painter else cfg.paint_size,
                    eye_paint_size=self.cfg.eye_paint_size if adds_eye_painter else cfg.eye_paint_size)
        if cfg.replace(**same) != self.cfg:
            raise AnimateError(f"--init {folder} has a different model config ({cfg.preset}, {cfg.generator}, "
                               f"{cfg.resolution}px, paint_size {cfg.paint_size}, eye_paint_size "
                               f"{cfg.eye_paint_size})")
        self.cfg = self.cfg.replace(selection=cfg.selection, warp_reg=cfg.warp_reg, mouth_shots=cfg.mouth_shots)
        E.load_state_dict(e.state_dict())
        if adds_painter or adds_eye_painter:
            extend_with_painter(G, g)
        else:
            G.load_state_dict(g.state_dict())
        if d is not None:
            state = d.state_dict()
            if state["W"].shape != D.W.shape:
                fresh = D.W.detach().clone()
                if len(state["W"]) == self.n_video_columns:
                    fresh[:self.n_video_columns] = state["W"]
                state["W"] = fresh
            D.load_state_dict(state)

    def save(self) -> None:
        """Checkpoint the run (rank 0 writes; every process waits for it)."""
        if self.rank == 0:
            E, G, D = (distributed.unwrap(m) for m in (self.E, self.G, self.D))
            rundir.save_run_checkpoint(self.run, self.cfg, E, G, D, {
                "step": self.step_no, "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "rng": rundir.rng_state(), "skipped": self.skipped, "lr_scale": self.lr_scale,
                "n_videos": self.data.n_videos, **self._critic_state()})
        distributed.barrier()

    def load(self, restore_rng: bool = True) -> bool:
        """Resume from the run folder's checkpoint; False when there is none."""
        folder = rundir.find_checkpoint(self.run)
        if folder is None:
            return False
        cfg, e, g, d, state = rundir.load_run_checkpoint(folder)
        if cfg.to_dict() != self.cfg.to_dict():
            raise AnimateError(f"{folder} was trained with another model config; use another --run-dir folder")
        if state["n_videos"] != self.data.n_videos:
            raise AnimateError(f"{folder} was trained on {state['n_videos']} videos and photo people, the caches "
                               f"now have {self.data.n_videos}; use another --run-dir folder")
        distributed.unwrap(self.E).load_state_dict(e.state_dict())
        distributed.unwrap(self.G).load_state_dict(g.state_dict())
        distributed.unwrap(self.D).load_state_dict(d.state_dict())
        if len(state["opt_g"]["param_groups"]) != len(self.opt_g.param_groups):
            raise AnimateError(f"{folder} was trained {'without' if self.opts.painter_only else 'with'} "
                               f"--painter-only; use another --run-dir folder")
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.critic is not None and "critic" in state:  # a run started without the critic gets a fresh one
            distributed.unwrap(self.critic).load_state_dict(state["critic"])
            self.opt_critic.load_state_dict(state["opt_critic"])
        self.step_no, self.skipped, self.lr_scale = state["step"], state["skipped"], state["lr_scale"]
        if restore_rng:
            rundir.set_rng_state(state["rng"])
        return True

    def _critic_state(self) -> dict:
        if self.critic is None:
            return {}
        return {"critic": distributed.unwrap(self.critic).state_dict(), "opt_critic": self.opt_critic.state_dict()}

    # --- one step -------------------------------------------------------------------------------
    def step(self, batch: dict) -> dict:
        """E/G update (L_CNT + L_ADV + L_MCH) then `d_steps` D updates (hinge). Returns float losses;
        'skipped': True when a non-finite loss/gradient made it skip the update (NaN guard)."""
        o = self.opts
        b = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if o.painter_only:
            return self._painter_step(b)
        B, K = b["x_shots"].shape[:2]
        D_raw = distributed.unwrap(self.D)
        out = {}

        # E and G
        warped, ref_lm = self._episode_warp(b)
        D_raw.requires_grad_(False)
        with self._autocast():
            e = self.E(b["x_shots"].flatten(0, 1), b["y_shots"].flatten(0, 1)).view(B, K, -1)
            e_hat = e.mean(dim=1)
            parts: dict = {}
            x_hat = self.G(b["y_t"], e_hat, warped=warped, landmarks=b["lm_t"], ref_landmarks=ref_lm, parts=parts)
            score, feats = D_raw(torch.cat([x_hat, b["x_t"]]), torch.cat([b["y_t"], b["y_t"]]),
                                 torch.cat([b["video"], b["video"]]))
            fake_feats = [f[:B] for f in feats]
            real_feats = [f[B:].detach() for f in feats]
            w_i = D_raw.W[b["video"]]
            losses_g = losses.generator_losses(score[:B].float(), fake_feats, real_feats, x_hat.float(), b["x_t"],
                                               e_hat=e_hat.float(), w_i=w_i.detach(),
                                               content_size=o.perceptual_size, landmarks=b["lm_t"],
                                               weights=losses.LossWeights(mouth=o.mouth_weight))
            loss_g = losses_g["total"]
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        D_raw.requires_grad_(True)
        params_g = [p for g in self.opt_g.param_groups for p in g["params"]]
        ok = self._finite(loss_g, params_g)
        if ok:
            self.opt_g.step()
        out.update({("loss_g" if k == "total" else k): v.item() for k, v in losses_g.items()})
        out.update(_painted(parts))

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

    def _painter_step(self, b: dict) -> dict:
        """TrainOptions.painter_only: the painter's update on its part's term (the mouth's or the eyes'); E and G's
        trunk run without a graph, D not at all."""
        B, K = b["x_shots"].shape[:2]
        warped, ref_lm = self._episode_warp(b)
        with self._autocast():
            with torch.no_grad():
                e_hat = self.E(b["x_shots"].flatten(0, 1), b["y_shots"].flatten(0, 1)).view(B, K, -1).mean(dim=1)
            parts: dict = {}
            x_hat = self.G(b["y_t"], e_hat, warped=warped, landmarks=b["lm_t"], ref_landmarks=ref_lm, parts=parts)
        if self.opts.paint_part == "eyes":
            term = losses.eye_loss(x_hat.float(), b["x_t"], b["lm_t"], lpips_weight=self.opts.lpips_weight)
            colour = losses.eye_colour_loss(x_hat.float(), b["x_t"], b["lm_t"])
            loss = term + self.opts.colour_weight * colour
        else:
            term = losses.mouth_loss(x_hat.float(), b["x_t"], b["lm_t"], lpips_weight=self.opts.lpips_weight)
            colour = losses.mouth_colour_loss(x_hat.float(), b["x_t"], b["lm_t"])
            loss = self.opts.mouth_weight * (term + self.opts.colour_weight * colour)
        out = {"mouth": term.item(), **_painted(parts, self.opts.paint_part)}
        fake_view = None
        if self.critic is not None:
            fake_view = mouth_view(x_hat, b["lm_t"], distributed.unwrap(self.G).cfg.paint_size)
            # the critic as it is, not its DDP wrapper: only the painter learns here (its gradient is averaged
            # by G's wrapper), and a process without an open mouth to judge then waits on no other
            fake, judged = self._critic_scores(fake_view, distributed.unwrap(self.critic))
            if judged.any():
                adv = losses.g_adv_loss(fake[judged])
                loss = loss + self.opts.mouth_adv * adv
                out["adv"] = adv.item()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        ok = self._finite(loss, [p for g in self.opt_g.param_groups for p in g["params"]])
        if ok:
            self.opt_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        out["loss_g"] = loss.item()
        if ok and self.critic is not None:
            ok = self._critic_step(fake_view.detach(), b, out)
        return self._end_step(out, ok, b, x_hat, warped)

    def _critic_step(self, fake_view, b: dict, out: dict) -> bool:
        """`d_steps` hinge updates of the mouth critic: the targets' mouths against the painter's (`fake_view`,
        the painter step's mouth_view of its output, detached)."""
        real_view = mouth_view(b["x_t"], b["lm_t"], fake_view.shape[-1])
        views = torch.cat([real_view, fake_view])
        B = len(fake_view)
        for _ in range(self.opts.d_steps):
            scores, judged = self._critic_scores(views, self.critic)
            real, fake = scores[:B][judged[:B]], scores[B:][judged[B:]]
            if not distributed.any_rank(len(real) > 0, self.device):
                return True  # no process has an open mouth to judge
            # every process takes the step together; one with nothing to judge adds a zero gradient
            loss_d = losses.d_hinge_loss(real, fake) if len(real) else scores.sum() * 0
            self.opt_critic.zero_grad(set_to_none=True)
            loss_d.backward()
            if not self._finite(loss_d, list(self.critic.parameters())):
                return False
            self.opt_critic.step()
            if len(real):
                out.update(loss_d=loss_d.item(), d_real=real.mean().item(), d_fake=fake.mean().item())
        self.opt_critic.zero_grad(set_to_none=True)
        return True

    def _critic_scores(self, views, critic):
        """The critic's score per frame: its patch scores averaged over the target's open mouth (the view's
        mask), so it judges the inside of the opening, what the painter paints, and not the warp's resampling
        around it; and which frames have an open mouth to judge. `critic`: self.critic, wrapped or not."""
        patches = critic(views)
        weight = F.adaptive_avg_pool2d(views[:, 3:], patches.shape[-2:])
        total = weight.sum(dim=(1, 2, 3))
        judged = total > 1e-3
        return (patches * weight).sum(dim=(1, 2, 3)) / total.clamp_min(1e-3), judged

    def _episode_warp(self, b: dict):
        """The warp generator's reference for this step's episodes and the landmarks of the shot it warped
        ((None, None) for fsth). In float32, outside autocast: the spline solve needs it. Drawn from a
        generator of its own per (seed, step, rank), so the draws do not depend on what else used the
        global RNG (an exact resume redraws them)."""
        if self.cfg.generator != "warp":
            return None, None
        o = self.opts
        with torch.no_grad():
            draw = torch.Generator().manual_seed((o.seed * 1_000_003 + self.step_no) * 1_009 + self.rank)
            return reference_warp_and_landmarks(b["x_shots"], b["lm_shots"], b["lm_t"], o.random_reference, draw,
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

    def _finite(self, loss, params) -> bool:
        """Loss and (all-reduced) gradients finite on every process."""
        grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
        norm = torch.stack(grads).norm() if grads else loss.new_zeros(())
        bad = not (torch.isfinite(loss).item() and torch.isfinite(norm).item())
        return not distributed.any_rank(bad, self.device)

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
        for opt in (self.opt_g, self.opt_d, *([self.opt_critic] if self.opt_critic else [])):
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * self.lr_scale

    # --- logging --------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.rank == 0 and self.opts.progress:
            Console(stderr=True).print(msg)

    def write_samples(self, path: Path, n: int = 4) -> None:
        """One row per episode: target landmarks | shots (up to 3) | warped reference | output | truth."""
        last = self._last
        rows = []
        for i in range(min(n, last["x_t"].shape[0])):
            tiles = [last["y_t"][i]] + list(last["x_shots"][i][:3])
            if last["warped"] is not None:
                tiles.append(last["warped"][i][:3])
            rows.append(tiles + [last["x_hat"][i], last["x_t"][i]])
        rundir.write_sample_grid(path, rows)

    def _log_row(self, acc: dict, eps: float, epoch: int) -> None:
        """Means of the losses since the last row: into losses.csv, and a table line on stderr."""
        if self.rank != 0:
            return
        row = {"step": self.step_no, "epoch": epoch, "time": round(time.time(), 1), "episodes_per_s": round(eps, 3),
               "lr_g": self.opts.lr_g * self.lr_scale}
        for k in LOSS_COLUMNS:
            vals = [v for v in acc.get(k, []) if math.isfinite(v)]
            row[k] = round(sum(vals) / len(vals), 5) if vals else ""
        row["skipped"] = int(sum(acc.get("skipped", [])))
        rundir.append_losses(self.run, row)
        if self.opts.progress:
            t = Table(show_header=self.step_no // self.opts.log_every % 20 == 1, box=None, pad_edge=False)
            shown = [k for k in row if k not in ("time", "lr_g")]
            for k in shown:
                t.add_column(k, justify="right", min_width=8)
            t.add_row(*[str(row[k]) for k in shown])
            Console(stderr=True, width=160).print(t)

    # --- the loop -------------------------------------------------------------------------------
    def loader(self, epoch: int, start: int) -> DataLoader:
        self.data.set_epoch(epoch)
        sampler = distributed.ResumableSampler(self.data, num_replicas=self.world, rank=self.rank, shuffle=True,
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
        distributed.barrier()  # every process has looked for a checkpoint before rank 0 may write the first one
        if not resumed and self.rank == 0:
            rundir.write_options(self.run, o)
        if not resumed:
            self.save()  # step 0: the NaN guard always has something to go back to
        self.log(f"{'resumed at' if resumed else 'starting at'} step {self.step_no}: {self.cfg.preset} "
                 f"{self.cfg.generator} generator, {self.cfg.resolution}px, {self.n_video_columns} videos"
                 + (f" + {self.data.n_videos - self.n_video_columns} photo people ({o.photo_share:g} of the "
                    f"episodes)" if o.photos else "") + ", "
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
                        self._log_row(acc, steps_log * o.batch_size * self.world / max(dt, 1e-9), epoch)
                        acc, t_log, steps_log = {}, time.time(), 0
                    if self.rank == 0 and o.sample_every and s % o.sample_every == 0:
                        self.write_samples(self.run / rundir.SAMPLES / f"step_{s:07d}.png")
                    if o.checkpoint_every and s % o.checkpoint_every == 0:
                        self.save()
                    late = o.max_minutes is not None and time.time() - t_start > o.max_minutes * 60
                    if distributed.any_rank(late or stop["signal"], self.device):
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
                 f"checkpoint in {self.run / rundir.CHECKPOINT}")
        return summary


def _painted(parts: dict, part: str = "mouth") -> dict:
    """The loss log's `paint`: the mouth (or eye) painter's mean correction on the open mouths (eyes) of the
    step's targets (none without that painter or an opening)."""
    if part == "eyes":
        if "eye_painted" not in parts:
            return {}
        painted = eye_paint_usage(parts)["eye_paint_size"]
    elif "painted" not in parts:
        return {}
    else:
        painted = paint_usage(parts)["paint_size"]
    finite = torch.isfinite(painted)
    return {"paint": painted[finite].mean().item()} if finite.any() else {}


def train(opts: TrainOptions | None = None, **kwargs) -> dict:
    """Meta-learn (or resume) in `opts.run`; returns a summary (steps, episodes/s, stop reason)."""
    opts = dataclasses.replace(opts or TrainOptions(), **kwargs)
    try:
        return Trainer(opts).train()
    finally:
        distributed.shutdown()
