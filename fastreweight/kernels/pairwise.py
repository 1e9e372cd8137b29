"""Streamed pairwise class similarity (SPEC §3.1–3.3, §4 "pairwise").

The math
========

For a batch of ``B`` training rows and ``M`` clean rows, and up to four *layers* ``l``, the pair kernel
is

    K_ij = Σ_l  s^B_l,i · s^M_l,j · <X_l,i − mu_l, Z_l,j − mu_l> · <E_l,i, F_l,j>

where the second factor ``<E, F>`` is present only for the gradient kernel, ``mu_l`` is the clean mean
(``center="clean"``; absent for ``center="none"``) and the row scales ``s`` are 1, or for
``normalize="cosine"`` the product of the reciprocal norms of the *centred* rows of each factor
(``s^B_i = 1/||X~_i|| · 1/||E_i||``, 0 for an all-zero row, exactly like ``reference._rownorm_scale``;
they are computed by the small pre-pass kernel ``rownorm_scale_kernel`` below).  The class similarity is

    S_ic = (1/M_c) Σ_{j: u_j = c} K_ij .

``K`` (B×M) is never stored: it exists one ``BLOCK_B × BLOCK_M`` register tile at a time.

Centering
=========

Neither ``X~`` nor ``Z~`` is ever stored.  Which of the two fused forms is used depends on the operand
type, choosing the numerically better one for each (``CENTER`` meta-parameter of ``_gram_tile``):

* **fp32 inputs — subtract in registers** (``CENTER=1``): ``mu`` (fp32) is subtracted from every loaded
  ``X`` / ``Z`` tile before it enters ``tl.dot``.  This costs one subtraction per loaded element and
  gives the error of an fp32 GEMM on already-centred data, as the reference.  The rank-1 corrections
  ``<X,Z> − <X,mu> − <mu,Z> + <mu,mu>`` would instead subtract large, nearly equal numbers whenever
  ``|mu|`` dominates the spread of the features (typical for post-ReLU activations) and lose a factor
  ``|X||Z| / |X~||Z~|`` of precision.  ``tl.dot`` on fp32 operands follows
  ``torch.get_float32_matmul_precision()`` (``"highest"`` → ``input_precision="ieee"``, else ``"tf32"``).
* **fp16/bf16 inputs — rank-1 corrections** (``CENTER=2``): here the product must run on the raw
  half-precision tiles to use the half-precision tensor cores, and a centred tile would have to be
  rounded back to fp16/bf16 first — an error of 2^-11 (fp16) / 2^-8 (bf16) *relative to the centred
  values*, thousands of times the fp32 error of the reference (which centres in fp32).  Products of two
  half values are exact in fp32, so ``<X, Z>`` accumulated in fp32 is as accurate as an fp32 GEMM; the
  corrections are per-row scalars, ``xa_i = <X_i, mu>`` and ``zb_j = <Z_j, mu> − <mu, mu>``, computed
  once in fp32 by the pre-pass ``row_dot_kernel`` (``zb`` depends on the clean side only and is
  memoised with it), and applied to the finished tile: ``K~_ij = <X_i, Z_j> − xa_i − zb_j``.  The
  cancellation costs the factor ``|X||Z| / |X~||Z~|`` on top of fp32 rounding (2^-24) — far below the
  2^-11 of re-rounding.  Keeping the corrections out of the ``d`` loop leaves that loop a pure
  ``tl.dot`` (``wgmma`` on Hopper) over pipelined tiles: accumulating them inside it from the loaded
  tiles (an earlier version) put shared-memory reads, conversions and FMAs next to every ``wgmma``.

The second factor (``E``, ``F``) is never centred.

Class aggregation (segmented)
=============================

The launcher sorts the clean rows by class once (a stable ``argsort`` of the labels, O(M log M); labels
outside ``[0, C)`` are dropped) and builds ``row_off`` (C+1), the start of each class in that order.
A *class tile* ``[c0, c0 + BLOCK_C)`` then owns the contiguous run of sorted clean rows
``[row_off[c0], row_off[c0 + BLOCK_C])``, so

* the grid is ``(cdiv(B, BLOCK_B), cdiv(C, BLOCK_C), SPLIT)``;
* program ``(pb, pc, ps)`` streams only the clean rows of its class tile (the ``ps``-th of ``SPLIT``
  equal chunks of them), gathering them through the permutation — every pair (i, j) is formed exactly
  once over the whole grid, however large ``C`` is (no recomputation of ``K`` per class tile);
* inside the program the ``BLOCK_B × BLOCK_M`` tile of ``K`` is aggregated into the ``BLOCK_B × BLOCK_C``
  fp32 accumulator in one of two exact ways (``AGG`` meta-parameter, chosen by the launcher):

  - ``AGG=1``, segment sums: the tile's rows are sorted by class, so it holds the classes
    ``lab[first] .. lab[last]``; for each of them a masked row sum of the ``K`` tile is added to that
    class's column.  Cost per class ≈ one pass over the tile in registers — cheap when a tile spans
    few classes, i.e. when classes are large (the launcher uses it when ``M ≥ 32·C``: at most about
    five classes per 128-row tile on average).
  - ``AGG=0``, one-hot product: one ``tl.dot`` of the tile against the ``BLOCK_M × BLOCK_C`` class
    one-hot of its rows (each row hits one column), for many small classes.  The one-hot is exact in
    every format, so only the rounding of the fp32 ``K`` tile matters; this fp32 ``tl.dot`` follows
    the float32 matmul precision (``AGG_PRECISION``: ``ieee`` under ``"highest"``, else ``tf32``).
    Under ``"highest"`` it runs on the FMA units (``BLOCK_B·BLOCK_M·BLOCK_C`` FMAs per tile: 2048
    FFMA per thread for 128×128×32 tiles in the sm_90a SASS), which is why segment sums are preferred
    wherever classes are large; ``tf32x3`` would keep it on tensor cores, but ptxas (sm_90a) showed it
    spilling 1.5–7 KB per thread in the gradient kernel.

  ``1/M_c`` is applied once at the end.

Every output element is written exactly once by one program (no atomics, no read-modify-write), so the
result is bit-for-bit repeatable for a fixed configuration.  ``SPLIT > 1`` (chosen by the launcher when
``B`` and ``C`` alone give too few programs to fill the GPU) writes ``SPLIT`` partial results that the
launcher sums in a fixed order.

Tiling and memory
=================

Per clean tile and layer the program runs the Gram of the feature factor (a loop over ``d`` in
``BLOCK_D`` chunks) and, for the gradient kernel, of the second factor (loop over ``k`` in
``BLOCK_K``), multiplies them elementwise, scales by the cosine row scales, and sums over layers.
Row offsets are formed in int64 (``row · stride`` can pass 2^31 for large ``B·d``).  Inputs are read
through their row stride; the launcher copies a factor once only when its feature dimension is not
unit-stride.
"""
from __future__ import annotations

import triton
import triton.language as tl

MAX_LAYERS = 4


# ---------------------------------------------------------------------------------------------
# pre-pass: reciprocal norms of (optionally centred) rows, for normalize="cosine"
# ---------------------------------------------------------------------------------------------
@triton.jit
def rownorm_scale_kernel(
    # pointers
    a_ptr, mu_ptr, out_ptr,
    # sizes
    R, D,
    # strides
    stride_a,
    # meta-parameters
    CENTER: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out_r = 1/||a_r − mu|| (0 for an all-zero row), accumulated in fp32."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = rows < R
    rows64 = rows.to(tl.int64)
    ss = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        a = tl.load(a_ptr + rows64[:, None] * stride_a + offs_d[None, :],
                    mask=mask_r[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
        if CENTER:
            mu = tl.load(mu_ptr + offs_d, mask=mask_d, other=0.0)
            a = tl.where(mask_d[None, :], a - mu[None, :], 0.0)
        ss += tl.sum(a * a, axis=1)
    norm = tl.sqrt(ss)
    scale = tl.where(norm > 0, 1.0 / tl.maximum(norm, 1.1754943508222875e-38), 0.0)
    tl.store(out_ptr + rows, scale, mask=mask_r)


@triton.jit
def row_dot_kernel(
    # pointers
    a_ptr, mu_ptr, out_ptr,
    # sizes
    R, D,
    # strides
    stride_a,
    # meta-parameters
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out_r = <a_r, mu>, accumulated in fp32 (the CENTER=2 corrections)."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = rows < R
    rows64 = rows.to(tl.int64)
    acc = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        a = tl.load(a_ptr + rows64[:, None] * stride_a + offs_d[None, :],
                    mask=mask_r[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
        mu = tl.load(mu_ptr + offs_d, mask=mask_d, other=0.0)
        acc += tl.sum(a * mu[None, :], axis=1)
    tl.store(out_ptr + rows, acc, mask=mask_r)


# ---------------------------------------------------------------------------------------------
# the streamed pairwise kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _gram_tile(
    a_ptr, b_ptr, mu_ptr, xa_ptr, zb_ptr,
    D, stride_a, stride_b,
    rows_a, rows_b, mask_a, mask_b,
    CENTER: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_BB: tl.constexpr, BLOCK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    """<a_i − mu, b_j − mu> for a BLOCK_A × BLOCK_BB tile (rows_* are int64 row indices).

    CENTER: 0 = no centering; 1 = subtract mu from the loaded tiles in fp32 registers (fp32 operands);
    2 = rank-1 corrections ``xa`` (per ``a`` row) and ``zb`` (per ``b`` row) applied to the product of
    the raw half-precision tiles (see module doc).
    """
    acc = tl.zeros((BLOCK_A, BLOCK_BB), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        a = tl.load(a_ptr + rows_a[:, None] * stride_a + offs_d[None, :],
                    mask=mask_a[:, None] & mask_d[None, :], other=0.0)
        b = tl.load(b_ptr + rows_b[:, None] * stride_b + offs_d[None, :],
                    mask=mask_b[:, None] & mask_d[None, :], other=0.0)
        if CENTER == 1:
            mu = tl.load(mu_ptr + offs_d, mask=mask_d, other=0.0)
            a = a - mu[None, :]
            b = b - mu[None, :]
        acc = tl.dot(a, tl.trans(b), acc, input_precision=INPUT_PRECISION)
    if CENTER == 2:
        xa = tl.load(xa_ptr + rows_a, mask=mask_a, other=0.0)
        zb = tl.load(zb_ptr + rows_b, mask=mask_b, other=0.0)
        acc = (acc - xa[:, None]) - zb[None, :]
    return acc


@triton.jit
def _layer_tile(
    x_ptr, z_ptr, e_ptr, f_ptr, mu_ptr, sb_ptr, sm_ptr, xa_ptr, zb_ptr,
    D, K, stride_x, stride_z, stride_e, stride_f,
    rows_b, rows_m, mask_b, mask_m,
    GRAD: tl.constexpr, CENTER: tl.constexpr, COSINE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    """One layer's contribution to the K tile: s^B_i s^M_j <X~_i, Z~_j> (· <E_i, F_j>)."""
    g = _gram_tile(x_ptr, z_ptr, mu_ptr, xa_ptr, zb_ptr, D, stride_x, stride_z, rows_b, rows_m, mask_b, mask_m,
                   CENTER, BLOCK_B, BLOCK_M, BLOCK_D, INPUT_PRECISION)
    if GRAD:
        h = _gram_tile(e_ptr, f_ptr, mu_ptr, xa_ptr, zb_ptr, K, stride_e, stride_f, rows_b, rows_m, mask_b, mask_m,
                       0, BLOCK_B, BLOCK_M, BLOCK_K, INPUT_PRECISION)
        g = g * h
    if COSINE:
        sb = tl.load(sb_ptr + rows_b, mask=mask_b, other=0.0)
        sm = tl.load(sm_ptr + rows_m, mask=mask_m, other=0.0)
        g = g * sb[:, None] * sm[None, :]
    return g


@triton.jit
def pairwise_similarity_kernel(
    # pointers: per layer the factors X (B×d), Z (M×d), E (B×k), F (M×k), the centering mean mu (d,
    # fp32), the cosine row scales of the batch side (B) and the clean side (M), and the centering
    # corrections of CENTER=2, xa = X·mu (B) and zb = Z·mu − mu·mu (M), fp32
    x0, z0, e0, f0, mu0, sb0, sm0, xa0, zb0,
    x1, z1, e1, f1, mu1, sb1, sm1, xa1, zb1,
    x2, z2, e2, f2, mu2, sb2, sm2, xa2, zb2,
    x3, z3, e3, f3, mu3, sb3, sm3, xa3, zb3,
    # pointers: clean rows sorted by class (perm: original row, lab: its class), class starts in
    # that order (C+1), class weights 1/M_c (C, fp32), output (SPLIT × B × C, fp32)
    perm_ptr, lab_ptr, row_off_ptr, cw_ptr, out_ptr,
    # sizes
    B, C, SPLIT,
    D0, K0, D1, K1, D2, K2, D3, K3,
    # strides (row strides; the feature dimension is unit-stride)
    sx0, sz0, se0, sf0,
    sx1, sz1, se1, sf1,
    sx2, sz2, se2, sf2,
    sx3, sz3, se3, sf3,
    stride_out_split, stride_out_b,
    # meta-parameters
    NUM_LAYERS: tl.constexpr, GRAD: tl.constexpr, CENTER: tl.constexpr, COSINE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, AGG: tl.constexpr, AGG_PRECISION: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_s = tl.program_id(2)

    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_b = offs_b < B
    rows_b = offs_b.to(tl.int64)
    offs_c = tl.arange(0, BLOCK_C)
    c0 = pid_c * BLOCK_C
    c1 = tl.minimum(c0 + BLOCK_C, C)

    # the sorted clean rows of this class tile, and this program's share of them
    r_lo = tl.load(row_off_ptr + c0)
    r_hi = tl.load(row_off_ptr + c1)
    chunk = tl.cdiv(tl.cdiv(r_hi - r_lo, SPLIT), BLOCK_M) * BLOCK_M
    s_lo = r_lo + pid_s * chunk
    s_hi = tl.minimum(r_hi, s_lo + chunk)

    acc = tl.zeros((BLOCK_B, BLOCK_C), dtype=tl.float32)
    for m0 in range(s_lo, s_hi, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < s_hi
        rows_m = tl.load(perm_ptr + offs_m, mask=mask_m, other=0).to(tl.int64)
        lab = tl.load(lab_ptr + offs_m, mask=mask_m, other=-1)

        k_tile = _layer_tile(x0, z0, e0, f0, mu0, sb0, sm0, xa0, zb0, D0, K0, sx0, sz0, se0, sf0,
                             rows_b, rows_m, mask_b, mask_m, GRAD, CENTER, COSINE,
                             BLOCK_B, BLOCK_M, BLOCK_D, BLOCK_K, INPUT_PRECISION)
        if NUM_LAYERS > 1:
            k_tile += _layer_tile(x1, z1, e1, f1, mu1, sb1, sm1, xa1, zb1, D1, K1, sx1, sz1, se1, sf1,
                                  rows_b, rows_m, mask_b, mask_m, GRAD, CENTER, COSINE,
                                  BLOCK_B, BLOCK_M, BLOCK_D, BLOCK_K, INPUT_PRECISION)
        if NUM_LAYERS > 2:
            k_tile += _layer_tile(x2, z2, e2, f2, mu2, sb2, sm2, xa2, zb2, D2, K2, sx2, sz2, se2, sf2,
                                  rows_b, rows_m, mask_b, mask_m, GRAD, CENTER, COSINE,
                                  BLOCK_B, BLOCK_M, BLOCK_D, BLOCK_K, INPUT_PRECISION)
        if NUM_LAYERS > 3:
            k_tile += _layer_tile(x3, z3, e3, f3, mu3, sb3, sm3, xa3, zb3, D3, K3, sx3, sz3, se3, sf3,
                                  rows_b, rows_m, mask_b, mask_m, GRAD, CENTER, COSINE,
                                  BLOCK_B, BLOCK_M, BLOCK_D, BLOCK_K, INPUT_PRECISION)

        if AGG == 1:
            # segment sums over the classes this tile spans (its rows are sorted by class)
            lo = tl.min(tl.where(mask_m, lab, C), axis=0)
            hi = tl.max(lab, axis=0)  # masked rows hold -1
            for cc in range(lo, hi + 1):
                part = tl.sum(tl.where((lab == cc)[None, :], k_tile, 0.0), axis=1)
                acc += tl.where(offs_c[None, :] == (cc - c0), part[:, None], 0.0)
        else:
            # one-hot of the tile's classes relative to the class tile (masked rows: -1)
            onehot = tl.where((lab[:, None] - c0) == offs_c[None, :], 1.0, 0.0).to(tl.float32)
            acc = tl.dot(k_tile, onehot, acc, input_precision=AGG_PRECISION)

    cls = c0 + offs_c
    mask_c = cls < C
    w = tl.load(cw_ptr + cls, mask=mask_c, other=0.0)
    acc = acc * w[None, :]
    out = out_ptr + pid_s.to(tl.int64) * stride_out_split + rows_b[:, None] * stride_out_b + cls[None, :]
    tl.store(out, acc, mask=mask_b[:, None] & mask_c[None, :])
