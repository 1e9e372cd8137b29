"""CPU microbenchmarks (pytest-benchmark).

    python -m pytest benchmarks/test_micro_cpu.py --benchmark-only \
        --benchmark-json=benchmarks/results/micro_cpu.json

Every available backend × strategy × kernel × dtype at the issue's CPU shape (B=256, M=2048, d=512),
against the eager reference, ``torch.compile`` of it, and per-sample gradient materialisation for the
gradient kernel.  Unavailable backends are skipped with their reason.  Every benchmark repeats a call
with the same clean tensors, so the prototype strategy's clean side (memoised) is paid once, not per
call; its FLOP count is the per-call work.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from baselines import eager_pairwise_fbr, naive_meta_scores  # noqa: E402

import fastreweight as fr  # noqa: E402
from fastreweight import backends  # noqa: E402
from harness import Case  # noqa: E402

CASES = {
    "feat-C10": Case(B=256, M=2048, d=512, C=10),
    "feat-C100": Case(B=256, M=2048, d=512, C=100),
    "grad-k10": Case(B=256, M=2048, d=512, C=10, k=10),
    "grad-2layer": Case(B=256, M=2048, d=256, C=10, k=10, layers=2),
}
CPU = torch.device("cpu")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("strategy", ["pairwise", "prototype"])
@pytest.mark.parametrize("backend", ["reference", "cpp", "triton"])
@pytest.mark.parametrize("name", list(CASES))
def test_fbr_scores(benchmark, name, backend, strategy, dtype):
    reason = backends.unavailable_reason(backend, CPU)
    if backend == "triton":
        reason = "Triton runs on the CPU only in its interpreter, which is a correctness tool, not a timing"
    if reason:
        pytest.skip(reason)
    case = Case(**{**CASES[name].__dict__, "dtype": dtype})
    xs, y, zs, u, es, fs = case.tensors(CPU)
    kw = dict(num_classes=case.C, strategy=strategy, backend=backend, check_values=False)
    if es is not None:
        kw.update(x2=es, clean_x2=fs)
    try:
        fr.fbr_scores(xs, y, zs, u, **kw)
    except fr.BackendUnavailable as exc:
        pytest.skip(str(exc))
    # repeated calls with the same clean tensors reuse the memoised prototypes: count per-call FLOPs
    benchmark.extra_info.update(flops=case.flops(strategy, clean_amortised=True))
    benchmark(fr.fbr_scores, xs, y, zs, u, **kw)


@pytest.mark.parametrize("mode", ["eager", "compile"])
@pytest.mark.parametrize("name", ["feat-C10", "feat-C100", "grad-k10"])
def test_eager_reference(benchmark, name, mode):
    case = CASES[name]
    xs, y, zs, u, es, fs = case.tensors(CPU)
    fn = eager_pairwise_fbr if mode == "eager" else torch.compile(eager_pairwise_fbr)
    args = (xs[0], y, zs[0], u, case.C) + ((es[0], fs[0]) if es else ())
    fn(*args)
    benchmark.extra_info.update(flops=case.flops("pairwise"))
    benchmark(fn, *args)


def test_naive_per_sample_gradients(benchmark):
    case = CASES["grad-k10"]
    xs, y, zs, u, es, fs = case.tensors(CPU)
    naive_meta_scores(xs[0], es[0], zs[0], fs[0])
    benchmark(naive_meta_scores, xs[0], es[0], zs[0], fs[0])


def test_factored_meta_scores(benchmark):
    case = CASES["grad-k10"]
    xs, y, zs, u, es, fs = case.tensors(CPU)
    torch.testing.assert_close(fr.meta_scores(xs[0], es[0], zs[0], fs[0]),
                               naive_meta_scores(xs[0], es[0], zs[0], fs[0]), rtol=1e-3, atol=1e-2)
    benchmark(fr.meta_scores, xs[0], es[0], zs[0], fs[0], check_values=False)
