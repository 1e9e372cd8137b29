"""Prototype class similarity (SPEC §4 "prototype"): aggregate the clean side first.

The math
========

Feature kernel — the kernel is bilinear in the clean rows, so the class mean commutes with it:

    S_ic = (1/M_c) Σ_{j∈c} s_i s_j <X~_i, Z~_j> = s_i <X~_i, P_c>,   P_c = (1/M_c) Σ_{j∈c} s_j Z~_j

Gradient kernel — ``<X~_i, Z~_j>·<E_i, F_j> = E_iᵀ (F_j ⊗ Z~_j) X~_i``, so

    S_ic = s_i · E_iᵀ G_c X~_i,   G_c = (1/M_c) Σ_{j∈c} s_j F_j ⊗ Z~_j   (k×d per class)

Here ``s`` is 1, or for cosine the product of the reciprocal norms of the centred rows of each factor
(per-row, so the kernel stays bilinear after normalising the rows).  A sum over layers is a sum of
such terms.

What runs where
===============

The clean side (``P`` : C×d, ``G`` : C×k×d, O(M·C·d) / O(M·C·k·d) once per call) is built with torch
GEMMs in fp32 by the launcher (``backend.py``): ``P = Aᵀ(s∘Z~)``, ``G = Σ_j A_jc s_j F_j ⊗ Z~_j`` with
``A_jc = 1/M_c·[u_j = c]`` (absent classes get all-zero prototypes, hence ``S = 0`` columns).  This
torch pre-pass does hold one fp32 copy of ``Z~`` (M×d — the same buffer the fp32 upcast of half inputs
needs anyway): centring before the class sums avoids the cancellation of ``AᵀZ − (Aᵀ1) muᵀ``.  The
B-side — the part that scales with the batch — is the Triton kernels below; they centre ``X`` in
registers (subtract ``mu`` from the loaded tile in fp32; no cancellation, see ``pairwise.py``) and
accumulate in fp32.  Prototypes are fp32, so ``X~`` stays fp32 in the product (fp16/bf16 inputs are upcast on load):
the B·C·d work is small next to the pairwise strategy's, and rounding fp32 prototypes to half would
cost accuracy for no real gain.  ``tl.dot`` follows ``torch.get_float32_matmul_precision()``.

* ``prototype_feature_kernel``: grid ``(cdiv(B, BLOCK_B), cdiv(C, BLOCK_C))``; each program computes
  a ``BLOCK_B × BLOCK_C`` tile of ``X~ Pᵀ`` streaming ``d`` in ``BLOCK_D`` chunks.
* ``prototype_gradient_kernel``: grid ``(cdiv(B, BLOCK_B), C)``; the program for class c streams
  ``k`` in ``BLOCK_K`` chunks: ``T = X~ G_c[k-chunk]ᵀ`` (``BLOCK_B × BLOCK_K``, a loop over ``d``),
  then ``S_ic += Σ_a E_ia T_ia``.

Each layer writes its own slice of a (layers × B × C) buffer, summed by the launcher in a fixed order,
so every output element is written once and the result is repeatable.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def prototype_feature_kernel(
    # pointers: X (B×d), mu (d, fp32), batch row scales (B, fp32), prototypes P (C×d, fp32), out (B×C)
    x_ptr, mu_ptr, sb_ptr, p_ptr, out_ptr,
    # sizes
    B, C, D,
    # strides (row strides; the feature dimension is unit-stride)
    stride_x, stride_p, stride_out,
    # meta-parameters
    CENTER: tl.constexpr, COSINE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_b = offs_b < B
    mask_c = offs_c < C
    rows_b = offs_b.to(tl.int64)
    rows_c = offs_c.to(tl.int64)
    acc = tl.zeros((BLOCK_B, BLOCK_C), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        x = tl.load(x_ptr + rows_b[:, None] * stride_x + offs_d[None, :],
                    mask=mask_b[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
        if CENTER:
            mu = tl.load(mu_ptr + offs_d, mask=mask_d, other=0.0)
            x = x - mu[None, :]
        p = tl.load(p_ptr + rows_c[:, None] * stride_p + offs_d[None, :],
                    mask=mask_c[:, None] & mask_d[None, :], other=0.0)
        acc = tl.dot(x, tl.trans(p), acc, input_precision=INPUT_PRECISION)
    if COSINE:
        sb = tl.load(sb_ptr + offs_b, mask=mask_b, other=0.0)
        acc = acc * sb[:, None]
    tl.store(out_ptr + rows_b[:, None] * stride_out + offs_c[None, :], acc,
             mask=mask_b[:, None] & mask_c[None, :])


@triton.jit
def prototype_gradient_kernel(
    # pointers: X (B×d), E (B×k), mu (d, fp32), batch row scales (B, fp32), G (C×k×d, fp32), out (B×C)
    x_ptr, e_ptr, mu_ptr, sb_ptr, g_ptr, out_ptr,
    # sizes
    B, C, D, K,
    # strides (row strides of X and E; G is contiguous)
    stride_x, stride_e, stride_out,
    # meta-parameters
    CENTER: tl.constexpr, COSINE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    pid_b = tl.program_id(0)
    c = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_b = offs_b < B
    rows_b = offs_b.to(tl.int64)
    g_base = g_ptr + c.to(tl.int64) * K * D
    s = tl.zeros((BLOCK_B,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        t = tl.zeros((BLOCK_B, BLOCK_K), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            mask_d = offs_d < D
            x = tl.load(x_ptr + rows_b[:, None] * stride_x + offs_d[None, :],
                        mask=mask_b[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
            if CENTER:
                mu = tl.load(mu_ptr + offs_d, mask=mask_d, other=0.0)
                x = x - mu[None, :]
            g = tl.load(g_base + offs_k.to(tl.int64)[:, None] * D + offs_d[None, :],
                        mask=mask_k[:, None] & mask_d[None, :], other=0.0)
            t = tl.dot(x, tl.trans(g), t, input_precision=INPUT_PRECISION)
        e = tl.load(e_ptr + rows_b[:, None] * stride_e + offs_k[None, :],
                    mask=mask_b[:, None] & mask_k[None, :], other=0.0).to(tl.float32)
        s += tl.sum(e * t, axis=1)
    if COSINE:
        sb = tl.load(sb_ptr + offs_b, mask=mask_b, other=0.0)
        s = s * sb
    tl.store(out_ptr + rows_b * stride_out + c, s, mask=mask_b)
