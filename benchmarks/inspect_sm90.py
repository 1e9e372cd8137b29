"""Compile the pairwise Triton kernel for sm_90a without a GPU and report what the compiler made of it.

    python benchmarks/inspect_sm90.py            # a table over the Hopper configurations
    python benchmarks/inspect_sm90.py --check    # exit 1 if a feature-kernel configuration spills

Triton compiles for a named target (``GPUTarget("cuda", 90, 32)``) with its bundled ptxas; the
cubin's resource usage and SASS are read with the bundled ``cuobjdump``.  Integer arguments are
declared divisible by 16 and pointers 16-byte aligned, as Triton specialises them at a real launch on
such shapes (without these hints the loads are not pipelined and the numbers mean nothing).  For each
configuration it prints registers, stack (local memory: spills), shared memory, and the count of
``wgmma`` (HGMMA, tensor-core) and FFMA (fp32 FMA) instructions: the one-hot class aggregation under
``"highest"`` precision shows up as thousands of FFMA, the segment-sum aggregation as none.

Not a measurement of speed: it tells which instructions and how much on-chip state a configuration
uses, and catches spills without a GPU.  Must run without ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def _tool(name: str) -> str:
    import triton

    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return bundled if os.path.exists(bundled) else name


def compile_pairwise(*, dtype="bf16", block_b=128, block_m=128, block_d=64, block_k=32, block_c=32, num_warps=8,
                     num_stages=3, center=2, grad=False, agg=1, layers=1, precision="ieee"):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastreweight.kernels import pairwise

    fn = pairwise.pairwise_similarity_kernel
    names = fn.arg_names
    constexprs = dict(NUM_LAYERS=layers, GRAD=grad, CENTER=center, COSINE=False, BLOCK_B=block_b, BLOCK_M=block_m,
                      BLOCK_C=block_c, BLOCK_D=block_d, BLOCK_K=block_k, INPUT_PRECISION=precision, AGG=agg,
                      AGG_PRECISION=precision)
    sig = {}
    for n in names:
        if n in constexprs:
            sig[n] = "constexpr"
        elif re.fullmatch(r"[xzef]\d", n):
            sig[n] = "*" + dtype
        elif re.fullmatch(r"(mu|sb|sm|xa|zb)\d", n) or n in ("cw_ptr", "out_ptr"):
            sig[n] = "*fp32"
        elif n in ("perm_ptr", "lab_ptr", "row_off_ptr"):
            sig[n] = "*i32"
        else:
            sig[n] = "i32"
    hinted = [n for n in names if sig[n].startswith("*") or (sig[n] == "i32" and n not in ("B", "C", "SPLIT"))]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in hinted}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in constexprs.items()},
                    attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as fh:
        fh.write(kernel.asm["cubin"])
        path = fh.name
    try:
        usage = subprocess.run([_tool("cuobjdump"), "-res-usage", path], capture_output=True, text=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", path], capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    reg = re.search(r"REG:(\d+)", usage)
    stack = re.search(r"STACK:(\d+)", usage)
    return dict(registers=int(reg.group(1)) if reg else None, stack_bytes=int(stack.group(1)) if stack else None,
                shared_bytes=kernel.metadata.shared, hgmma=len(re.findall(r"\bHGMMA\b", sass)),
                ffma=len(re.findall(r"\bFFMA\b", sass)), ldgsts=len(re.findall(r"\bLDGSTS\b", sass)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="fail if a bf16 feature-kernel configuration spills")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("inspect_sm90: unset TRITON_INTERPRET (the interpreter cannot compile for a GPU)", file=sys.stderr)
        return 2
    from fastreweight.kernels.backend import HOPPER_CONFIGS

    rows, bad = [], []
    for cfg in HOPPER_CONFIGS:
        for grad, agg in ((False, 1), (False, 0), (True, 1)):
            r = compile_pairwise(block_b=cfg["BLOCK_B"], block_m=cfg["BLOCK_M"], block_d=cfg["BLOCK_D"],
                                 block_k=cfg["BLOCK_K"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                                 grad=grad, agg=agg)
            rows.append((cfg, grad, agg, r))
            if not grad and r["stack_bytes"]:
                bad.append((cfg, agg, r))
    print(f"{'BLOCK_B×M×D×K':>16} {'warps':>5} {'stages':>6} {'kernel':>8} {'agg':>8} {'regs':>5} {'stack':>6} "
          f"{'smem KB':>7} {'HGMMA':>6} {'FFMA':>6} {'LDGSTS':>6}")
    for cfg, grad, agg, r in rows:
        blocks = f"{cfg['BLOCK_B']}×{cfg['BLOCK_M']}×{cfg['BLOCK_D']}×{cfg['BLOCK_K']}"
        print(f"{blocks:>16} {cfg['num_warps']:>5} {cfg['num_stages']:>6} {'gradient' if grad else 'feature':>8} "
              f"{'segment' if agg else 'one-hot':>8} {r['registers']:>5} {r['stack_bytes']:>6} "
              f"{r['shared_bytes'] / 1024:>7.0f} {r['hgmma']:>6} {r['ffma']:>6} {r['ldgsts']:>6}")
    if args.check and bad:
        print(f"spilling bf16 feature-kernel configurations: {[(c, a) for c, a, _ in bad]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
