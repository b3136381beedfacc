"""Data-parallel scale-out on torch.distributed: process group, DDP wrapping, sharded samplers and batches,
broadcasts from rank 0, gradient averaging, rank 0 writes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files and prints."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` on this device, inside DistributedDataParallel when there are several processes."""
        model = model.to(self.device)
        if not self.distributed:
            return model
        if self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index])
        return nn.parallel.DistributedDataParallel(model)

    def train_sampler(self, dataset: Dataset, seed: int) -> DistributedSampler:
        """A shuffling sampler giving this rank every world_size-th index of one seeded permutation.

        With per-rank batch B / world_size, step k of all ranks together covers exactly the samples of
        step k of a single process with batch B (the permutation does not depend on the world size).
        """
        return DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed)

    def shard(self, n: int) -> range:
        """This rank's share of ``n`` evaluation samples, without padding (shares are disjoint, cover all)."""
        return range(self.rank, n, self.world_size)

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``values`` over all processes (a no-op for one process)."""
        if self.distributed:
            values = values.to(self.device)
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values.cpu()

    def all_reduce_sum_with_grad(self, values: Tensor) -> Tensor:
        """Element-wise sum of ``values`` over all processes that gradients flow through (the backward
        pass sums the gradients of all processes' uses), on ``values``' device; ``values`` for one process."""
        if not self.distributed:
            return values
        return dist_fn.all_reduce(values, op=dist.ReduceOp.SUM)

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` (any picklable value) on every process; the others pass anything, e.g. None."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def broadcast_state(self, module: nn.Module) -> None:
        """Overwrites ``module``'s parameters and buffers with rank 0's."""
        if self.distributed:
            with torch.no_grad():
                for tensor in [*module.parameters(), *module.buffers()]:
                    dist.broadcast(tensor.data, src=0)

    def average_gradients(self, params) -> None:
        """Replaces every gradient of ``params`` by its mean over all processes: one all-reduce of all of
        them flattened. Every process must hold gradients for the same parameters (the same sub-network)."""
        if not self.distributed:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def split(self, index: Tensor) -> Tensor:
        """This rank's contiguous part of one global batch's sample ``index`` (parts differ by at most one
        sample; rank r takes the r-th of ``world_size`` runs), so all ranks together hold exactly that batch."""
        if not self.distributed:
            return index
        return torch.tensor_split(index, self.world_size)[self.rank]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_distributed(train_on: str = "cpu", rank: int | None = None, world_size: int | None = None,
                     init_method: str = "env://") -> DistContext:
    """Join the process group when launched with several processes (torchrun sets RANK / WORLD_SIZE).

    Backend gloo on CPU, nccl on CUDA; on CUDA each process uses the GPU of its LOCAL_RANK.
    """
    if train_on not in ("cpu", "cuda"):
        raise ValueError(f"train_on must be 'cpu' or 'cuda', got {train_on!r}")
    if train_on == "cuda" and not torch.cuda.is_available():
        raise ValueError("--train-on cuda: no CUDA device is available (use --train-on cpu)")
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = torch.device("cuda", local_rank % torch.cuda.device_count()) if train_on == "cuda" else torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=init_method,
                                rank=rank, world_size=world_size)
    return DistContext(rank=rank, world_size=world_size, device=device)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (after the last collective)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
