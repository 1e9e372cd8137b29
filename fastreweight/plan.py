"""Planning: pick the execution strategy (SPEC §4) and the backend for one call.

Strategy, by FLOP count (multiply-adds × 2), per layer with feature size d and second factor k:

* pairwise:  2·B·M·d (+ 2·B·M·k for the gradient kernel) to form K, + 2·B·M·C to aggregate;
* prototype: the clean side, 2·M·C·d (feature kernel) or 2·M·k·d (gradient kernel), plus per call
  2·B·C·d or 2·B·C·k·d; C·d or C·k·d prototype values held in memory, which must fit
  ``PROTOTYPE_MEMORY_BYTES``.

The prototypes depend on the clean inputs only and every backend memoises them with the clean side
(``problem.CleanCache``).  Once a call reuses a memoised clean side — a training loop scoring batch
after batch against the same clean features — the planner expects further reuse and counts the
clean-side FLOPs as amortised: only the per-call FLOPs are compared with the pairwise strategy's.

Backend: an explicit name must be available and support the problem, or ``BackendUnavailable`` is
raised with the reason.  ``"auto"`` tries the fast backends for the device (CUDA: Triton, then the
CUDA extension; CPU: the C++ extension) and falls back to the reference; the choice and the reason
are logged on the ``fastreweight`` logger and kept in the returned ``Plan``.  Only the reference is
differentiable: with grad mode on and an input that requires grad, ``"auto"`` runs it and a named
fast backend raises (``needs_autograd``).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import torch

from . import backends
from .problem import Problem

log = logging.getLogger("fastreweight")

PROTOTYPE_MEMORY_BYTES = 1 << 30
# Below this many pairwise FLOPs a fused pairwise backend (one op call for similarity and epilogue)
# beats the prototype strategy's dozen small tensor ops on launch cost alone, so "auto" prefers it.
SMALL_PAIRWISE_FLOPS = 1 << 23


@dataclass(frozen=True)
class Plan:
    strategy: str
    backend: str
    reason: str
    pairwise_flops: int
    prototype_flops: int


def shape_flops(B: int, M: int, C: int, layer_dims, acc_bytes: int = 4, clean_amortised: bool = False
                ) -> tuple[int, int, int]:
    """(pairwise FLOPs, prototype FLOPs, prototype bytes) for layers given as ``(d, k)`` pairs
    (``k = 0``: feature kernel); ``clean_amortised`` leaves out the prototypes' clean-side FLOPs."""
    pair = 2 * B * M * C
    proto = 0
    proto_bytes = 0
    for d, k in layer_dims:
        if k == 0:
            pair += 2 * B * M * d
            proto += (0 if clean_amortised else 2 * M * C * d) + 2 * B * C * d
            proto_bytes += C * d * acc_bytes
        else:
            pair += 2 * B * M * (d + k) + B * M
            proto += (0 if clean_amortised else 2 * M * k * d) + 2 * B * C * k * d
            proto_bytes += C * k * d * acc_bytes
    return pair, proto, proto_bytes


def clean_side_reused(problem: Problem) -> bool:
    """True once a call has reused this problem's memoised clean side (see the module doc)."""
    return problem.clean_memo.get("reuses", 0) > 0


def strategy_flops(problem: Problem) -> tuple[int, int, int]:
    """(pairwise FLOPs, prototype FLOPs, prototype bytes) of one prepared call; the prototype count
    leaves out the clean side once it is being reused (``clean_side_reused``)."""
    dims = [(layer.x.shape[1], 0 if layer.e is None else layer.e.shape[1]) for layer in problem.layers]
    return shape_flops(problem.batch_size, problem.num_clean, problem.num_classes, dims,
                       problem.acc_dtype.itemsize, clean_side_reused(problem))


def choose_strategy(problem: Problem, requested: str) -> tuple[str, str, int, int]:
    pair, proto, proto_bytes = strategy_flops(problem)
    if requested != "auto":
        return requested, f"strategy={requested!r} requested", pair, proto
    if proto_bytes > PROTOTYPE_MEMORY_BYTES:
        return "pairwise", f"prototypes would need {proto_bytes} bytes", pair, proto
    amortised = " (clean side reused: per-call FLOPs)" if clean_side_reused(problem) else ""
    if proto < pair:
        return "prototype", f"prototype {proto:.3g} FLOPs{amortised} < pairwise {pair:.3g}", pair, proto
    return "pairwise", f"pairwise {pair:.3g} FLOPs <= prototype {proto:.3g}{amortised}", pair, proto


_logged: set = set()
_local = threading.local()


def record(p: Plan) -> None:
    """Remember ``p`` as this thread's latest plan (``weights.last_plan()``)."""
    _local.plan = p


def last() -> Plan | None:
    return getattr(_local, "plan", None)


def needs_autograd(problem: Problem) -> str | None:
    """Why only the reference can run ``problem``: with grad mode on, an input that requires grad needs
    a backward, and the fast backends' ops have none (the reference is plain differentiable torch ops).
    ``None`` when nothing requires grad."""
    if not torch.is_grad_enabled():
        return None
    names = ("x", "clean_x", "x2", "clean_x2")
    for layer in problem.layers:
        for name, t in zip(names, (layer.x, layer.z, layer.e, layer.f)):
            if t is not None and t.requires_grad:
                return (f"{name} requires grad and only the reference backend is differentiable (the fast "
                        "backends' ops have no backward); detach the inputs or score under torch.no_grad() "
                        "to use a fast backend")
    return None


def make_plan(problem: Problem, strategy: str, backend: str) -> Plan:
    requested_strategy = strategy
    strategy, why_strategy, pair, proto = choose_strategy(problem, strategy)
    device = problem.device
    grad_reason = needs_autograd(problem)
    if requested_strategy == "auto" and strategy == "prototype" and pair <= SMALL_PAIRWISE_FLOPS and grad_reason is None:
        # a small call costs launches, not FLOPs: a backend whose pairwise path is one fused op but
        # whose prototype path is several beats the prototypes on launch cost alone
        fused = [backend] if backend != "auto" else list(backends.AUTO_ORDER.get(device.type, ()))
        for name in fused:
            if name == "reference" or backends.unavailable_reason(name, device) is not None:
                continue
            mod = backends.load(name)
            if getattr(mod, "FUSED_PROTOTYPE", False) and mod.unsupported_reason(problem, "prototype") is None:
                break  # its prototype path is one fused op too: FLOPs decide
            if mod.unsupported_reason(problem, "pairwise") is None:
                strategy = "pairwise"
                why_strategy = f"pairwise {pair:.3g} FLOPs is below the launch-cost break-even of a fused backend"
                break
    if backend != "auto":
        reason = backends.unavailable_reason(backend, device)
        if reason is None:
            reason = backends.load(backend).unsupported_reason(problem, strategy)
        if reason is None and backend != "reference":
            reason = grad_reason
        if reason is not None:
            raise backends.BackendUnavailable(f"backend={backend!r} cannot run this call: {reason}")
        return Plan(strategy, backend, f"{why_strategy}; backend={backend!r} requested", pair, proto)

    skipped = []
    for name in backends.AUTO_ORDER.get(device.type, ()):
        reason = grad_reason or backends.unavailable_reason(name, device)
        if reason is None:
            reason = backends.load(name).unsupported_reason(problem, strategy)
        if reason is None:
            chosen, why = name, f"{name} is the first available fast backend for {device.type}"
            break
        skipped.append(f"{name}: {reason}")
    else:
        chosen = "reference"
        why = "no fast backend could run it (" + "; ".join(skipped) + ")" if skipped else f"no fast backend for {device.type}"
    key = (device.type, chosen, strategy, tuple(skipped))
    if key not in _logged:
        _logged.add(key)
        log.info("fastreweight: backend=%s strategy=%s on %s (%s; %s)", chosen, strategy, device, why, why_strategy)
    return Plan(strategy, chosen, f"{why_strategy}; {why}", pair, proto)
