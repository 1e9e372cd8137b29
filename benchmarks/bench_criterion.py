"""The leave-one-out criterion of ``whiten="auto"`` on the CPU: the C++ op ``fastreweight::loo_auroc``
against the batched torch code of ``fastreweight.whiten`` (the reference, still used on a GPU).

    python benchmarks/bench_criterion.py [--threads 1]

Seven candidates (``AUTO_STRENGTHS``) of M clean rows in r coordinates and C classes, shift="max",
center="clean"; best of ``--repeat`` timings of each implementation, and whether they agree.  Also
``shrunk_class_means(whiten="auto")`` end to end (M×d clean features, d = 256) with either criterion.
Appends one JSON record per shape to ``benchmarks/results/criterion_cpu.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fastreweight import whiten as W  # noqa: E402
from harness import environment  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
SHAPES = [(50, 49, 10), (100, 99, 10), (400, 256, 10), (500, 64, 10), (500, 499, 100), (2000, 256, 100)]


def best_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(RESULTS, "criterion_cpu.jsonl"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if W.criterion_backend(torch.device("cpu")) != "cpp":
        raise SystemExit("the C++ extension is not available: nothing to compare")
    env = environment(torch.device("cpu"))
    kw = dict(center="clean", shift="max", alpha=0.0)
    g = torch.Generator().manual_seed(0)
    with open(args.out, "a") as fh:
        for M, r, C in SHAPES:
            coords = torch.randn(M, r, generator=g, dtype=torch.float64)
            scales = torch.rand(len(W.AUTO_STRENGTHS), r, generator=g, dtype=torch.float64) + 0.05
            y = torch.arange(M) % C
            rep = max(2, args.repeat // (1 + M * r * C // 2_000_000))
            cpp = W._scaled_criterion(coords, scales, y, C, kw, backend="cpp")
            ref = W._scaled_criterion(coords, scales, y, C, kw, backend="reference")
            rec = dict(M=M, r=r, C=C, candidates=len(W.AUTO_STRENGTHS), threads=args.threads,
                       cpp_ms=best_ms(lambda: W._scaled_criterion(coords, scales, y, C, kw, backend="cpp"), rep),
                       reference_ms=best_ms(lambda: W._scaled_criterion(coords, scales, y, C, kw, backend="reference"),
                                            rep),
                       max_abs_diff=max(abs(a - b) for a, b in zip(cpp, ref)), env=env)
            if M <= 500:  # the trainer's refresh end to end (features M×256)
                feats = torch.relu(torch.randn(M, 256, generator=g))
                labels = torch.arange(M) % C
                orig = W.criterion_backend
                rec["shrunk_class_means_cpp_ms"] = best_ms(
                    lambda: W.shrunk_class_means(feats, labels, C, whiten="auto", check_values=False), rep)
                W.criterion_backend = lambda device: "reference"
                try:
                    rec["shrunk_class_means_reference_ms"] = best_ms(
                        lambda: W.shrunk_class_means(feats, labels, C, whiten="auto", check_values=False), rep)
                finally:
                    W.criterion_backend = orig
            rec["speedup"] = rec["reference_ms"] / rec["cpp_ms"]
            fh.write(json.dumps(rec) + "\n")
            print(f"M={M} r={r} C={C}: cpp {rec['cpp_ms']:.3f} ms, reference {rec['reference_ms']:.3f} ms "
                  f"({rec['speedup']:.1f}x), max |diff| {rec['max_abs_diff']:.1e}"
                  + (f"; shrunk_class_means {rec['shrunk_class_means_cpp_ms']:.3f} vs "
                     f"{rec['shrunk_class_means_reference_ms']:.3f} ms" if "shrunk_class_means_cpp_ms" in rec else ""),
                  flush=True)


if __name__ == "__main__":
    main()
