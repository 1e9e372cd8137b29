"""The option groups of ``score_dataset``: what is scored (``Similarity``) and how it runs (``Execution``).

    from fastreweight.label_issues import Execution, Similarity, score_dataset

    res = score_dataset(x, y, cx, cy, num_classes=10,
                        similarity=Similarity(shift="second", alpha=0.2),
                        execution=Execution(device="cuda", chunk_rows=16384))

The fields of both groups are also accepted as plain keywords of ``score_dataset`` (``shift=...``,
``device=...``, as before the groups existed); giving a field both ways is a ``TypeError``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from .. import validate as V
from . import validate as LV

__all__ = ["Similarity", "Execution", "resolve_options"]


@dataclass(frozen=True)
class Similarity:
    """The score of SPEC §3.1–3.4 (those of ``fbr_scores``): the row shift ``b_i`` (``"max"``,
    ``"second"``, ``"mean"``, ``"none"``), the competitor weight ``alpha``, the centring of both sides
    (``"clean"``: the class-balanced clean mean; ``"none"``) and ``normalize`` (``None`` or
    ``"cosine"``)."""

    shift: str = "max"
    alpha: float = 0.0
    center: str = "clean"
    normalize: str | None = None

    def __post_init__(self):
        V.check_option("shift", self.shift, V.SHIFT_OPTIONS)
        V.check_option("center", self.center, V.CENTER_OPTIONS)
        V.check_option("normalize", self.normalize, V.NORMALIZE_OPTIONS)
        object.__setattr__(self, "alpha", V.check_alpha(self.alpha))
        if self.normalize == "none":
            object.__setattr__(self, "normalize", None)


@dataclass(frozen=True)
class Execution:
    """Where and how the rows are streamed.

    ``device``: where each chunk is scored; ``backend`` / ``strategy``: those of ``class_similarity``
    (see docs/backends.md); ``chunk_rows``: rows read and scored at a time (bounds memory);
    ``progress``: a tqdm bar per pass (rank 0 only); ``prefetch``: chunks a background thread reads
    ahead of the one being scored (``None``: 2 on CUDA, where the host read and the transfer then
    overlap the scoring, 0 on the CPU; see ``prefetch.py``).

    ``process_group``: ``None`` scores every row in this process.  A ``torch.distributed`` group (or
    ``"world"`` for the default group) shards the rows across its ranks: every rank must be called
    with the same arguments (the same features, typically one memory-mapped file), scores a
    contiguous, chunk-aligned block of rows and receives the full result (see ``stream.py``)."""

    device: str | torch.device = "cpu"
    backend: str = "auto"
    strategy: str = "auto"
    chunk_rows: int = 8192
    progress: bool = False
    process_group: object = None
    prefetch: int | None = None

    def __post_init__(self):
        # parsed, not checked for existence: an Execution may be built on a machine without the device
        object.__setattr__(self, "device", LV.parse_device(self.device))
        V.check_option("backend", self.backend, V.BACKEND_OPTIONS)
        V.check_option("strategy", self.strategy, V.STRATEGY_OPTIONS)
        object.__setattr__(self, "chunk_rows", LV.check_positive_int("chunk_rows", self.chunk_rows))
        if self.prefetch is None:
            object.__setattr__(self, "prefetch", 2 if self.device.type == "cuda" else 0)
        elif isinstance(self.prefetch, bool) or not isinstance(self.prefetch, int):
            raise TypeError(f"prefetch must be an int >= 0 (chunks read ahead) or None, got {self.prefetch!r}")
        elif self.prefetch < 0:
            raise ValueError(f"prefetch must be an int >= 0 (chunks read ahead) or None, got {self.prefetch!r}")
        if not isinstance(self.progress, bool):
            raise TypeError(f"progress must be a bool, got {type(self.progress).__name__}")
        if isinstance(self.process_group, str) and self.process_group != "world":
            raise ValueError(f"process_group must be None, 'world' or a torch.distributed group, got {self.process_group!r}")

    def group(self):
        """The ``torch.distributed`` group to shard over, or ``None`` (one process)."""
        if self.process_group is None:
            return None
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("process_group is set but torch.distributed is not initialised "
                             "(call torch.distributed.init_process_group first, e.g. under torchrun)")
        return dist.group.WORLD if self.process_group == "world" else self.process_group


_GROUPS = {"similarity": Similarity, "execution": Execution}


def resolve_options(similarity: Similarity | None, execution: Execution | None, keywords: dict):
    """The two groups from the objects given and the loose keywords (the fields of either group)."""
    given = {"similarity": similarity, "execution": execution}
    out = {}
    for arg, cls in _GROUPS.items():
        obj = given[arg]
        if obj is not None and not isinstance(obj, cls):
            raise TypeError(f"{arg} must be a {cls.__name__}, got {type(obj).__name__}")
        loose = {f.name: keywords.pop(f.name) for f in fields(cls) if f.name in keywords}
        if obj is not None and loose:
            raise TypeError(f"give {', '.join(sorted(loose))} either in {arg}={cls.__name__}(...) or as keywords, not both")
        out[arg] = obj if obj is not None else cls(**loose)
    if keywords:
        raise TypeError(f"score_dataset() got unexpected keyword argument(s) {', '.join(sorted(keywords))}")
    return out["similarity"], out["execution"]
