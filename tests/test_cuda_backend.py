"""The CUDA C++ backend (csrc/fbr_cuda.cu) against the float64 reference, on a CUDA device.

The same checks as ``test_cpp_backend.py`` (whose input builders and tolerances are reused), run with
``backend="cuda"`` on CUDA tensors: odd shapes, every kernel / centering / cosine option, many classes,
every shift, half inputs through the tensor-core (WMMA) path, strided inputs, poisoned outputs,
repeatability, the TORCH_CHECK device message, and ``torch.library.opcheck`` on CUDA tensors.

Everything here is skipped without a CUDA device or when the extension cannot be built or loaded
(the reason is shown).  float64 and float32 inputs run the tiled CUDA-core path, so they are held to
the CPU tolerances; float16/bfloat16 run on tensor cores with float32 accumulation.
"""
from __future__ import annotations

import pytest
import torch

import fastreweight as fr
from fastreweight import csrc_backend
from fastreweight.problem import build_problem

from test_cpp_backend import (  # noqa: E402  (shared builders and tolerances)
    KERNELS, SHIFTS, SIZES, assert_close32, assert_close64, cast, kbound, make, raw_args,
)

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)
LOAD_REASON = csrc_backend.load_cuda()
if LOAD_REASON is not None:
    pytest.skip(f"CUDA extension unavailable: {LOAD_REASON}", allow_module_level=True)

DEV = torch.device("cuda")
ops = torch.ops.fastreweight


def to_dev(f, y, u):
    moved = {}
    for key, v in f.items():
        if v is None:
            moved[key] = None
        elif isinstance(v, list):
            moved[key] = [t.to(DEV) for t in v]
        else:
            moved[key] = v.to(DEV)
    return moved, y.to(DEV), u.to(DEV)


def sim(f, y, u, C, backend, **kw):
    if backend == "cuda":
        f, y, u = to_dev(f, y, u)
    out = fr.class_similarity(f["x"], y, f["clean_x"], u, x2=f["x2"], clean_x2=f["clean_x2"], num_classes=C,
                              strategy="pairwise", backend=backend, on_missing_class="skip", **kw)
    return out.cpu()


def fbr(f, y, u, C, backend, **kw):
    if backend == "cuda":
        f, y, u = to_dev(f, y, u)
    out = fr.fbr_scores(f["x"], y, f["clean_x"], u, x2=f["x2"], clean_x2=f["clean_x2"], num_classes=C,
                        strategy="pairwise", backend=backend, on_missing_class="skip", **kw)
    return out.cpu()


@pytest.mark.parametrize("B", SIZES)
@pytest.mark.parametrize("M", SIZES)
def test_shapes_float64(B, M):
    f, y, u = make(B, M, C=3)
    for center in ("clean", "none"):
        assert_close64(sim(f, y, u, 3, "cuda", center=center), sim(f, y, u, 3, "reference", center=center))


@pytest.mark.parametrize("kernel", KERNELS, ids=["feature", "gradient", "feature-3layers", "gradient-2layers"])
@pytest.mark.parametrize("normalize", [None, "cosine"])
@pytest.mark.parametrize("center", ["clean", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_options(kernel, normalize, center, dtype):
    f64, y, u = make(97, 1025, d=65, k=11, C=10, **kernel)
    kw = dict(center=center, normalize=normalize)
    r64 = sim(f64, y, u, 10, "reference", **kw)
    if dtype == torch.float64:
        assert_close64(sim(f64, y, u, 10, "cuda", **kw), r64)
    else:
        f32 = cast(f64, torch.float32)
        assert_close32(sim(f32, y, u, 10, "cuda", **kw), sim(f32, y, u, 10, "reference", **kw), r64)


@pytest.mark.parametrize("C", [1, 2, 3, 10, 300, 1000])
@pytest.mark.parametrize("grad", [False, True])
def test_classes(C, grad):
    f, y, u = make(33, 1025, d=29, k=5, C=C, grad=grad, labels="random")
    for normalize in (None, "cosine"):
        assert_close64(sim(f, y, u, C, "cuda", normalize=normalize), sim(f, y, u, C, "reference", normalize=normalize),
                       scale=kbound(f) if normalize is None else 4.0)
    if C >= 2:
        for shift in SHIFTS:
            assert_close64(fbr(f, y, u, C, "cuda", shift=shift), fbr(f, y, u, C, "reference", shift=shift))


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 2.0])
@pytest.mark.parametrize("grad", [False, True])
def test_fbr_epilogue(shift, alpha, grad):
    C = 7
    f, y, u = make(97, 211, d=41, C=C, grad=grad, labels="random")
    u[u == 3] = 4  # class 3 absent: rows with y == 3 score 0 (on_missing_class="skip")
    r = fbr(f, y, u, C, "reference", shift=shift, alpha=alpha)
    a = fbr(f, y, u, C, "cuda", shift=shift, alpha=alpha)
    assert_close64(a, r)
    assert (a[y == 3] == 0).all()
    f32 = cast(f, torch.float32)
    assert_close32(fbr(f32, y, u, C, "cuda", shift=shift, alpha=alpha),
                   fbr(f32, y, u, C, "reference", shift=shift, alpha=alpha), r)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("shape", [(97, 300, 48), (1, 17, 5), (1025, 97, 130)])
def test_half_inputs_accumulate_in_float32(dtype, grad, shape):
    B, M, d = shape
    f64, y, u = make(B, M, d=d, C=5, grad=grad)
    fh = cast(f64, dtype)
    a = sim(fh, y, u, 5, "cuda")
    r = sim(fh, y, u, 5, "reference")  # upcasts the same half values to float32
    r64 = sim(cast(fh, torch.float64), y, u, 5, "reference")
    assert a.dtype == torch.float32
    assert_close32(a, r, r64)


def test_noncontiguous_inputs():
    f, y, u = make(40, 150, d=30, k=6, C=4, grad=True)
    fd, yd, ud = to_dev(f, y, u)
    nc = {key: torch.stack([v, v], dim=2).reshape(v.shape[0], -1)[:, ::2] for key, v in fd.items()}
    nc["x"] = fd["x"].T.contiguous().T  # column-major
    assert not nc["x"].is_contiguous() and not nc["clean_x"].is_contiguous()
    out = fr.class_similarity(nc["x"], yd, nc["clean_x"], ud, x2=nc["x2"], clean_x2=nc["clean_x2"], num_classes=4,
                              strategy="pairwise", backend="cuda").cpu()
    assert_close64(out, sim(f, y, u, 4, "reference"))


def test_meta_scores():
    f, _, u = make(97, 300, d=23, k=9, grad=True, layers=2, C=5)
    r = fr.meta_scores(f["x"], f["x2"], f["clean_x"], f["clean_x2"], backend="reference", center="clean",
                       strategy="pairwise")
    fd, _, _ = to_dev(f, u, u)
    a = fr.meta_scores(fd["x"], fd["x2"], fd["clean_x"], fd["clean_x2"], backend="cuda", center="clean",
                       strategy="pairwise")
    assert_close64(a.cpu(), r)


def test_poisoned_outputs_are_overwritten():
    old = csrc_backend.set_poison_outputs(True)
    try:
        for B, M, C in ((1, 1, 2), (17, 97, 10), (97, 2, 3), (5, 300, 300), (1025, 33, 1000)):
            f, y, u = make(B, M, C=C, grad=True, labels="random")
            S = sim(f, y, u, C, "cuda")
            assert torch.isfinite(S).all()
            assert_close64(S, sim(f, y, u, C, "reference"))
            d = fbr(f, y, u, C, "cuda", shift="second", alpha=0.1, check_values=False)
            assert torch.isfinite(d).all()
        x = torch.randn(5, 3, dtype=torch.float64, device=DEV)
        P = build_problem(x, x[:2], y=torch.zeros(5, dtype=torch.int64, device=DEV),
                          clean_y=torch.tensor([5, -1], device=DEV), num_classes=3, check_values=False)
        S = ops.class_similarity(*csrc_backend.problem_args(P))
        assert torch.equal(S.cpu(), torch.zeros(5, 3, dtype=torch.float64))
    finally:
        csrc_backend.set_poison_outputs(old)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_deterministic_across_runs(dtype):
    f, y, u = make(300, 1025, d=70, k=9, C=12, grad=True, dtype=dtype)
    a = sim(f, y, u, 12, "cuda", normalize="cosine")
    b = sim(f, y, u, 12, "cuda", normalize="cosine")
    assert torch.equal(a, b)
    assert torch.equal(fbr(f, y, u, 12, "cuda"), fbr(f, y, u, 12, "cuda"))


def test_device_mismatch_message():
    a = raw_args()
    a = {k: ([t.to(DEV) for t in v] if isinstance(v, list) else (v.to(DEV) if torch.is_tensor(v) else v))
         for k, v in a.items()}
    a["clean_y"] = a["clean_y"].cpu()
    with pytest.raises(RuntimeError, match=r"fastreweight::class_similarity: clean_y is on cpu but xs\[0\] is on cuda"):
        ops.class_similarity(a["xs"], a["zs"], a["mus"], a["es"], a["fs"], a["clean_y"], a["class_weight"], a["cosine"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_on_cuda(dtype):
    a = raw_args(dtype=torch.float32)
    a = {k: ([t.to(DEV) for t in v] if isinstance(v, list) else (v.to(DEV) if torch.is_tensor(v) else v))
         for k, v in a.items()}
    for key in ("xs", "zs", "es", "fs"):
        a[key] = [t.to(dtype) for t in a[key]]
    args = (a["xs"], a["zs"], a["mus"], a["es"], a["fs"], a["clean_y"], a["class_weight"], True)
    torch.library.opcheck(ops.class_similarity.default, args)
    y = torch.tensor([0, 1, 2, 0, 1, 2], device=DEV)
    torch.library.opcheck(ops.fbr_scores.default, args + (y, "second", 0.5))


def test_auto_plan_on_cuda_runs_a_fast_backend():
    f, y, u = make(64, 200, C=4)
    f = cast(f, torch.float32)
    fd, yd, ud = to_dev(f, y, u)
    fr.class_similarity(fd["x"], yd, fd["clean_x"], ud, num_classes=4)
    assert fr.last_plan().backend in ("triton", "cuda")
