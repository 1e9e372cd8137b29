"""The custom ops ``torch.ops.fastreweight.*``: every schema and every fake (meta) kernel, in one place.

Importing this module defines the ops (``torch.library.define``) and registers their fake kernels
(``torch.library.register_fake``, so ``torch.compile`` and ``torch.library.opcheck`` trace through
them); it needs no compiled code.  The compiled libraries (``csrc/``) only add the CPU and CUDA kernels
(``TORCH_LIBRARY_IMPL``), so ``csrc_backend.load_cpu`` / ``load_cuda`` import this module before they
load a library.  Ops (B batch rows, C classes; float64 accumulation for float64 features, float32
otherwise):

* ``class_similarity(xs, zs, mus, es, fs, clean_y, class_weight, cosine)`` -> S (B×C): the pairwise
  strategy (CPU, CUDA);
* ``fbr_scores(..., y, shift, alpha)`` -> d (B): with the FBR epilogue (CPU, CUDA);
* ``class_similarity_prototype(xs, mus, es, protos, cosine)`` / ``fbr_scores_prototype(xs, mus, es,
  protos, class_weight, cosine, y, shift, alpha)``: the prototype strategy on precomputed class
  prototypes (CPU);
* ``reweighter_step(weights, idx, scores, lr, normalize_update, eps)``: the Reweighter update, in place
  on ``weights``; returns the batch's new weights (CPU);
* ``fbr_reweight_prototype(..., weights, idx, lr, normalize_update, eps, loss_eps)`` -> (scores, new
  batch weights, loss coefficients ``w / max(Σw, loss_eps)``): the prototype scores and the update in
  one op (CPU);
* ``threshold_weights(scores)``: the published per-batch weight rule (CPU).
"""
from __future__ import annotations

import torch

NAMESPACE = "fastreweight"

SCHEMAS = {
    "class_similarity": (
        "(Tensor[] xs, Tensor[] zs, Tensor[] mus, Tensor[] es, Tensor[] fs, Tensor clean_y, Tensor class_weight, "
        "bool cosine) -> Tensor"),
    "fbr_scores": (
        "(Tensor[] xs, Tensor[] zs, Tensor[] mus, Tensor[] es, Tensor[] fs, Tensor clean_y, Tensor class_weight, "
        "bool cosine, Tensor y, str shift, float alpha) -> Tensor"),
    "class_similarity_prototype": "(Tensor[] xs, Tensor[] mus, Tensor[] es, Tensor[] protos, bool cosine) -> Tensor",
    "fbr_scores_prototype": (
        "(Tensor[] xs, Tensor[] mus, Tensor[] es, Tensor[] protos, Tensor class_weight, bool cosine, Tensor y, "
        "str shift, float alpha) -> Tensor"),
    "reweighter_step": (
        "(Tensor(a!) weights, Tensor idx, Tensor scores, float lr, str normalize_update, float eps) -> Tensor"),
    "fbr_reweight_prototype": (
        "(Tensor[] xs, Tensor[] mus, Tensor[] es, Tensor[] protos, Tensor class_weight, bool cosine, Tensor y, "
        "str shift, float alpha, Tensor(a!) weights, Tensor idx, float lr, str normalize_update, float eps, "
        "float loss_eps) -> (Tensor, Tensor, Tensor)"),
    "threshold_weights": "(Tensor scores) -> Tensor",
}

for _name, _schema in SCHEMAS.items():
    torch.library.define(f"{NAMESPACE}::{_name}", _schema)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_devices(op, xs, zs, mus, es, fs, clean_y, class_weight, y=None):
    """The kernels' device check (``csrc/checks.h``), also under FakeTensorMode / on meta tensors."""
    if not xs:
        raise RuntimeError(f"fastreweight::{op}: xs must hold at least one layer, got an empty list")
    dev = xs[0].device
    named = [(f"{n}[{i}]", t) for n, lst in (("xs", xs), ("zs", zs), ("mus", mus), ("es", es), ("fs", fs))
             for i, t in enumerate(lst)]
    named += [("clean_y", clean_y), ("class_weight", class_weight)] + ([("y", y)] if y is not None else [])
    for name, t in named:
        if t.device != dev:
            raise RuntimeError(
                f"fastreweight::{op}: {name} is on {t.device} but xs[0] is on {dev}; all inputs must be on one device")


@torch.library.register_fake("fastreweight::class_similarity")
def _class_similarity_fake(xs, zs, mus, es, fs, clean_y, class_weight, cosine):
    _check_devices("class_similarity", xs, zs, mus, es, fs, clean_y, class_weight)
    x0 = xs[0]
    return x0.new_empty((x0.shape[0], class_weight.shape[0]), dtype=_acc_dtype(x0.dtype))


@torch.library.register_fake("fastreweight::fbr_scores")
def _fbr_scores_fake(xs, zs, mus, es, fs, clean_y, class_weight, cosine, y, shift, alpha):
    _check_devices("fbr_scores", xs, zs, mus, es, fs, clean_y, class_weight, y)
    x0 = xs[0]
    return x0.new_empty((x0.shape[0],), dtype=_acc_dtype(x0.dtype))


@torch.library.register_fake("fastreweight::class_similarity_prototype")
def _class_similarity_prototype_fake(xs, mus, es, protos, cosine):
    _check_devices("class_similarity_prototype", xs, protos, mus, es, [], protos[0], protos[0])
    x0 = xs[0]
    return x0.new_empty((x0.shape[0], protos[0].shape[0]), dtype=_acc_dtype(x0.dtype))


@torch.library.register_fake("fastreweight::fbr_scores_prototype")
def _fbr_scores_prototype_fake(xs, mus, es, protos, class_weight, cosine, y, shift, alpha):
    _check_devices("fbr_scores_prototype", xs, protos, mus, es, [], protos[0], class_weight, y)
    x0 = xs[0]
    return x0.new_empty((x0.shape[0],), dtype=_acc_dtype(x0.dtype))


@torch.library.register_fake("fastreweight::reweighter_step")
def _reweighter_step_fake(weights, idx, scores, lr, normalize_update, eps):
    return weights.new_empty((idx.shape[0],))


@torch.library.register_fake("fastreweight::fbr_reweight_prototype")
def _fbr_reweight_prototype_fake(xs, mus, es, protos, class_weight, cosine, y, shift, alpha, weights, idx, lr,
                                 normalize_update, eps, loss_eps):
    _check_devices("fbr_reweight_prototype", xs, protos, mus, es, [], protos[0], class_weight, y)
    x0 = xs[0]
    return (x0.new_empty((x0.shape[0],), dtype=_acc_dtype(x0.dtype)), weights.new_empty((idx.shape[0],)),
            weights.new_empty((idx.shape[0],)))


@torch.library.register_fake("fastreweight::threshold_weights")
def _threshold_weights_fake(scores):
    return scores.new_empty(scores.shape)
