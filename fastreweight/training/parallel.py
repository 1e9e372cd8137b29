"""Where the loop runs: one process, or data parallel over ``torch.distributed`` ranks (DDP).

The methods ask this object for their losses and their per-sample state, so that one method's code
serves both: ``SingleProcess`` takes plain means and a ``Reweighter``; ``Distributed`` takes the
global batch's weighted mean (each rank's share, scaled for DDP's gradient average) and a
``DistributedReweighter`` whose state every rank keeps identical (it all-gathers each step's
``(idx, scores)``).  Each rank reads its own batches: a ``DataLoader`` with a ``DistributedSampler``
(the loop calls its ``set_epoch``), or a ``TensorLoader`` with ``shard=(rank, world)``.

Checkpoints: ``gather_objects`` collects every rank's random state, ``on_first_rank`` writes the one
shared file on rank 0 and tells every rank how it went, and ``all_max`` lets the ranks agree on the
start-of-fit checks, so that every rank raises the same error instead of one raising and the others
hanging in their next collective.
"""
from __future__ import annotations

import builtins

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..weights import Reweighter, weighted_loss

__all__ = ["SingleProcess", "Distributed"]


class SingleProcess:
    """One process, one device."""

    distributed = False
    rank, world = 0, 1
    group = None

    def setup(self) -> None:
        pass

    def wrap(self, model: nn.Module, device: torch.device) -> tuple[nn.Module, nn.Module]:
        """``(net, model)``: the module training forwards go through, and the plain module."""
        return model, model

    def mean_ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # one cross_entropy call with its own mean reduction: one op and one autograd node fewer
        return F.cross_entropy(logits, y)

    def mean_loss(self, losses: torch.Tensor) -> torch.Tensor:
        return losses.mean()

    def weighted_loss(self, losses: torch.Tensor, w: torch.Tensor, reduction: str) -> torch.Tensor:
        return weighted_loss(losses, w, reduction=reduction)

    def reweighter(self, num_samples: int, **kw) -> Reweighter:
        return Reweighter(num_samples, **kw)

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def all_max(self, t: torch.Tensor) -> torch.Tensor:
        """The elementwise maximum of ``t`` over the ranks (in place)."""
        return t

    def gather_objects(self, obj) -> list:
        """Every rank's ``obj``, in rank order."""
        return [obj]

    def on_first_rank(self, fn):
        """``fn()`` run by rank 0 alone; every rank returns its result (or raises its error)."""
        return fn()

    def state_dict(self) -> dict:
        return {"world": 1}


class Distributed(SingleProcess):
    """Data parallel over an initialised process group (default: the world group).

    The model is wrapped in ``DistributedDataParallel`` (whose construction broadcasts rank 0's
    parameters and buffers; ``device_ids=[device]`` on CUDA) unless it already is one.  No-grad feature
    and accuracy passes use the plain module (no collectives): DDP keeps the parameters identical on
    every rank, so every rank computes the same clean features.
    """

    distributed = True

    def __init__(self, process_group=None) -> None:
        self.group = process_group

    def setup(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("Distributed() needs an initialised torch.distributed process group "
                               "(call torch.distributed.init_process_group on every rank first)")
        self.rank, self.world = dist.get_rank(self.group), dist.get_world_size(self.group)

    def wrap(self, model, device):
        if device.type == "cuda":  # NCCL's object collectives (checkpoints) use the current CUDA device
            torch.cuda.set_device(device)
        ddp = nn.parallel.DistributedDataParallel
        if isinstance(model, ddp):
            return model, model.module
        net = ddp(model, device_ids=[device] if device.type == "cuda" else None, process_group=self.group)
        return net, model

    def mean_ce(self, logits, y):
        return self.mean_loss(F.cross_entropy(logits, y, reduction="none"))

    def mean_loss(self, losses):
        return self.weighted_loss(losses, torch.ones_like(losses), "batch")

    def weighted_loss(self, losses, w, reduction):
        from ..distributed import distributed_weighted_loss

        return distributed_weighted_loss(losses, w, reduction=reduction, group=self.group)

    def reweighter(self, num_samples, **kw):
        from ..distributed import DistributedReweighter

        return DistributedReweighter(num_samples, group=self.group, **kw)

    def all_reduce(self, t):
        dist.all_reduce(t, group=self.group)
        return t

    def all_max(self, t):
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t

    def gather_objects(self, obj):
        out = [None] * self.world
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def on_first_rank(self, fn):
        """A collective: rank 0 runs ``fn()``, then broadcasts its result or its error, so the other
        ranks wait until it is done (e.g. a checkpoint file exists for all of them to read) and raise
        when it failed rather than running on into a collective rank 0 never joins."""
        box, error = [None], None
        if self.rank == 0:
            try:
                box[0] = ("ok", fn())
            except Exception as e:  # noqa: BLE001 - re-raised below, after the others have heard of it
                box[0] = ("error", (type(e).__name__, str(e)))
                error = e
        src = 0 if self.group is None else dist.get_global_rank(self.group, 0)
        dist.broadcast_object_list(box, src=src, group=self.group)
        kind, value = box[0]
        if kind == "ok":
            return value
        if self.rank == 0:
            try:
                raise error
            finally:
                error = None  # the traceback holds this frame: no cycle keeping the process group alive
        raise _remote_error(*value)

    def state_dict(self) -> dict:
        return {"world": self.world}


def _remote_error(name: str, message: str) -> Exception:
    """Rank 0's error as seen on another rank: the same built-in class where it is one (only its name and
    message travel: an arbitrary exception object may not pickle), else a RuntimeError naming it."""
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls(f"on rank 0: {message}")
    return RuntimeError(f"on rank 0: {name}: {message}")
