"""Mixed precision as a small object the loop and the methods share (Lightning Fabric style)."""
from __future__ import annotations

from contextlib import nullcontext

import torch

__all__ = ["Precision"]

_AMP_DTYPES = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """``amp=None`` (the parameters' dtype), ``"bf16"`` or ``"fp16"`` autocast of the forwards.

    With ``"fp16"`` on CUDA the loss is scaled (``torch.amp.GradScaler``).  Losses are computed in
    float32 from low-precision logits."""

    def __init__(self, amp: str | None = None) -> None:
        if amp not in _AMP_DTYPES:
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
        self.amp = amp
        self.dtype = _AMP_DTYPES[amp]
        self.device_type = "cpu"
        self.scaler = None
        self._off = nullcontext()  # reusable: one object for every step without mixed precision

    def setup(self, device: torch.device) -> None:
        self.device_type = device.type
        if self.amp == "fp16" and device.type == "cuda":
            self.scaler = torch.amp.GradScaler(device.type)

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else self._off

    def loss_input(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits a loss reads: float32 copies under autocast."""
        return logits.float() if self.dtype is not None else logits

    def backward_step(self, loss: torch.Tensor, optimizers) -> None:
        """``zero_grad`` → ``backward`` → ``step`` of every optimizer (scaled under fp16 on CUDA)."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            for opt in optimizers:
                opt.step()
            return
        self.scaler.scale(loss).backward()
        for opt in optimizers:
            self.scaler.step(opt)
        self.scaler.update()

    def state_dict(self) -> dict:
        return {"amp": self.amp, "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("amp") != self.amp:
            raise ValueError(f"checkpoint was written with amp={state.get('amp')!r}, this run uses amp={self.amp!r}")
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
