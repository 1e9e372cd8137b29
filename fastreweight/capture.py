"""Per-sample features and gradient factors from any model, by hooks — never per-sample gradients.

For an ``nn.Linear`` layer ``out = A Wᵀ + b`` applied to a batch (one row per sample), the gradient
of sample i's loss ``l_i`` with respect to ``W`` is the outer product ``D_i ⊗ A_i``, where ``A_i`` is
the layer's input row and ``D_i = ∂l_i/∂out_i`` (and ``∂l_i/∂b = D_i``).  So the per-sample gradient
inner product of two samples factorises, ``<∇W l_i, ∇W l_j> = <A_i, A_j>·<D_i, D_j>`` (SPEC §3.2),
and the pair (A, D) is all the kernels need.  ``D`` is read as the gradient of ``Σ_i l_i`` with
respect to the layer's output, which equals the per-sample ``∂l_i/∂out_i`` whenever rows do not
interact (no batch-norm in training mode, no attention across the batch).

* ``penultimate(model, head, inputs)`` — the input of the final ``nn.Linear`` (the features FBR
  uses, SPEC §7) and the logits, from one forward pass;
* ``FeatureTap(head)`` — the same features from a hook registered once, for loops that need them at
  every step (``penultimate`` registers and removes a hook per call);
* ``split_forward(model)`` — the model's own ``features_and_logits`` where it has one (every model of
  ``fastreweight.models``): features and logits from one forward without any hook;
* ``head_residual(logits, y)`` — ``softmax(logits) − onehot(y)``, the cross-entropy output gradient
  of the head, i.e. the second factor ``E`` of the last-layer gradient kernel;
* ``linear_factors(model, layers, inputs, targets)`` — the (A, D) pairs of chosen ``nn.Linear``
  layers, through ``torch.autograd.grad`` with respect to the layers' outputs, so parameter
  ``.grad`` fields are left untouched.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import validate as V

__all__ = ["penultimate", "split_forward", "FeatureTap", "head_residual", "linear_factors", "find_head"]


def find_head(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` registered in ``model`` (its classification head by convention)."""
    head = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            head = m
    if head is None:
        raise ValueError("model has no nn.Linear layer; pass head= explicitly")
    return head


def _check_linear(name: str, m) -> nn.Linear:
    if not isinstance(m, nn.Linear):
        raise TypeError(f"{name} must be an nn.Linear module, got {type(m).__name__}")
    return m


def _two_d_input(name: str, t: torch.Tensor) -> None:
    if t.dim() != 2:
        raise ValueError(
            f"{name} received an input of shape {tuple(t.shape)}; per-sample factors need a 2-D input "
            "[batch, features] (a sequence dimension makes the per-sample gradient a sum of outer products)"
        )


def penultimate(model: nn.Module, inputs, head: nn.Linear | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits): the input of ``head`` (default: the last ``nn.Linear``) and the model output."""
    head = _check_linear("head", head) if head is not None else find_head(model)
    store = {}

    def hook(mod, args):
        store["x"] = args[0]

    h = head.register_forward_pre_hook(hook)
    try:
        logits = model(inputs)
    finally:
        h.remove()
    if "x" not in store:
        raise ValueError("head was not called during model(inputs); is it part of the model's forward?")
    _two_d_input("head", store["x"])
    return store["x"], logits


def split_forward(model: nn.Module):
    """``model.features_and_logits`` where the model defines it, else ``None``.

    The protocol (every model of ``fastreweight.models`` follows it): ``features_and_logits(x)``
    returns ``(features, logits)`` — the input of the model's head and the model's output — from the
    one forward that ``model(x)`` runs.  A training loop that needs both calls it instead of
    ``model(x)`` with a hook on the head: a hook sends every call of the head through the module's
    slow path (several microseconds on the CPU, a sizeable part of a small model's step).  A compiled
    model (``torch.compile``) gives ``None``: its original module's method would run uncompiled."""
    if "_orig_mod" in getattr(model, "_modules", {}):  # torch.compile's wrapper (not imported: dynamo is heavy)
        return None
    fn = getattr(model, "features_and_logits", None)
    return fn if callable(fn) else None


class FeatureTap:
    """A persistent forward pre-hook on ``head`` that keeps the input of its latest call.

    ``take()`` returns that input (the penultimate features of the latest forward through ``head``)
    and forgets it, so a stale batch is never returned twice.  Remove the hook with ``close()`` or use
    the tap as a context manager::

        with FeatureTap(model.head) as tap:
            for xb, yb in loader:
                logits = model(xb)
                feats = tap.take()
    """

    def __init__(self, head: nn.Linear) -> None:
        self.head = _check_linear("head", head)
        self._x = None
        self._handle = head.register_forward_pre_hook(self._hook)

    def _hook(self, mod, args) -> None:
        self._x = args[0]

    def take(self) -> torch.Tensor:
        x, self._x = self._x, None
        if x is None:
            raise ValueError("head was not called since the last take(); is it part of the model's forward?")
        _two_d_input("head", x)
        return x

    def close(self) -> None:
        self._handle.remove()
        self._x = None

    def __enter__(self) -> "FeatureTap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def head_residual(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``softmax(logits) − onehot(y)``: ∂CE(logits_i, y_i)/∂logits_i, per row (float32 or wider)."""
    V.check_float_matrix("logits", logits)
    V.check_label_vector("y", y, logits.shape[0])
    vc = V.ValueChecks()
    vc.labels_in_range("y", y, logits.shape[1])
    vc.run()
    p = torch.softmax(logits.detach().float() if logits.dtype in (torch.float16, torch.bfloat16) else logits.detach(), dim=1)
    return p - F.one_hot(y.to(torch.int64), logits.shape[1]).to(p.dtype)


def linear_factors(
    model: nn.Module,
    layers: Sequence[nn.Linear],
    inputs,
    targets: torch.Tensor,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    include_bias: bool = True,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Per-sample gradient factors of chosen ``nn.Linear`` layers.

    Returns ``(A, D, logits)``: lists with one ``[B, d_l]`` activation and one ``[B, k_l]`` output
    gradient per layer, where ``<A_l,i, A_l,j>·<D_l,i, D_l,j>`` summed over layers is the inner product of
    the per-sample gradients of samples i and j for those layers' parameters.  ``loss_fn(logits,
    targets)`` must return per-sample losses (default: cross-entropy with ``reduction="none"``).
    With ``include_bias`` (and a layer with a bias) a column of ones is appended to A, which adds
    the bias gradient ``D_i`` to the product.  Factors are detached; parameter ``.grad`` is not touched.
    """
    if isinstance(layers, nn.Module):
        layers = [layers]
    if len(layers) == 0:
        raise ValueError("layers must name at least one nn.Linear layer")
    for i, m in enumerate(layers):
        _check_linear(f"layers[{i}]", m)
    loss_fn = loss_fn or (lambda out, t: F.cross_entropy(out, t, reduction="none"))
    acts: dict[int, torch.Tensor] = {}
    outs: dict[int, torch.Tensor] = {}
    handles = []
    for i, m in enumerate(layers):
        def hook(mod, args, out, i=i):
            if i in outs:
                raise ValueError(f"layers[{i}] was called more than once in one forward; shared layers are not supported")
            acts[i] = args[0]
            outs[i] = out
        handles.append(m.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            logits = model(inputs)
            missing = [i for i in range(len(layers)) if i not in outs]
            if missing:
                raise ValueError(f"layers{missing} were not called during model(inputs)")
            for i in range(len(layers)):
                _two_d_input(f"layers[{i}]", acts[i])
            losses = loss_fn(logits, targets)
            if losses.dim() != 1 or losses.shape[0] != logits.shape[0]:
                raise ValueError(f"loss_fn must return one loss per sample, shape [{logits.shape[0]}], got {tuple(losses.shape)}")
            grads = torch.autograd.grad(losses.sum(), [outs[i] for i in range(len(layers))], allow_unused=False)
    finally:
        for h in handles:
            h.remove()
    A, D = [], []
    for i, m in enumerate(layers):
        a = acts[i].detach()
        if include_bias and m.bias is not None:
            a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)], dim=1)
        A.append(a)
        D.append(grads[i].detach())
    return A, D, logits.detach()
