"""The training loop: GAN (every loss, penalty, EMA, DiffAugment) and the VAE baseline, on one process
or many, resumable bitwise from its checkpoints.

Determinism: one torch.Generator (seeded by train.seed) draws the data order, every latent, every
fake label and every augmentation parameter, always for the *global* batch, on the CPU; each rank
keeps its rows. So the sample stream does not depend on the device or on the number of processes.

A step first makes all of its draws (`_draw_gan`, `_draw_vae`), then computes from them on the device
(`_gan_compute`, `_vae_compute`), calling a check on its values before each update: the draws are the step's
only inputs. How the step runs (eagerly, or replayed as a CUDA graph with `train.cuda_graphs`) is the step
runner's business, picked once at construction (pipeline/training/graphs.py).
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pipeline import augment
from pipeline.device import (
    CPU_BF16_WARNING,
    cpu_bf16_native,
    pick_device,  # noqa: F401  (re-exported: the stage and the benches import it from here)
)
from pipeline.errors import ArtganError
from pipeline.losses import (
    LOSSES,
    clip_weights,
    consistency_penalty,
    gp_weights,
    gradient_penalty,
    lecam_penalty,
    lecam_update,
    r1_penalty,
    topk_count,
    topk_g,
)
from pipeline.training import checkpoint, dist
from pipeline.training.graphs import Check, runner


def grad_norm(module: nn.Module) -> torch.Tensor:
    """The L2 norm of all of module's gradients (per-tensor norms in one foreach call: few kernel launches)."""
    grads = [p.grad.detach().float() for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(module.parameters()).device)
    return torch.stack(torch._foreach_norm(grads)).norm()


@torch.no_grad()
def ema_update(G_ema: nn.Module | None, G: nn.Module, decay: float, step: int) -> None:
    """EMA of G's weights with a warm-up, min(decay, (1 + step) / (10 + step)) (as TensorFlow's
    ExponentialMovingAverage with num_updates): early on the average follows G closely instead of
    dragging its random initialisation along for thousands of steps. Buffers (batch-norm running
    statistics) are copied from G. Nothing when EMA is off (G_ema None)."""
    if G_ema is None:
        return
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(G_ema.parameters()), [p.detach() for p in G.parameters()], 1 - d)
    if buffers := list(G_ema.buffers()):
        torch._foreach_copy_(buffers, list(G.buffers()))


@dataclass
class Data:
    """The training images as uint8 N×3×S×S on the training device, and their class labels."""

    images: torch.Tensor
    labels: torch.Tensor | None
    n_classes: int
    class_counts: list[int] = field(init=False)  # images per class, from the labels ([] when unconditional)
    class_weights: torch.Tensor | None = field(init=False)  # the same as float64, which the fakes' labels follow

    def __post_init__(self):
        counts = torch.bincount(self.labels.cpu(), minlength=self.n_classes) if self.n_classes else None
        self.class_counts = counts.tolist() if counts is not None else []
        self.class_weights = counts.double() if counts is not None else None


@dataclass
class State:
    step: int = 0
    order: torch.Tensor | None = None
    cursor: int = 0
    curves: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    run_id: str | None = None

    def to_checkpoint(self) -> dict:
        return {
            "step": self.step,
            "order": self.order,
            "cursor": self.cursor,
            "curves": self.curves,
            "seconds": self.seconds,
            "run_id": self.run_id,
        }

    @classmethod
    def from_checkpoint(cls, ck: dict) -> "State":
        keys = ("step", "order", "cursor", "seconds", "run_id")
        return cls(curves=list(ck["curves"]), **{k: ck[k] for k in keys})


def check_finite(values: dict[str, torch.Tensor], step: int, world: dist.World) -> None:
    """A NonFinite stop when any of one step's values is a NaN or an infinity, on any process."""
    bad = not all(math.isfinite(v) for v in torch.stack([v.detach().float() for v in values.values()]).tolist())
    if dist.broadcast_flag(bad, world):
        shown = ", ".join(f"{k}={v.item():.4g}" for k, v in values.items())
        raise NonFinite(f"non-finite loss at step {step} ({shown})")


def lr_scale(step: int, steps: int, decay_start: float) -> float:
    """The learning-rate factor of `step` (1-based) of `steps`: 1 up to step k = floor(decay_start * steps), then
    falling linearly, (steps - step + 1) / (steps - k), to 1 / (steps - k) at the last step (linear decay, as in
    SNGAN's recipe, Miyato et al. 2018). decay_start 1 keeps the rates constant."""
    k = math.floor(decay_start * steps)
    return 1.0 if step <= k else (steps - step + 1) / (steps - k)


class GANCore:
    """What every trainer holds and saves alike: G, D, the EMA generator, both optimisers and the draw generator
    (`gen`), with the run's State. Trainer and the translation trainer add their own parts around these."""

    G: nn.Module
    D: nn.Module
    G_ema: nn.Module | None

    def set_lr(self, step: int) -> None:
        """Both optimisers' rates for `step` (1-based): the configured ones, times lr_scale. A function of the
        step alone, so a resumed run takes the rates the unbroken one took."""
        scale = lr_scale(step, self.t.steps, self.t.lr_decay_start)
        for opt, base in ((self.opt_g, self.t.lr_g), (self.opt_d, self.t.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * scale

    def update_ema(self, step: int) -> None:
        ema_update(self.G_ema, self.G, self.t.ema_decay, step)

    def sampler(self) -> nn.Module:
        """The generator to show: EMA when on."""
        return self.G_ema if self.G_ema is not None else self.G

    def core_state(self) -> dict:
        return {
            **self.state.to_checkpoint(),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "gen": self.gen.get_state(),
            "world_size": self.world.size,
        }

    def load_core(self, ck: dict) -> None:
        """G, D, the EMA generator and both optimisers (the caller then restores the draw generator and State)."""
        self.G.load_state_dict(ck["G"])
        self.D.load_state_dict(ck["D"])
        if self.G_ema is not None and ck["G_ema"] is not None:
            self.G_ema.load_state_dict(ck["G_ema"])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])


class Trainer(GANCore):
    def __init__(self, cfg, data: Data, world: dist.World, device: torch.device):
        from pipeline.models import KIND, build

        t, m = cfg.train, cfg.model
        self.cfg, self.t, self.data, self.world, self.device = cfg, t, data, world, device
        self.kind = KIND[m.arch]
        if t.batch_size % world.size:
            raise ArtganError(
                f"train.batch_size {t.batch_size} is not divisible by the {world.size} processes; change one"
            )
        self.local = t.batch_size // world.size
        self.own = slice(world.rank * self.local, (world.rank + 1) * self.local)  # this rank's rows of the global batch
        self.z_dim = m.z_dim
        self.loss = LOSSES[t.loss]
        self.gp = self.loss.gp and t.gp_weight > 0
        # real images one step reads (img/s): n_critic batches for a GAN's D steps, one batch for the VAE
        self.images_per_step = t.batch_size * (1 if self.kind == "vae" else t.n_critic)
        # bf16 autocast: `auto` on CUDA; `bf16` anywhere (on a CPU with AMX or AVX512-BF16 oneDNN runs it natively)
        self.amp = t.amp == "bf16" or (t.amp == "auto" and device.type == "cuda")
        if device.type == "cpu" and self.amp and world.rank == 0 and not cpu_bf16_native():
            print(CPU_BF16_WARNING.format(cap=torch.backends.cpu.get_cpu_capability()), file=sys.stderr)
        # channels_last for cuDNN's NHWC kernels, and for oneDNN's AMX bf16 ones on a CPU (fp32 on the CPU stays
        # NCHW, as the default's published numbers were made); not under torch.compile, which picks its own layouts
        # (and in torch 2.11 failed a stride assertion in the backward of G's first transposed convolution with it)
        self.channels_last = (device.type == "cuda" or (device.type == "cpu" and self.amp)) and not t.compile
        self.runner = runner(t.cuda_graphs, device, world.size, world.rank == 0)  # eager, or CUDA graphs
        if getattr(self.runner, "capture", False):  # a captured step replays the numbers it was captured with
            for key, off in (("lr_decay_start", 1.0), ("topk", 1.0)):
                if getattr(t, key) != off:
                    raise ArtganError(
                        f"train.{key} < 1 changes the step as training goes on, which a captured CUDA graph "
                        f"cannot; set train.cuda_graphs to false (or train.{key} to 1)"
                    )

        torch.manual_seed(t.seed)
        G, D = build(
            m.arch,
            cfg.data.image_size,
            m.z_dim,
            m.g_channels,
            m.d_channels,
            n_classes=data.n_classes,
            spectral_norm=m.spectral_norm,
            d_batch_norm=m.d_batch_norm and not self.loss.gp,
            mbstd_group=m.mbstd_group,
        )  # the gradient penalty is per sample: no batch norm in D with it
        if world.size > 1:
            G, D = dist.convert_sync_bn(G), dist.convert_sync_bn(D)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.G, self.D = G.to(device, memory_format=fmt), D.to(device, memory_format=fmt)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False) if t.ema_decay > 0 else None
        kw = self.runner.optimizer_kwargs()
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2), **kw)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2), **kw)
        self.g_fwd, self.d_fwd = (torch.compile(self.G), torch.compile(self.D)) if t.compile else (self.G, self.D)
        self.recon = getattr(D, "reconstructs", False)  # D's reconstruction loss joins its loss on real images
        self.gen = torch.Generator().manual_seed(t.seed)
        self.state = State()
        # LeCam's anchors [updates, α_R, α_F]: state of the run, saved with it (zeros and unused when off)
        self.lecam = torch.zeros(3, device=device)

    # ---------------------------------------------------------------- draws (global batch, own rows; CPU)
    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.own]

    def _draw_real(self) -> torch.Tensor:
        """This rank's rows of the next global batch's image indices (a new permutation each epoch)."""
        s, n, b = self.state, len(self.data.images), self.t.batch_size
        if s.order is None or s.cursor + b > n:
            s.order, s.cursor = torch.randperm(n, generator=self.gen), 0
        idx = self._rows(s.order[s.cursor : s.cursor + b])
        s.cursor += b
        return idx

    def _draw_flip(self) -> torch.Tensor | None:
        """Which of this rank's real images to mirror (train.xflip: each with probability 1/2), else None."""
        if not self.t.xflip:
            return None
        return self._rows(torch.rand(self.t.batch_size, generator=self.gen) < 0.5)

    def _draw_latents(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        b = self.t.batch_size
        z = self._rows(torch.randn(b, self.z_dim, generator=self.gen))
        y = None
        if self.data.n_classes:  # the fakes' labels as often as the reals' (a uniform draw on an unbalanced set
            # would let D call a fake by its label alone, a cue G cannot take away): the training set's frequencies
            y = self._rows(torch.multinomial(self.data.class_weights, b, replacement=True, generator=self.gen))
        return z, y

    def _draw_augment(self, policy: tuple[str, ...] | None = None) -> augment.Draws:
        """One augmentation draw for a batch: train.augment's policies, or `policy` (bCR's own T, always applied)."""
        t = self.t
        policy, p = (t.augment, t.augment_p) if policy is None else (policy, 1.0)
        if not policy or p == 0:
            return []
        size = tuple(self.data.images.shape[-2:])  # the reals' and (as G draws them) the fakes' H, W
        return augment.draw(policy, p, self.gen, size, t.batch_size, self.own)

    def _draw_gan(self, cr: bool = False) -> dict:
        """Every random input of one GAN step, in the order it is used: for each critic step the latents (and
        fake labels), the real batch (and, with train.xflip, which of its images to mirror), the augmentations of
        the reals and of the fakes and the gradient penalty's weights, then (on a bCR step, `cr`) the second
        augmentations of the reals and of the fakes; then the augmentation of G's step."""
        critic = []
        for _ in range(self.t.n_critic):
            z, y_fake = self._draw_latents()
            idx, flip = self._draw_real(), self._draw_flip()
            aug_real, aug_fake = self._draw_augment(), self._draw_augment()
            eps = gp_weights(self.gen, self.t.batch_size, self.own) if self.gp else None
            c = {
                "z": z,
                "y_fake": y_fake,
                "idx": idx,
                "flip": flip,
                "aug_real": aug_real,
                "aug_fake": aug_fake,
                "eps": eps,
            }
            if cr:  # drawn only on bCR steps: a run without it keeps its random stream
                own_t = self.t.cr_augment or None
                c["cr_real"], c["cr_fake"] = self._draw_augment(own_t), self._draw_augment(own_t)
            critic.append(c)
        return {"critic": critic, "aug_g": self._draw_augment()}

    def _draw_vae(self) -> dict:
        idx, flip = self._draw_real(), self._draw_flip()
        eps = self._rows(torch.randn(self.t.batch_size, self.z_dim, generator=self.gen))
        return {"idx": idx, "flip": flip, "eps": eps}

    # ---------------------------------------------------------------- device side
    def _real(self, idx: torch.Tensor, flip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = idx.to(self.data.images.device)
        x = self.data.images[idx]
        if flip is not None:  # mirrored as stored (uint8): exactly the image's mirror
            x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
        x = x.float().div_(127.5).sub_(1.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.data.labels[idx] if self.data.labels is not None else None
        return x, y

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=self.runner.autocast_cache())

    # ---------------------------------------------------------------- one optimisation step
    def _check(self, values: dict[str, torch.Tensor], step: int) -> None:
        check_finite(values, step, self.world)

    def _step_d(self, c: dict, fake: torch.Tensor, r1: bool, check: Check) -> dict[str, torch.Tensor]:
        t = self.t
        real, y_real = self._real(c["idx"], c["flip"])
        fake, y_fake = fake.detach(), c["y_fake"]
        plain = real, fake
        real = augment.apply(real, c["aug_real"])
        fake = augment.apply(fake, c["aug_fake"])  # the penalties see what D saw
        if "cr_real" in c:  # bCR's T: its own on top of what D saw, or a second draw of train.augment on the plain
            base_real, base_fake = (real, fake) if t.cr_augment else plain  # (mirrored) reals and fakes
            real_t, fake_t = augment.apply(base_real, c["cr_real"]), augment.apply(base_fake, c["cr_fake"])
        with self._autocast():
            if self.recon:  # a self-supervised D (fastgan) also rebuilds the real images it is shown
                d_real, recon = self.d_fwd(real, y_real, reconstruct=True)
            else:
                d_real, recon = self.d_fwd(real, y_real), None
            d_real = d_real.float()
            d_fake = self.d_fwd(fake, y_fake).float()
            loss = self.loss.d(d_real, d_fake)
        out = {"loss_d": loss, "d_real": self.loss.d_of(d_real).mean(), "d_fake": self.loss.d_of(d_fake).mean()}
        if recon is not None:
            loss = loss + recon
            out["recon"] = recon
        if t.lecam > 0:
            lecam_update(self.lecam, dist.all_reduce_mean(torch.stack([d_real.mean(), d_fake.mean()]), self.world))
            lc = lecam_penalty(d_real, d_fake, self.lecam[1], self.lecam[2])
            loss = loss + t.lecam * lc
            out["lecam"] = lc
        if "cr_real" in c:
            with self._autocast():
                cr = consistency_penalty(
                    d_real, self.d_fwd(real_t, y_real).float(), d_fake, self.d_fwd(fake_t, y_fake).float()
                )
            loss = loss + t.cr * t.cr_every * cr
            out["cr"] = cr
        if self.gp:
            gp = gradient_penalty(self.D, real, fake, y_real, eps=c["eps"])
            loss = loss + t.gp_weight * gp
            out["gp"] = gp
        if r1:
            r1_value = r1_penalty(self.D, real, y_real)
            loss = loss + (t.r1_gamma / 2) * t.r1_every * r1_value
            out["r1"] = r1_value
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        dist.all_reduce_grads(self.D, self.world)
        out["grad_norm_d"] = grad_norm(self.D)
        check(out)  # before the update: the weights never take a non-finite step
        self.opt_d.step()
        if self.loss.clip:
            clip_weights(self.D, t.clip_value)
        return out

    def _step_g(
        self, fake: torch.Tensor, y_fake, aug: augment.Draws, check: Check, k: int | None = None
    ) -> dict[str, torch.Tensor]:
        self.D.requires_grad_(False)  # no weight gradients for D in G's step: a third of D's backward saved
        try:
            with self._autocast():
                logits = self.d_fwd(augment.apply(fake, aug), y_fake).float()
                if k is None:
                    loss = self.loss.g(logits)
                else:  # top-k: the global batch's k most real-looking fakes
                    everyone = dist.all_gather_cat(logits, self.world)
                    loss = topk_g(self.loss, logits, everyone, k, self.world.size)
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            self.D.requires_grad_(True)
        dist.all_reduce_grads(self.G, self.world)
        norm = grad_norm(self.G)
        check({"loss_g": loss, "grad_norm_g": norm})
        self.opt_g.step()
        return {"loss_g": loss, "grad_norm_g": norm}

    def _gan_compute(self, d: dict, r1: bool, check: Check, k: int | None = None) -> dict[str, torch.Tensor]:
        """One GAN step from its draws (on the device); `check` sees the values before each update."""
        for i, c in enumerate(d["critic"]):
            last = i == len(d["critic"]) - 1
            # the last critic step's fakes are kept (with their graph) for G's step, as the classic loop does
            with self._autocast(), contextlib.nullcontext() if last else torch.no_grad():
                fake = self.g_fwd(c["z"], c["y_fake"])
            out = self._step_d(c, fake, r1, check)
        out.update(self._step_g(fake, c["y_fake"], d["aug_g"], check, k))
        if k is not None:
            out["topk"] = torch.tensor(float(k))
        return out

    def _vae_compute(self, d: dict, check: Check) -> dict[str, torch.Tensor]:
        """ELBO = reconstruction (sum of squared errors per image) + vae_beta * KL(q(z|x) || N(0, I)), from its
        draws (on the device); `check` sees the values before the update."""
        real, y = self._real(d["idx"], d["flip"])
        with self._autocast():
            mu, logvar = self.d_fwd(real, y)
            mu, logvar = mu.float(), logvar.float()
            recon = self.g_fwd(mu + torch.exp(0.5 * logvar) * d["eps"], y).float()
        rec = (recon - real).pow(2).flatten(1).sum(1).mean()
        kl = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)).mean()
        loss = rec + self.t.vae_beta * kl
        out = {"loss": loss, "rec": rec, "kl": kl}
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        dist.all_reduce_grads(self.G, self.world)
        dist.all_reduce_grads(self.D, self.world)
        out["grad_norm_g"], out["grad_norm_d"] = grad_norm(self.G), grad_norm(self.D)
        check(out)
        self.opt_g.step()
        self.opt_d.step()
        return out

    def topk(self, step: int) -> int | None:
        """Top-k's k at `step` (1-based; epochs of real images as the steps read them), or None when G's step
        uses the whole batch (train.topk 1, or k still the batch)."""
        if self.t.topk >= 1:
            return None
        epoch = (step - 1) * self.images_per_step // len(self.data.images)
        k = topk_count(self.t.batch_size, self.t.topk, epoch)
        return k if k < self.t.batch_size else None

    def gan_step(self, step: int) -> dict[str, torch.Tensor]:
        r1 = self.t.r1_gamma > 0 and step % self.t.r1_every == 0
        cr = self.t.cr > 0 and step % self.t.cr_every == 0
        k = self.topk(step)
        return self.runner.run(
            ("gan", r1, cr),
            self._draw_gan(cr),
            lambda d, check: self._gan_compute(d, r1, check, k),
            lambda values: self._check(values, step),
        )

    def vae_step(self, step: int) -> dict[str, torch.Tensor]:
        return self.runner.run(("vae",), self._draw_vae(), self._vae_compute, lambda values: self._check(values, step))

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {**self.core_state(), "lecam": self.lecam.clone()}

    def load_state_dict(self, ck: dict) -> None:
        self.load_core(ck)
        if "lecam" in ck:  # checkpoints from before LeCam hold none (and ran without it: zeros)
            self.lecam.copy_(ck["lecam"])
        self.runner.reset(self.opt_g, self.opt_d)  # this run's way of stepping, whatever the checkpoint's run used
        self.gen.set_state(ck["gen"])
        self.state = State.from_checkpoint(ck)
        checkpoint.set_rng_states(ck["rng"])


class NonFinite(ArtganError):
    """Training cannot go on (a NaN or an infinity, or a divergence): the loop stops, keeps the last good
    checkpoint and the MLflow run ends FAILED. `remedy` is what the one error line says to change."""

    def __init__(self, message: str, remedy: str = "lower train.lr_g / train.lr_d or try train.loss=hinge"):
        super().__init__(message)
        self.remedy = remedy


# ---------------------------------------------------------------- divergence without a NaN
EARLY_STEPS = 50  # a value's baseline: the median of its first EARLY_STEPS values
SCALE_FLOOR = 1.0  # baselines below this count as this (a loss near 0 early on is no scale to be 1e4 times of)
SATURATED = (0.99, 0.01)  # D(x) above, D(G(z)) below: D has won
# D's first: an exploding D inflates G's loss and gradients too, not the other way round
WATCHED = ("weight_norm_d", "loss_d", "grad_norm_d", "weight_norm_g", "loss_g", "grad_norm_g", "loss", "rec", "kl")


def likely_param(key: str) -> str:
    """The learning rate of the network whose value blew up."""
    return "train.lr_d" if key.endswith("_d") else "train.lr_g" if key.endswith("_g") else "train.lr_g / train.lr_d"


class DivergenceWatch:
    """Explosions that stay finite (train.lr_d: 1e6 trains to losses of 1e15): a watched value (loss, gradient
    norm, weight norm after the step) more than `factor` times its early median, or, for probabilities (bce, ns), D saturated
    (D(x) > 0.99 and D(G(z)) < 0.01) for `saturation_steps` steps in a row. A pure function of the values it is
    fed: the default params' curve (reports/train_curves.csv) peaks below 40 times its early medians."""

    def __init__(self, factor: float, saturation_steps: int = 0, probabilities: bool = False):
        self.factor, self.saturation_steps, self.probabilities = factor, saturation_steps, probabilities
        self.early: dict[str, list[float]] = {}
        self.saturated = 0

    def seed(self, rows: list[dict]) -> None:
        """The baselines of a resumed run: its curves so far (checked already, when they were made)."""
        for row in rows:
            for key in WATCHED:
                if key in row and len(seen := self.early.setdefault(key, [])) < EARLY_STEPS:
                    seen.append(abs(float(row[key])))

    def update(self, values: dict[str, float]) -> tuple[str, str] | None:
        """(what diverged, the likely param) when one step's `values` show a divergence, else None."""
        if self.factor:
            for key in WATCHED:
                if key not in values:
                    continue
                v, seen = abs(float(values[key])), self.early.setdefault(key, [])
                if seen:
                    base = max(statistics.median(seen), SCALE_FLOOR)
                    if v > self.factor * base:
                        return (
                            f"{key}={values[key]:.4g} is over {self.factor:g} times its early median {base:.4g} "
                            "(train.divergence_factor)",
                            likely_param(key),
                        )
                if len(seen) < EARLY_STEPS:
                    seen.append(v)
        if self.saturation_steps and self.probabilities and "d_real" in values and "d_fake" in values:
            won = values["d_real"] > SATURATED[0] and values["d_fake"] < SATURATED[1]
            self.saturated = self.saturated + 1 if won else 0
            if self.saturated >= self.saturation_steps:
                return (
                    f"D saturated (D(x) > {SATURATED[0]} and D(G(z)) < {SATURATED[1]}) for {self.saturated} "
                    "steps in a row (train.saturation_steps)",
                    "train.lr_d",
                )
        return None


def first_divergence(
    rows: list[dict], factor: float, saturation_steps: int = 0, probabilities: bool = True
) -> tuple[int, str, str] | None:
    """(step, what, param) of the first row of a curve (dicts with `step` and the values) that the watch
    stops at, or None: the detector as a pure function of a curve."""
    watch = DivergenceWatch(factor, saturation_steps, probabilities)
    for i, row in enumerate(rows):
        if (hit := watch.update(row)) is not None:
            return int(row.get("step", i + 1)), *hit
    return None


def weight_norms(trainer: "Trainer") -> dict[str, float]:
    """The L2 norms of G's and D's parameters (one host sync)."""
    norms = [
        torch.stack(torch._foreach_norm([p.detach().float() for p in m.parameters()])).norm()
        for m in (trainer.D, trainer.G)
    ]
    d, g = torch.stack(norms).cpu().tolist()
    return {"weight_norm_d": d, "weight_norm_g": g}


class NullRun:
    """What ranks other than 0 log to: nothing."""

    run_id = None

    def __getattr__(self, name):
        return lambda *a, **k: None


def fixed_inputs(trainer: Trainer, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Latents for the progress grids; when conditional, row r of an 8-wide grid is class r % n_classes."""
    z = torch.randn(n, trainer.z_dim, generator=torch.Generator().manual_seed(seed))
    y = None
    if trainer.data.n_classes:
        y = (torch.arange(n) // 8) % trainer.data.n_classes
    return z.to(trainer.device), (y.to(trainer.device) if y is not None else None)


def latest_path(cfg, key: str) -> Path:
    return checkpoint.folder(cfg, key) / checkpoint.LATEST


def train_loop(trainer: Trainer, key: str, mlrun, on_sample) -> None:
    """Run to train.steps from wherever trainer.state is; checkpoint every train.checkpoint_every steps.

    A non-finite loss, a divergence (DivergenceWatch) or a non-finite tensor in the state due to be checkpointed
    stops training with one error line: the last good checkpoint stays, and the MLflow run ends FAILED."""
    t, s, world = trainer.t, trainer.state, trainer.world
    step_fn = trainer.vae_step if trainer.kind == "vae" else trainer.gan_step
    pending: list[tuple[int, dict[str, float]]] = []
    t0, done0 = time.perf_counter(), s.step
    seconds0 = s.seconds
    last_good = s.step if s.step else None
    watch = DivergenceWatch(t.divergence_factor, t.saturation_steps, trainer.kind != "vae" and trainer.loss.prob)
    watch.seed(s.curves)
    if t.divergence_factor:
        watch.update(weight_norms(trainer))  # the weights this run starts from: the weight norms' baseline
    bar = None
    if world.main:
        from tqdm import tqdm

        bar = tqdm(total=t.steps, initial=s.step, desc="train", unit="step", mininterval=1.0)
    try:
        while s.step < t.steps:
            step = s.step + 1
            try:
                trainer.set_lr(step)
                out = step_fn(step)
                values = dict(zip(out, torch.stack([v.detach().float() for v in out.values()]).cpu().tolist()))
                norms = weight_norms(trainer) if t.divergence_factor else {}  # after this step's update
                _stop_if(watch.update({**values, **norms}), world, step)
                trainer.update_ema(step)
                due = step % t.checkpoint_every == 0 or step == t.steps
                snap = world.main and (step == t.steps or (t.snapshot_every and step % t.snapshot_every == 0))
                if due or snap:  # what is written is finite in every tensor, or it is not written
                    bad = checkpoint.non_finite(trainer.state_dict())
                    if dist.broadcast_flag(bool(bad), world):
                        raise NonFinite(
                            f"non-finite state at step {step} (in {checkpoint.describe(bad)})"
                            if bad
                            else f"non-finite state at step {step} on another process"
                        )
            except NonFinite as exc:
                if world.main:
                    mlrun.log_metric_history(pending)  # the curves up to the failure, to see it coming
                where = (
                    f"the last good checkpoint (step {last_good}) is kept in {latest_path(trainer.cfg, key)}"
                    if last_good
                    else "no checkpoint was written yet"
                )
                raise ArtganError(f"train: {exc}; {where}; {exc.remedy}") from None
            s.step = step
            s.seconds = seconds0 + time.perf_counter() - t0
            if step % t.log_every == 0 or step == t.steps:
                row = dict(values)
                row.update(
                    lr_g=trainer.opt_g.param_groups[0]["lr"],
                    lr_d=trainer.opt_d.param_groups[0]["lr"],
                    img_per_s=(step - done0) * trainer.images_per_step / max(s.seconds - seconds0, 1e-9),
                )
                s.curves.append({"step": step, **row})
                pending.append((step, row))
                if bar is not None:
                    first = "loss" if "loss" in row else "loss_d"
                    bar.set_postfix({first: f"{row[first]:.3f}", "img_s": f"{row['img_per_s']:.0f}"})
            if bar is not None:
                bar.update(1)
            if world.main and (step % t.sample_every == 0 or step == t.steps):
                on_sample(step)
            if snap:
                checkpoint.save_snapshot(checkpoint.folder(trainer.cfg, key), step, trainer.sampler().state_dict())
            if due:
                if world.main:
                    mlrun.log_metric_history(pending)  # flushed with the checkpoint: a resume never logs a step twice
                    checkpoint.save(latest_path(trainer.cfg, key), trainer.state_dict())
                pending = []
                last_good = step
    finally:
        if bar is not None:
            bar.close()


def _stop_if(hit: tuple[str, str] | None, world: dist.World, step: int) -> None:
    """Raise the divergence `hit` (what, param) as a NonFinite stop, on every process when any one has one."""
    if dist.broadcast_flag(hit is not None, world):
        what, param = hit if hit is not None else ("a value diverged on another process", "train.lr_g / train.lr_d")
        raise NonFinite(f"diverging at step {step}: {what}", remedy=f"lower {param}")
