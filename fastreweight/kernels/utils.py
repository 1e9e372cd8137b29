"""Helpers shared by the launchers of this package (``backend`` and the kernel modules).

A leaf module: it imports nothing from ``fastreweight`` (nor ``triton``), so every module of the
package can import it without an import cycle.
"""
from __future__ import annotations

import contextlib

import torch


def device_context(device: torch.device):
    """The CUDA device guard for launches on ``device`` (a no-op context on the CPU interpreter)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def pow2(n: int, lo: int, hi: int) -> int:
    """The smallest power of two >= ``n`` (at least 1; ``triton.next_power_of_2``), clamped to [lo, hi]."""
    return max(lo, min(hi, 1 << (max(int(n), 1) - 1).bit_length()))
