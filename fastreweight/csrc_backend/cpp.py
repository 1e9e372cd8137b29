"""The C++ CPU backend (``backend="cpp"``), through the custom ops ``torch.ops.fastreweight.*``
(schemas: ``ops.py``; CPU kernels: ``csrc/cpu/``):

* strategy ``"pairwise"``: the streamed pairwise strategy of SPEC §4 (``class_similarity`` /
  ``fbr_scores``), float32 inputs accumulated in float32, float64 in float64, float16/bfloat16
  converted once to float32 on entry;
* strategy ``"prototype"``: the class prototypes of the clean side (``reference._clean_prototypes``,
  memoised with the clean side) and, per call, one op (``class_similarity_prototype`` /
  ``fbr_scores_prototype``) that centres the batch, multiplies by the prototypes through ATen's GEMM
  and runs the epilogue — one dispatch instead of the reference's dozen small tensor ops.

The ``fbr_scores`` epilogue (SPEC §3.4) runs in the same op for both strategies.  The ``Reweighter``
update has its own op (``reweighter_step``, used by ``Reweighter(backend="cpp")`` and by
``backend="auto"`` on the CPU), and so has the published per-batch rule (``threshold_weights``, used
by ``weights.threshold_weights`` for float32/float64 CPU scores when the extension is available).
"""
from __future__ import annotations

import torch

from .. import reference
from . import load_cpu, problem_args

# the prototype strategy is one op per call here (see plan.make_plan's launch-cost rule)
FUSED_PROTOTYPE = True


def unavailable_reason(device) -> str | None:
    device = torch.device(device)
    if device.type != "cpu":
        return f"the C++ CPU backend runs on CPU tensors only, got device {device}"
    return load_cpu()


def unsupported_reason(problem, strategy) -> str | None:
    if strategy not in ("pairwise", "prototype"):
        return f"the C++ CPU backend has no strategy {strategy!r}"
    return None


def _prototype_args(problem):
    layers = problem.layers
    xs = [l.x for l in layers]
    mus = [l.mu for l in layers] if layers[0].mu is not None else []
    es = [l.e for l in layers] if layers[0].e is not None else []
    return xs, mus, es, reference._clean_prototypes(problem)


def class_similarity(problem, strategy) -> torch.Tensor:
    if strategy == "prototype":
        return torch.ops.fastreweight.class_similarity_prototype(*_prototype_args(problem), bool(problem.cosine))
    return torch.ops.fastreweight.class_similarity(*problem_args(problem))


def fbr_scores(problem, strategy, shift, alpha) -> torch.Tensor:
    if strategy == "prototype":
        return torch.ops.fastreweight.fbr_scores_prototype(
            *_prototype_args(problem), problem.class_weight, bool(problem.cosine), problem.y, shift, float(alpha))
    return torch.ops.fastreweight.fbr_scores(*problem_args(problem), problem.y, shift, float(alpha))


def _clean_side(problem):
    """(mus, class_weight, cosine): the clean-side op arguments every prepared runner binds."""
    layers = problem.layers
    mus = [l.mu for l in layers] if layers[0].mu is not None else []
    return mus, problem.class_weight, bool(problem.cosine)


def prepare_fbr_scores(problem, strategy):
    """A function ``(xs, es, y, shift, alpha) -> d`` for batches scored against ``problem``'s clean side
    (used by ``CleanScorer``): the clean-side arguments of the op are looked up once, here."""
    mus, cw, cosine = _clean_side(problem)
    if strategy == "prototype":
        protos = reference._clean_prototypes(problem)
        op = torch.ops.fastreweight.fbr_scores_prototype.default  # the overload: no per-call schema lookup

        def run(xs, es, y, shift, alpha):
            return op(xs, mus, es or [], protos, cw, cosine, y, shift, alpha)
    else:
        layers = problem.layers
        zs = [l.z for l in layers]
        fs = [l.f for l in layers] if layers[0].f is not None else []
        u = problem.clean_y
        op = torch.ops.fastreweight.fbr_scores.default  # the overload: no per-call schema lookup

        def run(xs, es, y, shift, alpha):
            return op(xs, zs, mus, es or [], fs, u, cw, cosine, y, shift, alpha)
    return run


def prepare_fbr_reweight(problem, strategy):
    """A function ``(xs, es, y, shift, alpha, weights, idx, lr, normalize_update, eps, loss_eps) ->
    (d, w, coef)`` that scores a batch, applies the Reweighter update and forms the loss coefficients
    ``w / max(Σw, loss_eps)`` in one op (prototype strategy; ``None`` for the pairwise one, which
    scores and updates in two)."""
    if strategy != "prototype":
        return None
    mus, cw, cosine = _clean_side(problem)
    protos = reference._clean_prototypes(problem)
    op = torch.ops.fastreweight.fbr_reweight_prototype.default  # the overload: no per-call schema lookup

    def run(xs, es, y, shift, alpha, weights, idx, lr, normalize_update, eps, loss_eps):
        return op(xs, mus, es or [], protos, cw, cosine, y, shift, alpha, weights, idx, lr, normalize_update, eps,
                  loss_eps)
    return run


def reweighter_step(weights, idx, scores, lr, normalize_update, eps) -> torch.Tensor:
    return torch.ops.fastreweight.reweighter_step(weights, idx, scores, float(lr), normalize_update, float(eps))


def threshold_weights(scores) -> torch.Tensor:
    return torch.ops.fastreweight.threshold_weights(scores)
