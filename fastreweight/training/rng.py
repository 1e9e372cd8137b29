"""Random-number state of a run, for bit-identical resumption: the global generators (torch, CUDA,
NumPy, Python) and the ``torch.Generator`` objects the run's loaders and clean set draw from.

A checkpoint's ``"rng"`` is one such dict for a single process, and under ``Distributed()`` a list of
them, one per rank in rank order: the ranks share one checkpoint file, but each draws from its own
generators (a ``DistributedSampler`` seeds per rank, augmentations may differ), so each resumes its own."""
from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["find_generators", "rng_state", "run_rng_state", "own_rng_state", "set_rng_state"]


def find_generators(*sources) -> list[torch.Generator]:
    """The distinct ``torch.Generator`` objects of ``sources`` (loaders, samplers, a clean set), in order."""
    found: list[torch.Generator] = []
    for src in sources:
        for obj in (src, getattr(src, "sampler", None), getattr(getattr(src, "batch_sampler", None), "sampler", None)):
            g = getattr(obj, "generator", None)
            if isinstance(g, torch.Generator) and all(g is not h for h in found):
                found.append(g)
    return found


def rng_state(generators: list[torch.Generator]) -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "generators": [g.get_state() for g in generators],
    }


def run_rng_state(generators: list[torch.Generator], parallel) -> dict | list[dict]:
    """The run's random state for a checkpoint: this process's dict, or every rank's (a collective)."""
    mine = rng_state(generators)
    if not parallel.distributed:
        return mine  # a dict, as checkpoints of one process have always held
    return parallel.gather_objects(mine)


def own_rng_state(saved, rank: int, world: int) -> dict:
    """This rank's entry of a checkpoint's ``"rng"``.  A single dict (one process, or a distributed
    checkpoint written before the per-rank states, one file per rank) is every rank's."""
    if isinstance(saved, dict):
        return saved
    if not isinstance(saved, (list, tuple)) or len(saved) != world or not all(isinstance(s, dict) for s in saved):
        raise ValueError(f"checkpoint's rng must be one random state or one per rank ({world}), got "
                         f"{type(saved).__name__}{f' of {len(saved)}' if isinstance(saved, (list, tuple)) else ''}: "
                         "it is corrupt")
    return saved[rank]


def set_rng_state(state: dict, generators: list[torch.Generator]) -> None:
    if len(state["generators"]) != len(generators):
        raise ValueError(f"checkpoint holds the state of {len(state['generators'])} data generators, this run has "
                         f"{len(generators)}: resume with the same loaders and clean set")
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    for g, s in zip(generators, state["generators"]):
        g.set_state(s)
