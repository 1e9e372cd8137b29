"""The C++ CPU backend (``backend="cpp"``): the pairwise streamed strategy of SPEC §4 in
``csrc/fbr_cpu.cpp``, run through the custom ops ``torch.ops.fastreweight.*``.

float32 inputs accumulate in float32, float64 in float64; float16/bfloat16 inputs are converted once
to float32 on entry.  The fused ``fbr_scores`` epilogue runs in the same op.
"""
from __future__ import annotations

import torch

from . import load_cpu, problem_args, unsupported_strategy


def unavailable_reason(device) -> str | None:
    device = torch.device(device)
    if device.type != "cpu":
        return f"the C++ CPU backend runs on CPU tensors only, got device {device}"
    return load_cpu()


def unsupported_reason(problem, strategy) -> str | None:
    return unsupported_strategy("C++ CPU", strategy)


def class_similarity(problem, strategy) -> torch.Tensor:
    return torch.ops.fastreweight.class_similarity(*problem_args(problem))


def fbr_scores(problem, strategy, shift, alpha) -> torch.Tensor:
    return torch.ops.fastreweight.fbr_scores(*problem_args(problem), problem.y, shift, float(alpha))
