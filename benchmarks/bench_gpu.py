"""GPU benchmark of the scoring kernels (run on a CUDA machine; nothing here runs on the CPU).

    python benchmarks/bench_gpu.py [--quick] [--out benchmarks/results/gpu_<device>_<date>.jsonl]

For B ∈ {128, 1024, 8192}, M ∈ {2048, 16384, 65536}, d ∈ {512, 2048}, C ∈ {10, 100, 1000} (bf16, the
feature kernel, pairwise) plus the gradient kernel at k=10, it times with ``triton.testing.do_bench``
(median; do_bench flushes L2 between runs):
  the eager reference, ``torch.compile`` of it, every available fast backend (Triton, the CUDA
  extension) in both strategies, and a cuBLAS GEMM of the same FLOP count (B×(d+k) @ (d+k)×M) in the
  same dtype — the ceiling each kernel's TFLOP/s is compared with.  Peak extra memory is
  ``torch.cuda.max_memory_allocated`` above the inputs.  One JSON record per (shape, implementation).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from baselines import eager_pairwise_fbr  # noqa: E402

import fastreweight as fr  # noqa: E402
from fastreweight import backends  # noqa: E402
from fastreweight.bench import Case, environment  # noqa: E402


def measure(fn, device):
    from triton.testing import do_bench

    fn()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated(device) - base
    return float(do_bench(fn, warmup=25, rep=100, return_mode="median")), int(extra)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="only the target shapes of the issues")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args(argv)
    device = torch.device("cuda")
    env = environment(device)
    out = args.out or os.path.join(os.path.dirname(__file__), "results",
                                   f"gpu_{env['device_name'].replace(' ', '_')}_{time.strftime('%Y%m%d')}.jsonl")
    if args.quick:
        shapes = [(1024, 16384, 512, 100, 0), (8192, 65536, 1024, 100, 0), (1024, 16384, 512, 100, 10)]
    else:
        shapes = [(B, M, d, C, 0) for B, M, d, C in itertools.product((128, 1024, 8192), (2048, 16384, 65536), (512, 2048), (10, 100, 1000))]
        shapes += [(1024, 16384, 512, 100, 10), (8192, 65536, 1024, 100, 0)]
    compiled = None if args.no_compile else torch.compile(eager_pairwise_fbr)
    with open(out, "a") as fh:
        for B, M, d, C, k in shapes:
            case = Case(B=B, M=M, d=d, C=C, k=k, dtype="bfloat16")
            xs, y, zs, u, es, fs = case.tensors(device)
            e0, f0 = (es[0], fs[0]) if es else (None, None)
            flops = case.flops("pairwise")
            a = torch.randn(B, d + k, device=device, dtype=torch.bfloat16)
            b = torch.randn(d + k, M, device=device, dtype=torch.bfloat16)
            gemm_ms, _ = measure(lambda: a @ b, device)
            gemm_tflops = 2 * B * M * (d + k) / gemm_ms / 1e9
            impls = {"eager-reference": lambda: eager_pairwise_fbr(xs[0], y, zs[0], u, C, e0, f0)}
            if compiled is not None:
                impls["compile-reference"] = lambda: compiled(xs[0], y, zs[0], u, C, e0, f0)
            for backend in ("triton", "cuda"):
                if backends.unavailable_reason(backend, device) is None:
                    for strategy in ("pairwise", "prototype"):
                        impls[f"{backend}-{strategy}"] = (lambda bk=backend, st=strategy: fr.fbr_scores(
                            xs, y, zs, u, num_classes=C, x2=es, clean_x2=fs, backend=bk, strategy=st, check_values=False))
            for name, fn in impls.items():
                try:
                    ms, extra = measure(fn, device)
                except Exception as exc:  # record why an implementation could not run this shape
                    rec = dict(case=case.__dict__, impl=name, error=f"{type(exc).__name__}: {exc}"[:300], env=env)
                else:
                    rec = dict(case=case.__dict__, impl=name, ms=ms, tflops=flops / ms / 1e9, extra_bytes=extra,
                               gemm_ms=gemm_ms, gemm_tflops=gemm_tflops, pct_of_gemm=100 * (flops / ms / 1e9) / gemm_tflops,
                               bxm_bytes=B * M * 4, env=env)
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                print(json.dumps({k: v for k, v in rec.items() if k != "env"}), flush=True)
            impls.clear()  # drop the closures, then the inputs, before the next shape
            xs = zs = es = fs = a = b = None
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
