"""The planner: strategy by FLOP count, launch-cost break-even, explicit choices respected."""
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


def test_small_problem_prefers_a_fused_pairwise_backend():
    p = _problem(64, 100, 32, 10)
    pair, proto, _ = plan.strategy_flops(p)
    assert proto < pair <= plan.SMALL_PAIRWISE_FLOPS
    assert plan.make_plan(p, "auto", "reference").strategy == "prototype"  # no fused backend asked for
    chosen = plan.make_plan(p, "auto", "auto")
    if backends.unavailable_reason("cpp", torch.device("cpu")) is None:
        assert (chosen.strategy, chosen.backend) == ("pairwise", "cpp")
    else:
        assert (chosen.strategy, chosen.backend) == ("prototype", "reference")


def test_prototypes_that_do_not_fit_memory_fall_back_to_pairwise(monkeypatch):
    monkeypatch.setattr(plan, "PROTOTYPE_MEMORY_BYTES", 16)
    p = _problem(256, 4096, 64, 10)
    assert plan.make_plan(p, "auto", "reference").strategy == "pairwise"
    x = torch.randn(3, 4, dtype=torch.float64)
    fr.fbr_scores(x, torch.tensor([0, 1, 0]), x, torch.tensor([0, 1, 1]))
    assert "bytes" in fr.last_plan().reason
