"""What a run records: per-epoch accuracy and time, per-step mean weights of clean and mislabelled
samples (only when the true labels are known), and the final per-sample weights."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from .batches import unpack_batch

__all__ = ["TrainResult", "WeightLog", "accuracy"]


@dataclass
class TrainResult:
    """Per-step lists cover the training steps (not the clean passes); a step whose batch holds no
    clean (or no mislabelled) sample records NaN for that group.  Without true labels the weight lists
    are empty; without an evaluation loader ``test_acc`` holds NaN."""

    method: str
    test_acc: list[float]
    best_acc: float
    last_acc: float
    clean_weight: list[float]
    noisy_weight: list[float]
    epoch_seconds: list[float]
    config: dict
    reweight_start_epoch: int | None = None
    probe: list[float] = field(default_factory=list)
    final_weights: torch.Tensor | None = field(default=None, repr=False)

    @property
    def seconds_per_epoch(self) -> float:
        return sum(self.epoch_seconds) / max(len(self.epoch_seconds), 1)

    def _tail_mean(self, xs: list[float], steps: int | None) -> float:
        tail = xs[-steps:] if steps else xs
        vals = [v for v in tail if v == v]
        return sum(vals) / len(vals) if vals else float("nan")

    def mean_weights(self, last_steps: int | None = None) -> tuple[float, float]:
        """(mean weight of clean samples, of mislabelled samples) over the last ``last_steps`` steps
        (default: the last epoch)."""
        if last_steps is None:
            last_steps = max(1, len(self.clean_weight) // max(len(self.test_acc), 1))
        return self._tail_mean(self.clean_weight, last_steps), self._tail_mean(self.noisy_weight, last_steps)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("final_weights")
        mc, mn = self.mean_weights()
        d["seconds_per_epoch"] = self.seconds_per_epoch
        d["last_epoch_clean_weight"], d["last_epoch_noisy_weight"] = mc, mn
        return _json_safe(d)


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


class WeightLog:
    """Each training step's mean weight of its clean rows and of its mislabelled rows, computed once
    per epoch rather than per step: a step only hands over references to its ``idx``, labels and
    weights (no tensor op; ERM's weights, all 1, are not even kept).  At the end of the epoch one
    concatenation and one ``index_add_`` give every step's [Σ w·clean, #clean, Σ w·noisy, #noisy]
    (float64), which ranks all-reduce when distributed; one read-back.  Every method returns a fresh
    weight tensor per step (never a view of state it updates later)."""

    def __init__(self, true_labels: torch.Tensor | None) -> None:
        self.true_labels = true_labels
        self.idx: list[torch.Tensor] = []
        self.y: list[torch.Tensor] = []
        self.weights: list[torch.Tensor] = []

    def add(self, idx: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> None:
        if self.true_labels is None:
            return
        self.idx.append(idx)
        self.y.append(y if y.shape[0] == idx.shape[0] else y[:idx.shape[0]])
        if w is not None:
            self.weights.append(w.detach() if w.requires_grad else w)

    def step_sums(self) -> torch.Tensor | None:
        """(steps × 4) float64 sums of the epoch's steps; ``None`` if no step was logged."""
        if not self.idx:
            return None
        sizes = torch.tensor([i.shape[0] for i in self.idx], device=self.true_labels.device)
        total = int(sizes.sum())
        step = torch.repeat_interleave(torch.arange(len(self.idx), device=sizes.device), sizes, output_size=total)
        idx, y = torch.cat(self.idx), torch.cat(self.y)
        m = (y == self.true_labels[idx]).to(torch.float64)
        w = (torch.cat(self.weights).to(torch.float64) if self.weights
             else torch.ones(total, dtype=torch.float64, device=m.device))
        cols = torch.stack([w * m, m, w * (1 - m), 1 - m], dim=1)
        self.idx.clear()
        self.y.clear()
        self.weights.clear()
        return torch.zeros(len(sizes), 4, dtype=torch.float64, device=m.device).index_add_(0, step, cols)


@torch.no_grad()
def accuracy(model: nn.Module, loader, device: torch.device, dtype: torch.dtype) -> float:
    """Accuracy in eval mode over ``loader``'s ``(x, y[, idx])`` batches (the model's mode is restored)."""
    was = model.training
    model.eval()
    correct = total = 0
    for batch in loader:
        x, y, _ = unpack_batch(batch, need_index=False)
        x, y = to_device(x, device, dtype), y.to(device)
        correct += (model(x).argmax(1) == y).sum().item()
        total += y.shape[0]
    model.train(was)
    return correct / max(total, 1)


def to_device(x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``x`` on ``device``, floating inputs in the parameters' ``dtype`` (no copy when already so)."""
    if x.device != device:
        x = x.to(device, non_blocking=True)
    if x.is_floating_point() and x.dtype != dtype:
        x = x.to(dtype)
    return x
