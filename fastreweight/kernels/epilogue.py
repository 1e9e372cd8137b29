"""Row epilogues: the FBR label-signed score (SPEC §3.4) and the clipped Reweighter update (§3.6).

FBR score
=========

Given the class similarity ``S`` (B×C, fp32), the batch labels ``y`` and the class counts ``M_c``
(a class is *present* when ``M_c > 0``), each row i gets

    d_i = (S_{i,y_i} − b_i) − alpha · Σ_{c ≠ y_i, M_c > 0} (S_ic − b_i)

with the row shift ``b_i``:

* ``"max"``    — ``max_{c ≠ y_i, present} S_ic``;
* ``"mean"``   — ``mean_{c ≠ y_i, present} S_ic`` (0 when there is no competitor);
* ``"second"`` — the second-largest ``S_ic`` over the present classes, own label included (the
  largest when ``C == 1``, as ``torch.topk(k=min(2, C))`` gives);
* ``"none"``   — 0;

and a shift that does not exist (no competitor: ``±inf``) counts as 0.  Rows whose label is outside
``[0, C)`` or whose class is absent from the clean subset get 0.  This is exactly
``reference.fbr_from_similarity``.

Tiling: one program owns ``BLOCK_R`` whole rows and streams over the classes in ``BLOCK_C`` chunks
(any ``C``).  A first pass keeps the running statistics per row — competitor max, competitor sum and
count, and the top two present values (merged chunk by chunk: the top two of a union are
``max(a1, b1)`` and ``max(min(a1, b1), a2, b2)``).  When ``alpha != 0`` a second pass sums
``S_ic − b_i`` over the competitors, subtracting the shift element by element as the reference does
(rather than ``Σ S − n·b``, which cancels).  ``S`` is B×C, small and hot in L2, so two passes are cheap.

Reweighter update
=================

    r^_i = r_i / (mean_batch |r| + eps)    (normalize_update="mean_abs"; r^ = r for "none")
    w[idx_i] <- clip(w[idx_i] + lr · r^_i, 0, 1)

One program per ``BLOCK`` batch rows.  Each program first reduces ``Σ|r|`` over the *whole* batch in
the same fixed order (every program gets the identical value: no atomics, no second launch; the batch
is small, so the redundant reads are L2 hits), then gathers its rows' weights, updates and scatters
them back and also writes the batch's new weights.  Computed in the weights' dtype (fp32 or fp64).
Indices are assumed distinct within a batch (with duplicates one of the updates wins, as with
``weights[idx] = new`` in PyTorch).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import device_context

SHIFT_CODES = {"none": 0, "max": 1, "mean": 2, "second": 3}


@triton.jit
def fbr_score_kernel(
    # pointers
    s_ptr, y_ptr, counts_ptr, out_ptr,
    # sizes
    B, C,
    # strides
    stride_s,
    # scalars
    alpha,
    # meta-parameters
    SHIFT: tl.constexpr, HAS_ALPHA: tl.constexpr, TOP1: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = rows < B
    rows64 = rows.to(tl.int64)
    y = tl.load(y_ptr + rows, mask=mask_r, other=-1)
    valid_y = (y >= 0) & (y < C)
    yc = tl.minimum(tl.maximum(y, 0), C - 1)
    own = tl.load(s_ptr + rows64 * stride_s + yc, mask=mask_r, other=0.0)
    own_present = tl.load(counts_ptr + yc, mask=mask_r, other=0) > 0

    neg_inf = float("-inf")
    cmax = tl.full((BLOCK_R,), neg_inf, tl.float32)
    top1 = tl.full((BLOCK_R,), neg_inf, tl.float32)
    top2 = tl.full((BLOCK_R,), neg_inf, tl.float32)
    csum = tl.zeros((BLOCK_R,), tl.float32)
    ccount = tl.zeros((BLOCK_R,), tl.int32)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask_c = cols < C
        present = tl.load(counts_ptr + cols, mask=mask_c, other=0) > 0
        s = tl.load(s_ptr + rows64[:, None] * stride_s + cols[None, :],
                    mask=mask_r[:, None] & mask_c[None, :], other=0.0)
        comp = present[None, :] & (cols[None, :] != yc[:, None])
        if SHIFT == 1:
            cmax = tl.maximum(cmax, tl.max(tl.where(comp, s, neg_inf), axis=1))
        if SHIFT == 2:
            csum += tl.sum(tl.where(comp, s, 0.0), axis=1)
            ccount += tl.sum(comp.to(tl.int32), axis=1)
        if SHIFT == 3:
            v = tl.where(present[None, :], s, neg_inf)
            b1 = tl.max(v, axis=1)
            is_top = v == b1[:, None]
            n_top = tl.sum(is_top.to(tl.int32), axis=1)
            b2 = tl.where(n_top > 1, b1, tl.max(tl.where(is_top, neg_inf, v), axis=1))
            new1 = tl.maximum(top1, b1)
            top2 = tl.maximum(tl.minimum(top1, b1), tl.maximum(top2, b2))
            top1 = new1

    if SHIFT == 0:
        b = tl.zeros((BLOCK_R,), tl.float32)
    elif SHIFT == 1:
        b = cmax
    elif SHIFT == 2:
        b = csum / tl.maximum(ccount, 1).to(tl.float32)
    else:
        if TOP1:
            b = top1
        else:
            b = top2
    b = tl.where((b == b) & (tl.abs(b) < float("inf")), b, 0.0)

    d = own - b
    if HAS_ALPHA:
        t = tl.zeros((BLOCK_R,), tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            mask_c = cols < C
            present = tl.load(counts_ptr + cols, mask=mask_c, other=0) > 0
            s = tl.load(s_ptr + rows64[:, None] * stride_s + cols[None, :],
                        mask=mask_r[:, None] & mask_c[None, :], other=0.0)
            comp = present[None, :] & (cols[None, :] != yc[:, None])
            t += tl.sum(tl.where(comp, s - b[:, None], 0.0), axis=1)
        d = d - alpha * t
    d = tl.where(valid_y & own_present, d, 0.0)
    tl.store(out_ptr + rows, d, mask=mask_r)


@triton.jit
def reweighter_step_kernel(
    # pointers: dataset weights (N), batch indices (B, int64), scores (B), new batch weights (B),
    # and the scalars [lr, eps] in the weights' dtype
    w_ptr, idx_ptr, r_ptr, new_ptr, params_ptr,
    # sizes
    B,
    # meta-parameters
    NORMALIZE: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    lr = tl.load(params_ptr)
    eps = tl.load(params_ptr + 1)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < B
    r = tl.load(r_ptr + offs, mask=mask, other=0.0)
    if NORMALIZE:
        tot = tl.zeros((BLOCK,), dtype=r.dtype)
        for s0 in range(0, B, BLOCK):
            o = s0 + tl.arange(0, BLOCK)
            tot += tl.abs(tl.load(r_ptr + o, mask=o < B, other=0.0))
        mean_abs = tl.sum(tot, axis=0) / B
        r = r / (mean_abs + eps)
    idx = tl.load(idx_ptr + offs, mask=mask, other=0)
    w = tl.load(w_ptr + idx, mask=mask, other=0.0)
    new = w + lr * r
    new = tl.minimum(tl.maximum(new, 0.0), 1.0)
    tl.store(w_ptr + idx, new, mask=mask)
    tl.store(new_ptr + offs, new, mask=mask)


_PARAMS: dict = {}


def _step_params(lr: float, eps: float, dtype, device):
    """(lr, eps) as a device tensor in the weights' dtype (a pointer argument keeps float64 exact, where
    a scalar kernel argument would be fp32), cached: a host-to-device copy from pageable memory on every
    step can stall the host on the stream."""
    key = (lr, eps, dtype, device)
    t = _PARAMS.get(key)
    if t is None:
        if len(_PARAMS) > 64:
            _PARAMS.clear()
        t = _PARAMS[key] = torch.tensor([lr, eps], dtype=dtype, device=device)
    return t


def reweighter_step(weights, idx, scores, lr: float, normalize_update: str = "mean_abs", eps: float = 1e-12):
    """``w[idx] <- clip(w[idx] + lr · r^, 0, 1)`` in place on ``weights``; returns the batch's new weights.

    ``weights``: the dataset's weight state (1-D, contiguous, float32 or float64); ``idx``: the batch's
    dataset indices (distinct, in range — validated by the caller); ``scores``: the batch's scores
    (cast to the weights' dtype); ``normalize_update``: ``"mean_abs"`` (``r^ = r / (mean|r| + eps)``)
    or ``"none"``.  Matches ``reference.reweighter_update`` followed by ``weights[idx] = new``.
    """
    if normalize_update not in ("mean_abs", "none"):
        raise ValueError(f"normalize_update must be one of ['mean_abs', 'none'], got {normalize_update!r}")
    if weights.dim() != 1 or not weights.is_contiguous() or weights.dtype not in (torch.float32, torch.float64):
        raise ValueError("weights must be a contiguous 1-D float32 or float64 tensor")
    B = scores.shape[0]
    idx = idx.to(device=weights.device, dtype=torch.int64).contiguous()
    r = scores.to(device=weights.device, dtype=weights.dtype).contiguous()
    new = torch.empty((B,), dtype=weights.dtype, device=weights.device)
    if B == 0:
        return new
    params = _step_params(float(lr), float(eps), weights.dtype, weights.device)
    block = max(16, min(1024, triton.next_power_of_2(B)))
    with device_context(weights.device):
        reweighter_step_kernel[(triton.cdiv(B, block),)](
            weights, idx, r, new, params,
            B,
            NORMALIZE=(normalize_update == "mean_abs"), BLOCK=block,
        )
    return new
