"""Multi-process training on PyTorch's own engine (torch.distributed, launched by torchrun).

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK. Every rank holds the whole dataset and the same seeded
generator, draws the *global* batch's indices, latents and augmentation parameters, and keeps its own
slice of rows; gradients are averaged across ranks after each backward pass. With batch norm
synchronised (`SyncBatchNorm`, below) this is the same arithmetic as one process with the global batch.

Gradients are all-reduced by hand, as stylegan2-ada-pytorch does, rather than through the
DistributedDataParallel wrapper: a GAN step calls D several times per backward pass and takes
double-backward gradients for R1 and the gradient penalty, which DDP's reducer does not support
(its documentation: "DistributedDataParallel does not work with torch.autograd.grad()").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(device_type: str) -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_grads(module: nn.Module, world: World) -> None:
    """Average the gradients of `module` over all ranks (one flat buffer, one collective)."""
    if world.size <= 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world.size)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def all_reduce_mean(t: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of `t` over all ranks (a new tensor; `t` itself on one process)."""
    if world.size <= 1:
        return t
    import torch.distributed as dist

    t = t.clone()
    dist.all_reduce(t)
    return t.div_(world.size)


def all_gather_cat(t: torch.Tensor, world: World) -> torch.Tensor:
    """Every rank's `t` (same shape on each), concatenated along dim 0 in rank order, without gradients
    (`t` itself, detached, on one process)."""
    t = t.detach()
    if world.size <= 1:
        return t
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(world.size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def broadcast_flag(flag: bool, world: World) -> bool:
    """True on every rank when any rank says True (e.g. a non-finite loss)."""
    if world.size <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose batch statistics span every rank, on any device (torch's own SyncBatchNorm
    refuses CPU tensors). Single-process or eval mode: plain batch norm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() // c, dtype=torch.float32, device=x.device)
        xf = x.float()
        total = all_reduce(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))  # autograd-aware sum
        n = total[2 * c]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d in `module` by SyncBatchNorm, keeping parameters and buffers."""
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        new = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_sync_bn(child))
    return module
