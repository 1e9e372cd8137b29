"""Random-number state of a run, for bit-identical resumption: the global generators (torch, CUDA,
NumPy, Python) and the ``torch.Generator`` objects the run's loaders and clean set draw from."""
from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["find_generators", "rng_state", "set_rng_state"]


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
