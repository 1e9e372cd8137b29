"""GPU benchmark of the scoring kernels (CUDA device; ``--dry-run`` exercises the script on the CPU).

    python benchmarks/bench_gpu.py --out benchmarks/results/gpu_<device>_<date>.jsonl [--budget-s 240]

What is timed, in this order (so the issues' target shapes come first if the time budget runs out):

1. the target shapes of the Triton issue, bf16: (B, M, d, C) = (1024, 16384, 512, 100) and
   (8192, 65536, 1024, 100);
2. the gradient kernel (k = 10) at (1024, 16384, 512, 100), with the naive baseline that materialises
   per-sample gradients with ``torch.func.vmap(grad)`` and takes a Gram;
3. fp16 and fp32 at the first target shape;
4. the grid B ∈ {128, 1024, 8192} × M ∈ {2048, 16384, 65536} × d ∈ {512, 2048} × C ∈ {10, 100, 1000},
   bf16, feature kernel.

Implementations: the eager reference (``baselines.eager_pairwise_fbr``: the reference's pairwise math
as one tensor function), ``torch.compile`` of it, each available fast backend (Triton pairwise and
prototype, the CUDA extension's pairwise) through ``fastreweight.fbr_scores`` — the public call, with
its validation-free hot path (``check_values=False``) — and a cuBLAS GEMM of the same FLOP count
(B×(d+k) @ (d+k)×M) in the same dtype, measured next to each shape: every kernel's TFLOP/s is
reported against it.  Also at the target shapes: the Triton kernel under matmul precision
``"high"`` (tf32 class aggregation), an A/B of its two class-aggregation modes (one-hot product,
segment sums) on one fixed configuration, and both Triton strategies with the clean-side memo cleared
before every call (clean features that change every step; the other rows reuse the memoised clean
side — class sort, centering corrections, prototypes — as a training loop with cached clean features
does, while the eager reference recomputes everything every call).  Each Triton pairwise record names
the launch configuration (``triton_config``: autotuned or fixed block sizes, split, aggregation mode).

Timing: ``triton.testing.do_bench`` (median; it clears a 256 MB buffer between runs, so every run
reads its inputs from HBM, not L2).  Peak extra memory: ``torch.cuda.max_memory_allocated`` above what
was allocated before the call (inputs excluded).  Each implementation's output is compared with the
eager reference once per shape (``rel_err``: max abs difference over max abs reference).

Output: one JSON line per (shape, implementation), after a header line with the environment (device,
torch / triton / CUDA versions, commit, date) and ceilings measured in this run (bf16 GEMM TFLOP/s,
copy GB/s).  ``render.py`` turns the file into the README table.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import uuid

import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from baselines import eager_pairwise_fbr, naive_meta_scores  # noqa: E402

import fastreweight as fr  # noqa: E402
from fastreweight import backends  # noqa: E402
from harness import Case, environment  # noqa: E402
from fastreweight.kernels import backend as kb  # noqa: E402
from fastreweight.problem import clean_cache  # noqa: E402

TARGETS = [(1024, 16384, 512, 100, 0), (8192, 65536, 1024, 100, 0)]
GRADIENT = [(1024, 16384, 512, 100, 10)]
GRID = [(B, M, d, C, 0) for B, M, d, C in itertools.product((128, 1024, 8192), (2048, 16384, 65536), (512, 2048),
                                                             (10, 100, 1000))]
DRY = [(17, 97, 33, 5, 0), (17, 97, 33, 5, 3)]  # --dry-run: bf16 (skipped by the interpreter), fp32 below


def _fixed_agg(agg, fn):
    with kb.fixed_config(AGG=agg):
        return fn()


def _cold(fn):
    clean_cache.clear()
    return fn()


def timer(device, warmup_ms, rep_ms):
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))

    def cpu_time(fn):  # --dry-run only: the script's logic, not a measurement
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return cpu_time


def peak_extra_bytes(fn, device) -> int:
    if device.type != "cuda":
        fn()
        return 0
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


def rel_err(out, ref) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def tensors(case: Case, device, seed=0):
    """Random inputs drawn on the device (drawing large ones on the host would dominate the run)."""
    g = torch.Generator(device=device).manual_seed(seed)
    dt = getattr(torch, case.dtype)

    def r(*s):
        return torch.randn(*s, generator=g, device=device, dtype=torch.float32).to(dt)

    x, z = r(case.B, case.d), r(case.M, case.d)
    e, f = (r(case.B, case.k), r(case.M, case.k)) if case.k else (None, None)
    y = torch.randint(0, case.C, (case.B,), generator=g, device=device)
    u = torch.arange(case.M, device=device) % case.C
    return x, y, z, u, e, f


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--budget-s", type=float, default=300.0, help="stop starting new shapes after this long")
    ap.add_argument("--compile-budget-s", type=float, default=90.0,
                    help="drop torch.compile for the remaining shapes once its compilations took this long")
    ap.add_argument("--warmup-ms", type=float, default=10.0)
    ap.add_argument("--rep-ms", type=float, default=50.0)
    ap.add_argument("--no-grid", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (Triton interpreter)")
    args = ap.parse_args(argv)
    device = torch.device("cpu" if args.dry_run else "cuda")
    t_start = time.perf_counter()
    env = environment(device)
    run_id = uuid.uuid4().hex[:12]
    out = args.out or os.path.join(os.path.dirname(__file__), "results",
                                   f"gpu_{env['device_name'].replace(' ', '_')}_{time.strftime('%Y%m%d')}.jsonl")
    bench = timer(device, args.warmup_ms, args.rep_ms)

    # ceilings of this run
    n = 8192 if device.type == "cuda" else 64
    ga = torch.randn(n, n, device=device).to(torch.bfloat16)
    gb = torch.randn(n, n, device=device).to(torch.bfloat16)
    gemm_ms = bench(lambda: ga @ gb)
    big = torch.randn((1 << 28) if device.type == "cuda" else 1 << 12, device=device)
    dst = torch.empty_like(big)
    copy_ms = bench(lambda: dst.copy_(big))
    ceil = dict(bf16_gemm_tflops=2 * n ** 3 / gemm_ms / 1e9, bf16_gemm_n=n,
                copy_gbs=2 * big.numel() * 4 / copy_ms / 1e6)
    ga = gb = big = dst = None  # free before the shapes
    header = dict(kind="header", run_id=run_id, env=env, ceilings=ceil,
                  float32_matmul_precision=torch.get_float32_matmul_precision(), args=vars(args))

    shapes = [(s, "bfloat16") for s in (DRY if args.dry_run else TARGETS + GRADIENT)]
    if not args.dry_run:
        shapes += [(TARGETS[0], "float16"), (TARGETS[0], "float32")]
        if not args.no_grid:
            shapes += [(s, "bfloat16") for s in GRID if s not in TARGETS]
    else:
        shapes += [(s, "float32") for s in DRY]

    compiled = None if args.no_compile else torch.compile(eager_pairwise_fbr, dynamic=True)
    compile_seconds = 0.0
    n_done = 0
    with open(out, "a") as fh:
        fh.write(json.dumps(header) + "\n")
        print(json.dumps(header), flush=True)
        for (B, M, d, C, k), dtype in shapes:
            if time.perf_counter() - t_start > args.budget_s:
                rec = dict(kind="stopped", run_id=run_id, reason=f"time budget of {args.budget_s:.0f} s reached",
                           shapes_done=n_done, shapes_planned=len(shapes))
                fh.write(json.dumps(rec) + "\n")
                print(json.dumps(rec), flush=True)
                break
            case = Case(B=B, M=M, d=d, C=C, k=k, dtype=dtype)
            x, y, z, u, e, f = tensors(case, device)
            flops = case.flops("pairwise")
            dt = getattr(torch, dtype)
            a = torch.randn(B, d + k, device=device).to(dt)
            b = torch.randn(d + k, M, device=device).to(dt)
            same_gemm_ms = bench(lambda: a @ b)
            same_gemm_tflops = 2 * B * M * (d + k) / same_gemm_ms / 1e9
            a = b = None
            impls = {"eager-reference": lambda: eager_pairwise_fbr(x, y, z, u, C, e, f)}
            if compiled is not None:
                impls["compile-reference"] = lambda: compiled(x, y, z, u, C, e, f)
            first = (B, M, d, C, k) in TARGETS or args.dry_run
            for backend in ("triton", "cuda"):
                if backends.unavailable_reason(backend, device) is not None:
                    continue
                for strategy in ("pairwise", "prototype"):
                    if backend == "cuda" and strategy == "prototype":
                        continue  # the CUDA extension implements the pairwise strategy only
                    impls[f"{backend}-{strategy}"] = (lambda bk=backend, st=strategy: fr.fbr_scores(
                        x, y, z, u, num_classes=C, x2=e, clean_x2=f, shift="max", backend=bk, strategy=st,
                        check_values=False))
                if backend == "triton" and first:
                    if dtype != "float32":
                        impls["triton-pairwise[agg tf32]"] = "tf32"
                    # A/B of the two class-aggregation modes on one fixed configuration
                    for agg in (0, 1):
                        impls[f"triton-pairwise[fixed config, AGG={agg}]"] = (lambda a=agg: _fixed_agg(
                            a, lambda: fr.fbr_scores(x, y, z, u, num_classes=C, x2=e, clean_x2=f, shift="max",
                                                     backend="triton", strategy="pairwise", check_values=False)))
                    # clean side recomputed every call (memo cleared), as when the clean features change
                    # every step (clean_features="batch"), and as the eager reference always does
                    for strategy in ("pairwise", "prototype"):
                        impls[f"triton-{strategy}[clean memo cleared]"] = (lambda st=strategy: _cold(
                            lambda: fr.fbr_scores(x, y, z, u, num_classes=C, x2=e, clean_x2=f, shift="max",
                                                  backend="triton", strategy=st, check_values=False)))
            if k:
                impls["naive-vmap-grad meta"] = lambda: naive_meta_scores(x, e, z, f)
                for backend in ("triton", "cuda"):
                    if backends.unavailable_reason(backend, device) is None:
                        impls[f"{backend}-pairwise meta"] = (lambda bk=backend: fr.meta_scores(
                            x, e, z, f, center="none", backend=bk, strategy="pairwise", check_values=False))
            ref = {}
            for name, fn in list(impls.items()):
                prec = None
                if fn == "tf32":
                    prec = torch.get_float32_matmul_precision()
                    fn = impls["triton-pairwise"]
                    torch.set_float32_matmul_precision("high")
                try:
                    t0 = time.perf_counter()
                    result = fn()  # first call: compilation / autotuning, excluded from the timing
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    first_call_s = time.perf_counter() - t0
                    if name == "compile-reference":
                        compile_seconds += first_call_s
                    extra = peak_extra_bytes(fn, device)
                    ms = bench(fn)
                except Exception as exc:  # record why an implementation could not run this shape
                    rec = dict(kind="error", run_id=run_id, case=case.__dict__, impl=name,
                               error=f"{type(exc).__name__}: {exc}"[:400])
                else:
                    key = "meta" if name.endswith("meta") else "fbr"
                    if key not in ref:
                        ref[key] = result
                    config = kb.last_pairwise_config() if name.startswith("triton-pairwise") else None
                    rec = dict(kind="timing", run_id=run_id, case=case.__dict__, impl=name, ms=ms, triton_config=config,
                               tflops=flops / ms / 1e9, pct_of_same_gemm=100 * (flops / ms / 1e9) / same_gemm_tflops,
                               gbs=case.bytes_moved() / ms / 1e6, pct_of_copy=100 * case.bytes_moved() / ms / 1e6 / ceil["copy_gbs"],
                               same_gemm_ms=same_gemm_ms, same_gemm_tflops=same_gemm_tflops, extra_bytes=extra,
                               bxm_fp32_bytes=B * M * 4, first_call_s=first_call_s,
                               rel_err_vs_eager=rel_err(result, ref[key]))
                finally:
                    if prec is not None:
                        torch.set_float32_matmul_precision(prec)
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                print(json.dumps(rec), flush=True)
            if compiled is not None and compile_seconds > args.compile_budget_s:
                rec = dict(kind="note", run_id=run_id,
                           note=f"torch.compile dropped for the remaining shapes: its compilations took {compile_seconds:.0f} s")
                fh.write(json.dumps(rec) + "\n")
                print(json.dumps(rec), flush=True)
                compiled = None
            impls.clear()  # drop the closures, then the inputs, before the next shape
            x = z = e = f = result = None
            ref.clear()
            n_done += 1
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
