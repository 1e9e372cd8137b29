"""Registry of execution backends.

A backend is a module exposing

* ``unavailable_reason(device) -> str | None`` — why it cannot run on ``device`` (None: it can);
* ``unsupported_reason(problem, strategy) -> str | None`` — why it cannot run this problem;
* ``class_similarity(problem, strategy) -> Tensor[B, C]`` in ``problem.acc_dtype``;
* optionally ``fbr_scores(problem, strategy, shift, alpha) -> Tensor[B]`` (a fused epilogue);
  backends without it get the reference epilogue applied to their ``class_similarity``.

Backends are imported lazily, so a missing compiler, extension or Triton never breaks
``import fastreweight``; the import error becomes the reason the backend is unavailable.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import torch

_MODULES = {
    "reference": "fastreweight._reference_backend",
    "triton": "fastreweight.kernels.backend",
    "cpp": "fastreweight.csrc_backend.cpp",
    "cuda": "fastreweight.csrc_backend.cuda",
}

# Order in which backend="auto" tries the fast backends, per device type.
AUTO_ORDER = {"cuda": ("triton", "cuda"), "cpu": ("cpp",)}


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run here; the message says why."""


_cache: dict[str, ModuleType | str] = {}


def load(name: str) -> ModuleType | str:
    """The backend module, or a string saying why it could not be imported."""
    if name not in _cache:
        try:
            _cache[name] = importlib.import_module(_MODULES[name])
        except Exception as exc:  # ImportError, a failed extension build, ...
            _cache[name] = f"backend {name!r} could not be loaded: {type(exc).__name__}: {exc}"
    return _cache[name]


def unavailable_reason(name: str, device: torch.device) -> str | None:
    mod = load(name)
    if isinstance(mod, str):
        return mod
    return mod.unavailable_reason(device)
