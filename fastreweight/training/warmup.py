"""When reweighting starts: after a fixed number of epochs, or once the features stop improving.

``Warmup(epochs)``: epochs ``0 .. epochs-1`` train with the method's initial weights, reweighting
starts at epoch ``epochs``.  ``Warmup("auto")``: at the end of every epoch the clean subset is split
into two class-stratified halves and each half is classified by nearest class mean (the centred inner
product, FBR's similarity) of the other half's penultimate features (eval mode).  Reweighting starts
with the epoch after this cross-half prototype accuracy has not improved on its best by more than
``tol`` for ``patience`` epochs — the features stopped getting better — and at the latest after
``max_epochs`` epochs (default ``max(1, total_epochs // 3)``).  No per-dataset threshold.
"""
from __future__ import annotations

import torch

from ..scores import fbr_scores

__all__ = ["Warmup", "prototype_probe"]


def _check_int(name: str, v, lo: int, form: str | None = None) -> int:
    # bool is an int subclass: patience=True would silently mean 1
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"warmup {name} must be {form or f'an int >= {lo}'}, got {v!r}")
    return v


def _check_epochs(epochs):
    if epochs == "auto":
        return epochs
    return _check_int("epochs", epochs, 0, "an int number of epochs >= 0 or 'auto'")


def _check_tol(tol) -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (0 <= tol < float("inf")):
        raise ValueError(f"warmup tol must be a finite number >= 0 (an accuracy gain), got {tol!r}")
    return float(tol)


@torch.no_grad()
def prototype_probe(features: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """Cross-half nearest-class-mean accuracy of the clean ``features`` (labels ``y``)."""
    half = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    for c in range(num_classes):  # class-stratified alternation
        members = (y == c).nonzero().flatten()
        half[members[::2]] = True
    correct, total = 0, 0
    for a, b in ((half, ~half), (~half, half)):
        if a.sum() == 0 or b.sum() == 0 or torch.unique(y[b]).numel() < 2:
            continue
        d = fbr_scores(features[a], y[a], features[b], y[b], num_classes=num_classes, shift="max",
                       on_missing_class="skip")
        correct += (d > 0).sum().item()
        total += int(a.sum())
    return correct / max(total, 1)


class Warmup:
    """``epochs``: an int >= 0, or ``"auto"`` (see the module doc)."""

    def __init__(self, epochs: int | str = "auto", *, tol: float = 0.005, patience: int = 2,
                 max_epochs: int | None = None) -> None:
        self.epochs, self.tol = _check_epochs(epochs), _check_tol(tol)
        self.patience = _check_int("patience", patience, 1)
        self.max_epochs = None if max_epochs is None else _check_int("max_epochs", max_epochs, 1, "an int >= 1 or None")
        self.auto = epochs == "auto"
        self.cap = None
        self.reset()

    def reset(self) -> None:
        """Forget a previous run's probes and start epoch (a method object may be attached again)."""
        self.start: int | None = None if self.auto else int(self.epochs)
        self.best, self.since = -1.0, 0
        self.probes: list[float] = []

    def setup(self, total_epochs: int) -> None:
        """Start a run of ``total_epochs`` epochs from scratch (``load_state_dict`` then resumes one)."""
        self.reset()
        self.cap = max(1, total_epochs // 3) if self.max_epochs is None else int(self.max_epochs)

    def active(self, epoch: int) -> bool:
        return self.start is not None and epoch >= self.start

    @property
    def waiting(self) -> bool:
        """Still probing (``"auto"`` and not started)."""
        return self.auto and self.start is None

    def update(self, epoch: int, value: float) -> None:
        """The probe's value at the end of ``epoch``; may set ``start = epoch + 1``."""
        self.probes.append(value)
        if value > self.best + self.tol:
            self.best, self.since = max(value, self.best), 0
        else:
            self.best = max(self.best, value)
            self.since += 1
        if self.since >= self.patience or epoch + 1 >= self.cap:
            self.start = epoch + 1

    def state_dict(self) -> dict:
        return {"start": self.start, "best": self.best, "since": self.since, "probes": list(self.probes)}

    def load_state_dict(self, state: dict) -> None:
        self.start, self.best, self.since = state["start"], float(state["best"]), int(state["since"])
        self.probes = [float(v) for v in state["probes"]]
