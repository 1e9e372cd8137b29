"""Driver for ``compute-sanitizer`` (memcheck, racecheck): calls one backend's GPU kernels on small odd
shapes that cover every code path, and checks the results against the float64 reference, so that an
out-of-bounds access, a shared-memory race or an unwritten output shows up.  Not collected by pytest
(it needs a GPU and runs under the sanitizer):

    compute-sanitizer --tool memcheck  --error-exitcode 1 python tests/sanitize_driver.py cuda
    compute-sanitizer --tool racecheck --error-exitcode 1 python tests/sanitize_driver.py cuda
    compute-sanitizer --tool memcheck  --error-exitcode 1 python tests/sanitize_driver.py triton

Exit status 0 when every result matches; the sanitizer's own exit status reports its findings.
"""
from __future__ import annotations

import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastreweight as fr  # noqa: E402

SHAPES = [(1, 1, 5, 2), (17, 97, 33, 3), (97, 130, 70, 10), (2, 1025, 17, 300), (130, 17, 129, 1000)]
DTYPES = {"cuda": (torch.float64, torch.float32, torch.float16, torch.bfloat16),
          "triton": (torch.float32, torch.float16, torch.bfloat16),
          "cpp": (torch.float64, torch.float32, torch.float16, torch.bfloat16)}  # cpp: a CPU check of this script


def main(backend: str) -> int:
    dev = torch.device("cpu" if backend == "cpp" else "cuda")
    g = torch.Generator().manual_seed(0)
    failures = 0
    cases = 0
    for (B, M, d, C), dtype, grad, cosine in itertools.product(SHAPES, DTYPES[backend], (False, True), (False, True)):
        k = 7 if grad else 0
        x = torch.randn(B, d, generator=g, dtype=torch.float64) + 0.5
        z = torch.randn(M, d, generator=g, dtype=torch.float64) + 0.5
        e = torch.randn(B, k, generator=g, dtype=torch.float64) if grad else None
        f = torch.randn(M, k, generator=g, dtype=torch.float64) if grad else None
        y = torch.randint(0, C, (B,), generator=g)
        u = torch.randint(0, C, (M,), generator=g)
        kw = dict(num_classes=C, normalize="cosine" if cosine else None, strategy="pairwise",
                  on_missing_class="skip", check_values=False)
        # the reference on the same rounded values, in float64
        q = lambda t: None if t is None else t.to(dtype).to(torch.float64)  # noqa: E731
        ref = fr.fbr_scores(q(x), y, q(z), u, x2=q(e), clean_x2=q(f), shift="second", alpha=0.2,
                            backend="reference", **kw)
        mv = lambda t: None if t is None else t.to(device=dev, dtype=dtype)  # noqa: E731
        out = fr.fbr_scores(mv(x), y.to(dev), mv(z), u.to(dev), x2=mv(e), clean_x2=mv(f), shift="second", alpha=0.2,
                            backend=backend, **kw).cpu().double()
        S = fr.class_similarity(mv(x), y.to(dev), mv(z), u.to(dev), x2=mv(e), clean_x2=mv(f), backend=backend,
                                **{k_: v for k_, v in kw.items()})
        if dev.type == "cuda":
            torch.cuda.synchronize()
        cases += 1
        scale = float(ref.abs().max()) + 1e-12
        tol = {torch.float64: 1e-9, torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]
        err = float((out - ref).abs().max()) / scale
        if not torch.isfinite(out).all() or not torch.isfinite(S).all() or err > tol:
            failures += 1
            print(f"MISMATCH {backend} B={B} M={M} d={d} C={C} {dtype} grad={grad} cosine={cosine}: rel err {err:.3g}")
    print(f"sanitize_driver {backend}: {cases} cases, {failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "cuda"))
