"""Penultimate features (the head's input) of a model, for the feature-based methods.

A model that defines ``features_and_logits(x)`` (every model in ``fastreweight.models`` does) gives
the batch features and the logits from its one forward; any other model gets one forward hook on its
head (``capture.FeatureTap``), registered for the run and removed by ``close()``.  Under DDP the
training forward must run through the wrapper (its gradient hooks), so the hook is used there.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .. import capture

__all__ = ["FeatureSource"]


def find_head(model: nn.Module) -> nn.Linear:
    """``capture.find_head``, with an error that says which models the feature-based methods can use
    (no method takes a ``head=`` argument)."""
    try:
        return capture.find_head(model)
    except ValueError:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer: the feature-based methods (FBR, FBRPaper, "
                         "NeighbourRelabel, MetaDirection, the auto warm-up) read the penultimate features as the "
                         "input of the model's last nn.Linear (its classification head), or from a method "
                         "features_and_logits(x) returning (features, logits); give the model one of the two") from None


class FeatureSource:
    """Where a method reads features: ``train_forward`` (features and logits of the training forward)
    and ``eval_features`` (eval mode, no_grad, the model's mode restored)."""

    def __init__(self, model: nn.Module, *, from_training_forward: bool, distributed: bool) -> None:
        self.model = model
        self.split_eval = capture.split_forward(model)
        # the head is only read where the model has no features_and_logits of its own
        self.head = find_head(model) if self.split_eval is None or from_training_forward and distributed else None
        self.split = self.split_eval if (from_training_forward and not distributed) else None
        need_tap = from_training_forward and self.split is None
        self.tap = capture.FeatureTap(self.head) if need_tap else None

    def close(self) -> None:
        if self.tap is not None:  # the hook must not outlive the run
            self.tap.close()
            self.tap = None

    @torch.no_grad()
    def eval_features(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Features of ``x`` in eval mode, in chunks of ``batch_size`` rows; low-precision features as
        float32."""
        model = self.model
        was = model.training
        model.eval()
        chunks = range(0, x.shape[0], batch_size)
        if self.split_eval is not None:
            feats = [self.split_eval(x[i:i + batch_size])[0] for i in chunks]
        elif self.tap is not None:
            feats = []
            for i in chunks:
                model(x[i:i + batch_size])
                feats.append(self.tap.take())
        else:
            feats = [capture.penultimate(model, x[i:i + batch_size], head=self.head)[0] for i in chunks]
        model.train(was)
        out = feats[0] if len(feats) == 1 else torch.cat(feats)  # one chunk (the usual clean subset): no copy
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out

    def train_forward(self, net: nn.Module, x: torch.Tensor, rows: int, precision):
        """``(features of the first rows rows, detached; logits of all rows)`` of one training forward."""
        with precision.autocast():
            if self.split is not None:
                feats, logits = self.split(x)
            else:
                logits = net(x)
                feats = self.tap.take()
        if feats.shape[0] != rows:
            feats = feats[:rows]
        feats = feats.detach()
        return (feats.float() if precision.dtype is not None else feats), logits
