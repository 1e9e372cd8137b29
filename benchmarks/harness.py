"""Benchmark harness shared by the scripts in ``benchmarks/`` (``python benchmarks/harness.py``: a quick sweep).

Timing: on CUDA ``triton.testing.do_bench`` (median of many runs after warm-up, L2 flushed between
runs); on the CPU the median of ``repeats`` wall-clock runs after ``warmup`` runs.  Each record carries
the environment (device name, torch / triton / CUDA versions, git commit, date) and the roofline
figures: achieved GFLOP/s and GB/s next to ceilings measured in the same run (a large GEMM in the
same dtype for FLOP/s, a large tensor copy for bytes/s).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field

import torch

from fastreweight import plan as plan_mod
from fastreweight.problem import build_problem


def environment(device: torch.device) -> dict:
    env = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "commit": _git_commit(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception:
        env["triton"] = None
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    else:
        env["device_name"] = _cpu_name()
        env["cuda"] = None
    return env


def _git_commit() -> str:
    """The checkout's commit, with ``+dirty`` when tracked files outside ``benchmarks/results/`` differ
    from it (a result must not name a commit whose code did not produce it; the result files, which the
    benchmarks themselves append to, do not count); ``FASTREWEIGHT_COMMIT`` names it where the tree was
    copied without ``.git`` (e.g. to a benchmark machine)."""
    if os.environ.get("FASTREWEIGHT_COMMIT"):
        return os.environ["FASTREWEIGHT_COMMIT"]
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.check_output(["git", "-C", here, "rev-parse", "--short", "HEAD"], text=True,
                                         stderr=subprocess.DEVNULL).strip()
        top = subprocess.check_output(["git", "-C", here, "rev-parse", "--show-toplevel"], text=True,
                                      stderr=subprocess.DEVNULL).strip()
        changed = subprocess.check_output(["git", "-C", top, "status", "--porcelain", "--untracked-files=no", "--",
                                           ".", ":(exclude)benchmarks/results"],
                                          text=True, stderr=subprocess.DEVNULL).strip()
        return commit + ("+dirty" if changed else "")
    except Exception:
        return "unknown"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_ms(fn, device: torch.device, *, warmup: int = 2, repeats: int = 7) -> float:
    """Median milliseconds of ``fn()``."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def ceilings(device: torch.device, dtype: torch.dtype) -> dict:
    """Measured peak-ish rates on this device: GEMM GFLOP/s in ``dtype`` and copy GB/s."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = time_ms(lambda: a @ b, device)
    big = torch.empty((64 if device.type == "cuda" else 16) << 20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(big)
    ms_copy = time_ms(lambda: dst.copy_(big), device)
    return {"gemm_gflops": 2 * n**3 / ms / 1e6, "copy_gbs": 2 * big.numel() / ms_copy / 1e6}


@dataclass
class Case:
    """One scoring problem: B batch rows, M clean rows, d features, C classes, k second-factor size
    (0: feature kernel), L layers."""

    B: int
    M: int
    d: int
    C: int
    k: int = 0
    layers: int = 1
    dtype: str = "float32"

    def tensors(self, device: torch.device, seed: int = 0):
        g = torch.Generator(device="cpu").manual_seed(seed)
        dt = getattr(torch, self.dtype)

        def r(*s):
            return torch.randn(*s, generator=g).to(device=device, dtype=dt)

        xs = [r(self.B, self.d) for _ in range(self.layers)]
        zs = [r(self.M, self.d) for _ in range(self.layers)]
        es = [r(self.B, self.k) for _ in range(self.layers)] if self.k else None
        fs = [r(self.M, self.k) for _ in range(self.layers)] if self.k else None
        y = torch.randint(0, self.C, (self.B,), generator=g).to(device)
        u = (torch.arange(self.M) % self.C).to(device)
        return xs, y, zs, u, es, fs

    def flops(self, strategy: str, clean_amortised: bool = False) -> int:
        """The planner's FLOP count for this shape (``plan.shape_flops``); ``clean_amortised`` leaves out
        the prototypes' clean-side work (repeated calls with the same clean tensors reuse it)."""
        pair, proto, _ = plan_mod.shape_flops(self.B, self.M, self.C, [(self.d, self.k)] * self.layers,
                                              clean_amortised=clean_amortised)
        return pair if strategy == "pairwise" else proto

    def bytes_moved(self) -> int:
        item = torch.finfo(getattr(torch, self.dtype)).bits // 8
        return self.layers * item * ((self.B + self.M) * (self.d + self.k)) + 4 * self.B * self.C


@dataclass
class Record:
    bench: str
    case: dict
    backend: str
    strategy: str
    ms: float
    gflops: float
    gbs: float
    env: dict = field(default_factory=dict)
    ceilings: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def run_case(case: Case, backend: str, strategy: str, device: torch.device, *, shift: str = "max") -> float:
    """Milliseconds of one ``fbr_scores`` call (value checks off: the hot-path setting)."""
    from fastreweight.scores import fbr_scores

    xs, y, zs, u, es, fs = case.tensors(device)
    kw = dict(num_classes=case.C, shift=shift, strategy=strategy, backend=backend, check_values=False)
    if es is not None:
        kw.update(x2=es, clean_x2=fs)
    fn = lambda: fbr_scores(xs, y, zs, u, **kw)  # noqa: E731
    fn()
    return time_ms(fn, device)


def append_jsonl(path: str, records: list[Record]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as fh:
        for r in records:
            fh.write(json.dumps(asdict(r)) + "\n")


QUICK_CASES = [
    Case(B=256, M=2048, d=512, C=10),
    Case(B=256, M=2048, d=512, C=100),
    Case(B=256, M=2048, d=512, C=10, k=10),
]


def quick(device: str | torch.device = "cpu", backends=("reference", "cpp", "triton", "cuda")) -> list[Record]:
    """A small sweep on whatever device is present: each available backend × strategy."""
    from fastreweight import backends as B

    device = torch.device(device)
    env = environment(device)
    ceil = ceilings(device, torch.float32)
    out = []
    for case in QUICK_CASES:
        for backend in backends:
            if B.unavailable_reason(backend, device) is not None:
                continue
            if backend == "triton" and device.type != "cuda":
                continue  # on the CPU Triton only runs in its interpreter: a correctness tool, not a timing
            for strategy in ("pairwise", "prototype"):
                xs, y, zs, u, es, fs = case.tensors(device)
                problem = build_problem(xs, zs, y=y, clean_y=u, x2=es, clean_x2=fs, num_classes=case.C, check_values=False)
                try:
                    plan_mod.make_plan(problem, strategy, backend)
                except B.BackendUnavailable:
                    continue
                ms = run_case(case, backend, strategy, device)
                # run_case repeats the call with the same clean tensors: the memoised prototypes'
                # clean side is paid once, so the rate counts the per-call FLOPs
                out.append(Record("quick", asdict(case), backend, strategy, ms,
                                  case.flops(strategy, clean_amortised=True) / ms / 1e6,
                                  case.bytes_moved() / ms / 1e6, env, ceil))
    return out


def format_table(records: list[Record]) -> str:
    lines = [f"{'B':>5} {'M':>6} {'d':>5} {'C':>4} {'k':>3} {'backend':>10} {'strategy':>10} {'ms':>9} {'GFLOP/s':>9} {'% GEMM':>7}"]
    for r in records:
        c = r.case
        pct = 100 * r.gflops / r.ceilings["gemm_gflops"] if r.ceilings else float("nan")
        lines.append(f"{c['B']:>5} {c['M']:>6} {c['d']:>5} {c['C']:>4} {c['k']:>3} {r.backend:>10} {r.strategy:>10} "
                     f"{r.ms:>9.3f} {r.gflops:>9.1f} {pct:>6.1f}%")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python benchmarks/harness.py [--device auto] [--out FILE.jsonl]``: the quick sweep as a table."""
    import argparse

    ap = argparse.ArgumentParser(description="a quick benchmark of the available backends on this device")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="append the records to this .jsonl file")
    args = ap.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    recs = quick(device)
    if recs:
        print(f"device: {recs[0].env['device_name']}; GEMM ceiling {recs[0].ceilings['gemm_gflops']:.0f} GFLOP/s fp32")
    print(format_table(recs))
    if args.out:
        append_jsonl(args.out, recs)
        print(f"appended {len(recs)} records to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
