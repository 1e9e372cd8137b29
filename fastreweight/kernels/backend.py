"""The ``"triton"`` backend: launchers and dispatch for the kernels of this package.

Interface (see ``fastreweight/backends.py``): ``unavailable_reason``, ``unsupported_reason``,
``class_similarity`` and the fused ``fbr_scores``; ``reweighter_step`` (from ``epilogue.py``) is
re-exported here.

* ``strategy="pairwise"`` → ``pairwise.pairwise_similarity_kernel`` (one launch for up to
  ``MAX_LAYERS`` layers; cosine row scales from ``pairwise.rownorm_scale_kernel``).
* ``strategy="prototype"`` → clean-side prototypes with torch GEMMs, then the B-side kernels of
  ``prototype.py`` (any number of layers, one launch per layer).
* ``fbr_scores`` → ``class_similarity`` then ``epilogue.fbr_score_kernel``.

Inputs: fp32, fp16 and bf16, accumulated in fp32 (float64 is refused by ``unsupported_reason``, so
``backend="auto"`` falls back to an fp64-capable backend).  Strided inputs are read through their row
stride; a factor whose feature dimension is not unit-stride is copied once (``.contiguous()``).

Configurations
==============

On a GPU the pairwise kernel is autotuned over ``HOPPER_CONFIGS`` (keyed by the batch size, the class
count, the feature sizes of the first layer, the number of layers and the kernel kind; a training run
has one batch size, plus at most one for a last partial batch).  Autotuning picks the
fastest configuration on the first call per key, and different configurations sum in different orders,
so for bit-repeatable runs (tests, experiments) use a fixed configuration: set the environment variable
``FASTREWEIGHT_TRITON_AUTOTUNE=0``, or wrap the calls in ``with fixed_config(): ...`` (optionally with
block-size overrides, e.g. ``fixed_config(BLOCK_B=32, SPLIT=2)``).  Under the Triton interpreter
(``TRITON_INTERPRET=1``) the fixed configuration is always used.

Outputs are allocated uninitialised (``torch.empty``); the tests prove that the kernels write every
element by running under PyTorch's ``torch.utils.deterministic.fill_uninitialized_memory`` (NaN-filled
allocations).
"""
from __future__ import annotations

import contextlib
import os

import torch

from .utils import device_context, pow2

try:  # the backend must import (and say why it cannot run) even where triton is missing
    import triton
    _TRITON_ERROR = None
except Exception as exc:  # pragma: no cover - exercised only without triton
    triton = None
    _TRITON_ERROR = f"{type(exc).__name__}: {exc}"

if triton is not None:
    from . import epilogue, pairwise, prototype
    from .epilogue import reweighter_step  # noqa: F401  (re-exported)
    from .pairwise import MAX_LAYERS

    # whether the @triton.jit kernels above were created as interpreted functions: triton decides by
    # TRITON_INTERPRET at decoration time, i.e. when this package was first imported
    try:
        _INTERPRETED = bool(triton.knobs.runtime.interpret)
    except AttributeError:  # pragma: no cover - older triton
        _INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
else:  # pragma: no cover
    MAX_LAYERS = 4
    _INTERPRETED = False

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BF16_INTERPRETER_REASON = (
    "bfloat16 tl.dot gives wrong results under the Triton interpreter "
    "(triton-lang/triton#11584, 'not supported yet'); run bf16 on a CUDA device"
)

# ---------------------------------------------------------------------------------------------
# configurations
# ---------------------------------------------------------------------------------------------
# Hopper (H100/H200: 132 SMs, 228 KB shared memory per SM, wgmma on warp groups of 4 warps):
# * BLOCK_B is a multiple of 64 so that each warp group issues full m64 wgmma instructions; 128-row
#   tiles with 8 warps (two warp groups) halve the re-reads of the clean tile per batch row;
# * BLOCK_M 64/128: the K tile (BLOCK_B × BLOCK_M fp32) lives in registers together with one Gram
#   temporary per factor and the BLOCK_B × BLOCK_C accumulator, so 128-wide tiles need 8 warps;
# * BLOCK_D 32–64 with 2–4 pipeline stages (cp.async into shared memory): a stage holds
#   (BLOCK_B + BLOCK_M)·BLOCK_D operands, e.g. (128+128)·64·2 B = 32 KB in fp16, so 2–4 stages fit;
# * BLOCK_K (second factor, often small: the number of classes) 32/64;
# * the last, small configuration is for fp32 inputs under matmul precision "highest": their ieee
#   tl.dot runs on the FMA units with operands in registers, and ptxas (sm_90a) showed every larger
#   configuration spilling there (0.4–1.4 KB), while 64×32×16 needs 224 registers and no spills.
# All compile for sm_90a without spills in the bf16 feature kernel (benchmarks/inspect_sm90.py, a slow
# test); the first six were autotuned on an H100 on 2026-11-26 (which one won was not recorded), the
# last two were added afterwards and are not yet timed.
HOPPER_CONFIGS = (
    dict(BLOCK_B=64, BLOCK_M=64, BLOCK_D=64, BLOCK_K=32, num_warps=4, num_stages=3),
    dict(BLOCK_B=128, BLOCK_M=64, BLOCK_D=64, BLOCK_K=32, num_warps=8, num_stages=3),
    dict(BLOCK_B=64, BLOCK_M=128, BLOCK_D=32, BLOCK_K=32, num_warps=8, num_stages=4),
    dict(BLOCK_B=128, BLOCK_M=128, BLOCK_D=32, BLOCK_K=32, num_warps=8, num_stages=3),
    dict(BLOCK_B=128, BLOCK_M=128, BLOCK_D=64, BLOCK_K=64, num_warps=8, num_stages=2),
    dict(BLOCK_B=64, BLOCK_M=32, BLOCK_D=16, BLOCK_K=16, num_warps=4, num_stages=2),
    # deeper pipelines for the segment-sum aggregation (no spills on sm_90a: 229 / 234 registers,
    # 128 / 192 KB shared memory; benchmarks/inspect_sm90.py); 128×256 and 256×128 tiles spill
    dict(BLOCK_B=128, BLOCK_M=128, BLOCK_D=64, BLOCK_K=32, num_warps=8, num_stages=4),
    dict(BLOCK_B=128, BLOCK_M=128, BLOCK_D=128, BLOCK_K=32, num_warps=8, num_stages=3),
)

# The fixed configuration (tests, FASTREWEIGHT_TRITON_AUTOTUNE=0, the interpreter).  Small tiles under
# the interpreter keep the CPU emulation cheap and still cover several tiles on small test shapes.
_FIXED_GPU = dict(BLOCK_B=64, BLOCK_M=64, BLOCK_D=32, BLOCK_K=32, BLOCK_C=None, SPLIT=None, AGG=None, num_warps=4,
                  num_stages=2)
_FIXED_INTERP = dict(BLOCK_B=32, BLOCK_M=32, BLOCK_D=32, BLOCK_K=16, BLOCK_C=16, SPLIT=None, AGG=None, num_warps=4,
                     num_stages=1)

_fixed_override: list[dict] = []


@contextlib.contextmanager
def fixed_config(**overrides):
    """Use the fixed (non-autotuned) configuration inside the block, with optional overrides of
    BLOCK_B, BLOCK_M, BLOCK_D, BLOCK_K, BLOCK_C (powers of two ≥ 16), SPLIT, AGG (0: one-hot product,
    1: segment sums; default: chosen per call), num_warps, num_stages."""
    unknown = set(overrides) - set(_FIXED_GPU)
    if unknown:
        raise ValueError(f"fixed_config: unknown option(s) {sorted(unknown)}; known: {sorted(_FIXED_GPU)}")
    if overrides.get("AGG") not in (None, 0, 1):
        raise ValueError(f"fixed_config: AGG must be 0 (one-hot product), 1 (segment sums) or None, got {overrides['AGG']!r}")
    _fixed_override.append(overrides)
    try:
        yield
    finally:
        _fixed_override.pop()


def _use_autotune(device: torch.device) -> bool:
    return (
        device.type == "cuda"
        and not _INTERPRETED
        and not _fixed_override
        and os.environ.get("FASTREWEIGHT_TRITON_AUTOTUNE", "1") != "0"
    )


def _fixed(device: torch.device) -> dict:
    cfg = dict(_FIXED_INTERP if (_INTERPRETED or device.type != "cuda") else _FIXED_GPU)
    for o in _fixed_override:
        cfg.update(o)
    return cfg


def _input_precision() -> str:
    """fp32 tl.dot precision from torch's float32 matmul setting (ignored for fp16/bf16 operands)."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _rowmajor(t: torch.Tensor) -> torch.Tensor:
    """Unit stride along the feature dimension (copied once otherwise); the row stride is passed."""
    if t.dim() == 2 and t.shape[1] > 1 and t.stride(1) != 1:
        return t.contiguous()
    return t


# ---------------------------------------------------------------------------------------------
# backend interface
# ---------------------------------------------------------------------------------------------
def unavailable_reason(device) -> str | None:
    if triton is None:
        return f"triton could not be imported ({_TRITON_ERROR})"
    device = torch.device(device)
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return ("the triton backend needs a CUDA device, or TRITON_INTERPRET=1 to run its kernels on the CPU "
                    "(slowly) through the Triton interpreter")
        if not _INTERPRETED:
            return ("TRITON_INTERPRET=1 was set after fastreweight.kernels was imported; set it before the first "
                    "import of fastreweight.kernels (triton decides at @triton.jit time) to run on the CPU")
        return None
    return f"the triton backend runs on CUDA devices (or the CPU under TRITON_INTERPRET=1), not on {device.type!r}"


def unsupported_reason(problem, strategy: str) -> str | None:
    dt = problem.input_dtype
    if dt == torch.float64:
        return ("float64 inputs are not supported by the triton backend (it accumulates in fp32); "
                "use the reference or cuda backend")
    if dt not in SUPPORTED_DTYPES:
        return f"dtype {dt} is not supported by the triton backend (float32, float16, bfloat16)"
    if dt == torch.bfloat16 and _INTERPRETED:
        return BF16_INTERPRETER_REASON
    if strategy == "pairwise" and len(problem.layers) > MAX_LAYERS:
        return f"the triton pairwise kernel fuses at most {MAX_LAYERS} layers, got {len(problem.layers)}"
    if strategy not in ("pairwise", "prototype"):
        return f"unknown strategy {strategy!r}"
    return None


def class_similarity(problem, strategy: str) -> torch.Tensor:
    B, C = problem.batch_size, problem.num_classes
    if B == 0:
        return torch.zeros(B, C, dtype=torch.float32, device=problem.device)
    with device_context(problem.device):
        if strategy == "prototype":
            return _prototype_similarity(problem)
        return _pairwise_similarity(problem)


def fbr_scores(problem, strategy: str, shift: str, alpha: float) -> torch.Tensor:
    S = class_similarity(problem, strategy)
    return fbr_from_similarity(S, problem.y, problem.class_counts, shift, alpha)


def fbr_from_similarity(S: torch.Tensor, y: torch.Tensor, class_counts: torch.Tensor, shift: str, alpha: float) -> torch.Tensor:
    """The FBR epilogue kernel on a given S (B×C fp32): ``reference.fbr_from_similarity`` with
    ``present = class_counts > 0``."""
    if S.dtype != torch.float32:
        raise TypeError(f"S must be float32 for the triton epilogue, got {S.dtype}")
    if shift not in epilogue.SHIFT_CODES:
        raise ValueError(f"shift must be one of {list(epilogue.SHIFT_CODES)}, got {shift!r}")
    B, C = S.shape
    out = torch.empty((B,), dtype=torch.float32, device=S.device)
    if B == 0:
        return out
    if S.stride(1) != 1:
        S = S.contiguous()
    y = y.to(torch.int64).contiguous()
    with device_context(S.device):
        block_r = _fixed(S.device)["BLOCK_B"]
        block_c = pow2(C, 16, 128)
        epilogue.fbr_score_kernel[(triton.cdiv(B, block_r),)](
            S, y, class_counts.contiguous(), out,
            B, C,
            S.stride(0),
            float(alpha),
            SHIFT=epilogue.SHIFT_CODES[shift], HAS_ALPHA=(alpha != 0), TOP1=(C < 2),
            BLOCK_R=block_r, BLOCK_C=block_c,
        )
    return out


# ---------------------------------------------------------------------------------------------
# shared pre-passes
# ---------------------------------------------------------------------------------------------
def _row_pass(kernel, a: torch.Tensor, mu: torch.Tensor | None, **meta) -> torch.Tensor:
    """One fp32 value per row of ``a`` from a row pre-pass kernel of pairwise.py (32 rows per program,
    the feature dimension in chunks)."""
    R, D = a.shape
    out = torch.empty((R,), dtype=torch.float32, device=a.device)
    if R == 0:
        return out
    block_r = 32
    kernel[(triton.cdiv(R, block_r),)](
        a, mu if mu is not None else out, out,
        R, D,
        a.stride(0),
        BLOCK_R=block_r, BLOCK_D=pow2(D, 16, 128), **meta,
    )
    return out


def _row_scales(a: torch.Tensor, mu: torch.Tensor | None) -> torch.Tensor:
    """1/||a_r − mu|| per row (fp32; 0 for a zero row) — the cosine pre-pass."""
    return _row_pass(pairwise.rownorm_scale_kernel, a, mu, CENTER=mu is not None)


def _row_dots(a: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """<a_r, mu> per row (fp32) — the CENTER=2 correction pre-pass."""
    return _row_pass(pairwise.row_dot_kernel, a, mu)


def _clean_memo(problem, key, compute):
    """Clean-side quantities depend on the clean inputs only: memoised with them (problem.clean_memo,
    invalidated when a clean tensor changes), so a training loop that scores many batches against one
    clean set computes them once."""
    memo = problem.clean_memo
    full = ("triton",) + key
    if full not in memo:
        memo[full] = compute()
    return memo[full]


def _prepared_layers(problem, center_mode: int):
    """Per layer: (x, z, e, f, mu, sb, sm, xa, zb) with unit-stride features, fp32 mu, cosine row
    scales and, for ``center_mode == 2``, the centering corrections; the clean-side ones memoised."""
    out = []
    for i, layer in enumerate(problem.layers):
        # (the memo never holds the clean tensors themselves: it must not keep them alive)
        x, z = _rowmajor(layer.x), _rowmajor(layer.z)
        e = _rowmajor(layer.e) if layer.e is not None else None
        f = _rowmajor(layer.f) if layer.f is not None else None
        mu = layer.mu.to(torch.float32).contiguous() if layer.mu is not None else None
        sb = sm = xa = zb = None
        if problem.cosine:
            sb = _row_scales(x, mu)
            if e is not None:
                sb = sb * _row_scales(e, None)

            def clean_scales():
                v = _row_scales(z, mu)
                return v * _row_scales(f, None) if f is not None else v

            sm = _clean_memo(problem, ("sm", i), clean_scales)  # only built for cosine problems
        if center_mode == 2:
            xa = _row_dots(x, mu)
            zb = _clean_memo(problem, ("zb", i), lambda: _row_dots(z, mu) - (mu * mu).sum())
        out.append((x, z, e, f, mu, sb, sm, xa, zb))
    return out


def _class_sort(problem):
    """Clean rows sorted by class (stable; out-of-range labels dropped) and each class's start;
    memoised with the clean inputs."""

    def compute():
        C = problem.num_classes
        u = problem.clean_y
        valid = (u >= 0) & (u < C)
        key = torch.where(valid, u, torch.full_like(u, C))
        order = torch.argsort(key, stable=True)
        counts = problem.class_counts  # counts of the in-range labels per class
        row_off = torch.zeros(C + 1, dtype=torch.int64, device=u.device)
        row_off[1:] = torch.cumsum(counts, 0)
        return order.to(torch.int32), key[order].to(torch.int32), row_off.to(torch.int32)

    return _clean_memo(problem, ("class_sort",), compute)


# ---------------------------------------------------------------------------------------------
# pairwise
# ---------------------------------------------------------------------------------------------
_pairwise_tuned = None
_last_pairwise_config: dict = {}


def last_pairwise_config() -> dict:
    """The launch configuration of the last pairwise kernel call (block sizes, warps, stages, whether
    autotuned, the class-tile width, split and aggregation mode) — for benchmark records."""
    return dict(_last_pairwise_config)


def _pairwise_autotuned():
    global _pairwise_tuned
    if _pairwise_tuned is None:
        configs = [
            triton.Config({k: v for k, v in c.items() if k.startswith("BLOCK")},
                          num_warps=c["num_warps"], num_stages=c["num_stages"])
            for c in HOPPER_CONFIGS
        ]
        _pairwise_tuned = triton.autotune(
            configs=configs, key=["B", "C", "D0", "K0", "NUM_LAYERS", "GRAD", "COSINE", "CENTER", "AGG"]
        )(pairwise.pairwise_similarity_kernel)
    return _pairwise_tuned


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def _pairwise_similarity(problem) -> torch.Tensor:
    B, M, C = problem.batch_size, problem.num_clean, problem.num_classes
    device = problem.device
    grad = problem.gradient_kernel
    # centering: in registers for fp32 operands, rank-1 corrections for fp16/bf16 (pairwise.py doc)
    center = 0 if problem.layers[0].mu is None else (1 if problem.input_dtype == torch.float32 else 2)
    layers = _prepared_layers(problem, center)
    L = len(layers)
    perm, lab, row_off = _class_sort(problem)
    cw = problem.class_weight.to(torch.float32).contiguous()

    autotune = _use_autotune(device)
    cfg = _fixed(device)
    block_c = cfg["BLOCK_C"] or (16 if C <= 16 else 32)
    tiles_c = triton.cdiv(C, block_c)
    split = cfg["SPLIT"]
    if split is None:
        # too few (B-tile, class-tile) programs to fill the GPU: split each program's clean rows
        programs = triton.cdiv(B, 64) * tiles_c
        target = 2 * _num_sms(device)
        split = 1
        if programs < target and device.type == "cuda":
            split = max(1, min(triton.cdiv(target, programs), M // 256, 64))
    split = max(1, int(split))

    out = torch.empty((split, B, C), dtype=torch.float32, device=device)
    dummy = cw  # any fp32 tensor for pointer slots a configuration does not read
    args = []
    sizes = []
    strides = []
    for i in range(MAX_LAYERS):
        if i < L:
            x, z, e, f, mu, sb, sm, xa, zb = layers[i]
            ee = e if e is not None else x
            ff = f if f is not None else z
            args += [x, z, ee, ff] + [t if t is not None else dummy for t in (mu, sb, sm, xa, zb)]
            sizes += [x.shape[1], e.shape[1] if e is not None else 0]
            strides += [x.stride(0), z.stride(0), ee.stride(0), ff.stride(0)]
        else:
            x, z = layers[0][0], layers[0][1]
            args += [x, z, x, z, dummy, dummy, dummy, dummy, dummy]
            sizes += [0, 0]
            strides += [0, 0, 0, 0]
    prec = _input_precision()
    agg_prec = prec  # see pairwise.py, "Class aggregation": tf32x3 spills registers
    # aggregation: segment sums where a clean tile spans few classes (pairwise.py, "Class aggregation")
    agg = cfg["AGG"] if cfg["AGG"] is not None else (1 if M >= 32 * C else 0)
    meta = dict(NUM_LAYERS=L, GRAD=grad, CENTER=center, COSINE=problem.cosine, BLOCK_C=block_c,
                INPUT_PRECISION=prec, AGG=agg, AGG_PRECISION=agg_prec)
    call_args = (*args, perm, lab, row_off, cw, out, B, C, split, *sizes, *strides, out.stride(0), out.stride(1))
    if autotune:
        kern = _pairwise_autotuned()
        grid = lambda META: (triton.cdiv(B, META["BLOCK_B"]), tiles_c, split)  # noqa: E731
        kern[grid](*call_args, **meta)
        best = kern.best_config
        _last_pairwise_config.update(best.kwargs, num_warps=best.num_warps, num_stages=best.num_stages,
                                     autotuned=True)
    else:
        grid = (triton.cdiv(B, cfg["BLOCK_B"]), tiles_c, split)
        pairwise.pairwise_similarity_kernel[grid](
            *call_args, **meta,
            BLOCK_B=cfg["BLOCK_B"], BLOCK_M=cfg["BLOCK_M"], BLOCK_D=cfg["BLOCK_D"], BLOCK_K=cfg["BLOCK_K"],
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
        _last_pairwise_config.update({k: cfg[k] for k in ("BLOCK_B", "BLOCK_M", "BLOCK_D", "BLOCK_K", "num_warps",
                                                           "num_stages")}, autotuned=False)
    _last_pairwise_config.update(BLOCK_C=block_c, SPLIT=split, AGG=agg, CENTER=center)
    if split == 1:
        return out[0]
    return out.sum(dim=0)  # fixed-order reduction of the partial sums: repeatable


# ---------------------------------------------------------------------------------------------
# prototype
# ---------------------------------------------------------------------------------------------
_PROTO_CHUNK_ELEMS = 1 << 24


def _clean_weights(problem) -> torch.Tensor:
    """A (M×C, fp32): A_jc = 1/M_c if u_j = c (in range) else 0."""
    C = problem.num_classes
    u = problem.clean_y
    valid = (u >= 0) & (u < C)
    uc = u.clamp(0, C - 1)
    A = torch.zeros(u.shape[0], C, dtype=torch.float32, device=u.device)
    w = torch.where(valid, problem.class_weight.to(torch.float32)[uc], torch.zeros((), device=u.device))
    A[torch.arange(u.shape[0], device=u.device), uc] = w
    return A


def _centred_clean(z, mu):
    # the clean side in fp32, centred once (the fp32 upcast of half inputs is a copy anyway; centring
    # before the class sums avoids the cancellation of Aᵀ Z − (Aᵀ1) muᵀ)
    zc = z.to(torch.float32)
    return zc - mu[None, :] if mu is not None else zc


def _feature_prototypes(problem, z, mu, sm) -> torch.Tensor:
    """P = Aᵀ diag(s^M) Z~ (C×d, fp32)."""
    A = _clean_weights(problem)
    Aw = A * sm[:, None] if sm is not None else A
    return (Aw.T @ _centred_clean(z, mu)).contiguous()


def _gradient_prototypes(problem, z, f, mu, sm) -> torch.Tensor:
    """G_c = Σ_j A_jc s^M_j F_j ⊗ Z~_j (C×k×d, fp32), in chunks of classes bounding the M×(c·k) temporary."""
    A = _clean_weights(problem)
    Aw = A * sm[:, None] if sm is not None else A
    zc = _centred_clean(z, mu)
    ff = f.to(torch.float32)
    M, k, d, C = z.shape[0], f.shape[1], z.shape[1], problem.num_classes
    G = torch.empty(C, k, d, dtype=torch.float32, device=z.device)
    cc = max(1, _PROTO_CHUNK_ELEMS // max(1, M * k))
    for c0 in range(0, C, cc):
        c1 = min(C, c0 + cc)
        H = (Aw[:, c0:c1, None] * ff[:, None, :]).reshape(M, (c1 - c0) * k)  # M×(c·k)
        G[c0:c1] = (H.T @ zc).view(c1 - c0, k, d)
    return G


def _prototype_similarity(problem) -> torch.Tensor:
    B, C = problem.batch_size, problem.num_classes
    device = problem.device
    layers = _prepared_layers(problem, 0)
    cfg = _fixed(device)
    prec = _input_precision()
    out = torch.empty((len(layers), B, C), dtype=torch.float32, device=device)
    block_b = cfg["BLOCK_B"]
    for li, (x, z, e, f, mu, sb, sm, _, _) in enumerate(layers):
        d = x.shape[1]
        if e is None:
            # prototypes depend on the clean side only: memoised with it
            P = _clean_memo(problem, ("prototypes", li, problem.cosine, prec),
                            lambda: _feature_prototypes(problem, z, mu, sm))
            block_c = cfg["BLOCK_C"] or pow2(C, 16, 64)
            prototype.prototype_feature_kernel[(triton.cdiv(B, block_b), triton.cdiv(C, block_c))](
                x, mu if mu is not None else P, sb if sb is not None else P, P, out[li],
                B, C, d,
                x.stride(0), P.stride(0), out.stride(1),
                CENTER=mu is not None, COSINE=sb is not None,
                BLOCK_B=block_b, BLOCK_C=block_c, BLOCK_D=cfg["BLOCK_D"], INPUT_PRECISION=prec,
                num_warps=cfg["num_warps"],
            )
        else:
            k = e.shape[1]
            G = _clean_memo(problem, ("gradient-prototypes", li, problem.cosine, prec),
                            lambda: _gradient_prototypes(problem, z, f, mu, sm))
            prototype.prototype_gradient_kernel[(triton.cdiv(B, block_b), C)](
                x, e, mu if mu is not None else G, sb if sb is not None else G, G, out[li],
                B, C, d, k,
                x.stride(0), e.stride(0), out.stride(1),
                CENTER=mu is not None, COSINE=sb is not None,
                BLOCK_B=block_b, BLOCK_K=cfg["BLOCK_K"], BLOCK_D=cfg["BLOCK_D"], INPUT_PRECISION=prec,
                num_warps=cfg["num_warps"],
            )
    if len(layers) == 1:
        return out[0]
    return out.sum(dim=0)
