"""Rows of ``score_dataset`` sharded across ``torch.distributed`` ranks (``Execution(process_group=...)``).

* **Shards**: the rows are cut into the chunks of one process (chunk ``k`` = rows
  ``[k·chunk_rows, (k+1)·chunk_rows)``); rank ``r`` of ``R`` scores chunks ``[r·K//R, (r+1)·K//R)``
  of the ``K``, a contiguous block of rows.  Every chunk is the very chunk one process would score,
  so its per-row arithmetic (GEMM shape included) is the same.
* **Statistics**: the whitening's streamed moments and ``refine``'s per-class sums are summed per rank
  and all-reduced; the moments' shift is global chunk 0's mean on every rank, as in one process.
* **Results**: the per-row scores and suggestions are all-gathered, so every rank returns the
  full ``ScoreResult``.
* **Errors**: a bad streamed row found on any rank is agreed on (the smallest row index, one
  all-reduce per checked pass), so every rank raises the same ``ValueError`` and none is left waiting.

Collectives run on the CPU for gloo and on the scoring device for NCCL.
"""
from __future__ import annotations

import torch

__all__ = ["Shard"]


class Shard:
    """This process's block of rows and the collectives of a sharded run (no-ops for one process)."""

    def __init__(self, n: int, chunk_rows: int, group=None, device=torch.device("cpu")):
        self.group = group
        if group is None:
            self.rank, self.world = 0, 1
        else:
            import torch.distributed as dist

            self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
            nccl = dist.get_backend(group) == "nccl"
            self.comm_device = device if nccl else torch.device("cpu")
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

    def same_everywhere(self, what: str, values: list[int]) -> None:
        """Raise on every rank unless every rank passed the same ``values``."""
        if not self.sharded:
            return
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.int64, device=self.comm_device)
        lo, hi = t.clone(), t.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=self.group)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=self.group)
        if not torch.equal(lo, hi):
            raise ValueError(f"every rank must call score_dataset with the same inputs and options; {what} differ "
                             f"between ranks (min {lo.tolist()}, max {hi.tolist()})")

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """The rows of every rank, in rank order (= row order), on the CPU."""
        if not self.sharded:
            return local.cpu()
        from ..distributed import gather_rows

        return gather_rows(local.to(self.comm_device), self.group).cpu()
