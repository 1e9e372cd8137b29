"""Rows of ``score_dataset`` sharded across ``torch.distributed`` ranks (``Execution(process_group=...)``).

* **Shards**: the rows are cut into the chunks of one process (chunk ``k`` = rows
  ``[k·chunk_rows, (k+1)·chunk_rows)``); rank ``r`` of ``R`` scores chunks ``[r·K//R, (r+1)·K//R)``
  of the ``K``, a contiguous block of rows.  Every chunk is the very chunk one process would score,
  so its per-row arithmetic (GEMM shape included) is the same.
* **Statistics**: the whitening's streamed moments and ``refine``'s per-class sums are summed per rank
  and all-reduced; the moments' shift is global chunk 0's mean on every rank, as in one process.
* **Results**: the per-row scores and suggestions are all-gathered, so every rank returns the
  full ``ScoreResult``.
* **Errors**: the checks before any row is read are agreed on (``agree``: one all-reduce of which
  ranks failed; the failing rank raises its own error, the others a ``ValueError`` naming that rank), and
  so is whether every rank was called with the same inputs and options (``Shard.same_everywhere``: the
  shapes, options and content digests of the labels, clean side and options); a bad streamed row found
  on any rank is agreed on (the smallest row index, one all-reduce per checked pass), so every rank
  raises the same ``ValueError`` and none is left waiting in a collective.

Collectives run on the CPU for gloo and on the scoring device for NCCL.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["Shard", "agree", "digest"]


def _comm_device(group, device) -> torch.device:
    import torch.distributed as dist

    return torch.device(device) if dist.get_backend(group) == "nccl" else torch.device("cpu")


def agree(group, error: BaseException | None, what: str = "its inputs", device="cpu") -> None:
    """Agree over ``group`` on the outcome of a phase that ran on every rank without collectives (e.g. the
    checks of the inputs): one all-reduce of which ranks failed.  A rank whose phase raised ``error``
    raises it again; where another rank failed, the others raise a ``ValueError`` naming it, so no rank
    goes on to a collective that a failed rank never joins.  ``group`` ``None`` (one process) re-raises
    ``error``, if any.  Call on every rank of ``group``, once per phase.  ``device``: the scoring device
    (where an NCCL group communicates; one that is not a CUDA device, e.g. one the phase refused, falls
    back to the current CUDA device there).  Callers drop their own reference to ``error`` afterwards
    (``finally: error = None``): the traceback holds their frame, and a cycle through it would keep the
    process group alive past ``destroy_process_group``."""
    failed_ranks = None
    if group is not None:
        import torch.distributed as dist

        if isinstance(group, str):  # "world": the default group, if any (none: one process, nothing to agree on)
            group = dist.group.WORLD if dist.is_available() and dist.is_initialized() else None
    if group is not None:
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        failed = torch.zeros(world, dtype=torch.int64, device=_agree_device(group, device))
        failed[rank] = int(error is not None)
        dist.all_reduce(failed, group=group)
        failed_ranks = torch.nonzero(failed).flatten().tolist()
    group = None  # not held by this frame once an exception carries it away
    try:
        if error is not None:
            raise error
        if failed_ranks:
            raise ValueError(f"another rank rejected {what} (rank {', '.join(map(str, failed_ranks))} of {world}; its "
                             "own error is reported there), so this rank stops too")
    finally:
        error = None


def _agree_device(group, device) -> torch.device:
    """Where ``agree`` communicates: the CPU for gloo; for NCCL ``device`` if it is a CUDA device, else the
    current CUDA device."""
    import torch.distributed as dist

    if dist.get_backend(group) != "nccl":
        return torch.device("cpu")
    try:
        d = torch.device(device)
    except (TypeError, RuntimeError, ValueError):
        d = None
    return d if d is not None and d.type == "cuda" else torch.device("cuda", torch.cuda.current_device())


def digest(*parts) -> int:
    """63 bits of a BLAKE2b digest of ``parts`` (arrays or tensors by their dtype, shape and bytes; anything
    else by its ``repr``), as a non-negative int64: a content fingerprint for ``Shard.same_everywhere``."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        if part is None:
            h.update(b"\x00none")
            continue
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous().numpy()
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"\x01{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
        else:
            h.update(b"\x02" + repr(part).encode())
    return int.from_bytes(h.digest(), "little") >> 1


class Shard:
    """This process's block of rows and the collectives of a sharded run (no-ops for one process)."""

    def __init__(self, n: int, chunk_rows: int, group=None, device=torch.device("cpu")):
        self.group = group
        if group is None:
            self.rank, self.world = 0, 1
        else:
            import torch.distributed as dist

            self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
            self.comm_device = _comm_device(group, device)
        k = -(-n // chunk_rows)
        self.lo = min(n, (self.rank * k // self.world) * chunk_rows)
        self.hi = min(n, ((self.rank + 1) * k // self.world) * chunk_rows)
        self.n = n

    @property
    def sharded(self) -> bool:
        return self.group is not None

    def all_sum_(self, *tensors: torch.Tensor) -> None:
        """Sum each tensor over the ranks, in place."""
        if not self.sharded:
            return
        import torch.distributed as dist

        for t in tensors:
            buf = t.to(self.comm_device)
            dist.all_reduce(buf, group=self.group)
            if buf is not t:
                t.copy_(buf)

    def min_int(self, value: int) -> int:
        if not self.sharded:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.int64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.group)
        return int(t)

    def same_everywhere(self, values: dict[str, int]) -> None:
        """Raise on every rank unless every rank passed the same ``values`` (name → int64: a size, an
        option, or a ``digest`` of contents), naming those that differ."""
        if not self.sharded:
            return
        import torch.distributed as dist

        t = torch.tensor(list(values.values()), dtype=torch.int64, device=self.comm_device)
        lo, hi = t.clone(), t.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=self.group)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=self.group)
        differ = [name for name, a, b in zip(values, lo.tolist(), hi.tolist()) if a != b]
        if differ:
            raise ValueError("every rank must call score_dataset with the same inputs and options; "
                             f"these differ between ranks: {', '.join(differ)}")

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """The rows of every rank, in rank order (= row order), on the CPU."""
        if not self.sharded:
            return local.cpu()
        from ..distributed import gather_rows

        return gather_rows(local.to(self.comm_device), self.group).cpu()
