"""The Triton backend against the float64 reference.

Without a GPU these run through the Triton interpreter (conftest sets TRITON_INTERPRET=1), so shapes
are small.  Every comparison is relative to the float64 reference on float64 copies of the inputs,
and the Triton error must stay within ``K_ERR`` times the error of the eager reference run on the same
inputs in the tested dtype (plus a small floor, so exact cases do not demand zero error).  Every
tensor allocated uninitialised (``torch.empty``: every output buffer of the backend) is filled with NaN
(the ``poisoned_outputs`` fixture of conftest.py), and every call uses the fixed, deterministic kernel
configuration.
"""
from __future__ import annotations

import contextlib
import os

import pytest
import torch

import fastreweight as W
from fastreweight import reference

kb = pytest.importorskip("fastreweight.kernels.backend")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
BF16_SKIP = pytest.mark.skipif(
    INTERPRETED,
    reason="tl.dot on bfloat16 operands is wrong under the Triton interpreter "
    "(upstream triton-lang/triton#11584, 'not supported yet')",
)
K_ERR = 8.0
FLOOR = {torch.float32: 1e-6, torch.float16: 1e-6, torch.bfloat16: 1e-6}  # ~8 fp32 ulps of the largest value

pytestmark = pytest.mark.skipif(
    kb.unavailable_reason(DEVICE) is not None, reason=str(kb.unavailable_reason(DEVICE))
)


@pytest.fixture(autouse=True)
def _fixed_and_poisoned(poisoned_outputs):
    with kb.fixed_config(), poisoned_outputs():
        yield


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def make_data(B, M, C, dims, ks=None, *, absent=(), offset=1.5, imbalance=True, seed=0, y_absent=0):
    """float64 master data: per-layer factors with a non-zero mean, imbalanced clean labels with the
    classes in ``absent`` missing from the clean subset, and batch labels of present classes (plus
    ``y_absent`` rows labelled with an absent class)."""
    g = torch.Generator().manual_seed(seed)
    present = [c for c in range(C) if c not in absent]
    p = torch.tensor([float(i + 1) if imbalance else 1.0 for i in range(len(present))], dtype=torch.float64)
    u = torch.tensor(present)[torch.multinomial(p, M, replacement=True, generator=g)]
    # every present class occurs when M allows (the rest stay imbalanced)
    n = min(M, len(present))
    u[:n] = torch.tensor(present[:n])
    occurring = torch.unique(u)
    y = occurring[torch.randint(0, len(occurring), (B,), generator=g)]
    if y_absent and absent:
        y[:y_absent] = absent[0]
    xs = [torch.randn(B, d, generator=g, dtype=torch.float64) + offset for d in dims]
    zs = [torch.randn(M, d, generator=g, dtype=torch.float64) * 1.3 + offset for d in dims]
    es = fs = None
    if ks is not None:
        es = [torch.randn(B, k, generator=g, dtype=torch.float64) for k in ks]
        fs = [torch.randn(M, k, generator=g, dtype=torch.float64) for k in ks]
    return dict(x=xs, clean_x=zs, x2=es, clean_x2=fs, y=y, clean_y=u)


def cast(data, dtype):
    out = {}
    for key, v in data.items():
        if isinstance(v, list):
            out[key] = [t.to(device=DEVICE, dtype=dtype) for t in v]
        elif v is None:
            out[key] = None
        else:
            out[key] = v.to(DEVICE)
    return out


def rel_err(a, truth):
    a, truth = a.double().cpu(), truth.double().cpu()
    assert not torch.isnan(a).any(), "output holds NaN: a poisoned element was not written"
    return ((a - truth).abs().max() / truth.abs().max().clamp_min(1e-30)).item()


def check(fn, data, dtype, **kw):
    """triton in ``dtype`` vs the float64 reference on float64 copies of the same (rounded) inputs,
    within K_ERR × the error of the eager reference run on the inputs in ``dtype``."""
    inputs = cast(data, dtype)
    truth = fn(**upcast(inputs), backend="reference", **kw)
    eager = fn(**inputs, backend="reference", **kw)
    got = fn(**inputs, backend="triton", **kw)
    assert W.last_plan().backend == "triton"
    assert got.shape == truth.shape
    assert got.dtype == torch.float32
    e_got, e_eager = rel_err(got, truth), rel_err(eager, truth)
    assert e_got <= K_ERR * e_eager + FLOOR[dtype], (e_got, e_eager)
    return got


def upcast(inputs):
    return {k: [t.double() for t in v] if isinstance(v, list) else v for k, v in inputs.items()}


def similarity(**kw):
    return W.class_similarity(**kw)


# ---------------------------------------------------------------------------------------------
# class similarity: every kernel, both strategies
# ---------------------------------------------------------------------------------------------
CASES = {
    # name: (B, M, C, dims, ks, absent)
    "tiny-C1": (1, 1, 1, [3], None, ()),
    "two-C2": (2, 2, 2, [5], None, ()),
    "feature-C3": (17, 97, 3, [33], None, ()),
    "grad-C10": (97, 17, 10, [20], [7], (4,)),
    "feature-2layers": (17, 40, 10, [19, 6], None, (0, 9)),
    "grad-3layers": (17, 40, 3, [9, 17, 4], [3, 11, 5], ()),
    "grad-4layers": (2, 17, 2, [5, 3, 7, 2], [3, 2, 4, 6], ()),
    "C-over-tile": (17, 97, 40, [13], None, (1, 2, 17, 39)),
    "M1025": (17, 1025, 10, [9], None, (3,)),
    "d1025": (2, 17, 3, [1025], None, ()),
}


@pytest.mark.parametrize("strategy", ["pairwise", "prototype"])
@pytest.mark.parametrize("case", list(CASES))
def test_class_similarity_matches_reference(case, strategy):
    B, M, C, dims, ks, absent = CASES[case]
    i = list(CASES).index(case)
    data = make_data(B, M, C, dims, ks, absent=absent, seed=i)
    # alternate centering / cosine across cases so that every combination is covered
    center = "clean" if i % 2 == 0 else "none"
    normalize = "cosine" if i % 3 == 1 else None
    S = check(similarity, data, torch.float32, num_classes=C, center=center, normalize=normalize,
              strategy=strategy)
    for c in absent:
        assert torch.all(S[:, c] == 0)


@pytest.mark.parametrize("strategy", ["pairwise", "prototype"])
@pytest.mark.parametrize("center", ["clean", "none"])
@pytest.mark.parametrize("normalize", [None, "cosine"])
def test_gradient_kernel_center_and_cosine(strategy, center, normalize):
    data = make_data(17, 33, 3, [21, 5], [6, 9], seed=3)
    # one all-zero batch row and one all-zero clean row of the second factor: cosine scale 0
    data["x2"][0][1].zero_()
    data["clean_x2"][1][2].zero_()
    check(similarity, data, torch.float32, num_classes=3, center=center, normalize=normalize, strategy=strategy)


def test_split_clean_rows_and_strided_inputs():
    data = make_data(33, 97, 10, [24], [8], absent=(5,), seed=5)
    base = cast(data, torch.float32)
    # strided (non-contiguous) views of the same values
    strided = dict(base)
    strided["x"] = [torch.cat([t, t + 1], dim=1)[:, : t.shape[1]] for t in base["x"]]  # row stride 2d
    strided["clean_x"] = [t.t().contiguous().t() for t in base["clean_x"]]  # column-major
    strided["x2"] = [torch.stack([t, t + 1], dim=2).flatten(1)[:, ::2] for t in base["x2"]]  # column stride 2
    for key in ("x", "clean_x", "x2"):
        assert not strided[key][0].is_contiguous() and torch.equal(strided[key][0], base[key][0])
    ref = W.class_similarity(**upcast(base), num_classes=10, backend="reference", strategy="pairwise")
    eager = W.class_similarity(**base, num_classes=10, backend="reference", strategy="pairwise")
    outs = []
    for split in (1, 3):
        with kb.fixed_config(SPLIT=split):
            for inp in (base, strided):
                outs.append(W.class_similarity(**inp, num_classes=10, backend="triton", strategy="pairwise"))
    for o in outs:
        assert rel_err(o, ref) <= K_ERR * rel_err(eager, ref) + FLOOR[torch.float32]
    # (not bit-identical across layouts: the clean mean mu is computed by torch from the strided view)


# ---------------------------------------------------------------------------------------------
# FBR scores: every shift, alpha, missing classes
# ---------------------------------------------------------------------------------------------
def fbr(**kw):
    return W.fbr_scores(**kw)


@pytest.mark.parametrize("strategy", ["pairwise", "prototype"])
@pytest.mark.parametrize("shift", ["second", "max", "mean", "none"])
def test_fbr_scores_shifts_and_alpha(strategy, shift):
    C, absent = 10, (2, 7)
    data = make_data(33, 40, C, [17], None, absent=absent, seed=11, y_absent=3)
    present = C - len(absent)
    for alpha in (0.0, 0.3, 1.0 / (present - 1)):
        d = check(fbr, data, torch.float32, num_classes=C, shift=shift, alpha=alpha, strategy=strategy,
                  on_missing_class="skip")
        assert torch.all(d[:3] == 0)  # rows labelled with an absent class


@pytest.mark.parametrize("C", [2, 3])
def test_fbr_scores_few_classes_gradient(C):
    data = make_data(17, 17, C, [11], [4], seed=13)
    for shift in ("second", "max"):
        check(fbr, data, torch.float32, num_classes=C, shift=shift, alpha=0.5, strategy="pairwise",
              normalize="cosine")


def test_fbr_epilogue_ties_many_classes_and_C1():
    g = torch.Generator().manual_seed(0)
    for B, C in ((37, 300), (5, 2), (4, 1), (9, 17)):
        S = torch.randint(-3, 4, (B, C), generator=g).float()  # many exact ties
        counts = torch.randint(0, 3, (C,), generator=g)
        counts[: min(C, 2)] = 1
        y = torch.randint(0, C, (B,), generator=g)
        y[0] = C + 5  # out of range: score 0
        S, counts, y = S.to(DEVICE), counts.to(DEVICE), y.to(DEVICE)
        present = counts > 0
        for shift in ("second", "max", "mean", "none"):
            for alpha in (0.0, 0.25):
                got = kb.fbr_from_similarity(S, y, counts, shift, alpha)
                want = reference.fbr_from_similarity(S.double(), y, present, shift, alpha)
                assert torch.allclose(got.double(), want, rtol=1e-6, atol=1e-5), (B, C, shift, alpha)


# ---------------------------------------------------------------------------------------------
# meta scores (C = 1, one pseudo-class of weight 1/M)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["pairwise", "prototype"])
@pytest.mark.parametrize("center", ["none", "clean"])
def test_meta_scores(strategy, center):
    data = make_data(17, 97, 4, [12, 5], [6, 3], seed=17)

    def meta(x, x2, clean_x, clean_x2, **kw):
        kw.pop("y"), kw.pop("clean_y")
        return W.meta_scores(x, x2, clean_x, clean_x2, **kw)

    check(meta, data, torch.float32, center=center, strategy=strategy)


# ---------------------------------------------------------------------------------------------
# half precision
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["pairwise", "prototype"])
def test_fp16(strategy):
    data = make_data(17, 40, 10, [33, 7], [5, 6], absent=(3,), seed=19)
    check(similarity, data, torch.float16, num_classes=10, center="clean", strategy=strategy)
    check(fbr, data, torch.float16, num_classes=10, center="clean", normalize="cosine", shift="second",
          alpha=0.2, strategy=strategy)


@BF16_SKIP
@pytest.mark.parametrize("strategy", ["pairwise", "prototype"])
def test_bf16(strategy):
    data = make_data(17, 40, 10, [33, 7], [5, 6], absent=(3,), seed=19)
    check(similarity, data, torch.bfloat16, num_classes=10, center="clean", strategy=strategy)
    check(fbr, data, torch.bfloat16, num_classes=10, center="clean", normalize="cosine", shift="max",
          alpha=0.2, strategy=strategy)


# ---------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------
def test_bit_identical_runs():
    data = cast(make_data(33, 97, 10, [21, 4], [5, 3], absent=(1,), seed=23), torch.float32)
    for strategy in ("pairwise", "prototype"):
        a = W.fbr_scores(**data, num_classes=10, shift="second", alpha=0.1, backend="triton", strategy=strategy)
        b = W.fbr_scores(**data, num_classes=10, shift="second", alpha=0.1, backend="triton", strategy=strategy)
        assert torch.equal(a, b)
    with kb.fixed_config(SPLIT=2):
        a = W.class_similarity(**data, num_classes=10, backend="triton", strategy="pairwise")
        b = W.class_similarity(**data, num_classes=10, backend="triton", strategy="pairwise")
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# Reweighter update kernel
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalize_update", ["mean_abs", "none"])
@pytest.mark.parametrize("B", [1, 17, 2500])
def test_reweighter_step(dtype, normalize_update, B):
    g = torch.Generator().manual_seed(B)
    N = 3000
    w = torch.rand(N, generator=g, dtype=dtype).to(DEVICE)
    idx = torch.randperm(N, generator=g)[:B].to(DEVICE)
    r = (torch.randn(B, generator=g, dtype=torch.float64) * 3).to(DEVICE)
    want_w = w.clone()
    want = reference.reweighter_update(want_w[idx], r.to(dtype), 0.7, normalize_update, 1e-12)
    want_w[idx] = want
    got = kb.reweighter_step(w, idx, r, 0.7, normalize_update, 1e-12)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    assert got.dtype == dtype
    assert torch.allclose(got, want, **tol)
    assert torch.allclose(w, want_w, **tol)
    assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0


# ---------------------------------------------------------------------------------------------
# availability and support
# ---------------------------------------------------------------------------------------------
def test_availability_and_support():
    from fastreweight.problem import build_problem

    assert kb.unavailable_reason(DEVICE) is None
    assert "CUDA" in kb.unavailable_reason(torch.device("meta"))
    data = cast(make_data(5, 7, 2, [3] * 5, None, seed=1), torch.float32)
    p5 = build_problem(data["x"], data["clean_x"], y=data["y"], clean_y=data["clean_y"], num_classes=2)
    assert "at most" in kb.unsupported_reason(p5, "pairwise")
    assert kb.unsupported_reason(p5, "prototype") is None
    S = W.class_similarity(**data, num_classes=2, backend="triton", strategy="prototype")
    ref = W.class_similarity(**cast(make_data(5, 7, 2, [3] * 5, None, seed=1), torch.float64), num_classes=2,
                             backend="reference", strategy="prototype")
    assert rel_err(S, ref) < 1e-5
    d64 = cast(make_data(5, 7, 2, [3], None, seed=1), torch.float64)
    p64 = build_problem(d64["x"], d64["clean_x"], y=d64["y"], clean_y=d64["clean_y"], num_classes=2)
    assert "float64" in kb.unsupported_reason(p64, "pairwise")
    with pytest.raises(W.backends.BackendUnavailable, match="float64"):
        W.class_similarity(**d64, num_classes=2, backend="triton")
    if INTERPRETED:
        d16 = cast(make_data(5, 7, 2, [3], None, seed=1), torch.bfloat16)
        p16 = build_problem(d16["x"], d16["clean_x"], y=d16["y"], clean_y=d16["clean_y"], num_classes=2)
        assert "11584" in kb.unsupported_reason(p16, "pairwise")


def test_unavailable_without_interpreter_on_cpu(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    reason = kb.unavailable_reason(torch.device("cpu"))
    assert reason is not None and "TRITON_INTERPRET=1" in reason


def test_tf32_setting():
    assert torch.isnan(torch.empty(3, 2, device=DEVICE)).all()  # the autouse fixture poisons allocations
    data = make_data(17, 40, 3, [19], [5], seed=29)
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert kb._input_precision() == "tf32"
        inputs = cast(data, torch.float32)
        got = W.class_similarity(**inputs, num_classes=3, backend="triton", strategy="pairwise")
        ref = W.class_similarity(**upcast(inputs), num_classes=3, backend="reference", strategy="pairwise")
        assert rel_err(got, ref) < 5e-3  # tf32 operands: 10-bit mantissa
    finally:
        torch.set_float32_matmul_precision(old)
    assert kb._input_precision() == ("ieee" if old == "highest" else "tf32")


def test_reweighter_class_runs_the_triton_update():
    """Reweighter(backend="triton") gives the reference Reweighter's weights, step after step."""
    import fastreweight as fr

    g = torch.Generator().manual_seed(3)
    a = fr.Reweighter(1025, lr=0.4, backend="triton", device=DEVICE)
    b = fr.Reweighter(1025, lr=0.4, backend="reference")
    assert a.backend == "triton" and b.backend == "reference"
    for _ in range(4):
        idx = torch.randperm(1025, generator=g)[:97]
        r = torch.randn(97, generator=g)
        torch.testing.assert_close(a.step(idx.to(DEVICE), r.to(DEVICE)).cpu(), b.step(idx, r), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.weights.cpu(), b.weights, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# class aggregation modes and clean-side memoisation
# ---------------------------------------------------------------------------------------------
AGG_CASES = {
    # name: (B, M, C, dims, ks, absent) — few large classes, many small ones per tile, absent classes
    "large-classes": (17, 1025, 3, [21], None, ()),
    "many-per-tile": (33, 97, 40, [13], None, (1, 2, 17, 39)),
    "grad-2layers": (17, 300, 5, [19, 6], [5, 3], (2,)),
}


@pytest.mark.parametrize("agg", [0, 1], ids=["one-hot", "segment"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", list(AGG_CASES))
def test_aggregation_modes(case, dtype, agg):
    B, M, C, dims, ks, absent = AGG_CASES[case]
    data = make_data(B, M, C, dims, ks, absent=absent, seed=31)
    with kb.fixed_config(AGG=agg):
        check(similarity, data, dtype, num_classes=C, center="clean", strategy="pairwise", on_missing_class="skip")
        check(fbr, data, dtype, num_classes=C, center="clean", normalize="cosine", shift="max", strategy="pairwise",
              on_missing_class="skip")


def test_fixed_config_rejects_unknown_options_and_bad_aggregation_modes():
    with pytest.raises(ValueError, match=r"fixed_config: unknown option\(s\) \['BLOCK_Q'\]"):
        with kb.fixed_config(BLOCK_Q=16):
            pass
    with pytest.raises(ValueError, match=r"fixed_config: AGG must be 0 \(one-hot product\), 1 \(segment sums\) or None, got 2"):
        with kb.fixed_config(AGG=2):
            pass


@pytest.mark.parametrize("strategy", ["pairwise", "prototype"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_clean_side_memo_is_reused_and_invalidated(strategy, dtype):
    """The clean-side quantities the launcher memoises (class sort, centering corrections, cosine
    scales, prototypes) are reused for the same clean tensors and rebuilt when one changes in place."""
    from fastreweight.problem import clean_cache

    clean_cache.clear()
    data = cast(make_data(17, 200, 6, [24], [5], absent=(4,), seed=37), dtype)
    kw = dict(num_classes=6, center="clean", normalize="cosine", shift="max", strategy=strategy,
              on_missing_class="skip", backend="triton")
    first = W.fbr_scores(**data, **kw)
    again = W.fbr_scores(**data, **kw)  # memo hit
    assert torch.equal(first, again)
    with torch.no_grad():
        data["clean_x"][0].mul_(-0.5).add_(0.25)  # in place: the version counter invalidates the memo
    changed = W.fbr_scores(**data, **kw)
    truth = W.fbr_scores(**upcast(data), **{**kw, "backend": "reference"})
    assert rel_err(changed, truth) <= 1e-4
    assert not torch.equal(changed, first)
    clean_cache.clear()


# ---------------------------------------------------------------------------------------------
# GPU only: every Hopper configuration on a large grid (many batch and class tiles)
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(INTERPRETED, reason="large shapes and every autotuning configuration: GPU only")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("config", list(range(len(kb.HOPPER_CONFIGS))) + ["autotune"])
def test_hopper_configs_large_grid(config, dtype):
    """B = 8192, C = 1000 (many batch × class tiles): every configuration, both aggregation modes, and
    the autotuned launch against the float64 reference (an H100 run on 2026-11-26 saw 3–8% errors
    from the autotuned kernel at B = 8192, C = 1000; this pins the configuration)."""
    B, M, d, C = 8192, 2048, 64, 1000
    g = torch.Generator().manual_seed(41)
    x = torch.randn(B, d, generator=g, dtype=torch.float64) + 0.5
    z = torch.randn(M, d, generator=g, dtype=torch.float64) + 0.5
    y = torch.randint(0, C, (B,), generator=g)
    u = torch.arange(M) % C
    xd, zd, yd, ud = x.to(DEVICE, dtype), z.to(DEVICE, dtype), y.to(DEVICE), u.to(DEVICE)
    kw = dict(num_classes=C, strategy="pairwise")
    truth = W.class_similarity(xd.double(), yd, zd.double(), ud, backend="reference", **kw)
    e_eager = rel_err(W.class_similarity(xd, yd, zd, ud, backend="reference", **kw), truth)
    saved = list(kb._fixed_override)
    try:
        for agg in (0, 1):
            if config == "autotune":
                kb._fixed_override.clear()  # the autouse fixture's fixed configuration off: autotune
                ctx = contextlib.nullcontext()
            else:
                ctx = kb.fixed_config(AGG=agg, **kb.HOPPER_CONFIGS[config])
            with ctx:
                got = W.class_similarity(xd, yd, zd, ud, backend="triton", **kw)
            assert rel_err(got, truth) <= K_ERR * e_eager + FLOOR[dtype], (config, agg, rel_err(got, truth), e_eager)
            if config == "autotune":
                break
    finally:
        kb._fixed_override[:] = saved


# ---------------------------------------------------------------------------------------------
# the compiled kernel (no GPU needed): sm_90a code, tensor cores, no spills
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pairwise_kernel_compiles_for_sm90a_without_spills():
    """benchmarks/inspect_sm90.py compiles every Hopper configuration for sm_90a with Triton's bundled
    ptxas and fails if a bf16 feature-kernel configuration uses local memory (spills)."""
    import subprocess
    import sys

    import triton

    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")):
        pytest.skip("this triton wheel ships no cuobjdump")
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "inspect_sm90.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, script, "--check"], env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [line.split() for line in res.stdout.splitlines() if "feature" in line]
    assert rows and all(int(r[-3]) > 0 for r in rows), res.stdout  # HGMMA: the Gram runs on tensor cores
    assert all(int(r[-2]) == 0 for r in rows if r[4] == "segment"), res.stdout  # no FMA aggregation


@pytest.mark.skipif(INTERPRETED, reason="host synchronisation is a CUDA notion: GPU only")
@pytest.mark.parametrize("strategy", ["pairwise", "prototype"])
def test_hot_path_has_no_host_synchronisation(strategy):
    """fbr_scores, Reweighter.step and threshold_weights (check_values=False) on CUDA enqueue work and
    return without waiting for the device (torch's sync debug mode raises on any synchronising call)."""
    import fastreweight as fr

    data = cast(make_data(64, 500, 10, [128], None, seed=43), torch.bfloat16)
    rw = fr.Reweighter(1000, lr=0.1, device=DEVICE, backend="triton")
    idx = torch.randperm(1000, device=DEVICE)[:64]
    kw = dict(num_classes=10, shift="max", strategy=strategy, backend="triton", check_values=False,
              on_missing_class="skip")
    rw.step(idx, W.fbr_scores(**data, **kw), check_values=False)  # warm-up: compilation, memo, cached params
    W.threshold_weights(W.fbr_scores(**data, **kw), check_values=False)
    # the trainer's path: the clean side prepared once (CleanScorer), scores + update per batch
    scorer = fr.CleanScorer(data["clean_x"], data["clean_y"], num_classes=10, strategy=strategy, backend="triton",
                            check_values=False)
    scorer.reweight(rw, idx, data["x"], data["y"], on_missing_class="skip")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            d = W.fbr_scores(**data, **kw)
            rw.step(idx, d, check_values=False)
            W.threshold_weights(d, check_values=False)  # the published recipe's per-batch weights
            scorer.reweight(rw, idx, data["x"], data["y"], on_missing_class="skip")
            W.weighted_loss(d, rw.weights[idx])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
