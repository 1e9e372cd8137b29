"""The compiled backends against the pure-PyTorch reference: the C++ CPU backend (csrc/cpu/,
``backend="cpp"``) and, on a CUDA device, the CUDA backend (csrc/cuda/, ``backend="cuda"``) run
the same agreement tests (parametrised over ``BACKENDS``; inputs are moved to the backend's device,
results back to the CPU).  Also the op contract on the CPU (TORCH_CHECK messages,
torch.library.opcheck, torch.compile) and a compile-only check of the CUDA sources
(csrc/compile_cuda_check.sh; marked slow).  CUDA-only checks live in ``test_cuda_backend.py``."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch

import fastreweight as fr
from fastreweight import backends, csrc_backend, reference
from fastreweight.problem import build_problem

LOAD_REASON = csrc_backend.load_cpu()
needs_ext = pytest.mark.skipif(LOAD_REASON is not None, reason=f"C++ CPU extension unavailable: {LOAD_REASON}")
ops = torch.ops.fastreweight if LOAD_REASON is None else None
CUDA_REASON = csrc_backend.load_cuda() if torch.cuda.is_available() else "no CUDA device"
needs_cuda_ext = pytest.mark.skipif(CUDA_REASON is not None, reason=f"CUDA extension unavailable: {CUDA_REASON}")
# execution paths under test: "<backend>" runs the pairwise strategy, "<backend>-prototype" the
# prototype strategy (the C++ backend has both; the CUDA extension implements the pairwise one)
BACKENDS = [pytest.param("cpp", marks=needs_ext, id="cpp"),
            pytest.param("cpp-prototype", marks=needs_ext, id="cpp-prototype"),
            pytest.param("cuda", marks=needs_cuda_ext, id="cuda")]
DEVICE_OF = {"cpp": torch.device("cpu"), "cpp-prototype": torch.device("cpu"), "cuda": torch.device("cuda"),
             "reference": torch.device("cpu")}


def path_kw(path):
    """backend= and strategy= of an execution path (the reference: pairwise, the definition)."""
    backend, _, strategy = path.partition("-")
    return dict(backend=backend, strategy=strategy or "pairwise")

SIZES = (1, 2, 17, 97, 1025)
SHIFTS = ("second", "max", "mean", "none")


def make(B, M, d=37, k=7, C=3, *, layers=1, grad=False, dtype=torch.float64, seed=0, offset=0.7, labels="cyclic"):
    """Random factors (float64, then cast) with a non-zero mean, so that centering matters."""
    g = torch.Generator().manual_seed(seed)
    ds = [d + 3 * l for l in range(layers)]
    ks = [k + 2 * l for l in range(layers)]
    xs = [(torch.randn(B, dl, generator=g, dtype=torch.float64) + offset).to(dtype) for dl in ds]
    zs = [(torch.randn(M, dl, generator=g, dtype=torch.float64) + offset).to(dtype) for dl in ds]
    es = [torch.randn(B, kl, generator=g, dtype=torch.float64).to(dtype) for kl in ks] if grad else None
    fs = [torch.randn(M, kl, generator=g, dtype=torch.float64).to(dtype) for kl in ks] if grad else None
    if labels == "cyclic":
        u = torch.arange(M) % C
    else:  # random, some classes possibly absent
        u = torch.randint(0, C, (M,), generator=g)
    y = torch.randint(0, C, (B,), generator=g)
    one = lambda t: t if t is None or layers > 1 else t[0]  # noqa: E731
    return dict(x=one(xs), clean_x=one(zs), x2=one(es), clean_x2=one(fs)), y, u


def cast(f, dtype):
    out = {}
    for key, v in f.items():
        if v is None:
            out[key] = None
        elif isinstance(v, list):
            out[key] = [t.to(dtype) for t in v]
        else:
            out[key] = v.to(dtype)
    return out


def to_device(f, y, u, device):
    """The inputs (a dict of factors or lists of factors, labels) on ``device``."""
    mv = lambda t: None if t is None else ([v.to(device) for v in t] if isinstance(t, list) else t.to(device))  # noqa: E731
    return {k: mv(v) for k, v in f.items()}, y.to(device), u.to(device)


def sim(f, y, u, C, backend, **kw):
    f, y, u = to_device(f, y, u, DEVICE_OF[backend])
    return fr.class_similarity(f["x"], y, f["clean_x"], u, x2=f["x2"], clean_x2=f["clean_x2"], num_classes=C,
                               on_missing_class="skip", **path_kw(backend), **kw).cpu()


def fbr(f, y, u, C, backend, **kw):
    f, y, u = to_device(f, y, u, DEVICE_OF[backend])
    return fr.fbr_scores(f["x"], y, f["clean_x"], u, x2=f["x2"], clean_x2=f["clean_x2"], num_classes=C,
                         on_missing_class="skip", **path_kw(backend), **kw).cpu()


def kbound(f):
    """An upper bound of |K_ij| (sum over layers of the factor norms): the scale of rounding errors,
    also where S itself cancels to ~0 (e.g. one class with class-balanced centering)."""
    lst = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
    nrm = lambda t: float(torch.linalg.vector_norm(t.double(), dim=1).max()) if t.numel() else 0.0  # noqa: E731
    total = 0.0
    for i, (x, z) in enumerate(zip(lst(f["x"]), lst(f["clean_x"]))):
        term = 4 * nrm(x) * nrm(z)  # centering at most doubles each factor's norm
        if f["x2"] is not None:
            term *= nrm(lst(f["x2"])[i]) * nrm(lst(f["clean_x2"])[i])
        total += term
    return total


def assert_close64(a, r, scale=None):
    assert a.dtype == r.dtype == torch.float64
    if scale is None:
        scale = float(r.abs().max()) if r.numel() else 0.0
    scale = max(scale, 1e-300)
    torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9 * scale)


def assert_close32(a32, r32, r64):
    """float32 result within a small multiple of eager PyTorch's own float32 error (both against float64)."""
    assert a32.dtype == r32.dtype == torch.float32
    if r64.numel() == 0:
        return
    scale = float(r64.abs().max())
    err_ref = float((r32.double() - r64).abs().max())
    err = float((a32.double() - r64).abs().max())
    assert err <= 8 * err_ref + 1e-6 * scale + 1e-30, (err, err_ref, scale)


# ---------------------------------------------------------------------------------------------
# agreement with the reference
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("B", SIZES)
@pytest.mark.parametrize("M", SIZES)
def test_shapes_float64(B, M, backend):
    f, y, u = make(B, M, C=3)
    for center in ("clean", "none"):
        assert_close64(sim(f, y, u, 3, backend, center=center), sim(f, y, u, 3, "reference", center=center))


KERNELS = [
    dict(layers=1, grad=False),
    dict(layers=1, grad=True),
    dict(layers=3, grad=False),
    dict(layers=2, grad=True),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel", KERNELS, ids=["feature", "gradient", "feature-3layers", "gradient-2layers"])
@pytest.mark.parametrize("normalize", [None, "cosine"])
@pytest.mark.parametrize("center", ["clean", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_options(kernel, normalize, center, dtype, backend):
    f64, y, u = make(97, 1025, d=65, k=11, C=10, **kernel)
    kw = dict(center=center, normalize=normalize)
    r64 = sim(f64, y, u, 10, "reference", **kw)
    if dtype == torch.float64:
        assert_close64(sim(f64, y, u, 10, backend, **kw), r64)
    else:
        f32 = cast(f64, torch.float32)
        assert_close32(sim(f32, y, u, 10, backend, **kw), sim(f32, y, u, 10, "reference", **kw), r64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("C", [1, 2, 3, 10, 300, 1000])
@pytest.mark.parametrize("grad", [False, True])
def test_classes(C, grad, backend):
    # random labels: with C=300 > tile width many classes are absent and tiles hold many segments
    f, y, u = make(33, 1025, d=29, k=5, C=C, grad=grad, labels="random")
    for normalize in (None, "cosine"):
        assert_close64(sim(f, y, u, C, backend, normalize=normalize), sim(f, y, u, C, "reference", normalize=normalize),
                       scale=kbound(f) if normalize is None else 4.0)
    if C >= 2:
        for shift in SHIFTS:
            assert_close64(fbr(f, y, u, C, backend, shift=shift), fbr(f, y, u, C, "reference", shift=shift))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("alpha", [0.0, 0.3, "balanced", 2.0])
@pytest.mark.parametrize("grad", [False, True])
def test_fbr_epilogue(shift, alpha, grad, backend):
    C = 7
    alpha = 1.0 / (C - 1) if alpha == "balanced" else alpha
    f, y, u = make(97, 211, d=41, C=C, grad=grad, labels="random")
    u[u == 3] = 4  # class 3 absent: rows with y == 3 score 0 (on_missing_class="skip")
    r = fbr(f, y, u, C, "reference", shift=shift, alpha=alpha)
    a = fbr(f, y, u, C, backend, shift=shift, alpha=alpha)
    assert_close64(a, r)
    assert (a[y == 3] == 0).all()
    f32 = cast(f, torch.float32)
    assert_close32(fbr(f32, y, u, C, backend, shift=shift, alpha=alpha),
                   fbr(f32, y, u, C, "reference", shift=shift, alpha=alpha), r)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shift", SHIFTS)
def test_fbr_ties_and_out_of_range_labels(shift, backend):
    # all-equal similarities (ties in max / second), labels outside [0, C) (check_values=False)
    B, M, C = 9, 12, 4
    x = torch.zeros(B, 5, dtype=torch.float64)
    z = torch.ones(M, 5, dtype=torch.float64)
    u = torch.arange(M) % C
    u[0] = 7  # out of range: takes no part
    u[1] = -1
    y = torch.tensor([0, 1, 2, 3, -2, 4, 9, 1, 0])
    dev = DEVICE_OF[backend]
    for xx in (x, torch.randn(B, 5, dtype=torch.float64)):
        kw = dict(num_classes=C, center="none", shift=shift, alpha=0.5, check_values=False)
        r = fr.fbr_scores(xx, y, z, u, backend="reference", strategy="pairwise", **kw)
        a = fr.fbr_scores(xx.to(dev), y.to(dev), z.to(dev), u.to(dev), **path_kw(backend), **kw).cpu()
        scale = kbound(dict(x=xx, clean_x=z, x2=None, clean_x2=None))
        assert_close64(a, r, scale=scale)
        assert (a[(y < 0) | (y >= C)] == 0).all()
        S_kw = dict(num_classes=C, center="none", check_values=False)
        assert_close64(fr.class_similarity(xx.to(dev), y.to(dev), z.to(dev), u.to(dev), **path_kw(backend), **S_kw).cpu(),
                       fr.class_similarity(xx, y, z, u, backend="reference", strategy="pairwise", **S_kw), scale=scale)


@needs_ext
def test_fbr_two_class_subset_and_single_present_class_shift():
    # only one class present with C >= 2: the op itself (no validation) must match the reference epilogue
    f, y, u = make(17, 40, C=3)
    u = torch.zeros_like(u)
    P = build_problem(f["x"], f["clean_x"], y=y, clean_y=u, num_classes=3, check_values=False)
    S = reference.class_similarity(P, "pairwise")
    for shift in SHIFTS:
        r = reference.fbr_from_similarity(S, P.y, P.present, shift, 0.25)
        a = ops.fbr_scores(*csrc_backend.problem_args(P), P.y, shift, 0.25)
        assert_close64(a, r, scale=kbound(f))  # S cancels to ~0: one class, class-balanced centering


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("center", ["none", "clean"])
@pytest.mark.parametrize("with_labels", [False, True])
def test_meta_scores(center, with_labels, backend):
    f, _, u = make(97, 300, d=23, k=9, grad=True, layers=2, C=5)
    kw = dict(center=center, clean_y=u if with_labels else None)
    r = fr.meta_scores(f["x"], f["x2"], f["clean_x"], f["clean_x2"], backend="reference", strategy="pairwise", **kw)
    fd, ud, _ = to_device(f, u, u, DEVICE_OF[backend])
    kw["clean_y"] = ud if with_labels else None
    a = fr.meta_scores(fd["x"], fd["x2"], fd["clean_x"], fd["clean_x2"], **path_kw(backend), **kw)
    assert_close64(a.cpu(), r)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32(dtype, backend):
    f64, y, u = make(97, 300, d=48, C=5, grad=True)
    fh = cast(f64, dtype)
    a = sim(fh, y, u, 5, backend)
    r = sim(fh, y, u, 5, "reference")  # upcasts the same half values to float32
    r64 = sim(cast(fh, torch.float64), y, u, 5, "reference")
    assert a.dtype == torch.float32
    assert_close32(a, r, r64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_noncontiguous_inputs(backend):
    f, y, u = make(40, 150, d=30, k=6, C=4, grad=True)
    fd, yd, ud = to_device(f, y, u, DEVICE_OF[backend])  # strided views made on the backend's device
    nc = {key: torch.stack([v, v], dim=2).reshape(v.shape[0], -1)[:, ::2] for key, v in fd.items()}
    nc["x"] = fd["x"].T.contiguous().T  # column-major
    assert not nc["x"].is_contiguous() and not nc["clean_x"].is_contiguous()
    got = fr.class_similarity(nc["x"], yd, nc["clean_x"], ud, x2=nc["x2"], clean_x2=nc["clean_x2"], num_classes=4,
                              on_missing_class="skip", **path_kw(backend))
    assert_close64(got.cpu(), sim(f, y, u, 4, "reference"))


# ---------------------------------------------------------------------------------------------
# output contract: every element written, determinism
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_poisoned_outputs_are_overwritten(backend, poisoned_outputs):
    with poisoned_outputs():
        for B, M, C in ((1, 1, 2), (17, 97, 10), (97, 2, 3), (5, 300, 300), (1025, 33, 1000)):
            f, y, u = make(B, M, C=C, grad=True, labels="random")
            S = sim(f, y, u, C, backend)
            assert torch.isfinite(S).all()
            assert_close64(S, sim(f, y, u, C, "reference"))
            d = fbr(f, y, u, C, backend, shift="second", alpha=0.1, check_values=False)
            assert torch.isfinite(d).all()
        # no clean row with a valid label: S must still be fully written (zeros)
        dev = DEVICE_OF[backend]
        x = torch.randn(5, 3, dtype=torch.float64, device=dev)
        P = build_problem(x, x[:2], y=torch.zeros(5, dtype=torch.int64, device=dev),
                          clean_y=torch.tensor([5, -1], device=dev), num_classes=3, check_values=False)
        S = ops.class_similarity(*csrc_backend.problem_args(P))
        assert torch.equal(S.cpu(), torch.zeros(5, 3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_poisoned_outputs_fill_every_uninitialised_allocation(poisoned_outputs, dtype):
    """The ``poisoned_outputs`` fixture really poisons: ``torch.empty`` and the ATen factory the ops'
    ``at::empty`` calls reach (``aten::empty.memory_format``) return NaN (integers: their largest value)
    inside it, and uninitialised memory again after it."""
    bad = lambda t: torch.isnan(t).all() if dtype.is_floating_point else (t == torch.iinfo(dtype).max).all()  # noqa: E731
    with poisoned_outputs():
        assert bad(torch.empty(5, 3, dtype=dtype))
        assert bad(torch.ops.aten.empty.memory_format([7], dtype=dtype))
        assert bad(torch.empty(4, dtype=dtype).new_empty(9))
    assert not torch.are_deterministic_algorithms_enabled()


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_deterministic_across_runs_and_thread_counts(dtype):
    f, y, u = make(300, 1025, d=70, k=9, C=12, grad=True, dtype=dtype)
    a = sim(f, y, u, 12, "cpp", normalize="cosine")
    b = sim(f, y, u, 12, "cpp", normalize="cosine")
    assert torch.equal(a, b)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        c = sim(f, y, u, 12, "cpp", normalize="cosine")
    finally:
        torch.set_num_threads(n)
    assert torch.equal(a, c)
    assert torch.equal(fbr(f, y, u, 12, "cpp"), fbr(f, y, u, 12, "cpp"))


# ---------------------------------------------------------------------------------------------
# the raw ops: TORCH_CHECK messages, opcheck, torch.compile
# ---------------------------------------------------------------------------------------------
def raw_args(B=6, M=8, d=5, k=3, C=3, dtype=torch.float32, grad=True, center=True):
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    x, z = torch.randn(B, d, dtype=dtype), torch.randn(M, d, dtype=dtype)
    e, f = torch.randn(B, k, dtype=dtype), torch.randn(M, k, dtype=dtype)
    mu = z.to(acc).mean(0)
    u = torch.arange(M) % C
    w = torch.full((C,), 1.0, dtype=acc) / torch.bincount(u, minlength=C).clamp_min(1).to(acc)
    return dict(xs=[x], zs=[z], mus=[mu] if center else [], es=[e] if grad else [], fs=[f] if grad else [],
                clean_y=u, class_weight=w, cosine=False)


def call_sim(a):
    return ops.class_similarity(a["xs"], a["zs"], a["mus"], a["es"], a["fs"], a["clean_y"], a["class_weight"], a["cosine"])


def call_fbr(a, y=None, shift="max", alpha=0.0):
    y = torch.zeros(6, dtype=torch.int64) if y is None else y  # raw_args() has B = 6
    return ops.fbr_scores(a["xs"], a["zs"], a["mus"], a["es"], a["fs"], a["clean_y"], a["class_weight"], a["cosine"],
                          y, shift, alpha)


BAD_INPUTS = [
    ("no layers", lambda a: a.update(xs=[], zs=[], mus=[], es=[], fs=[]), r"xs must hold at least one layer"),
    ("zs count", lambda a: a.update(zs=a["zs"] * 2), r"zs must hold one tensor per layer like xs \(1\), got 2"),
    ("es without fs", lambda a: a.update(fs=[]), r"es and fs must both be empty \(feature kernel\) or both hold"),
    ("mus count", lambda a: a.update(mus=a["mus"] * 2), r"mus must be empty \(no centering\) or hold one tensor"),
    ("x 1-D", lambda a: a.update(xs=[a["xs"][0][0]]), r"xs\[0\] must be a 2-D tensor, got shape \[5\]"),
    ("x int", lambda a: a.update(xs=[a["xs"][0].int()]), r"xs\[0\] must have dtype float16, bfloat16, float32 or float64, got Int"),
    ("z dtype", lambda a: a.update(zs=[a["zs"][0].double()]), r"zs\[0\] has dtype Double but xs\[0\] has Float; all feature tensors must share one dtype"),
    ("z columns", lambda a: a.update(zs=[a["zs"][0][:, :4]]), r"zs\[0\] must have 5 columns \(the feature size of xs\[l\]\), got shape \[8, 4\]"),
    ("z 1-D", lambda a: a.update(zs=[a["zs"][0][0]]), r"zs\[0\] must be a 2-D tensor, got shape \[5\]"),
    ("x rows layer 2", lambda a: a.update(xs=a["xs"] + [a["xs"][0][:3]], zs=a["zs"] * 2, mus=a["mus"] * 2, es=a["es"] * 2, fs=a["fs"] * 2),
     r"xs\[1\] must have 6 rows \(the batch size of xs\[0\]\), got shape \[3, 5\]"),
    ("e rows", lambda a: a.update(es=[a["es"][0][:2]]), r"es\[0\] must have 6 rows \(the batch size of xs\[0\]\), got shape \[2, 3\]"),
    ("f columns", lambda a: a.update(fs=[a["fs"][0][:, :2]]), r"fs\[0\] must have 3 columns \(the feature size of es\[l\]\), got shape \[8, 2\]"),
    ("mu length", lambda a: a.update(mus=[a["mus"][0][:2]]), r"mus\[0\] must be a 1-D tensor of length 5 \(the feature size of xs\[l\]\), got shape \[2\]"),
    ("mu dtype", lambda a: a.update(mus=[a["mus"][0].double()]), r"mus\[0\] must have the accumulation dtype Float, got Double"),
    ("clean_y length", lambda a: a.update(clean_y=a["clean_y"][:3]), r"clean_y must be a 1-D tensor of length 8 \(one label per clean row\), got shape \[3\]"),
    ("clean_y dtype", lambda a: a.update(clean_y=a["clean_y"].int()), r"clean_y must have dtype int64, got Int"),
    ("class_weight empty", lambda a: a.update(class_weight=a["class_weight"][:0]), r"class_weight must be a 1-D tensor with one entry per class \(at least one\), got shape \[0\]"),
    ("class_weight dtype", lambda a: a.update(class_weight=a["class_weight"].double()), r"class_weight must have the accumulation dtype Float, got Double"),
    ("device", lambda a: a.update(clean_y=a["clean_y"].to("meta")), r"clean_y is on meta but xs\[0\] is on cpu; all inputs must be on one device"),
]


@needs_ext
@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_torch_check_messages(case):
    _, mutate, msg = case
    for op, call in (("class_similarity", call_sim), ("fbr_scores", call_fbr)):
        a = raw_args()
        mutate(a)
        with pytest.raises(RuntimeError, match=rf"fastreweight::{op}: {msg}"):
            call(a)


@needs_ext
@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(y=torch.zeros(5, dtype=torch.int64)), r"y must be a 1-D tensor of length 6 \(one label per batch row\), got shape \[5\]"),
        (dict(y=torch.zeros(6, dtype=torch.int32)), r"y must have dtype int64, got Int"),
        (dict(shift="median"), r"shift must be one of second, max, mean, none, got 'median'"),
        (dict(alpha=-0.5), r"alpha must be a finite float >= 0, got -0.5"),
        (dict(alpha=float("nan")), r"alpha must be a finite float >= 0, got nan"),
    ],
)
def test_torch_check_messages_epilogue(kwargs, msg):
    with pytest.raises(RuntimeError, match=rf"fastreweight::fbr_scores: {msg}"):
        call_fbr(raw_args(), **kwargs)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad", [False, True])
def test_opcheck(dtype, grad):
    a = raw_args(dtype=dtype, grad=grad)
    args = (a["xs"], a["zs"], a["mus"], a["es"], a["fs"], a["clean_y"], a["class_weight"], True)
    torch.library.opcheck(ops.class_similarity.default, args)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.library.opcheck(ops.fbr_scores.default, args + (y, "second", 0.5))
    a = raw_args(dtype=dtype, grad=grad, center=False)
    torch.library.opcheck(ops.class_similarity.default,
                          (a["xs"], a["zs"], a["mus"], a["es"], a["fs"], a["clean_y"], a["class_weight"], False))


@needs_ext
def test_torch_compile_traces_through_the_op():
    a = raw_args(dtype=torch.float32)
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    def f(x, z, mu, e, f_, u, w, y):
        S = ops.class_similarity([x], [z], [mu], [e], [f_], u, w, False)
        d = ops.fbr_scores([x], [z], [mu], [e], [f_], u, w, False, y, "max", 0.0)
        return S.sum(1) + d

    args = (a["xs"][0], a["zs"][0], a["mus"][0], a["es"][0], a["fs"][0], a["clean_y"], a["class_weight"], y)
    torch._dynamo.reset()
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(*args), f(*args))


# ---------------------------------------------------------------------------------------------
# backend interface and planning
# ---------------------------------------------------------------------------------------------
@needs_ext
def test_backend_interface():
    from fastreweight.csrc_backend import cpp, cuda

    f, y, u = make(8, 20, C=3)
    P = build_problem(f["x"], f["clean_x"], y=y, clean_y=u, num_classes=3)
    assert cpp.unavailable_reason(torch.device("cpu")) is None
    assert "CPU tensors only" in cpp.unavailable_reason(torch.device("meta"))
    assert cpp.unsupported_reason(P, "pairwise") is None
    assert cpp.unsupported_reason(P, "prototype") is None
    assert "no strategy 'blocked'" in cpp.unsupported_reason(P, "blocked")
    assert "CUDA tensors only" in cuda.unavailable_reason(torch.device("cpu"))
    # auto on CPU: both strategies go to cpp
    for strategy in ("pairwise", "prototype"):
        fr.class_similarity(f["x"], y, f["clean_x"], u, num_classes=3, strategy=strategy)
        assert (fr.last_plan().backend, fr.last_plan().strategy) == ("cpp", strategy)


@needs_ext
def test_prototype_path_reuses_the_memoised_prototypes():
    f, y, u = make(17, 97, C=5, grad=True)
    kw = dict(x2=f["x2"], clean_x2=f["clean_x2"], num_classes=5, strategy="prototype", backend="cpp")
    a = fr.fbr_scores(f["x"], y, f["clean_x"], u, **kw)
    P = build_problem(f["x"], f["clean_x"], y=y, clean_y=u, x2=f["x2"], clean_x2=f["clean_x2"], num_classes=5)
    protos = P.clean_memo[("reference-prototypes", False)]
    b = fr.fbr_scores(f["x"], y, f["clean_x"], u, **kw)
    assert P.clean_memo[("reference-prototypes", False)] is protos  # not recomputed
    assert torch.equal(a, b)


@needs_ext
@pytest.mark.parametrize("B, C, d", [(97, 10, 65), (1025, 100, 65)], ids=["row-direct", "gemm"])
@pytest.mark.parametrize("normalize", [None, "cosine"])
def test_prototype_op_paths_small_and_large(B, C, d, normalize):
    # the op runs small feature-kernel calls row by row and large ones through ATen's GEMM
    # (B*C*d below / above 2^22): both against the float64 reference, and in float32
    f64, y, u = make(B, 300, d=d, C=C, layers=2)
    r64 = fbr(f64, y, u, C, "reference", normalize=normalize)
    assert_close64(fbr(f64, y, u, C, "cpp-prototype", normalize=normalize), r64)
    f32 = cast(f64, torch.float32)
    assert_close32(fbr(f32, y, u, C, "cpp-prototype", normalize=normalize),
                   fbr(f32, y, u, C, "reference", normalize=normalize), r64)
    S64 = sim(f64, y, u, C, "reference", normalize=normalize)
    assert_close32(sim(f32, y, u, C, "cpp-prototype", normalize=normalize),
                   sim(f32, y, u, C, "reference", normalize=normalize), S64)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("C, d", [(10, 65), (3, 7), (17, 256)], ids=["C10-d65", "C3-d7", "C17-d256"])
@pytest.mark.parametrize("normalize", [None, "cosine"])
def test_prototype_direct_path_scores_a_row_the_same_wherever_it_sits(dtype, C, d, normalize):
    """The row-direct kernel takes rows four at a time (the last ones singly) and classes four at a
    time: a row's scores must not depend on its tile — scored alone, in the tail, or inside a tile."""
    f, y, u = make(97, 300, d=d, C=C, layers=2, dtype=dtype)
    full = fbr(f, y, u, C, "cpp-prototype", normalize=normalize)
    S = sim(f, y, u, C, "cpp-prototype", normalize=normalize)
    for lo, hi in [(0, 1), (96, 97), (5, 6), (3, 10), (90, 97)]:
        rows = lambda v: [t[lo:hi] for t in v] if isinstance(v, list) else v[lo:hi]  # noqa: E731
        part = {k: (rows(v) if k == "x" else v) for k, v in f.items()}
        assert torch.equal(fbr(part, y[lo:hi], u, C, "cpp-prototype", normalize=normalize), full[lo:hi])
        assert torch.equal(sim(part, y[lo:hi], u, C, "cpp-prototype", normalize=normalize), S[lo:hi])


# ---------------------------------------------------------------------------------------------
# the prototype ops: TORCH_CHECK messages, opcheck
# ---------------------------------------------------------------------------------------------
def proto_args(B=6, d=5, k=3, C=3, dtype=torch.float32, grad=True, center=True):
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    x, e = torch.randn(B, d, dtype=dtype), torch.randn(B, k, dtype=dtype)
    P = torch.randn(C, k, d, dtype=acc) if grad else torch.randn(C, d, dtype=acc)
    mu = torch.randn(d, dtype=acc)
    return dict(xs=[x], mus=[mu] if center else [], es=[e] if grad else [], protos=[P],
                class_weight=torch.rand(C, dtype=acc) + 0.5, cosine=False)


def call_proto_sim(a):
    return ops.class_similarity_prototype(a["xs"], a["mus"], a["es"], a["protos"], a["cosine"])


def call_proto_fbr(a, y=None, shift="max", alpha=0.0):
    y = torch.zeros(6, dtype=torch.int64) if y is None else y
    return ops.fbr_scores_prototype(a["xs"], a["mus"], a["es"], a["protos"], a["class_weight"], a["cosine"], y,
                                    shift, alpha)


PROTO_BAD_INPUTS = [
    ("protos count", lambda a: a.update(protos=a["protos"] * 2), r"protos must hold one tensor per layer like xs \(1\), got 2"),
    ("mus count", lambda a: a.update(mus=a["mus"] * 2), r"mus must be empty \(no centering\) or hold one tensor per layer \(1\), got 2"),
    ("es count", lambda a: a.update(es=a["es"] * 2), r"es must be empty \(feature kernel\) or hold one tensor per layer \(1\), got 2"),
    ("x int", lambda a: a.update(xs=[a["xs"][0].int()]), r"xs\[0\] must have dtype float16, bfloat16, float32 or float64, got Int"),
    ("protos rank", lambda a: a.update(protos=[a["protos"][0][:, 0]]), r"protos\[0\] must be a 3-D tensor \[C, k, d\] \(gradient kernel\) with at least one class, got shape \[3, 5\]"),
    ("protos shape", lambda a: a.update(protos=[a["protos"][0][:, :2]]), r"protos\[0\] must have shape \[3, 3, 5\] \(classes, feature size of es\[l\], feature size of xs\[l\]\), got shape \[3, 2, 5\]"),
    ("protos dtype", lambda a: a.update(protos=[a["protos"][0].double()]), r"protos\[0\] must have the accumulation dtype Float, got Double"),
    ("e rows", lambda a: a.update(es=[a["es"][0][:2]]), r"es\[0\] must be a 2-D tensor with 6 rows \(the batch size of xs\[0\]\), got shape \[2, 3\]"),
    ("e dtype", lambda a: a.update(es=[a["es"][0].double()]), r"es\[0\] has dtype Double but xs\[0\] has Float"),
    ("mu length", lambda a: a.update(mus=[a["mus"][0][:2]]), r"mus\[0\] must be a 1-D tensor of length 5 \(the feature size of xs\[l\]\), got shape \[2\]"),
    ("device", lambda a: a.update(mus=[a["mus"][0].to("meta")]), r"mus\[0\] is on meta but xs\[0\] is on cpu; all inputs must be on one device"),
]


@needs_ext
@pytest.mark.parametrize("case", PROTO_BAD_INPUTS, ids=[c[0] for c in PROTO_BAD_INPUTS])
def test_prototype_torch_check_messages(case):
    _, mutate, msg = case
    for op, call in (("class_similarity_prototype", call_proto_sim), ("fbr_scores_prototype", call_proto_fbr)):
        a = proto_args()
        mutate(a)
        with pytest.raises(RuntimeError, match=rf"fastreweight::{op}: {msg}"):
            call(a)


@needs_ext
def test_prototype_torch_check_messages_epilogue():
    a = proto_args(grad=False)
    a["class_weight"] = a["class_weight"][:2]
    with pytest.raises(RuntimeError, match=r"fastreweight::fbr_scores_prototype: class_weight must be a 1-D tensor "
                                           r"of length 3 \(one entry per class of protos\), got shape \[2\]"):
        call_proto_fbr(a)
    with pytest.raises(RuntimeError, match=r"fastreweight::fbr_scores_prototype: xs must hold at least one layer"):
        call_proto_fbr(dict(proto_args(), xs=[], mus=[], es=[], protos=[]))
    with pytest.raises(RuntimeError, match=r"fastreweight::fbr_scores_prototype: shift must be one of"):
        call_proto_fbr(proto_args(), shift="median")
    with pytest.raises(RuntimeError, match=r"fastreweight::fbr_scores_prototype: y must be a 1-D tensor of length 6"):
        call_proto_fbr(proto_args(), y=torch.zeros(5, dtype=torch.int64))


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("cosine", [False, True])
def test_prototype_opcheck(dtype, grad, cosine):
    a = proto_args(dtype=dtype, grad=grad)
    a["cosine"] = cosine
    torch.library.opcheck(ops.class_similarity_prototype.default,
                          (a["xs"], a["mus"], a["es"], a["protos"], cosine))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.library.opcheck(ops.fbr_scores_prototype.default,
                          (a["xs"], a["mus"], a["es"], a["protos"], a["class_weight"], cosine, y, "second", 0.5))


# ---------------------------------------------------------------------------------------------
# the published per-batch rule (threshold_weights)
# ---------------------------------------------------------------------------------------------
@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", SIZES)
def test_threshold_weights_op_matches_reference(dtype, B, poisoned_outputs):
    g = torch.Generator().manual_seed(B)
    cases = {
        "mixed": torch.randn(B, generator=g, dtype=torch.float64) + 0.3,
        "all positive": torch.rand(B, generator=g, dtype=torch.float64) + 0.1,
        "all negative": -torch.rand(B, generator=g, dtype=torch.float64) - 0.1,
        "zeros and ties": torch.tensor([0.0, -1.0, -1.0, 2.0, 0.0] * B, dtype=torch.float64)[:B],
    }
    with poisoned_outputs():
        for name, r in cases.items():
            r = r.to(dtype)
            got = ops.threshold_weights(r)
            assert torch.equal(got, reference.threshold_weights(r)), name
            assert torch.equal(fr.threshold_weights(r), got), name  # the public function uses the op
    nan = torch.tensor([float("nan"), -1.0, 0.5], dtype=dtype)
    torch.testing.assert_close(ops.threshold_weights(nan), reference.threshold_weights(nan), equal_nan=True)
    assert ops.threshold_weights(torch.zeros(0, dtype=dtype)).shape == (0,)


@needs_ext
def test_threshold_weights_op_checks_and_opcheck():
    with pytest.raises(RuntimeError, match=r"fastreweight::threshold_weights: scores must be a 1-D float32 or float64 "
                                           r"tensor, got Half of shape \[3\]"):
        ops.threshold_weights(torch.ones(3, dtype=torch.float16))
    with pytest.raises(RuntimeError, match=r"scores must be a 1-D float32 or float64 tensor, got Float of shape \[2, 2\]"):
        ops.threshold_weights(torch.ones(2, 2))
    torch.library.opcheck(ops.threshold_weights.default, (torch.randn(17, dtype=torch.float64),))
    # half precision and scores that carry gradients take the reference path of the public function
    r = torch.randn(9, dtype=torch.float16)
    assert torch.equal(fr.threshold_weights(r), reference.threshold_weights(r))
    rg = torch.randn(9, requires_grad=True)
    assert fr.threshold_weights(rg).requires_grad


# ---------------------------------------------------------------------------------------------
# the Reweighter update op
# ---------------------------------------------------------------------------------------------
@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalize_update", ["mean_abs", "none"])
@pytest.mark.parametrize("N, B", [(1, 1), (2, 2), (1025, 97), (97, 17)])
def test_reweighter_cpp_matches_reference_step_after_step(dtype, normalize_update, N, B, poisoned_outputs):
    g = torch.Generator().manual_seed(N + B)
    a = fr.Reweighter(N, lr=0.4, init=0.7, dtype=dtype, normalize_update=normalize_update, backend="cpp")
    b = fr.Reweighter(N, lr=0.4, init=0.7, dtype=dtype, normalize_update=normalize_update, backend="reference")
    assert (a.backend, b.backend) == ("cpp", "reference")
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-6)
    with poisoned_outputs():
        for step in range(6):
            idx = torch.randperm(N, generator=g)[:B]
            checked = step < 5
            if not checked and B > 2:
                idx[-1] = idx[0]  # unchecked, a repeated index is allowed: the last occurrence wins in both
            r = torch.randn(B, generator=g, dtype=torch.float64) * 3
            wa = a.step(idx, r.to(dtype), check_values=checked)
            wb = b.step(idx, r.to(dtype), check_values=checked)
            assert wa.dtype == dtype and torch.isfinite(wa).all()
            torch.testing.assert_close(wa, wb, **tol)
            torch.testing.assert_close(a.weights, b.weights, **tol)


@needs_ext
def test_reweighter_auto_uses_cpp_on_cpu_and_bad_indices_raise():
    rw = fr.Reweighter(10)
    assert rw.backend == "cpp"
    before = rw.weights.clone()
    # without value checks the op still bounds-checks every index and writes nothing out of range
    with pytest.raises(RuntimeError, match=r"fastreweight::reweighter_step: idx holds 10 at position 1; indices must lie in \[0, 10\)"):
        rw.step(torch.tensor([3, 10]), torch.tensor([1.0, -1.0]), check_values=False)
    assert torch.equal(rw.weights, before)
    with pytest.raises(ValueError, match="idx"):
        rw.step(torch.tensor([3, -1]), torch.tensor([1.0, -1.0]))


@needs_ext
@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(weights=torch.ones(4, dtype=torch.float16)), r"weights must be a 1-D float32 or float64 tensor, got Half of shape \[4\]"),
        (dict(weights=torch.ones(8)[::2]), r"weights must be contiguous \(it is updated in place\)"),
        (dict(idx=torch.tensor([0, 1], dtype=torch.int32)), r"idx must be a 1-D int64 tensor, got Int of shape \[2\]"),
        (dict(scores=torch.ones(3)), r"scores must be a 1-D float tensor of length 2 \(one score per index\), got Float of shape \[3\]"),
        (dict(lr=-1.0), r"lr must be a finite float >= 0, got -1"),
        (dict(eps=0.0), r"eps must be a finite float > 0, got 0"),
        (dict(normalize_update="l2"), r"normalize_update must be one of mean_abs, none, got 'l2'"),
    ],
)
def test_reweighter_torch_check_messages(kwargs, msg):
    a = dict(weights=torch.ones(4), idx=torch.tensor([0, 1]), scores=torch.ones(2), lr=0.5,
             normalize_update="mean_abs", eps=1e-12)
    a.update(kwargs)
    with pytest.raises(RuntimeError, match=rf"fastreweight::reweighter_step: {msg}"):
        ops.reweighter_step(a["weights"], a["idx"], a["scores"], a["lr"], a["normalize_update"], a["eps"])


@needs_ext
@pytest.mark.parametrize("wdtype", [torch.float32, torch.float64])
def test_fused_reweight_op_contract(wdtype, poisoned_outputs):
    a = proto_args(grad=False)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    w = torch.rand(40, dtype=wdtype)
    idx = torch.tensor([3, 7, 39, 0, 11, 5])
    args = (a["xs"], a["mus"], a["es"], a["protos"], a["class_weight"], False, y, "max", 0.0)
    torch.library.opcheck(ops.fbr_reweight_prototype.default, args + (w, idx, 0.3, "mean_abs", 1e-12, 1e-12))
    before = w.clone()
    with poisoned_outputs():  # every element of the three outputs must be written
        d, new, coef = ops.fbr_reweight_prototype(*args, w, idx, 0.3, "mean_abs", 1e-12, 1e-12)
    torch.testing.assert_close(d, ops.fbr_scores_prototype(*args))
    expect = reference.reweighter_update(before[idx], d.to(wdtype), 0.3, "mean_abs", 1e-12)
    torch.testing.assert_close(new, expect)
    torch.testing.assert_close(w[idx], expect)
    # the coefficients of the "weight_sum" loss, in float64 from the new weights
    want = new.double() / new.double().sum().clamp_min(1e-12)
    torch.testing.assert_close(coef.double(), want, rtol=1e-6 if wdtype == torch.float32 else 1e-13, atol=0)
    assert coef.dtype == wdtype
    # all weights 0: the floor loss_eps divides (coefficients 0, never NaN)
    zero = torch.zeros(40, dtype=wdtype)
    _, _, coef0 = ops.fbr_reweight_prototype(*args, zero, idx, 0.0, "mean_abs", 1e-12, 0.5)
    assert torch.equal(coef0, torch.zeros(6, dtype=wdtype))
    with pytest.raises(RuntimeError, match=r"fastreweight::fbr_reweight_prototype: idx must have length 6 "
                                           r"\(one index per batch row\), got 5"):
        ops.fbr_reweight_prototype(*args, w, idx[:5], 0.3, "mean_abs", 1e-12, 1e-12)
    with pytest.raises(RuntimeError, match=r"fastreweight::fbr_reweight_prototype: idx holds 40 at position 2"):
        ops.fbr_reweight_prototype(*args, w, torch.tensor([3, 7, 40, 0, 11, 5]), 0.3, "mean_abs", 1e-12, 1e-12)
    with pytest.raises(RuntimeError, match=r"fastreweight::fbr_reweight_prototype: loss_eps must be a finite "
                                           r"float > 0, got 0"):
        ops.fbr_reweight_prototype(*args, w, idx, 0.3, "mean_abs", 1e-12, 0.0)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reweighter_opcheck(dtype):
    w = torch.rand(50, dtype=dtype)
    torch.library.opcheck(ops.reweighter_step.default,
                          (w, torch.tensor([3, 7, 49, 0]), torch.randn(4, dtype=dtype), 0.3, "mean_abs", 1e-12))


@needs_ext
def test_schemas_are_defined_once_in_python_and_every_op_has_a_cpu_kernel():
    """The op schemas and fake kernels live in ``csrc_backend/ops.py``; the C++ sources only register
    kernels (``TORCH_LIBRARY_IMPL``), and the CPU library registers one for every op."""
    import pathlib

    from fastreweight.csrc_backend import ops as op_defs

    csrc = pathlib.Path(__file__).resolve().parents[1] / "csrc"
    sources = [p for p in csrc.rglob("*") if p.suffix in (".h", ".cpp", ".cu")]
    assert sources and not [p for p in sources if "TORCH_LIBRARY(" in p.read_text() or "m.def(" in p.read_text()]
    for name in op_defs.SCHEMAS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastreweight::{name}", "CPU"), name
        assert hasattr(getattr(ops, name).default, "_schema")


def test_cuda_backend_reports_why_it_is_unavailable():
    from fastreweight.csrc_backend import cuda

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    reason = cuda.unavailable_reason(torch.device("cuda", 0))
    assert isinstance(reason, str) and reason


# ---------------------------------------------------------------------------------------------
# CUDA sources: compile-only check (no GPU needed)
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
def test_cuda_sources_compile(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "csrc", "compile_cuda_check.sh")
    res = subprocess.run(["bash", script, str(tmp_path)], capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout + res.stderr
