"""The CUDA C++ backend (``backend="cuda"``): the pairwise streamed strategy of SPEC §4 in
``csrc/cuda/`` (float16/bfloat16 on tensor cores through WMMA with float32 accumulation,
float32/float64 through a tiled CUDA-core path), run through the custom ops
``torch.ops.fastreweight.*``.
"""
from __future__ import annotations

import torch

from . import load_cuda, problem_args, unsupported_strategy


def unavailable_reason(device) -> str | None:
    device = torch.device(device)
    if device.type != "cuda":
        return f"the CUDA backend runs on CUDA tensors only, got device {device}"
    return load_cuda()


def unsupported_reason(problem, strategy) -> str | None:
    return unsupported_strategy("CUDA", strategy)


def class_similarity(problem, strategy) -> torch.Tensor:
    return torch.ops.fastreweight.class_similarity(*problem_args(problem))


def fbr_scores(problem, strategy, shift, alpha) -> torch.Tensor:
    return torch.ops.fastreweight.fbr_scores(*problem_args(problem), problem.y, shift, float(alpha))
