"""CPU benchmark: the C++ backend (pairwise streamed, csrc/cpu/similarity_pairwise.cpp) against the
eager PyTorch reference (pairwise), B=256, M=2048, d=512, C in {10, 100}, feature and gradient kernel (k=10),
float32, through the public API (fastreweight.fbr_scores, validation included) and the raw op alone.

usage: python benchmarks/bench_cpp_cpu.py [--repeats N] [--threads T] [--out FILE]
Times are the median of N runs (interleaved cpp / reference, after a warm-up); the machine's other
load is sampled with os.getloadavg() and printed, since shared machines make timings noisy.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

import fastreweight as fr
from fastreweight import csrc_backend, reference
from fastreweight.problem import build_problem


def timeit(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--out", default="", help="also write the output to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reason = csrc_backend.load_cpu()
    if reason is not None:
        sys.exit(f"C++ CPU extension unavailable: {reason}")

    lines = []
    say = lambda s="": (print(s, flush=True), lines.append(s))  # noqa: E731
    say(f"# bench_cpp_cpu  {datetime.datetime.now().isoformat(timespec='seconds')}")
    say(f"# python {platform.python_version()}  torch {torch.__version__}  threads {torch.get_num_threads()}  "
        f"cpus {os.cpu_count()}  machine {platform.machine()}  {platform.processor() or ''}")
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        say(f"# cpu {model}")
    except Exception:
        pass
    say(f"# loadavg before {os.getloadavg()}")
    say(f"# median (min) of {args.repeats} runs, ms; speedup = reference / cpp on medians")
    B, M, d, k = 256, 2048, 512, 10
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, d, generator=g) + 0.5
    z = torch.randn(M, d, generator=g) + 0.5
    e = torch.randn(B, k, generator=g)
    f = torch.randn(M, k, generator=g)
    say(f"{'C':>4} {'kernel':>8} {'path':>5} {'cpp':>16} {'reference':>16} {'speedup':>8}")

    def compare(C, kernel, path, fast, slow, note=""):
        tc, tr = [], []
        for _ in range(args.repeats):  # interleaved, so that load changes hit both
            tc.append(timeit(fast, 1)[0])
            tr.append(timeit(slow, 1)[0])
        mc, mr = statistics.median(tc), statistics.median(tr)
        say(f"{C:>4} {kernel:>8} {path:>5} {mc*1e3:8.2f} ({min(tc)*1e3:6.2f}) {mr*1e3:8.2f} ({min(tr)*1e3:6.2f}) "
            f"{mr/mc:7.2f}x" + note)

    for C in (10, 100):
        u = torch.arange(M) % C
        y = torch.randint(0, C, (B,), generator=g)
        for kernel, kw in (("feature", {}), ("gradient", dict(x2=e, clean_x2=f))):
            common = dict(num_classes=C, strategy="pairwise", shift="max", **kw)
            cpp = lambda: fr.fbr_scores(x, y, z, u, backend="cpp", **common)  # noqa: E731
            ref = lambda: fr.fbr_scores(x, y, z, u, backend="reference", **common)  # noqa: E731
            torch.testing.assert_close(cpp(), ref(), rtol=1e-3, atol=1e-3 * float(ref().abs().max()))
            compare(C, kernel, "api", cpp, ref)
            # the scoring step alone (validation / problem building excluded, same for both)
            P = build_problem(x, z, y=y, clean_y=u, x2=kw.get("x2"), clean_x2=kw.get("clean_x2"), num_classes=C)
            args_op = csrc_backend.problem_args(P)
            op = lambda: torch.ops.fastreweight.fbr_scores(*args_op, P.y, "max", 0.0)  # noqa: E731
            rop = lambda: reference.fbr_from_similarity(reference.class_similarity(P, "pairwise"), P.y, P.present, "max", 0.0)  # noqa: E731
            compare(C, kernel, "op", op, rop)
            # what backend="auto" runs when the same clean tensors recur (a training loop): the C++
            # prototype strategy on the memoised clean side, against the same eager pairwise reference
            auto = lambda: fr.fbr_scores(x, y, z, u, num_classes=C, shift="max", **kw)  # noqa: E731
            auto()
            auto()
            plan = fr.last_plan()
            torch.testing.assert_close(auto(), ref(), rtol=1e-3, atol=1e-3 * float(ref().abs().max()))
            compare(C, kernel, "auto", auto, ref,
                    f"   [{plan.backend}/{plan.strategy}: not the pairwise strategy the target names]")
    say("# api: fbr_scores(backend='cpp'|'reference', strategy='pairwise'); op: the scoring op alone; auto: "
        "fbr_scores(backend='auto', strategy='auto') with a recurring clean side, against the api reference")
    say(f"# loadavg after {os.getloadavg()}")
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
