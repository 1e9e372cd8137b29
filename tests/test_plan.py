"""The planner: strategy by FLOP count, launch-cost break-even, explicit choices respected."""
import types

import pytest
import torch

import fastreweight as fr
from fastreweight import backends, plan
from fastreweight.problem import build_problem


def _problem(B, M, d, C, k=0):
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(B, d, generator=g), torch.randn(M, d, generator=g)
    e = f = None
    if k:
        e, f = torch.randn(B, k, generator=g), torch.randn(M, k, generator=g)
    return build_problem(x, z, y=torch.arange(B) % C, clean_y=torch.arange(M) % C, x2=e, clean_x2=f, num_classes=C)


def test_flop_counts_match_the_formulas():
    p = _problem(7, 11, 5, 3, k=2)
    pair, proto, proto_bytes = plan.strategy_flops(p)
    assert pair == 2 * 7 * 11 * 3 + 2 * 7 * 11 * (5 + 2) + 7 * 11
    assert proto == 2 * 11 * 2 * 5 + 2 * 7 * 3 * 2 * 5
    assert proto_bytes == 3 * 2 * 5 * 4


def test_large_feature_kernel_prefers_prototypes():
    p = _problem(256, 4096, 64, 10)
    assert plan.make_plan(p, "auto", "reference").strategy == "prototype"
    assert plan.make_plan(p, "pairwise", "reference").strategy == "pairwise"


def _fake_backend(monkeypatch, fused_prototype):
    """A stand-in fast backend on the CPU that can run everything; ``FUSED_PROTOTYPE`` as given."""
    mod = types.SimpleNamespace(unavailable_reason=lambda dev: None, unsupported_reason=lambda p, s: None)
    if fused_prototype:
        mod.FUSED_PROTOTYPE = True
    monkeypatch.setitem(backends._cache, "fake", mod)
    monkeypatch.setitem(backends.AUTO_ORDER, "cpu", ("fake",))


@pytest.mark.parametrize("fused_prototype", [False, True])
def test_small_problem_prefers_a_fused_path(monkeypatch, fused_prototype):
    p = _problem(64, 100, 32, 10)
    pair, proto, _ = plan.strategy_flops(p)
    assert proto < pair <= plan.SMALL_PAIRWISE_FLOPS
    assert plan.make_plan(p, "auto", "reference").strategy == "prototype"  # no fused backend asked for
    _fake_backend(monkeypatch, fused_prototype)
    chosen = plan.make_plan(p, "auto", "auto")
    # a backend whose prototype path is several ops loses to its one-op pairwise path on launch cost;
    # one with a fused prototype path keeps the cheaper strategy by FLOPs
    assert (chosen.strategy, chosen.backend) == ("prototype" if fused_prototype else "pairwise", "fake")
    assert ("launch-cost" in chosen.reason) != fused_prototype


def test_cpp_runs_small_problems_with_fused_prototypes():
    if backends.unavailable_reason("cpp", torch.device("cpu")) is not None:
        pytest.skip("C++ CPU extension unavailable")
    chosen = plan.make_plan(_problem(64, 100, 32, 10), "auto", "auto")
    assert (chosen.strategy, chosen.backend) == ("prototype", "cpp")


def test_reused_clean_side_counts_prototypes_per_call():
    # B=4, M=64, d=16, C=8: pairwise 12288 FLOPs; prototypes 16384 (clean side) + 1024 (per call)
    g = torch.Generator().manual_seed(1)
    x, z = torch.randn(4, 16, generator=g), torch.randn(64, 16, generator=g)
    y, u = torch.arange(4) % 8, torch.arange(64) % 8
    first = build_problem(x, z, y=y, clean_y=u, num_classes=8)
    assert plan.strategy_flops(first)[:2] == (12288, 17408)
    assert plan.make_plan(first, "auto", "reference").strategy == "pairwise"
    again = build_problem(x.flip(0), z, y=y, clean_y=u, num_classes=8)  # a new batch, the same clean tensors
    assert plan.strategy_flops(again)[:2] == (12288, 1024)
    chosen = plan.make_plan(again, "auto", "reference")
    assert chosen.strategy == "prototype" and "clean side reused" in chosen.reason
    z.add_(0.0)  # an in-place change to the clean features: a new clean side, counted in full again
    changed = build_problem(x, z, y=y, clean_y=u, num_classes=8)
    assert plan.strategy_flops(changed)[:2] == (12288, 17408)


def test_prototypes_that_do_not_fit_memory_fall_back_to_pairwise(monkeypatch):
    monkeypatch.setattr(plan, "PROTOTYPE_MEMORY_BYTES", 16)
    p = _problem(256, 4096, 64, 10)
    assert plan.make_plan(p, "auto", "reference").strategy == "pairwise"
    x = torch.randn(3, 4, dtype=torch.float64)
    fr.fbr_scores(x, torch.tensor([0, 1, 0]), x, torch.tensor([0, 1, 1]))
    assert "bytes" in fr.last_plan().reason
