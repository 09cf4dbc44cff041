"""Task translate's trainer: pix2pix (paired: U-Net G, PatchGAN D on (input, image) pairs, adversarial + λ·L1) and
CycleGAN (unpaired: G: input -> style and F: style -> input, a PatchGAN D per domain, cycle-consistency and identity
L1, a history buffer of generated images for each D).

It runs in the generation trainer's loop (pipeline/training/loop.py: train_loop), so it has the same checkpoints,
bitwise resume, divergence watch, finite-state checks, EMA and snapshots. The adversarial term is `train.loss`
(lsgan is CycleGAN's default; ns, bce and hinge work too); DiffAugment (`train.augment`) is applied with the same
draws to both halves of a pix2pix pair. Determinism as in generation: every random choice (the data order, the
augmentations, pix2pix's dropout masks, the history buffer's picks) is drawn on the CPU from one torch.Generator
seeded by train.seed, for the global batch. Several processes split each batch; CycleGAN's history buffer is then
kept per process, so only pix2pix gives the same weights at any process count (to float summation order).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline import augment
from pipeline.errors import ArtganError
from pipeline.losses import LOSSES
from pipeline.models.translators import TRANSLATORS, draw_dropout
from pipeline.training import checkpoint, dist
from pipeline.training.loop import GANCore, State, check_finite, grad_norm

KIND = "translator"


def resolve_model(model: str, paired: bool) -> str:
    """translate.model, with auto made concrete: pix2pix when the data are paired, CycleGAN otherwise."""
    if model == "auto":
        return "pix2pix" if paired else "cyclegan"
    if model == "pix2pix" and not paired:
        raise ArtganError(
            "translate.model is pix2pix, but the processed data are unpaired (no input shares a name with a style "
            "image); set translate.model to cyclegan (or auto), or name the pairs alike and `dvc repro`"
        )
    return model


@dataclass
class Domains:
    """Training data on the device: uint8 N×3×S×S inputs and styles; `targets[i]` is input i's style row (paired)."""

    inputs: torch.Tensor
    styles: torch.Tensor
    targets: torch.Tensor | None


class HistoryBuffer:
    """CycleGAN's image pool (Shrivastava et al., 2017): D sees a generated image from the buffer half of the time.
    While it is not full, each new image is stored and shown; then, per image, with probability 1/2 a stored one (at
    a drawn slot) is shown and the new one takes its slot, else the new one is shown. The draws come from outside,
    so the buffer is a pure function of them (and its contents go into the checkpoint)."""

    def __init__(self, size: int):
        self.size = size
        self.images: torch.Tensor | None = None  # the stored images, at most `size` rows

    def query(self, fake: torch.Tensor, u: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return fake
        out = []
        for i, img in enumerate(fake.detach()):
            n = 0 if self.images is None else len(self.images)
            if n < self.size:
                self.images = img[None].clone() if self.images is None else torch.cat([self.images, img[None]])
                out.append(img)
            elif u[i] < 0.5:
                j = int(slot[i]) % self.size
                out.append(self.images[j].clone())
                self.images[j] = img
            else:
                out.append(img)
        return torch.stack(out)


class TranslationTrainer(GANCore):
    """The generation Trainer's interface (pipeline/training/loop.py) for an image-to-image GAN."""

    kind = KIND

    def __init__(self, cfg, data: Domains, model: str, world: dist.World, device: torch.device):
        t, tr, m = cfg.train, cfg.translate, cfg.model
        self.cfg, self.t, self.tr, self.data, self.world, self.device = cfg, t, tr, data, world, device
        self.model = model
        if t.batch_size % world.size:
            raise ArtganError(
                f"train.batch_size {t.batch_size} is not divisible by the {world.size} processes; change one"
            )
        self.local = t.batch_size // world.size
        self.own = slice(world.rank * self.local, (world.rank + 1) * self.local)
        self.loss = LOSSES[t.loss]
        if self.loss.gp or self.loss.clip:
            raise ArtganError(
                f"train.loss {t.loss}: task translate takes lsgan, ns, bce or hinge (a PatchGAN critic has no "
                "WGAN recipe here); set train.loss to lsgan"
            )
        self.images_per_step = t.batch_size
        self.amp = t.amp == "bf16" or (t.amp == "auto" and device.type == "cuda")
        size = cfg.data.image_size
        torch.manual_seed(t.seed)
        build = TRANSLATORS[model]
        G, D = build(size, m.g_channels, m.d_channels, m.spectral_norm, tr.blend)  # the way back has no blend
        self.G, self.D = G.to(device), D.to(device)  # G: input -> style; D judges style images (pix2pix: pairs)
        self.G_ba = self.D_a = None
        if model == "cyclegan":
            G_ba, D_a = build(size, m.g_channels, m.d_channels, m.spectral_norm)
            self.G_ba, self.D_a = G_ba.to(device), D_a.to(device)  # F: style -> input; D_a judges inputs
        self.gens = nn.ModuleList([x for x in (self.G, self.G_ba) if x is not None])
        self.discs = nn.ModuleList([x for x in (self.D, self.D_a) if x is not None])
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False) if t.ema_decay > 0 else None
        self.opt_g = torch.optim.Adam(self.gens.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
        self.opt_d = torch.optim.Adam(self.discs.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
        self.pools = [HistoryBuffer(tr.pool_size), HistoryBuffer(tr.pool_size)]  # fakes of the style, of inputs
        self.gen = torch.Generator().manual_seed(t.seed)
        self.state = State()
        self.style_order: torch.Tensor | None = None  # CycleGAN draws styles apart from inputs
        self.style_cursor = 0

    # ---------------------------------------------------------------- draws (global batch, own rows; CPU)
    def _next(self, n: int, order, cursor: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        b = self.t.batch_size
        if order is None or cursor + b > n:
            order, cursor = torch.randperm(n, generator=self.gen), 0
        return order[cursor : cursor + b][self.own], order, cursor + b

    def _draw(self) -> dict:
        s, b, t = self.state, self.t.batch_size, self.t
        d: dict = {}
        d["idx"], s.order, s.cursor = self._next(len(self.data.inputs), s.order, s.cursor)
        if self.model == "cyclegan":
            d["style"], self.style_order, self.style_cursor = self._next(
                len(self.data.styles), self.style_order, self.style_cursor
            )
            d["pool"] = [
                (
                    torch.rand(b, generator=self.gen)[self.own],
                    torch.randint(1 << 30, (b,), generator=self.gen)[self.own],
                )
                for _ in self.pools
            ]
        if self.model == "pix2pix":  # the U-Net's dropout masks, like generation's noise: global batch, own rows
            d["dropout"] = [draw_dropout(b, m.shape, self.gen)[self.own] for m in self.G.dropouts]
        size = tuple(self.data.inputs.shape[-2:])
        augs = t.augment if t.augment and t.augment_p > 0 else []
        d["aug"] = [augment.draw(augs, t.augment_p, self.gen, size, b, self.own) if augs else [] for _ in range(4)]
        return d

    # ---------------------------------------------------------------- device side
    def _images(self, arr: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return arr[idx.to(arr.device)].float().div_(127.5).sub_(1.0)

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _judge(self, D: nn.Module, x: torch.Tensor, aug, cond: torch.Tensor | None = None) -> torch.Tensor:
        """D's patch logits for images x (pix2pix: beside their inputs `cond`, both augmented alike)."""
        x = augment.apply(x, aug)
        if cond is not None:
            x = torch.cat([augment.apply(cond, aug), x], 1)
        with self._autocast():
            return D(x).float()

    def _update(self, opt, modules: nn.ModuleList, loss: torch.Tensor, out: dict, key: str, check) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for mod in modules:
            dist.all_reduce_grads(mod, self.world)
        out[f"grad_norm_{key}"] = grad_norm(modules)
        check(out)  # before the update: the weights never take a non-finite step
        opt.step()

    def _pix2pix(self, d: dict, check) -> dict[str, torch.Tensor]:
        x = self._images(self.data.inputs, d["idx"])
        y = self._images(self.data.styles, self.data.targets[d["idx"].to(self.data.targets.device)])
        for m, mask in zip(self.G.dropouts, d["dropout"]):
            m.mask = mask.to(self.device)
        try:
            with self._autocast():
                fake = self.G(x).float()
        finally:
            for m in self.G.dropouts:
                m.mask = None
        d_real = self._judge(self.D, y, d["aug"][0], x)
        d_fake = self._judge(self.D, fake.detach(), d["aug"][0], x)
        out = {"loss_d": self.loss.d(d_real, d_fake)}
        out |= {"d_real": self.loss.d_of(d_real).mean(), "d_fake": self.loss.d_of(d_fake).mean()}
        self._update(self.opt_d, self.discs, out["loss_d"], out, "d", check)
        self.D.requires_grad_(False)
        try:
            adv = self.loss.g(self._judge(self.D, fake, d["aug"][1], x))
            l1 = F.l1_loss(fake, y)
            g = {"loss_g": adv + self.tr.lambda_l1 * l1, "loss_g_adv": adv, "l1": l1}
            self._update(self.opt_g, self.gens, g["loss_g"], g, "g", check)
        finally:
            self.D.requires_grad_(True)
        return out | g

    def _cyclegan(self, d: dict, check) -> dict[str, torch.Tensor]:
        tr = self.tr
        a = self._images(self.data.inputs, d["idx"])
        b = self._images(self.data.styles, d["style"])
        self.discs.requires_grad_(False)
        try:
            with self._autocast():
                fake_b, fake_a = self.G(a).float(), self.G_ba(b).float()
                rec_a, rec_b = self.G_ba(fake_b).float(), self.G(fake_a).float()
            adv = self.loss.g(self._judge(self.D, fake_b, d["aug"][0])) + self.loss.g(
                self._judge(self.D_a, fake_a, d["aug"][1])
            )
            cycle = F.l1_loss(rec_a, a) + F.l1_loss(rec_b, b)
            g = {"loss_g_adv": adv, "cycle": cycle}
            total = adv + tr.lambda_cycle * cycle
            if tr.lambda_identity > 0:
                with self._autocast():
                    idt = F.l1_loss(self.G(b).float(), b) + F.l1_loss(self.G_ba(a).float(), a)
                g["identity"] = idt
                total = total + tr.lambda_cycle * tr.lambda_identity * idt
            g["loss_g"] = total
            self._update(self.opt_g, self.gens, total, g, "g", check)
        finally:
            self.discs.requires_grad_(True)
        shown_b = self.pools[0].query(fake_b, *d["pool"][0])
        shown_a = self.pools[1].query(fake_a, *d["pool"][1])
        d_real_b, d_fake_b = self._judge(self.D, b, d["aug"][2]), self._judge(self.D, shown_b, d["aug"][2])
        d_real_a, d_fake_a = self._judge(self.D_a, a, d["aug"][3]), self._judge(self.D_a, shown_a, d["aug"][3])
        out = {"loss_d": self.loss.d(d_real_b, d_fake_b) + self.loss.d(d_real_a, d_fake_a)}
        out |= {"d_real": self.loss.d_of(d_real_b).mean(), "d_fake": self.loss.d_of(d_fake_b).mean()}
        self._update(self.opt_d, self.discs, out["loss_d"], out, "d", check)
        return g | out

    def gan_step(self, step: int) -> dict[str, torch.Tensor]:
        d = self._draw()
        compute = self._pix2pix if self.model == "pix2pix" else self._cyclegan
        return compute(d, lambda values: check_finite(values, step, self.world))

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            **self.core_state(),
            "G_ba": self.G_ba.state_dict() if self.G_ba is not None else None,
            "D_a": self.D_a.state_dict() if self.D_a is not None else None,
            "style_order": self.style_order,
            "style_cursor": self.style_cursor,
            "pools": [p.images for p in self.pools],
        }

    def load_state_dict(self, ck: dict) -> None:
        if self.G_ba is not None:
            self.G_ba.load_state_dict(ck["G_ba"])
            self.D_a.load_state_dict(ck["D_a"])
        self.load_core(ck)
        self.gen.set_state(ck["gen"])
        self.style_order, self.style_cursor = ck["style_order"], ck["style_cursor"]
        for pool, images in zip(self.pools, ck["pools"]):
            pool.images = images.to(self.device) if images is not None else None
        self.state = State.from_checkpoint(ck)
        checkpoint.set_rng_states(ck["rng"])

    def checkpoint_fields(self) -> dict:
        """What models/checkpoint.pt holds for a translator (pipeline/translation/translator.py reads it)."""
        return {
            "kind": KIND,
            "model": self.model,
            "image_size": int(self.cfg.data.image_size),
            "g_channels": int(self.cfg.model.g_channels),
            "blend": self.tr.blend,
            "generator": self.G.state_dict(),
            "generator_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "discriminator": self.D.state_dict(),
            "generator_ba": self.G_ba.state_dict() if self.G_ba is not None else None,
            "generator_ba_ema": None,
            "discriminator_a": self.D_a.state_dict() if self.D_a is not None else None,
            "classes": [],
            "class_counts": [],
        }
